//! The gate with the clock paused: what deliveries of one route wait for, and when.

use super::*;
use crate::config::Origin;
use crate::delivery::http::client::{Response, SendError};
use crate::delivery::http::retry::RetryPolicy;
use crate::delivery::http::sign::Signer;
use crate::delivery::policy::{CircuitBreaker, RateLimit};

fn route(circuit_breaker: Option<CircuitBreaker>, rate_limit: Option<RateLimit>, ordered: bool) -> Route {
    Route {
        name: "r".into(),
        events: vec!["order.*".into()],
        url: "https://example.com/hook".parse().unwrap(),
        ordered,
        timeout: Duration::from_secs(10),
        concurrency: 4,
        order_key: None,
        steps: Default::default(),
        headers: Default::default(),
        log_payload: false,
        signer: Signer::Standard(vec![]),
        retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_secs(5)] },
        circuit_breaker,
        rate_limit,
        batch: None,
        digest: String::new(),
        origin: Origin::File { file: "routes/r.toml".into() },
    }
}

fn status(status: u16, retry_after: Option<u64>) -> AttemptResult {
    AttemptResult(Ok(Response {
        status,
        retry_after: retry_after.map(Duration::from_secs),
        body: String::new(),
        duration: Duration::from_millis(1),
    }))
}

fn breaker(failures: u32, open_for: u64) -> Option<CircuitBreaker> {
    Some(CircuitBreaker { failures, open_for: Duration::from_secs(open_for), disable_after: None })
}

async fn go(gate: &Gate, r: &Route) -> Pass {
    match gate.admit(r, &CancellationToken::new()).await {
        Admission::Go(pass) => pass,
        other => panic!("expected an attempt, got {other:?}"),
    }
}

/// One attempt now that ends with `result`; its verdict as settled.
async fn attempt(gate: &Gate, r: &Route, result: AttemptResult, number: u32) -> Verdict {
    let pass = go(gate, r).await;
    let verdict = crate::delivery::verdict::decide(&result, &r.retry, number, r.ordered, 0.0);
    gate.record(r, pass, &result, number, verdict, 0.0).verdict
}

#[tokio::test(start_paused = true)]
async fn deliveries_wait_in_process_for_their_tokens_and_a_far_one_holds() {
    let r = route(None, Some(RateLimit { per_second: 2.0, burst: 1 }), false);
    let gate = Gate::new("r");
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..3 {
        go(&gate, &r).await;
        at.push(Instant::now() - start);
    }
    assert_eq!(at, [0, 500, 1000].map(Duration::from_millis), "one token every 1/per_second");

    // A 429 with Retry-After: the whole route waits, not only that event.
    attempt(&gate, &r, status(429, Some(120)), 1).await;
    match gate.admit(&r, &CancellationToken::new()).await {
        Admission::Hold { wait, why: HoldReason::RateLimited } => {
            assert_eq!(wait, Duration::from_secs(120) - (Instant::now() - start - Duration::from_millis(1500)))
        }
        other => panic!("expected a hold: {other:?}"),
    }
    assert!(gate.rate(&r).unwrap().paused_until.is_some());
    let stop = CancellationToken::new();
    stop.cancel();
    let short = route(None, Some(RateLimit { per_second: 0.1, burst: 1 }), false);
    let other = Gate::new("s");
    go(&other, &short).await;
    assert!(matches!(other.admit(&short, &stop).await, Admission::Stopped), "a wait ends when the route stops");
}

#[tokio::test(start_paused = true)]
async fn the_rate_is_shared_among_the_queue_consumers() {
    let r = route(None, Some(RateLimit { per_second: 10.0, burst: 4 }), false);
    let gate = Gate::new("r");
    gate.set_consumers(4);
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..3 {
        go(&gate, &r).await;
        at.push(Instant::now() - start);
    }
    assert_eq!(at, [0, 400, 800].map(Duration::from_millis), "2.5 per second, a bucket of 1");
    let view = gate.rate(&r).unwrap();
    assert_eq!((view.consumers, view.per_second, view.burst), (4, 2.5, 1));
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_holds_events_and_one_probe_decides_while_the_others_wait() {
    let r = route(breaker(2, 10), None, false);
    let gate = Gate::new("r");
    assert_eq!(attempt(&gate, &r, status(503, None), 1).await, Verdict::Park(Duration::from_secs(5)));
    attempt(&gate, &r, status(503, None), 1).await;
    let opened = gate.circuit(&r).unwrap();
    assert_eq!((opened.state, opened.consecutive_failures), (State::Open, 2));
    match gate.admit(&r, &CancellationToken::new()).await {
        Admission::Hold { wait, why: HoldReason::CircuitOpen } => assert_eq!(wait, Duration::from_secs(10)),
        other => panic!("expected a hold: {other:?}"),
    }

    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = go(&gate, &r).await;
    assert!(probe.is_probe());
    assert_eq!(gate.circuit(&r).unwrap().state, State::HalfOpen);
    // Another delivery waits for the probe's outcome, in process.
    let gate = Arc::new(gate);
    let (g, r2) = (gate.clone(), route(breaker(2, 10), None, false));
    let waiter = tokio::spawn(async move { (go(&g, &r2).await.is_probe(), Instant::now()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiter.is_finished(), "no second attempt while the probe is under way");
    let answered = Instant::now();
    gate.record(&r, probe, &status(200, None), 1, Verdict::Delivered, 0.0);
    let (was_probe, at) = waiter.await.unwrap();
    assert_eq!((was_probe, at), (false, answered), "the probe's success lets it go at once");
    let closed = gate.circuit(&r).unwrap();
    assert_eq!((closed.state, closed.consecutive_failures), (State::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_never_uses_up_its_event() {
    for ordered in [false, true] {
        let r = route(breaker(1, 10), None, ordered);
        let gate = Gate::new("r");
        let last = r.retry.max_attempts;
        let exhausted = Verdict::DeadLetter(Reason::Exhausted);
        assert_eq!(attempt(&gate, &r, status(500, None), last).await, exhausted, "closed: the last attempt exhausts");
        tokio::time::advance(Duration::from_secs(10)).await;
        let retried = attempt(&gate, &r, status(500, None), last).await;
        let five = Duration::from_secs(5);
        assert_eq!(retried, if ordered { Verdict::RetryInPlace(five) } else { Verdict::Park(five) });
        assert_eq!(gate.circuit(&r).unwrap().state, State::Open, "and the circuit opens again");
        tokio::time::advance(Duration::from_secs(10)).await;
        let refused = attempt(&gate, &r, status(400, None), last).await;
        assert_eq!(refused, Verdict::DeadLetter(Reason::Rejected), "a probe answered 400: the endpoint is up");
        assert_eq!(gate.circuit(&r).unwrap().state, State::Closed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscription_failing_for_disable_after_is_reported_once() {
    let mut r = route(breaker(1, 60), None, false);
    r.circuit_breaker =
        Some(CircuitBreaker { disable_after: Some(Duration::from_secs(150)), ..r.circuit_breaker.unwrap() });
    let gate = Gate::new("r");
    let mut reports = Vec::new();
    for _ in 0..4 {
        let pass = go(&gate, &r).await;
        let timeout = AttemptResult(Err(SendError::Timeout(Duration::from_secs(10))));
        reports.push(gate.record(&r, pass, &timeout, 1, Verdict::Park(Duration::from_secs(5)), 0.0).disable.is_some());
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert_eq!(reports, [false, false, false, true], "at 180 s of failing, past 150 s");
}
