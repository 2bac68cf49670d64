//! The `hookrelay` command line: thin wrappers over the library. `anyhow` lives here only; the
//! commands' definitions and their longer wrappers are in `cli/`.

use anyhow::{Context, Result};
use clap::FromArgMatches;
use cli::{Cli, Command, RouteCommand, USAGE, Usage, cli_command, print_errors};
use hookrelay::config::{self, LoadOptions};
use hookrelay::telemetry;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

mod cli;

/// mimalloc instead of the system allocator: the per-event path allocates many small values
/// (JSON maps, headers, futures), and glibc's malloc was a fifth of the router's CPU time under
/// load (see docs/benchmarks.md). Metered: each thread's net allocations are counted, which is
/// how a script run is held to its memory budget (`[scripts] max_memory_bytes`).
#[global_allocator]
static ALLOCATOR: alloc_meter::Metered<alloc_meter::Mimalloc> = alloc_meter::Metered(alloc_meter::Mimalloc);

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit());
    // A command whose output is its answer logs warnings and errors only (unless RUST_LOG says).
    let quiet = matches!(cli.command, Command::Publish { .. } | Command::Plan { .. });
    let telemetry = telemetry::init_with(cli.log_format, if quiet { "warn" } else { "info" });
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
        Command::Run { config, watch, data_dir } => cli::run::run(config, data_dir, watch, telemetry).await,
        Command::Validate { config, format, allow_missing_secrets, data_dir } => {
            let opts = LoadOptions { allow_missing_secrets, data_dir, ..LoadOptions::default() };
            Ok(cli::checks::validate(&config, format, opts))
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
            data_dir,
        } => {
            let spec = hookrelay::publish::EventSpec { ty, data: *data, id, source, subject, dataversion, sequence };
            let to = cli::publish::Target { config, data_dir, broker_url, api, api_key };
            cli::publish::publish(spec, count, to).await
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
            cli::checks::route_test(&config, &name, &event)
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
            if let Err(e) = config::load_with(&config, LoadOptions::checking()) {
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
        Command::Plan { config, against: Some(base), api_key, .. } => {
            Ok(cli::plan::against(&config, &base, api_key.as_deref()).await)
        }
        Command::Plan { config, against_dir: Some(old), .. } => Ok(cli::plan::against_dir(&config, &old)),
        Command::Plan { .. } => Err(Usage("give --against URL or --against-dir DIR".into()).into()),
        Command::Init { dir } => {
            cli::init::init(&dir)?;
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
