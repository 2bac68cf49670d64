//! Help, completions, the man page and `--version` (issue 17): what each says, and that the
//! build script names the git revision (or `unknown`) and never fails.

use super::{hookrelay, local_cfg, text};
use crate::common::*;
use std::process::Command;

/// The binary with `args`, without a config or secrets in its environment.
fn bare(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).env_remove("HOOKRELAY_CONFIG").env("NO_COLOR", "1").output().unwrap()
}

/// `--help` of `args`, which must succeed.
fn help(args: &[&str]) -> String {
    let out = bare(&[args, &["--help"][..]].concat());
    assert!(out.status.success(), "{args:?} --help: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every subcommand path, e.g. `["route", "test"]`, as the top-level help and `route --help` list them.
fn subcommands() -> Vec<Vec<&'static str>> {
    let mut all: Vec<Vec<&str>> =
        ["run", "validate", "publish", "listen", "route", "api-key", "secret-key", "completions", "man"]
            .iter()
            .map(|c| vec![*c])
            .collect();
    all.push(vec!["route", "test"]);
    let top = help(&[]);
    for c in all.iter().filter(|c| c.len() == 1) {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(&format!("{} ", c[0]))),
            "top-level help lists {c:?}:\n{top}"
        );
    }
    all
}

#[test]
fn the_top_level_help_names_both_brokers() {
    let top = help(&[]);
    assert!(!top.contains("from RabbitMQ"), "the default broker is the embedded one:\n{top}");
    assert!(top.contains("embedded broker") && top.contains("RabbitMQ"), "{top}");
}

#[test]
fn publish_help_says_where_events_go_on_each_broker() {
    let publish = help(&["publish"]);
    assert!(!publish.contains("Publish a CloudEvent to the events exchange"), "{publish}");
    for says in ["ingest API", "--api", "embedded queue file", "RabbitMQ"] {
        assert!(publish.contains(says), "publish --help says {says:?}:\n{publish}");
    }
}

#[test]
fn api_key_makes_the_scopes_it_is_given_and_its_help_says_so() {
    let api_key = help(&["api-key"]);
    assert!(!api_key.contains("admin key"), "{api_key}");
    assert!(api_key.contains("--scopes given (admin by default)"), "{api_key}");
    let out = bare(&["api-key", "--name", "ci", "--scopes", "ingest,read"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("scopes = [\"ingest\", \"read\"]") && !stdout.contains("admin"), "{stdout}");
}

#[test]
fn listen_port_is_on_the_bind_address() {
    let listen = help(&["listen"]);
    // What the help says about --port: its line, and the lines after it up to the next option.
    let mut lines = listen.lines().skip_while(|l| !l.trim_start().starts_with("-p, --port"));
    let first = lines.next().unwrap_or_default();
    let port: String = std::iter::once(first).chain(lines.take_while(|l| !l.trim_start().starts_with('-'))).collect();
    assert!(port.contains("at the --bind address") && !port.contains("127.0.0.1"), "{listen}");
    // And so it is: on 127.0.0.2, a port the system picks.
    let mut child = Command::new(bin())
        .args(["listen", "--bind", "127.0.0.2", "--port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stderr.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr = line.trim().strip_prefix("listening on http://").and_then(|r| r.split('/').next()).unwrap_or_default();
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.2", "{line}");
    assert_ne!(addr.port(), 0, "{line}");
}

#[test]
fn log_format_is_shown_once_and_accepted_after_any_subcommand() {
    let top = help(&[]);
    assert_eq!(top.lines().filter(|l| l.trim_start().starts_with("--log-format")).count(), 1, "{top}");
    for sub in subcommands() {
        let h = help(&sub);
        assert!(!h.contains("--log-format"), "{sub:?} --help repeats --log-format:\n{h}");
    }
    let cfg = local_cfg();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/"));
    cfg.file("ok.json", r#"{"specversion":"1.0","id":"e1","source":"s","type":"order.paid","data":{"n":1}}"#);
    let event = cfg.path().join("ok.json").display().to_string();
    for args in [
        &["--log-format", "json", "validate"][..],
        &["validate", "--log-format", "json"],
        &["route", "test", "r", "--event", &event, "--log-format", "json"],
    ] {
        let out = hookrelay(args, &cfg);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let out = hookrelay(&["validate", "--log-format", "yaml"], &cfg);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid value 'yaml' for '--log-format"), "{}", text(&out));
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let out = bare(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hookrelay.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash offers after `hookrelay <words…><TAB>`, the script sourced as a shell would.
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; _hookrelay hookrelay \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["--norc", "-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{words}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(complete("hookrelay pub"), ["publish"]);
    assert!(complete("hookrelay ''").iter().any(|w| w == "route"), "{:?}", complete("hookrelay ''"));
    assert_eq!(
        complete("hookrelay route ''").iter().filter(|w| !w.starts_with('-')).collect::<Vec<_>>(),
        ["test", "help"]
    );
    assert!(
        complete("hookrelay listen --st").contains(&"--status".to_string()),
        "{:?}",
        complete("hookrelay listen --st")
    );
    assert_eq!(complete("hookrelay completions f"), ["fish"]);
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for (shell, marker) in [("zsh", "#compdef hookrelay"), ("fish", "complete -c hookrelay")] {
        let out = bare(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["run", "validate", "publish", "listen", "route", "test", "api-key", "secret-key", "man"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = bare(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_man_page_documents_every_subcommand() {
    let out = bare(&["man"]);
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH hookrelay 1"), "{page}");
    for sub in ["run", "validate", "publish", "listen", "route", "api-key", "secret-key", "completions"] {
        let roff = sub.replace('-', "\\-");
        assert!(page.contains(&format!("hookrelay\\-{roff}(1)")), "the page lists {sub}:\n{page}");
    }
    assert!(page.contains("\\-\\-log\\-format"), "{page}");
    // Rendered as `man` would, where groff is installed.
    // (-P-cbou: plain text, no overstrike; words compared with the line breaks taken out.)
    if let Ok(mut groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        std::io::Write::write_all(&mut groff.stdin.take().unwrap(), &out.stdout).unwrap();
        let shown = String::from_utf8_lossy(&groff.wait_with_output().unwrap().stdout).into_owned();
        let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
        for says in ["NAME hookrelay - Routes CloudEvents", "embedded broker", "SUBCOMMANDS", "Run the router"] {
            assert!(words.contains(says), "the rendered page says {says:?}:\n{shown}");
        }
    }
    // One page per subcommand with --dir.
    let dir = tempfile::tempdir().unwrap();
    let out = bare(&["man", "--dir", &dir.path().join("man1").display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    for page in ["hookrelay.1", "hookrelay-run.1", "hookrelay-route.1", "hookrelay-route-test.1", "hookrelay-listen.1"]
    {
        let body =
            std::fs::read_to_string(dir.path().join("man1").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH"), "{page}: {body}");
    }
}

/// One line of git's output in `dir`, if git answers there.
fn git_line(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

#[test]
fn version_names_the_git_revision_it_was_built_from() {
    let out = bare(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    // build.rs gives the tests the same HOOKRELAY_GIT_REV as the binary (one build script run):
    // the revision at build time, which HEAD may have moved past since.
    let built = env!("HOOKRELAY_GIT_REV");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hookrelay {} ({built})", env!("CARGO_PKG_VERSION"))
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let checkout = git_line(repo, &["rev-parse", "--show-toplevel"])
        .is_some_and(|top| std::path::Path::new(&top).canonicalize().ok() == repo.canonicalize().ok());
    if checkout {
        // A commit of this repository, in git's short form.
        let full = git_line(repo, &["rev-parse", "--verify", &format!("{built}^{{commit}}")]);
        assert!(full.is_some_and(|f| f.starts_with(built)), "{built} is not a commit of {}", repo.display());
    } else {
        assert_eq!(built, "unknown");
    }
}

#[test]
fn the_build_script_names_the_revision_or_unknown_and_never_fails() {
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("build-script");
    let compiled = Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .args(["--edition", "2024", "-o"])
        .arg(&script)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{}", text(&compiled));
    let run = |manifest_dir: &std::path::Path, rev_env: Option<&str>| {
        let mut cmd = Command::new(&script);
        cmd.env("CARGO_MANIFEST_DIR", manifest_dir).env_remove("HOOKRELAY_GIT_REV");
        if let Some(rev) = rev_env {
            cmd.env("HOOKRELAY_GIT_REV", rev);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}: {}", manifest_dir.display(), text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let rev =
            stdout.lines().find_map(|l| l.strip_prefix("cargo::rustc-env=HOOKRELAY_GIT_REV=")).map(str::to_string);
        (rev.unwrap_or_else(|| panic!("no HOOKRELAY_GIT_REV in {stdout}")), stdout)
    };
    // Unpacked sources, no .git: `unknown`.
    let tarball = work.path().join("tarball");
    std::fs::create_dir_all(&tarball).unwrap();
    assert_eq!(run(&tarball, None).0, "unknown");
    // A checkout of its own: its HEAD, and cargo told to run again when HEAD or the branch moves.
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "one"]);
    let head = git_line(&repo, &["rev-parse", "--short", "HEAD"]).unwrap();
    let (rev, stdout) = run(&repo, None);
    assert_eq!(rev, head);
    assert!(stdout.contains("cargo::rerun-if-changed=") && stdout.contains("HEAD"), "{stdout}");
    assert!(stdout.contains("refs/heads/main"), "{stdout}");
    // A package inside someone else's repository is not that repository's revision.
    assert_eq!(run(&repo.join("sub"), None).0, "unknown");
    // The builder's own value wins.
    assert_eq!(run(&tarball, Some("1a2b3c4")).0, "1a2b3c4");
}
