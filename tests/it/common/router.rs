//! The router as a real process ([`RouterProc`]: the `hookrelay` binary of this build, its log in a
//! file, printed when a test fails), driven by signals and read through its log.

use super::{ConfigDir, SEALING_KEY, SECRET, SECRET_ENV, eventually};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookrelay")
}

/// The router as a real process, its log in a file.
pub struct RouterProc {
    child: Child,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl RouterProc {
    pub fn start(cfg: &ConfigDir) -> Self {
        Self::start_with(cfg, &[])
    }

    /// Starts with extra arguments after `run --config DIR`.
    pub fn start_with(cfg: &ConfigDir, extra: &[&str]) -> Self {
        Self::start_with_env(cfg, extra, &[])
    }

    /// Starts with extra arguments and extra environment variables.
    pub fn start_with_env(cfg: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(cfg, None, extra, env)
    }

    /// Starts in the working directory `cwd` (the test's own when `None`).
    pub fn start_in(cfg: &ConfigDir, cwd: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("router.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(cfg.path())
            .args(extra)
            .env(SECRET_ENV, SECRET)
            .env("HOOKRELAY_SECRET_KEY", SEALING_KEY)
            .env("RUST_LOG", "info,hookrelay=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start hookrelay");
        Self { child, log, _logdir: logdir }
    }

    /// Starts and waits until it consumes.
    pub async fn ready(cfg: &ConfigDir) -> Self {
        let p = Self::start(cfg);
        p.wait_log("consuming", Duration::from_secs(30)).await;
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin API's base URL, from the log (`api listening on http://…`).
    pub async fn api(&self) -> String {
        self.wait_log("api listening on http://", Duration::from_secs(30)).await;
        let text = self.log_text();
        let line = text.lines().find(|l| l.contains("api listening on http://")).unwrap();
        let start = line.find("http://").unwrap();
        line[start..].split_whitespace().next().unwrap().to_string()
    }

    /// Waits until the log says `needle`. (A failure prints the log: see `Drop`.)
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout).await;
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` appears in at least `n` log lines.
    pub async fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let what = format!("{n} router log lines saying {needle:?} (the log follows), lines so far");
        eventually(what, timeout, async || self.log_count(needle), |seen| *seen >= n).await;
    }

    /// Sends SIGHUP and waits for the reload's outcome in the log; returns the log line.
    pub async fn reload(&self) -> String {
        let outcomes = || (self.log_count("config reloaded"), self.log_count("reload rejected"));
        let before = outcomes();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGHUP).unwrap();
        let what =
            format!("a reload outcome after SIGHUP (the log follows); (applied, rejected) before: {before:?}, now");
        eventually(what, Duration::from_secs(30), async || outcomes(), |now| *now != before).await;
        self.log_text()
            .lines()
            .rfind(|l| l.contains("config reloaded") || l.contains("reload rejected"))
            .unwrap()
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn kill(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (within `timeout`).
    pub async fn term(&mut self, timeout: Duration) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
        let what = "the router to exit after SIGTERM (the log follows)";
        eventually(what, timeout, async || self.child.try_wait().unwrap(), Option::is_some).await.unwrap()
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- router log ---\n{}", self.log_text());
        }
    }
}
