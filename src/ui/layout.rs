//! The page shell and the pieces every page is made of: the navigation of each area, headings,
//! flash messages, tables, empty states that say what to do, badges, key-value lists, pagers
//! and errors. Everything is escaped by maud; nothing here writes an inline style or script
//! (the Content-Security-Policy forbids both).

use super::session::Area;
use super::{Ctx, FLASH_ERROR};
use crate::api::error::ApiError;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The asset paths (served from the binary).
pub(super) const CSS: &str = "assets/app.css";
/// The script: confirmations, copy buttons, auto-submit selects. Pages work without it.
pub(super) const JS: &str = "assets/app.js";

/// One navigation entry: (path below the area, label).
fn nav(area: Area) -> &'static [(&'static str, &'static str)] {
    match area {
        Area::Console => &[
            ("", "Overview"),
            ("event-types", "Event types"),
            ("subscriptions", "Subscriptions"),
            ("deliveries", "Deliveries"),
            ("dead-letters", "Dead letters"),
            ("tenants", "Tenants"),
            ("config", "Config"),
            ("audit", "Audit trail"),
        ],
        Area::Portal => &[
            ("", "Overview"),
            ("endpoints", "Endpoints"),
            ("deliveries", "Deliveries"),
            ("dead-letters", "Dead letters"),
            ("event-types", "Event types"),
            ("verify", "Verifying signatures"),
        ],
    }
}

/// The whole page: header with navigation, the flash message, `body`.
pub(super) fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let base = ctx.area.base();
    let current = ctx.path.strip_prefix(base).unwrap_or("").split(['/', '?']).next().unwrap_or("");
    let product = match ctx.area {
        Area::Console => "hookrelay console",
        Area::Portal => "Webhooks portal",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (product) }
                link rel="stylesheet" href={ (base) (CSS) };
                script src={ (base) (JS) } defer {}
            }
            body class={ "area-" (if ctx.area == Area::Console { "console" } else { "portal" }) } {
                header.topbar {
                    a.brand href=(base) { span.logo { "⇢" } (product) }
                    nav.nav {
                        @for (path, label) in nav(ctx.area) {
                            a href={ (base) (path) } class=[(*path == current).then_some("active")] { (label) }
                        }
                    }
                    div.who {
                        @match ctx.caller.grant() {
                            Some(g) => { span.badge.neutral { "tenant " (g.tenant) } span.muted { (g.scope.as_str()) } }
                            None => { span.muted { (ctx.caller.name) } }
                        }
                        @if ctx.signed_in() {
                            form.inline method="post" action={ (base) "logout" } {
                                (csrf(ctx))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main.content {
                    @if let Some((kind, msg)) = &ctx.flash {
                        div class={ "flash " (if kind == FLASH_ERROR { "error" } else { "ok" }) } role="status" { (msg) }
                    }
                    (body)
                }
                footer.foot { "hookrelay " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

/// A page outside a session (sign-in, portal link): no navigation.
pub(super) fn bare(area: Area, title: &str, body: Markup) -> Markup {
    let base = area.base();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href={ (base) (CSS) };
                script src={ (base) (JS) } defer {}
            }
            body.bare { main.card.narrow { (body) } }
        }
    }
}

/// The hidden CSRF field of every form.
pub(super) fn csrf(ctx: &Ctx) -> Markup {
    csrf_field(&ctx.csrf)
}

/// The hidden CSRF field, from a token.
pub(super) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(super::session::CSRF_FIELD) value=(token); }
}

/// A page heading with an optional line under it and actions on the right.
pub(super) fn heading(title: &str, sub: Option<Markup>, actions: Option<Markup>) -> Markup {
    html! {
        div.heading {
            div { h1 { (title) } @if let Some(s) = sub { p.sub { (s) } } }
            @if let Some(a) = actions { div.actions { (a) } }
        }
    }
}

/// An empty state: what is missing and what to do about it.
pub(super) fn empty(title: &str, what_to_do: Markup) -> Markup {
    html! { div.empty { p.empty-title { (title) } p { (what_to_do) } } }
}

/// A coloured label for a status.
pub(super) fn badge(text: &str) -> Markup {
    let class = match text {
        "delivered" | "enabled" | "live" | "ok" | "applied" | "closed" => "good",
        "retrying" | "replayed" | "half-open" | "disabled" => "warn",
        "dead" | "failed" | "not live" | "rejected" | "open" => "bad",
        _ => "neutral",
    };
    html! { span class={ "badge " (class) } { (text) } }
}

/// A definition list of (label, value).
pub(super) fn facts(rows: &[(&str, Markup)]) -> Markup {
    html! { dl.facts { @for (k, v) in rows { dt { (k) } dd { (v) } } } }
}

/// JSON, pretty-printed in a block.
pub(super) fn json_block(v: &serde_json::Value) -> Markup {
    html! { pre.code { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
}

/// A link to the next page of a list, keeping the filters of `query` and replacing `cursor`.
pub(super) fn pager(path: &str, query: &[(&str, Option<String>)], next: Option<&str>) -> Markup {
    let Some(next) = next else { return html! {} };
    let mut q: Vec<(&str, String)> =
        query.iter().filter_map(|(k, v)| Some((*k, v.clone()?))).filter(|(_, v)| !v.is_empty()).collect();
    q.push(("cursor", next.to_string()));
    let href = format!("{path}?{}", serde_urlencoded::to_string(&q).unwrap_or_default());
    html! { div.pager { a.button.secondary href=(href) { "Older →" } } }
}

/// An API error where it happened: its message and, for invalid input, every field's problem.
pub(super) fn error_panel(e: &ApiError) -> Markup {
    let fields: Vec<(String, String)> = e
        .details
        .as_ref()
        .and_then(|d| d.get("fields"))
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["field"].as_str().unwrap_or_default().to_string(),
                        f["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let errors: Vec<String> = e
        .details
        .as_ref()
        .and_then(|d| d.get("errors"))
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    html! {
        div.alert.error role="alert" {
            strong { (e.message) }
            @if !fields.is_empty() {
                ul { @for (f, m) in &fields { li { code { (f) } ": " (m) } } }
            }
            @if !errors.is_empty() {
                ul { @for m in &errors { li { code { (m) } } } }
            }
        }
    }
}

/// The problem of one field, from an API error's details, if it names that field.
pub(super) fn field_error(e: Option<&ApiError>, field: &str) -> Option<String> {
    let fields = e?.details.as_ref()?.get("fields")?.as_array()?;
    let msgs: Vec<&str> = fields
        .iter()
        .filter(|f| f["field"].as_str().is_some_and(|n| n == field || n.starts_with(&format!("{field}["))))
        .filter_map(|f| f["message"].as_str())
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

/// A time (RFC 3339 text) shown short: `2026-11-23 10:00:01`, the full value on hover.
pub(super) fn when(rfc3339: &str) -> Markup {
    let short = rfc3339.replace('T', " ");
    let short = short.split('.').next().unwrap_or(&short).trim_end_matches('Z');
    html! { time datetime=(rfc3339) title=(rfc3339) { (short) } }
}

/// A share as a percentage.
pub(super) fn percent(rate: Option<f64>) -> Markup {
    match rate {
        None => html! { span.muted { "—" } },
        Some(r) => {
            let class = if r >= 0.99 {
                "good"
            } else if r >= 0.9 {
                "warn"
            } else {
                "bad"
            };
            html! { span class={ "rate " (class) } { (format!("{:.1}%", r * 100.0)) } }
        }
    }
}

/// Milliseconds, or a dash.
pub(super) fn ms(v: Option<u64>) -> Markup {
    match v {
        None => html! { span.muted { "—" } },
        Some(v) if v >= 10_000 => html! { (format!("{:.1} s", v as f64 / 1000.0)) },
        Some(v) => html! { (v) " ms" },
    }
}

/// Text with a copy button (the button needs the script; the text can be selected without it).
pub(super) fn copyable(text: &str) -> Markup {
    html! {
        div.copyable {
            code.secret { (text) }
            button.secondary.small type="button" data-copy=(text) { "Copy" }
        }
    }
}

/// Pre-rendered markup (an SVG chart built by [`super::chart`]).
pub(super) fn raw(s: String) -> Markup {
    PreEscaped(s)
}
