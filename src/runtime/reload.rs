//! Reloads: from disk (SIGHUP, `--watch` file changes, `POST /v1/config/reload`) and of the
//! API-managed routes (subscriptions). The new set is loaded and compiled off the async runtime;
//! a set that does not load is rejected and the old one keeps running. One that loads is
//! compared with the live one once ([`ConfigDiff`]); the diff's refusals reject it, else the
//! session applies it (its topology declared before anything running is touched, then swapped
//! in atomically), and the outcome is logged, counted and kept for the API.

use super::Runtime;
use super::diff::ConfigDiff;
use super::session::Change;
use crate::config::{self, Origin, Route, Snapshot};
use crate::metrics::{self, ReloadResult};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The outcome of a reload, as the log, the API and the metrics report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new config is live.
    Applied {
        /// `version` of the new config.
        version: u64,
        /// Its revision.
        revision: String,
        /// Routes that started.
        added: Vec<String>,
        /// Routes that stopped (after their in-flight deliveries).
        removed: Vec<String>,
        /// Routes whose files changed; their new config applies to deliveries that start now.
        changed: Vec<String>,
    },
    /// The old config keeps running.
    Rejected {
        /// Every reason, `file:line:col: message` where there is a place.
        errors: Vec<String>,
    },
}

/// Reload counters and the last outcome, for the log, the API and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads rejected since start.
    pub rejected: u64,
    /// The last outcome.
    pub last: Option<ReloadOutcome>,
    /// The errors of the last rejected reload, kept until one is applied.
    pub last_error: Option<Vec<String>>,
}

impl Runtime {
    /// Reload counters and the last outcome.
    pub fn reload_status(&self) -> ReloadStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a config that failed to load: the old one keeps running.
    pub fn reject(&self, errors: Vec<String>) -> ReloadOutcome {
        let outcome = ReloadOutcome::Rejected { errors };
        self.record(&outcome);
        outcome
    }

    fn record(&self, outcome: &ReloadOutcome) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            ReloadOutcome::Applied { version, revision, added, removed, changed } => {
                st.applied += 1;
                st.last_error = None;
                info!(version, %revision, ?added, ?removed, ?changed, "config reloaded");
                metrics::reload(ReloadResult::Applied);
                metrics::config_loaded(*version, revision);
                for name in removed {
                    metrics::route_removed(name);
                    self.shared.gates().forget(name);
                }
            }
            ReloadOutcome::Rejected { errors } => {
                metrics::reload(ReloadResult::Rejected);
                st.rejected += 1;
                st.last_error = Some(errors.clone());
                for e in errors {
                    error!("reload rejected: {e}");
                }
                let old = self.snapshot();
                warn!(version = old.version, revision = %old.revision, "the previous config keeps running");
            }
        }
        st.last = Some(outcome.clone());
    }

    /// Applies a new config loaded from disk, with the running API-managed routes merged in.
    pub async fn reload(&self, new: Snapshot) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let api = api_routes(&self.snapshot());
        let outcome = match new.with_api_routes(&api) {
            Ok(merged) => self.apply(merged).await,
            Err(errors) => ReloadOutcome::Rejected { errors },
        };
        self.record(&outcome);
        outcome
    }

    /// Replaces the API-managed routes (subscriptions) through the same machinery as a reload.
    /// The file config is unchanged; the outcome is logged as `subscriptions applied`.
    pub async fn set_api_routes(&self, api: Vec<Arc<Route>>) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = match self.snapshot().with_api_routes(&api) {
            Ok(merged) => self.apply(merged).await,
            Err(errors) => ReloadOutcome::Rejected { errors },
        };
        match &outcome {
            ReloadOutcome::Applied { added, removed, changed, .. } => {
                if !(added.is_empty() && removed.is_empty() && changed.is_empty()) {
                    info!(?added, ?removed, ?changed, "subscriptions applied");
                }
                for name in removed {
                    metrics::route_removed(name);
                    self.shared.gates().forget(name);
                }
            }
            ReloadOutcome::Rejected { errors } => {
                for e in errors {
                    error!("subscriptions not applied: {e}");
                }
            }
        }
        outcome
    }

    /// Compares `new` with the live config once, and applies the difference: through the
    /// session when one is connected (topology first), else by swapping it in (the next session
    /// declares it).
    async fn apply(&self, new: Snapshot) -> ReloadOutcome {
        let diff = ConfigDiff::between(&self.snapshot(), &new);
        if !diff.refusals.is_empty() {
            return ReloadOutcome::Rejected { errors: diff.refusals };
        }
        let outcome = ReloadOutcome::Applied {
            version: new.version,
            revision: new.revision.clone(),
            added: diff.added.iter().cloned().collect(),
            removed: diff.removed.keys().cloned().collect(),
            changed: diff.changed.iter().cloned().collect(),
        };
        let (new, new_client) = (Arc::new(new), diff.new_client);
        let link = self.link.load_full();
        let applied = match link {
            Some(link) => {
                let (reply, answer) = oneshot::channel();
                let change = Change { snapshot: new.clone(), diff, reply };
                match link.changes.send(change).await {
                    Ok(()) => answer.await.ok(),
                    Err(_) => None,
                }
            }
            None => None,
        };
        match applied {
            Some(Ok(())) => outcome,
            Some(Err(errors)) => ReloadOutcome::Rejected { errors },
            // Without a live session the topology is declared when the next one starts.
            None => {
                self.shared.swap(new, new_client);
                outcome
            }
        }
    }
}

/// The API-managed routes of a snapshot.
pub(super) fn api_routes(s: &Snapshot) -> Vec<Arc<Route>> {
    s.routes.iter().filter(|r| matches!(r.origin, Origin::Api { .. })).cloned().collect()
}

/// [`reload_from_disk`], recorded in the audit trail (when the router has a store) as
/// `config.reload` by `actor`, with the trigger and the outcome: every reload, whoever asked
/// for it (the API, SIGHUP, `--watch`). The error is the store's, when the entry could not be
/// written (the reload itself happened or not, as the outcome says).
pub async fn reload_audited(
    router: &Runtime,
    dir: &Path,
    trigger: &str,
    actor: &str,
) -> (ReloadOutcome, Result<(), crate::store::StoreError>) {
    let before = router.snapshot();
    let outcome = reload_from_disk(router, dir, trigger).await;
    let Some(store) = &router.store else { return (outcome, Ok(())) };
    let details = match &outcome {
        ReloadOutcome::Applied { version, revision, added, removed, changed } => serde_json::json!({
            "result": "applied", "trigger": trigger, "from": {"version": before.version, "revision": before.revision},
            "version": version, "revision": revision, "added": added, "removed": removed, "changed": changed,
        }),
        ReloadOutcome::Rejected { errors } => serde_json::json!({
            // The count only: the errors are in the answer and the log, and the trail keeps no
            // file contents.
            "result": "rejected", "trigger": trigger, "version": before.version, "revision": before.revision,
            "errors": errors.len(),
        }),
    };
    let entry =
        crate::store::AuditEntry::new(crate::broker::now_ms() as i64, actor, "config.reload", "config", details);
    let stored = store.append_audit(&entry).await.map(|_| ());
    if let Err(e) = &stored {
        warn!(error = %e, trigger, "the reload could not be recorded in the audit trail");
    }
    (outcome, stored)
}

/// The actor of reloads the router makes itself (SIGHUP, `--watch`) in the audit trail.
pub const ROUTER_ACTOR: &str = "router";

/// Loads `dir` and applies it. `trigger` says why, for the log.
pub async fn reload_from_disk(router: &Runtime, dir: &Path, trigger: &str) -> ReloadOutcome {
    info!(trigger, dir = %dir.display(), "reloading config");
    let d = dir.to_path_buf();
    let opts = config::LoadOptions::reloading(&router.snapshot());
    match tokio::task::spawn_blocking(move || config::load_with(&d, opts)).await {
        Ok(Ok(snapshot)) => {
            for w in &snapshot.warnings {
                warn!("{w}");
            }
            router.reload(snapshot).await
        }
        Ok(Err(failed)) => {
            for w in &failed.warnings {
                warn!("{w}");
            }
            router.reject(failed.errors.iter().map(ToString::to_string).collect())
        }
        Err(e) => router.reject(vec![format!("loading the config failed: {e}")]),
    }
}

/// A cheap fingerprint of the config files: paths, sizes and modification times.
pub fn fingerprint(dir: &Path) -> u64 {
    let mut files = Vec::new();
    collect(&dir.join(config::MAIN_FILE), &mut files);
    for sub in ["routes", "schemas", "plugins"] {
        collect(&dir.join(sub), &mut files);
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

fn collect(path: &Path, out: &mut Vec<(PathBuf, u64, u128)>) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                collect(&entry.path(), out);
            }
        }
    } else {
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        out.push((path.to_path_buf(), meta.len(), mtime));
    }
}

/// `--watch`: polls the files every `every` and reloads once they changed and then stayed the
/// same for one more poll (so an editor's save, or a `git pull`, reloads once).
pub async fn watch(router: Arc<Runtime>, dir: PathBuf, every: Duration, stop: CancellationToken) {
    let mut applied = fingerprint(&dir);
    let mut pending: Option<u64> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = fingerprint(&dir);
        match pending {
            Some(p) if p == now => {
                pending = None;
                applied = now;
                // A trail that cannot be written is logged by reload_audited.
                let _ = reload_audited(&router, &dir, "files changed", ROUTER_ACTOR).await;
            }
            _ if now != applied => pending = Some(now),
            _ => pending = None,
        }
    }
}
