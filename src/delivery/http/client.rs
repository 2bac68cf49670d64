//! The outbound HTTP client: hyper over rustls (ring provider, webpki roots), pooled with
//! HTTP/1.1 keep-alive and HTTP/2 where ALPN offers it, behind the SSRF guard. Redirects are
//! never followed. Every request has an overall timeout (connect, send, response head and the
//! capped body read), which hyper's client does not have by itself.

use super::guard::{Blocked, GuardedConnector, Policy, find_blocked};
use super::retry::parse_retry_after;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Response bytes read at most before the connection is dropped instead of drained.
const DRAIN_LIMIT: usize = 64 * 1024;

/// What the receiver answered.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Parsed `Retry-After`, if sent.
    pub retry_after: Option<Duration>,
    /// The start of the body, lossy UTF-8, capped.
    pub body: String,
    /// From sending to the end of the body.
    pub duration: Duration,
}

/// A request that got no HTTP response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the target.
    #[error(transparent)]
    Blocked(#[from] Blocked),
    /// No complete response within the route's timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// TCP connect or DNS failure.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed (rustls refuses the receiver's certificate or ciphers).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Anything else between sending and the end of the response.
    #[error("request failed: {0}")]
    Other(String),
}

/// The pooled client; cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    policy: Policy,
}

impl WebhookClient {
    /// A client for `policy`, trusting the Mozilla roots plus `extra_roots`. ALPN offers h2
    /// and http/1.1.
    pub fn new(policy: Policy, extra_roots: &[rustls::pki_types::CertificateDer<'static>]) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let (added, ignored) = roots.add_parsable_certificates(extra_roots.iter().cloned());
        if ignored > 0 {
            tracing::warn!(added, ignored, "some [security] ca_file certificates are not usable as trust anchors");
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(GuardedConnector::new(policy, Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Self { client, policy }
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// POSTs `body` to `url` and reads at most `keep` bytes of the answer.
    pub async fn post(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        keep: usize,
    ) -> Result<Response, SendError> {
        self.policy.check_url(url)?;
        let mut req = http::Request::builder().method(Method::POST).uri(url.clone());
        if let Some(h) = req.headers_mut() {
            *h = headers;
        }
        let req = req.body(Full::new(body)).map_err(|e| SendError::Other(e.to_string()))?;
        let started = Instant::now();
        let exchange = async {
            let resp = self.client.request(req).await.map_err(classify_error)?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let mut body = resp.into_body();
            let mut kept = Vec::new();
            let mut read = 0usize;
            while read < DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.len();
                            let room = keep.saturating_sub(kept.len());
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(e)) => return Err(SendError::Other(format!("reading the response body: {e}"))),
                    None => break,
                }
            }
            Ok(Response {
                status,
                retry_after,
                body: String::from_utf8_lossy(&kept).into_owned(),
                duration: started.elapsed(),
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| SendError::Timeout(timeout))?
    }
}

fn classify_error(err: hyper_util::client::legacy::Error) -> SendError {
    if let Some(b) = find_blocked(&err) {
        return SendError::Blocked(b);
    }
    let chain = error_chain(&err);
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return SendError::Tls(chain);
        }
        // io::Error's source() skips the error it wraps: step into it.
        cur = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    if err.is_connect() { SendError::Connect(chain) } else { SendError::Other(chain) }
}

/// `a: b: c` from an error and its sources.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
