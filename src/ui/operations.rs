//! The console's operator pages: sign-in with an API key, the tenants and their one-time portal
//! links (`POST /v1/tenants/{id}/portal-link`), the config in force with its reloads
//! (`GET /v1/config`, `POST /v1/config/reload`) and the audit trail (`GET /v1/audit`).

use super::layout::{self, badge, csrf, csrf_field, facts, when};
use super::session::{self, Area};
use super::{Ctx, FLASH_ERROR, FLASH_OK, FormData, Public};
use crate::api::error::{Path, Query, RawBody};
use crate::api::stats::AuditQuery;
use crate::api::{self, ApiState};
use crate::config::files::Scope;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::html;
use std::collections::BTreeMap;

/// `?next=` after sign-in.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// Only a path inside the console (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains("\\")).unwrap_or("/ui/").to_string()
}

/// The sign-in form.
pub(super) async fn login_page(public: Public, State(state): State<ApiState>, Query(q): Query<Next>) -> Response {
    if state.router.snapshot().api.keys.is_empty() {
        return Redirect::to("/ui/").into_response();
    }
    login_form(&public, q.next.as_deref(), None, StatusCode::OK)
}

fn login_form(public: &Public, next: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in to the hookrelay console" }
        p.muted { "Paste an API key (" code { "hookrelay api-key" } " makes one). A " code { "read" } " key sees everything; an " code { "admin" } " key can also change things." }
        @if let Some(e) = error { div.alert.error role="alert" { (e) } }
        form method="post" action="/ui/login" {
            (csrf_field(&public.csrf))
            input type="hidden" name="next" value=(safe_next(next));
            div.field { label for="key" { "API key" } input id="key" type="password" name="key" autocomplete="off" required autofocus; }
            button type="submit" { "Sign in" }
        }
    };
    (status, layout::bare(Area::Console, "Sign in · hookrelay", body)).into_response()
}

/// Checks the key and opens a session.
pub(super) async fn login(public: Public, State(state): State<ApiState>, form: FormData) -> Response {
    let snapshot = state.router.snapshot();
    let next = form.get("next");
    let (name, hash) = match session::login(&snapshot, &form.get("key").unwrap_or_default(), public.from) {
        Ok(key) => key,
        Err(why) => return login_form(&public, next.as_deref(), Some(&why), StatusCode::UNAUTHORIZED),
    };
    let value = session::console_session(&state.session_key, &name, &hash);
    let cookie = session::set_cookie(
        Area::Console.cookie(),
        &value,
        "/ui",
        Some(session::CONSOLE_SESSION.as_secs()),
        public.https,
    );
    let mut resp = Redirect::to(&safe_next(next.as_deref())).into_response();
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a JWT is cookie-safe"));
    resp
}

/// Tenants (from routes and subscriptions) and portal links.
pub(super) async fn tenants(ctx: Ctx) -> Response {
    tenants_page(&ctx, None).await
}

async fn tenants_page(ctx: &Ctx, link: Option<(String, String, String)>) -> Response {
    if let Err(e) = ctx.caller.require(Scope::Read) {
        return ctx.error(e);
    }
    let mut tenants: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in ctx.state.router.snapshot().routes.iter() {
        if let Some(t) = r.tenant() {
            tenants.entry(t.to_string()).or_default().0 += 1;
        }
    }
    match ctx.state.store.subscriptions().await {
        Ok(subs) => {
            for s in subs {
                if let Some(t) = s.tenant {
                    tenants.entry(t).or_default().1 += 1;
                }
            }
        }
        Err(e) => return ctx.error(e.into()),
    }
    let can = ctx.caller.has(Scope::Admin);
    let keyed = ctx.state.token_key.is_some();
    let body = html! {
        (layout::heading("Tenants", Some(html! { "Franchises or projects that own routes. Each sees only its own in the portal." }), None))
        @if let Some((tenant, url, expires)) = &link {
            div.card {
                h2 { "Portal link for " (tenant) }
                div.alert.warn { "It works once, until " (when(expires)) ". Hand it to the tenant over a private channel." }
                (layout::copyable(url))
            }
        }
        @if !keyed {
            div.alert.warn { "Portal links need " code { "HOOKRELAY_TOKEN_KEY" } " or " code { "HOOKRELAY_SECRET_KEY" } " where hookrelay runs." }
        }
        @if can && keyed {
            form.filters method="post" action=(ctx.link("tenants")) {
                (csrf(ctx))
                div { label for="tenant" { "Tenant" } input id="tenant" type="text" name="tenant" required placeholder="franchise-42"; }
                div { label for="scope" { "Access" } select id="scope" name="scope" { option value="manage" { "manage" } option value="read" { "read only" } } }
                div { label for="ttl" { "Link valid for" } select id="ttl" name="ttl" { option value="15m" { "15 minutes" } option value="1h" { "1 hour" } option value="24h" { "24 hours" } } }
                button type="submit" { "Create portal link" }
            }
        }
        @if tenants.is_empty() {
            (layout::empty("No tenants yet", html! { "Give a subscription a tenant, or a route file " code { "tenant = \"...\"" } "." }))
        } @else {
            table {
                thead { tr { th { "Tenant" } th.num { "Running routes" } th.num { "Subscriptions" } th {} } }
                tbody { @for (t, (routes, subs)) in &tenants { tr {
                    td { strong { (t) } } td.num { (routes) } td.num { (subs) }
                    td { @if can && keyed {
                        form.inline method="post" action=(ctx.link("tenants")) {
                            (csrf(ctx)) input type="hidden" name="tenant" value=(t);
                            button.secondary.small type="submit" { "Portal link" }
                        }
                    } }
                } } }
            }
        }
    };
    ctx.page("Tenants", body)
}

/// Makes a portal link and shows it once.
pub(super) async fn portal_link(ctx: Ctx, headers: HeaderMap, form: FormData) -> Response {
    let tenant = form.get("tenant").unwrap_or_default();
    let body = serde_json::json!({"scope": form.get("scope"), "ttl": form.get("ttl")});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    match api::tenants::portal_link(
        State(ctx.state.clone()),
        ctx.caller.clone(),
        Path(tenant),
        headers,
        RawBody(body.into()),
    )
    .await
    {
        Ok((_, v)) => tenants_page(&ctx, Some((v.0.tenant, v.0.url, v.0.expires_at))).await,
        Err(e) => ctx.redirect(&ctx.link("tenants"), FLASH_ERROR, &e.message),
    }
}

/// The config in force.
pub(super) async fn config(ctx: Ctx) -> Response {
    let c = match api::config::get(State(ctx.state.clone()), ctx.caller.clone()).await {
        Ok(c) => c.0,
        Err(e) => return ctx.error(e),
    };
    let can = ctx.caller.has(Scope::Admin);
    let body = html! {
        (layout::heading("Config in force", Some(html! { "Version " strong { (c.version) } ", revision " code { (c.revision) } }), can.then(|| html! {
            form.inline method="post" action=(ctx.link("config")) { (csrf(&ctx)) button type="submit" { "Reload from disk" } }
        })))
        @if let Some(errors) = &c.last_reload_errors {
            div.alert.error { strong { "The last reload was rejected; the config above keeps running." }
                ul { @for e in errors { li { code { (e) } } } } }
        }
        div.two {
            div.card { (facts(&[
                ("Version", html! { (c.version) }),
                ("Revision", html! { code { (c.revision) } }),
                ("Routes", html! { (c.file_routes) " from files, " (c.api_routes) " subscriptions" }),
                ("Broker", html! { @match &c.broker { Some(b) => { (badge("ok")) " " (b) } None => { (badge("failed")) " not connected" } } }),
                ("Store", html! { (c.store) }),
                ("Reloads", html! { (c.reloads_applied) " applied, " (c.reloads_rejected) " rejected since start" }),
            ])) }
            div.card {
                h2 { "Files" }
                ul.small { @for f in &c.files { li { code { (f) } } } }
            }
        }
        @if !c.warnings.is_empty() {
            h2 { "Warnings" }
            div.alert.warn { ul { @for w in &c.warnings { li { code { (w) } } } } }
        }
    };
    ctx.page("Config", body)
}

/// Reloads the config, like SIGHUP.
pub(super) async fn reload(ctx: Ctx, _form: FormData) -> Response {
    let back = ctx.link("config");
    match api::config::reload(State(ctx.state.clone()), ctx.caller.clone()).await {
        Ok(r) => ctx.redirect(
            &back,
            FLASH_OK,
            &format!(
                "Reloaded: version {}, revision {} ({} added, {} removed, {} changed).",
                r.0.version,
                r.0.revision,
                r.0.added.len(),
                r.0.removed.len(),
                r.0.changed.len()
            ),
        ),
        Err(e) => ctx.redirect(&back, FLASH_ERROR, &e.message),
    }
}

/// Filters of the audit page.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AuditPage {
    actor: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
}

/// The audit trail.
pub(super) async fn audit(ctx: Ctx, Query(q): Query<AuditPage>) -> Response {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let query = AuditQuery {
        actor: nonempty(&q.actor),
        action: nonempty(&q.action),
        target: None,
        since: None,
        until: None,
        cursor: nonempty(&q.cursor),
        limit: Some(50),
    };
    let page = match api::stats::audit(State(ctx.state.clone()), ctx.caller.clone(), Query(query)).await {
        Ok(p) => p.0,
        Err(e) => return ctx.error(e),
    };
    let body = html! {
        (layout::heading("Audit trail", Some(html! { "Every change made through the API, the console and the portal, newest first." }), None))
        form.filters method="get" action=(ctx.link("audit")) {
            div { label for="actor" { "Who" } input id="actor" type="text" name="actor" value=[q.actor.as_deref()] placeholder="ops"; }
            div { label for="action" { "Action" } input id="action" type="text" name="action" value=[q.action.as_deref()] placeholder="subscription.create"; }
            button.secondary type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            (layout::empty("Nothing changed yet", html! { "Changes to subscriptions, replays, reloads and portal links are recorded here." }))
        } @else {
            table {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "Details" } } }
                tbody { @for a in &page.items { tr {
                    td { (when(&a.at)) } td { (a.actor) } td { code { (a.action) } } td.small { code { (a.target) } }
                    td.small { code { (truncated(&a.details.to_string(), 160)) } }
                } } }
            }
            (layout::pager(&ctx.link("audit"), &[("actor", q.actor.clone()), ("action", q.action.clone())], page.next.as_deref()))
        }
    };
    ctx.page("Audit trail", body)
}

fn truncated(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}
