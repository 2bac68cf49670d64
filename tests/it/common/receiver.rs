//! The webhook receiver of the tests ([`Receiver`]: a real HTTP or HTTPS server on loopback that
//! records every request), what it got ([`Received`] and its summaries), the throwaway CA of its
//! HTTPS mode ([`TestCa`]), and a Standard Webhooks verifier written from the specification
//! ([`verify_spec`], not from hookrelay's signer).

use super::eventually_notified;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn id(&self) -> String {
        self.header("webhook-id")
    }
}

type Responder = dyn Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync;

/// A webhook receiver on 127.0.0.1 that records every request. The responder gets the request
/// and how many earlier requests carried the same `webhook-id`, and returns the status.
pub struct Receiver {
    pub base: String,
    seen: Arc<Mutex<Vec<Received>>>,
    /// (path, webhook id) of every request as it arrives, before the answer (which a slow
    /// receiver delays): what is under way.
    arrived: Arc<Mutex<Vec<(String, String)>>>,
    notify: Arc<Notify>,
}

impl Receiver {
    pub async fn ok() -> Self {
        Self::start(|_, _| (200, vec![])).await
    }

    pub async fn start(
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        Self::start_slow(Duration::ZERO, responder).await
    }

    /// Like [`Receiver::start`], taking `delay` to answer each request.
    pub async fn start_slow(
        delay: Duration,
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        Self::serve(delay, None, responder).await
    }

    /// An HTTPS receiver (h2 and http/1.1 by ALPN) at `https://localhost:<port>`.
    pub async fn start_tls(ca: &TestCa) -> Self {
        let mut tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(Duration::ZERO, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))), |_, _| (200, vec![])).await
    }

    async fn serve(
        delay: Duration,
        tls: Option<tokio_rustls::TlsAcceptor>,
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = if tls.is_some() { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let arrived: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let responder: Arc<Responder> = Arc::new(responder);
        let (s, a, n) = (seen.clone(), arrived.clone(), notify.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (s, a, n, r, tls) = (s.clone(), a.clone(), n.clone(), responder.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, a, n, r) = (s.clone(), a.clone(), n.clone(), r.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let rec = Received {
                                path: parts.uri.path().to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            a.lock().unwrap().push((rec.path.clone(), rec.id()));
                            n.notify_waiters();
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let earlier =
                                s.lock().unwrap().iter().filter(|x| x.id() == rec.id() && x.path == rec.path).count();
                            let (status, headers) = r(&rec, earlier);
                            s.lock().unwrap().push(rec);
                            n.notify_waiters();
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(b"answer from the test receiver")));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            for (k, v) in headers {
                                resp.headers_mut().insert(http::HeaderName::try_from(k).unwrap(), v.parse().unwrap());
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            // A failed handshake (the client refused our certificate) just ends.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self { base, seen, arrived, notify }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything received on `path`, in arrival order.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.seen.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until what `path` received (in arrival order) satisfies `done`, and returns it. On
    /// timeout, panics naming `what` and listing every request `path` got.
    pub async fn wait_until(
        &self,
        path: &str,
        what: impl std::fmt::Display,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        eventually_notified(
            format!("{what} on {path}"),
            timeout,
            &self.notify,
            || self.on(path),
            |got| done(got),
            |got| summary(got),
        )
        .await
    }

    /// Waits until `path` has received requests for `n` distinct webhook ids.
    pub async fn wait_distinct(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(path, format!("{n} distinct events"), timeout, |got| distinct(got) >= n).await
    }

    /// Waits until `path` has received `n` requests, retries included.
    pub async fn wait_requests(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(path, format!("{n} requests"), timeout, |got| got.len() >= n).await
    }

    /// Waits until `n` requests have arrived on `path`, answered or not: deliveries under way.
    pub async fn wait_arrived(&self, path: &str, n: usize, timeout: Duration) {
        let arrived = || -> Vec<String> {
            self.arrived.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, id)| id.clone()).collect()
        };
        let what = format!("{n} requests to arrive on {path}");
        eventually_notified(what, timeout, &self.notify, arrived, |a| a.len() >= n, |a| format!("{a:?}")).await;
    }
}

/// How many distinct webhook ids `got` has.
fn distinct(got: &[Received]) -> usize {
    got.iter().map(Received::id).collect::<std::collections::HashSet<_>>().len()
}

/// What a receiver got, for a failure message: counts, then each request as
/// `<webhook id>#<attempt>` in arrival order.
fn summary(got: &[Received]) -> String {
    let each: Vec<String> = got.iter().map(|r| format!("{}#{}", r.id(), r.header("hookrelay-attempt"))).collect();
    format!("{} requests, {} distinct webhook ids: {}", got.len(), distinct(got), each.join(" "))
}

/// First arrival of each id, in arrival order.
pub fn first_arrivals(got: &[Received]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    got.iter().map(Received::id).filter(|id| seen.insert(id.clone())).collect()
}

/// Requests per id beyond the first.
pub fn duplicates(got: &[Received]) -> usize {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in got {
        *counts.entry(r.id()).or_default() += 1;
    }
    counts.values().map(|c| c - 1).sum()
}

/// Verifies a webhook per the Standard Webhooks specification, written from the spec text:
/// signed content `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with the base64
/// after `whsec_`, `webhook-signature` a space-separated list of `v1,<base64>`.
pub fn verify_spec(secret: &str, r: &Received) -> Result<(), String> {
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret lacks whsec_")?)
        .map_err(|e| e.to_string())?;
    let (id, ts, sigs) = (r.header("webhook-id"), r.header("webhook-timestamp"), r.header("webhook-signature"));
    if id.is_empty() || ts.parse::<i64>().is_err() {
        return Err(format!("missing or bad webhook-id/webhook-timestamp: {:?}", r.headers));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts.parse::<i64>().unwrap()).abs() > 300 {
        return Err("timestamp outside the 5 minute tolerance".into());
    }
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if sigs.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str())) {
        Ok(())
    } else {
        Err(format!("no v1 signature matches among {sigs:?}"))
    }
}

/// A throwaway CA and a `localhost` server certificate it signed.
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert: rustls::pki_types::CertificateDer<'static>,
    pub server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "hookrelay test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        // `localhost` and 127.0.0.1: a route may name the receiver by its address, too.
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            server_cert: cert.der().clone(),
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}
