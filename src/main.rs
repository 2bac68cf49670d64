//! The `hookrelay` command line: thin wrappers over the library. `anyhow` lives here only.

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hookrelay::config::{self, LoadOptions, error::ConfigErrors};
use hookrelay::delivery::http::sign::SigningKey;
use hookrelay::runtime::Runtime;
use hookrelay::telemetry::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

mod checks;

/// mimalloc instead of the system allocator: the per-event path allocates many small values
/// (JSON maps, headers, futures), and glibc's malloc was a fifth of the router's CPU time under
/// load (see docs/benchmarks.md). Metered: each thread's net allocations are counted, which is
/// how a script run is held to its memory budget (`[scripts] max_memory_bytes`).
#[global_allocator]
static ALLOCATOR: alloc_meter::Metered<mimalloc::MiMalloc> = alloc_meter::Metered(mimalloc::MiMalloc);

/// `hookrelay --version`: the package version and the git revision it was built from
/// (`unknown` when built outside a git checkout; see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOOKRELAY_GIT_REV"), ")");

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version = VERSION,
    about = "Routes CloudEvents to signed, at-least-once webhooks, on its embedded broker or on RabbitMQ"
)]
struct Cli {
    /// Log format on stderr (also accepted after the subcommand, e.g. `run --log-format json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Run {
        /// The config directory.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// Reload when config files change (development; production sends SIGHUP).
        #[arg(long)]
        watch: bool,
    },
    /// Check everything a (re)load would load; exit 1 with file:line:col errors.
    Validate {
        /// The config directory.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
        /// Secrets absent here are provided where the router runs: do not count them as errors.
        #[arg(long)]
        allow_missing_secrets: bool,
    },
    /// Publish CloudEvents; prints each id once the broker has it.
    ///
    /// Through a router's ingest API: the one --api names, or, on the embedded broker, the router
    /// running on the config. Otherwise into the embedded queue file, or to RabbitMQ's events
    /// exchange with a publisher confirm.
    Publish {
        /// Event type, also the routing key.
        #[arg(long = "type", short = 't')]
        ty: String,
        /// `data`, as JSON.
        #[arg(long, short, default_value = "{}", value_parser = parse_json)]
        data: Box<serde_json::Value>,
        /// Event id (default: a new UUID; with --count, suffixed -1, -2, …).
        #[arg(long)]
        id: Option<String>,
        /// `source` attribute.
        #[arg(long, default_value = "hookrelay-cli")]
        source: String,
        /// `subject` attribute (tenant or entity).
        #[arg(long)]
        subject: Option<String>,
        /// `dataversion` (schema version).
        #[arg(long)]
        dataversion: Option<String>,
        /// Producer `sequence` (with --count, the first of consecutive numbers).
        #[arg(long)]
        sequence: Option<u64>,
        /// How many events to publish.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// The config directory whose [broker] to use.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// Broker URL (overrides the config).
        #[arg(long, conflicts_with = "api")]
        broker_url: Option<String>,
        /// Publish through the router's ingest API at this base URL (e.g. http://127.0.0.1:8080)
        /// instead of to the broker.
        #[arg(long)]
        api: Option<String>,
        /// API key for --api (an `ingest` or `admin` key), when the API has keys.
        #[arg(long, env = "HOOKRELAY_API_KEY")]
        api_key: Option<String>,
    },
    /// A local receiver: verifies signatures, prints events, answers a chosen status.
    Listen {
        /// Port to listen on, at the --bind address (0: any free port).
        #[arg(long, short, default_value_t = 9000)]
        port: u16,
        /// Address to listen on (0.0.0.0: every IPv4 interface).
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// The route's secret (`whsec_...`); requests that fail verification get 401.
        #[arg(long, env = "HOOKRELAY_LISTEN_SECRET", value_parser = parse_secret)]
        secret: Option<SigningKey>,
        /// Status to answer, e.g. 503 to watch retries or 400 to watch a dead letter.
        #[arg(long, default_value = "200", value_parser = parse_status)]
        status: http::StatusCode,
        /// Answer --status only to the first N requests, then 200.
        #[arg(long, default_value_t = 0)]
        fail_first: u64,
        /// Print one JSON object per request.
        #[arg(long)]
        json: bool,
    },
    /// Route tools.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Make an API key with the --scopes given (admin by default).
    ///
    /// Prints the key (give it to the caller; it is not stored anywhere) and the `[[api.keys]]`
    /// entry with its hash and scopes (put it in hookrelay.toml).
    ApiKey {
        /// Who holds the key (shown in the audit trail).
        #[arg(long, default_value = "operator")]
        name: String,
        /// Comma-separated: ingest, read, admin.
        #[arg(long, value_delimiter = ',', default_value = "admin", value_parser = ["ingest", "read", "admin"])]
        scopes: Vec<String>,
    },
    /// Make a key for HOOKRELAY_SECRET_KEY, which seals subscription secrets at rest.
    SecretKey,
    /// Make a tenant token (a JWT signed with HOOKRELAY_TOKEN_KEY, or a key derived from
    /// HOOKRELAY_SECRET_KEY): a Bearer credential for the API, and a login for /portal/, that
    /// reaches that tenant's routes only. Printed on the last line.
    Token {
        /// The config directory (checked, so that the token is made for a config that loads).
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// `read` (see) or `manage` (also change, test, rotate, replay).
        #[arg(long, default_value = "read", value_parser = ["read", "manage"])]
        scope: String,
        /// How long it is valid, e.g. 1h, 30d (at most 366d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Print a shell completion script.
    ///
    /// E.g. `hookrelay completions bash > /etc/bash_completion.d/hookrelay`, or
    /// `hookrelay completions zsh > "${fpath[1]}/_hookrelay"`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    ///
    /// E.g. `hookrelay man | man -l -`, or `hookrelay man --dir /usr/local/share/man/man1`.
    Man {
        /// Write hookrelay.1 and a page per subcommand (hookrelay-run.1, …) into this directory
        /// instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Dry run: filter, transform, and the exact request the route would send.
    Test {
        /// Route name.
        name: String,
        /// A CloudEvent (structured JSON) file.
        #[arg(long)]
        event: PathBuf,
        /// The config directory.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutFormat {
    Text,
    Json,
}

/// A bad argument the user typed, found after clap's parsing (a route name that does not
/// exist, an event file that cannot be read): reported like clap's own, with exit status 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Exit status of a usage error, as clap's.
const USAGE: u8 = 2;

fn parse_json(s: &str) -> Result<Box<serde_json::Value>, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn parse_secret(s: &str) -> Result<SigningKey, String> {
    SigningKey::from_whsec(s)
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 1h or 30d: {e}"))
}

fn parse_status(s: &str) -> Result<http::StatusCode, String> {
    let n: u16 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    http::StatusCode::from_u16(n).map_err(|_| format!("{n} is not an HTTP status (100 to 999)"))
}

/// The command line's definition. `--log-format` is global, so accepted after any subcommand,
/// but shown once, in the top-level help: each subcommand gets a hidden copy of it (clap does not
/// propagate a global argument to a subcommand that already has one).
fn cli_command() -> clap::Command {
    let cmd = Cli::command();
    let log_format = cmd.get_arguments().find(|a| a.get_id() == "log_format").expect("Cli defines --log-format");
    let hidden = log_format.clone().hide(true);
    cmd.mut_subcommands(|sc| sc.arg(hidden.clone()))
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit());
    let telemetry = telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, telemetry)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("error: {e:#}\n\nFor more information, try '--help'.");
            ExitCode::from(USAGE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`, which also
/// covers memory mapped before the call). mimalloc asks for huge pages on its arenas
/// (`MADV_HUGEPAGE`), and each 2 MiB huge page is resident as soon as one byte of it is touched:
/// with 10,000 deliveries in flight, 448 of the router's 478 MiB were huge pages, 325 MiB
/// without them, at the same CPU per event (docs/benchmarks.md). The same as
/// `MIMALLOC_ALLOW_THP=0`, which cannot be set from safe code. Best effort: a kernel without the
/// call keeps its default.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

async fn dispatch(command: Command, telemetry: telemetry::Telemetry) -> Result<ExitCode> {
    match command {
        Command::Run { config, watch } => run(config, watch, telemetry).await,
        Command::Validate { config, format, allow_missing_secrets } => {
            Ok(checks::validate(&config, format, allow_missing_secrets))
        }
        Command::Publish {
            ty,
            data,
            id,
            source,
            subject,
            dataversion,
            sequence,
            count,
            config,
            broker_url,
            api,
            api_key,
        } => {
            let ev = hookrelay::publish::EventSpec { ty, data: *data, id, source, subject, dataversion, sequence };
            if let Some(base) = api {
                hookrelay::publish::post_events(&base, api_key.as_deref(), &ev, count).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let (mut settings, mut kind) = broker_settings(&config);
            // The embedded broker's file belongs to the router while it runs: go through its
            // ingest API then, and write the file only when no router is listening.
            if broker_url.is_none()
                && matches!(kind, config::BrokerKind::Embedded(_))
                && let Some(base) = running_api(&config).await
            {
                hookrelay::publish::post_events(&base, api_key.as_deref(), &ev, count).await?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(u) = broker_url {
                settings.url = u;
                kind = config::BrokerKind::Rabbitmq;
            }
            let broker =
                hookrelay::broker::connect(config::broker_endpoint(&settings, &kind), "hookrelay publish").await?;
            let published = hookrelay::publish::publish_events(broker.as_ref(), &ev, count).await;
            broker.close().await;
            published?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Listen { port, bind, secret: key, status, fail_first, json } => {
            let stop = CancellationToken::new();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let opts = hookrelay::listen::ListenOptions { key, status, fail_first, json };
            let server = tokio::spawn(hookrelay::listen::serve((bind, port).into(), opts, stop.clone(), tx));
            if let Ok(addr) = rx.await {
                eprintln!("listening on http://{addr}/ (Ctrl-C to stop)");
            }
            tokio::select! {
                r = server => { r??; }
                _ = tokio::signal::ctrl_c() => stop.cancel(),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Route { command: RouteCommand::Test { name, event, config } } => {
            checks::route_test(&config, &name, &event)
        }
        Command::ApiKey { name, scopes } => {
            let (key, hash) = hookrelay::api::auth::generate_key();
            println!("key (give it to the caller; it is not stored anywhere): {key}");
            println!();
            println!("[[api.keys]]");
            println!("name = {name:?}");
            println!("hash = {hash:?}");
            println!("scopes = {scopes:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { config, tenant, scope, ttl } => {
            if let Err(e) = config::load_with(&config, LoadOptions { allow_missing_secrets: true }) {
                print_errors(&e);
                return Ok(ExitCode::FAILURE);
            }
            let key = hookrelay::tokens::TokenKey::from_env()?.ok_or(hookrelay::tokens::TokenError::NoKey)?;
            let scope = hookrelay::tokens::TokenScope::parse(&scope).expect("clap allows read and manage only");
            let token = key.issue(&tenant, scope, ttl).map_err(|e| Usage(e.to_string()))?;
            eprintln!(
                "tenant {tenant}, scope {}, valid for {}: use it as `Authorization: Bearer <token>` or paste it at /portal/login",
                scope.as_str(),
                humantime::format_duration(ttl)
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "hookrelay", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(cli_command()).render(&mut std::io::stdout()).context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
            clap_mangen::generate_to(cli_command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::SecretKey => {
            let key = hookrelay::store::SecretBox::generate_key().map_err(anyhow::Error::msg)?;
            println!("{key}");
            eprintln!(
                "set it as {} where hookrelay runs; keep it: subscription secrets sealed with it cannot be opened without it",
                hookrelay::store::sealed::KEY_ENV
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The broker of a config directory, else RabbitMQ with the defaults.
fn broker_settings(dir: &std::path::Path) -> (config::files::BrokerFile, config::BrokerKind) {
    config::load_with(dir, LoadOptions { allow_missing_secrets: true })
        .map(|s| (s.broker, s.broker_kind))
        .unwrap_or_else(|_| (config::files::BrokerFile::default(), config::BrokerKind::Rabbitmq))
}

/// The base URL of the router's API that `dir` configures, if one answers there.
async fn running_api(dir: &std::path::Path) -> Option<String> {
    let s = config::load_with(dir, LoadOptions { allow_missing_secrets: true }).ok()?;
    let addr: std::net::SocketAddr = s.api.listen.parse().ok()?;
    if !s.api.enabled || addr.port() == 0 {
        return None;
    }
    let reachable = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    matches!(reachable, Ok(Ok(_))).then(|| format!("http://{addr}"))
}

fn print_errors(e: &ConfigErrors) {
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    for err in &e.errors {
        eprintln!("error: {err}");
    }
}

async fn run(dir: PathBuf, watch: bool, telemetry: telemetry::Telemetry) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything slow: until a handler is installed, SIGHUP's default action kills.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let snapshot = match config::load(&dir) {
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
                _ = hup.recv() => { hookrelay::runtime::reload::reload_from_disk(&r, &d, "SIGHUP").await; }
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
