//! Bearer API keys with scopes. Keys are configured as `sha256:<hex>` hashes in `[api] keys`
//! (the key itself never sits in a file); a presented key is hashed and compared with every
//! configured hash in constant time. Without configured keys the API is open, which the config
//! allows only on a loopback address. `admin` may do everything; `read` every GET; `ingest`
//! only `POST /v1/events`. A key with its own `allow_from` is refused (403) when presented from
//! an address outside it, so that a leaked key is useless elsewhere.

use super::ApiState;
use super::error::ApiError;
use crate::config::files::Scope;
use axum::extract::FromRequestParts;
use base64::Engine as _;
use http::StatusCode;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who is calling: the key's name, or `anonymous` when the API has no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (recorded in the audit trail).
    pub name: String,
    scopes: Vec<Scope>,
    open: bool,
}

impl Caller {
    /// Refuses with 403 unless the caller has `scope` (`admin` has every scope).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.open || self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope) {
            Ok(())
        } else {
            let has: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("key {:?} lacks the `{}` scope (it has: {})", self.name, scope.as_str(), has.join(", ")),
            ))
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let snapshot = state.router.snapshot();
        let keys = &snapshot.api.keys;
        if keys.is_empty() {
            return Ok(Self { name: "anonymous".into(), scopes: Vec::new(), open: true });
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <key>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <key>`"))?;
        let presented = Sha256::digest(token.as_bytes());
        // Every configured hash is compared, in constant time, whatever matches first.
        let mut found = None;
        for k in keys {
            let want = k.hash.strip_prefix("sha256:").and_then(|h| hex::decode(h).ok()).unwrap_or_default();
            if bool::from(want.ct_eq(presented.as_slice())) {
                found = Some(k);
            }
        }
        let key = found.ok_or_else(|| unauthorized("unknown API key"))?;
        if let Some(allow) = &key.allow_from {
            let from = super::access::peer(&parts.extensions).map(|p| p.remote.ip());
            if !from.is_some_and(|ip| allow.allows(ip)) {
                crate::metrics::api_refused(crate::metrics::ApiRefusal::KeyAddress);
                let who = from.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "address_not_allowed",
                    format!("key {:?} may not be used from {who} (its allow_from in [[api.keys]])", key.name),
                ));
            }
        }
        Ok(Self { name: key.name.clone(), scopes: key.scopes.clone(), open: false })
    }
}

/// A new API key (`hr_` + 32 random bytes, base64url) and its `sha256:` hash for `[api] keys`.
pub fn generate_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator is available");
    let key = format!("hr_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())));
    (key, hash)
}
