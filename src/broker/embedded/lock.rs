//! One process owns an embedded broker's file: an exclusive lock (`flock`) on `<file>.lock`,
//! which also records the owner's pid for the message another process gets. The lock is on a
//! file of its own, not on the database: SQLite's POSIX locks on the database would be dropped
//! by closing any other descriptor of it in the process.

use super::BrokerError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases the file.
#[derive(Debug)]
pub(super) struct QueueLock {
    _file: File,
}

/// The lock file of a queue file.
pub(super) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    db.with_file_name(name)
}

/// What [`acquire`] found.
pub(super) enum Acquired {
    /// This process owns the file now.
    Held(QueueLock),
    /// Another holder (process, or an engine of this process that is still stopping).
    Busy(BrokerError),
}

/// Takes the lock without waiting.
pub(super) fn acquire(db: &Path) -> Result<Acquired, BrokerError> {
    let path = lock_path(db);
    let fail = |detail: String| BrokerError::Embedded { path: db.display().to_string(), detail };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(fail(format!(
            "directory {} does not exist: create it, or set [embedded] path to a file in an existing directory",
            dir.display()
        )));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail(format!("cannot open its lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            let pid = std::process::id();
            let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{pid}"));
            if let Err(e) = written {
                return Err(fail(format!("cannot write its lock file {}: {e}", path.display())));
            }
            Ok(Acquired::Held(QueueLock { _file: file }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            let who = if owner.is_empty() { "another process".to_string() } else { format!("process {owner}") };
            Ok(Acquired::Busy(fail(format!(
                "in use by another hookrelay ({who} holds {}). One process owns an embedded broker's file: stop \
                 the other one, give this one a file of its own ([embedded] path in hookrelay.toml), or run on \
                 RabbitMQ (a [broker] section) to share queues between processes",
                path.display()
            ))))
        }
        Err(TryLockError::Error(e)) => Err(fail(format!("cannot lock {}: {e}", path.display()))),
    }
}
