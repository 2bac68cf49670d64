//! Tenants in the API: which routes a caller may see (`visible_routes`, `owns_route`: a
//! tenant's are the file routes with its `tenant` and its subscriptions, disabled ones
//! included), and `POST /v1/tenants/{id}/portal-link`, the one-time URL an operator hands a
//! tenant. The link's nonce is random, kept in the store as its SHA-256 only, and exchanged once
//! (at `/portal/enter`) for a portal session cookie.

use super::ApiState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path, RawBody};
use super::rfc3339;
use crate::config::files::Scope;
use crate::store::{AuditEntry, PortalLink};
use crate::tokens::TokenScope;
use axum::extract::State;
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::Duration;

/// The routes a caller may see: `None` for an operator (all of them), else the tenant's route
/// names, sorted.
pub(crate) async fn visible_routes(state: &ApiState, access: Access<'_>) -> Result<Option<Vec<String>>, ApiError> {
    let Access::Tenant(tenant) = access else { return Ok(None) };
    let mut names: BTreeSet<String> =
        state.router.snapshot().routes.iter().filter(|r| r.tenant() == Some(tenant)).map(|r| r.name.clone()).collect();
    names.extend(
        state.store.subscriptions().await?.into_iter().filter(|s| s.tenant.as_deref() == Some(tenant)).map(|s| s.name),
    );
    Ok(Some(names.into_iter().collect()))
}

/// Whether the caller may see route `name`.
pub(crate) async fn owns_route(state: &ApiState, access: Access<'_>, name: &str) -> Result<bool, ApiError> {
    Ok(match visible_routes(state, access).await? {
        None => true,
        Some(names) => names.iter().any(|n| n == name),
    })
}

/// Whether the caller may see a subscription of tenant `owner`.
pub(crate) fn owns_subscription(access: Access<'_>, owner: Option<&str>) -> bool {
    match access {
        Access::All => true,
        Access::Tenant(t) => owner == Some(t),
    }
}

/// What a portal link opens.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalLinkRequest {
    /// `read` or `manage` (default): what the tenant may do in the portal.
    pub scope: Option<String>,
    /// How long the link can be used, e.g. `"15m"` (default), at most `"7d"`. The portal session
    /// it opens lasts 8 hours.
    pub ttl: Option<String>,
}

/// A one-time portal link.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PortalLinkView {
    /// The tenant.
    pub tenant: String,
    /// `read` or `manage`.
    pub scope: String,
    /// The link, on the host this request was sent to (`X-Forwarded-Proto`/`Host` honoured):
    /// hand it to the tenant. It works once.
    pub url: String,
    /// The same link as a path, to put behind another base URL.
    pub path: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// How long a portal session lasts.
pub const PORTAL_SESSION: Duration = Duration::from_secs(8 * 3600);

/// Make a one-time link into tenant `id`'s portal. The link opens a portal session (8 hours)
/// the first time it is used before it expires, and never again; the tenant then sees and
/// manages only its own subscriptions, deliveries, dead letters and statistics.
#[utoipa::path(post, path = "/v1/tenants/{id}/portal-link", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id: 1 to 128 characters of A-Z a-z 0-9 - _ . : @")),
    request_body(content = Option<PortalLinkRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "Made; the URL works once, until `expires_at`", body = PortalLinkView),
        (status = 400, description = "The body is not JSON or has unknown keys", body = ErrorBody),
        KeyRefusals,
        (status = 422, description = "A bad tenant id, scope or ttl", body = ErrorBody),
        (status = 503, description = "No HOOKRELAY_TOKEN_KEY or HOOKRELAY_SECRET_KEY (`tokens_unavailable`), or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn portal_link(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<PortalLinkView>), ApiError> {
    caller.require(Scope::Admin)?;
    let req: PortalLinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PortalLinkRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
    };
    crate::tenant::check_id(&id).map_err(|m| ApiError::unprocessable("invalid", m))?;
    let scope = match req.scope.as_deref() {
        None => TokenScope::Manage,
        Some(s) => TokenScope::parse(s)
            .ok_or_else(|| ApiError::unprocessable("invalid", format!("scope {s:?}: use read or manage")))?,
    };
    let ttl = match req.ttl.as_deref() {
        None => Duration::from_secs(15 * 60),
        Some(t) => {
            humantime::parse_duration(t).ok().filter(|d| !d.is_zero() && d.as_secs() <= 7 * 24 * 3600).ok_or_else(
                || ApiError::unprocessable("invalid", format!("ttl {t:?}: a duration up to 7d, e.g. \"15m\"")),
            )?
        }
    };
    if state.token_key.is_none() {
        return Err(ApiError::unavailable(
            "tokens_unavailable",
            "portal sessions need HOOKRELAY_TOKEN_KEY or HOOKRELAY_SECRET_KEY where hookrelay runs",
        ));
    }
    let link = make_portal_link(&state, &id, scope, ttl, &caller.name).await?;
    let base = public_base(&headers);
    Ok((
        StatusCode::CREATED,
        Json(PortalLinkView {
            tenant: id,
            scope: scope.as_str().into(),
            url: format!("{base}{}", link.0),
            path: link.0,
            expires_at: rfc3339(link.1),
        }),
    ))
}

/// Stores a new link and audits it; returns its path (with the nonce) and its expiry (Unix ms).
pub(crate) async fn make_portal_link(
    state: &ApiState,
    tenant: &str,
    scope: TokenScope,
    ttl: Duration,
    actor: &str,
) -> Result<(String, i64), ApiError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| ApiError::unavailable("random_unavailable", e.to_string()))?;
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
    let now = crate::broker::now_ms() as i64;
    let expires = now + ttl.as_millis() as i64;
    state
        .store
        .create_portal_link(&PortalLink {
            nonce_hash: nonce_hash(&nonce),
            tenant: tenant.to_string(),
            scope: scope.as_str().into(),
            created_by: actor.to_string(),
            created_at_ms: now,
            expires_at_ms: expires,
        })
        .await?;
    let audit = AuditEntry::new(
        now,
        actor,
        "tenant.portal_link",
        tenant,
        serde_json::json!({"scope": scope.as_str(), "expires_at": rfc3339(expires)}),
    );
    state.store.append_audit(&audit).await?;
    Ok((format!("/portal/enter?link={nonce}"), expires))
}

/// How a link's nonce is stored.
pub(crate) fn nonce_hash(nonce: &str) -> String {
    hex::encode(Sha256::digest(nonce.as_bytes()))
}

/// `scheme://host` of the request, as the client sent it (behind a TLS proxy, its
/// `X-Forwarded-Proto`).
pub(crate) fn public_base(headers: &HeaderMap) -> String {
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = if is_https(headers) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Whether the client reached us over TLS (through a proxy that says so).
pub(crate) fn is_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}
