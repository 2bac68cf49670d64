//! Subscriptions (console) and endpoints (portal), over `/v1/subscriptions` and `/v1/routes`:
//! the list, the form to create one (with a URL check before saving), one subscription with its
//! recent deliveries and its actions (send an example event, ping now, enable or disable,
//! rotate the secret with an overlap, delete), and the edit form. The signing secret is shown
//! once, on the page that answers the create or the rotation, and never again.

use super::forms::{self, SubForm};
use super::layout::{self, badge, copyable, csrf, facts, when};
use super::session::Area;
use super::{Ctx, FLASH_ERROR, FLASH_OK, FormData};
use crate::api::error::{ApiError, Json, Path, RawBody};
use crate::api::subscriptions::{SubscriptionView, ValidateRequest, WithSecret};
use crate::api::{self, deliveries::DeliveryQuery};
use crate::config::files::Scope;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use maud::{Markup, html};

/// Every subscription the caller may see.
pub(super) async fn list(ctx: Ctx) -> Response {
    let items = match api::subscriptions::list(State(ctx.state.clone()), ctx.caller.clone()).await {
        Ok(s) => s.0.items,
        Err(e) => return ctx.error(e),
    };
    let portal = ctx.area == Area::Portal;
    let can_manage = ctx.caller.access(Scope::Admin).is_ok();
    let title = if portal { "Endpoints" } else { "Subscriptions" };
    let new = can_manage.then(|| html! { a.button href=(ctx.link(&format!("{}/new", ctx.subs()))) { (if portal { "Add endpoint" } else { "New subscription" }) } });
    let body = html! {
        (layout::heading(title, Some(html! { (if portal { "The URLs that receive your webhooks." } else { "Routes managed through the API, beside the file routes." }) }), new))
        @if items.is_empty() {
            (layout::empty(if portal { "No endpoints yet" } else { "No subscriptions yet" }, html! {
                @if can_manage { a href=(ctx.link(&format!("{}/new", ctx.subs()))) { (if portal { "Add an endpoint" } else { "Create a subscription" }) } " to start receiving events." }
                @else { "Ask your operator to add one." }
            }))
        } @else {
            table {
                thead { tr { th { "Name" } th { "URL" } th { "Events" } @if !portal { th { "Tenant" } } th { "Status" } th { "Updated" } } }
                tbody { @for s in &items { tr {
                    td { a href=(ctx.link(&format!("{}/{}", ctx.subs(), s.id))) { strong { (s.spec.name) } } @if let Some(d) = &s.spec.description { br; span.muted.small { (d) } } }
                    td.small { code { (s.spec.url) } }
                    td.small { (s.spec.events.join(", ")) }
                    @if !portal { td { @match &s.tenant { Some(t) => { (t) } None => { span.muted { "—" } } } } }
                    td { (status(s)) }
                    td { (when(&s.updated_at)) }
                } } }
            }
        }
    };
    ctx.page(title, body)
}

fn status(s: &SubscriptionView) -> Markup {
    html! {
        @if !s.enabled { (badge("disabled")) }
        @else if s.live { (badge("live")) }
        @else { (badge("not live")) }
    }
}

async fn type_names(ctx: &Ctx) -> Vec<String> {
    api::event_types::list(State(ctx.state.clone()), ctx.caller.clone())
        .await
        .map(|t| t.0.items.into_iter().map(|t| t.ty).collect())
        .unwrap_or_default()
}

/// The form for a new one.
pub(super) async fn new_form(ctx: Ctx) -> Response {
    let types = type_names(&ctx).await;
    new_page(&ctx, &SubForm::default(), None, &types, StatusCode::OK)
}

fn new_page(ctx: &Ctx, f: &SubForm, e: Option<&ApiError>, types: &[String], status: StatusCode) -> Response {
    let portal = ctx.area == Area::Portal;
    let title = if portal { "Add an endpoint" } else { "New subscription" };
    let body = html! {
        (layout::heading(title, Some(html! { "It is live as soon as it is saved; its signing secret is shown once, on the next page." }), None))
        @if let Some(e) = e { (layout::error_panel(e)) }
        div.two {
            (forms::render(ctx, f, e, &ctx.link(ctx.subs()), true, types))
            @if !portal { (validate_box(ctx, &f.url, None)) }
        }
    };
    ctx.page_status(status, title, body)
}

/// The URL check beside the form.
fn validate_box(ctx: &Ctx, url: &str, result: Option<Markup>) -> Markup {
    html! {
        div {
            form.card method="post" action=(ctx.link("subscriptions/validate")) {
                (csrf(ctx))
                h2 { "Check a URL first" }
                p.muted.small { "Checks it against the security policy and sends it a signed ping; nothing is saved." }
                div.field { label for="check-url" { "URL" } input id="check-url" type="url" name="url" value=(url) required; }
                button.secondary type="submit" { "Check URL" }
            }
            @if let Some(r) = result { (r) }
        }
    }
}

/// Creates it and shows the secret, once.
pub(super) async fn create(ctx: Ctx, form: FormData) -> Response {
    let mut f = SubForm::from_form(&form);
    if ctx.area == Area::Portal && f.name.is_empty() {
        f.name = endpoint_name(ctx.caller.grant().map_or("tenant", |g| g.tenant.as_str()));
    }
    let types = type_names(&ctx).await;
    let spec = match f.to_spec(None, None) {
        Ok(s) => s,
        Err(e) => return new_page(&ctx, &f, Some(&e), &types, StatusCode::UNPROCESSABLE_ENTITY),
    };
    match api::subscriptions::create(State(ctx.state.clone()), ctx.caller.clone(), Json(spec)).await {
        Ok((_, created)) => secret_page(&ctx, &created.0, true),
        Err(e) => new_page(&ctx, &f, Some(&e), &types, e.status),
    }
}

/// A route name for a portal endpoint: the tenant's id (made a valid name) and a random suffix.
fn endpoint_name(tenant: &str) -> String {
    let clean: String =
        tenant.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}-{}", &id[..8])
}

/// The answer of a create or a rotation: the secret, this once.
fn secret_page(ctx: &Ctx, w: &WithSecret, created: bool) -> Response {
    let s = &w.subscription;
    let title = if created { "Saved: keep its secret" } else { "New secret: keep it" };
    let body = html! {
        (layout::heading(title, Some(html! { strong { (s.spec.name) } " → " code { (s.spec.url) } }), None))
        div.card {
            h2 { "Signing secret" }
            div.alert.warn { "Copy it now: it is shown only this once. Receivers verify every request with it." }
            (copyable(&w.secret))
            @if !created { p.muted { "The previous secret stays valid until " (s.secrets.previous_valid_until.as_deref().unwrap_or("now")) "; requests carry both signatures meanwhile." } }
            p { "How receivers verify a request: " a href=(ctx.link("verify")) { "verifying signatures" } "." }
        }
        div.actions {
            a.button href=(ctx.link(&format!("{}/{}", ctx.subs(), s.id))) { "Continue" }
        }
    };
    ctx.page(title, body)
}

/// One subscription: settings, status, recent deliveries, actions, edit form.
pub(super) async fn detail(ctx: Ctx, Path(id): Path<String>) -> Response {
    detail_page(&ctx, &id, None, None).await
}

async fn detail_page(ctx: &Ctx, id: &str, form: Option<&SubForm>, e: Option<&ApiError>) -> Response {
    let s = match api::subscriptions::get(State(ctx.state.clone()), ctx.caller.clone(), Path(id.to_string())).await {
        Ok(s) => s.0,
        Err(e) => return ctx.error(e),
    };
    let q = DeliveryQuery {
        route: Some(s.spec.name.clone()),
        status: None,
        event_type: None,
        since: None,
        until: None,
        cursor: None,
        limit: Some(10),
    };
    let recent = api::deliveries::list(State(ctx.state.clone()), ctx.caller.clone(), api::error::Query(q))
        .await
        .map(|p| p.0.items)
        .unwrap_or_default();
    let types = type_names(ctx).await;
    let can_manage = ctx.caller.access(Scope::Admin).is_ok();
    let base = ctx.link(&format!("{}/{}", ctx.subs(), s.id));
    let action = |name: &str, label: &str, class: &str| {
        html! {
            form.inline method="post" action={ (base) "/" (name) } {
                (csrf(ctx)) button class=(class) type="submit" { (label) }
            }
        }
    };
    let edit = form.cloned().unwrap_or_else(|| SubForm::from_view(&s));
    let status = if e.is_some() { e.map_or(StatusCode::OK, |e| e.status) } else { StatusCode::OK };
    let body = html! {
        (layout::heading(&s.spec.name, Some(html! { (status_line(&s)) }), can_manage.then(|| html! {
            (action("example", "Send test event", ""))
            (action("ping", "Ping now", "secondary"))
            @if s.enabled { (action("disable", "Disable", "secondary")) } @else { (action("enable", "Enable", "")) }
        })))
        @if let Some(p) = &s.problem { div.alert.error { "Not live: " (p) } }
        @if let Some(r) = &s.disabled_reason { div.alert.warn { (r) } }
        div.two {
            div.card { (facts(&[
                ("URL", html! { code { (s.spec.url) } }),
                ("Events", html! { (s.spec.events.join(", ")) }),
                ("Tenant", html! { @match &s.tenant { Some(t) => { (t) } None => { span.muted { "none: every event of these types" } } } }),
                ("Format", html! { (format!("{:?}", s.spec.format).to_lowercase()) }),
                ("Ordered", html! { (if s.spec.ordered { "yes" } else { "no" }) }),
                ("Id", html! { code { (s.id) } }),
                ("Version", html! { (s.version) }),
                ("Created", when(&s.created_at)),
            ])) }
            div.card {
                h2 { "Signing secret" }
                p.small { a href=(ctx.link("verify")) { "How to verify a signature" } }
                p { (s.secrets.active) " secret" (if s.secrets.active == 1 { "" } else { "s" }) " in use."
                    @if let Some(t) = &s.secrets.previous_valid_until { " The previous one is valid until " (when(t)) "." } }
                @if can_manage {
                    form method="post" action={ (base) "/rotate" } {
                        (csrf(ctx))
                        div.field { label for="overlap" { "Keep the old secret valid for" }
                            select id="overlap" name="overlap" {
                                @for (v, l) in [("24h", "24 hours (default)"), ("1h", "1 hour"), ("7d", "7 days"), ("0s", "no overlap: end it now")] { option value=(v) { (l) } }
                            }
                        }
                        button.secondary type="submit" { "Rotate secret" }
                    }
                }
            }
        }
        h2 { "Recent deliveries" }
        @if recent.is_empty() {
            (layout::empty("No deliveries yet", html! { @if can_manage { "Send a test event to see one here." } @else { "They appear as events arrive." } }))
        } @else {
            table {
                thead { tr { th { "Event" } th { "Type" } th { "Status" } th.num { "Attempts" } th { "Last attempt" } } }
                tbody { @for d in &recent { tr {
                    td { a href=(ctx.link(&format!("deliveries/{}", d.id))) { code { (d.event_id) } } }
                    td { code { (d.event_type) } } td { (badge(&d.status)) } td.num { (d.attempts) } td { (when(&d.last_at)) }
                } } }
            }
            p { a href={ (ctx.link("deliveries")) "?route=" (super::encode(&s.spec.name)) } { "All deliveries" } }
        }
        @if can_manage {
            h2 { "Edit" }
            @if let Some(e) = e { (layout::error_panel(e)) }
            (forms::render(ctx, &edit, e, &base, false, &types))
            h2 { "Delete" }
            form method="post" action={ (base) "/delete" } data-confirm="Delete this subscription? Its route stops after the deliveries in flight." {
                (csrf(ctx)) button.danger type="submit" { "Delete " (s.spec.name) }
            }
        }
    };
    ctx.page_status(status, &s.spec.name, body)
}

fn status_line(s: &SubscriptionView) -> Markup {
    html! { (status(s)) " " span.muted { "updated " (when(&s.updated_at)) } }
}

/// Saves the edit form.
pub(super) async fn update(ctx: Ctx, Path(id): Path<String>, form: FormData) -> Response {
    let f = SubForm::from_form(&form);
    let current = match api::subscriptions::get(State(ctx.state.clone()), ctx.caller.clone(), Path(id.clone())).await {
        Ok(s) => s.0,
        Err(e) => return ctx.error(e),
    };
    let spec = match f.to_spec(None, Some(&current.spec)) {
        Ok(s) => s,
        Err(e) => return detail_page(&ctx, &id, Some(&f), Some(&e)).await,
    };
    match api::subscriptions::update(
        State(ctx.state.clone()),
        ctx.caller.clone(),
        Path(id.clone()),
        HeaderMap::new(),
        Json(spec),
    )
    .await
    {
        Ok(_) => ctx.redirect(
            &ctx.link(&format!("{}/{id}", ctx.subs())),
            FLASH_OK,
            "Saved; the change applies to deliveries that start now.",
        ),
        Err(e) => detail_page(&ctx, &id, Some(&f), Some(&e)).await,
    }
}

/// One of the buttons: example, ping, enable, disable, rotate, delete.
pub(super) async fn action(ctx: Ctx, Path((id, action)): Path<(String, String)>, form: FormData) -> Response {
    let back = ctx.link(&format!("{}/{id}", ctx.subs()));
    let current = match api::subscriptions::get(State(ctx.state.clone()), ctx.caller.clone(), Path(id.clone())).await {
        Ok(s) => s.0,
        Err(e) => return ctx.error(e),
    };
    let name = current.spec.name.clone();
    let done = |r: Result<String, ApiError>| match r {
        Ok(m) => ctx.redirect(&back, FLASH_OK, &m),
        Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
    };
    match action.as_str() {
        "example" => done(example(&ctx, &name).await),
        "ping" => done(ping(&ctx, &name).await),
        "enable" | "disable" => {
            let on = action == "enable";
            let mut spec = match SubForm::from_view(&current).to_spec(Some(on), Some(&current.spec)) {
                Ok(s) => s,
                Err(e) => return ctx.error(e),
            };
            spec.tenant = None;
            let r = api::subscriptions::update(
                State(ctx.state.clone()),
                ctx.caller.clone(),
                Path(id.clone()),
                HeaderMap::new(),
                Json(spec),
            )
            .await;
            done(r.map(|_| {
                if on {
                    "Enabled: delivering again.".into()
                } else {
                    "Disabled: nothing is delivered until it is enabled.".into()
                }
            }))
        }
        "rotate" => {
            let overlap = form.get("overlap");
            let body = serde_json::to_vec(&serde_json::json!({"overlap": overlap})).unwrap_or_default();
            match api::subscriptions::rotate(
                State(ctx.state.clone()),
                ctx.caller.clone(),
                Path(id.clone()),
                RawBody(body.into()),
            )
            .await
            {
                Ok(w) => secret_page(&ctx, &w.0, false),
                Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
            }
        }
        "delete" => {
            match api::subscriptions::delete(State(ctx.state.clone()), ctx.caller.clone(), Path(id.clone())).await {
                Ok(_) => ctx.redirect(&ctx.link(ctx.subs()), FLASH_OK, &format!("Deleted {name}.")),
                Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
            }
        }
        other => ctx.error(ApiError::not_found(format!("no action {other:?}"))),
    }
}

/// Queues an example event to a route; the message says where to follow it.
async fn example(ctx: &Ctx, route: &str) -> Result<String, ApiError> {
    let (_, q) = api::routes::example(State(ctx.state.clone()), ctx.caller.clone(), Path(route.to_string())).await?;
    Ok(format!(
        "Test event {} ({}) queued: it appears under Recent deliveries as soon as it is sent.",
        q.0.event_id, q.0.event_type
    ))
}

/// Sends a ping now; the message says what the receiver answered.
async fn ping(ctx: &Ctx, route: &str) -> Result<String, ApiError> {
    let r = api::routes::test(
        State(ctx.state.clone()),
        ctx.caller.clone(),
        Path(route.to_string()),
        RawBody(Default::default()),
    )
    .await?
    .0;
    match (r.ok, r.status, &r.error) {
        (true, Some(s), _) => Ok(format!("The receiver answered HTTP {s} in {} ms.", r.latency_ms.unwrap_or_default())),
        (_, Some(s), _) => Err(ApiError::bad_request(format!(
            "The receiver answered HTTP {s}: {}",
            r.response_body.unwrap_or_default()
        ))),
        (_, None, Some(e)) => Err(ApiError::bad_request(format!("No answer: {e}"))),
        _ => Err(ApiError::bad_request("No answer.")),
    }
}

/// The URL check of the new-subscription page.
pub(super) async fn validate(ctx: Ctx, form: FormData) -> Response {
    let url = form.get("url").unwrap_or_default();
    let req = ValidateRequest { url: url.clone(), secret: None, timeout: None };
    let result = match api::subscriptions::validate(State(ctx.state.clone()), ctx.caller.clone(), Json(req)).await {
        Ok(r) => {
            let r = r.0;
            let ok = r.allowed && r.ping.as_ref().is_some_and(|p| p.ok);
            html! { div class={ "alert " (if ok { "info" } else { "error" }) } {
                @if !r.allowed { "Refused by the security policy: " (r.policy_error.unwrap_or_default()) }
                @else if let Some(p) = r.ping {
                    @match (p.status, p.error) {
                        (Some(s), _) => { "Signed ping answered HTTP " (s) " in " (p.latency_ms.unwrap_or_default()) " ms" (if p.ok { ": good to go." } else { ": the receiver must answer 2xx." }) }
                        (None, Some(e)) => { "No answer: " (e) }
                        _ => { "No answer." }
                    }
                }
            } }
        }
        Err(e) => layout::error_panel(&e),
    };
    let types = type_names(&ctx).await;
    let f = SubForm { url: url.clone(), ..Default::default() };
    let body = html! {
        (layout::heading("New subscription", None, None))
        div.two { (forms::render(&ctx, &f, None, &ctx.link("subscriptions"), true, &types)) (validate_box(&ctx, &url, Some(result))) }
    };
    ctx.page("New subscription", body)
}

/// A route (file or API) with its settings and a test send.
pub(super) async fn route(ctx: Ctx, Path(name): Path<String>) -> Response {
    let r = match api::routes::get(State(ctx.state.clone()), ctx.caller.clone(), Path(name.clone())).await {
        Ok(r) => r.0,
        Err(e) => return ctx.error(e),
    };
    if let Some(sub) = &r.subscription {
        return axum::response::Redirect::to(&ctx.link(&format!("subscriptions/{sub}"))).into_response();
    }
    let base = ctx.link(&format!("routes/{}", super::encode(&name)));
    let can = ctx.caller.has(Scope::Admin);
    let body = html! {
        (layout::heading(&r.name, Some(html! { (badge("file")) " " code { (r.file.clone().unwrap_or_default()) } }), can.then(|| html! {
            form.inline method="post" action={ (base) "/test" } { (csrf(&ctx)) input type="hidden" name="mode" value="example"; button type="submit" { "Send test event" } }
            form.inline method="post" action={ (base) "/test" } { (csrf(&ctx)) input type="hidden" name="mode" value="ping"; button.secondary type="submit" { "Ping now" } }
        })))
        div.card { (facts(&[
            ("URL", html! { code { (r.url) } }),
            ("Events", html! { (r.events.join(", ")) }),
            ("Tenant", html! { @match &r.tenant { Some(t) => { (t) } None => { span.muted { "none" } } } }),
            ("Ordered", html! { (if r.ordered { "yes" } else { "no" }) }),
            ("Format", html! { (r.format) }),
            ("Signing", html! { (r.signing) " (" (r.signing_keys) " key" (if r.signing_keys == 1 { "" } else { "s" }) ")" }),
            ("Timeout", html! { (r.timeout_ms) " ms" }),
            ("Retry", html! { (r.max_attempts) " attempts, waits " (r.backoff_ms.iter().map(|b| humantime::format_duration(std::time::Duration::from_millis(*b)).to_string()).collect::<Vec<_>>().join(", ")) }),
            ("Scripts", html! { (if r.filter { "filter " } else { "" }) (if r.transform { "transform" } else { "" }) @if !r.filter && !r.transform { span.muted { "none" } } }),
            ("Queue", html! { code { (r.queue) } }),
        ])) }
        p { a href={ (ctx.link("deliveries")) "?route=" (super::encode(&r.name)) } { "Deliveries of this route" } " · "
            a href={ (ctx.link("dead-letters")) "?route=" (super::encode(&r.name)) } { "Its dead letters" } }
    };
    ctx.page(&r.name, body)
}

/// The test buttons of a file route.
pub(super) async fn test_route(ctx: Ctx, Path(name): Path<String>, form: FormData) -> Response {
    let back = ctx.link(&format!("routes/{}", super::encode(&name)));
    let r =
        if form.get("mode").as_deref() == Some("ping") { ping(&ctx, &name).await } else { example(&ctx, &name).await };
    match r {
        Ok(m) => ctx.redirect(&back, FLASH_OK, &m),
        Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
    }
}
