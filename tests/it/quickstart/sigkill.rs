//! The embedded broker under a SIGKILL, through the ingest API: no accepted event is lost.

use super::T;
use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// POSTs one CloudEvent to `/v1/events`; the status, or why there was none.
async fn post_event(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    base: &str,
    event: &Value,
) -> Result<(u16, Value), String> {
    use http_body_util::BodyExt;
    let req = http::Request::post(format!("{base}/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(event).unwrap())))
        .unwrap();
    let resp = tokio::time::timeout(T, client.request(req)).await.map_err(|_| "timed out".to_string())?;
    let resp = resp.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Waits until every id in `ids` has arrived on `path`.
async fn wait_all(rx: &Receiver, path: &str, ids: &[String]) -> Vec<Received> {
    let what = format!("all {} accepted events", ids.len());
    rx.wait_until(path, what, Duration::from_secs(120), |got| {
        let seen: HashSet<String> = got.iter().map(Received::id).collect();
        ids.iter().all(|id| seen.contains(id))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_ingest_burst_on_the_embedded_broker_loses_no_accepted_event() {
    let rx = Receiver::start_slow(Duration::from_millis(1), |_, _| (200, vec![])).await;
    let slow = Receiver::start_slow(Duration::from_millis(20), |_, _| (200, vec![])).await;
    let queue = tempfile::tempdir().unwrap();
    let cfg = ConfigDir::with(MainConfig::new().version(1).embedded(queue.path().join("queue.db")).loopback_targets());
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(true));
    cfg.route(&RouteConfig::new("bulk").events(["order.paid"]).url(slow.url("/bulk")).concurrency(4));
    let mut router = RouterProc::ready(&cfg).await;
    assert!(router.log_text().contains("broker=\"embedded\""), "{}", router.log_text());
    let base = router.api().await;

    // One POST at a time, so the order of the 202s is the publish order; until the router dies.
    let n = 20_000;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let poster = {
        let (accepted, base) = (accepted.clone(), base.clone());
        tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            for i in 0..n {
                let id = format!("burst-{i}");
                match post_event(&client, &base, &event("order.paid", &id, json!({"n": i}))).await {
                    Ok((202, answer)) => {
                        assert_eq!(answer, json!({"id": id, "routed": true}));
                        accepted.lock().unwrap().push(id);
                    }
                    Ok((status, answer)) => panic!("POST /v1/events {id}: {status} {answer}"),
                    // The router is gone: this event may or may not have been committed.
                    Err(_) => return Some(id),
                }
            }
            None
        })
    };
    // Kill while events are still coming in and both routes are delivering.
    let progress = async || (accepted.lock().unwrap().len(), rx.on("/erp").len(), slow.on("/bulk").len());
    eventually("1000 accepted, 200 on /erp and 100 on /bulk before the kill", T, progress, |(a, erp, bulk)| {
        *a >= 1000 && *erp >= 200 && *bulk >= 100
    })
    .await;
    router.kill();
    let in_flight = poster.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(in_flight.is_some() && accepted.len() < n, "the kill came mid-burst: {} accepted", accepted.len());
    let at_kill = (rx.on("/erp").len(), slow.on("/bulk").len());

    let _restarted = RouterProc::ready(&cfg).await;
    let erp = wait_all(&rx, "/erp", &accepted).await;
    let bulk = wait_all(&slow, "/bulk", &accepted).await;
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    let known = |id: &String| accepted_set.contains(id) || Some(id) == in_flight.as_ref();
    for got in [&erp, &bulk] {
        let unknown: Vec<String> = first_arrivals(got).into_iter().filter(|id| !known(id)).collect();
        assert!(unknown.is_empty(), "only accepted events (and the one in flight at the kill) arrive: {unknown:?}");
    }
    let order: Vec<String> = first_arrivals(&erp).into_iter().filter(|id| accepted_set.contains(id)).collect();
    assert_eq!(order, accepted, "first arrivals on the ordered route keep the order of acceptance");
    eprintln!(
        "{} events accepted before the kill ({} delivered on /erp, {} on /bulk at the kill); duplicates after the \
         restart: ordered {}, unordered {}",
        accepted.len(),
        at_kill.0,
        at_kill.1,
        duplicates(&erp),
        duplicates(&bulk)
    );
}
