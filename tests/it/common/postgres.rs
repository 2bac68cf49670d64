//! A PostgreSQL database of each test's own, on the server `HOOKRELAY_TEST_POSTGRES_URL` names.

/// A database of the test's own on the PostgreSQL server, dropped at the end.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn new() -> Self {
        let admin = std::env::var("HOOKRELAY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple());
        let conn = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL (HOOKRELAY_TEST_POSTGRES_URL) is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&conn).await.unwrap();
        conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
        Self { url: format!("{base}/{name}"), admin, name }
    }

    pub async fn drop_it(self) {
        let conn = sqlx::PgPool::connect(&self.admin).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&conn)
            .await;
    }
}
