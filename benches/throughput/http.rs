//! HTTP for the harness: the bare POST ceiling (hyper's pooled client sending the bench bodies to
//! the receiver) and the producer side of the embedded broker (events POSTed to the router's
//! `POST /v1/events`), in bulk or paced.

use crate::common::{Size, event, event_id};
use crate::rabbit::http_client;
use crate::receiver::Timeline;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bare POST ceiling: `n` bodies POSTed to `target`, `concurrency` at once. Requests per
/// second.
pub(crate) async fn bare_post(target: &str, n: usize, size: Size, concurrency: usize) -> f64 {
    let client = http_client();
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..n).map(|i| Bytes::from(event(i, size))).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, bodies, target) = (client.clone(), next.clone(), bodies.clone(), target.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let req = hyper::Request::post(&target)
                    .header("content-type", "application/json")
                    .header("webhook-id", event_id(i))
                    .body(Full::new(bodies[i].clone()))
                    .expect("request");
                let resp = client.request(req).await.expect("POST");
                assert!(resp.status().is_success(), "the receiver answered {}", resp.status());
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn ingest_one(
    client: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> Result<(), String> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/cloudevents+json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if status.is_success() { Ok(()) } else { Err(format!("POST {url}: {status} {}", String::from_utf8_lossy(&text))) }
}

/// Publishes events `0..n` to an ingest API (`http://…/v1/events`), `concurrency` at once.
pub(crate) async fn ingest_bulk(url: &str, size: Size, n: usize, concurrency: usize) -> Result<(), String> {
    let client = http_client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                ingest_one(&client, &url, Bytes::from(event(i, size))).await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Publishes events `0..n` to an ingest API at `rate` per second, marking each on `timeline`;
/// each POST runs on its own task so that a slow answer does not delay the next one.
pub(crate) async fn ingest_paced(
    url: &str,
    size: Size,
    n: usize,
    rate: f64,
    timeline: &Arc<Timeline>,
) -> Result<(), String> {
    let client = http_client();
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(event(i, size))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        timeline.sent(i);
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move { ingest_one(&client, &url, body).await });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| e.to_string())??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}
