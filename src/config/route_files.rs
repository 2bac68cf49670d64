//! Route files: every `routes/<name>.toml` into a [`Route`] through the route compiler
//! ([`super::route`]), each problem reported at its `file:line:col`. What is particular to
//! files is here: the name from the file stem, plugins read from `plugins/` (each compiled once
//! per load, however many routes use it), secrets from the environment or a file, the digest
//! over the file and its plugins, and the warnings (patterns that match no known type, ordered
//! retry waits past RabbitMQ's consumer timeout).

use super::error::{ConfigError, display_path};
use super::files::{FilterFile, RouteFile, SigningScheme};
use super::route::{self, Definition, Field};
use super::{LoadOptions, Origin, RABBITMQ_CONSUMER_TIMEOUT, Route, locate, toml_error};
use crate::broker::topic;
use crate::delivery::http::guard::Policy;
use crate::delivery::http::sign::{Signer, SigningKey};
use crate::delivery::policy::{Batch, CircuitBreaker, RateLimit};
use crate::pipeline::condition::Loc;
use crate::pipeline::schema::SchemaRegistry;
use crate::pipeline::script::{EntryPoint, Script};
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One load of `routes/`: what the routes compile against, and where results go.
pub(super) struct RouteFiles<'a> {
    pub(super) dir: &'a Path,
    pub(super) security: Policy,
    /// `[tenants]`: how a route's `tenant` is matched.
    pub(super) tenants: &'a crate::tenant::TenantsFile,
    pub(super) engine: &'a rhai::Engine,
    pub(super) schemas: &'a SchemaRegistry,
    pub(super) opts: LoadOptions,
    /// On RabbitMQ, its `consumer_timeout` (`[broker]`): ordered retry waits past it are warned
    /// about.
    pub(super) consumer_timeout: Option<Duration>,
    /// Every file read, for the revision.
    pub(super) files: &'a mut Vec<(String, Vec<u8>)>,
    pub(super) errors: &'a mut Vec<ConfigError>,
    pub(super) warnings: &'a mut Vec<ConfigError>,
    /// Plugins compiled so far (`None`: it failed, and was reported).
    pub(super) scripts: HashMap<PathBuf, Option<Arc<Script>>>,
}

/// A place in one route file's text.
#[derive(Clone, Copy)]
struct At<'t> {
    shown: &'t Path,
    text: &'t str,
}

impl At<'_> {
    fn span(self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at_offset(self.shown, self.text, span.start, msg)
    }

    /// At the key or value `path` (`key` picks the key), or about the whole file when the text
    /// does not hold it.
    fn path(self, path: &[&str], key: bool, msg: impl Into<String>) -> ConfigError {
        let span = if key { locate::toml_key(self.text, path) } else { locate::toml_value(self.text, path) };
        match span {
            Some(span) => self.span(span, msg),
            None => ConfigError::file(self.shown, msg),
        }
    }
}

impl RouteFiles<'_> {
    /// Every route file, compiled, sorted by name; problems go to `errors` and `warnings`.
    pub(super) fn load(mut self) -> Vec<Arc<Route>> {
        // Every plugin first, whether a route that loads uses it or not: a plugin's syntax error
        // is reported in the same pass as the route files' errors, not once they are fixed.
        // One that cannot be read is reported by the route that names it, if any.
        for rel in plugin_files(self.dir) {
            let _ = self.compiled(&rel);
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.join("routes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut routes: Vec<Arc<Route>> = Vec::new();
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let shown = display_path(self.dir, &path);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.errors.push(ConfigError::file(&shown, format!("cannot read: {e}")));
                    continue;
                }
            };
            self.files.push((shown.display().to_string(), text.clone().into_bytes()));
            let file: RouteFile = match toml::from_str(&text) {
                Ok(f) => f,
                Err(e) => {
                    self.errors.push(toml_error(&shown, &text, &e));
                    continue;
                }
            };
            let at = At { shown: &shown, text: &text };
            let name_at = file.name.as_ref().map_or(0, |n| n.span().start);
            // Warned about even when the route has errors, so that fixing them brings no surprise.
            for ev in file.events.get_ref() {
                let pattern = ev.get_ref();
                if topic::valid_pattern(pattern).is_ok()
                    && !self.schemas.types().iter().any(|t| topic::matches(pattern, t))
                {
                    let msg = format!("event pattern `{pattern}` matches no type in schemas/");
                    self.warnings.push(at.span(ev.span(), msg));
                }
            }
            let Some(route) = self.compile(at, &file, &path) else { continue };
            if let Some(first) = seen.get(&route.name) {
                let msg = format!(
                    "duplicate route name `{}` (also defined by {}); names must be unique",
                    route.name,
                    first.display()
                );
                self.errors.push(ConfigError::at_offset(&shown, &text, name_at, msg));
                continue;
            }
            if let (true, Some(limit)) = (route.ordered, self.consumer_timeout) {
                self.warnings.extend(ordered_waits_warning(at, &route, limit));
            }
            seen.insert(route.name.clone(), shown.clone());
            routes.push(Arc::new(route));
        }
        routes
    }

    fn compile(&mut self, at: At<'_>, file: &RouteFile, path: &Path) -> Option<Route> {
        let before = self.errors.len();
        let name = file
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string());
        let (filter, condition) = match file.filter.as_ref().map(|f| (f.get_ref(), f.span())) {
            Some((FilterFile::Plugin(p), span)) => (self.script(at, p, span, EntryPoint::Filter), None),
            Some((FilterFile::Declarative(table), _)) => (None, Some(table)),
            None => (None, None),
        };
        let transform =
            file.transform.as_ref().and_then(|p| self.script(at, p.get_ref(), p.span(), EntryPoint::Transform));
        let signer = self.signer(at, file);
        let mut digest = Sha256::new();
        digest.update(at.text.as_bytes());
        for s in [&filter, &transform].into_iter().flatten() {
            digest.update(s.digest.as_bytes());
        }
        let def = Definition {
            name: &name,
            events: file.events.get_ref().iter().map(|e| e.get_ref().as_str()).collect(),
            url: file.url.get_ref(),
            ordered: file.ordered,
            timeout: file.timeout.0,
            concurrency: file.concurrency,
            order_key: file.order_key.as_ref().map(|k| k.get_ref().as_str()),
            max_attempts: file.retry.max_attempts,
            backoff: file.retry.backoff.iter().map(|d| d.0).collect(),
            filter,
            condition,
            transform,
            redact: file.redact.iter().map(|p| p.get_ref().as_str()).collect(),
            format: file.format,
            headers: file.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            log_payload: file.log_payload,
            signer,
            tenant: file.tenant.as_ref().map(|t| t.get_ref().as_str()),
            circuit_breaker: file.circuit_breaker.as_ref().map(|c| CircuitBreaker {
                failures: c.failures,
                open_for: c.open_for.0,
                disable_after: c.disable_after.map(|d| d.0),
            }),
            rate_limit: file.rate_limit.as_ref().map(|r| RateLimit {
                per_second: r.per_second,
                burst: r.burst.unwrap_or_else(|| RateLimit::default_burst(r.per_second)),
            }),
            batch: file.batch.as_ref().map(|b| Batch { max_events: b.max_events, max_wait: b.max_wait.0 }),
            digest: hex::encode(digest.finalize()),
            origin: Origin::File { file: at.shown.display().to_string() },
        };
        let errors = &mut *self.errors;
        let route = route::compile(def, self.security, self.tenants, &mut |field, msg| {
            let msg = match field.file_key() {
                Some(key) => format!("`{key}` {msg}"),
                None => msg,
            };
            errors.push(match field {
                Field::Name => match &file.name {
                    Some(n) => at.span(n.span(), msg),
                    // The name comes from the file's name: there is no place in the text to show.
                    None => ConfigError::file(
                        at.shown,
                        format!("{msg} (it is the file's name: rename the file, or set `name = \"...\"`)"),
                    ),
                },
                Field::Events => at.span(file.events.span(), msg),
                Field::Event(i) => at.span(file.events.get_ref()[i].span(), msg),
                Field::Url => at.span(file.url.span(), msg),
                Field::Timeout => at.path(&["timeout"], false, msg),
                Field::Concurrency => at.path(&["concurrency"], false, msg),
                Field::MaxAttempts => at.path(&["retry", "max_attempts"], false, msg),
                Field::Backoff => at.path(&["retry", "backoff"], false, msg),
                Field::BackoffStep(i) => match locate::toml_item(at.text, &["retry", "backoff"], i) {
                    Some(span) => at.span(span, msg),
                    None => at.path(&["retry", "backoff"], false, msg),
                },
                Field::Redact(i) => at.span(file.redact[i].span(), msg),
                Field::HeaderName(k) => at.path(&["headers", k], true, msg),
                Field::HeaderValue(k) => at.path(&["headers", k], false, msg),
                Field::Tenant => match &file.tenant {
                    Some(t) => at.span(t.span(), msg),
                    None => ConfigError::file(at.shown, msg),
                },
                Field::BreakerFailures => at.path(&["circuit_breaker", "failures"], false, msg),
                Field::BreakerOpenFor => at.path(&["circuit_breaker", "open_for"], false, msg),
                Field::BreakerDisableAfter => at.path(&["circuit_breaker", "disable_after"], true, msg),
                Field::RatePerSecond => at.path(&["rate_limit", "per_second"], false, msg),
                Field::RateBurst => at.path(&["rate_limit", "burst"], false, msg),
                Field::Filter(inner) => {
                    let msg = format!("`{}`: {msg}", crate::pipeline::condition::loc_text(inner));
                    let mut steps = vec![locate::Step::Key("filter")];
                    steps.extend(inner.iter().map(|l| match l {
                        Loc::Key(k) => locate::Step::Key(k),
                        Loc::Index(i) => locate::Step::Index(*i),
                    }));
                    // The innermost place the text holds (a missing key: the table it is missing from).
                    let span = (1..=steps.len()).rev().find_map(|n| locate::toml_at(at.text, &steps[..n]));
                    match span {
                        Some(span) => at.span(span, msg),
                        None => ConfigError::file(at.shown, msg),
                    }
                }
                Field::Batch => at.path(&["batch"], true, msg),
                Field::BatchMaxEvents => at.path(&["batch", "max_events"], false, msg),
                Field::BatchMaxWait => at.path(&["batch", "max_wait"], false, msg),
                Field::OrderKey => match &file.order_key {
                    Some(k) => at.span(k.span(), msg),
                    None => ConfigError::file(at.shown, msg),
                },
            });
        });
        // A plugin or secret that failed leaves no route behind, complete or not.
        route.filter(|_| self.errors.len() == before)
    }

    /// The plugin at `rel` (relative to the config directory), compiled once per load; `None`
    /// when it failed (reported once) or cannot be read (`Err`, for the route to report).
    fn compiled(&mut self, rel: &Path) -> Result<Option<Arc<Script>>, std::io::Error> {
        let path = normalized(&self.dir.join(rel));
        if let Some(s) = self.scripts.get(&path) {
            return Ok(s.clone());
        }
        let text = std::fs::read_to_string(&path)?;
        self.files.push((rel.display().to_string(), text.clone().into_bytes()));
        let compiled = Script::compile(self.engine, rel, &text)
            .map_err(|e| self.errors.push(ConfigError::script(rel, &text, &e)))
            .ok()
            .map(Arc::new);
        self.scripts.insert(path, compiled.clone());
        Ok(compiled)
    }

    fn script(&mut self, at: At<'_>, rel: &Path, span: Range<usize>, entry: EntryPoint) -> Option<Arc<Script>> {
        let script = match self.compiled(rel) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("plugin {} cannot be read: {e}", rel.display());
                self.errors.push(at.span(span.clone(), msg));
                None
            }
        }?;
        if !script.defines(entry) {
            let name = match entry {
                EntryPoint::Filter => "filter",
                EntryPoint::Transform => "transform",
            };
            let msg = format!("plugin {} does not define `fn {name}(event)`", rel.display());
            self.errors.push(at.span(span, msg));
            return None;
        }
        Some(script)
    }

    fn signer(&mut self, at: At<'_>, file: &RouteFile) -> Option<Signer> {
        let signing = file.signing.get_ref();
        let span = file.signing.span();
        let secret = match (&signing.secret_env, &signing.secret_file) {
            (Some(var), None) => match std::env::var(var.get_ref()) {
                Ok(s) => Some(s),
                Err(_) if self.opts.allow_missing_secrets => None,
                Err(_) => {
                    let msg = format!("environment variable {} (the route's secret) is not set", var.get_ref());
                    self.errors.push(at.span(var.span(), msg));
                    return None;
                }
            },
            (None, Some(f)) => match super::main_file::read_bounded(
                &self.opts.home(self.dir).join(f.get_ref()),
                super::main_file::MAX_SECRET_FILE_BYTES,
            )
            .and_then(|b| String::from_utf8(b).map_err(|_| "is not UTF-8".to_string()))
            {
                Ok(s) => Some(s),
                Err(_) if self.opts.allow_missing_secrets => None,
                Err(e) => {
                    let msg = format!("secret file {} cannot be read: {e}", f.get_ref().display());
                    self.errors.push(at.span(f.span(), msg));
                    return None;
                }
            },
            _ => {
                let msg = "[signing] needs exactly one of `secret_env` or `secret_file`";
                self.errors.push(at.span(span, msg));
                return None;
            }
        };
        let secret = secret.unwrap_or_else(SigningKey::generate);
        let signer = match signing.scheme {
            SigningScheme::StandardWebhooks if signing.header.is_some() => {
                Err("`header` applies to scheme = \"hmac-sha256-hex\" only (Standard Webhooks headers are fixed)"
                    .into())
            }
            SigningScheme::StandardWebhooks => SigningKey::from_whsec(&secret).map(|k| Signer::Standard(vec![k])),
            SigningScheme::HmacSha256Hex => {
                let header = signing.header.as_ref().map_or("x-signature", |h| h.get_ref().as_str());
                match (SigningKey::raw(&secret), HeaderName::try_from(header)) {
                    (Ok(key), Ok(header)) => Ok(Signer::Hex { key, header }),
                    (Err(m), _) => Err(m),
                    (_, Err(_)) => Err(format!("{header:?} is not a valid header name")),
                }
            }
        };
        signer.map_err(|m| self.errors.push(at.span(span, m))).ok()
    }
}

/// Every `.rhai` file under `plugins/`, relative to the config directory, sorted.
fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rhai")
                && let Ok(rel) = path.strip_prefix(base)
            {
                out.push(rel.to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("plugins"), dir, &mut out);
    out.sort();
    out
}

/// `path` without `.` components, so that `plugins/a.rhai` and `./plugins/a.rhai` are one plugin.
fn normalized(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

/// An ordered route on RabbitMQ retries in place, holding the message unacked through every
/// wait; past the broker's `consumer_timeout` (`limit`) the channel is closed and the event
/// starts over.
fn ordered_waits_warning(at: At<'_>, route: &Route, limit: Duration) -> Option<ConfigError> {
    let waits: Duration = (1..route.retry.max_attempts).map(|a| route.retry.delay(a, None, 0.0)).sum();
    if waits <= limit {
        return None;
    }
    let offset = [&["retry", "backoff"][..], &["retry", "max_attempts"], &["ordered"]]
        .iter()
        .find_map(|path| locate::toml_value(at.text, path))
        .map_or(0, |span| span.start);
    let backoff: Vec<String> = route.retry.backoff.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
    Some(ConfigError::at_offset(
        at.shown,
        at.text,
        offset,
        format!(
            "route `{}` is ordered and its retry waits add up to {} (max_attempts {}, backoff [{}]): an ordered \
             retry holds the message unacked, and RabbitMQ closes the channel of a delivery unacked for longer than \
             its consumer_timeout ({}), after which the event starts over at attempt 1. Keep the waits under that \
             (fewer max_attempts or shorter backoff) or raise consumer_timeout in rabbitmq.conf, and tell hookrelay \
             in [broker] consumer_timeout (docs/delivery.md)",
            route.name,
            humantime::format_duration(waits),
            route.retry.max_attempts,
            backoff.join(", "),
            if limit == RABBITMQ_CONSUMER_TIMEOUT {
                format!("{} by default", humantime::format_duration(limit))
            } else {
                format!("{} as [broker] consumer_timeout says", humantime::format_duration(limit))
            },
        ),
    ))
}
