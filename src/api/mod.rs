//! The admin and ingest API (axum) on `[api] listen`: JSON in and out, every error in one shape
//! (`{"error": {"code", "message", "details"}}`, see [`error`]), Bearer API keys with scopes
//! ([`auth`]), and tenant tokens that reach one tenant's routes only ([`tenants`]); who may call
//! at all, and with what content type, is checked in one middleware in front of every route
//! ([`access`]). Handlers are thin: they check the caller and the input, call the runtime, the
//! store or [`crate::subscriptions`], and shape the answer. The OpenAPI document is built from
//! the same handler annotations that register the routes, so it cannot drift. The console and
//! the portal are served on the same listener, behind the same middleware, mounted by the caller
//! of [`serve`] (they use this module, not the other way round).
//!
//! ```text
//! POST   /v1/events                          ingest one event (202 after broker confirm)   ingest
//! GET    /v1/event-types[/{type}]            the schema catalogue                           read
//! GET    /v1/routes[/{name}]                 file and API routes, with origin               read
//! POST   /v1/routes/{name}/test              send a signed test event now                   admin
//! POST   /v1/routes/{name}/example           queue an example event (delivered and logged)  admin
//! POST   /v1/subscriptions                   create (the secret is returned once)           admin
//! GET    /v1/subscriptions[/{id}]                                                           read
//! PUT    /v1/subscriptions/{id}              replace (If-Match: version)                    admin
//! PATCH  /v1/subscriptions/{id}              change some keys (JSON Merge Patch)            admin
//! DELETE /v1/subscriptions/{id}                                                             admin
//! POST   /v1/subscriptions/validate          policy check + signed test ping                admin
//! POST   /v1/subscriptions/{id}/rotate-secret                                               admin
//! GET    /v1/deliveries[/{id}]               filters, cursor paging; one with its attempts  read
//! POST   /v1/deliveries/{id}/retry           republish the event to its route               admin
//! GET    /v1/dead-letters[/{id}]             filters, cursor paging                         read
//! POST   /v1/dead-letters/replay             by ids or by filter                            admin
//! GET    /v1/stats                           per route over a window                        read
//! GET    /v1/audit                           every change made through the API              read
//! GET    /v1/config   POST /v1/config/reload                                                read / admin
//! POST   /v1/config/plan                     what a reload to the files sent would change   admin
//! POST   /v1/tenants/{id}/portal-link        a one-time URL into the tenant portal          admin
//! GET    /healthz /readyz /metrics /openapi.json                                            open
//! ```

pub mod access;
pub mod auth;
pub mod config;
pub mod dead_letters;
pub mod deliveries;
pub mod document;
pub mod error;
pub mod event_types;
pub mod events;
pub mod health;
pub mod masking;
pub mod routes;
pub mod stats;
pub mod subscriptions;
pub mod tenants;

use crate::runtime::Runtime;
use crate::store::Store;
use crate::subscriptions::Subscriptions;
use error::ApiError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The running router: live config, broker, client, reload.
    pub router: Arc<Runtime>,
    /// The store: delivery log, dead letters, subscriptions, audit.
    pub store: Arc<dyn Store>,
    /// API-managed routes.
    pub subscriptions: Arc<Subscriptions>,
    /// The config directory (for `POST /v1/config/reload`).
    pub config_dir: PathBuf,
    /// Renders `/metrics`, when metrics are on.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Signs and verifies tenant tokens and portal sessions (`HOOKRELAY_TOKEN_KEY`, or derived
    /// from `HOOKRELAY_SECRET_KEY`); without one, tenant tokens are refused.
    pub token_key: Option<Arc<crate::tokens::TokenKey>>,
    /// Signs console sessions and CSRF tokens: the token key, else a key of this process.
    pub session_key: Arc<crate::tokens::TokenKey>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookrelay admin and ingest API",
        description = "Ingest CloudEvents, manage subscriptions, and see deliveries, dead letters and statistics. \
                       Errors are {\"error\": {\"code\", \"message\", \"details\"}}."
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "events", description = "Ingest"),
        (name = "catalogue", description = "Event types and routes"),
        (name = "subscriptions", description = "API-managed routes"),
        (name = "deliveries", description = "The delivery log"),
        (name = "dead-letters", description = "Dead letters and replay"),
        (name = "operations", description = "Statistics, audit, config, health"),
        (name = "tenants", description = "Tenant tokens and portal links. A Bearer credential shaped like a JWT is a tenant token \
            (`hookrelay token`): it reaches its tenant's subscriptions, deliveries, dead letters and statistics, and the event types; \
            another tenant's ids answer 404; every other endpoint answers 403.")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API's routes and its OpenAPI document, built from the same annotations, with `pages`
/// (the console and the portal, `crate::ui`, which call this module's handlers: the API does not
/// know them) served beside, under the same fallbacks and the same [`access`] middleware.
pub fn app(state: ApiState, pages: axum::Router) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::ingest))
        .routes(routes!(event_types::list))
        .routes(routes!(event_types::get))
        .routes(routes!(routes::list))
        .routes(routes!(routes::get))
        .routes(routes!(routes::test))
        .routes(routes!(routes::example))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(subscriptions::get, subscriptions::update, subscriptions::patch, subscriptions::delete))
        .routes(routes!(subscriptions::validate))
        .routes(routes!(subscriptions::rotate))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::get))
        .routes(routes!(deliveries::retry))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::get))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(stats::get))
        .routes(routes!(stats::audit))
        .routes(routes!(config::get))
        .routes(routes!(config::reload))
        .routes(routes!(config::plan))
        .routes(routes!(tenants::portal_link))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .with_state(state.clone())
        .split_for_parts();
    access::document(&mut openapi);
    access::set_operations(&openapi);
    let mut doc = serde_json::to_value(&openapi).unwrap_or_default();
    document::constrain(&mut doc);
    let doc = Arc::new(doc);
    let live = state.router.clone();
    let router = router
        .merge(pages)
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let (doc, live) = (doc.clone(), live.clone());
                async move { axum::Json(document::live(&doc, &live.snapshot())) }
            }),
        )
        .fallback(|uri: http::Uri| async move {
            ApiError::not_found(format!("no such path {} (the paths are listed at /openapi.json)", uri.path()))
        })
        .method_not_allowed_fallback(|method: http::Method, uri: http::Uri| async move {
            ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(state, access::guard));
    (router, openapi)
}

/// Serves the API and `pages` (see [`app`]) on `listener` until `stop`; requests in flight
/// finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    pages: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let (app, _) = app(state, pages);
    axum::serve(listener, app.into_make_service_with_connect_info::<access::Peer>())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time in a query: RFC 3339 (`2026-11-23T10:00:00Z`) or Unix milliseconds.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{field}` = {text:?} is not a time: write RFC 3339 (2026-11-23T10:00:00Z) or Unix milliseconds"
            ))
        })
}

/// A page size: 1 to 1000, default 100.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("`limit` = {n}: pass 1 to 1000"))),
    }
}
