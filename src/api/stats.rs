//! `GET /v1/stats` (per route over a window: counts, success rate, latency percentiles, from the
//! delivery log) and `GET /v1/audit` (every change made through the API, newest first).

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Query};
use super::{page_limit, parse_time, rfc3339};
use crate::config::files::Scope;
use crate::store::AuditFilter;
use axum::extract::State;

/// The window of the statistics.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back from now, e.g. `15m`, `1h` (default), `7d`.
    pub window: Option<String>,
    /// Only this route.
    pub route: Option<String>,
}

/// Latency percentiles of the window's attempts, in milliseconds (nearest rank).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Latency {
    /// Median.
    pub p50: Option<u64>,
    /// 95th percentile.
    pub p95: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
}

/// One route's statistics.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RouteStatsView {
    /// Route.
    pub route: String,
    /// Attempts in the window.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// Attempts that failed (retried or dead-lettered).
    pub failed: u64,
    /// Attempts after which the event was dead-lettered.
    pub dead: u64,
    /// delivered / attempts; absent without attempts.
    pub success_rate: Option<f64>,
    /// Attempt latency.
    pub latency_ms: Latency,
}

/// Statistics per route.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Start of the window (RFC 3339).
    pub since: String,
    /// End of the window: now (RFC 3339).
    pub until: String,
    /// Every live route (with zeros when it made no attempt), and routes that made attempts in
    /// the window but are gone since.
    pub routes: Vec<RouteStatsView>,
}

/// Delivery statistics per route over a window.
#[utoipa::path(get, path = "/v1/stats", tag = "operations", params(StatsQuery),
    responses(
        (status = 200, body = Stats),
        (status = 400, description = "A bad window", body = ErrorBody),
        KeyRefusals,
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let visible = super::tenants::visible_routes(&state, access).await?;
    let sees = |name: &str| visible.as_ref().is_none_or(|v| v.iter().any(|n| n == name));
    let window = match q.window.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(w) => {
            humantime::parse_duration(w).ok().filter(|d| !d.is_zero() && d.as_secs() <= 366 * 24 * 3600).ok_or_else(
                || ApiError::bad_request(format!("`window` = {w:?}: write a duration such as 15m, 1h or 7d")),
            )?
        }
    };
    let until = crate::broker::now_ms() as i64;
    let since = until - window.as_millis() as i64;
    let rows = state.store.stats(since, until + 1, q.route.as_deref()).await?;
    let mut routes: Vec<RouteStatsView> = rows
        .into_iter()
        .filter(|r| sees(&r.route))
        .map(|r| RouteStatsView {
            route: r.route,
            attempts: r.attempts,
            delivered: r.delivered,
            failed: r.failed,
            dead: r.dead,
            success_rate: r.success_rate,
            latency_ms: Latency { p50: r.latency_p50_ms, p95: r.latency_p95_ms, p99: r.latency_p99_ms },
        })
        .collect();
    let snapshot = state.router.snapshot();
    for r in snapshot.routes.iter().filter(|r| sees(&r.name) && q.route.as_ref().is_none_or(|n| n == &r.name)) {
        if !routes.iter().any(|s| s.route == r.name) {
            routes.push(RouteStatsView {
                route: r.name.clone(),
                attempts: 0,
                delivered: 0,
                failed: 0,
                dead: 0,
                success_rate: None,
                latency_ms: Latency { p50: None, p95: None, p99: None },
            });
        }
    }
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    Ok(Json(Stats { since: rfc3339(since), until: rfc3339(until), routes }))
}

/// Filters of the audit trail.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only changes by this API key name.
    pub actor: Option<String>,
    /// Only this action, e.g. `subscription.create`.
    pub action: Option<String>,
    /// Only changes of this target (a subscription id).
    pub target: Option<String>,
    /// At or after (RFC 3339 or Unix ms).
    pub since: Option<String>,
    /// Before (RFC 3339 or Unix ms).
    pub until: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// One change.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Id.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// The API key's name (`anonymous` without keys; `router` for automatic changes).
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// The change (never secrets).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// A page of the audit trail.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The audit trail of changes made through the API.
#[utoipa::path(get, path = "/v1/audit", tag = "operations", params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "A bad filter, cursor or limit", body = ErrorBody),
        KeyRefusals,
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Scope::Read)?;
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        since_ms: q.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until_ms: q.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        cursor: q.cursor,
        limit: page_limit(q.limit)?,
    };
    let page = state.store.audit(&filter).await?;
    // Details hold subscription specs: their URLs' credentials are for admins only.
    let reveal = super::masking::reveals(&caller);
    let items = page
        .items
        .into_iter()
        .map(|mut a| {
            if !reveal {
                super::masking::mask_urls_in(&mut a.details);
            }
            AuditView {
                id: a.id,
                at: rfc3339(a.at_ms),
                actor: a.actor,
                action: a.action,
                target: a.target,
                details: a.details,
            }
        })
        .collect();
    Ok(Json(AuditPage { items, next: page.next }))
}
