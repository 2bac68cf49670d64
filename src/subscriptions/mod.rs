//! Subscriptions: routes managed through the admin API (seeds 000, 003, 004), beside the file
//! routes. The store keeps each one's definition ([`SubscriptionSpec`], JSON without secrets)
//! and its signing secrets sealed with `HOOKRELAY_SECRET_KEY`; this module compiles them into
//! [`Route`]s with the same parts a file route uses (topic patterns, the SSRF policy, sandboxed
//! Rhai, redaction paths, Standard Webhooks signing) and hands them to
//! [`Runtime::set_api_routes`], the machinery a reload uses. So a subscription becomes live
//! without a restart, and stops after its in-flight deliveries when deleted or disabled.
//!
//! It also keeps them live: every replica applies the changes other replicas make (several
//! replicas share PostgreSQL) as soon as the store announces them (`LISTEN`/`NOTIFY`), with a
//! poll of the store's subscriptions generation as the fallback; it re-applies when a
//! rotated-out secret expires, and disables a subscription whose receiver answered `410 Gone`
//! or whose endpoint has failed continuously for its circuit breaker's `disable_after`.
//! A change made through this process's API is live when the call that makes it returns.
//!
//! Secrets are generated here, returned once (at creation and rotation), and never logged.

mod spec;

pub use spec::{
    BatchSpec, CircuitBreakerSpec, FieldError, FilterSpec, RateLimitSpec, SubscriptionDefinition, SubscriptionError,
    SubscriptionSpec, compile,
};

use crate::config::{Origin, Route, Snapshot};
use crate::delivery::http::sign::SigningKey;
use crate::delivery::worker::{Disable, DisableReason};
use crate::runtime::{ReloadOutcome, Runtime};
use crate::store::{AuditEntry, SealedSecret, SecretBox, Store, StoreError, SubscriptionRecord};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The live subscriptions of this process.
pub struct Subscriptions {
    store: Arc<dyn Store>,
    sealer: Option<SecretBox>,
    router: OnceLock<Arc<Runtime>>,
    /// Subscription id → why it is not live (compile or secret errors).
    problems: Mutex<BTreeMap<String, String>>,
    /// Serialises compile-and-apply so that two changes cannot apply out of order.
    applying: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    crate::broker::now_ms() as i64
}

impl Subscriptions {
    /// Subscriptions kept in `store`, their secrets sealed with `sealer` (from
    /// `HOOKRELAY_SECRET_KEY`; without one, subscriptions cannot be created).
    pub fn new(store: Arc<dyn Store>, sealer: Option<SecretBox>) -> Arc<Self> {
        Arc::new(Self {
            store,
            sealer,
            router: OnceLock::new(),
            problems: Mutex::new(BTreeMap::new()),
            applying: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks at start: with subscriptions stored, a key must be set and open every secret.
    pub async fn check_startup(&self) -> Result<usize, String> {
        let all = self.store.subscriptions().await.map_err(|e| e.to_string())?;
        if all.is_empty() {
            return Ok(0);
        }
        let Some(sealer) = &self.sealer else {
            return Err(format!(
                "the store holds {} subscription(s) whose secrets are sealed, but {} is not set: \
                 start with the key they were sealed with",
                all.len(),
                crate::store::sealed::KEY_ENV
            ));
        };
        for s in &all {
            for sealed in &s.secrets {
                sealer.open(&sealed.sealed, &s.id).map_err(|e| format!("subscription {} ({}): {e}", s.id, s.name))?;
            }
        }
        Ok(all.len())
    }

    /// Compiles every enabled subscription against `snapshot` (its policy, engine and
    /// limits). A subscription that does not compile is left out and its problem kept.
    pub async fn compile_all(&self, snapshot: &Snapshot) -> Result<Vec<Arc<Route>>, StoreError> {
        let all = self.store.subscriptions().await?;
        let mut routes = Vec::new();
        let mut problems = BTreeMap::new();
        for rec in all.iter().filter(|r| r.enabled) {
            match self.compile_record(rec, snapshot) {
                Ok(route) => routes.push(Arc::new(route)),
                Err(e) => {
                    warn!(subscription = %rec.id, name = %rec.name, error = %e, "subscription not started");
                    problems.insert(rec.id.clone(), e.to_string());
                }
            }
        }
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        Ok(routes)
    }

    /// Why a subscription is not live, if it is not.
    pub fn problem(&self, id: &str) -> Option<String> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Starts keeping the router's API routes in step with the store: on other replicas'
    /// changes as soon as the store announces them (PostgreSQL), and within `poll` in any case
    /// (local changes apply at once, in the call that makes them); on secret expiry; and on
    /// the router's requests to disable one (`410 Gone`, failing for `disable_after`).
    pub fn start(self: &Arc<Self>, router: Arc<Runtime>, poll: Duration, stop: CancellationToken) {
        let gone = router.take_disables();
        let _ = self.router.set(router);
        let this = self.clone();
        tokio::spawn(async move { this.keep_live(gone, poll, stop).await });
    }

    async fn keep_live(
        self: Arc<Self>,
        mut gone: Option<tokio::sync::mpsc::UnboundedReceiver<Disable>>,
        poll: Duration,
        stop: CancellationToken,
    ) {
        // Listening starts before the first read of the generation, so that no change falls in
        // between.
        let mut changes = match self.store.subscription_changes().await {
            Ok(feed) => feed,
            Err(e) => {
                warn!(error = %e, "cannot listen for subscription changes in the store; polling for them only");
                None
            }
        };
        let mut seen = self.store.subscriptions_generation().await.ok();
        // The routes the router started with were read before listening began: a change another
        // replica made in between moved the generation before `seen` read it, and would otherwise
        // never be applied here. One apply now covers it; every later change wakes the loop.
        if let Err(e) = self.apply().await {
            warn!(error = %e, "applying subscriptions failed");
        }
        loop {
            let expiry = self.next_expiry().await;
            let wait = expiry.map_or(poll, |at| Duration::from_millis((at - now_ms()).max(0) as u64).min(poll));
            let mut apply = false;
            tokio::select! {
                _ = stop.cancelled() => return,
                g = async { gone.as_mut()?.recv().await }, if gone.is_some() => {
                    if let Some(g) = g {
                        self.disable(&g).await;
                        apply = true;
                    } else {
                        gone = None;
                    }
                }
                woke = async { changes.as_mut()?.recv().await }, if changes.is_some() => {
                    if woke.is_none() {
                        warn!("the store's change feed ended; polling for subscription changes only");
                        changes = None;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    apply = expiry.is_some_and(|at| at <= now_ms());
                }
            }
            match self.store.subscriptions_generation().await {
                Ok(g) if Some(g) != seen => {
                    seen = Some(g);
                    apply = true;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reading the subscriptions generation failed"),
            }
            if apply && let Err(e) = self.apply().await {
                warn!(error = %e, "applying subscriptions failed");
            }
        }
    }

    async fn next_expiry(&self) -> Option<i64> {
        let all = self.store.subscriptions().await.ok()?;
        all.iter().flat_map(|s| s.secrets.iter().filter_map(|k| k.expires_at_ms)).filter(|&t| t > now_ms() - 1000).min()
    }

    async fn disable(&self, g: &Disable) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let (reason, said) = match &g.why {
            DisableReason::Gone { event_id } => (
                format!("disabled: the receiver answered 410 Gone to event {event_id} at {now}"),
                "receiver answered 410 Gone: subscription disabled",
            ),
            DisableReason::Failing { since, after } => (
                format!(
                    "disabled: the endpoint has failed continuously since {} (disable_after {}), at {now}",
                    humantime::format_rfc3339_seconds(*since),
                    humantime::format_duration(*after)
                ),
                "endpoint failing for disable_after: subscription disabled",
            ),
        };
        let audit = AuditEntry::new(
            now_ms(),
            "router",
            "subscription.disable",
            &g.subscription,
            serde_json::json!({"reason": reason, "route": g.route}),
        );
        match self.store.set_subscription_enabled(&g.subscription, false, Some(&reason), now_ms(), Some(&audit)).await {
            Ok(_) => warn!(subscription = %g.subscription, route = %g.route, %reason, "{said}"),
            Err(e) => warn!(subscription = %g.subscription, error = %e, %reason, "could not disable a subscription"),
        }
    }

    /// Compiles every subscription and makes the result live.
    pub async fn apply(&self) -> Result<ReloadOutcome, SubscriptionError> {
        let Some(router) = self.router.get() else { return Ok(ReloadOutcome::Rejected { errors: vec![] }) };
        let _one = self.applying.lock().await;
        let routes = self.compile_all(&router.snapshot()).await?;
        Ok(router.set_api_routes(routes).await)
    }

    /// Applies after a local change, and reports whether the router took it.
    async fn applied(&self) -> Result<(), SubscriptionError> {
        match self.apply().await? {
            ReloadOutcome::Rejected { errors } if !errors.is_empty() => Err(SubscriptionError::NotApplied(errors)),
            _ => Ok(()),
        }
    }

    fn sealer(&self) -> Result<&SecretBox, SubscriptionError> {
        self.sealer.as_ref().ok_or_else(|| {
            SubscriptionError::Secrets(format!(
                "subscriptions need {} (32 random bytes, base64) to seal their secrets; \
                 `hookrelay secret-key` makes one",
                crate::store::sealed::KEY_ENV
            ))
        })
    }

    /// Creates a subscription; returns it and its secret (shown this once).
    pub async fn create(
        &self,
        spec: SubscriptionSpec,
        actor: &str,
    ) -> Result<(SubscriptionRecord, String), SubscriptionError> {
        let sealer = self.sealer()?;
        let snapshot = self.router.get().map(|r| r.snapshot());
        let id = format!("sub_{}", uuid::Uuid::new_v4().simple());
        let secret = SigningKey::generate();
        if let Some(s) = &snapshot {
            compile(&id, &spec, std::slice::from_ref(&secret), s).map_err(SubscriptionError::Invalid)?;
            if s.routes.iter().any(|r| r.name == spec.name && matches!(r.origin, Origin::File { .. })) {
                return Err(SubscriptionError::Invalid(vec![FieldError {
                    field: "name".into(),
                    message: format!("a file route is named {:?}: route names must be unique", spec.name),
                }]));
            }
        }
        let sealed = sealer.seal(secret.as_bytes(), &id).map_err(|e| SubscriptionError::Secrets(e.to_string()))?;
        let now = now_ms();
        let rec = SubscriptionRecord {
            id: id.clone(),
            name: spec.name.clone(),
            spec: serde_json::to_value(&spec).unwrap_or_default(),
            secrets: vec![SealedSecret { sealed, expires_at_ms: None }],
            enabled: spec.enabled.unwrap_or(true),
            disabled_reason: (spec.enabled == Some(false)).then(|| format!("created disabled by {actor}")),
            tenant: spec.tenant.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            version: 1,
        };
        let audit = AuditEntry::new(
            now,
            actor,
            "subscription.create",
            &id,
            serde_json::json!({"spec": rec.spec, "tenant": rec.tenant}),
        );
        let stored = self.store.create_subscription(&rec, Some(&audit)).await?;
        info!(subscription = %id, name = %stored.name, actor, "subscription created");
        self.applied().await?;
        Ok((stored, secret))
    }

    /// Replaces a subscription's definition (and, when given, its enabled state). The name and
    /// `ordered` cannot change.
    pub async fn update(
        &self,
        id: &str,
        mut spec: SubscriptionSpec,
        expected_version: Option<i64>,
        actor: &str,
    ) -> Result<SubscriptionRecord, SubscriptionError> {
        let enabled = spec.enabled;
        let current = self.store.subscription(id).await?.ok_or_else(|| SubscriptionError::NotFound(id.into()))?;
        if spec.tenant.is_none() {
            spec.tenant = current.tenant.clone();
        }
        let old: Option<SubscriptionSpec> = serde_json::from_value(current.spec.clone()).ok();
        let mut problems = Vec::new();
        if spec.name != current.name {
            problems.push(FieldError {
                field: "name".into(),
                message: format!("the name cannot change (it names the route's queue); it is {:?}", current.name),
            });
        }
        if let Some(old) = &old
            && old.ordered != spec.ordered
        {
            problems.push(FieldError {
                field: "ordered".into(),
                message: "`ordered` cannot change on an existing subscription (the broker cannot change a queue's \
                          single-active-consumer flag in place): create a new subscription instead"
                    .into(),
            });
        }
        if !problems.is_empty() {
            return Err(SubscriptionError::Invalid(problems));
        }
        if let Some(snapshot) = self.router.get().map(|r| r.snapshot()) {
            let secrets = self.open_secrets(&current)?;
            compile(id, &spec, &secrets, &snapshot).map_err(SubscriptionError::Invalid)?;
        }
        let mut next = current.clone();
        next.spec = serde_json::to_value(&spec).unwrap_or_default();
        next.tenant = spec.tenant.clone();
        if let Some(e) = enabled {
            next.enabled = e;
            if e {
                next.disabled_reason = None;
            } else if next.disabled_reason.is_none() {
                next.disabled_reason = Some(format!("disabled through the API by {actor}"));
            }
        }
        let now = now_ms();
        let audit = AuditEntry::new(
            now,
            actor,
            "subscription.update",
            id,
            serde_json::json!({"spec": next.spec, "enabled": next.enabled, "tenant": next.tenant}),
        );
        let stored = self
            .store
            .update_subscription(&next, expected_version.unwrap_or(current.version), now, Some(&audit))
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(id.into()))?;
        info!(subscription = %id, actor, "subscription updated");
        self.applied().await?;
        Ok(stored)
    }

    /// Deletes a subscription; its route stops after its in-flight deliveries.
    pub async fn delete(&self, id: &str, actor: &str) -> Result<(), SubscriptionError> {
        let audit = AuditEntry::new(now_ms(), actor, "subscription.delete", id, serde_json::json!({}));
        if !self.store.delete_subscription(id, Some(&audit)).await? {
            return Err(SubscriptionError::NotFound(id.into()));
        }
        info!(subscription = %id, actor, "subscription deleted");
        self.applied().await
    }

    /// A new secret; the old one stays valid for `overlap` (both signatures are sent meanwhile).
    /// Returns the subscription and the new secret (shown this once).
    pub async fn rotate(
        &self,
        id: &str,
        overlap: Duration,
        actor: &str,
    ) -> Result<(SubscriptionRecord, String), SubscriptionError> {
        let sealer = self.sealer()?;
        let current = self.store.subscription(id).await?.ok_or_else(|| SubscriptionError::NotFound(id.into()))?;
        let now = now_ms();
        let until = now + overlap.as_millis() as i64;
        let secret = SigningKey::generate();
        let sealed = sealer.seal(secret.as_bytes(), id).map_err(|e| SubscriptionError::Secrets(e.to_string()))?;
        let mut next = current.clone();
        // The newest first; the one in use until now expires after the overlap; older ones keep
        // their (earlier) expiry, and expired ones are dropped.
        next.secrets = std::iter::once(SealedSecret { sealed, expires_at_ms: None })
            .chain(current.secrets.iter().map(|s| SealedSecret {
                sealed: s.sealed.clone(),
                expires_at_ms: Some(s.expires_at_ms.map_or(until, |e| e.min(until))),
            }))
            .filter(|s| s.expires_at_ms.is_none_or(|e| e > now))
            .collect();
        let audit = AuditEntry::new(
            now,
            actor,
            "subscription.rotate_secret",
            id,
            serde_json::json!({"overlap_seconds": overlap.as_secs(), "previous_valid_until_ms": until}),
        );
        let stored = self
            .store
            .update_subscription(&next, current.version, now, Some(&audit))
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(id.into()))?;
        info!(subscription = %id, actor, overlap = ?overlap, "subscription secret rotated");
        self.applied().await?;
        Ok((stored, secret))
    }

    fn open_secrets(&self, rec: &SubscriptionRecord) -> Result<Vec<String>, SubscriptionError> {
        let sealer = self.sealer()?;
        let now = now_ms();
        rec.secrets
            .iter()
            .filter(|s| s.expires_at_ms.is_none_or(|e| e > now))
            .map(|s| {
                let plain = sealer.open(&s.sealed, &rec.id).map_err(|e| SubscriptionError::Secrets(e.to_string()))?;
                String::from_utf8(plain).map_err(|_| SubscriptionError::Secrets("a sealed secret is not text".into()))
            })
            .collect()
    }

    fn compile_record(&self, rec: &SubscriptionRecord, snapshot: &Snapshot) -> Result<Route, SubscriptionError> {
        let mut spec: SubscriptionSpec = serde_json::from_value(rec.spec.clone()).map_err(|e| {
            SubscriptionError::Invalid(vec![FieldError { field: "spec".into(), message: format!("stored spec: {e}") }])
        })?;
        spec.tenant = rec.tenant.clone();
        let secrets = self.open_secrets(rec)?;
        let mut route = compile(&rec.id, &spec, &secrets, snapshot).map_err(SubscriptionError::Invalid)?;
        route.digest = {
            let mut d = Sha256::new();
            d.update(route.digest.as_bytes());
            for s in rec.secrets.iter().filter(|s| s.expires_at_ms.is_none_or(|e| e > now_ms())) {
                d.update(&s.sealed);
            }
            hex::encode(d.finalize())
        };
        Ok(route)
    }
}
