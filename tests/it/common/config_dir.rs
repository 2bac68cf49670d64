//! A router's config directory in a temp dir ([`ConfigDir`]): `hookrelay.toml` from a
//! [`MainConfig`], routes signed with the test secret, and what the router wrote into its SQLite
//! store there (dead letters, the delivery log), read back through the library.

use super::{MainConfig, RouteConfig, SECRET_ENV, Signing, Vhost, eventually, write_file};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use hookrelay::store::DeadLetter;

/// Dead letters as the store indexed them, read by the names of the dead-letter headers.
pub trait DeadLetterExt {
    fn header(&self, name: &str) -> Option<String>;
    fn reason(&self) -> String;
}

impl DeadLetterExt for DeadLetter {
    fn header(&self, name: &str) -> Option<String> {
        match name {
            "hookrelay-route" => Some(self.route.clone()),
            "hookrelay-reason" => Some(self.reason.clone()),
            "hookrelay-error" => Some(self.error.clone()),
            "hookrelay-details" => self.details.clone(),
            "hookrelay-last-status" => self.last_status.map(|s| s.to_string()),
            "hookrelay-last-response" => self.last_response.clone(),
            "hookrelay-attempt" => Some(self.attempts.to_string()),
            _ => None,
        }
    }
    fn reason(&self) -> String {
        self.reason.clone()
    }
}

/// The `hookrelay.toml` of most tests on RabbitMQ: the vhost with prefetch 100, loopback targets,
/// a 10 s shutdown grace.
pub fn rabbitmq_main(url: &str) -> MainConfig {
    MainConfig::new().version(1).rabbitmq(url).prefetch(100).loopback_targets().shutdown_grace(Duration::from_secs(10))
}

/// A config directory in a temp dir: `hookrelay.toml`, schemas for `order.paid` (requires `n`, an
/// integer) and `order.created` (any object), and whatever the test adds.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    /// The `hookrelay.toml` last written from a builder.
    main: Mutex<Option<MainConfig>>,
}

impl ConfigDir {
    /// [`rabbitmq_main`] on the vhost.
    pub fn new(vhost: &Vhost) -> Self {
        Self::with(rabbitmq_main(&vhost.url))
    }

    /// A config with this `hookrelay.toml` (a `[store]` in the temp dir and an `[api]` on any
    /// free loopback port are added when unset).
    pub fn with(main: MainConfig) -> Self {
        let c = Self::empty();
        c.set_main(main);
        c
    }

    /// A config whose `hookrelay.toml` is this text, for files that must be written as they are:
    /// broken ones, and ones whose errors name a line (a `[store]` in the temp dir and an `[api]`
    /// on any free loopback port are appended when absent).
    pub fn with_main_text(main: &str) -> Self {
        let c = Self::empty();
        let store =
            if main.contains("[store]") { String::new() } else { format!("\n[store]\nurl = \"{}\"\n", c.store_url()) };
        let api = if main.contains("[api]") { "" } else { "\n[api]\nlisten = \"127.0.0.1:0\"\n" };
        c.file("hookrelay.toml", &format!("{main}{store}{api}"));
        c
    }

    fn empty() -> Self {
        let c = Self { dir: tempfile::tempdir().unwrap(), main: Mutex::new(None) };
        c.file(
            "schemas/order.paid/v1.json",
            r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"},"total":{"type":"number"}}}"#,
        );
        c.file("schemas/order.created/v1.json", r#"{"type":"object"}"#);
        c
    }

    /// Rewrites `hookrelay.toml` from `main`, completed as in [`ConfigDir::with`].
    pub fn set_main(&self, mut main: MainConfig) {
        if !main.has_store() {
            main = main.store(self.store_url());
        }
        if !main.has_api_listen() {
            main = main.api_listen("127.0.0.1:0");
        }
        main.write(self.path());
        *self.main.lock().unwrap() = Some(main);
    }

    /// The `hookrelay.toml` last written from a builder, to change and write again with
    /// [`ConfigDir::set_main`].
    pub fn main(&self) -> MainConfig {
        self.main.lock().unwrap().clone().expect("hookrelay.toml was written from a MainConfig")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The router's SQLite store, in the temp dir.
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("hookrelay.db").display())
    }

    pub async fn store(&self) -> std::sync::Arc<dyn hookrelay::store::Store> {
        hookrelay::store::open(&self.store_url()).await.unwrap()
    }

    /// Every dead letter the router indexed, replayed ones included.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let filter = hookrelay::store::DeadLetterFilter { limit: 1000, include_replayed: true, ..Default::default() };
        self.store().await.dead_letters(&filter).await.unwrap().items
    }

    /// Waits until `n` dead letters are indexed.
    pub async fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<DeadLetter> {
        let store = self.store().await;
        let filter = hookrelay::store::DeadLetterFilter { limit: 1000, include_replayed: true, ..Default::default() };
        eventually(
            format!("{n} dead letters"),
            timeout,
            async || store.dead_letters(&filter).await.unwrap().items,
            |all| all.len() >= n,
        )
        .await
    }

    /// The delivery log's attempts of one event on one route, once `n` are recorded (the log is
    /// written behind the deliveries).
    pub async fn wait_attempts(
        &self,
        route: &str,
        event_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<hookrelay::store::Attempt> {
        let store = self.store().await;
        let id = hookrelay::store::delivery_id(route, event_id);
        eventually(
            format!("{n} attempts of {event_id} on route {route}"),
            timeout,
            async || store.attempts(&id).await.unwrap(),
            |attempts| attempts.len() >= n,
        )
        .await
    }

    pub fn file(&self, rel: &str, text: &str) {
        write_file(&self.dir.path().join(rel), text);
    }

    /// `routes/<name>.toml`, signed with the test secret (`secret_env`) unless it says otherwise.
    pub fn route(&self, route: &RouteConfig) {
        if route.has_signing() {
            route.write(self.path());
        } else {
            route.clone().signing(Signing::Env(SECRET_ENV.into())).write(self.path());
        }
    }

    /// `routes/<name>.toml` as this text plus a `[signing]` section with the test secret, for
    /// files that must be written as they are: broken ones, and ones whose errors name a line.
    pub fn route_text(&self, name: &str, body: &str) {
        self.file(&format!("routes/{name}.toml"), &format!("{body}\n[signing]\nsecret_env = \"{SECRET_ENV}\"\n"));
    }
}
