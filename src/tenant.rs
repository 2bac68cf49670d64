//! Tenants: a franchise or a project that owns routes. A tenant's routes (API subscriptions with
//! a `tenant`, file routes with `tenant = "..."`) receive only the events whose tenant attribute
//! (`[tenants] attribute`, default `subject`) equals the tenant id; tenant tokens
//! ([`crate::tokens`]) see and change only their tenant's routes.
//!
//! [`TenantScope`] is the per-route check, compiled at config load (the attribute resolved to a
//! field or an extension name once) and applied by the pipeline where the route's filter runs:
//! a comparison of two strings, no allocation.

use crate::event::CloudEvent;
use std::sync::Arc;

/// `[tenants]` of `hookrelay.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsFile {
    /// The CloudEvent attribute that names an event's tenant: `subject` (default), `source`, or
    /// an extension attribute (lowercase letters and digits, e.g. `tenantid`).
    pub attribute: String,
}

impl Default for TenantsFile {
    fn default() -> Self {
        Self { attribute: "subject".into() }
    }
}

impl TenantsFile {
    /// What is wrong with `attribute`, if anything.
    pub fn problem(&self) -> Option<String> {
        let a = &self.attribute;
        let ok = !a.is_empty() && a.len() <= 20 && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Some(format!(
                "[tenants] attribute = {a:?}: a CloudEvent attribute name (1 to 20 lowercase letters and digits, \
                 e.g. \"subject\" or an extension such as \"tenantid\")"
            ));
        }
        if matches!(a.as_str(), "data" | "specversion" | "id" | "time" | "type" | "dataversion" | "sequence") {
            return Some(format!(
                "[tenants] attribute = {a:?} cannot name a tenant: use \"subject\", \"source\" or an extension"
            ));
        }
        None
    }
}

/// Checks a tenant id: 1 to 128 characters of `A-Z a-z 0-9 - _ . : @` (it appears in URLs and
/// tokens).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c)) {
        return Err(format!("tenant {id:?} must be 1 to 128 characters of A-Z a-z 0-9 - _ . : @"));
    }
    Ok(())
}

/// Which attribute of an event names its tenant, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attribute {
    Subject,
    Source,
    Extension(Arc<str>),
}

/// A route's tenant check: every event, or only those of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantScope(Option<(Attribute, Arc<str>)>);

impl TenantScope {
    /// The route of `tenant` (when it has one), matched on `attribute` (`[tenants] attribute`).
    pub fn new(attribute: &str, tenant: Option<&str>) -> Self {
        let attribute = match attribute {
            "subject" => Attribute::Subject,
            "source" => Attribute::Source,
            other => Attribute::Extension(other.into()),
        };
        Self(tenant.map(|t| (attribute, t.into())))
    }

    /// The tenant, if the route has one.
    pub fn tenant(&self) -> Option<&str> {
        self.0.as_ref().map(|(_, t)| t.as_ref())
    }

    /// Whether the route takes `event`: always without a tenant; with one, only when the event's
    /// tenant attribute is exactly the tenant id.
    pub fn admits(&self, event: &CloudEvent) -> bool {
        let Some((attribute, tenant)) = &self.0 else { return true };
        let value = match attribute {
            Attribute::Subject => event.subject.as_deref(),
            Attribute::Source => Some(event.source.as_str()),
            Attribute::Extension(name) => event.extensions.get(name.as_ref()).and_then(serde_json::Value::as_str),
        };
        value == Some(tenant.as_ref())
    }

    /// Makes a CloudEvent (as a JSON object) one this route takes: sets the tenant attribute to
    /// the tenant, when the route has one.
    pub fn stamp(&self, event: &mut serde_json::Map<String, serde_json::Value>) {
        if let Some((attribute, tenant)) = &self.0 {
            let key = match attribute {
                Attribute::Subject => "subject",
                Attribute::Source => "source",
                Attribute::Extension(name) => name.as_ref(),
            };
            event.insert(key.to_string(), serde_json::Value::String(tenant.to_string()));
        }
    }

    /// Bytes that change when the check changes (for the route's digest).
    pub fn digest_input(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some((a, t)) => format!("{a:?}\0{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: serde_json::Value) -> CloudEvent {
        let mut base = json!({"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.paid"});
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        CloudEvent::decode(&serde_json::to_vec(&base).unwrap()).unwrap()
    }

    #[test]
    fn a_route_without_tenant_takes_every_event() {
        let scope = TenantScope::new("subject", None);
        assert!(scope.admits(&event(json!({}))));
        assert!(scope.admits(&event(json!({"subject": "acme"}))));
    }

    #[test]
    fn a_tenant_route_takes_only_its_tenants_events_by_subject() {
        let scope = TenantScope::new("subject", Some("acme"));
        assert!(scope.admits(&event(json!({"subject": "acme"}))));
        assert!(!scope.admits(&event(json!({"subject": "globex"}))));
        assert!(!scope.admits(&event(json!({"subject": "acme2"}))));
        assert!(!scope.admits(&event(json!({}))), "an event without the attribute belongs to no tenant");
    }

    #[test]
    fn the_attribute_can_be_source_or_an_extension() {
        assert!(TenantScope::new("source", Some("/shop")).admits(&event(json!({}))));
        let ext = TenantScope::new("tenantid", Some("acme"));
        assert!(ext.admits(&event(json!({"tenantid": "acme", "subject": "other"}))));
        assert!(!ext.admits(&event(json!({"subject": "acme"}))));
        assert!(!ext.admits(&event(json!({"tenantid": 7}))), "a non-string attribute matches no tenant");
    }

    #[test]
    fn attributes_and_ids_are_checked() {
        assert_eq!(TenantsFile::default().problem(), None);
        assert!(TenantsFile { attribute: "Subject".into() }.problem().is_some());
        assert!(TenantsFile { attribute: "data".into() }.problem().is_some());
        assert!(check_id("franchise-42").is_ok());
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
    }
}
