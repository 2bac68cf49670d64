//! `/v1/subscriptions`: API-managed routes. Thin handlers over [`crate::subscriptions`], which
//! compiles, stores (secrets sealed) and applies them through the reload machinery. The secret
//! is in the answer of a create and of a rotation, and nowhere else.

use super::ApiState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path, RawBody};
use super::rfc3339;
use super::routes::{TestResult, ping, send_now};
use super::tenants::owns_subscription;
use crate::config::files::Scope;
use crate::config::{Origin, Route};
use crate::delivery::http::retry::RetryPolicy;
use crate::delivery::http::sign::{Signer, SigningKey};
use crate::store::SubscriptionRecord;
use crate::subscriptions::{SubscriptionDefinition, SubscriptionError, SubscriptionSpec};
use axum::extract::State;
use http::{HeaderMap, StatusCode, Uri};

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(fields) => {
                ApiError::unprocessable("invalid", e_text(&fields)).details(serde_json::json!({ "fields": fields }))
            }
            SubscriptionError::NotFound(id) => ApiError::not_found(format!("no subscription {id:?}")),
            SubscriptionError::Store(s) => s.into(),
            SubscriptionError::Secrets(m) => ApiError::unavailable("secrets_unavailable", m),
            SubscriptionError::NotApplied(errors) => {
                ApiError::conflict(format!("the subscription was stored but is not live: {}", errors.join("; ")))
                    .details(serde_json::json!({ "errors": errors }))
            }
        }
    }
}

fn e_text(fields: &[crate::subscriptions::FieldError]) -> String {
    let list: Vec<String> = fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
    format!("the subscription is invalid: {}", list.join("; "))
}

/// Where a subscription's secrets stand.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SecretsView {
    /// Secrets that sign now (2 during a rotation's overlap).
    pub active: usize,
    /// When the previous secret stops being valid, during a rotation's overlap.
    pub previous_valid_until: Option<String>,
}

/// A subscription. Never its secret.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    /// Id.
    pub id: String,
    /// The definition.
    #[serde(flatten)]
    pub spec: SubscriptionDefinition,
    /// Delivering.
    pub enabled: bool,
    /// Why it is disabled (e.g. the receiver answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// The tenant that owns it: it receives only that tenant's events.
    pub tenant: Option<String>,
    /// Whether its route is running now.
    pub live: bool,
    /// Why it is not running, when it should be.
    pub problem: Option<String>,
    /// Signing secrets.
    pub secrets: SecretsView,
    /// Pass as `If-Match` to update only this version.
    pub version: i64,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

impl SubscriptionView {
    /// As `caller` may see it: the URL's credentials masked without the admin scope.
    fn seen_by(mut self, caller: &Caller) -> Self {
        self.spec.url = super::masking::url_for(caller, std::mem::take(&mut self.spec.url));
        self
    }
}

fn view(state: &ApiState, rec: SubscriptionRecord) -> SubscriptionView {
    let snapshot = state.router.snapshot();
    let live =
        snapshot.routes.iter().any(|r| matches!(&r.origin, Origin::Api { subscription } if subscription == &rec.id));
    let now = crate::broker::now_ms() as i64;
    let valid: Vec<_> = rec.secrets.iter().filter(|s| s.expires_at_ms.is_none_or(|e| e > now)).collect();
    let spec = serde_json::from_value(rec.spec.clone())
        .unwrap_or_else(|_| SubscriptionDefinition { name: rec.name.clone(), ..Default::default() });
    SubscriptionView {
        problem: if rec.enabled && !live { state.subscriptions.problem(&rec.id) } else { None },
        id: rec.id,
        spec,
        enabled: rec.enabled,
        disabled_reason: rec.disabled_reason,
        tenant: rec.tenant,
        live,
        secrets: SecretsView {
            active: valid.len(),
            previous_valid_until: valid.iter().filter_map(|s| s.expires_at_ms).max().map(rfc3339),
        },
        version: rec.version,
        created_at: rfc3339(rec.created_at_ms),
        updated_at: rfc3339(rec.updated_at_ms),
    }
}

/// The subscription `id`, if the caller may see it (404 otherwise, also for another tenant's).
async fn visible(state: &ApiState, access: Access<'_>, id: &str) -> Result<SubscriptionRecord, ApiError> {
    state
        .store
        .subscription(id)
        .await?
        .filter(|r| owns_subscription(access, r.tenant.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no subscription {id:?}")))
}

/// A tenant's subscriptions are its own: `tenant` is set to it, and another is refused.
fn own_tenant(access: Access<'_>, spec: &mut SubscriptionSpec) -> Result<(), ApiError> {
    let Access::Tenant(t) = access else { return Ok(()) };
    match spec.tenant.as_deref() {
        None => spec.tenant = Some(t.to_string()),
        Some(given) if given == t => {}
        Some(given) => {
            return Err(SubscriptionError::Invalid(vec![crate::subscriptions::FieldError {
                field: "tenant".into(),
                message: format!("a token of tenant {t:?} manages its own subscriptions only, not {given:?}'s"),
            }])
            .into());
        }
    }
    Ok(())
}

/// A subscription with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// The signing secret (`whsec_…`). Store it now: it is not shown again.
    pub secret: String,
}

/// Every subscription.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Subscriptions {
    /// By name.
    pub items: Vec<SubscriptionView>,
}

/// Create a subscription. It is live when the answer comes (events published from then on reach
/// it, on this replica; other replicas sharing the store apply it as soon as they hear of it); its
/// secret is in this answer only.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = SubscriptionSpec,
    responses(
        (status = 201, description = "Created and live: events published from now on reach it", body = WithSecret),
        (status = 400, description = "Not JSON, or unknown keys", body = ErrorBody),
        KeyRefusals,
        (status = 409, description = "The name is taken, or the router refused to apply it", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid (details: every field error)", body = ErrorBody),
        (status = 503, description = "No HOOKRELAY_SECRET_KEY to seal its secret (`secrets_unavailable`), or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(mut spec): Json<SubscriptionSpec>,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let access = caller.access(Scope::Admin)?;
    own_tenant(access, &mut spec)?;
    let (rec, secret) = state.subscriptions.create(spec, &caller.name).await?;
    Ok((StatusCode::CREATED, Json(WithSecret { subscription: view(&state, rec), secret })))
}

/// List subscriptions.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    responses(
        (status = 200, body = Subscriptions),
        KeyRefusals,
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Json<Subscriptions>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let all = state.store.subscriptions().await?;
    let items = all
        .into_iter()
        .filter(|r| owns_subscription(access, r.tenant.as_deref()))
        .map(|r| view(&state, r).seen_by(&caller))
        .collect();
    Ok(Json(Subscriptions { items }))
}

/// One subscription.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, description = "The id is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let access = caller.access(Scope::Read)?;
    Ok(Json(view(&state, visible(&state, access, &id).await?).seen_by(&caller)))
}

/// Replace a subscription's definition: the body is the whole definition, and a key it leaves
/// out takes its default (a `filter` left out is removed; to change some keys only, use
/// `PATCH`). Name and `ordered` cannot change; `enabled` switches it on or off, and left out
/// keeps it as it is, as `tenant` does. With `If-Match: <version>`, only that version is
/// replaced (409 otherwise).
#[utoipa::path(put, path = "/v1/subscriptions/{id}", tag = "subscriptions", request_body = SubscriptionSpec,
    params(("id" = String, Path, description = "Subscription id"),
        ("If-Match" = Option<String>, Header, description = "The version read; refuse if it changed")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, description = "Not JSON, unknown keys, or an If-Match that is not a version", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Changed meanwhile (If-Match), or the router refused to apply it", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid, or a name or `ordered` change (details: every field error)", body = ErrorBody),
        (status = 503, description = "Its secrets cannot be opened (`secrets_unavailable`), or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(mut spec): Json<SubscriptionSpec>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let access = caller.access(Scope::Admin)?;
    visible(&state, access, &id).await?;
    if spec.tenant.is_some() {
        own_tenant(access, &mut spec)?;
    }
    let expected = if_match(&headers)?;
    let rec = state.subscriptions.update(&id, spec, expected, &caller.name).await?;
    Ok(Json(view(&state, rec)))
}

/// `If-Match: <version>`, when given.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get(http::header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|t| t.trim().trim_matches('"'))
            .and_then(|t| t.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("If-Match must be the subscription's version, e.g. \"3\"")),
    }
}

/// Change some keys of a subscription's definition: the body is a JSON Merge Patch (RFC 7396,
/// `Content-Type: application/merge-patch+json`) of the definition `GET` shows. A key in it
/// replaces the key's value, `null` removes the key (it takes its default), and a key left out
/// is kept; objects (`headers`, `circuit_breaker`, `rate_limit`) merge key by key, arrays are
/// replaced whole. The result is checked as a `PUT` of it would be. The change applies to the
/// version read (409 if it changed meanwhile), or to the one `If-Match` names.
#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    request_body(content = Object, description = "A JSON Merge Patch of the definition, e.g. {\"url\": \"https://new.example.com/hook\", \"filter\": null}",
        content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "Subscription id"),
        ("If-Match" = Option<String>, Header, description = "The version read; refuse if it changed")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, description = "Not JSON, a result with unknown keys or of the wrong types, or an If-Match that is not a version", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Changed meanwhile, or the router refused to apply it", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/merge-patch+json`", body = ErrorBody),
        (status = 422, description = "Invalid, or a name or `ordered` change (details: every field error)", body = ErrorBody),
        (status = 503, description = "Its secrets cannot be opened (`secrets_unavailable`), or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<SubscriptionView>, ApiError> {
    let access = caller.access(Scope::Admin)?;
    let current = visible(&state, access, &id).await?;
    let patch: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}; send a JSON Merge Patch")))?;
    let mut definition = current.spec.clone();
    merge_patch(&mut definition, patch);
    let mut spec: SubscriptionSpec = serde_json::from_value(definition).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the patched definition is not valid: {e}"))
    })?;
    if spec.tenant.is_some() {
        own_tenant(access, &mut spec)?;
    }
    // Applied to the version read, so that a change made meanwhile is not overwritten.
    let expected = if_match(&headers)?.unwrap_or(current.version);
    let rec = state.subscriptions.update(&id, spec, Some(expected), &caller.name).await?;
    Ok(Json(view(&state, rec)))
}

/// RFC 7396, section 2: applies `patch` to `target`.
fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(serde_json::Value::Null), value);
        }
    }
}

/// Delete a subscription; its route stops after its in-flight deliveries.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Deleted, but the router refused to apply the change", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let access = caller.access(Scope::Admin)?;
    visible(&state, access, &id).await?;
    state.subscriptions.delete(&id, &caller.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How long the old secret stays valid.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// E.g. `"24h"` (default: `[api] secret_overlap`); `"0s"` ends the old secret now.
    pub overlap: Option<String>,
}

/// Replace a subscription's secret. The old one stays valid for the overlap, during which every
/// request carries both signatures.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions",
    request_body(content = Option<RotateRequest>, content_type = "application/json"),
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Rotated; the answer holds the new secret, this once", body = WithSecret),
        (status = 400, description = "The body is not JSON, or has unknown keys", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "Changed meanwhile, or the router refused to apply it", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 422, description = "A bad overlap", body = ErrorBody),
        (status = 503, description = "No HOOKRELAY_SECRET_KEY (`secrets_unavailable`), or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<WithSecret>, ApiError> {
    let access = caller.access(Scope::Admin)?;
    visible(&state, access, &id).await?;
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
    };
    let overlap = match req.overlap.as_deref() {
        None => state.router.snapshot().api.secret_overlap.0,
        Some("0" | "0s") => std::time::Duration::ZERO,
        Some(t) => humantime::parse_duration(t).ok().filter(|d| d.as_secs() <= 30 * 24 * 3600).ok_or_else(|| {
            ApiError::unprocessable("invalid", format!("overlap {t:?}: a duration up to 30d, e.g. \"24h\""))
        })?,
    };
    let (rec, secret) = state.subscriptions.rotate(&id, overlap, &caller.name).await?;
    Ok(Json(WithSecret { subscription: view(&state, rec), secret }))
}

/// A receiver to check before subscribing it.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The receiver's URL.
    pub url: String,
    /// The secret to sign the ping with (`whsec_…`); a throwaway one when absent.
    pub secret: Option<String>,
    /// Per-attempt timeout, default `"5s"`.
    pub timeout: Option<String>,
}

/// What the check found.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ValidateResult {
    /// The URL passes the security policy (scheme, and no private or metadata address).
    pub allowed: bool,
    /// Why the policy refuses it.
    pub policy_error: Option<String>,
    /// The signed ping and its answer (absent when the policy refused the URL).
    pub ping: Option<TestResult>,
}

/// Check a receiver URL against the security policy, then send it a signed test ping and report
/// the status and latency. Nothing is stored.
#[utoipa::path(post, path = "/v1/subscriptions/validate", tag = "subscriptions", request_body = ValidateRequest,
    responses(
        (status = 200, description = "The check ran (see `allowed` and `ping.ok`)", body = ValidateResult),
        (status = 400, description = "Not JSON, or unknown keys", body = ErrorBody),
        KeyRefusals,
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Not a URL, or a bad secret or timeout", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn validate(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<ValidateRequest>,
) -> Result<Json<ValidateResult>, ApiError> {
    caller.access(Scope::Admin)?;
    let url: Uri = req
        .url
        .parse()
        .ok()
        .filter(|u: &Uri| u.host().is_some())
        .ok_or_else(|| ApiError::unprocessable("invalid", format!("{:?} is not an absolute URL", req.url)))?;
    let snapshot = state.router.snapshot();
    if let Err(e) = snapshot.security.check_url(&url) {
        return Ok(Json(ValidateResult { allowed: false, policy_error: Some(e.to_string()), ping: None }));
    }
    let secret = req.secret.unwrap_or_else(SigningKey::generate);
    let key =
        SigningKey::from_whsec(&secret).map_err(|m| ApiError::unprocessable("invalid", format!("secret: {m}")))?;
    let timeout = match req.timeout.as_deref() {
        None => std::time::Duration::from_secs(5),
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero() && d.as_secs() <= 60)
            .ok_or_else(|| ApiError::unprocessable("invalid", format!("timeout {t:?}: a duration up to 60s")))?,
    };
    let route = Route {
        name: "validate".into(),
        events: Vec::new(),
        url,
        ordered: false,
        timeout,
        concurrency: 1,
        order_key: None,
        steps: Default::default(),
        headers: HeaderMap::new(),
        log_payload: false,
        signer: Signer::Standard(vec![key]),
        retry: RetryPolicy { max_attempts: 1, backoff: vec![std::time::Duration::from_secs(1)] },
        circuit_breaker: None,
        rate_limit: None,
        batch: None,
        digest: String::new(),
        origin: Origin::Api { subscription: String::new() },
    };
    let result = send_now(&state, &route, ping("hookrelay subscription check")).await;
    // A refusal by the guard at connect time (a name that resolves to a private address) is a
    // policy refusal too.
    let blocked = result.error.as_deref().is_some_and(|e| e.contains("blocked"));
    Ok(Json(ValidateResult {
        allowed: !blocked,
        policy_error: if blocked { result.error.clone() } else { None },
        ping: Some(result),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// RFC 7396, appendix A.
    #[test]
    fn merge_patch_follows_the_rfc_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (mut target, patch, want) in cases {
            let shown = format!("{target} + {patch}");
            super::merge_patch(&mut target, patch);
            assert_eq!(target, want, "{shown}");
        }
    }
}
