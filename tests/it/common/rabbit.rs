//! RabbitMQ for the tests: a vhost of each test's own ([`Vhost`]), created and deleted through the
//! management API (enabled on a local node that lacks it), and publishing to it with confirms.

use super::raw;
use base64::Engine as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn amqp_base() -> String {
    std::env::var("HOOKRELAY_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn management() -> (String, String) {
    let url =
        std::env::var("HOOKRELAY_TEST_MANAGEMENT_URL").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
    let (scheme, rest) = url.split_once("://").expect("management URL has a scheme");
    let (auth, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(auth));
    (format!("{scheme}://{}", host.trim_end_matches('/')), header)
}

/// Makes sure the management API answers, once per test process. On this machine kind RabbitMQ
/// usually runs without its management plugin: when the API is on loopback and does not answer,
/// the plugin is enabled on the running node (`rabbitmq-plugins enable`, which needs the rights
/// `.ci/run` has) and the API awaited, so that `cargo test` works without running `.ci/run` first.
fn ensure_management() {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let (base, auth) = management();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
        let up = || agent.get(&format!("{base}/api/overview")).header("authorization", &auth).call().is_ok();
        if up() {
            return Ok(());
        }
        let local = ["://127.0.0.1:", "://localhost:", "://[::1]:"].iter().any(|h| base.contains(h));
        if !local {
            return Err(format!("the RabbitMQ management API at {base} does not answer"));
        }
        eprintln!("the RabbitMQ management API at {base} does not answer: enabling rabbitmq_management");
        let enabled = ["rabbitmq-plugins", "/usr/sbin/rabbitmq-plugins"].iter().any(|cmd| {
            Command::new(cmd)
                .args(["-q", "enable", "rabbitmq_management"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !enabled {
            return Err(format!(
                "the RabbitMQ management API at {base} does not answer and `rabbitmq-plugins enable \
                 rabbitmq_management` failed: is RabbitMQ installed and running? `sudo bash .ci/run` installs \
                 and starts it"
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("rabbitmq_management was enabled but {base} still does not answer after 90 s"))
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

fn mgmt(method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    ensure_management();
    let (base, auth) = management();
    let url = format!("{base}/api/{path}");
    // Bounded: a broker too busy to answer fails the test instead of hanging it.
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(90))).build().into();
    let resp = match (method, body) {
        ("PUT", Some(b)) => agent.put(&url).header("authorization", &auth).send_json(b),
        ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
        _ => agent.get(&url).header("authorization", &auth).call(),
    };
    let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A RabbitMQ vhost of the test's own, deleted (with everything in it) on drop.
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn new() -> Self {
        let name = format!("hookrelay-test-{}", uuid::Uuid::new_v4().simple());
        mgmt("PUT", &format!("vhosts/{name}"), Some(json!({}))).expect("create a vhost (is the management plugin on?)");
        let perms = json!({"configure": ".*", "write": ".*", "read": ".*"});
        mgmt("PUT", &format!("permissions/{name}/guest"), Some(perms)).expect("grant guest on the vhost");
        let url = format!("{}/{name}", amqp_base());
        Self { name, url }
    }

    /// How many client connections to this vhost the management API lists (it lists a
    /// connection a few seconds after it opens).
    pub fn connections(&self) -> usize {
        let conns = mgmt("GET", &format!("vhosts/{}/connections", self.name), None).unwrap_or(Value::Null);
        conns.as_array().map_or(0, Vec::len)
    }

    /// Closes every client connection to this vhost from the broker side.
    pub fn close_connections(&self) -> usize {
        let conns = mgmt("GET", &format!("vhosts/{}/connections", self.name), None).unwrap_or(Value::Null);
        let names: Vec<String> =
            conns.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
        for n in &names {
            let encoded: String = n
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            let _ = mgmt("DELETE", &format!("connections/{encoded}"), None);
        }
        names.len()
    }

    /// Queue arguments as the broker reports them.
    pub fn queue(&self, queue: &str) -> Value {
        mgmt("GET", &format!("queues/{}/{queue}", self.name), None).unwrap_or(Value::Null)
    }

    /// Bindings of a queue: (source exchange, routing key).
    pub fn bindings(&self, queue: &str) -> Vec<(String, String)> {
        let b = mgmt("GET", &format!("queues/{}/{queue}/bindings", self.name), None).unwrap_or(Value::Null);
        b.as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (b["source"].as_str().unwrap_or("").to_string(), b["routing_key"].as_str().unwrap_or("").to_string())
            })
            .filter(|(s, _)| !s.is_empty())
            .collect()
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect to the test vhost")
    }

    /// Publishes events (structured JSON, routing key = type) with confirms; panics when one is
    /// returned or nacked.
    pub async fn publish(&self, events: &[Value]) {
        self.publish_raw(&raw(events)).await;
    }

    /// Publishes raw bodies with the given routing keys.
    pub async fn publish_raw(&self, messages: &[(String, Vec<u8>)]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        for chunk in messages.chunks(500) {
            let mut confirms = Vec::new();
            for (key, body) in chunk {
                let props = BasicProperties::default().with_delivery_mode(2);
                confirms.push(
                    ch.basic_publish("hookrelay.events".into(), key.as_str().into(), opts, body, props).await.unwrap(),
                );
            }
            for c in confirms {
                assert_eq!(c.await.unwrap(), Confirmation::Ack(None), "publish was not routed");
            }
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = mgmt("DELETE", &format!("vhosts/{}", self.name), None);
    }
}
