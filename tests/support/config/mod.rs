//! Typed builders of hookrelay's config files, shared by the integration tests
//! (`tests/it/common`) and the benchmarks (`benches/common`): [`MainConfig`] is `hookrelay.toml`
//! (`main_file.rs`), [`RouteConfig`] one `routes/<name>.toml` (`route_file.rs`). Both render
//! through serde and the `toml` crate, so a misspelt key or a value of the wrong kind is a compile
//! error, and quoting is never by hand.
//!
//! They are written from the documented file format (README "Configuration reference"), not
//! from the library's own `config::files` types: a key renamed in the product breaks the tests
//! instead of silently following them. A key left unset is not written, so the product's default
//! applies. Cases that must write a broken file, or whose assertions name a line and column,
//! write the file's text themselves.

mod main_file;
mod route_file;

pub use main_file::*;
pub use route_file::*;

use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// A duration as the files write it: `"300ms"`, `"10s"`, `"1h"`.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Renders a config file.
fn render(value: &impl Serialize, what: &str) -> String {
    toml::to_string(value).unwrap_or_else(|e| panic!("{what} renders as TOML: {e}"))
}

/// Writes a file, creating its directory.
pub fn write_file(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What the renderings look like, so that a change of the `toml` crate's output shows here first.
#[test]
fn the_builders_render_the_documented_keys() {
    let route = RouteConfig::new("erp")
        .events(["order.*"])
        .url("http://127.0.0.1:9000/erp")
        .ordered(true)
        .timeout(Duration::from_millis(300))
        .tenant("acme")
        .header("x-tenant", "a \"quoted\" value")
        .signing(Signing::Env("SECRET".into()))
        .max_attempts(3)
        .backoff([Duration::from_millis(300), Duration::from_secs(60)])
        .circuit_breaker(5, Duration::from_secs(30))
        .rate_limit(2.5, Some(4));
    assert_eq!(
        route.to_toml(),
        "events = [\"order.*\"]\nurl = \"http://127.0.0.1:9000/erp\"\nordered = true\ntimeout = \"300ms\"\ntenant = \"acme\"\n\n\
         [headers]\nx-tenant = 'a \"quoted\" value'\n\n[signing]\nsecret_env = \"SECRET\"\n\n\
         [retry]\nmax_attempts = 3\nbackoff = [\"300ms\", \"1m\"]\n\n\
         [circuit_breaker]\nfailures = 5\nopen_for = \"30s\"\n\n[rate_limit]\nper_second = 2.5\nburst = 4\n"
    );
    let main =
        MainConfig::new().version(1).rabbitmq("amqp://h/%2f").prefetch(100).loopback_targets().api_key(ApiKeyEntry {
            name: "ops".into(),
            hash: "sha256:00".into(),
            scopes: vec![Scope::Admin, Scope::Read],
            allow_from: Vec::new(),
        });
    assert_eq!(
        main.to_toml(),
        "version = 1\n\n[broker]\nurl = \"amqp://h/%2f\"\nprefetch = 100\n\n\
         [security]\nallow_http = true\nallow_private_networks = true\n\n\
         [[api.keys]]\nname = \"ops\"\nhash = \"sha256:00\"\nscopes = [\"admin\", \"read\"]\n"
    );
    assert_eq!(MainConfig::new().rabbitmq_defaults().to_toml(), "[broker]\n", "an empty [broker] is still RabbitMQ");
}
