//! `hookrelay publish`: where the events go (a router's ingest API, the embedded queue file, or
//! RabbitMQ's exchange), and, when they do not go through an API, the API's checks first.

use super::Usage;
use anyhow::Result;
use hookrelay::config::{self, LoadOptions, Snapshot};
use hookrelay::publish::EventSpec;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where to publish, as the user asked.
pub(crate) struct Target {
    pub(crate) config: PathBuf,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) broker_url: Option<String>,
    pub(crate) api: Option<String>,
    pub(crate) api_key: Option<String>,
}

/// Publishes `count` events of `spec`, in order, printing each id once it is accepted.
pub(crate) async fn publish(spec: EventSpec, count: u64, to: Target) -> Result<ExitCode> {
    if let Some(base) = &to.api {
        hookrelay::publish::post_events(base, to.api_key.as_deref(), &spec, count).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let loaded =
        config::load_with(&to.config, LoadOptions { data_dir: to.data_dir.clone(), ..LoadOptions::checking() });
    let snapshot = loaded.as_ref().ok();
    let (mut settings, mut kind) = snapshot
        .map(|s| (s.broker.clone(), s.broker_kind.clone()))
        .unwrap_or_else(|| (config::files::BrokerFile::default(), config::BrokerKind::Rabbitmq));
    // The embedded broker's file belongs to the router while it runs: go through its ingest API
    // then, and write the file only when no router is listening.
    if to.broker_url.is_none()
        && matches!(kind, config::BrokerKind::Embedded(_))
        && let Some(base) = running_api(snapshot).await
    {
        hookrelay::publish::post_events(&base, to.api_key.as_deref(), &spec, count).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // Straight to the broker: the checks the ingest API would make, against this config's
    // schemas, so that an event the API would refuse is refused here too, with its message.
    if let Some(s) = snapshot {
        if let Err(refusal) = hookrelay::publish::check(&s.pipeline(), &spec.event(0, count)) {
            eprintln!("error: {refusal}");
            return Ok(ExitCode::FAILURE);
        }
    } else if let Err(e) = &loaded
        && matches!(kind, config::BrokerKind::Rabbitmq)
        && to.broker_url.is_none()
        && to.config.join(config::MAIN_FILE).exists()
    {
        super::print_errors(e);
        return Err(Usage(format!("--config {}: the config does not load", to.config.display())).into());
    }
    if let Some(u) = to.broker_url {
        settings.url = u;
        kind = config::BrokerKind::Rabbitmq;
    }
    if let (config::BrokerKind::Embedded(e), Some(s)) = (&kind, snapshot) {
        s.data_dir.prepare([e.path.as_path()])?;
    }
    let broker = hookrelay::broker::connect(config::broker_endpoint(&settings, &kind), "hookrelay publish").await?;
    let published = hookrelay::publish::publish_events(broker.as_ref(), &spec, count).await;
    broker.close().await;
    published?;
    Ok(ExitCode::SUCCESS)
}

/// The base URL of the router's API that `snapshot` configures, if one answers there.
async fn running_api(snapshot: Option<&Snapshot>) -> Option<String> {
    let s = snapshot?;
    let addr: std::net::SocketAddr = s.api.listen.parse().ok()?;
    if !s.api.enabled || addr.port() == 0 {
        return None;
    }
    let reachable = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    matches!(reachable, Ok(Ok(_))).then(|| format!("http://{addr}"))
}
