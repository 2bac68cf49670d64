//! `hookrelay listen`: a local webhook receiver for trying routes out. It verifies Standard
//! Webhooks signatures (when given the secret) and the timestamp tolerance, prints each
//! request, and answers the status it was told to, so retries and dead letters can be seen.

use crate::delivery::http::sign::{SigningKey, verify_standard};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Timestamps further than this from now are refused, as the Standard Webhooks libraries do.
pub const TOLERANCE_SECS: i64 = 300;

/// What `listen` does.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Verify signatures with this key.
    pub key: Option<SigningKey>,
    /// Answer this status to every valid request.
    pub status: StatusCode,
    /// Answer `status` only to the first N requests, 200 afterwards (0: always `status`).
    pub fail_first: u64,
    /// Print JSON lines instead of text.
    pub json: bool,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signature and timestamp check out.
    Verified,
    /// No secret was given.
    Unchecked,
    /// Why it was refused.
    Refused(String),
}

/// Checks a request's Standard Webhooks headers against `key`.
pub fn verify(key: &SigningKey, headers: &http::HeaderMap, body: &[u8], now: i64) -> Verdict {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if headers.get(name).is_some_and(|v| v.to_str().is_err()) {
            return Verdict::Refused(format!("{name} is not printable ASCII"));
        }
    }
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"))
    else {
        return Verdict::Refused("missing webhook-id, webhook-timestamp or webhook-signature".into());
    };
    let Ok(ts) = ts.parse::<i64>() else { return Verdict::Refused("webhook-timestamp is not a number".into()) };
    // Checked: a timestamp near i64::MIN or i64::MAX is far from now, not an overflow (found by
    // the signature_verify fuzz target).
    if now.checked_sub(ts).is_none_or(|d| d.unsigned_abs() > TOLERANCE_SECS.unsigned_abs()) {
        return Verdict::Refused(format!("timestamp {ts} is more than {TOLERANCE_SECS}s from now"));
    }
    if verify_standard(key, id, ts, body, sig) {
        Verdict::Verified
    } else {
        Verdict::Refused("signature does not match".into())
    }
}

/// Serves until `stop` is cancelled. Returns the bound address through `bound` first.
pub async fn serve(
    addr: SocketAddr,
    opts: ListenOptions,
    stop: CancellationToken,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let _ = bound.send(listener.local_addr()?);
    let opts = Arc::new(opts);
    let seen = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let (opts, seen) = (opts.clone(), seen.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, opts.clone(), seen.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    opts: Arc<ListenOptions>,
    seen: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let verdict = match &opts.key {
        Some(k) => verify(k, &parts.headers, &body, now),
        None => Verdict::Unchecked,
    };
    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
    let status = match (&verdict, opts.fail_first) {
        (Verdict::Refused(_), _) => StatusCode::UNAUTHORIZED,
        (_, 0) => opts.status,
        (_, k) if n <= k => opts.status,
        _ => StatusCode::OK,
    };
    let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let json_body: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| String::from_utf8_lossy(&body).into());
    let verdict_text = match &verdict {
        Verdict::Verified => "verified".to_string(),
        Verdict::Unchecked => "unchecked (no --secret)".to_string(),
        Verdict::Refused(why) => format!("REFUSED: {why}"),
    };
    if opts.json {
        let line = serde_json::json!({
            "verified": verdict == Verdict::Verified,
            "verdict": verdict_text,
            "answered": status.as_u16(),
            "id": h("webhook-id"),
            "route": h("hookrelay-route"),
            "sequence": h("hookrelay-sequence"),
            "attempt": h("hookrelay-attempt"),
            "body": json_body,
        });
        println!("{line}");
    } else {
        println!(
            "{} {} {} route={} id={} seq={} attempt={} -> {}\n  {}",
            parts.method,
            parts.uri.path(),
            verdict_text,
            h("hookrelay-route"),
            h("webhook-id"),
            h("hookrelay-sequence"),
            h("hookrelay-attempt"),
            status.as_u16(),
            json_body
        );
    }
    let mut resp = Response::new(Full::new(Bytes::from(format!("{}\n", status.canonical_reason().unwrap_or("")))));
    *resp.status_mut() = status;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::http::sign::Signer;

    #[test]
    fn verifies_what_the_signer_signs_and_refuses_stale_or_forged() {
        let secret = SigningKey::generate();
        let key = SigningKey::from_whsec(&secret).unwrap();
        let headers = Signer::Standard(vec![key.clone()]).headers("evt_1", 1_700_000_000, b"{}");
        assert_eq!(verify(&key, &headers, b"{}", 1_700_000_010), Verdict::Verified);
        assert!(matches!(verify(&key, &headers, b"{}", 1_700_001_000), Verdict::Refused(_)));
        assert!(matches!(verify(&key, &headers, b"{ }", 1_700_000_010), Verdict::Refused(_)));
        for far in [i64::MIN, i64::MAX, -1] {
            let headers = Signer::Standard(vec![key.clone()]).headers("evt_1", far, b"{}");
            assert!(matches!(verify(&key, &headers, b"{}", 1_700_000_010), Verdict::Refused(_)), "timestamp {far}");
        }
        let other = SigningKey::from_whsec(&SigningKey::generate()).unwrap();
        assert!(matches!(verify(&other, &headers, b"{}", 1_700_000_010), Verdict::Refused(_)));
    }
}
