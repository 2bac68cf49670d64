//! Reloading the config from disk: on SIGHUP, on `--watch` file changes, and (later) on
//! `POST /v1/config/reload`. The new set is loaded and compiled off the async runtime; a set
//! that does not load is rejected and the old one keeps running; one that loads goes to
//! [`Router::reload`], which declares its topology before swapping it in.

use crate::config;
use crate::router::{ReloadOutcome, Router};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Loads `dir` and applies it. `trigger` says why, for the log.
pub async fn reload_from_disk(router: &Router, dir: &Path, trigger: &str) -> ReloadOutcome {
    info!(trigger, dir = %dir.display(), "reloading config");
    let d = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || config::load(&d)).await {
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
pub async fn watch(router: Arc<Router>, dir: PathBuf, every: Duration, stop: CancellationToken) {
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
                reload_from_disk(&router, &dir, "files changed").await;
            }
            _ if now != applied => pending = Some(now),
            _ => pending = None,
        }
    }
}
