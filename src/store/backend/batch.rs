//! The delivery log's batch writes ([`Store::record_attempts`](crate::store::Store::record_attempts)),
//! one way per backend, each at the fewest instructions per attempt it was measured at
//! (docs/performance.md). A delivery's latest attempt lives in its `deliveries` row, the
//! earlier ones in `attempts` (migration `0006`): both backends first fold the batch into one
//! row per delivery ([`Folded`]: each attempt's delivery id computed once, the batch's latest
//! attempt of each delivery picked), then, in one writing transaction, insert the batch's
//! earlier attempts (none, when each delivery has one attempt in the batch, as most do) and
//! upsert every delivery with its latest. The upsert writes the attempt it brings as the row's
//! latest; a trigger of the migration moves the row's previous latest to `attempts`, or, if the
//! row's was the later one (an attempt recorded late), puts the one brought there and keeps the
//! row's. An attempt that is its delivery's first and last is thus one row and four B-tree
//! entries (the row, its key, two time indexes) instead of two rows and eight.
//!
//! - SQLite ([`sqlite`]): multi-row `INSERT`s in [`chunks`] of a few fixed sizes, so that each
//!   text is one the connection prepared when it opened ([`prepare`]; sqlx keys its statement
//!   cache by the text), built once per process; every text value bound as an `Arc<str>` (one
//!   allocation where sqlx would make two for a `&str`; [`text`]). The transaction is
//!   `BEGIN IMMEDIATE` … `COMMIT` run as cached prepared statements too: sqlx's own
//!   `begin_with`/`commit` run them through `sqlite3_exec`, which prepares them again every
//!   time. A [`SqliteWrite`] that ends without its `COMMIT` (an error, a cancelled future)
//!   closes its connection instead of returning it to the pool, and SQLite rolls the
//!   transaction back.
//! - PostgreSQL ([`postgres`]): one `INSERT … SELECT … FROM UNNEST(…)` per table whatever the
//!   batch size: a fixed number of array parameters, one text, prepared once per connection;
//!   the arrays are encoded straight from the batch ([`PgBindIterExt`]), no row copied.

use super::write_tx;
use crate::store::{Attempt, Outcome, StoreError, delivery_id};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgBindIterExt;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Pool, Postgres, Sqlite};
use std::sync::{Arc, LazyLock};

/// A batch of attempts with their delivery ids, folded into one row per delivery.
pub(super) struct Folded<'a> {
    /// Each attempt's [`delivery_id`], in batch order.
    pub(super) ids: Vec<String>,
    /// One per delivery, sorted by delivery id (so that concurrent writers lock rows in one
    /// order; PostgreSQL also refuses to upsert a row twice in one statement).
    pub(super) deliveries: Vec<DeliveryRow<'a>>,
    /// The positions in the batch of the attempts that are not their delivery's latest in it,
    /// in batch order: they go to `attempts`.
    pub(super) earlier: Vec<usize>,
}

/// One delivery's share of a batch of attempts.
pub(super) struct DeliveryRow<'a> {
    /// The position in the batch of its latest attempt (the later one in the batch on a tie,
    /// as one upsert per attempt in batch order would have left it).
    pub(super) at: usize,
    /// The latest attempt, `batch[at]`.
    pub(super) latest: &'a Attempt,
    /// The earliest attempt's time.
    pub(super) first_at: i64,
    /// The highest attempt number.
    pub(super) attempts: u32,
    /// The event, if an attempt carries it (the first that does).
    pub(super) event: Option<&'a [u8]>,
}

/// Folds `batch`: one [`delivery_id`] per attempt, one [`DeliveryRow`] per delivery, the
/// earlier attempts apart.
pub(super) fn fold(batch: &[Attempt]) -> Folded<'_> {
    let ids: Vec<String> = batch.iter().map(|a| delivery_id(&a.route, &a.event_id)).collect();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    // Stable: within one delivery, its attempts stay in batch order.
    order.sort_by(|&x, &y| ids[x].cmp(&ids[y]));
    let mut deliveries: Vec<DeliveryRow<'_>> = Vec::with_capacity(batch.len());
    let mut earlier = Vec::new();
    for i in order {
        let a = &batch[i];
        match deliveries.last_mut() {
            Some(row) if ids[row.at] == ids[i] => {
                row.first_at = row.first_at.min(a.at_ms);
                row.attempts = row.attempts.max(a.attempt);
                if a.at_ms >= row.latest.at_ms {
                    earlier.push(row.at);
                    (row.at, row.latest) = (i, a);
                } else {
                    earlier.push(i);
                }
                row.event = row.event.or(a.event.as_deref());
            }
            _ => deliveries.push(DeliveryRow {
                at: i,
                latest: a,
                first_at: a.at_ms,
                attempts: a.attempt,
                event: a.event.as_deref(),
            }),
        }
    }
    earlier.sort_unstable();
    Folded { ids, deliveries, earlier }
}

/// The columns of `attempts` that a batch writes, in the order both backends bind them.
const ATTEMPT_COLUMNS: &str = "delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms, \
     response_body, request_headers, error, payload, config_version, config_revision, at";

/// The columns of `deliveries` that a batch writes, in the order both backends bind them: the
/// delivery, then its latest attempt in the order of [`ATTEMPT_COLUMNS`] (less the delivery),
/// then the highest attempt number, the earliest time and the event.
const DELIVERY_COLUMNS: &str = "id, route, event_id, event_type, last_attempt, status, last_status, \
     last_duration_ms, last_response_body, last_request_headers, last_error, last_payload, last_config_version, \
     last_config_revision, last_at, attempts, first_at, event";

/// How a delivery row already stored takes a batch's row for it: the attempt brought as its
/// latest (the trigger of migration `0006` sorts out which one stays), the highest attempt
/// number, the earliest time, the event if it had none.
const DELIVERY_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET \
     last_attempt = excluded.last_attempt, status = excluded.status, last_status = excluded.last_status, \
     last_duration_ms = excluded.last_duration_ms, last_response_body = excluded.last_response_body, \
     last_request_headers = excluded.last_request_headers, last_error = excluded.last_error, \
     last_payload = excluded.last_payload, last_config_version = excluded.last_config_version, \
     last_config_revision = excluded.last_config_revision, last_at = excluded.last_at, \
     attempts = CASE WHEN excluded.attempts > deliveries.attempts THEN excluded.attempts ELSE deliveries.attempts END, \
     first_at = CASE WHEN excluded.first_at < deliveries.first_at THEN excluded.first_at ELSE deliveries.first_at END, \
     event = COALESCE(excluded.event, deliveries.event)";

/// The rows a SQLite multi-row statement takes at once: powers of two up to 64. Seven texts per
/// table, each prepared when a connection opens and kept in its statement cache. Larger texts
/// (128 and 256 rows, until the ninth round of docs/performance.md) saved a statement or two per
/// large batch, a few thousand instructions against the batch's hundreds of thousands, but each
/// was a few hundred KiB of memory per connection and a compilation of about a million
/// instructions the first time a batch needed it.
pub(super) const CHUNK_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `items` cut into parts of the [`CHUNK_SIZES`], largest first: a batch of `n` rows takes as
/// many statements as `n % 64` has bits set, plus one per 64.
pub(super) fn chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|s| *s <= items.len())?;
        let (part, rest) = items.split_at(size);
        items = rest;
        Some(part)
    })
}

/// `{insert} ({columns}) VALUES (?, …), …` for `rows` rows, then `tail`.
fn multi_row(insert: &str, columns: &str, rows: usize, tail: &str) -> String {
    let n = columns.split(',').count();
    let row = format!("({})", vec!["?"; n].join(", "));
    format!("{insert} ({columns}) VALUES {}{tail}", vec![row; rows].join(", "))
}

/// How the attempts go in: `OR FAIL`, so that a row refused (a `NOT NULL`) stops the
/// statement without undoing the rows it inserted before. The whole transaction is rolled back
/// on any error anyway ([`SqliteWrite`]), and SQLite keeps no statement journal for a
/// multi-row statement that cannot abort: under `OR ABORT`, the default, it copies every page
/// the statement is the first to change in the transaction, so that it could undo the
/// statement alone. (The deliveries' upsert keeps its journal: its `DO UPDATE` always aborts.)
const INSERT_ATTEMPTS: &str = "INSERT OR FAIL INTO attempts";

/// The SQLite texts of each chunk size, in the order of [`CHUNK_SIZES`]: (attempts, deliveries).
static SQLITE_TEXTS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    CHUNK_SIZES
        .iter()
        .map(|&n| {
            (
                multi_row(INSERT_ATTEMPTS, ATTEMPT_COLUMNS, n, ""),
                multi_row("INSERT INTO deliveries", DELIVERY_COLUMNS, n, DELIVERY_UPSERT),
            )
        })
        .collect()
});

fn sqlite_texts(rows: usize) -> &'static (String, String) {
    let i = CHUNK_SIZES.iter().position(|&n| n == rows).expect("a chunk has one of the chunk sizes");
    &SQLITE_TEXTS[i]
}

/// The outcomes' names, made once: binding one is a reference count, not a copy.
static OUTCOMES: LazyLock<[Arc<str>; 3]> =
    LazyLock::new(|| [Outcome::Delivered, Outcome::Retrying, Outcome::Dead].map(|o| Arc::from(o.as_str())));

fn outcome(o: Outcome) -> Arc<str> {
    OUTCOMES[match o {
        Outcome::Delivered => 0,
        Outcome::Retrying => 1,
        Outcome::Dead => 2,
    }]
    .clone()
}

fn encode_error(e: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Db(sqlx::Error::Encode(e))
}

/// A SQLite writing transaction on a connection of the pool, begun and committed with cached
/// prepared statements (see the module docs). Dropped without [`commit`](Self::commit), it
/// closes the connection, which rolls the transaction back.
pub(super) struct SqliteWrite {
    conn: Option<PoolConnection<Sqlite>>,
}

impl SqliteWrite {
    /// Takes a connection and the write lock (`BEGIN IMMEDIATE`, waiting up to the busy timeout).
    pub(super) async fn begin(pool: &Pool<Sqlite>) -> Result<Self, StoreError> {
        // Armed before `BEGIN` is sent: a future dropped while it runs may leave it begun.
        let mut tx = Self { conn: Some(pool.acquire().await?) };
        sqlx::query(BEGIN).execute(tx.conn()).await?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        self.conn.as_mut().expect("a transaction has its connection until it ends")
    }

    /// Commits and gives the connection back to the pool.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query(COMMIT).execute(self.conn()).await?;
        self.conn.take();
        Ok(())
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

/// Prepares the statements [`sqlite`] runs on a new connection, into its statement cache:
/// `BEGIN`, `COMMIT` and every multi-row text, about 0.45 MiB per connection (the router's
/// resident memory at rest went from 35.6 to 37.4 MiB with its four).
pub(super) async fn prepare(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    let texts = SQLITE_TEXTS.iter().flat_map(|(attempts, deliveries)| [attempts.as_str(), deliveries.as_str()]);
    for text in [BEGIN, COMMIT].into_iter().chain(texts) {
        conn.prepare(sqlx::SqlStr::from_static(text)).await?;
    }
    Ok(())
}

const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";

/// A text to bind: one allocation and copy (sqlx would wrap a `&str` in a new `String` in a new
/// `Arc`, two allocations); SQLite copies it once more as it binds it (`SQLITE_TRANSIENT`).
fn text(s: &str) -> Arc<str> {
    Arc::from(s)
}

/// Binds one attempt's own columns, from `attempt` on (the [`ATTEMPT_COLUMNS`] after the
/// delivery's four, the order [`DELIVERY_COLUMNS`] takes them in too).
fn bind_attempt(args: &mut SqliteArguments, a: &Attempt, revision: &Arc<str>) -> Result<(), sqlx::error::BoxDynError> {
    let revision = if *a.config_revision == **revision { revision.clone() } else { text(&a.config_revision) };
    args.add(i64::from(a.attempt))?;
    args.add(outcome(a.outcome))?;
    args.add(a.status.map(i64::from))?;
    args.add(a.duration_ms as i64)?;
    args.add(a.response_body.as_deref().map(text))?;
    args.add(a.request_headers.as_deref().map(text))?;
    args.add(a.error.as_deref().map(text))?;
    args.add(a.payload.clone())?;
    args.add(a.config_version as i64)?;
    args.add(revision)?;
    args.add(a.at_ms)
}

/// Binds the delivery's four columns that both tables start with.
fn bind_delivery(args: &mut SqliteArguments, id: &str, a: &Attempt) -> Result<(), sqlx::error::BoxDynError> {
    args.add(text(id))?;
    args.add(text(&a.route))?;
    args.add(text(&a.event_id))?;
    args.add(text(&a.event_type))
}

/// SQLite's batch write (see the module docs).
pub(super) async fn sqlite(pool: &Pool<Sqlite>, batch: &[Attempt]) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let folded = fold(batch);
    let revision = text(&batch[0].config_revision);
    let mut tx = SqliteWrite::begin(pool).await?;
    for part in chunks(&folded.earlier) {
        let mut args = SqliteArguments::default();
        args.reserve(part.len() * 15, 0);
        for &i in part {
            (|| {
                bind_delivery(&mut args, &folded.ids[i], &batch[i])?;
                bind_attempt(&mut args, &batch[i], &revision)
            })()
            .map_err(encode_error)?;
        }
        sqlx::query_with(sqlite_texts(part.len()).0.as_str(), args).execute(tx.conn()).await?;
    }
    for part in chunks(&folded.deliveries) {
        let mut args = SqliteArguments::default();
        args.reserve(part.len() * 18, 0);
        for row in part {
            (|| {
                bind_delivery(&mut args, &folded.ids[row.at], row.latest)?;
                bind_attempt(&mut args, row.latest, &revision)?;
                args.add(i64::from(row.attempts))?;
                args.add(row.first_at)?;
                args.add(row.event.map(<[u8]>::to_vec))
            })()
            .map_err(encode_error)?;
        }
        sqlx::query_with(sqlite_texts(part.len()).1.as_str(), args).execute(tx.conn()).await?;
    }
    tx.commit().await
}

/// PostgreSQL's `attempts` insert: one text for any batch size, rows in batch order (so their
/// ids, which order a delivery's attempts made at the same time, follow it).
static PG_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         SELECT {ATTEMPT_COLUMNS} FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
         $6::text[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::bytea[], $13::int8[], \
         $14::text[], $15::int8[]) WITH ORDINALITY AS u({ATTEMPT_COLUMNS}, n) ORDER BY n"
    )
});

/// PostgreSQL's `deliveries` upsert: one text for any batch size (`WHERE true` keeps the
/// parser from reading `ON CONFLICT` as a join's `ON`).
static PG_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO deliveries ({DELIVERY_COLUMNS}) \
         SELECT {DELIVERY_COLUMNS} FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
         $6::text[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::bytea[], $13::int8[], \
         $14::text[], $15::int8[], $16::int8[], $17::int8[], $18::bytea[]) AS u({DELIVERY_COLUMNS}) \
         WHERE true{DELIVERY_UPSERT}"
    )
});

/// Binds the delivery ids and the attempts' columns as arrays, in the order of
/// [`ATTEMPT_COLUMNS`], which both PostgreSQL statements take first.
fn bind_pg_attempts<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ids: impl Iterator<Item = &'q str> + Clone + Send + 'q,
    attempts: impl Iterator<Item = &'q Attempt> + Clone + Send + 'q,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let a = || attempts.clone();
    q.bind(ids.bind_iter())
        .bind(a().map(|a| a.route.as_str()).bind_iter())
        .bind(a().map(|a| a.event_id.as_str()).bind_iter())
        .bind(a().map(|a| a.event_type.as_str()).bind_iter())
        .bind(a().map(|a| i64::from(a.attempt)).bind_iter())
        .bind(a().map(|a| a.outcome.as_str()).bind_iter())
        .bind(a().map(|a| a.status.map(i64::from)).bind_iter())
        .bind(a().map(|a| a.duration_ms as i64).bind_iter())
        .bind(a().map(|a| a.response_body.as_deref()).bind_iter())
        .bind(a().map(|a| a.request_headers.as_deref()).bind_iter())
        .bind(a().map(|a| a.error.as_deref()).bind_iter())
        .bind(a().map(|a| a.payload.as_deref()).bind_iter())
        .bind(a().map(|a| a.config_version as i64).bind_iter())
        .bind(a().map(|a| a.config_revision.as_str()).bind_iter())
        .bind(a().map(|a| a.at_ms).bind_iter())
}

/// PostgreSQL's batch write (see the module docs).
pub(super) async fn postgres(pool: &Pool<Postgres>, batch: &[Attempt]) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let folded = fold(batch);
    let mut tx = write_tx(pool).await?;
    if !folded.earlier.is_empty() {
        let ids = folded.earlier.iter().map(|&i| folded.ids[i].as_str());
        bind_pg_attempts(sqlx::query(PG_ATTEMPTS.as_str()), ids, folded.earlier.iter().map(|&i| &batch[i]))
            .execute(&mut *tx)
            .await?;
    }
    let rows = &folded.deliveries;
    let ids = rows.iter().map(|r| folded.ids[r.at].as_str());
    bind_pg_attempts(sqlx::query(PG_DELIVERIES.as_str()), ids, rows.iter().map(|r| r.latest))
        .bind(rows.iter().map(|r| i64::from(r.attempts)).bind_iter())
        .bind(rows.iter().map(|r| r.first_at).bind_iter())
        .bind(rows.iter().map(|r| r.event).bind_iter())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_the_fixed_sizes() {
        for n in [0usize, 1, 2, 3, 15, 256, 257, 500, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = chunks(&items).collect();
            assert!(parts.iter().all(|p| CHUNK_SIZES.contains(&p.len())), "{n}: {parts:?}");
            assert_eq!(parts.concat(), items, "{n}: every row once, in order");
        }
        assert_eq!(chunks(&[0u8; 15]).map(<[u8]>::len).collect::<Vec<_>>(), [8, 4, 2, 1]);
    }

    fn attempt(event: &str, n: u32, at_ms: i64) -> Attempt {
        Attempt {
            route: "r".into(),
            event_id: event.into(),
            event_type: "t".into(),
            attempt: n,
            outcome: Outcome::Retrying,
            status: None,
            duration_ms: 1,
            response_body: None,
            request_headers: None,
            error: None,
            payload: None,
            event: (n == 2).then(|| vec![n as u8]),
            config_version: 1,
            config_revision: "rev".into(),
            at_ms,
        }
    }

    #[test]
    fn a_batch_folds_into_each_deliverys_latest_and_the_earlier_ones() {
        let batch = [
            attempt("e1", 1, 100),
            attempt("e2", 1, 100),
            attempt("e1", 2, 200),
            attempt("e1", 3, 150), // recorded after a later one: an earlier attempt
            attempt("e2", 2, 100), // the same time as e2's first: the later in the batch wins
            attempt("e3", 1, 50),
        ];
        let folded = fold(&batch);
        let rows: Vec<_> = folded
            .deliveries
            .iter()
            .map(|r| (r.latest.event_id.as_str(), r.at, r.attempts, r.first_at, r.event))
            .collect();
        let mut expected = vec![
            ("e1", 2, 3, 100, Some([2u8].as_slice())),
            ("e2", 4, 2, 100, Some([2u8].as_slice())),
            ("e3", 5, 1, 50, None),
        ];
        expected.sort_by_key(|&(_, at, ..)| delivery_id("r", &batch[at].event_id));
        assert_eq!(rows, expected, "one row per delivery, in delivery id order");
        assert_eq!(folded.earlier, [0, 1, 3], "the others, in batch order");
        assert!(folded.deliveries.iter().all(|r| std::ptr::eq(r.latest, &batch[r.at])));
    }

    #[test]
    fn sqlite_texts_bind_one_parameter_per_column_and_row() {
        for n in CHUNK_SIZES {
            let (attempts, deliveries) = sqlite_texts(n);
            assert_eq!(attempts.matches('?').count(), 15 * n);
            assert_eq!(deliveries.matches('?').count(), 18 * n);
        }
    }
}
