//! The data directory: where the state files go, chosen by `--data-dir`, `HOOKRELAY_DATA_DIR`,
//! `[data] dir` or the default (`data/` in the config directory), in that order; never the
//! working directory.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The files in `dir` (none when it does not exist), sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `[data] dir`, `HOOKRELAY_DATA_DIR`, `--data-dir`, and the `data_dir_from` they make.
type Case<'a> = (Option<&'a str>, Option<&'a Path>, Option<&'a Path>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_go_in_the_data_directory_the_flag_the_variable_or_the_file_names() {
    let elsewhere = tempfile::tempdir().unwrap();
    let (by_flag, by_env) = (elsewhere.path().join("by-flag"), elsewhere.path().join("by-env"));
    // (`[data] dir`, HOOKRELAY_DATA_DIR, --data-dir) → where, and how GET /v1/config names it.
    let cases: [Case; 4] = [
        (None, None, None, "default"),
        (Some("state"), None, None, "file"),
        (Some("state"), Some(&by_env), None, "environment"),
        (Some("state"), Some(&by_env), Some(&by_flag), "flag"),
    ];
    for (file, env, flag, from) in cases {
        // Relative state paths, as the defaults are: they go in the data directory.
        let data = file.map(|d| format!("[data]\ndir = \"{d}\"\n")).unwrap_or_default();
        let cfg = ConfigDir::with_main_text(&format!(
            "version = 1\n{data}[store]\nurl = \"sqlite://hookrelay.db\"\n[api]\nlisten = \"127.0.0.1:0\"\n"
        ));
        let want: PathBuf = match (file, env, flag) {
            (_, _, Some(f)) => f.to_path_buf(),
            (_, Some(e), None) => e.to_path_buf(),
            (Some(d), None, None) => cfg.path().join(d),
            (None, None, None) => cfg.path().join("data"),
        };
        assert!(!want.exists());
        let cwd = tempfile::tempdir().unwrap();
        let flag_args: Vec<&str> = flag.map(|f| vec!["--data-dir", f.to_str().unwrap()]).unwrap_or_default();
        let env_vars: Vec<(&str, &str)> =
            env.map(|e| vec![("HOOKRELAY_DATA_DIR", e.to_str().unwrap())]).unwrap_or_default();
        let mut router = RouterProc::start_in(&cfg, Some(cwd.path()), &flag_args, &env_vars);
        router.wait_log("consuming", T).await;
        assert!(router.log_text().contains(&format!("data directory {}", want.display())), "case {from}");

        let config = Api::new(&router.api().await, None).get("/v1/config").await;
        let config = config.expect(200);
        assert_eq!(config["data_dir"], want.display().to_string(), "case {from}: {config}");
        assert_eq!(config["data_dir_from"], from);
        let found = files_in(&want);
        for f in ["hookrelay.db", "hookrelay-queue.db", "hookrelay-queue.db.lock"] {
            assert!(found.iter().any(|n| n == f), "case {from}: {f} in {}: {found:?}", want.display());
        }
        assert_eq!(files_in(cwd.path()), Vec::<String>::new(), "case {from}: nothing in the working directory");
        for other in [cfg.path().join("data"), cfg.path().join("state"), by_env.clone(), by_flag.clone()] {
            if other != want {
                assert!(!other.exists() || files_in(&other).is_empty(), "case {from}: {} is not used", other.display());
            }
        }
        assert!(router.term(T).await.success());

        // `validate` names the same directory, and where it came from.
        let mut validate = std::process::Command::new(bin());
        validate.args(["validate", "--config"]).arg(cfg.path()).args(&flag_args).envs(env_vars.iter().copied());
        let out = validate.current_dir(cwd.path()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("data directory: {}", want.display())), "case {from}: {text}");
        std::fs::remove_dir_all(&want).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_would_move_the_data_directory_is_refused() {
    let cfg = ConfigDir::with_main_text("version = 1\n");
    let router = RouterProc::start(&cfg);
    router.wait_log("consuming", T).await;
    let main = std::fs::read_to_string(cfg.path().join("hookrelay.toml")).unwrap();
    cfg.file("hookrelay.toml", &format!("{main}\n[data]\ndir = \"elsewhere\"\n"));
    let line = router.reload().await;
    assert!(line.contains("reload rejected"), "{line}");
    let log = router.log_text();
    assert!(log.contains("hookrelay.toml: the data directory applies at start only"), "{log}");
    assert!(!cfg.path().join("elsewhere").exists());
}
