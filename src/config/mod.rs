//! Loading a config directory into a [`Snapshot`]: everything the per-event path needs,
//! compiled once (schemas, scripts, redaction paths, signing keys, URLs).
//!
//! Layout (contract): `hookrelay.toml`, `routes/<name>.toml`, `schemas/<type>/v<N>.json`,
//! `plugins/<name>.rhai`. Layering: built-in defaults < `hookrelay.toml` < `HOOKRELAY_*`
//! environment variables with `__` for nesting (`HOOKRELAY_BROKER__URL`). Every problem is
//! collected and reported as `file:line:col: message`; a load never stops at the first.

//!
//! The types a part of the process compiles into are defined beside that part (the pipeline's
//! steps and catalogue, the delivery's signer and retry policy, the broker's endpoint); this
//! module reads the files and assembles them. Modules: [`files`] (the serde shapes), [`allow`]
//! (`allow_from` networks),
//! `main_file` (`hookrelay.toml` and the environment), [`data`] (the data directory), [`route`] (the route compiler, shared
//! with API subscriptions), `route_files` (`routes/`), [`schemas`] (`schemas/`), [`error`] and
//! [`locate`] (where a problem is).

pub mod allow;
pub mod data;
pub mod error;
pub mod files;
pub mod locate;
mod main_file;
pub mod route;
mod route_files;
pub mod schemas;

use crate::broker::Endpoint;
use crate::delivery::http::guard::Policy;
use crate::delivery::http::retry::RetryPolicy;
use crate::delivery::http::sign::Signer;
use crate::delivery::policy::{CircuitBreaker, RateLimit};
use crate::pipeline::schema::SchemaRegistry;
use crate::pipeline::script::sandboxed_engine;
use crate::pipeline::{self, Steps};
use error::{ConfigError, ConfigErrors};
use files::{BrokerFile, DeliveryFile, EmbeddedFile, LimitsFile};
use http::{HeaderMap, Uri};
use main_file::toml_error;
use main_file::{broker_kind, check_api, load_ca_file, load_main};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The main config file's name.
pub const MAIN_FILE: &str = "hookrelay.toml";

/// RabbitMQ's default `consumer_timeout`: a delivery unacked for longer gets its channel closed.
/// An ordered route whose retry waits add up to more is warned about; `[broker]
/// consumer_timeout` says when an operator changed it.
pub const RABBITMQ_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A route, compiled.
#[derive(Debug)]
pub struct Route {
    /// Unique name; the queue is `hookrelay.route.<name>`.
    pub name: String,
    /// Event types and topic patterns.
    pub events: Vec<String>,
    /// The target.
    pub url: Uri,
    /// Strict FIFO.
    pub ordered: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Concurrent deliveries (unordered routes), or keys at once (ordered, with an `order_key`).
    pub concurrency: usize,
    /// Ordered routes: FIFO per this key, keys in parallel.
    pub order_key: Option<crate::delivery::policy::OrderKey>,
    /// Its pipeline: tenant check, filter, transform, redaction, body format.
    pub steps: Steps,
    /// Static extra headers (credentials marked sensitive, see [`route::is_credential`]).
    pub headers: HeaderMap,
    /// Keep sent bodies and request headers in the delivery log.
    pub log_payload: bool,
    /// Signing keys and scheme.
    pub signer: Signer,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// `[circuit_breaker]`: stop sending to a failing endpoint for a while.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// `[rate_limit]`: attempts started per second to the endpoint.
    pub rate_limit: Option<RateLimit>,
    /// `[batch]`: many events in one request (unordered routes).
    pub batch: Option<crate::delivery::policy::Batch>,
    /// Hash of the route file and its plugins: tells a reload which routes changed.
    pub digest: String,
    /// Where the route is defined.
    pub origin: Origin,
}

/// Where a route is defined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum Origin {
    /// A file under `routes/`, relative to the config directory.
    File {
        /// `routes/<name>.toml`.
        file: String,
    },
    /// A subscription managed through the admin API.
    Api {
        /// The subscription's id.
        subscription: String,
    },
}

impl Route {
    /// The route's quorum queue.
    pub fn queue(&self) -> String {
        route_queue(&self.name)
    }

    /// The tenant whose events alone the route takes, if it has one.
    pub fn tenant(&self) -> Option<&str> {
        self.steps.tenant.tenant()
    }

    /// The prefetch its consumer takes, given `[broker] prefetch`: at least one message per
    /// slot where deliveries run side by side (unordered routes, an ordered route's lanes).
    pub fn prefetch(&self, configured: u16) -> u16 {
        let slots = match self.batch {
            // Room for two full batches, so that the next gathers while one is being sent.
            Some(b) => self.concurrency.max(2 * b.max_events),
            None => self.concurrency,
        };
        if self.ordered && self.order_key.is_none() {
            configured
        } else {
            configured.max(slots.min(usize::from(u16::MAX)) as u16)
        }
    }

    /// Whether an endpoint policy (circuit breaker, rate limit) is consulted around its
    /// attempts: without one, a delivery takes no lock and waits for nothing.
    pub fn gated(&self) -> bool {
        self.circuit_breaker.is_some() || self.rate_limit.is_some()
    }
}

/// `hookrelay.route.<name>`.
pub fn route_queue(name: &str) -> String {
    format!("hookrelay.route.{name}")
}

/// The broker a config runs on: RabbitMQ when `hookrelay.toml` has a `[broker]` section (even
/// an empty one) or a `HOOKRELAY_BROKER__*` variable is set, else the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerKind {
    /// RabbitMQ at `[broker] url`.
    Rabbitmq,
    /// The embedded, file-backed broker, with the `[embedded]` settings.
    Embedded(EmbeddedFile),
}

/// One loaded, compiled config set, with the API-managed routes merged in. Immutable; a reload
/// or a subscription change builds a new one (cloning is cheap: compiled parts are shared).
#[derive(Clone)]
pub struct Snapshot {
    /// The config directory.
    pub dir: PathBuf,
    /// Where the state files are: `store.url` and an embedded broker's path are already placed
    /// in it.
    pub data_dir: data::DataDir,
    /// `version` from `hookrelay.toml`.
    pub version: u64,
    /// Hash over every file loaded (12 hex digits).
    pub revision: String,
    /// `[broker]`, with its defaults when absent (prefetch, delivery limit and reconnect wait
    /// apply to both brokers).
    pub broker: BrokerFile,
    /// Which broker: RabbitMQ or the embedded one.
    pub broker_kind: BrokerKind,
    /// `[security]`.
    pub security: Policy,
    /// CA certificates from `[security] ca_file`, trusted besides the Mozilla roots.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// `[limits]`.
    pub limits: LimitsFile,
    /// `[scripts]`, as written (shown by `validate`).
    pub scripts: files::ScriptsFile,
    /// The budgets of every script run, from `[scripts]`.
    pub budgets: pipeline::script::Budgets,
    /// Where scripts run: a bounded pool of blocking threads (`[scripts] pool`).
    pub script_pool: pipeline::script::ScriptPool,
    /// `[delivery]`.
    pub delivery: DeliveryFile,
    /// `[store]`.
    pub store: files::StoreFile,
    /// `[api]`.
    pub api: files::ApiFile,
    /// `[telemetry]`.
    pub telemetry: files::TelemetryFile,
    /// `[tenants]`.
    pub tenants: crate::tenant::TenantsFile,
    /// Routes, sorted by name.
    pub routes: Vec<Arc<Route>>,
    /// Compiled schemas.
    pub schemas: SchemaRegistry,
    /// The sandboxed Rhai engine.
    pub engine: Arc<rhai::Engine>,
    /// Problems that do not stop a load (patterns that match no known type).
    pub warnings: Vec<ConfigError>,
    /// Every file loaded, relative path → bytes hashed.
    pub files: Vec<String>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("dir", &self.dir)
            .field("version", &self.version)
            .field("revision", &self.revision)
            .field("routes", &self.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// What every route's pipeline shares.
    pub fn pipeline(&self) -> pipeline::Context<'_> {
        pipeline::Context {
            schemas: &self.schemas,
            engine: &self.engine,
            max_event_bytes: self.limits.max_event_bytes,
            max_body_bytes: self.budgets.max_body_bytes,
            validated: false,
            on_validate: None,
        }
    }

    /// [`pipeline::prepare`] for one of this snapshot's routes, here; when the route runs
    /// scripts, moved to the script pool once they have run for `[scripts] inline_allowance`
    /// (so that a script burning its budget never holds an async worker for longer), or there
    /// from the start when it is zero. `validated`: the event's `data` was validated under this
    /// config by this process already (the ingest API's mark); `on_validate` is called when it
    /// is validated here.
    pub async fn prepare(
        self: &Arc<Self>,
        route: &Arc<Route>,
        raw: bytes::Bytes,
        validated: bool,
        on_validate: fn(),
    ) -> Result<pipeline::Prepared, pipeline::Rejection> {
        let run = move |snap: &Snapshot, route: &Route| {
            let mut cx = snap.pipeline();
            cx.validated = validated;
            cx.on_validate = Some(&on_validate);
            pipeline::prepare(&cx, &route.steps, &raw)
        };
        if !route.steps.runs_scripts() {
            return run(self, route);
        }
        // Scripts start here, on the async worker, for at most the allowance; past it the
        // work moves to the pool, and after INLINE_MISSES such runs in a row (not one: a
        // preempted thread can miss the allowance too) the route's scripts run there until the
        // next reload.
        let allowance = self.budgets.inline_allowance;
        if !allowance.is_zero() && route.steps.scripts_inline() {
            if let Some(out) = pipeline::script::budget::run_inline(allowance, || run(self, route)) {
                route.steps.scripts_ran_inline();
                return out;
            }
            if route.steps.scripts_missed_inline() {
                tracing::info!(
                    route = %route.name,
                    allowance = ?allowance,
                    runs = pipeline::script::budget::INLINE_MISSES,
                    "scripts ran past their allowance on an async worker: the route's scripts run on the script pool until the next reload"
                );
            }
        }
        let (snap, route) = (self.clone(), route.clone());
        self.script_pool.run(move || run(&snap, &route)).await
    }

    /// The broker this config runs on.
    pub fn broker_endpoint(&self) -> Endpoint<'_> {
        broker_endpoint(&self.broker, &self.broker_kind)
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// This snapshot's file routes with `api` (subscriptions) in place of its API routes. A name
    /// used by a file route and a subscription is refused: route names are queue names.
    pub fn with_api_routes(&self, api: &[Arc<Route>]) -> Result<Snapshot, Vec<String>> {
        let mut routes: Vec<Arc<Route>> =
            self.routes.iter().filter(|r| matches!(r.origin, Origin::File { .. })).cloned().collect();
        let mut errors = Vec::new();
        for r in api {
            if let Some(file) = routes.iter().find(|f| f.name == r.name) {
                let (Origin::File { file }, Origin::Api { subscription }) = (&file.origin, &r.origin) else { continue };
                errors.push(format!(
                    "{file}: route `{}` is also the name of subscription {subscription}; route names must be unique \
                     (rename the file route, or delete the subscription)",
                    r.name
                ));
            } else {
                routes.push(r.clone());
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Snapshot { routes, ..self.clone() })
    }
}

/// Where `settings` of `kind` connect.
pub fn broker_endpoint<'a>(settings: &'a BrokerFile, kind: &'a BrokerKind) -> Endpoint<'a> {
    match kind {
        BrokerKind::Rabbitmq => Endpoint::Rabbitmq { url: &settings.url, exchange: &settings.exchange },
        BrokerKind::Embedded(e) => Endpoint::Embedded { path: &e.path, sync: e.sync },
    }
}

/// Options of a load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Secrets absent from the environment are not errors (`validate --allow-missing-secrets`):
    /// a random key stands in, so the snapshot must not be used to deliver.
    pub allow_missing_secrets: bool,
    /// `--data-dir`: wins over `HOOKRELAY_DATA_DIR` and `[data] dir` (see [`data`]).
    pub data_dir: Option<PathBuf>,
    /// The config directory the files are meant to run from, when they are loaded from another
    /// place (a plan loads a copy sent to the router in a scratch directory): a relative
    /// `[data] dir`, the default data directory and a route's relative `secret_file` resolve
    /// there, as they would once the files are in place. `None`: the directory loaded.
    pub home: Option<PathBuf>,
}

impl LoadOptions {
    /// Loads that do not deliver (checks, tools): absent secrets are not errors.
    pub fn checking() -> Self {
        Self { allow_missing_secrets: true, ..Self::default() }
    }

    /// How a reload of `live` loads: with the data directory `live` was given on the command
    /// line, if it was (the variable and the file are read again).
    pub fn reloading(live: &Snapshot) -> Self {
        let data_dir = (live.data_dir.from == data::DataDirFrom::Flag).then(|| live.data_dir.path.clone());
        Self { data_dir, ..Self::default() }
    }

    /// The directory relative state and secret paths resolve in: [`LoadOptions::home`], else
    /// `dir`.
    pub fn home<'a>(&'a self, dir: &'a Path) -> &'a Path {
        self.home.as_deref().unwrap_or(dir)
    }
}

/// Loads and compiles `dir`, reporting every problem.
pub fn load(dir: &Path) -> Result<Snapshot, ConfigErrors> {
    load_with(dir, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(dir: &Path, opts: LoadOptions) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut main = load_main(dir, &mut files, &mut errors);
    let env_data_dir = std::env::var_os(data::ENV).map(PathBuf::from);
    let data_dir = data::DataDir::resolve(
        opts.home(dir),
        opts.data_dir.as_deref(),
        env_data_dir.as_deref(),
        main.data.dir.as_deref(),
    );
    main.store.url = data_dir.store_url(&main.store.url);
    errors.extend(main.telemetry.problems().into_iter().map(|m| ConfigError::file(MAIN_FILE, m)));
    let mut warnings = Vec::new();
    let mut broker_kind = broker_kind(&main, &files, &mut errors, &mut warnings);
    if let BrokerKind::Embedded(e) = &mut broker_kind {
        e.path = data_dir.place(&e.path);
    }
    let security =
        Policy { allow_http: main.security.allow_http, allow_private_networks: main.security.allow_private_networks };
    let extra_roots =
        main.security.ca_file.as_ref().map(|f| load_ca_file(dir, f, &mut files, &mut errors)).unwrap_or_default();
    check_api(&main.api, &mut errors);
    errors.extend(main.tenants.problem().map(|m| ConfigError::file(MAIN_FILE, m)));
    if main.limits.max_schedule_ahead.0.is_zero() {
        errors.push(ConfigError::file(MAIN_FILE, "[limits] max_schedule_ahead must be more than zero"));
    }
    if main.broker.as_ref().is_some_and(|b| b.consumer_timeout.0.is_zero()) {
        errors.push(ConfigError::file(MAIN_FILE, "[broker] consumer_timeout must be more than zero"));
    }
    let schemas = schemas::load(dir, &dir.join("schemas"), &mut files, &mut errors);
    let scripts_text = files.iter().find(|(n, _)| n == MAIN_FILE).map(|(_, t)| String::from_utf8_lossy(t).into_owned());
    for (key, message) in main.scripts.problems() {
        let message = format!("[scripts] {key} {message}");
        let at = scripts_text.as_deref().and_then(|t| Some((t, locate::toml_value(t, &["scripts", key])?.start)));
        errors.push(match at {
            Some((t, offset)) => ConfigError::at_offset(MAIN_FILE, t, offset, message),
            None => ConfigError::file(MAIN_FILE, message),
        });
    }
    let budgets = main.scripts.budgets(&main.limits);
    let engine = Arc::new(sandboxed_engine(budgets));
    let routes = route_files::RouteFiles {
        dir,
        security,
        tenants: &main.tenants,
        engine: &engine,
        schemas: &schemas,
        opts,
        consumer_timeout: (broker_kind == BrokerKind::Rabbitmq)
            .then(|| main.broker.as_ref().map_or(RABBITMQ_CONSUMER_TIMEOUT, |b| b.consumer_timeout.0)),
        files: &mut files,
        errors: &mut errors,
        warnings: &mut warnings,
        scripts: Default::default(),
    }
    .load();

    if !errors.is_empty() {
        files.sort();
        return Err(ConfigErrors { errors, warnings, files: files.into_iter().map(|(n, _)| n).collect() });
    }
    files.sort();
    let mut hash = Sha256::new();
    for (name, bytes) in &files {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(bytes);
        hash.update([0]);
    }
    let revision = hex::encode(hash.finalize())[..12].to_string();
    let mut routes = routes;
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot {
        dir: dir.to_path_buf(),
        data_dir,
        version: main.version,
        revision,
        broker: main.broker.unwrap_or_default(),
        broker_kind,
        security,
        extra_roots,
        limits: main.limits,
        script_pool: pipeline::script::ScriptPool::new(main.scripts.pool_size()),
        scripts: main.scripts,
        budgets,
        delivery: main.delivery,
        store: main.store,
        api: main.api,
        telemetry: main.telemetry,
        tenants: main.tenants,
        routes,
        schemas,
        engine,
        warnings,
        files: files.into_iter().map(|(n, _)| n).collect(),
    })
}
