//! What the harness reads from `/proc`: CPU time (user + system) of a process, its resident
//! memory now (`VmRSS`), at its peak (`VmHWM`) and in transparent huge pages, and the RabbitMQ
//! node's CPU time, so that a run can say where the machine's CPU and memory went per event.

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` (`CLK_TCK`, 100 on Linux).
const TICKS: f64 = 100.0;

fn stat_cpu(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / TICKS
}

/// CPU seconds (user + system) used by `pid` so far, all its threads included.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU seconds used by this process (the harness: publishers, receiver, bare clients).
pub(crate) fn own_cpu_seconds() -> f64 {
    stat_cpu(Path::new("/proc/self/stat"))
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` now, in MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") as f64 / 1024.0
}

/// Peak resident memory of `pid` so far, in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") as f64 / 1024.0
}

/// Anonymous memory of `pid` in transparent huge pages now (`AnonHugePages` of
/// `/proc/PID/smaps_rollup`), in MiB.
pub(crate) fn huge_mib(pid: u32) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds used so far by the local RabbitMQ node (every `beam.smp` process), or 0 when it
/// is not on this machine.
pub(crate) fn broker_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "beam.smp"))
        .map(|e| stat_cpu(&e.path().join("stat")))
        .sum()
}

/// CPU seconds of the router, the broker and the harness at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    pub(crate) router: f64,
    pub(crate) broker: f64,
    pub(crate) harness: f64,
}

impl CpuSample {
    /// Now, for the router `pid`.
    pub(crate) fn take(pid: u32) -> Self {
        Self { router: cpu_seconds(pid), broker: broker_cpu_seconds(), harness: own_cpu_seconds() }
    }

    /// Microseconds per event of each, from `self` to `later`, over `events`.
    pub(crate) fn per_event_us(&self, later: &Self, events: usize) -> CpuSample {
        let per = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / events.max(1) as f64;
        CpuSample {
            router: per(self.router, later.router),
            broker: per(self.broker, later.broker),
            harness: per(self.harness, later.harness),
        }
    }
}
