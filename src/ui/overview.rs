//! The overview (console and portal): totals over the window, a chart of attempts, and one row
//! per route with its success rate, latency percentiles (`GET /v1/stats`), delivery lag,
//! queue depth and deliveries in flight (the router's own metrics), scoped to the caller.

use super::layout::{self, badge, ms, percent};
use super::{Ctx, chart, metrics_text};
use crate::api::routes::RouteView;
use crate::api::stats::{RouteStatsView, StatsQuery};
use crate::api::{self, error::Query};
use crate::config::files::Scope;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

/// `?window=1h|24h`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct OverviewQuery {
    window: Option<String>,
}

/// The overview.
pub(super) async fn page(ctx: Ctx, Query(q): Query<OverviewQuery>) -> Response {
    let day = q.window.as_deref() == Some("24h");
    let (window, buckets, bucket_ms) = if day { ("24h", 48, 30 * 60_000) } else { ("1h", 60, 60_000) };
    let stats = match api::stats::get(
        State(ctx.state.clone()),
        ctx.caller.clone(),
        Query(StatsQuery { window: Some(window.into()), route: None }),
    )
    .await
    {
        Ok(s) => s.0,
        Err(e) => return ctx.error(e),
    };
    let routes = match api::routes::list(State(ctx.state.clone()), ctx.caller.clone()).await {
        Ok(r) => r.0.items,
        Err(e) => return ctx.error(e),
    };
    let access = match ctx.caller.access(Scope::Read) {
        Ok(a) => a,
        Err(e) => return ctx.error(e),
    };
    let visible = match api::tenants::visible_routes(&ctx.state, access).await {
        Ok(v) => v,
        Err(e) => return ctx.error(e),
    };
    let until = crate::broker::now_ms() as i64;
    let since = until - bucket_ms * buckets as i64;
    let series = ctx.state.store.attempt_series(since, until + 1, bucket_ms, visible.as_deref()).await;
    let series = match series {
        Ok(s) => s,
        Err(e) => return ctx.error(e.into()),
    };
    let live = ctx.state.metrics.as_ref().map(|render| metrics_text::per_route(&render())).unwrap_or_default();
    let attempts: u64 = stats.routes.iter().map(|r| r.attempts).sum();
    let delivered: u64 = stats.routes.iter().map(|r| r.delivered).sum();
    let dead: u64 = stats.routes.iter().map(|r| r.dead).sum();
    let queued: f64 = stats.routes.iter().filter_map(|r| live.get(&r.route)?.queue_depth).sum();
    let title = match ctx.caller.grant() {
        Some(g) => format!("Webhooks of {}", g.tenant),
        None => "Overview".to_string(),
    };
    let tabs = html! {
        div.tabs {
            a href={ (ctx.area.base()) "?window=1h" } class=[(!day).then_some("active")] { "Last hour" }
            a href={ (ctx.area.base()) "?window=24h" } class=[day.then_some("active")] { "Last day" }
        }
    };
    let body = html! {
        (layout::heading(&title, Some(html! { "Deliveries in the " (if day { "last day" } else { "last hour" }) ", per route." }), Some(tabs)))
        div.grid {
            (tile("Attempts", html! { (attempts) }))
            (tile("Success rate", percent((attempts > 0).then(|| delivered as f64 / attempts as f64))))
            (tile("Dead-lettered", html! { (dead) }))
            (tile("Waiting in queues", html! { (queued as u64) }))
        }
        div.card {
            h2 { "Attempts" }
            (layout::raw(chart::attempts_svg(&series, since, bucket_ms, buckets, "delivery attempts over time")))
            div.legend { span { span.sw.ok {} "delivered" } span { span.sw.fail {} "failed" } }
        }
        h2 { "Routes" }
        @if stats.routes.is_empty() {
            (empty_routes(&ctx))
        } @else {
            (route_table(&ctx, &stats.routes, &routes, &live))
        }
    };
    ctx.page(&title, body)
}

fn tile(label: &str, value: Markup) -> Markup {
    html! { div.stat { div.label { (label) } div.value { (value) } } }
}

fn empty_routes(ctx: &Ctx) -> Markup {
    match ctx.caller.grant() {
        Some(_) => layout::empty(
            "No endpoints yet",
            html! { "Add an endpoint to start receiving webhooks: " a href=(ctx.link("endpoints/new")) { "add an endpoint" } "." },
        ),
        None => layout::empty(
            "No routes yet",
            html! {
                "Add a route file under " code { "routes/" } " and reload, or "
                a href=(ctx.link("subscriptions/new")) { "create a subscription" } "."
            },
        ),
    }
}

/// The circuit breaker's state of a route, once routes have one (issue 14): this is the one
/// place to fill in, and the column appears as soon as any route has a state.
fn circuit(_route: &RouteView) -> Option<&'static str> {
    None
}

fn route_table(
    ctx: &Ctx,
    stats: &[RouteStatsView],
    routes: &[RouteView],
    live: &std::collections::BTreeMap<String, metrics_text::RouteLive>,
) -> Markup {
    let show_circuit = routes.iter().any(|r| circuit(r).is_some());
    let secs = |v: Option<f64>| match v {
        None => html! { span.muted { "—" } },
        Some(s) if s < 1.0 => html! { (format!("{:.0} ms", s * 1000.0)) },
        Some(s) => html! { (format!("{s:.1} s")) },
    };
    html! {
        table {
            thead { tr {
                th { "Route" } th { "Origin" } th.num { "Attempts" } th.num { "Success" } th.num { "p50" } th.num { "p95" }
                th.num { "p99" } th.num { "Lag p50" } th.num { "Lag p95" } th.num { "Queued" } th.num { "In flight" } th.num { "Dead" }
                @if show_circuit { th { "Circuit" } }
            } }
            tbody {
                @for s in stats {
                    @let route = routes.iter().find(|r| r.name == s.route);
                    @let l = live.get(&s.route).cloned().unwrap_or_default();
                    tr {
                        td { (route_link(ctx, &s.route, route)) }
                        td { @match route {
                            Some(r) if r.origin == "api" => { (badge("subscription")) }
                            Some(_) => { (badge("file")) }
                            None => { span.muted { "removed" } }
                        }
                        @if let Some(t) = route.and_then(|r| r.tenant.as_deref()).filter(|_| ctx.caller.grant().is_none()) {
                            " " span.muted.small { "tenant " (t) }
                        } }
                        td.num { (s.attempts) }
                        td.num { (percent(s.success_rate)) }
                        td.num { (ms(s.latency_ms.p50)) }
                        td.num { (ms(s.latency_ms.p95)) }
                        td.num { (ms(s.latency_ms.p99)) }
                        td.num { (secs(l.lag_p50)) }
                        td.num { (secs(l.lag_p95)) }
                        td.num { @match l.queue_depth { Some(q) => (q as u64), None => span.muted { "—" } } }
                        td.num { @match l.in_flight { Some(q) => (q as u64), None => span.muted { "—" } } }
                        td.num { @if s.dead > 0 { a href={ (ctx.link("dead-letters")) "?route=" (super::encode(&s.route)) } { (s.dead) } } @else { "0" } }
                        @if show_circuit { td { @if let Some(c) = route.and_then(circuit) { (badge(c)) } } }
                    }
                }
            }
        }
    }
}

fn route_link(ctx: &Ctx, name: &str, route: Option<&RouteView>) -> Markup {
    let href = match (ctx.caller.grant(), route.and_then(|r| r.subscription.as_deref())) {
        (_, Some(sub)) => ctx.link(&format!("{}/{sub}", ctx.subs())),
        (None, None) if route.is_some() => ctx.link(&format!("routes/{}", super::encode(name))),
        _ => ctx.link(&format!("deliveries?route={}", super::encode(name))),
    };
    html! { a href=(href) { strong { (name) } } }
}
