//! The delivery log beyond the core: the event and bodies kept for routes that log payloads,
//! retention, the statistics (percentiles computed in SQL), and attempts counted once whether
//! kept in their delivery's row or beside it.

use super::{attempt, on_postgres, on_sqlite};
use hookrelay::store::{Attempt, DeliveryFilter, Outcome, Pruned, Store, delivery_id};
use std::sync::Arc;

fn timed(route: &str, i: usize, outcome: Outcome, duration_ms: u64, at_ms: i64) -> Attempt {
    let status = match outcome {
        Outcome::Delivered => Some(200),
        _ => Some(503),
    };
    Attempt { duration_ms, ..attempt(route, &format!("{route}-{i}"), 1, outcome, status, at_ms) }
}

async fn stats_compute_percentiles_in_sql(s: Arc<dyn Store>) {
    let mut batch = Vec::new();
    // alpha: 100 attempts lasting 1..=100 ms, recorded in a scrambled order (37 is coprime to
    // 100): 80 delivered, 15 retried, 5 dead. Nearest rank: p50 = 50, p95 = 95, p99 = 99.
    for i in 0..100 {
        let outcome = match i {
            0..80 => Outcome::Delivered,
            80..95 => Outcome::Retrying,
            _ => Outcome::Dead,
        };
        batch.push(timed("alpha", i, outcome, (i as u64 * 37) % 100 + 1, 10_000 + i as i64));
    }
    // Outside the window [10_000, 20_000): would change alpha's counts and its p99 if counted.
    batch.push(timed("alpha", 900, Outcome::Delivered, 100_000, 9_999));
    batch.push(timed("alpha", 901, Outcome::Delivered, 100_000, 20_000));
    batch.push(timed("delta", 0, Outcome::Delivered, 5, 25_000));
    // beta: 20 attempts lasting 5, 10, … 100 ms: p50 = 10th = 50, p95 = 19th = 95, p99 = 20th = 100.
    for i in 0..20 {
        batch.push(timed("beta", i, Outcome::Delivered, ((i as u64 * 7) % 20 + 1) * 5, 15_000 + i as i64));
    }
    // gamma: one dead attempt.
    batch.push(timed("gamma", 0, Outcome::Dead, 7, 12_345));
    s.record_attempts(&batch).await.unwrap();

    let stats = s.stats(10_000, 20_000, None).await.unwrap();
    let routes: Vec<&str> = stats.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, ["alpha", "beta", "gamma"], "only routes with attempts in the window, by name");
    let alpha = &stats[0];
    assert_eq!((alpha.attempts, alpha.delivered, alpha.failed, alpha.dead), (100, 80, 20, 5));
    assert_eq!(alpha.success_rate, Some(0.8));
    assert_eq!((alpha.latency_p50_ms, alpha.latency_p95_ms, alpha.latency_p99_ms), (Some(50), Some(95), Some(99)));
    assert_eq!((alpha.first_at_ms, alpha.last_at_ms), (Some(10_000), Some(10_099)));
    let beta = &stats[1];
    assert_eq!((beta.attempts, beta.delivered, beta.failed, beta.dead, beta.success_rate), (20, 20, 0, 0, Some(1.0)));
    assert_eq!((beta.latency_p50_ms, beta.latency_p95_ms, beta.latency_p99_ms), (Some(50), Some(95), Some(100)));
    let gamma = &stats[2];
    assert_eq!(
        (gamma.attempts, gamma.delivered, gamma.failed, gamma.dead, gamma.success_rate),
        (1, 0, 1, 1, Some(0.0))
    );
    assert_eq!((gamma.latency_p50_ms, gamma.latency_p95_ms, gamma.latency_p99_ms), (Some(7), Some(7), Some(7)));
    assert_eq!((gamma.first_at_ms, gamma.last_at_ms), (Some(12_345), Some(12_345)));

    assert_eq!(s.stats(10_000, 20_000, Some("beta")).await.unwrap(), std::slice::from_ref(beta), "one route");
    assert!(s.stats(10_000, 20_000, Some("delta")).await.unwrap().is_empty());
    assert!(s.stats(30_000, 40_000, None).await.unwrap().is_empty());
    // A wider window takes the outliers in: 102 attempts, p99 = the 101st = 100 000 ms.
    let wide = s.stats(0, 30_000, Some("alpha")).await.unwrap();
    assert_eq!((wide[0].attempts, wide[0].latency_p99_ms, wide[0].latency_p50_ms), (102, Some(100_000), Some(51)));
}

/// Routes that log payloads keep the event once per delivery (for a retry) and the body sent per
/// attempt; routes that do not, keep neither. Retention prunes attempts, and a delivery only
/// with its last attempt.
async fn delivery_log_keeps_events_and_prunes(s: Arc<dyn Store>) {
    let kept = |n: u32, outcome: Outcome, status: Option<u16>, at_ms: i64| Attempt {
        payload: Some(br#"{"type":"order.paid","data":{"n":1}}"#.to_vec()),
        event: Some(br#"{"id":"k1","type":"order.paid"}"#.to_vec()),
        ..attempt("kept", "k1", n, outcome, status, at_ms)
    };
    s.record_attempts(&[kept(1, Outcome::Retrying, Some(503), 1_000)]).await.unwrap();
    s.record_attempts(&[attempt("plain", "p1", 1, Outcome::Delivered, Some(200), 1_100)]).await.unwrap();
    // A later attempt without the event (the route stopped logging payloads) does not erase it.
    s.record_attempts(&[Attempt { event: None, ..kept(2, Outcome::Delivered, Some(200), 5_000) }]).await.unwrap();
    let (k1, p1) = (delivery_id("kept", "k1"), delivery_id("plain", "p1"));
    assert_eq!(s.delivery_event(&k1).await.unwrap().as_deref(), Some(br#"{"id":"k1","type":"order.paid"}"#.as_slice()));
    assert_eq!(s.delivery_event(&p1).await.unwrap(), None, "a route without log_payload keeps no event");
    assert_eq!(s.delivery_event("nope").await.unwrap(), None);
    let attempts = s.attempts(&k1).await.unwrap();
    assert_eq!(attempts[0].payload.as_deref(), Some(br#"{"type":"order.paid","data":{"n":1}}"#.as_slice()));
    assert_eq!(attempts[0].event, None, "the event is kept once, with its delivery");
    assert_eq!(s.attempts(&p1).await.unwrap()[0].payload, None, "a route without log_payload keeps no body");
    // Lists do not carry events.
    assert_eq!(s.deliveries(&DeliveryFilter { limit: 10, ..Default::default() }).await.unwrap().items.len(), 2);

    assert_eq!(s.prune(2_000).await.unwrap(), Pruned { attempts: 2, deliveries: 1 });
    assert!(s.delivery(&p1).await.unwrap().is_none(), "its only attempt is gone, and so is it");
    let k = s.delivery(&k1).await.unwrap().unwrap();
    assert_eq!((k.status, k.attempts), (Outcome::Delivered, 2), "a delivery with an attempt left stays whole");
    assert_eq!(s.attempts(&k1).await.unwrap().len(), 1);
    assert!(s.delivery_event(&k1).await.unwrap().is_some());
    assert_eq!(s.prune(5_001).await.unwrap(), Pruned { attempts: 1, deliveries: 1 });
    assert!(s.delivery(&k1).await.unwrap().is_none());
    assert_eq!(s.delivery_event(&k1).await.unwrap(), None, "its event goes with it");
}

/// A delivery's latest attempt is kept in its row and the earlier ones beside it (migration
/// `0006`): however attempts arrive (two in one batch, one per batch, one late), each is listed
/// once, oldest first, counted once by the statistics and the series, and pruned once.
async fn every_attempt_counts_once_wherever_it_is_kept(s: Arc<dyn Store>) {
    let x = |n: u32, outcome: Outcome, duration_ms: u64, at_ms: i64| {
        let status = if outcome == Outcome::Delivered { Some(200) } else { Some(503) };
        Attempt { duration_ms, ..attempt("eps", "x1", n, outcome, status, at_ms) }
    };
    s.record_attempts(&[x(2, Outcome::Retrying, 20, 1_200), x(1, Outcome::Retrying, 10, 1_100)]).await.unwrap();
    s.record_attempts(&[x(3, Outcome::Retrying, 30, 1_300)]).await.unwrap();
    s.record_attempts(&[x(4, Outcome::Delivered, 40, 1_400), timed("zeta", 0, Outcome::Delivered, 1, 1_400)])
        .await
        .unwrap();
    // Late: made at 1 250 (by a replica that lost its lease, say), recorded after attempt 4.
    s.record_attempts(&[x(2, Outcome::Retrying, 25, 1_250)]).await.unwrap();

    let id = delivery_id("eps", "x1");
    let listed = |s: Arc<dyn Store>| {
        let id = id.clone();
        async move { s.attempts(&id).await.unwrap().iter().map(|a| (a.attempt, a.duration_ms)).collect::<Vec<_>>() }
    };
    assert_eq!(listed(s.clone()).await, [(1, 10), (2, 20), (2, 25), (3, 30), (4, 40)]);
    let d = s.delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.last_status, d.attempts),
        (Outcome::Delivered, Some(200), 4),
        "the late one changes nothing"
    );
    assert_eq!((d.first_at_ms, d.last_at_ms), (1_100, 1_400));

    // Durations 10, 20, 25, 30, 40: nearest rank p50 = 3rd = 25, p99 = 5th = 40.
    let eps = s.stats(0, 10_000, Some("eps")).await.unwrap();
    assert_eq!((eps[0].attempts, eps[0].delivered, eps[0].failed), (5, 1, 4));
    assert_eq!((eps[0].latency_p50_ms, eps[0].latency_p99_ms), (Some(25), Some(40)));
    assert_eq!(s.stats(1_250, 1_400, Some("eps")).await.unwrap()[0].attempts, 2, "the late one and attempt 3");
    let all = s.stats(0, 10_000, None).await.unwrap();
    assert_eq!(all.iter().map(|r| (r.route.as_str(), r.attempts)).collect::<Vec<_>>(), [("eps", 5), ("zeta", 1)]);
    let series = s.attempt_series(1_000, 2_000, 100, Some(&["eps".to_string()])).await.unwrap();
    let buckets: Vec<_> = series.iter().map(|b| (b.start_ms, b.attempts, b.delivered)).collect();
    assert_eq!(buckets, [(1_100, 1, 0), (1_200, 2, 0), (1_300, 1, 0), (1_400, 1, 1)]);
    let everything = s.attempt_series(1_000, 2_000, 1_000, None).await.unwrap();
    assert_eq!((everything[0].attempts, everything[0].delivered), (6, 2));

    assert_eq!(s.prune(1_250).await.unwrap(), Pruned { attempts: 2, deliveries: 0 });
    assert_eq!(listed(s.clone()).await, [(2, 25), (3, 30), (4, 40)]);
    assert_eq!(s.prune(1_401).await.unwrap(), Pruned { attempts: 4, deliveries: 2 }, "eps's three, zeta's one");
    assert!(s.attempts(&id).await.unwrap().is_empty());
    assert!(s.stats(0, 10_000, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_every_attempt_counts_once_wherever_it_is_kept() {
    on_sqlite(every_attempt_counts_once_wherever_it_is_kept).await;
}

#[tokio::test]
async fn postgres_every_attempt_counts_once_wherever_it_is_kept() {
    on_postgres(every_attempt_counts_once_wherever_it_is_kept).await;
}

#[tokio::test]
async fn sqlite_delivery_log_keeps_events_and_prunes() {
    on_sqlite(delivery_log_keeps_events_and_prunes).await;
}

#[tokio::test]
async fn postgres_delivery_log_keeps_events_and_prunes() {
    on_postgres(delivery_log_keeps_events_and_prunes).await;
}

#[tokio::test]
async fn sqlite_stats_compute_percentiles_in_sql() {
    on_sqlite(stats_compute_percentiles_in_sql).await;
}

#[tokio::test]
async fn postgres_stats_compute_percentiles_in_sql() {
    on_postgres(stats_compute_percentiles_in_sql).await;
}

/// Attempts recorded in all sorts of rhythms through the router's writer (one at a time across
/// several lingers, then a burst larger than a batch, followed at once by the stop): every one
/// is written, and the stop waits for them.
async fn the_writer_records_every_attempt_whatever_their_rhythm(s: Arc<dyn Store>) {
    use hookrelay::store::log::AttemptLog;
    use std::time::Duration;
    let count = |s: Arc<dyn Store>, route: &'static str| async move {
        s.stats(0, i64::MAX, Some(route)).await.unwrap().first().map_or(0, |r| r.attempts)
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (log, writer) = AttemptLog::start(s.clone(), stop.clone());
    // One at a time, 7 ms apart: about 0.7 s, several ticks and more than one linger.
    for i in 0..100 {
        log.record(timed("trickle", i, Outcome::Delivered, 5, 1_000 + i as i64));
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let mut written = 0;
    for _ in 0..300 {
        written = count(s.clone(), "trickle").await;
        if written == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written, 100, "attempts that trickle in are written without a stop");
    // More than one batch (2,000) at once, then the stop before the linger ends.
    for i in 0..5_000 {
        log.record(timed("burst", i, Outcome::Delivered, 5, 2_000 + i as i64));
    }
    stop.cancel();
    writer.await.unwrap();
    assert_eq!(count(s.clone(), "burst").await, 5_000, "the stop writes what was queued");
    assert_eq!(log.dropped(), 0);
}

#[tokio::test]
async fn sqlite_the_writer_records_every_attempt_whatever_their_rhythm() {
    on_sqlite(the_writer_records_every_attempt_whatever_their_rhythm).await;
}

#[tokio::test]
async fn postgres_the_writer_records_every_attempt_whatever_their_rhythm() {
    on_postgres(the_writer_records_every_attempt_whatever_their_rhythm).await;
}
