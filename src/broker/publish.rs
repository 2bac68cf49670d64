//! Publishing CloudEvents to the events exchange, as `hookrelay publish` does: structured JSON,
//! routing key = type, persistent, `mandatory`, confirms pipelined and all awaited. A return
//! means no route subscribes to the type, and is reported as an error.

use super::amqp::{BrokerError, connect};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use serde_json::{Value, json};

/// The attributes of the events to publish.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// `type`.
    pub ty: String,
    /// `data`.
    pub data: Value,
    /// `id` (default: a UUID).
    pub id: Option<String>,
    /// `source`.
    pub source: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `dataversion`.
    pub dataversion: Option<String>,
    /// First `sequence`.
    pub sequence: Option<u64>,
}

impl EventSpec {
    /// The `i`-th event (0-based) of a batch of `count`.
    pub fn event(&self, i: u64, count: u64) -> Value {
        let id = match (&self.id, count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{}", i + 1),
            (None, _) => uuid::Uuid::new_v4().to_string(),
        };
        let mut ev = json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": self.ty,
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "datacontenttype": "application/json",
            "data": self.data,
        });
        if let Some(s) = &self.subject {
            ev["subject"] = json!(s);
        }
        if let Some(v) = &self.dataversion {
            ev["dataversion"] = json!(v);
        }
        if let Some(s) = self.sequence {
            ev["sequence"] = json!((s + i).to_string());
        }
        ev
    }
}

/// Publishes `count` events and waits for every confirm. Prints each event id on stdout.
pub async fn publish_events(url: &str, exchange: &str, spec: &EventSpec, count: u64) -> Result<(), BrokerError> {
    let conn = connect(url, "hookrelay publish").await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let mut pending = Vec::new();
    for i in 0..count {
        let ev = spec.event(i, count);
        let body = serde_json::to_vec(&ev).unwrap_or_default();
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(ev["id"].as_str().unwrap_or_default().into());
        pending.push((
            ev["id"].as_str().unwrap_or_default().to_string(),
            ch.basic_publish(exchange.into(), spec.ty.as_str().into(), opts, &body, props).await?,
        ));
        if pending.len() >= 1000 {
            drain(&mut pending, exchange, &spec.ty).await?;
        }
    }
    drain(&mut pending, exchange, &spec.ty).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

async fn drain(
    pending: &mut Vec<(String, lapin::PublisherConfirm)>,
    exchange: &str,
    ty: &str,
) -> Result<(), BrokerError> {
    for (id, confirm) in pending.drain(..) {
        match confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => println!("{id}"),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                return Err(BrokerError::NotRouted(format!(
                    "no route subscribes to {ty:?} on exchange {exchange:?} (is the router running with a route for it?)"
                )));
            }
            Confirmation::Nack(None) => return Err(BrokerError::NotRouted("nacked by the broker".into())),
        }
    }
    Ok(())
}
