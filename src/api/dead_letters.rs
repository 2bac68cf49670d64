//! `GET /v1/dead-letters[/{id}]` and `POST /v1/dead-letters/replay`. A replay claims each dead
//! letter in the store under a lease first (so two replays of one dead letter cannot both send
//! it), then republishes the original event, with a broker confirm, to the queue of the route
//! that gave up on it (only that route gets it again), and only then marks it replayed; the
//! claim of any that failed is released. A replay that dies between claim and confirm leaves
//! claims that expire after [`REPLAY_LEASE`], so its dead letters can be replayed again: never
//! marked replayed without having been republished.

use super::ApiState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path, Query};
use super::{page_limit, parse_time, rfc3339};
use crate::broker::{Destination, H_ATTEMPTS_BEFORE, Headers};
use crate::config::files::Scope;
use crate::config::route_queue;
use crate::store::{AuditEntry, DeadLetter, DeadLetterFilter};
use axum::extract::State;
use base64::Engine as _;
use std::collections::HashSet;
use std::time::Duration;

/// How long a replay's claim on a dead letter holds. A claim older than this belongs to a replay
/// that crashed or stalled before the broker confirmed, and the next replay takes it over.
pub const REPLAY_LEASE: Duration = Duration::from_secs(5 * 60);

/// Dead letters republished between two writes of their marks (a crash in between republishes
/// at most this many again, once their lease expires).
const MARK_EVERY: usize = 100;

/// Filters of the dead letters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only this reason (`schema`, `rejected`, `exhausted`, …).
    pub reason: Option<String>,
    /// Dead at or after (RFC 3339 or Unix ms).
    pub since: Option<String>,
    /// Dead before (RFC 3339 or Unix ms).
    pub until: Option<String>,
    /// Include those already replayed (default false).
    pub include_replayed: Option<bool>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// A dead letter.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// Id.
    pub id: String,
    /// The route that gave up.
    pub route: String,
    /// CloudEvent id (empty when the message was not a CloudEvent).
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// `malformed`, `too_large`, `unknown_type`, `schema`, `script_error`, `rejected`, `gone`,
    /// `exhausted`, `blocked` or `delivery_limit`.
    pub reason: String,
    /// The cause.
    pub error: String,
    /// `{"violations": [{"path", "message"}]}` for `schema` (the shape of the API's errors:
    /// `path` a JSON Pointer into `data`, `""` for `data` itself).
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    /// The last HTTP status.
    pub last_status: Option<u16>,
    /// The start of the last response body.
    pub last_response: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When (RFC 3339).
    pub dead_at: String,
    /// When it was replayed, if it was.
    pub replayed_at: Option<String>,
}

/// Dead letters store schema violations as a bare array (and did so before the API's shape was
/// chosen): shown as the API's errors show them, `{"violations": [...]}`.
fn one_shape(details: serde_json::Value) -> serde_json::Value {
    match details {
        serde_json::Value::Array(violations) => serde_json::json!({ "violations": violations }),
        other => other,
    }
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            route: d.route,
            event_id: d.event_id,
            event_type: d.event_type,
            reason: d.reason,
            error: d.error,
            details: d.details.and_then(|t| serde_json::from_str(&t).ok()).map(one_shape),
            last_status: d.last_status,
            last_response: d.last_response,
            attempts: d.attempts,
            dead_at: rfc3339(d.dead_at_ms),
            replayed_at: d.replayed_at_ms.map(rfc3339),
        }
    }
}

/// A dead letter with the event it keeps.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterDetail {
    /// The dead letter.
    #[serde(flatten)]
    pub dead_letter: DeadLetterView,
    /// The event as it arrived, when it is JSON.
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
    /// The event as it arrived, base64, when it is not JSON.
    pub event_base64: Option<String>,
    /// The producer's message headers (trace context and the like).
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
}

/// A page of dead letters.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    /// Newest first.
    pub items: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next: Option<String>,
}

/// List dead letters, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters", params(DeadLetterQuery),
    responses(
        (status = 200, body = DeadLetterPage),
        (status = 400, description = "A bad filter, cursor or limit", body = ErrorBody),
        KeyRefusals,
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let filter = DeadLetterFilter {
        route: q.route,
        routes: super::tenants::visible_routes(&state, access).await?,
        reason: q.reason,
        event_id: None,
        since_ms: q.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until_ms: q.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        include_replayed: q.include_replayed.unwrap_or(false),
        cursor: q.cursor,
        limit: page_limit(q.limit)?,
    };
    let page = state.store.dead_letters(&filter).await?;
    Ok(Json(DeadLetterPage { items: page.items.into_iter().map(DeadLetterView::from).collect(), next: page.next }))
}

/// One dead letter, with the event it keeps.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead-letters",
    params(("id" = String, Path, description = "Dead letter id")),
    responses(
        (status = 200, body = DeadLetterDetail),
        (status = 400, description = "The id is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let d = visible(&state, access, &id).await?.ok_or_else(|| ApiError::not_found(format!("no dead letter {id:?}")))?;
    let event: Option<serde_json::Value> = serde_json::from_slice(&d.body).ok();
    let event_base64 = event.is_none().then(|| base64::engine::general_purpose::STANDARD.encode(&d.body));
    let headers = serde_json::from_str(&d.headers).unwrap_or_else(|_| serde_json::json!({}));
    Ok(Json(DeadLetterDetail { dead_letter: d.into(), event, event_base64, headers }))
}

/// What to replay: `ids`, or a `filter` (and at most `max` of its dead letters, oldest first).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Dead letter ids.
    pub ids: Option<Vec<String>>,
    /// Or every dead letter matching this filter that was not replayed yet.
    pub filter: Option<ReplayFilter>,
    /// With `filter`: at most this many (default 1000, at most 10000).
    #[serde(default, deserialize_with = "whole_number")]
    pub max: Option<u32>,
    /// Replay nothing: report in `would_replay` what would be replayed (and what would be
    /// refused) now.
    pub dry_run: Option<bool>,
}

/// A count written as a JSON integer, `5` or `5.0` alike (JSON Schema's `integer` takes both).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize as _;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(serde::de::Error::custom(format!("{n} is not a whole number from 0 to {}", u32::MAX))),
    }
}

/// Which dead letters a bulk replay takes.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Dead at or after (RFC 3339 or Unix ms).
    pub since: Option<String>,
    /// Dead before (RFC 3339 or Unix ms).
    pub until: Option<String>,
}

/// One dead letter that could not be replayed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayFailure {
    /// The dead letter.
    pub id: String,
    /// Why.
    pub error: String,
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayResult {
    /// Republished, each with a broker confirm, and marked replayed.
    pub replayed: Vec<String>,
    /// Refused: replayed before (a replay happens once).
    pub already_replayed: Vec<String>,
    /// Refused: claimed by another replay that is under way (or that stopped less than the
    /// lease, 5 minutes, ago); if it stays unreplayed, replay it after the lease.
    pub in_progress: Vec<String>,
    /// No such dead letter.
    pub not_found: Vec<String>,
    /// Not republished; still available for a later replay.
    pub failed: Vec<ReplayFailure>,
    /// A dry run: nothing was replayed.
    pub dry_run: bool,
    /// In a dry run, the dead letters a replay would republish now (one claimed by a replay
    /// under way would be refused then, as `in_progress`).
    pub would_replay: Vec<String>,
}

/// Replay dead letters to the routes that gave up on them.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead-letters", request_body = ReplayRequest,
    responses(
        (status = 200, description = "What was replayed, refused and failed", body = ReplayResult),
        (status = 400, description = "Not JSON, unknown keys, or a bad time in the filter", body = ErrorBody),
        KeyRefusals,
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Neither or both of ids and filter, or `max` out of range", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<ReplayRequest>,
) -> Result<Json<ReplayResult>, ApiError> {
    let access = caller.access(Scope::Admin)?;
    let routes = super::tenants::visible_routes(&state, access).await?;
    let max = req.max.unwrap_or(1000);
    if !(1..=10_000).contains(&max) {
        return Err(ApiError::unprocessable("invalid", "`max` must be 1 to 10000"));
    }
    let ids = match (req.ids, req.filter) {
        (Some(ids), None) if !ids.is_empty() && ids.len() <= 10_000 => ids,
        (None, Some(f)) => {
            let filter = DeadLetterFilter {
                route: f.route,
                routes: routes.clone(),
                reason: f.reason,
                since_ms: f.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
                until_ms: f.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
                ..Default::default()
            };
            state.store.dead_letter_ids(&filter, max).await?
        }
        _ => {
            return Err(ApiError::unprocessable(
                "invalid",
                "give either `ids` (1 to 10000 dead letter ids) or `filter` (with an optional `max`)",
            ));
        }
    };
    // Another tenant's dead letters are, to a tenant, not there.
    let mut hidden = Vec::new();
    let mut mine = Vec::with_capacity(ids.len());
    for id in ids {
        match &routes {
            Some(_) if visible(&state, access, &id).await?.is_none() => hidden.push(id),
            _ => mine.push(id),
        }
    }
    let mut result =
        if req.dry_run == Some(true) { dry_run(&state, mine).await? } else { replay_ids(&state, mine).await? };
    result.not_found.extend(hidden);
    // Audited when it republished or failed to: a replay that failed was still asked for.
    if !result.replayed.is_empty() || !result.failed.is_empty() {
        let target = match (result.replayed.as_slice(), result.failed.as_slice()) {
            ([one], []) => one.clone(),
            ([], [one]) => one.id.clone(),
            (replayed, failed) => format!("{} dead letters", replayed.len() + failed.len()),
        };
        let audit = AuditEntry::new(
            crate::broker::now_ms() as i64,
            &caller.name,
            "dead_letter.replay",
            target,
            serde_json::json!({"replayed": result.replayed, "failed": result.failed}),
        );
        state.store.append_audit(&audit).await?;
    }
    Ok(Json(result))
}

/// The dead letter `id`, if it exists and the caller may see it.
async fn visible(state: &ApiState, access: Access<'_>, id: &str) -> Result<Option<DeadLetter>, ApiError> {
    match state.store.dead_letter(id).await? {
        Some(d) if super::tenants::owns_route(state, access, &d.route).await? => Ok(Some(d)),
        _ => Ok(None),
    }
}

/// What a replay of `ids` would do now, doing nothing.
async fn dry_run(state: &ApiState, ids: Vec<String>) -> Result<ReplayResult, ApiError> {
    let mut result = ReplayResult { dry_run: true, ..Default::default() };
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id.clone()) {
            continue;
        }
        match state.store.dead_letter(&id).await? {
            None => result.not_found.push(id),
            Some(d) if d.replayed_at_ms.is_some() => result.already_replayed.push(id),
            Some(_) => result.would_replay.push(id),
        }
    }
    Ok(result)
}

/// Claims (under a lease), republishes and then marks the dead letters `ids`; the caller audits.
pub(crate) async fn replay_ids(state: &ApiState, ids: Vec<String>) -> Result<ReplayResult, ApiError> {
    let mut result = ReplayResult::default();
    let claim = uuid::Uuid::new_v4().to_string();
    let now = crate::broker::now_ms() as i64;
    let claimed = state.store.claim_replay(&ids, &claim, now, REPLAY_LEASE.as_millis() as i64).await?;
    let mut seen: HashSet<&str> = claimed.iter().map(String::as_str).collect();
    for id in &ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        match state.store.dead_letter(id).await? {
            Some(d) if d.replayed_at_ms.is_some() => result.already_replayed.push(id.clone()),
            Some(_) => result.in_progress.push(id.clone()),
            None => result.not_found.push(id.clone()),
        }
    }
    let broker = state.router.broker();
    let snapshot = state.router.snapshot();
    for chunk in claimed.chunks(MARK_EVERY) {
        let mut published = Vec::new();
        let mut release = Vec::new();
        for id in chunk {
            let outcome = match (state.store.dead_letter(id).await?, &broker) {
                (None, _) => Err("vanished while replaying".to_string()),
                (_, None) => Err("the router is not connected to its broker right now; retry".to_string()),
                (Some(dl), Some(broker)) if snapshot.route(&dl.route).is_some() => {
                    let mut headers = Headers::default();
                    if let Ok(serde_json::Value::Object(h)) = serde_json::from_str(&dl.headers) {
                        headers.0.extend(h);
                    }
                    headers.set("hookrelay-replay-of", id.as_str());
                    // Attempts are numbered on from the dead letter's.
                    headers.set(H_ATTEMPTS_BEFORE, dl.attempts);
                    let queue = route_queue(&dl.route);
                    let msg_id = (!dl.event_id.is_empty()).then_some(dl.event_id.as_str());
                    broker
                        .publish(Destination::Queue(&queue), &dl.body, &headers, msg_id)
                        .await
                        .map_err(|e| e.to_string())
                }
                (Some(dl), Some(_)) => Err(format!("route {:?} no longer exists", dl.route)),
            };
            match outcome {
                Ok(()) => published.push(id.clone()),
                Err(error) => {
                    release.push(id.clone());
                    result.failed.push(ReplayFailure { id: id.clone(), error });
                }
            }
        }
        // Marked only now that the broker confirmed them. An id whose lease another replay took
        // over meanwhile is not marked by this one; it was republished all the same.
        state.store.mark_replayed(&published, &claim, crate::broker::now_ms() as i64).await?;
        state.store.release_replay(&release, &claim).await?;
        result.replayed.extend(published);
    }
    Ok(result)
}
