//! The data directory: where hookrelay keeps its state, the SQLite store (`hookrelay.db`) and
//! the embedded broker's queue file (`hookrelay-queue.db`), with their `-wal`, `-shm` and
//! `.lock` files.
//!
//! Which one, first found wins: `--data-dir`, then `HOOKRELAY_DATA_DIR`, then `[data] dir` in
//! `hookrelay.toml` (relative to the config directory), then `data/` in the config directory.
//! The default sits beside the config rather than in the working directory, so that
//! `--config DIR` takes the state along and the repository the quick start runs in stays clean
//! (`data/` is git-ignored); a read-only config mount (a Kubernetes ConfigMap) sets
//! `HOOKRELAY_DATA_DIR` to a writable volume instead.
//!
//! Relative state paths (`[store] url = "sqlite://hookrelay.db"`, `[embedded] path`) are
//! resolved in the data directory when the config loads; absolute ones are kept as written.
//! Nothing here touches the disk but [`DataDir::prepare`], which the router and an offline
//! `publish` call before they open a file.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The variable that names the data directory (below `--data-dir`, above `[data] dir`).
pub const ENV: &str = "HOOKRELAY_DATA_DIR";

/// The data directory in the config directory when nothing names one.
pub const DEFAULT: &str = "data";

/// `[data]` of `hookrelay.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataFile {
    /// The data directory, relative to the config directory. Default `data`. `--data-dir` and
    /// `HOOKRELAY_DATA_DIR` win over it.
    pub dir: Option<PathBuf>,
}

/// Where the data directory's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataDirFrom {
    /// `--data-dir`.
    Flag,
    /// `HOOKRELAY_DATA_DIR`.
    Environment,
    /// `[data] dir` in `hookrelay.toml`.
    File,
    /// `data/` in the config directory.
    Default,
}

impl DataDirFrom {
    /// How the log and `validate` name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Flag => "--data-dir",
            Self::Environment => ENV,
            Self::File => "[data] dir in hookrelay.toml",
            Self::Default => "the default, data/ in the config directory",
        }
    }
}

/// The data directory, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// Absolute (made so without touching the disk).
    pub path: PathBuf,
    /// Where its name came from.
    pub from: DataDirFrom,
}

impl DataDir {
    /// The data directory of the config in `config_dir`: `flag`, else `env` (the value of
    /// [`ENV`]), else `file` (relative to the config directory), else [`DEFAULT`] there.
    pub fn resolve(config_dir: &Path, flag: Option<&Path>, env: Option<&Path>, file: Option<&Path>) -> Self {
        let non_empty = |p: Option<&Path>| p.filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf);
        let (path, from) = if let Some(p) = non_empty(flag) {
            (p, DataDirFrom::Flag)
        } else if let Some(p) = non_empty(env) {
            (p, DataDirFrom::Environment)
        } else if let Some(p) = non_empty(file) {
            (config_dir.join(p), DataDirFrom::File)
        } else {
            (config_dir.join(DEFAULT), DataDirFrom::Default)
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        Self { path: normalize(&path), from }
    }

    /// `path` in the data directory when it is relative; as it is when absolute.
    pub fn place(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { normalize(&self.path.join(path)) }
    }

    /// A `sqlite:` store URL with a relative file placed in the data directory; any other URL
    /// (absolute files, `:memory:`, PostgreSQL) as it is.
    pub fn store_url(&self, url: &str) -> String {
        match sqlite_file(url) {
            Some((file, query)) if file.is_relative() => {
                format!("sqlite://{}{query}", self.place(&file).display())
            }
            _ => url.to_string(),
        }
    }

    /// Creates the directories the state files in `files` go in (the data directory itself
    /// when one of them is there). Directories that exist are left alone.
    pub fn prepare<'a>(&self, files: impl IntoIterator<Item = &'a Path>) -> std::io::Result<()> {
        for f in files {
            if let Some(parent) = f.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create {} for {}: {e} (choose a writable data directory with --data-dir, \
                             {ENV} or [data] dir)",
                            parent.display(),
                            f.display()
                        ),
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// The file of a `sqlite:` URL and the rest (`?mode=…`), unless it is in memory.
pub fn sqlite_file(url: &str) -> Option<(PathBuf, &str)> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    if file.is_empty() || file.starts_with(":memory:") || query.contains("mode=memory") {
        return None;
    }
    Some((PathBuf::from(file), query))
}

/// `a/./b/../c` as `a/c`, without asking the disk (a data directory need not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_environment_then_the_file_then_the_default() {
        let cfg = Path::new("/etc/hookrelay");
        let (flag, env, file) = (Path::new("/f"), Path::new("/e"), Path::new("state"));
        let d = DataDir::resolve(cfg, Some(flag), Some(env), Some(file));
        assert_eq!((d.path.as_path(), d.from), (flag, DataDirFrom::Flag));
        let d = DataDir::resolve(cfg, None, Some(env), Some(file));
        assert_eq!((d.path.as_path(), d.from), (env, DataDirFrom::Environment));
        let d = DataDir::resolve(cfg, None, Some(Path::new("")), Some(file));
        assert_eq!((d.path.as_path(), d.from), (Path::new("/etc/hookrelay/state"), DataDirFrom::File));
        let d = DataDir::resolve(cfg, None, None, None);
        assert_eq!((d.path.as_path(), d.from), (Path::new("/etc/hookrelay/data"), DataDirFrom::Default));
        let d = DataDir::resolve(Path::new("/etc/hookrelay/./x/.."), None, None, Some(Path::new("../state")));
        assert_eq!(d.path, Path::new("/etc/state"));
    }

    #[test]
    fn relative_state_files_go_in_the_data_directory_and_absolute_ones_stay() {
        let d = DataDir { path: "/var/lib/hookrelay".into(), from: DataDirFrom::Flag };
        assert_eq!(d.store_url("sqlite://hookrelay.db"), "sqlite:///var/lib/hookrelay/hookrelay.db");
        assert_eq!(d.store_url("sqlite:log.db?mode=rwc"), "sqlite:///var/lib/hookrelay/log.db?mode=rwc");
        assert_eq!(d.store_url("sqlite:///srv/h.db"), "sqlite:///srv/h.db");
        assert_eq!(d.store_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(d.store_url("postgres://h@db/h"), "postgres://h@db/h");
        assert_eq!(d.place(Path::new("q.db")), Path::new("/var/lib/hookrelay/q.db"));
        assert_eq!(d.place(Path::new("/srv/q.db")), Path::new("/srv/q.db"));
    }
}
