//! The subscription form (console: every key; portal: the endpoint's URL, its event types and
//! the delivery settings), to and from the API's [`SubscriptionSpec`], with each field's
//! problem shown beside it.

use super::layout::{csrf, field_error};
use super::session::Area;
use super::{Ctx, FormData};
use crate::api::error::ApiError;
use crate::api::subscriptions::SubscriptionView;
use crate::config::files::BodyFormat;
use crate::subscriptions::{FieldError, FilterSpec, SubscriptionDefinition, SubscriptionError, SubscriptionSpec};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// What the form holds, as text.
#[derive(Debug, Clone, Default)]
pub(super) struct SubForm {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) url: String,
    pub(super) events: Vec<String>,
    pub(super) tenant: String,
    pub(super) format: String,
    pub(super) ordered: bool,
    pub(super) log_payload: bool,
    pub(super) timeout: String,
    pub(super) max_attempts: String,
    pub(super) backoff: String,
    pub(super) filter: String,
    pub(super) transform: String,
    pub(super) redact: String,
    pub(super) headers: String,
}

fn split(text: &str) -> Vec<String> {
    text.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl SubForm {
    /// From a posted form.
    pub(super) fn from_form(f: &FormData) -> Self {
        let mut events = f.all("events");
        events.extend(split(&f.get("events_extra").unwrap_or_default()));
        events.dedup();
        let g = |k: &str| f.get(k).unwrap_or_default();
        Self {
            name: g("name"),
            description: g("description"),
            url: g("url"),
            events,
            tenant: g("tenant"),
            format: g("format"),
            ordered: f.checked("ordered"),
            log_payload: f.checked("log_payload"),
            timeout: g("timeout"),
            max_attempts: g("max_attempts"),
            backoff: g("backoff"),
            filter: f.0.iter().find(|(k, _)| k == "filter").map(|(_, v)| v.clone()).unwrap_or_default(),
            transform: f.0.iter().find(|(k, _)| k == "transform").map(|(_, v)| v.clone()).unwrap_or_default(),
            redact: g("redact"),
            headers: f.0.iter().find(|(k, _)| k == "headers").map(|(_, v)| v.clone()).unwrap_or_default(),
        }
    }

    /// From a stored subscription, to edit it.
    pub(super) fn from_view(v: &SubscriptionView) -> Self {
        let s = &v.spec;
        Self {
            name: s.name.clone(),
            description: s.description.clone().unwrap_or_default(),
            url: s.url.clone(),
            events: s.events.clone(),
            tenant: v.tenant.clone().unwrap_or_default(),
            format: format_name(s.format).into(),
            ordered: s.ordered,
            log_payload: s.log_payload,
            timeout: s.timeout.clone().unwrap_or_default(),
            max_attempts: s.max_attempts.map(|n| n.to_string()).unwrap_or_default(),
            backoff: s.backoff.as_ref().map(|b| b.join(", ")).unwrap_or_default(),
            filter: match &s.filter {
                Some(FilterSpec::Script(source)) => source.clone(),
                Some(FilterSpec::Declarative(v)) => serde_json::to_string_pretty(v).unwrap_or_default(),
                None => String::new(),
            },
            transform: s.transform.clone().unwrap_or_default(),
            redact: s.redact.join(", "),
            headers: s.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n"),
        }
    }

    /// The API's input; a field that does not parse is an error on that field, as the API
    /// reports its own. What the form does not edit (`concurrency`, `circuit_breaker`,
    /// `rate_limit`: set through the API) is kept from `current`, the definition being edited.
    pub(super) fn to_spec(
        &self,
        enabled: Option<bool>,
        current: Option<&SubscriptionDefinition>,
    ) -> Result<SubscriptionSpec, ApiError> {
        let mut errors = Vec::new();
        let format = match self.format.as_str() {
            "" | "standard" => BodyFormat::Standard,
            "cloudevents" => BodyFormat::Cloudevents,
            "data" => BodyFormat::Data,
            other => {
                errors.push(fe("format", format!("{other:?}: standard, cloudevents or data")));
                BodyFormat::Standard
            }
        };
        let max_attempts = match self.max_attempts.as_str() {
            "" => None,
            n => n.parse().map(Some).unwrap_or_else(|_| {
                errors.push(fe("max_attempts", format!("{n:?} is not a number")));
                None
            }),
        };
        let mut headers = BTreeMap::new();
        for line in self.headers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once(':') {
                Some((k, v)) => {
                    headers.insert(k.trim().to_string(), v.trim().to_string());
                }
                None => errors.push(fe("headers", format!("{line:?}: write one `Name: value` a line"))),
            }
        }
        if !errors.is_empty() {
            return Err(SubscriptionError::Invalid(errors).into());
        }
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        Ok(SubscriptionSpec {
            name: self.name.clone(),
            description: opt(&self.description),
            events: self.events.clone(),
            url: self.url.clone(),
            ordered: self.ordered,
            format,
            // JSON that opens with `{` is a declarative filter (docs/filters.md); anything else, Rhai.
            filter: opt(&self.filter).map(|text| match text.trim_start().starts_with('{') {
                true => serde_json::from_str(&text).map_or(FilterSpec::Script(text), FilterSpec::Declarative),
                false => FilterSpec::Script(text),
            }),
            transform: opt(&self.transform),
            redact: split(&self.redact),
            headers,
            timeout: opt(&self.timeout),
            concurrency: current.and_then(|c| c.concurrency),
            order_key: current.and_then(|c| c.order_key.clone()),
            max_attempts,
            backoff: opt(&self.backoff).map(|b| split(&b)),
            log_payload: self.log_payload,
            circuit_breaker: current.and_then(|c| c.circuit_breaker.clone()),
            rate_limit: current.and_then(|c| c.rate_limit.clone()),
            batch: current.and_then(|c| c.batch.clone()),
            enabled,
            tenant: opt(&self.tenant),
        })
    }
}

fn fe(field: &str, message: String) -> FieldError {
    FieldError { field: field.into(), message }
}

fn format_name(f: BodyFormat) -> &'static str {
    match f {
        BodyFormat::Standard => "standard",
        BodyFormat::Cloudevents => "cloudevents",
        BodyFormat::Data => "data",
    }
}

/// A labelled field with its hint and its problem.
fn field(label: &str, name: &str, hint: Option<&str>, e: Option<&ApiError>, input: Markup) -> Markup {
    let problem = field_error(e, name);
    html! {
        div class={ "field" (if problem.is_some() { " invalid" } else { "" }) } {
            label for=(name) { (label) }
            (input)
            @if let Some(h) = hint { div.hint { (h) } }
            @if let Some(p) = problem { div.problem { (p) } }
        }
    }
}

/// The form: `action` is where it posts; `creating` shows the keys that cannot change later.
pub(super) fn render(
    ctx: &Ctx,
    f: &SubForm,
    e: Option<&ApiError>,
    action: &str,
    creating: bool,
    types: &[String],
) -> Markup {
    let portal = ctx.area == Area::Portal;
    let extra: Vec<&String> = f.events.iter().filter(|ev| !types.contains(ev)).collect();
    let extra = extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    html! {
        form.card method="post" action=(action) {
            (csrf(ctx))
            @if creating && !portal {
                (field("Name", "name", Some("Letters, digits, - _ . ; it names the route's queue and cannot change."), e,
                    html! { input id="name" type="text" name="name" value=(f.name) required placeholder="billing-erp"; }))
            } @else {
                input type="hidden" name="name" value=(f.name);
            }
            (field("Endpoint URL", "url", Some("Where events are POSTed, signed (Standard Webhooks)."), e,
                html! { input id="url" type="url" name="url" value=(f.url) required placeholder="https://example.com/webhooks"; }))
            (field("Description", "description", None, e, html! { input id="description" type="text" name="description" value=(f.description); }))
            div class={ "field" (if field_error(e, "events").is_some() { " invalid" } else { "" }) } {
                label { "Event types" }
                @if types.is_empty() { p.muted { "No event types are defined yet." } }
                @for t in types {
                    label.check { input type="checkbox" name="events" value=(t) checked[f.events.contains(t)]; code { (t) } }
                }
                @if !portal {
                    input id="events_extra" type="text" name="events_extra" value=(extra) placeholder="or patterns: order.*, invoice.#";
                    div.hint { "Patterns: " code { "*" } " matches one word, " code { "#" } " any number." }
                }
                @if let Some(p) = field_error(e, "events") { div.problem { (p) } }
            }
            @if !portal {
                (field("Tenant", "tenant", Some("The franchise or project that owns it: it then receives only that tenant's events, and that tenant's portal shows it."), e,
                    html! { input id="tenant" type="text" name="tenant" value=(f.tenant) placeholder="franchise-42"; }))
            }
            details open[e.is_some()] {
                summary { "Delivery settings" }
                div.row {
                    (field("Body format", "format", None, e, html! {
                        select id="format" name="format" {
                            @for (v, l) in [("standard", "Standard Webhooks {type, timestamp, data}"), ("cloudevents", "The whole CloudEvent"), ("data", "data only")] {
                                option value=(v) selected[f.format == v || (f.format.is_empty() && v == "standard")] { (l) }
                            }
                        }
                    }))
                    (field("Timeout", "timeout", Some("Per attempt, e.g. 10s."), e, html! { input id="timeout" type="text" name="timeout" value=(f.timeout) placeholder="10s"; }))
                    (field("Attempts", "max_attempts", Some("In all, the first included (default 8)."), e, html! { input id="max_attempts" type="number" min="1" name="max_attempts" value=(f.max_attempts) placeholder="8"; }))
                    (field("Backoff", "backoff", Some("Waits between attempts; the last repeats."), e, html! { input id="backoff" type="text" name="backoff" value=(f.backoff) placeholder="5s, 30s, 2m, 10m"; }))
                }
                (field("Static headers", "headers", Some("One `Name: value` a line."), e, html! { textarea id="headers" name="headers" { (f.headers) } }))
                @if creating {
                    label.check { input type="checkbox" name="ordered" value="1" checked[f.ordered]; "Ordered: one delivery at a time, strict FIFO (cannot change later)" }
                } @else if f.ordered {
                    input type="hidden" name="ordered" value="1";
                }
                label.check { input type="checkbox" name="log_payload" value="1" checked[f.log_payload]; "Keep the bodies and request headers sent in the delivery log (allows retrying any delivery)" }
            }
            @if !portal {
                details open[field_error(e, "filter").is_some() || field_error(e, "transform").is_some() || field_error(e, "redact").is_some()] {
                    summary { "Filter, transform and redaction" }
                    (field("Filter", "filter", Some("Rhai defining fn filter(event), returning true to deliver; or a declarative filter as JSON, e.g. {\"path\": \"data.total\", \"gte\": 100}."), e, html! { textarea id="filter" name="filter" placeholder="fn filter(event) { event.data.total > 100 }" { (f.filter) } }))
                    (field("Transform (Rhai)", "transform", Some("Defines fn transform(event) returning the event."), e, html! { textarea id="transform" name="transform" { (f.transform) } }))
                    (field("Redact", "redact", Some("Dotted paths removed before sending, e.g. data.customer.email."), e, html! { input id="redact" type="text" name="redact" value=(f.redact); }))
                }
            }
            div.actions {
                button type="submit" { (if creating { if portal { "Add endpoint" } else { "Create subscription" } } else { "Save changes" }) }
            }
        }
    }
}
