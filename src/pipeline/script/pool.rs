//! The threads scripts run on: tokio's blocking pool, at most [`ScriptPool::size`] runs at once,
//! never the async runtime's workers. A script that burns its whole time budget then occupies
//! one of these threads, not a worker that serves the API, health checks and other routes'
//! deliveries; when all are busy, the next scripted event waits for a free one (routes without
//! scripts do not wait).

use std::sync::Arc;
use tokio::sync::Semaphore;

/// A bounded pool of blocking threads for script runs.
#[derive(Debug, Clone)]
pub struct ScriptPool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl ScriptPool {
    /// At most `size` runs at once (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self { permits: Arc::new(Semaphore::new(size)), size }
    }

    /// The default size: the machine's cores.
    pub fn default_size() -> usize {
        std::thread::available_parallelism().map_or(2, usize::from)
    }

    /// How many runs may go at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `work` on a blocking thread once one of the pool's places is free. A panic in
    /// `work` is resumed here, as if it had run inline.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let done = tokio::task::spawn_blocking(move || {
            let _place = permit;
            work()
        })
        .await;
        match done {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime shuts down, which drops this future too.
            Err(e) => panic!("script run cancelled: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "current_thread")]
    async fn runs_off_the_runtime_and_no_more_than_its_size_at_once() {
        let pool = ScriptPool::new(2);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Each pair meets at the barrier: the runs finish only if two can run at once.
        let meet = Arc::new(std::sync::Barrier::new(2));
        let runtime_thread = std::thread::current().id();
        let runs = (0..6).map(|_| {
            let (now, most, meet) = (now.clone(), most.clone(), meet.clone());
            pool.run(move || {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                meet.wait();
                now.fetch_sub(1, Ordering::SeqCst);
                std::thread::current().id()
            })
        });
        let threads = futures_util::future::join_all(runs).await;
        assert!(threads.iter().all(|t| *t != runtime_thread), "never on the runtime's thread");
        assert_eq!(most.load(Ordering::SeqCst), 2, "never more than the pool's size");
    }
}
