//! The delivery log and the dead letters (console and portal), over the API's handlers: lists
//! with filters and paging, one delivery's attempts (the request headers it was sent with, the
//! capped response), retry; dead letters counted, shown with their event, and replayed, the
//! ticked ones at once or all that match a filter after a dry run.

use super::layout::{self, badge, csrf, facts, json_block, when};
use super::{Ctx, FLASH_ERROR, FLASH_OK, FormData, encode};
use crate::api;
use crate::api::dead_letters::{DeadLetterQuery, ReplayFilter, ReplayRequest, ReplayResult};
use crate::api::deliveries::{AttemptView, DeliveryQuery};
use crate::api::error::{Json, Path, Query};
use crate::config::files::Scope;
use crate::store::DeadLetterFilter;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

/// `since` choices of the filters: (value, label, window).
const SINCE: &[(&str, &str, u64)] =
    &[("", "Any time", 0), ("1h", "Last hour", 3600), ("24h", "Last day", 86_400), ("7d", "Last 7 days", 604_800)];

fn since_ms(choice: Option<&str>) -> Option<String> {
    let secs = SINCE.iter().find(|(v, _, _)| Some(*v) == choice && !v.is_empty())?.2;
    Some((crate::broker::now_ms() as i64 - secs as i64 * 1000).to_string())
}

fn since_select(current: Option<&str>) -> Markup {
    html! {
        div { label for="since" { "When" }
            select id="since" name="since" data-autosubmit {
                @for (v, l, _) in SINCE { option value=(v) selected[current.unwrap_or("") == *v] { (l) } }
            }
        }
    }
}

/// Filters of the delivery log page.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DeliveriesPage {
    route: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    since: Option<String>,
    cursor: Option<String>,
}

/// The delivery log.
pub(super) async fn list(ctx: Ctx, Query(q): Query<DeliveriesPage>) -> Response {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let query = DeliveryQuery {
        route: nonempty(&q.route),
        status: nonempty(&q.status),
        event_type: nonempty(&q.ty),
        since: since_ms(q.since.as_deref()),
        until: None,
        cursor: nonempty(&q.cursor),
        limit: Some(50),
    };
    let page = match api::deliveries::list(State(ctx.state.clone()), ctx.caller.clone(), Query(query)).await {
        Ok(p) => p.0,
        Err(e) => return ctx.error(e),
    };
    let routes = route_names(&ctx).await;
    let filtered = [&q.route, &q.status, &q.ty, &q.since].iter().any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
    let body = html! {
        (layout::heading("Deliveries", Some(html! { "Every event sent to a receiver, newest first, with each attempt." }), None))
        form.filters method="get" action=(ctx.link("deliveries")) {
            div { label for="route" { "Route" }
                select id="route" name="route" data-autosubmit {
                    option value="" { "All routes" }
                    @for r in &routes { option value=(r) selected[q.route.as_deref() == Some(r)] { (r) } }
                }
            }
            div { label for="status" { "Status" }
                select id="status" name="status" data-autosubmit {
                    @for (v, l) in [("", "Any"), ("delivered", "Delivered"), ("retrying", "Retrying"), ("dead", "Dead")] {
                        option value=(v) selected[q.status.as_deref().unwrap_or("") == v] { (l) }
                    }
                }
            }
            div { label for="type" { "Event type" } input id="type" type="text" name="type" value=[q.ty.as_deref()] placeholder="order.paid"; }
            (since_select(q.since.as_deref()))
            button.secondary type="submit" { "Filter" }
            @if filtered { a href=(ctx.link("deliveries")) { "Clear" } }
        }
        @if page.items.is_empty() {
            @if filtered {
                (layout::empty("No delivery matches these filters", html! { "Widen the time range or " a href=(ctx.link("deliveries")) { "clear the filters" } "." }))
            } @else {
                (layout::empty("No deliveries yet", html! { "Deliveries appear here as events reach your routes. Send a test event from a "
                    a href=(ctx.link(ctx.subs())) { (if ctx.caller.grant().is_some() { "endpoint" } else { "subscription" }) } " to see one." }))
            }
        } @else {
            table {
                thead { tr { th { "Event" } th { "Type" } th { "Route" } th { "Status" } th.num { "Attempts" } th { "Last answer" } th { "Last attempt" } } }
                tbody { @for d in &page.items { tr {
                    td { a href=(ctx.link(&format!("deliveries/{}", d.id))) { code { (d.event_id) } } }
                    td { code { (d.event_type) } }
                    td { (d.route) }
                    td { (badge(&d.status)) }
                    td.num { (d.attempts) }
                    td { @match (d.last_status, &d.last_error) {
                        (Some(s), _) => { "HTTP " (s) }
                        (None, Some(e)) => { span.muted.small { (truncate(e, 60)) } }
                        _ => { span.muted { "—" } }
                    } }
                    td { (when(&d.last_at)) }
                } } }
            }
            (layout::pager(&ctx.link("deliveries"), &[("route", q.route.clone()), ("status", q.status.clone()), ("type", q.ty.clone()), ("since", q.since.clone())], page.next.as_deref()))
        }
    };
    ctx.page("Deliveries", body)
}

async fn route_names(ctx: &Ctx) -> Vec<String> {
    api::routes::list(State(ctx.state.clone()), ctx.caller.clone())
        .await
        .map(|r| r.0.items.into_iter().map(|r| r.name).collect())
        .unwrap_or_default()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

/// One delivery and its attempts.
pub(super) async fn detail(ctx: Ctx, Path(id): Path<String>) -> Response {
    let d = match api::deliveries::get(State(ctx.state.clone()), ctx.caller.clone(), Path(id.clone())).await {
        Ok(d) => d.0,
        Err(e) => return ctx.error(e),
    };
    let can_retry = ctx.caller.access(Scope::Admin).is_ok() && d.delivery.status != "retrying";
    let body = html! {
        (layout::heading(&format!("Delivery of {}", d.delivery.event_id), Some(html! { (badge(&d.delivery.status)) " to route " strong { (d.delivery.route) } }),
            can_retry.then(|| html! {
                form.inline method="post" action=(ctx.link(&format!("deliveries/{id}/retry"))) {
                    (csrf(&ctx)) button type="submit" { "Deliver again" }
                }
            })))
        div.card { (facts(&[
            ("Event id (webhook-id)", html! { code { (d.delivery.event_id) } }),
            ("Event type", html! { code { (d.delivery.event_type) } }),
            ("Route", html! { (d.delivery.route) }),
            ("Attempts", html! { (d.delivery.attempts) }),
            ("First attempt", when(&d.delivery.first_at)),
            ("Last attempt", when(&d.delivery.last_at)),
        ])) }
        h2 { "Attempts" }
        @for a in d.attempt_log.iter().rev() {
            details open[a.attempt == d.delivery.attempts] {
                summary { "Attempt " (a.attempt) " · " (badge(&a.outcome)) " · "
                    @match a.status { Some(s) => { "HTTP " (s) }, None => { "no response" } }
                    " · " (a.duration_ms) " ms · " (when(&a.at)) }
                div.two {
                    div {
                        h3.muted.small { "REQUEST HEADERS" }
                        (request_headers(a))
                        @if let Some(p) = &a.payload { h3.muted.small { "BODY SENT" } (json_block(p)) }
                        @if a.payload_base64.is_some() { p.muted.small { "The body sent was not JSON (kept in base64 in the API)." } }
                    }
                    div {
                        h3.muted.small { "RESPONSE (CAPPED)" }
                        @if let Some(e) = &a.error { div.alert.error { (e) } }
                        @match &a.response_body { Some(b) if !b.is_empty() => { pre.code { (b) } } _ => { p.muted { "No response body." } } }
                        p.muted.small { "Config version " (a.config_version) ", revision " code { (a.config_revision) } }
                    }
                }
            }
        }
        @if d.attempt_log.is_empty() { (layout::empty("No attempts kept", html! { "Attempts older than the store's retention are pruned." })) }
    };
    ctx.page("Delivery", body)
}

/// The headers an attempt was sent with, as the delivery log recorded them (credentials
/// masked).
fn request_headers(a: &AttemptView) -> Markup {
    let Some(headers) = &a.request_headers else {
        return html! { p.muted { "Not kept: the route does not log payloads (" code { "log_payload" } "), so its attempts keep neither body nor headers." } };
    };
    html! {
        pre.code { @for h in headers { (h.name) ": " (h.value) "\n" } }
    }
}

/// Deliver a delivery's event again.
pub(super) async fn retry(ctx: Ctx, Path(id): Path<String>, _form: FormData) -> Response {
    let back = ctx.link(&format!("deliveries/{id}"));
    match api::deliveries::retry(State(ctx.state.clone()), ctx.caller.clone(), Path(id)).await {
        Ok((_, r)) => {
            ctx.redirect(&back, FLASH_OK, &format!("Event {} queued again for route {}.", r.0.event_id, r.0.route))
        }
        Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
    }
}

/// Filters of the dead letters page.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DeadLettersPage {
    route: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    include_replayed: Option<String>,
    cursor: Option<String>,
}

/// Dead letters: filters, the count, replay.
pub(super) async fn dead_letters(ctx: Ctx, Query(q): Query<DeadLettersPage>) -> Response {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let include_replayed = q.include_replayed.is_some();
    let query = DeadLetterQuery {
        route: nonempty(&q.route),
        reason: nonempty(&q.reason),
        since: since_ms(q.since.as_deref()),
        until: None,
        include_replayed: Some(include_replayed),
        cursor: nonempty(&q.cursor),
        limit: Some(50),
    };
    let page = match api::dead_letters::list(State(ctx.state.clone()), ctx.caller.clone(), Query(query)).await {
        Ok(p) => p.0,
        Err(e) => return ctx.error(e),
    };
    let count = match count(&ctx, &q, include_replayed).await {
        Ok(n) => n,
        Err(e) => return ctx.error(e),
    };
    let routes = route_names(&ctx).await;
    let can_replay = ctx.caller.access(Scope::Admin).is_ok();
    let body = html! {
        (layout::heading("Dead letters", Some(html! { "Events a route gave up on, with the reason. Replaying one sends it to that route again." }), None))
        form.filters method="get" action=(ctx.link("dead-letters")) {
            div { label for="route" { "Route" }
                select id="route" name="route" data-autosubmit {
                    option value="" { "All routes" }
                    @for r in &routes { option value=(r) selected[q.route.as_deref() == Some(r)] { (r) } }
                }
            }
            div { label for="reason" { "Reason" }
                select id="reason" name="reason" data-autosubmit {
                    option value="" { "Any" }
                    @for r in ["exhausted", "rejected", "gone", "schema", "script_error", "unknown_type", "malformed", "too_large", "blocked", "delivery_limit"] {
                        option value=(r) selected[q.reason.as_deref() == Some(r)] { (r) }
                    }
                }
            }
            (since_select(q.since.as_deref()))
            label.check { input type="checkbox" name="include_replayed" value="1" checked[include_replayed] data-autosubmit; "Include replayed" }
            button.secondary type="submit" { "Filter" }
        }
        div.spread {
            p { strong { (count) } " dead letter" (if count == 1 { "" } else { "s" }) " match" (if count == 1 { "es" } else { "" }) "." }
            @if can_replay && count > 0 && !include_replayed {
                form.inline method="post" action=(ctx.link("dead-letters")) {
                    (csrf(&ctx))
                    input type="hidden" name="action" value="dry-run";
                    @for (k, v) in [("route", &q.route), ("reason", &q.reason), ("since", &q.since)] {
                        @if let Some(v) = v { input type="hidden" name=(k) value=(v); }
                    }
                    button.secondary type="submit" { "Replay all matching…" }
                }
            }
        }
        @if page.items.is_empty() {
            (layout::empty("No dead letters", html! { "Nothing was given up on" (if q.route.is_some() || q.reason.is_some() || q.since.is_some() { " with these filters" } else { "" }) ". Events that fail for good land here, ready to replay." }))
        } @else {
            form id="replay" method="post" action=(ctx.link("dead-letters")) {
                (csrf(&ctx))
                input type="hidden" name="action" value="replay";
                table {
                    thead { tr { @if can_replay { th {} } th { "Event" } th { "Route" } th { "Reason" } th { "Error" } th.num { "Attempts" } th { "Dead since" } } }
                    tbody { @for d in &page.items { tr {
                        @if can_replay { td { @if d.replayed_at.is_none() { input type="checkbox" name="ids" value=(d.id) aria-label={ "select " (d.id) }; } } }
                        td { a href=(ctx.link(&format!("dead-letters/{}", d.id))) { code { (if d.event_id.is_empty() { "(not a CloudEvent)" } else { &d.event_id }) } } br; span.muted.small { (d.event_type) } }
                        td.nowrap { (d.route) }
                        td { (badge(&d.reason)) @if d.replayed_at.is_some() { " " (badge("replayed")) } }
                        td.small { (truncate(&d.error, 90)) }
                        td.num { (d.attempts) }
                        td { (when(&d.dead_at)) }
                    } } }
                }
                @if can_replay { div.pager { button type="submit" { "Replay selected" } } }
            }
            (layout::pager(&ctx.link("dead-letters"), &[("route", q.route.clone()), ("reason", q.reason.clone()), ("since", q.since.clone()), ("include_replayed", q.include_replayed.clone())], page.next.as_deref()))
        }
    };
    ctx.page("Dead letters", body)
}

async fn count(ctx: &Ctx, q: &DeadLettersPage, include_replayed: bool) -> Result<u64, api::error::ApiError> {
    let access = ctx.caller.access(Scope::Read)?;
    let filter = DeadLetterFilter {
        route: q.route.clone().filter(|s| !s.is_empty()),
        routes: api::tenants::visible_routes(&ctx.state, access).await?,
        reason: q.reason.clone().filter(|s| !s.is_empty()),
        since_ms: since_ms(q.since.as_deref()).and_then(|s| s.parse().ok()),
        include_replayed,
        ..Default::default()
    };
    Ok(ctx.state.store.count_dead_letters(&filter).await?)
}

/// Replay: `action=replay` with `ids` (ticked, or confirmed after a dry run), or `action=dry-run`
/// with the filters.
pub(super) async fn replay(ctx: Ctx, form: FormData) -> Response {
    let back = ctx.link("dead-letters");
    let dry = form.get("action").as_deref() == Some("dry-run");
    let req = if dry {
        ReplayRequest {
            ids: None,
            filter: Some(ReplayFilter {
                route: form.get("route"),
                reason: form.get("reason"),
                since: since_ms(form.get("since").as_deref()),
                until: None,
            }),
            max: Some(1000),
            dry_run: Some(true),
        }
    } else {
        let ids = form.all("ids");
        if ids.is_empty() {
            return ctx.redirect(&back, FLASH_ERROR, "Tick the dead letters to replay first.");
        }
        ReplayRequest { ids: Some(ids), filter: None, max: None, dry_run: None }
    };
    let result = match api::dead_letters::replay(State(ctx.state.clone()), ctx.caller.clone(), Json(req)).await {
        Ok(r) => r.0,
        Err(e) => return ctx.redirect(&back, FLASH_ERROR, &e.message),
    };
    if dry {
        return ctx.page("Replay: dry run", dry_run_page(&ctx, &result));
    }
    let mut msg = format!("Replayed {}.", result.replayed.len());
    for (n, what) in [
        (result.already_replayed.len(), "already replayed"),
        (result.in_progress.len(), "being replayed by another request"),
        (result.not_found.len(), "not found"),
        (result.failed.len(), "failed (still available)"),
    ] {
        if n > 0 {
            msg.push_str(&format!(" {n} {what}."));
        }
    }
    let kind = if result.failed.is_empty() && !result.replayed.is_empty() { FLASH_OK } else { FLASH_ERROR };
    ctx.redirect(&back, kind, &msg)
}

fn dry_run_page(ctx: &Ctx, r: &ReplayResult) -> Markup {
    html! {
        (layout::heading("Replay: dry run", Some(html! { "Nothing was sent yet. This is what a replay would do now." }), None))
        div.card {
            p { strong { (r.would_replay.len()) } " dead letter" (if r.would_replay.len() == 1 { "" } else { "s" }) " would be sent again to the routes that gave up on them." }
            @if !r.already_replayed.is_empty() { p.muted { (r.already_replayed.len()) " were replayed before and are left out." } }
            @if r.would_replay.is_empty() {
                p { a href=(ctx.link("dead-letters")) { "Back to the dead letters" } }
            } @else {
                ul.small { @for id in r.would_replay.iter().take(20) { li { a href=(ctx.link(&format!("dead-letters/{id}"))) { code { (id) } } } } }
                @if r.would_replay.len() > 20 { p.muted.small { "… and " (r.would_replay.len() - 20) " more." } }
                form method="post" action=(ctx.link("dead-letters")) {
                    (csrf(ctx))
                    input type="hidden" name="action" value="replay";
                    @for id in &r.would_replay { input type="hidden" name="ids" value=(id); }
                    div.actions {
                        button type="submit" { "Replay " (r.would_replay.len()) " dead letter" (if r.would_replay.len() == 1 { "" } else { "s" }) }
                        a.button.secondary href=(ctx.link("dead-letters")) { "Cancel" }
                    }
                }
            }
        }
    }
}

/// One dead letter with its event.
pub(super) async fn dead_letter(ctx: Ctx, Path(id): Path<String>) -> Response {
    let d = match api::dead_letters::get(State(ctx.state.clone()), ctx.caller.clone(), Path(id.clone())).await {
        Ok(d) => d.0,
        Err(e) => return ctx.error(e),
    };
    let v = &d.dead_letter;
    let can_replay = ctx.caller.access(Scope::Admin).is_ok() && v.replayed_at.is_none();
    let body = html! {
        (layout::heading("Dead letter", Some(html! { (badge(&v.reason)) " on route " strong { (v.route) } }),
            can_replay.then(|| html! {
                form.inline method="post" action=(ctx.link("dead-letters")) {
                    (csrf(&ctx)) input type="hidden" name="action" value="replay"; input type="hidden" name="ids" value=(v.id);
                    button type="submit" { "Replay" }
                }
            })))
        div.alert.error { (v.error) }
        div.card { (facts(&[
            ("Id", html! { code { (v.id) } }),
            ("Event", html! { code { (v.event_id) } " " span.muted { (v.event_type) } }),
            ("Attempts", html! { (v.attempts) }),
            ("Last answer", html! { @match v.last_status { Some(s) => { "HTTP " (s) } None => { span.muted { "none" } } } }),
            ("Dead since", when(&v.dead_at)),
            ("Replayed", html! { @match &v.replayed_at { Some(t) => { (when(t)) } None => { span.muted { "not yet" } } } }),
        ])) }
        @if let Some(r) = &v.last_response { h2 { "Last response (capped)" } pre.code { (r) } }
        @if let Some(details) = &v.details { h2 { "Details" } (json_block(details)) }
        h2 { "The event" }
        @match (&d.event, &d.event_base64) {
            (Some(e), _) => { (json_block(e)) }
            (None, Some(b)) => { p.muted { "Not JSON; base64:" } pre.code { (b) } }
            _ => { p.muted { "Not kept." } }
        }
        p { a href={ (ctx.link("deliveries")) "?route=" (encode(&v.route)) } { "Deliveries of this route" } }
    };
    ctx.page("Dead letter", body)
}
