//! The command line's definition (clap) and what its commands share; one module per command
//! that is more than a call into the library: `run`, `publish`, `checks` (`validate`,
//! `route test`), `init`, `plan`.

pub(crate) mod checks;
pub(crate) mod init;
pub(crate) mod plan;
pub(crate) mod publish;
pub(crate) mod run;

use clap::{CommandFactory, Parser, Subcommand};
use hookrelay::config::error::ConfigErrors;
use hookrelay::delivery::http::sign::SigningKey;
use hookrelay::telemetry::LogFormat;
use std::path::PathBuf;

/// `hookrelay --version`: the package version and the git revision it was built from
/// (`unknown` when built outside a git checkout; see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOOKRELAY_GIT_REV"), ")");

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version = VERSION,
    about = "Routes CloudEvents to signed, at-least-once webhooks, on its embedded broker or on RabbitMQ"
)]
pub(crate) struct Cli {
    /// Log format on stderr (also accepted after the subcommand, e.g. `run --log-format json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the router.
    Run {
        /// The config directory.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// Reload when config files change (development; production sends SIGHUP).
        #[arg(long)]
        watch: bool,
        /// Where the state files go (the store, the queue file). Default: HOOKRELAY_DATA_DIR, else
        /// [data] dir in hookrelay.toml, else data/ in the config directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
        /// The data directory to check against (as `run --data-dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
        /// The data directory whose queue file to write when no router runs (as `run --data-dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
    /// Make a config repository to start from: a route, a schema, a plugin, a README and a CI job
    /// that runs `hookrelay validate` on every change.
    Init {
        /// Where (absent or empty).
        dir: PathBuf,
    },
    /// What a reload to --config would change: routes added, removed and changed (bindings,
    /// queues, workers), as the router computes it; exit 1 when --config does not load, 2 when
    /// the router would refuse it.
    ///
    /// Against a running router (--against URL: it is sent the files of --config and plans them
    /// against the config it runs, with its own secrets and data directory; it never sends its
    /// own files), or against another config directory (--against-dir).
    #[command(group(clap::ArgGroup::new("old").required(true).args(["against", "against_dir"])))]
    Plan {
        /// The new config directory.
        #[arg(long, short, env = "HOOKRELAY_CONFIG", default_value = ".")]
        config: PathBuf,
        /// A running router's API base URL (e.g. http://127.0.0.1:8080).
        #[arg(long)]
        against: Option<String>,
        /// The config running now (e.g. a checkout of the main branch).
        #[arg(long)]
        against_dir: Option<PathBuf>,
        /// API key for --against (an `admin` key), when the API has keys.
        #[arg(long, env = "HOOKRELAY_API_KEY")]
        api_key: Option<String>,
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
pub(crate) enum RouteCommand {
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
pub(crate) enum OutFormat {
    Text,
    Json,
}

/// A bad argument the user typed, found after clap's parsing (a route name that does not
/// exist, an event file that cannot be read): reported like clap's own, with exit status 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Exit status of a usage error, as clap's.
pub(crate) const USAGE: u8 = 2;

pub(crate) fn parse_json(s: &str) -> Result<Box<serde_json::Value>, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

pub(crate) fn parse_secret(s: &str) -> Result<SigningKey, String> {
    SigningKey::from_whsec(s)
}

pub(crate) fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 1h or 30d: {e}"))
}

pub(crate) fn parse_status(s: &str) -> Result<http::StatusCode, String> {
    let n: u16 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    http::StatusCode::from_u16(n).map_err(|_| format!("{n} is not an HTTP status (100 to 999)"))
}

/// The command line's definition. `--log-format` is global, so accepted after any subcommand,
/// but shown once, in the top-level help: each subcommand gets a hidden copy of it (clap does not
/// propagate a global argument to a subcommand that already has one).
pub(crate) fn cli_command() -> clap::Command {
    let cmd = Cli::command();
    let log_format = cmd.get_arguments().find(|a| a.get_id() == "log_format").expect("Cli defines --log-format");
    let hidden = log_format.clone().hide(true);
    cmd.mut_subcommands(|sc| sc.arg(hidden.clone()))
}

/// Prints a load's warnings and errors on stderr.
pub(crate) fn print_errors(e: &ConfigErrors) {
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    for err in &e.errors {
        eprintln!("error: {err}");
    }
}
