//! Tenant tokens: JWTs (HS256) that the sidecar signs and verifies itself, with the claims
//! `tenant`, `scope` (`read` or `manage`), `exp`, `iat`, `iss` = `hookrelay` and `aud` =
//! `hookrelay`. `hookrelay token` prints one; the admin API accepts one as a Bearer credential
//! beside the API keys, scoped to its tenant; the portal's session cookie is one too (with its own
//! audience, so that neither passes for the other).
//!
//! The key ([`TokenKey`]) is `HOOKRELAY_TOKEN_KEY` (the base64 of at least 32 random bytes) or,
//! when that is unset, derived from `HOOKRELAY_SECRET_KEY` by HMAC-SHA256 under a fixed label,
//! so that one secret serves both and neither reveals the other. Verification accepts HS256
//! only (so `alg: none` and every other algorithm are refused), checks `exp` without leeway,
//! and requires every claim.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::Sha256;
use std::time::Duration;

/// The environment variable of the token key.
pub const TOKEN_KEY_ENV: &str = "HOOKRELAY_TOKEN_KEY";

/// The label of the key derived from `HOOKRELAY_SECRET_KEY`.
const DERIVE_LABEL: &[u8] = b"hookrelay/token-key/v1";

/// `iss` of every token.
pub const ISSUER: &str = "hookrelay";

/// `aud` of tokens for the API (and the portal's token login).
pub const API_AUDIENCE: &str = "hookrelay";

/// The longest a token may live.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a tenant token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Read the tenant's subscriptions, deliveries, dead letters, statistics and event types.
    Read,
    /// Also create, change, test, rotate and delete them, and replay and retry.
    Manage,
}

impl TokenScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Manage => "manage",
        }
    }

    /// `read` or `manage`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "manage" => Some(Self::Manage),
            _ => None,
        }
    }
}

/// The claims of a tenant token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantClaims {
    /// The tenant.
    pub tenant: String,
    /// What it may do.
    pub scope: TokenScope,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// `hookrelay`.
    pub iss: String,
    /// The audience.
    pub aud: String,
}

/// Why a token or its key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No key to sign or verify with.
    #[error(
        "tenant tokens need {TOKEN_KEY_ENV} (the base64 of at least 32 random bytes) or HOOKRELAY_SECRET_KEY, from which a key is derived"
    )]
    NoKey,
    /// The key variable is wrong.
    #[error("{TOKEN_KEY_ENV}: {0}")]
    BadKey(String),
    /// The token does not verify (signature, algorithm, audience, shape).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past its `exp`.
    #[error("the token expired: ask for a new one")]
    Expired,
    /// A claim is out of range.
    #[error("{0}")]
    Claim(String),
}

/// The HMAC key that signs and verifies tokens and sessions. Its `Debug` hides it.
#[derive(Clone)]
pub struct TokenKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey { <hidden> }")
    }
}

impl TokenKey {
    /// A key of these bytes (at least 32).
    pub fn new(bytes: Vec<u8>) -> Result<Self, TokenError> {
        if bytes.len() < 32 {
            return Err(TokenError::BadKey(format!(
                "decodes to {} bytes, fewer than 32: use the base64 of 32 random bytes (`hookrelay secret-key` makes one)",
                bytes.len()
            )));
        }
        Ok(Self { bytes })
    }

    /// A random key, for the life of this process (sessions of the console when no key is set).
    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random generator is available");
        Self { bytes }
    }

    /// The key `HOOKRELAY_SECRET_KEY`'s 32 bytes derive: HMAC-SHA256(secret key, fixed label).
    pub fn derive(secret_key: &[u8; 32]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes a key of any length");
        mac.update(DERIVE_LABEL);
        Self { bytes: mac.finalize().into_bytes().to_vec() }
    }

    /// From the values of `HOOKRELAY_TOKEN_KEY` and `HOOKRELAY_SECRET_KEY`: the first when set,
    /// else one derived from the second, else `None`.
    pub fn from_values(token_key: Option<&str>, secret_key: Option<&str>) -> Result<Option<Self>, TokenError> {
        if let Some(v) = token_key.map(str::trim).filter(|v| !v.is_empty()) {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine.decode(v).map_err(|e| TokenError::BadKey(format!("not valid base64 ({e})")))?;
            return Self::new(bytes).map(Some);
        }
        match secret_key {
            Some(v) => {
                let key = crate::store::sealed::decode_key(v).map_err(|e| TokenError::BadKey(e.to_string()))?;
                Ok(Some(Self::derive(&key)))
            }
            None => Ok(None),
        }
    }

    /// From the environment (see [`from_values`](Self::from_values)).
    pub fn from_env() -> Result<Option<Self>, TokenError> {
        let var = |name: &str| std::env::var(name).ok();
        Self::from_values(var(TOKEN_KEY_ENV).as_deref(), var(crate::store::sealed::KEY_ENV).as_deref())
    }

    /// HMAC-SHA256 of `parts` (joined by NUL bytes) under this key: CSRF tokens and the like.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC takes a key of any length");
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Signs `claims` (any serialisable claims; HS256).
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.bytes))
            .expect("claims of strings and numbers serialise")
    }

    /// Verifies a token for `audience` and returns its claims: HS256 only, `exp` checked without
    /// leeway, `iss` = `hookrelay`.
    pub fn verify<T: serde::de::DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        match jsonwebtoken::decode::<T>(token, &DecodingKey::from_secret(&self.bytes), &v) {
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    Err(TokenError::Invalid("the signature does not verify (another key?)".into()))
                }
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    Err(TokenError::Invalid("only HS256 tokens made by hookrelay are accepted".into()))
                }
                _ => Err(TokenError::Invalid(e.to_string())),
            },
        }
    }

    /// A tenant token for the API, valid for `ttl`.
    pub fn issue(&self, tenant: &str, scope: TokenScope, ttl: Duration) -> Result<String, TokenError> {
        crate::tenant::check_id(tenant).map_err(TokenError::Claim)?;
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(TokenError::Claim(format!(
                "ttl {}: a duration from 1s to 366d",
                humantime::format_duration(ttl)
            )));
        }
        let now = unix_now();
        Ok(self.sign(&TenantClaims {
            tenant: tenant.to_string(),
            scope,
            exp: now + ttl.as_secs().max(1),
            iat: now,
            iss: ISSUER.into(),
            aud: API_AUDIENCE.into(),
        }))
    }

    /// Verifies a tenant token for the API.
    pub fn verify_tenant(&self, token: &str) -> Result<TenantClaims, TokenError> {
        let claims: TenantClaims = self.verify(token, API_AUDIENCE)?;
        crate::tenant::check_id(&claims.tenant).map_err(|m| TokenError::Invalid(m.to_string()))?;
        Ok(claims)
    }
}

/// Whether a Bearer credential is shaped like a JWT (three base64url parts) rather than an API key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
        && credential.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> TokenKey {
        TokenKey::new(vec![b; 32]).unwrap()
    }

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let t = key(1).issue("acme", TokenScope::Manage, Duration::from_secs(60)).unwrap();
        let c = key(1).verify_tenant(&t).unwrap();
        assert_eq!((c.tenant.as_str(), c.scope), ("acme", TokenScope::Manage));
        assert!(matches!(key(2).verify_tenant(&t), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn alg_none_and_other_audiences_are_refused() {
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let claims = format!(
            r#"{{"tenant":"acme","scope":"manage","exp":{},"iat":0,"iss":"hookrelay","aud":"hookrelay"}}"#,
            unix_now() + 600
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert!(key(1).verify_tenant(&none).is_err());
        let session = key(1).sign(&TenantClaims {
            tenant: "acme".into(),
            scope: TokenScope::Manage,
            exp: unix_now() + 600,
            iat: 0,
            iss: ISSUER.into(),
            aud: "hookrelay-portal".into(),
        });
        assert!(key(1).verify_tenant(&session).is_err(), "a portal session is not an API token");
    }

    #[test]
    fn the_derived_key_depends_on_the_secret_key_and_differs_from_it() {
        let a = TokenKey::derive(&[7; 32]);
        assert_eq!(a.bytes, TokenKey::derive(&[7; 32]).bytes);
        assert_ne!(a.bytes, TokenKey::derive(&[8; 32]).bytes);
        assert_ne!(a.bytes, vec![7; 32]);
        let env = TokenKey::from_values(None, Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")).unwrap().unwrap();
        assert_eq!(env.bytes, a.bytes);
        assert!(TokenKey::from_values(Some("c2hvcnQ="), None).is_err(), "a short token key is refused");
        assert!(TokenKey::from_values(None, None).unwrap().is_none());
    }

    #[test]
    fn ttl_and_tenant_are_checked() {
        assert!(key(1).issue("a/b", TokenScope::Read, Duration::from_secs(60)).is_err());
        assert!(key(1).issue("acme", TokenScope::Read, Duration::ZERO).is_err());
        assert!(key(1).issue("acme", TokenScope::Read, MAX_TTL + Duration::from_secs(1)).is_err());
    }
}
