//! The router's dependencies going away under it: the API answers 503 where it needs them, and
//! `/readyz` says which is gone.

use super::{Client, T, paid, setup};
use crate::common::*;

/// The dependencies going away under a running router: its PostgreSQL database dropped, then
/// its RabbitMQ vhost deleted. `/readyz` says which, and the API answers 503 where it needs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_store_and_broker_answer_503() {
    let rx = Receiver::ok().await;
    let routes = [RouteConfig::new("orders").events(["order.*"]).url(rx.url("/orders"))];
    let mut s = setup(Some(PgDatabase::new().await), &routes).await;
    let open = Client::new(&s.base, None, &s.transcript);
    eventually("/readyz to answer 200", T, async || open.get("/readyz").await, |a| a.status == 200).await;
    s.ingest.post("/v1/events", paid("before", 1)).await.expect(202);
    rx.wait_distinct("/orders", 1, T).await;

    // The store: its database is dropped (with its connections).
    s.pg.take().unwrap().drop_it().await;
    let ready =
        eventually("/readyz to report the store", T, async || open.get("/readyz").await, |a| a.json["store"] == false)
            .await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!((ready.json["ready"].as_bool(), ready.json["broker"].as_bool()), (Some(false), Some(true)));
    assert!(ready.json["problems"].to_string().contains("store"), "{}", ready.text);
    for path in ["/v1/deliveries", "/v1/dead-letters", "/v1/subscriptions", "/v1/audit", "/v1/stats"] {
        assert_eq!(s.read.get(path).await.expect(503)["error"]["code"], "store_unavailable", "{path}");
    }
    // Ingest needs only the broker.
    assert_eq!(s.ingest.post("/v1/events", paid("storeless", 2)).await.expect(202)["routed"], true);

    // The broker: the vhost is deleted, which closes the router's connection and refuses the next.
    drop(s.vh.take());
    let ready = eventually(
        "/readyz to report the broker",
        T,
        async || open.get("/readyz").await,
        |a| a.json["broker"] == false,
    )
    .await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.json["problems"].to_string().contains("broker"), "{}", ready.text);
    let refused = s.ingest.post("/v1/events", paid("brokerless", 3)).await;
    assert_eq!(refused.expect(503)["error"]["code"], "broker_unavailable");
    assert_eq!(open.get("/healthz").await.expect(200)["status"], "ok", "the process is up all the same");
    s.finish().await;
}
