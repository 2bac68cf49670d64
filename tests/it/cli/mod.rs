//! The command line as a user types it: every class of config error with its place and exit
//! status (`errors`), validate on good and bad configs and run refusing a bad one (`validate`),
//! route test, publish, listen and the exit status of usage errors (`commands`), and help,
//! completions, the man page and `--version` (`help`).
//!
//! This module holds how they run the binary.

mod commands;
mod errors;
mod help;
mod validate;

use crate::common::*;
use std::process::Command;

fn hookrelay(args: &[&str], cfg: &ConfigDir) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn local_cfg() -> ConfigDir {
    ConfigDir::with(MainConfig::new().version(7).loopback_targets())
}
