//! The event catalogue (console and portal): every type with its schema versions and the routes
//! that take it (`GET /v1/event-types`), and one type's schemas with an example payload per
//! version and the body a receiver gets (`GET /v1/event-types/{type}`).

use super::Ctx;
use super::layout::{self, json_block};
use crate::api;
use crate::api::error::Path;
use crate::example;
use axum::extract::State;
use axum::response::Response;
use maud::html;

/// Every event type.
pub(super) async fn list(ctx: Ctx) -> Response {
    let types = match api::event_types::list(State(ctx.state.clone()), ctx.caller.clone()).await {
        Ok(t) => t.0.items,
        Err(e) => return ctx.error(e),
    };
    let sub = match ctx.caller.grant() {
        Some(_) => "The events you can subscribe an endpoint to, with the shape of their data.",
        None => "Event types with a schema under schemas/; an event of another type is refused at ingest.",
    };
    let body = html! {
        (layout::heading("Event types", Some(html! { (sub) }), None))
        @if types.is_empty() {
            (layout::empty("No event types", html! { "Add a JSON Schema as " code { "schemas/<type>/v1.json" } " in the config directory and reload." }))
        } @else {
            table {
                thead { tr { th { "Type" } th { "Versions" } th { "Latest" } th { (if ctx.caller.grant().is_some() { "Your endpoints" } else { "Routes" }) } } }
                tbody {
                    @for t in &types {
                        tr {
                            td { a href=(ctx.link(&format!("event-types/{}", super::encode(&t.ty)))) { code { (t.ty) } } }
                            td { @for v in &t.versions { span.badge.neutral { "v" (v) } " " } }
                            td { "v" (t.latest) }
                            td { @if t.routes.is_empty() { span.muted { "none" } } @else { (t.routes.join(", ")) } }
                        }
                    }
                }
            }
        }
    };
    ctx.page("Event types", body)
}

/// One event type: its schemas and an example per version.
pub(super) async fn detail(ctx: Ctx, Path(ty): Path<String>) -> Response {
    let detail = match api::event_types::get(State(ctx.state.clone()), ctx.caller.clone(), Path(ty.clone())).await {
        Ok(d) => d.0,
        Err(e) => return ctx.error(e),
    };
    let mut versions: Vec<(&String, &serde_json::Value)> = detail.schemas.iter().collect();
    versions.sort_by_key(|(v, _)| std::cmp::Reverse(v.parse::<u32>().unwrap_or_default()));
    let body = html! {
        (layout::heading(&ty, Some(html! {
            "Schema versions " (detail.summary.versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "))
            "; an event without " code { "dataversion" } " is checked against v" (detail.summary.latest) "."
        }), Some(html! { a.button.secondary href=(ctx.link("event-types")) { "All types" } })))
        @for (v, schema) in versions {
            @let data = example::example(schema);
            @let body = serde_json::json!({"type": ty, "timestamp": "2026-11-23T10:00:00Z", "data": data});
            div.card {
                h2 { "Version " (v) @if v.parse::<u32>().ok() == Some(detail.summary.latest) { " " span.badge.good { "latest" } } }
                div.two {
                    div { h3.muted.small { "WEBHOOK BODY (EXAMPLE)" } (json_block(&body)) }
                    div { h3.muted.small { "JSON SCHEMA OF DATA" } (json_block(schema)) }
                }
            }
        }
    };
    ctx.page(&ty, body)
}
