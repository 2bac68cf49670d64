//! Loading a config directory into a [`Snapshot`]: everything the per-event path needs,
//! compiled once (schemas, scripts, redaction paths, signing keys, URLs).
//!
//! Layout (contract): `hookrelay.toml`, `routes/<name>.toml`, `schemas/<type>/v<N>.json`,
//! `plugins/<name>.rhai`. Layering: built-in defaults < `hookrelay.toml` < `HOOKRELAY_*`
//! environment variables with `__` for nesting (`HOOKRELAY_BROKER__URL`). Every problem is
//! collected and reported as `file:line:col: message`; a load never stops at the first.

pub mod error;
pub mod files;
pub mod locate;

use crate::broker::topic;
use crate::deliver::guard::Policy;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::sign::{Signer, SigningKey};
use crate::pipeline::redact::RedactPath;
use crate::pipeline::schema::SchemaRegistry;
use crate::pipeline::script::{EntryPoint, Script, sandboxed_engine};
use error::{ConfigError, ConfigErrors, display_path};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use files::{BodyFormat, BrokerFile, DeliveryFile, EmbeddedFile, LimitsFile, MainFile, RouteFile, SigningScheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The main config file's name.
pub const MAIN_FILE: &str = "hookrelay.toml";

/// RabbitMQ's default `consumer_timeout`: a delivery unacked for longer gets its channel closed.
/// An ordered route whose retry waits add up to more is warned about.
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
    /// Concurrent deliveries (unordered routes).
    pub concurrency: usize,
    /// `fn filter(event)`.
    pub filter: Option<Arc<Script>>,
    /// `fn transform(event)`.
    pub transform: Option<Arc<Script>>,
    /// Fields removed before sending.
    pub redact: Vec<RedactPath>,
    /// Body shape.
    pub format: BodyFormat,
    /// Static extra headers.
    pub headers: HeaderMap,
    /// Keep sent bodies in the delivery log.
    pub log_payload: bool,
    /// Signing keys and scheme.
    pub signer: Signer,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
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
    /// `[delivery]`.
    pub delivery: DeliveryFile,
    /// `[store]`.
    pub store: files::StoreFile,
    /// `[api]`.
    pub api: files::ApiFile,
    /// `[telemetry]`.
    pub telemetry: files::TelemetryFile,
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

/// Options of a load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Secrets absent from the environment are not errors (`validate --allow-missing-secrets`):
    /// a random key stands in, so the snapshot must not be used to deliver.
    pub allow_missing_secrets: bool,
}

/// Loads and compiles `dir`, reporting every problem.
pub fn load(dir: &Path) -> Result<Snapshot, ConfigErrors> {
    load_with(dir, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(dir: &Path, opts: LoadOptions) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let main = load_main(dir, &mut files, &mut errors);
    errors.extend(main.telemetry.problems().into_iter().map(|m| ConfigError::file(MAIN_FILE, m)));
    let mut warnings = Vec::new();
    let broker_kind = broker_kind(&main, &files, &mut errors, &mut warnings);
    let security =
        Policy { allow_http: main.security.allow_http, allow_private_networks: main.security.allow_private_networks };
    let extra_roots =
        main.security.ca_file.as_ref().map(|f| load_ca_file(dir, f, &mut files, &mut errors)).unwrap_or_default();
    check_api(&main.api, &mut errors);
    let schemas = SchemaRegistry::load(dir, &dir.join("schemas"), &mut files, &mut errors);
    let engine = Arc::new(sandboxed_engine());
    let mut scripts: HashMap<PathBuf, Option<Arc<Script>>> = HashMap::new();
    let mut routes: Vec<Arc<Route>> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();

    let mut route_files: Vec<PathBuf> = std::fs::read_dir(dir.join("routes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    route_files.sort();
    for path in route_files {
        let shown = display_path(dir, &path);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::file(&shown, format!("cannot read: {e}")));
                continue;
            }
        };
        files.push((shown.display().to_string(), text.clone().into_bytes()));
        let file: RouteFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                errors.push(toml_error(&shown, &text, &e));
                continue;
            }
        };
        let name_at = file.name.as_ref().map_or(0, |n| n.span().start);
        // Warned about even when the route has errors, so that fixing them brings no surprise.
        for ev in file.events.get_ref() {
            let pattern = ev.get_ref();
            if topic::valid_pattern(pattern).is_ok() && !schemas.types().iter().any(|t| topic::matches(pattern, t)) {
                warnings.push(ConfigError::at_offset(
                    &shown,
                    &text,
                    ev.span().start,
                    format!("event pattern `{pattern}` matches no type in schemas/"),
                ));
            }
        }
        let mut ctx = RouteCtx { dir, shown: &shown, text: &text, errors: &mut errors, opts };
        let Some(route) = ctx.compile(file, &path, security, &engine, &mut scripts, &mut files) else { continue };
        if let Some(first) = seen.get(&route.name) {
            errors.push(ConfigError::at_offset(
                &shown,
                &text,
                name_at,
                format!(
                    "duplicate route name `{}` (also defined by {}); names must be unique",
                    route.name,
                    first.display()
                ),
            ));
            continue;
        }
        if route.ordered && broker_kind == BrokerKind::Rabbitmq {
            warnings.extend(ordered_waits_warning(&shown, &text, &route));
        }
        seen.insert(route.name.clone(), shown.clone());
        routes.push(Arc::new(route));
    }

    if !errors.is_empty() {
        return Err(ConfigErrors { errors, warnings });
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
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot {
        dir: dir.to_path_buf(),
        version: main.version,
        revision,
        broker: main.broker.unwrap_or_default(),
        broker_kind,
        security,
        extra_roots,
        limits: main.limits,
        delivery: main.delivery,
        store: main.store,
        api: main.api,
        telemetry: main.telemetry,
        routes,
        schemas,
        engine,
        warnings,
        files: files.into_iter().map(|(n, _)| n).collect(),
    })
}

/// RabbitMQ when `[broker]` is present, else the embedded broker. `[embedded]` next to
/// `[broker]` is reported as a warning (it may be there for runs without the variable that sets
/// `[broker]`), at the line of its header.
fn broker_kind(
    main: &MainFile,
    files: &[(String, Vec<u8>)],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> BrokerKind {
    #[derive(serde::Deserialize)]
    struct Where {
        embedded: Option<toml::Spanned<toml::Table>>,
    }
    let text = files.iter().find(|(n, _)| n == MAIN_FILE).map(|(_, t)| String::from_utf8_lossy(t).into_owned());
    let at = |message: String| {
        let span = text.as_deref().and_then(|t| Some((t, toml::from_str::<Where>(t).ok()?.embedded?.span().start)));
        match span {
            Some((t, offset)) => ConfigError::at_offset(MAIN_FILE, t, offset, message),
            None => ConfigError::file(MAIN_FILE, message),
        }
    };
    match (&main.broker, &main.embedded) {
        (Some(_), Some(_)) => {
            warnings.push(at(
                "[embedded] is ignored: [broker] is present (in the file or as HOOKRELAY_BROKER__* variables), so \
                 RabbitMQ is used. Remove [broker] to run on the embedded broker"
                    .into(),
            ));
            BrokerKind::Rabbitmq
        }
        (Some(_), None) => BrokerKind::Rabbitmq,
        (None, embedded) => {
            let embedded = embedded.clone().unwrap_or_default();
            if embedded.path.as_os_str().is_empty() {
                errors.push(at("[embedded] path must name a file, e.g. \"hookrelay-queue.db\"".into()));
            }
            BrokerKind::Embedded(embedded)
        }
    }
}

fn load_ca_file(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
    errors: &mut Vec<ConfigError>,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let path = dir.join(rel);
    let at = |m: String| ConfigError::file(MAIN_FILE, format!("[security] ca_file {}: {m}", rel.display()));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            errors.push(at(format!("cannot be read: {e}")));
            return Vec::new();
        }
    };
    files.push((rel.display().to_string(), bytes.clone()));
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            errors.push(at("holds no PEM certificate".into()));
            Vec::new()
        }
        Err(e) => {
            errors.push(at(format!("is not valid PEM: {e}")));
            Vec::new()
        }
    }
}

/// `[api]`: a listen address that parses, key hashes of the right form, unique key names, and no
/// open API on a non-loopback address.
fn check_api(api: &files::ApiFile, errors: &mut Vec<ConfigError>) {
    let at = |m: String| ConfigError::file(MAIN_FILE, format!("[api] {m}"));
    if !api.enabled {
        return;
    }
    match api.listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if api.keys.is_empty() && !addr.ip().is_loopback() => errors.push(at(format!(
            "listen = {:?} without keys would open the API to the network: add [[api.keys]] \
             (`hookrelay api-key` makes one) or listen on 127.0.0.1",
            api.listen
        ))),
        Ok(_) => {}
        Err(e) => errors.push(at(format!("listen = {:?} is not an address:port ({e})", api.listen))),
    }
    let mut names = std::collections::BTreeSet::new();
    for k in &api.keys {
        if !names.insert(k.name.as_str()) {
            errors.push(at(format!("two keys are named {:?}; key names must be unique", k.name)));
        }
        let hex_ok = k.hash.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && hex::decode(h).is_ok());
        if !hex_ok {
            errors.push(at(format!(
                "key {:?}: hash must be \"sha256:<64 hex digits>\" of the key (`hookrelay api-key` prints it)",
                k.name
            )));
        }
        if k.scopes.is_empty() {
            errors.push(at(format!("key {:?} has no scopes (ingest, read, admin)", k.name)));
        }
    }
}

fn toml_error(shown: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = did_you_mean(e.message().trim());
    match e.span() {
        Some(span) => ConfigError::at_offset(shown, text, span.start, msg),
        None => ConfigError::file(shown, msg),
    }
}

/// An ordered route on RabbitMQ retries in place, holding the message unacked through every
/// wait; past the broker's `consumer_timeout` the channel is closed and the event starts over.
fn ordered_waits_warning(shown: &Path, text: &str, route: &Route) -> Option<ConfigError> {
    let waits: Duration = (1..route.retry.max_attempts).map(|a| route.retry.delay(a, None, 0.0)).sum();
    if waits <= RABBITMQ_CONSUMER_TIMEOUT {
        return None;
    }
    let at = [&["retry", "backoff"][..], &["retry", "max_attempts"], &["ordered"]]
        .iter()
        .find_map(|path| locate::toml_value(text, path))
        .map_or(0, |span| span.start);
    let backoff: Vec<String> = route.retry.backoff.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
    Some(ConfigError::at_offset(
        shown,
        text,
        at,
        format!(
            "route `{}` is ordered and its retry waits add up to {} (max_attempts {}, backoff [{}]): an ordered \
             retry holds the message unacked, and RabbitMQ closes the channel of a delivery unacked for longer than \
             its consumer_timeout ({} by default), after which the event starts over at attempt 1. Keep the waits \
             under that (fewer max_attempts or shorter backoff) or raise consumer_timeout in rabbitmq.conf \
             (docs/delivery.md)",
            route.name,
            humantime::format_duration(waits),
            route.retry.max_attempts,
            backoff.join(", "),
            humantime::format_duration(RABBITMQ_CONSUMER_TIMEOUT),
        ),
    ))
}

/// Adds a hint to serde's "unknown field `x`, expected one of `a`, `b`" when one of the
/// expected names is a likely typo of `x`.
fn did_you_mean(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else { return msg.to_string() };
    let Some((field, expected)) = rest.split_once('`') else { return msg.to_string() };
    match closest(field, expected.split('`').skip(1).step_by(2)) {
        Some(cand) => format!("unknown field `{field}` (did you mean `{cand}`?){expected}"),
        None => msg.to_string(),
    }
}

/// The candidate `word` is most likely a typo of, if any is close enough.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|cand| (edit_distance(word, cand), cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min()
        .map(|(_, cand)| cand)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `hookrelay.toml` layered with defaults and the environment.
fn load_main(dir: &Path, files: &mut Vec<(String, Vec<u8>)>, errors: &mut Vec<ConfigError>) -> MainFile {
    let path = dir.join(MAIN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::file(
                &path,
                format!("cannot read the main config file: {e} (is --config pointing at the config directory?)"),
            ));
            return MainFile::default();
        }
    };
    files.push((MAIN_FILE.to_string(), text.clone().into_bytes()));
    let from_file = match toml::from_str::<MainFile>(&text) {
        Ok(m) => m,
        Err(e) => {
            errors.push(toml_error(Path::new(MAIN_FILE), &text, &e));
            return MainFile::default();
        }
    };
    // Only variables that name a section (`HOOKRELAY_BROKER__URL`) or `HOOKRELAY_VERSION` are
    // config; others with the prefix (a route's `secret_env`, say) are left alone.
    let is_config = |k: &str| k.contains("__") || k.eq_ignore_ascii_case("version");
    let layered = |only: Option<String>| {
        let env = Env::prefixed("HOOKRELAY_")
            .filter(move |k| {
                is_config(k.as_str()) && only.as_deref().is_none_or(|o| k.as_str().eq_ignore_ascii_case(o))
            })
            .split("__");
        Figment::from(Serialized::defaults(MainFile::default()))
            .merge(Toml::string(&text))
            .merge(env)
            .extract::<MainFile>()
            .map_err(Box::new)
    };
    match layered(None) {
        Ok(m) => m,
        Err(all) => {
            // Deserialising stops at the first bad value: try each variable on its own so that
            // every bad one is reported, not only the first (a mistake that shows only in
            // combination falls back to the combined error).
            let mut names: Vec<String> = std::env::vars_os()
                .filter_map(|(k, _)| k.to_str()?.strip_prefix("HOOKRELAY_").map(str::to_string))
                .filter(|k| is_config(k))
                .collect();
            names.sort();
            let mut found = Vec::new();
            for name in &names {
                if let Err(e) = layered(Some(name.clone())) {
                    for e in *e {
                        for err in env_error(&e) {
                            if !found.contains(&err) {
                                found.push(err);
                            }
                        }
                    }
                }
            }
            if found.is_empty() {
                for e in *all {
                    found.extend(env_error(&e));
                }
            }
            errors.extend(found);
            from_file
        }
    }
}

/// A `HOOKRELAY_*` variable figment refused, reported as `environment: VAR: message`. An unknown
/// key names the variables that hold it, with the likely intended one.
fn env_error(e: &figment::Error) -> Vec<ConfigError> {
    let at = |var: String, m: String| ConfigError::file("environment", format!("{var}: {m}"));
    let figment::error::Kind::UnknownField(field, expected) = &e.kind else {
        return vec![at(format!("HOOKRELAY_{}", e.path.join("__").to_uppercase()), e.kind.to_string())];
    };
    let mut parent: Vec<String> = e.path.clone();
    if parent.last() == Some(field) {
        parent.pop();
    }
    let depth = parent.len();
    let mut key = parent.clone();
    key.push(field.clone());
    let hint = closest(field, expected.iter().copied());
    let known = expected.iter().map(|k| k.to_uppercase()).collect::<Vec<_>>().join(", ");
    let mut vars: Vec<(String, Vec<String>)> = std::env::vars()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("HOOKRELAY_")?;
            let parts: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            parts.starts_with(&key).then_some((name, parts))
        })
        .collect();
    if vars.is_empty() {
        vars.push((format!("HOOKRELAY_{}", key.join("__").to_uppercase()), key.clone()));
    }
    vars.sort();
    vars.into_iter()
        .map(|(name, mut parts)| {
            let mut msg = match depth {
                0 => format!("unknown section `{}`", field.to_uppercase()),
                _ => format!("unknown key `{}` in [{}]", field.to_uppercase(), parent.join(".")),
            };
            if let Some(h) = hint {
                parts[depth] = h.to_string();
                msg.push_str(&format!(" (did you mean {}?)", format!("HOOKRELAY_{}", parts.join("__")).to_uppercase()));
            }
            msg.push_str(&format!("; known: {known}"));
            at(name, msg)
        })
        .collect()
}

struct RouteCtx<'a> {
    dir: &'a Path,
    shown: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<ConfigError>,
    opts: LoadOptions,
}

impl RouteCtx<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        self.errors.push(ConfigError::at_offset(self.shown, self.text, span.start, msg));
    }

    /// An error at the key or value `path` of the route file (`key` picks the key), or about the
    /// whole file when the text does not hold it.
    fn err_at(&mut self, path: &[&str], key: bool, msg: impl Into<String>) {
        let span = if key { locate::toml_key(self.text, path) } else { locate::toml_value(self.text, path) };
        match span {
            Some(span) => self.err(span, msg),
            None => self.errors.push(ConfigError::file(self.shown, msg)),
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site; the pieces are the load's shared state
    fn compile(
        &mut self,
        file: RouteFile,
        path: &Path,
        security: Policy,
        engine: &rhai::Engine,
        scripts: &mut HashMap<PathBuf, Option<Arc<Script>>>,
        files: &mut Vec<(String, Vec<u8>)>,
    ) -> Option<Route> {
        let before = self.errors.len();
        let name = file
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string());
        if name.is_empty() || name.len() > 200 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            let msg = format!("route name {name:?} must be 1 to 200 characters of A-Z a-z 0-9 - _ .");
            match &file.name {
                Some(n) => self.err(n.span(), msg),
                // The name comes from the file's name: there is no place in the text to show.
                None => self.errors.push(ConfigError::file(
                    self.shown,
                    format!("{msg} (it is the file's name: rename the file, or set `name = \"...\"`)"),
                )),
            }
        }
        if file.events.get_ref().is_empty() {
            self.err(file.events.span(), "`events` must name at least one event type or pattern");
        }
        for ev in file.events.get_ref() {
            if let Err(m) = topic::valid_pattern(ev.get_ref()) {
                self.err(ev.span(), m);
            }
        }
        let url = match file.url.get_ref().parse::<Uri>() {
            Ok(u) if u.host().is_some() => match security.check_url(&u) {
                Ok(()) => Some(u),
                Err(e) => {
                    self.err(file.url.span(), e.to_string());
                    None
                }
            },
            _ => {
                self.err(file.url.span(), format!("{:?} is not an absolute URL", file.url.get_ref()));
                None
            }
        };
        if file.concurrency == 0 {
            self.err_at(&["concurrency"], false, "`concurrency` must be at least 1");
        }
        if file.retry.max_attempts == 0 {
            self.err_at(&["retry", "max_attempts"], false, "`retry.max_attempts` must be at least 1");
        }
        let zero = file.retry.backoff.iter().position(|d| d.0.is_zero());
        if file.retry.backoff.is_empty() || zero.is_some() {
            let msg = "`retry.backoff` must list at least one duration, none of them zero";
            match zero.and_then(|i| locate::toml_item(self.text, &["retry", "backoff"], i)) {
                Some(span) => self.err(span, msg),
                None => self.err_at(&["retry", "backoff"], false, msg),
            }
        }
        let filter = file.filter.as_ref().and_then(|p| self.script(p, EntryPoint::Filter, engine, scripts, files));
        let transform =
            file.transform.as_ref().and_then(|p| self.script(p, EntryPoint::Transform, engine, scripts, files));
        let mut redact = Vec::new();
        for p in &file.redact {
            match RedactPath::parse(p.get_ref()) {
                Ok(r) => redact.push(r),
                Err(m) => self.err(p.span(), m),
            }
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &file.headers {
            match (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                (Err(_), _) => self.err_at(&["headers", k], true, format!("{k:?} is not a valid HTTP header name")),
                (_, Err(_)) => self.err_at(
                    &["headers", k],
                    false,
                    format!("the value of header {k:?} is not a valid HTTP header value (control characters?)"),
                ),
            }
        }
        let signer = self.signer(&file);
        if self.errors.len() > before {
            return None;
        }
        let mut digest = Sha256::new();
        digest.update(self.text.as_bytes());
        for s in [&filter, &transform].into_iter().flatten() {
            digest.update(s.digest.as_bytes());
        }
        Some(Route {
            name,
            events: file.events.into_inner().into_iter().map(|e| e.into_inner()).collect(),
            url: url?,
            ordered: file.ordered,
            timeout: file.timeout.0,
            concurrency: file.concurrency,
            filter,
            transform,
            redact,
            format: file.format,
            headers,
            log_payload: file.log_payload,
            signer: signer?,
            retry: RetryPolicy {
                max_attempts: file.retry.max_attempts,
                backoff: file.retry.backoff.iter().map(|d| d.0).collect(),
            },
            digest: hex::encode(digest.finalize()),
            origin: Origin::File { file: self.shown.display().to_string() },
        })
    }

    fn script(
        &mut self,
        rel: &toml::Spanned<PathBuf>,
        entry: EntryPoint,
        engine: &rhai::Engine,
        scripts: &mut HashMap<PathBuf, Option<Arc<Script>>>,
        files: &mut Vec<(String, Vec<u8>)>,
    ) -> Option<Arc<Script>> {
        let path = self.dir.join(rel.get_ref());
        let script = match scripts.get(&path) {
            Some(s) => s.clone(),
            None => {
                let compiled = match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        files.push((rel.get_ref().display().to_string(), text.clone().into_bytes()));
                        Script::compile(engine, rel.get_ref(), &text)
                            .map_err(|e| self.errors.push(e))
                            .ok()
                            .map(Arc::new)
                    }
                    Err(e) => {
                        self.err(rel.span(), format!("plugin {} cannot be read: {e}", rel.get_ref().display()));
                        None
                    }
                };
                scripts.insert(path, compiled.clone());
                compiled
            }
        }?;
        if !script.defines(entry) {
            let name = match entry {
                EntryPoint::Filter => "filter",
                EntryPoint::Transform => "transform",
            };
            self.err(rel.span(), format!("plugin {} does not define `fn {name}(event)`", rel.get_ref().display()));
            return None;
        }
        Some(script)
    }

    fn signer(&mut self, file: &RouteFile) -> Option<Signer> {
        let signing = file.signing.get_ref();
        let secret = match (&signing.secret_env, &signing.secret_file) {
            (Some(var), None) => match std::env::var(var.get_ref()) {
                Ok(s) => Some(s),
                Err(_) if self.opts.allow_missing_secrets => None,
                Err(_) => {
                    self.err(
                        var.span(),
                        format!("environment variable {} (the route's secret) is not set", var.get_ref()),
                    );
                    return None;
                }
            },
            (None, Some(f)) => match std::fs::read_to_string(self.dir.join(f.get_ref())) {
                Ok(s) => Some(s),
                Err(_) if self.opts.allow_missing_secrets => None,
                Err(e) => {
                    self.err(f.span(), format!("secret file {} cannot be read: {e}", f.get_ref().display()));
                    return None;
                }
            },
            _ => {
                self.err(file.signing.span(), "[signing] needs exactly one of `secret_env` or `secret_file`");
                return None;
            }
        };
        let secret = secret.unwrap_or_else(SigningKey::generate);
        let span = file.signing.span();
        match signing.scheme {
            SigningScheme::StandardWebhooks if signing.header.is_some() => {
                self.err(
                    span,
                    "`header` applies to scheme = \"hmac-sha256-hex\" only (Standard Webhooks headers are fixed)",
                );
                None
            }
            SigningScheme::StandardWebhooks => match SigningKey::from_whsec(&secret) {
                Ok(k) => Some(Signer::Standard(vec![k])),
                Err(m) => {
                    self.err(span, m);
                    None
                }
            },
            SigningScheme::HmacSha256Hex => {
                let header = signing.header.as_ref().map_or("x-signature", |h| h.get_ref().as_str());
                match (SigningKey::raw(&secret), HeaderName::try_from(header)) {
                    (Ok(key), Ok(header)) => Some(Signer::Hex { key, header }),
                    (Err(m), _) => {
                        self.err(span, m);
                        None
                    }
                    (_, Err(_)) => {
                        self.err(span, format!("{header:?} is not a valid header name"));
                        None
                    }
                }
            }
        }
    }
}
