//! The admin and ingest API of a running router over real HTTP ([`Api`], its answers [`Answer`]),
//! and API keys made for a test ([`api_key`]).

use super::{ApiKeyEntry, Scope};
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The admin API of a running router, over real HTTP.
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// An API answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

/// The status and the body, as a failure message wants them.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

impl Api {
    pub fn new(base: &str, key: Option<&str>) -> Self {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Self { base: base.to_string(), key: key.map(str::to_string), client }
    }

    /// The same API with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self::new(&self.base, key)
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
        let resp = self.client.request(req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(serde_json::to_vec(&body).unwrap()), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.send("PUT", path, Some(serde_json::to_vec(&body).unwrap()), headers).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }
}

impl Answer {
    /// Asserts the status and, for errors, the API's error shape; returns the JSON.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        if status >= 400 {
            let e = &self.json["error"];
            assert!(e["code"].is_string() && e["message"].is_string(), "not the error shape: {}", self.text);
        }
        &self.json
    }

    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// An API key and its `[[api.keys]]` entry.
pub fn api_key(name: &str, scopes: &[Scope]) -> (String, ApiKeyEntry) {
    use sha2::Digest;
    let key = format!("hr_test_{name}_{}", uuid::Uuid::new_v4().simple());
    let hash = format!("sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())));
    (key, ApiKeyEntry { name: name.into(), hash, scopes: scopes.to_vec(), allow_from: Vec::new() })
}
