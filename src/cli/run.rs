//! `hookrelay run`: the router and its API, until SIGTERM or SIGINT; SIGHUP reloads.

use super::print_errors;
use anyhow::{Context, Result};
use hookrelay::config::{self, LoadOptions, Snapshot};
use hookrelay::runtime::Runtime;
use hookrelay::telemetry::Telemetry;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Creates the data directory when a state file goes there, says where it is, and warns about
/// state files an earlier version left in the working directory (which the router no longer
/// reads).
fn prepare_data_dir(s: &Snapshot) -> std::io::Result<()> {
    let files = state_files(s);
    s.data_dir.prepare(files.iter().map(PathBuf::as_path))?;
    let data_dir = s.data_dir.path.display().to_string();
    tracing::info!(%data_dir, from = s.data_dir.from.describe(), "data directory {data_dir}");
    for f in files.iter().filter(|f| f.starts_with(&s.data_dir.path)) {
        let old = Path::new(f.file_name().unwrap_or_default());
        if old.exists() && !f.exists() && std::path::absolute(old).ok().as_deref() != Some(f.as_path()) {
            tracing::warn!(
                "{} in the working directory is not used: state files now go in the data directory {data_dir}; \
                 to keep what it holds, stop hookrelay and move it (with its -wal and -shm files) there",
                old.display()
            );
        }
    }
    Ok(())
}

/// The local files the router writes: the SQLite store's and the embedded broker's queue file.
pub(crate) fn state_files(s: &Snapshot) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config::data::sqlite_file(&s.store.url).map(|(f, _)| f).into_iter().collect();
    if let config::BrokerKind::Embedded(e) = &s.broker_kind {
        files.push(e.path.clone());
    }
    files
}

pub(crate) async fn run(
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    watch: bool,
    telemetry: Telemetry,
) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything slow: until a handler is installed, SIGHUP's default action kills.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let snapshot = match config::load_with(&dir, LoadOptions { data_dir, ..LoadOptions::default() }) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            eprintln!("{} error(s) in {}: not starting", e.errors.len(), dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    if let Err(e) = prepare_data_dir(&snapshot) {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let metrics = hookrelay::metrics::install().context("installing the metrics recorder")?;
    hookrelay::metrics::config_loaded(snapshot.version, &snapshot.revision);
    match telemetry.start_traces(&snapshot.telemetry) {
        Ok(true) => tracing::info!("traces are exported over OTLP"),
        Ok(false) => {}
        Err(e) => {
            eprintln!("error: {}: [telemetry]: {e}", config::MAIN_FILE);
            return Ok(ExitCode::FAILURE);
        }
    }
    let store = match hookrelay::store::open(&snapshot.store.url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: [store] url {:?}: {e}", config::MAIN_FILE, snapshot.store.url);
            return Ok(ExitCode::FAILURE);
        }
    };
    let sealer = match hookrelay::store::SecretBox::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let token_key = match hookrelay::tokens::TokenKey::from_env() {
        Ok(k) => k.map(std::sync::Arc::new),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let subscriptions = hookrelay::subscriptions::Subscriptions::new(store.clone(), sealer);
    if let Err(e) = subscriptions.check_startup().await {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let api_routes = subscriptions.compile_all(&snapshot).await.context("reading subscriptions from the store")?;
    let snapshot = match snapshot.with_api_routes(&api_routes) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let api_settings = snapshot.api.clone();
    let listener = if api_settings.enabled {
        match tokio::net::TcpListener::bind(&api_settings.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "error: {}: [api] listen = {:?}: {e} (another process holds the port? choose another, or \"127.0.0.1:0\" for any free one)",
                    config::MAIN_FILE,
                    api_settings.listen
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    let log_stop = CancellationToken::new();
    let (log, writer) = hookrelay::store::log::AttemptLog::start(store.clone(), log_stop.clone());
    tokio::spawn(hookrelay::store::log::prune(store.clone(), snapshot.store.retention.0, log_stop.clone()));
    let router = Runtime::new(snapshot, Some((store.clone(), log)));
    let shutdown = CancellationToken::new();
    subscriptions.start(router.clone(), std::time::Duration::from_secs(2), shutdown.clone());
    let api = listener.map(|listener| {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, "api listening on http://{addr}");
        let state = hookrelay::api::ApiState {
            router: router.clone(),
            store: store.clone(),
            subscriptions: subscriptions.clone(),
            config_dir: dir.clone(),
            metrics: Some(std::sync::Arc::new(move || metrics.render())),
            session_key: token_key
                .clone()
                .unwrap_or_else(|| std::sync::Arc::new(hookrelay::tokens::TokenKey::random())),
            token_key: token_key.clone(),
        };
        let pages = hookrelay::ui::router(state.clone());
        tokio::spawn(hookrelay::api::serve(listener, state, pages, shutdown.clone()))
    });
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        stop.cancel();
    });
    let (r, d, stop) = (router.clone(), dir.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup.recv() => {
                    let actor = hookrelay::runtime::reload::ROUTER_ACTOR;
                    // A trail that cannot be written is logged by reload_audited.
                    let _ = hookrelay::runtime::reload::reload_audited(&r, &d, "SIGHUP", actor).await;
                }
            }
        }
    });
    if watch {
        let every = std::time::Duration::from_millis(500);
        tokio::spawn(hookrelay::runtime::reload::watch(router.clone(), dir.clone(), every, shutdown.clone()));
    }
    router.run(shutdown).await;
    if let Some(api) = api {
        let _ = api.await;
    }
    // The last attempts reach the delivery log, and the last spans the collector, before exit.
    log_stop.cancel();
    let _ = writer.await;
    telemetry.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
