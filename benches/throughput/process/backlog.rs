//! The `backlog` group's run: a router started on a queue with events waiting, its resident
//! memory while they wait, its start-up time and the queue's size.

use super::*;

/// A router started on a queue with a backlog, and what it held while the backlog waited.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backlog {
    /// Publishes per second while filling the queue, the router stopped.
    pub(crate) fill_rate: f64,
    /// The queue's size once filled: the embedded broker's file, or RabbitMQ's message bytes
    /// (management API); NaN when unknown.
    pub(crate) queue_mib: f64,
    /// From the router's start to its `consuming` line, in seconds.
    pub(crate) start_s: f64,
    /// Resident memory at the `consuming` line.
    pub(crate) rss_start_mib: f64,
    /// The median resident memory over the second half of the window.
    pub(crate) rss_steady_mib: f64,
    /// Resident memory at the end of the window.
    pub(crate) rss_end_mib: f64,
    /// Peak resident memory (`VmHWM`) at the end of the window.
    pub(crate) peak_rss_mib: f64,
    /// Deliveries during the window, and events still waiting at its end.
    pub(crate) delivered: usize,
    pub(crate) waiting: usize,
    /// Deliveries per second, first to last arrival.
    pub(crate) rate: f64,
    /// Router CPU per delivery over the window, in µs.
    pub(crate) cpu_us: f64,
}

/// Fills the route queue with `events` (the router stopped), starts a router on it with the
/// receiver answering, and samples its resident memory every 250 ms for `window` while it
/// delivers the head of the backlog and the rest waits; the window ends early once half the
/// backlog is delivered, so that at least half of it waits throughout.
pub(crate) async fn backlog(
    kind: BusKind,
    rx: &Receiver,
    s: &Scenario,
    events: usize,
    window: Duration,
    launch: &Launch,
    progress: impl Fn(usize),
) -> Result<Backlog, String> {
    let bus = kind.open();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    s.write(dir.path(), &bus, rx);
    let (first, _) = start(dir.path(), &bus, launch).await?;
    first.stop();
    let fill_rate = bus.prefill(dir.path(), s.size, events, progress).await?;
    let queue_bytes = match &bus {
        Bus::Embedded { .. } => Some(crate::embedded::file_bytes(&common::queue_file(dir.path()))),
        Bus::RabbitMq(vh) => vh.queue_bytes("hookrelay.route.bench-0", events as u64),
    };
    rx.reset(None);
    let t0 = Instant::now();
    let (router, c) = start(dir.path(), &bus, launch).await?;
    let start_s = t0.elapsed().as_secs_f64();
    let (pid, cpu0, n0) = (router.pid(), CpuSample::take(router.pid()), rx.count());
    let began = Instant::now();
    let mut samples = Vec::new();
    while began.elapsed() < window && rx.count() < events * s.routes / 2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = sys::rss_mib(pid);
        if rss == 0.0 {
            return Err(format!("the router exited during the backlog run:\n{}", router.tail()));
        }
        samples.push(rss);
    }
    let (cpu1, n1, peak) = (CpuSample::take(pid), rx.count(), sys::peak_rss_mib(pid));
    let rate = rx.rate();
    router.stop();
    let steady = crate::report::median(&samples[samples.len() / 2..]);
    Ok(Backlog {
        fill_rate,
        queue_mib: queue_bytes.map_or(f64::NAN, |b| b as f64 / 1_048_576.0),
        start_s,
        rss_start_mib: c.rss_mib,
        rss_steady_mib: steady,
        rss_end_mib: samples.last().copied().unwrap_or(f64::NAN),
        peak_rss_mib: peak,
        delivered: n1,
        waiting: (events * s.routes).saturating_sub(n1),
        rate,
        cpu_us: cpu0.per_event_us(&cpu1, n1.saturating_sub(n0)).router,
    })
}
