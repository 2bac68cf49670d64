//! The delivery log's batch writes alone (issue 15): `cargo bench --bench store -- [--batches N]
//! [--size S] [--postgres URL]` writes N batches (default 200) of S attempts (default 20) of the
//! realistic route's shape (no payload, a short response body; one new delivery per attempt, one
//! in ten a retry of an earlier one) through `Store::record_attempts`, to a fresh SQLite file and,
//! with `--postgres` (a URL allowed to create databases), to a fresh PostgreSQL database, and
//! prints the time per attempt.
//!
//! Wall time on a shared machine is noise; instructions are the measure. Under
//! `valgrind --tool=callgrind`, two runs with different `--batches`, their totals differenced and
//! divided by the difference in attempts, give the instructions per attempt of the writes (for
//! PostgreSQL, the client's side only: the server is another process).

use hookrelay::store::{self, Attempt, Outcome, Store};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Instant;

fn attempt(i: usize, route: &str) -> Attempt {
    let (event, n) = if i % 10 == 9 { (i - 5, 2) } else { (i, 1) };
    Attempt {
        route: route.into(),
        event_id: format!("0191f3a2-7c1e-7b3a-9f2d-{event:012}"),
        event_type: "order.created".into(),
        attempt: n,
        outcome: Outcome::Delivered,
        status: Some(200),
        duration_ms: 3,
        response_body: Some("ok".into()),
        request_headers: None,
        error: None,
        payload: None,
        event: None,
        config_version: 3,
        config_revision: "9f2d7c1e7b3a".into(),
        at_ms: 1_700_000_000_000 + i as i64,
    }
}

async fn run(what: &str, s: Arc<dyn Store>, batches: usize, size: usize) {
    let all: Vec<Attempt> = (0..batches * size).map(|i| attempt(i, "bench-0")).collect();
    let started = Instant::now();
    for batch in all.chunks(size) {
        s.record_attempts(batch).await.expect("the batch is written");
    }
    let took = started.elapsed();
    println!(
        "{what}: {batches} batches of {size}: {:.2} µs per attempt",
        took.as_secs_f64() * 1e6 / (batches * size) as f64
    );
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batches = arg(&args, "--batches").map_or(200, |v| v.parse().expect("--batches N"));
    let size = arg(&args, "--size").map_or(20, |v| v.parse().expect("--size S"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("hookrelay.db").display());
    run("sqlite", store::open(&url).await.expect("the SQLite store opens"), batches, size).await;
    if let Some(admin) = arg(&args, "--postgres") {
        let name = format!("hookrelay_bench_store_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        let s = store::open(&format!("{base}/{name}")).await.expect("the PostgreSQL store opens");
        run("postgres", s.clone(), batches, size).await;
        drop(s);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
