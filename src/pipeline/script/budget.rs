//! The budgets of one script run, enforced from inside the run: memory (everything the run
//! holds, measured by the allocator), wall-clock time, and the lines `print` and `debug` may
//! log. The rendered body's cap ([`Budgets::max_body_bytes`]) is enforced by the pipeline when
//! it renders.
//!
//! Rhai's own limits bound each value (string, array and map sizes) and the operations of a
//! run, but not the total of many values, nor what it does not count (function pointers and
//! their curried values, map keys), nor time: a loop over a costly built-in stays within the
//! operations for seconds. So every run is charged for its thread's net allocations
//! ([`alloc_meter`], the router's global allocator) from its start, and Rhai's progress
//! callback, called before every operation, stops the run the moment it holds more than
//! `max_memory_bytes` or has run longer than `max_time`. One operation may overshoot by what
//! one built-in allocates, which Rhai's value limits bound.
//!
//! Without the metering allocator (a program other than the router linking the library) the
//! memory budget is not measured; everything else applies.
//!
//! A route's scripts first run where the event is, on an async worker ([`run_inline`]), for at
//! most [`Budgets::inline_allowance`] (`[scripts] inline_allowance`, default
//! [`INLINE_ALLOWANCE`]): handing every event to the script pool and back costs two thread
//! wake-ups, more than a typical filter's whole run. A run still going at the allowance is
//! stopped, its work dropped (lines it printed included: they are held until the run ends), and
//! the caller runs it again from the start on the pool, with the full budgets; after
//! [`INLINE_MISSES`] such runs in a row the route's scripts run only on the pool until the next
//! reload. Scripts have no effect but their result and their lines, so running one again
//! changes nothing. An allowance of zero runs every script on the pool from the start. A
//! program that slows the router down as a whole (valgrind runs it some fifty times slower)
//! needs a larger allowance for its scripts to take the path they take at full speed: the
//! throughput benchmark sets one when it wraps the router (docs/benchmarks.md).

use rhai::Dynamic;
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The budgets of every run: `[scripts]` in `hookrelay.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Bytes a run may hold at once, everything counted.
    pub max_memory_bytes: usize,
    /// Wall-clock time of one run.
    pub max_time: Duration,
    /// The largest body a transform may produce, rendered.
    pub max_body_bytes: usize,
    /// How long a run may go on an async worker before it moves to the script pool
    /// ([`run_inline`]); zero runs every script on the pool.
    pub inline_allowance: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            max_memory_bytes: 32 << 20,
            max_time: Duration::from_secs(1),
            max_body_bytes: 256 * 1024,
            inline_allowance: INLINE_ALLOWANCE,
        }
    }
}

/// Lines `print` and `debug` may log in one run; the rest are counted and dropped.
pub const PRINT_LINES_PER_RUN: u32 = 20;
/// Lines all scripts together may log per second (a token bucket of this size).
pub const PRINT_LINES_PER_SECOND: u32 = 50;
/// Longest line logged; longer ones are cut.
pub const PRINT_LINE_BYTES: usize = 1024;

/// How often (in operations) the clock is read: an operation costs tens of nanoseconds to a
/// few milliseconds, reading the clock about twenty nanoseconds.
const CLOCK_EVERY: u64 = 16;

#[derive(Clone, Copy)]
struct Run {
    started: Instant,
    /// The thread's net allocated bytes when the run started.
    base: Option<i64>,
    printed: u32,
}

/// How long scripts may run on an async worker before their work moves to the script pool, by
/// default (`[scripts] inline_allowance`): far above a filter's or a transform's usual run
/// (tens of microseconds), far below what would hold up the other tasks of the worker for long.
pub const INLINE_ALLOWANCE: Duration = Duration::from_millis(1);

/// Runs in a row past the inline allowance after which a script runs only on the script pool:
/// more than one, since a run can miss the allowance by being preempted rather than by its
/// own work.
pub const INLINE_MISSES: u32 = 3;

/// An inline run in progress on this thread ([`run_inline`]).
struct Inline {
    deadline: Instant,
    allowance: Duration,
    moved: bool,
    /// Lines printed, logged once the run ends where it started.
    said: Vec<(Arc<PrintLimit>, Said)>,
}

thread_local! {
    static RUN: Cell<Option<Run>> = const { Cell::new(None) };
    static INLINE: RefCell<Option<Inline>> = const { RefCell::new(None) };
}

/// Runs `work` (which runs scripts) on this thread, stopping any script still running after
/// `allowance` from now: `None` when one was stopped (what `work` returned is dropped,
/// and the lines its scripts printed with it), for the caller to run `work` again on the script
/// pool.
pub fn run_inline<T>(allowance: Duration, work: impl FnOnce() -> T) -> Option<T> {
    let inline = Inline { deadline: Instant::now() + allowance, allowance, moved: false, said: Vec::new() };
    INLINE.with(|i| *i.borrow_mut() = Some(inline));
    /// Ends the inline run even when `work` panics.
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            INLINE.with(|i| i.borrow_mut().take());
        }
    }
    let end = End;
    let out = work();
    let inline = INLINE.with(|i| i.borrow_mut().take()).expect("set above");
    drop(end);
    if inline.moved {
        return None;
    }
    for (limit, said) in inline.said {
        log(&limit, said);
    }
    Some(out)
}

/// The allowance of the inline run on this thread, if there is one and it is past it at `now`;
/// marks it moved when it is.
fn inline_over(now: Instant) -> Option<Duration> {
    INLINE.with(|i| match &mut *i.borrow_mut() {
        Some(inline) if now >= inline.deadline => {
            inline.moved = true;
            Some(inline.allowance)
        }
        _ => None,
    })
}

/// A run in progress on this thread: charged from its creation until it is dropped.
pub(super) struct RunGuard(());

impl RunGuard {
    pub(super) fn start() -> Self {
        let run = Run { started: Instant::now(), base: alloc_meter::thread_net_bytes(), printed: 0 };
        RUN.with(|r| r.set(Some(run)));
        Self(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUN.with(|r| r.set(None));
    }
}

/// Why a run was stopped: the budget it went over, as an operator reads it.
pub(super) fn over_budget(budgets: &Budgets, ops: u64) -> Option<String> {
    let run = RUN.with(Cell::get)?;
    if let (Some(base), Some(now)) = (run.base, alloc_meter::thread_net_bytes()) {
        let held = now.saturating_sub(base);
        if held > budgets.max_memory_bytes as i64 {
            return Some(format!(
                "over its memory budget: the run held {} ([scripts] max_memory_bytes = {})",
                bytes(held as u64),
                bytes(budgets.max_memory_bytes as u64)
            ));
        }
    }
    if ops.is_multiple_of(CLOCK_EVERY) {
        let now = Instant::now();
        if let Some(allowance) = inline_over(now) {
            return Some(format!("on an async worker for {allowance:?}: moved to the script pool"));
        }
        let spent = now.duration_since(run.started);
        if spent > budgets.max_time {
            return Some(format!(
                "over its time budget: ran {} ms after {ops} operations ([scripts] max_time = {})",
                spent.as_millis(),
                humantime::format_duration(budgets.max_time)
            ));
        }
    }
    None
}

/// The progress callback: stops the run with its reason as the token.
pub(super) fn progress(budgets: Budgets) -> impl Fn(u64) -> Option<Dynamic> + Send + Sync + 'static {
    move |ops| over_budget(&budgets, ops).map(Dynamic::from)
}

/// `1.5 MiB`, `300 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const K: u64 = 1024;
    match n {
        n if n >= K * K => format!("{:.1} MiB", n as f64 / (K * K) as f64),
        n if n >= K => format!("{:.1} KiB", n as f64 / K as f64),
        n => format!("{n} B"),
    }
}

/// Rate limits on `print` and `debug`: per run, and for all scripts together.
pub(super) struct PrintLimit {
    bucket: Mutex<(f64, Instant)>,
    dropped: std::sync::atomic::AtomicU64,
}

impl PrintLimit {
    pub(super) fn new() -> Self {
        Self { bucket: Mutex::new((f64::from(PRINT_LINES_PER_SECOND), Instant::now())), dropped: 0.into() }
    }

    /// Whether a line may be logged now, within the rate of all scripts together; `Some(n)`
    /// also says how many were dropped since the last one logged.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let in_rate = {
            let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let rate = f64::from(PRINT_LINES_PER_SECOND);
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                true
            } else {
                false
            }
        };
        if in_rate {
            Some(self.dropped.swap(0, Relaxed))
        } else {
            self.dropped.fetch_add(1, Relaxed);
            None
        }
    }
}

/// A line a script printed: `print(s)`, or `debug(s)` with its source and position.
pub(super) enum Said {
    Print(String),
    Debug { line: String, source: Option<String>, pos: String },
}

/// A line a script printed, within its run's limit: logged now, or, during an inline run, once
/// that run ends where it started ([`run_inline`]). False when a limit dropped it.
pub(super) fn say(limit: &Arc<PrintLimit>, said: Said) -> bool {
    let in_run = RUN.with(|r| match r.get() {
        Some(mut run) => {
            run.printed += 1;
            r.set(Some(run));
            run.printed <= PRINT_LINES_PER_RUN
        }
        None => true,
    });
    if !in_run {
        limit.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return false;
    }
    let held = INLINE.with(|i| match &mut *i.borrow_mut() {
        Some(inline) => {
            inline.said.push((limit.clone(), said));
            None
        }
        None => Some(said),
    });
    held.is_none_or(|said| log(limit, said))
}

/// Logs a line within the rate of all scripts together; false when the rate dropped it.
fn log(limit: &PrintLimit, said: Said) -> bool {
    let Some(dropped) = limit.admit() else { return false };
    match said {
        Said::Print(line) => tracing::info!(target: "hookrelay::script", dropped, "{}", cut(&line)),
        Said::Debug { line, source, pos } => {
            tracing::debug!(target: "hookrelay::script", source = source.as_deref(), %pos, dropped, "{}", cut(&line));
        }
    }
    true
}

/// `line`, cut to [`PRINT_LINE_BYTES`] on a character boundary.
pub(super) fn cut(line: &str) -> &str {
    if line.len() <= PRINT_LINE_BYTES {
        return line;
    }
    let mut end = PRINT_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}
