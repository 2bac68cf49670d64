//! What a reload changes: the difference between the config now live and the next one, computed
//! once as one value ([`ConfigDiff`]) that every step of the reload reads: the refusal, the
//! declarations before the swap, the new HTTP client, the workers to restart or update, the
//! bindings to remove after the swap, and the outcome the log, the API and the metrics report
//! (as Vector's `config/diff.rs` does for its topology).

use crate::config::{MAIN_FILE, Origin, Snapshot};
use std::collections::{BTreeMap, BTreeSet};

/// The difference between two configs, route by route.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Routes only the new config has.
    pub added: BTreeSet<String>,
    /// Routes only the old config has, with the patterns their queues were bound to.
    pub removed: BTreeMap<String, Vec<String>>,
    /// Routes in both whose definition changed (their files, plugins or secrets).
    pub changed: BTreeSet<String>,
    /// Routes in both whose queue topology changes: their patterns or their retry wait tiers.
    pub redeclare: BTreeSet<String>,
    /// Routes in both whose worker starts anew: their concurrency (prefetch and slots are set
    /// when a worker starts) changed, or they gained or lost a rate limit (an unordered route's
    /// worker follows the queue's consumers, to share the rate, only when it starts with one),
    /// or their shape changed (`order_key`, `[batch]`: how a worker consumes is set when it
    /// starts).
    pub restart: BTreeSet<String>,
    /// Routes in both, with the patterns they no longer have.
    pub unbind: BTreeMap<String, Vec<String>>,
    /// `[security]` or its CA file changed: deliveries need a new HTTP client.
    pub new_client: bool,
    /// What the broker or the running process cannot change by a reload: a reload with any is
    /// rejected, and nothing is changed.
    pub refusals: Vec<String>,
}

impl ConfigDiff {
    /// What changes from `old` to `new`.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Self {
        let mut diff = ConfigDiff {
            new_client: old.security != new.security || old.extra_roots != new.extra_roots,
            refusals: refusals(old, new),
            ..Self::default()
        };
        for r in &new.routes {
            let Some(o) = old.route(&r.name) else {
                diff.added.insert(r.name.clone());
                continue;
            };
            let name = || r.name.clone();
            if o.digest != r.digest {
                diff.changed.insert(name());
            }
            if o.events != r.events || o.retry.tiers() != r.retry.tiers() {
                diff.redeclare.insert(name());
            }
            if o.concurrency != r.concurrency
                || o.rate_limit.is_some() != r.rate_limit.is_some()
                || o.order_key != r.order_key
                || o.batch != r.batch
            {
                diff.restart.insert(name());
            }
            let dropped: Vec<String> = o.events.iter().filter(|p| !r.events.contains(p)).cloned().collect();
            if !dropped.is_empty() {
                diff.unbind.insert(name(), dropped);
            }
        }
        for o in old.routes.iter().filter(|o| new.route(&o.name).is_none()) {
            diff.removed.insert(o.name.clone(), o.events.clone());
        }
        diff
    }

    /// Whether a route of the new config goes to the broker before the swap (its queue, wait
    /// queues and bindings): a new route, or one whose topology or worker changes. A route that
    /// is not running (its declaration failed before) is declared again by the session.
    pub fn declares(&self, route: &str) -> bool {
        self.added.contains(route) || self.redeclare.contains(route) || self.restart.contains(route)
    }

    /// The bindings to remove once the new config is live: the patterns routes dropped, and
    /// every pattern of removed routes.
    pub fn unbinds(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.unbind.iter().chain(&self.removed)
    }
}

/// What the broker or the running process cannot change by a reload.
fn refusals(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&old.broker, &new.broker);
    if old.data_dir.path != new.data_dir.path {
        out.push(format!(
            "{MAIN_FILE}: the data directory applies at start only ({} now, {} in the new config, from {}): restart \
             hookrelay to change it",
            old.data_dir.path.display(),
            new.data_dir.path.display(),
            new.data_dir.from.describe()
        ));
    }
    if old.store != new.store {
        out.push(format!("{MAIN_FILE}: [store] applies at start only: restart hookrelay to change it"));
    }
    if a.url != b.url || a.exchange != b.exchange || a.delivery_limit != b.delivery_limit {
        out.push(format!(
            "{MAIN_FILE}: [broker] url, exchange and delivery_limit apply at start only: restart hookrelay to change them"
        ));
    }
    if (old.api.enabled, &old.api.listen) != (new.api.enabled, &new.api.listen) {
        out.push(format!(
            "{MAIN_FILE}: [api] enabled and listen apply at start only (the socket is bound once): restart hookrelay to \
             change them (keys and secret_overlap do reload)"
        ));
    }
    if old.telemetry != new.telemetry {
        out.push(format!(
            "{MAIN_FILE}: [telemetry] applies at start only (the trace exporter is built once): restart hookrelay to change it"
        ));
    }
    if old.broker_kind != new.broker_kind {
        out.push(format!(
            "{MAIN_FILE}: which broker runs ([broker] present or not) and [embedded] apply at start only: restart hookrelay \
             to change them"
        ));
    }
    for r in &new.routes {
        if let Some(o) = old.route(&r.name)
            && o.ordered != r.ordered
        {
            let place = match &r.origin {
                Origin::File { file } => file.clone(),
                Origin::Api { subscription } => format!("subscription {subscription}"),
            };
            out.push(format!(
                "{place}: route `{}` changes `ordered` from {} to {}, which the broker cannot apply to queue {} \
                 in place (x-single-active-consumer). Nothing was changed. To switch: remove the route and reload, \
                 let its queue drain, delete the queue, then add the route back — or add it under a new name",
                r.name,
                o.ordered,
                r.ordered,
                r.queue()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load_with};

    const MAIN: &str = "version = 1\n[security]\nallow_http = true\nallow_private_networks = true\n";

    /// A config of `routes` (name, TOML without `[signing]`), loaded as a reload would.
    fn config(main: &str, routes: &[(&str, &str)]) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MAIN_FILE), main).unwrap();
        std::fs::create_dir(dir.path().join("routes")).unwrap();
        for (name, body) in routes {
            let text = format!("{body}\n[signing]\nsecret_env = \"HOOKRELAY_DIFF_TEST_ABSENT\"\n");
            std::fs::write(dir.path().join(format!("routes/{name}.toml")), text).unwrap();
        }
        // One data directory for both sides, as the running process has (never created here).
        let opts = LoadOptions { data_dir: Some("/nonexistent/hookrelay-diff-test".into()), ..LoadOptions::checking() };
        load_with(dir.path(), opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn route(events: &str, extra: &str) -> String {
        format!("events = [{events}]\nurl = \"http://127.0.0.1:1/\"\n{extra}")
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let routes = [("a", route("\"order.*\"", "")), ("b", route("\"user.created\"", "concurrency = 4"))];
        let routes: Vec<(&str, &str)> = routes.iter().map(|(n, b)| (*n, b.as_str())).collect();
        let diff = ConfigDiff::between(&config(MAIN, &routes), &config(MAIN, &routes));
        assert_eq!(diff, ConfigDiff::default());
        assert!(!diff.declares("a") && diff.unbinds().next().is_none());
    }

    #[test]
    fn routes_are_added_removed_and_changed_and_only_topology_goes_to_the_broker() {
        let old = config(
            MAIN,
            &[
                ("gone", &route("\"a.x\", \"a.y\"", "")),
                ("kept", &route("\"k\"", "")),
                ("moved", &route("\"m.one\", \"m.two\"", "")),
                ("retimed", &route("\"r\"", "[retry]\nbackoff = [\"5s\"]")),
                ("retried", &route("\"t\"", "[retry]\nmax_attempts = 3")),
                ("wider", &route("\"w\"", "concurrency = 2")),
            ],
        );
        let new = config(
            MAIN,
            &[
                ("kept", &route("\"k\"", "")),
                ("moved", &route("\"m.two\", \"m.three\"", "")),
                ("new", &route("\"n\"", "")),
                ("retimed", &route("\"r\"", "[retry]\nbackoff = [\"5s\", \"1m\"]")),
                ("retried", &route("\"t\"", "[retry]\nmax_attempts = 5")),
                ("wider", &route("\"w\"", "concurrency = 8")),
            ],
        );
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.added, set(&["new"]));
        assert_eq!(diff.removed, BTreeMap::from([("gone".into(), vec!["a.x".into(), "a.y".into()])]));
        assert_eq!(diff.changed, set(&["moved", "retimed", "retried", "wider"]));
        assert_eq!(diff.redeclare, set(&["moved", "retimed"]), "patterns or wait tiers changed");
        assert_eq!(diff.restart, set(&["wider"]));
        assert_eq!(diff.unbind, BTreeMap::from([("moved".into(), vec!["m.one".into()])]));
        let declared: Vec<&str> = new.routes.iter().map(|r| r.name.as_str()).filter(|n| diff.declares(n)).collect();
        assert_eq!(declared, ["moved", "new", "retimed", "wider"], "max_attempts alone costs no round trip");
        let unbinds: Vec<(&str, usize)> = diff.unbinds().map(|(r, p)| (r.as_str(), p.len())).collect();
        assert_eq!(unbinds, [("moved", 1), ("gone", 2)]);
        assert!(!diff.new_client && diff.refusals.is_empty());
    }

    #[test]
    fn a_new_delivery_shape_restarts_the_worker() {
        let keyed = |key: &str| route("\"k\"", &format!("ordered = true\norder_key = \"{key}\""));
        let batched = |n: usize| route("\"b\"", &format!("[batch]\nmax_events = {n}"));
        let old = config(MAIN, &[("k", &keyed("subject")), ("b", &batched(10)), ("u", &route("\"u\"", ""))]);
        let new = config(MAIN, &[("k", &keyed("data.id")), ("b", &batched(20)), ("u", &batched(5))]);
        assert_eq!(ConfigDiff::between(&old, &new).restart, set(&["b", "k", "u"]));
    }

    #[test]
    fn a_new_security_policy_needs_a_new_client() {
        let routes = [("a", "events = [\"a\"]\nurl = \"http://example.com/\"")];
        let limits = format!("{MAIN}[limits]\nmax_event_bytes = 1000\n");
        assert!(!ConfigDiff::between(&config(MAIN, &routes), &config(&limits, &routes)).new_client);
        let http_only = "version = 1\n[security]\nallow_http = true\n";
        assert!(ConfigDiff::between(&config(http_only, &routes), &config(MAIN, &routes)).new_client);
    }

    #[test]
    fn what_cannot_change_in_place_is_refused_with_its_place() {
        let old = config(MAIN, &[("a", &route("\"a\"", "")), ("b", &route("\"b\"", ""))]);
        let new = config(
            &format!("{MAIN}[store]\nurl = \"sqlite://other.db\"\n"),
            &[("a", &route("\"a\"", "ordered = true")), ("b", &route("\"b\"", ""))],
        );
        let refusals = ConfigDiff::between(&old, &new).refusals;
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert!(refusals[0].starts_with("hookrelay.toml: [store] applies at start only"), "{refusals:?}");
        assert!(
            refusals[1].starts_with("routes/a.toml: route `a` changes `ordered` from false to true")
                && refusals[1].contains("queue hookrelay.route.a"),
            "{refusals:?}"
        );
    }
}
