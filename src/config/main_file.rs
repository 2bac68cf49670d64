//! `hookrelay.toml`: the main file layered with the defaults and the `HOOKRELAY_*` environment
//! (figment), and its checks: which broker runs, the CA file, the API's keys and address.
//! Errors name the file and line, or the variable, with a did-you-mean for likely typos.

use super::error::ConfigError;
use super::files::{ApiFile, MainFile};
use super::{BrokerKind, MAIN_FILE};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use std::path::Path;

/// RabbitMQ when `[broker]` is present, else the embedded broker. `[embedded]` next to
/// `[broker]` is reported as a warning (it may be there for runs without the variable that sets
/// `[broker]`), at the line of its header.
pub(super) fn broker_kind(
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

/// The largest `[security] ca_file` read (a bundle of a few hundred certificates).
const MAX_CA_FILE_BYTES: u64 = 4 << 20;
/// The largest route `secret_file` read (a secret or a few rotated ones, one per line).
pub(super) const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Reads a file a config names by path (a CA bundle, a secret), refusing what is not a regular
/// file or is over `max` bytes: such a path is chosen by whoever writes the config, and through
/// `POST /v1/config/plan` by an admin key holder, so `/dev/zero` or a huge log must be an error,
/// not a read until memory runs out.
pub(super) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("is {} bytes, over the limit of {max}", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("grew over the limit of {max} bytes while being read"));
    }
    Ok(bytes)
}

pub(super) fn load_ca_file(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
    errors: &mut Vec<ConfigError>,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let path = dir.join(rel);
    let at = |m: String| ConfigError::file(MAIN_FILE, format!("[security] ca_file {}: {m}", rel.display()));
    let bytes = match read_bounded(&path, MAX_CA_FILE_BYTES) {
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
pub(super) fn check_api(api: &ApiFile, errors: &mut Vec<ConfigError>) {
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

pub(super) fn toml_error(shown: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = did_you_mean(e.message().trim());
    match e.span() {
        Some(span) => ConfigError::at_offset(shown, text, span.start, msg),
        None => ConfigError::file(shown, msg),
    }
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
pub(super) fn load_main(dir: &Path, files: &mut Vec<(String, Vec<u8>)>, errors: &mut Vec<ConfigError>) -> MainFile {
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
