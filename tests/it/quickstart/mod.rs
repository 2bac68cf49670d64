//! The README's quick start as a newcomer runs it, the embedded broker under a SIGKILL, and the
//! deployment example's config.
//!
//! The quick-start test (`walkthrough`) reads the commands from README.md's "Quick start" section
//! (`readme`: so the README cannot drift from what works) and runs them on a temporary copy of
//! the repository's example config, with the working directory in that copy. `cargo run --release
//! --` becomes the binary under test. So that it can run beside other tests, it changes three
//! things, and only these: the API listens on a free port (`HOOKRELAY_API__LISTEN`, which `run`
//! and `publish` both read, so `publish` still finds the router by itself), the receiver gets
//! `--port` with another free port, and the example routes in the copy deliver to that port
//! instead of 9000. The `curl` commands are sent to the same paths with the same bodies.
//!
//! This module holds what the parts share: a process of the walkthrough ([`Proc`]).

mod kubernetes;
mod readme;
mod sigkill;
mod walkthrough;

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A process of the walkthrough, its output in files.
struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(what: &str, cwd: &Path, env: &[(String, String)], args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .env_remove("HOOKRELAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Self { child, what: what.into(), out, err, _dir: dir }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until its stderr says `needle`. (A failure prints its output: see `Drop`.)
    async fn wait_stderr(&self, needle: &str) {
        let what = format!("{} to say {needle:?} (its output follows)", self.what);
        eventually(what, T, async || self.stderr().contains(needle), |said| *said).await;
    }

    /// SIGTERM, then the exit status.
    async fn term(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let what = format!("{} to exit after SIGTERM (its output follows)", self.what);
        eventually(what, T, async || self.child.try_wait().unwrap(), Option::is_some).await.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
                self.what,
                self.stdout(),
                self.what,
                self.stderr()
            );
        }
    }
}
