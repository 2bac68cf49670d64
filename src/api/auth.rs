//! Bearer API keys with scopes, and tenant tokens. Keys are configured as `sha256:<hex>` hashes
//! in `[api] keys` (the key itself never sits in a file); a presented key is hashed and compared
//! with every configured hash in constant time. Without configured keys the API is open, which
//! the config allows only on a loopback address. `admin` may do everything; `read` every GET;
//! `ingest` only `POST /v1/events`. A key with its own `allow_from` is refused (403) when
//! presented from an address outside it, so that a leaked key is useless elsewhere (the
//! console's sign-in and sessions too: [`key_allowed_from`]).
//!
//! A Bearer credential shaped like a JWT is a tenant token ([`crate::tokens`]), accepted with or
//! without keys: its caller reaches its tenant's routes only ([`Caller::access`]), with `read`
//! or `manage`, and is refused by every operator endpoint ([`Caller::require`]).

use super::ApiState;
use super::error::ApiError;
use crate::config::files::{ApiKeyFile, Scope};
use crate::tokens::{TokenScope, looks_like_jwt};
use axum::extract::FromRequestParts;
use base64::Engine as _;
use http::StatusCode;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A tenant's grant: what a tenant token (or a portal session) allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantGrant {
    /// The tenant.
    pub tenant: String,
    /// `read` or `manage`.
    pub scope: TokenScope,
}

/// Who is calling: an API key (its name), `anonymous` when the API has no keys, or a tenant
/// (`tenant:<id>`) through a tenant token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (recorded in the audit trail).
    pub name: String,
    scopes: Vec<Scope>,
    open: bool,
    tenant: Option<TenantGrant>,
}

/// What a caller may see: everything, or one tenant's routes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// An operator: every route.
    All,
    /// A tenant: its own routes; another tenant's ids answer 404.
    Tenant(&'a str),
}

impl Caller {
    /// An operator with these scopes (a console session of an API key).
    pub fn operator(name: impl Into<String>, scopes: Vec<Scope>) -> Self {
        Self { name: name.into(), scopes, open: false, tenant: None }
    }

    /// The caller of an API without keys: may do everything (loopback only).
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), scopes: Vec::new(), open: true, tenant: None }
    }

    /// A tenant (a tenant token, or a portal session).
    pub fn tenant(grant: TenantGrant) -> Self {
        Self { name: format!("tenant:{}", grant.tenant), scopes: Vec::new(), open: false, tenant: Some(grant) }
    }

    /// The tenant's grant, for a tenant caller.
    pub fn grant(&self) -> Option<&TenantGrant> {
        self.tenant.as_ref()
    }

    /// Whether the caller may do what `scope` allows (an operator check; tenants answer false).
    pub fn has(&self, scope: Scope) -> bool {
        self.tenant.is_none() && (self.open || self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope))
    }

    /// Refuses with 403 unless the caller is an operator with `scope` (`admin` has every scope).
    /// Endpoints that are not about one tenant's routes use this: tenant tokens are refused.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if let Some(g) = &self.tenant {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a tenant token (tenant {:?}) cannot do this: it reaches its tenant's subscriptions, deliveries, \
                     dead letters, statistics and the event types only",
                    g.tenant
                ),
            ));
        }
        if self.has(scope) {
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

    /// For endpoints about routes, which tenants reach too: an operator needs `scope`; a tenant
    /// needs `read` to read (`Scope::Read`) and `manage` to change (`Scope::Admin`), and then sees
    /// its own routes only. `ingest` is for operators' keys only.
    pub fn access(&self, scope: Scope) -> Result<Access<'_>, ApiError> {
        let Some(g) = &self.tenant else {
            self.require(scope)?;
            return Ok(Access::All);
        };
        let allowed = match scope {
            Scope::Read => true,
            Scope::Admin => g.scope == TokenScope::Manage,
            Scope::Ingest => false,
        };
        if allowed {
            Ok(Access::Tenant(&g.tenant))
        } else {
            let needs = if scope == Scope::Admin { "manage" } else { scope.as_str() };
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this tenant token has the `{}` scope; this needs `{needs}`", g.scope.as_str()),
            ))
        }
    }
}

/// The configured key whose hash is `presented`'s, compared with every configured hash in
/// constant time, whatever matches first.
pub fn find_key<'k>(keys: &'k [ApiKeyFile], presented: &str) -> Option<&'k ApiKeyFile> {
    let presented = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for k in keys {
        let want = k.hash.strip_prefix("sha256:").and_then(|h| hex::decode(h).ok()).unwrap_or_default();
        if bool::from(want.ct_eq(presented.as_slice())) {
            found = Some(k);
        }
    }
    found
}

/// Refuses `key` (403 `address_not_allowed`, counted) when it has its own `allow_from` and the
/// caller's address `from` is outside it, or unknown.
pub fn key_allowed_from(key: &ApiKeyFile, from: Option<std::net::IpAddr>) -> Result<(), ApiError> {
    let Some(allow) = &key.allow_from else { return Ok(()) };
    if from.is_some_and(|ip| allow.allows(ip)) {
        return Ok(());
    }
    crate::metrics::api_refused(crate::metrics::ApiRefusal::KeyAddress);
    let who = from.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "address_not_allowed",
        format!("key {:?} may not be used from {who} (its allow_from in [[api.keys]])", key.name),
    ))
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let snapshot = state.router.snapshot();
        let keys = &snapshot.api.keys;
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts.headers.get(http::header::AUTHORIZATION);
        if keys.is_empty() && header.is_none() {
            return Ok(Self::anonymous());
        }
        let header = header.ok_or_else(|| unauthorized("missing `Authorization: Bearer <key>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <key>`"))?;
        if looks_like_jwt(token) {
            let key = state.token_key.as_ref().ok_or_else(|| {
                unauthorized(
                    "tenant tokens are not accepted here: neither HOOKRELAY_TOKEN_KEY nor HOOKRELAY_SECRET_KEY is set",
                )
            })?;
            let claims = key.verify_tenant(token).map_err(|e| unauthorized(&e.to_string()))?;
            return Ok(Self::tenant(TenantGrant { tenant: claims.tenant, scope: claims.scope }));
        }
        if keys.is_empty() {
            // Keyless (loopback only): a credential that is no tenant token changes nothing.
            return Ok(Self::anonymous());
        }
        let key = find_key(keys, token).ok_or_else(|| unauthorized("unknown API key"))?;
        key_allowed_from(key, super::access::peer(&parts.extensions).map(|p| p.remote.ip()))?;
        Ok(Self::operator(key.name.clone(), key.scopes.clone()))
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
