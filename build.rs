//! Build script: the git revision for `hookrelay --version`, as `HOOKRELAY_GIT_REV`.
//!
//! `git rev-parse --short HEAD` in a git checkout whose top level is this package; `unknown`
//! anywhere else (a tarball without `.git`, a package unpacked inside another repository, no
//! `git` on PATH), so the build never fails for want of git. `HOOKRELAY_GIT_REV` set in the build's
//! environment wins (e.g. a container build that copies the sources without `.git`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=HOOKRELAY_GIT_REV");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let rev = match std::env::var("HOOKRELAY_GIT_REV") {
        Ok(rev) if !rev.trim().is_empty() => rev.trim().to_string(),
        _ => git_revision(&dir).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo::rustc-env=HOOKRELAY_GIT_REV={rev}");
}

/// The short revision of HEAD, when `dir` is the top level of a git work tree; also tells cargo to
/// run this again when HEAD moves (a commit, a checkout).
fn git_revision(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let rev = git(dir, &["rev-parse", "--short", "HEAD"])?;
    // HEAD itself changes on a checkout; the branch it points to (a loose ref, or packed-refs)
    // changes on a commit. Paths through `--git-path`, which knows linked work trees.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo run this script on every build.
            if path.exists() {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
    }
    Some(rev)
}

/// One line of a successful git command's output.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}
