//! The minimal HTTP receiver on loopback every run delivers to: it reads each body, answers 200,
//! and records when requests arrive. For latency runs it also notes the arrival of each event
//! (by its `webhook-id`) on a [`Timeline`] the publisher marks at publish time. In hold mode it
//! keeps every request open until released, which is how a run gets 10,000 deliveries in flight;
//! in slow mode it takes a fixed time per request (the per-key order group).

use crate::common::event_index;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Publish and arrival times of events `0..n`, in nanoseconds since one instant.
pub(crate) struct Timeline {
    epoch: Instant,
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
}

impl Timeline {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Event `i` is being published now.
    pub(crate) fn sent(&self, i: usize) {
        if let Some(t) = self.sent.get(i) {
            t.store(self.now(), Ordering::Relaxed);
        }
    }

    fn arrived(&self, i: usize) {
        if let Some(t) = self.arrived.get(i) {
            let _ = t.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Arrival − publish, in milliseconds, of every event after the first `skip`, sorted.
    pub(crate) fn latencies_ms(&self, skip: usize) -> Vec<f64> {
        let mut out: Vec<f64> = self
            .sent
            .iter()
            .zip(&self.arrived)
            .skip(skip)
            .filter_map(|(s, a)| {
                let (s, a) = (s.load(Ordering::Relaxed), a.load(Ordering::Relaxed));
                (s > 0 && a >= s).then(|| (a - s) as f64 / 1e6)
            })
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }
}

/// The `q` quantile (0..=1) of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct State {
    count: AtomicUsize,
    held: AtomicUsize,
    /// Milliseconds each request takes to answer (0: at once).
    delay_ms: AtomicU64,
    /// Nanoseconds since `epoch` (+1) of the first and last arrival of the current run.
    first: AtomicU64,
    last: AtomicU64,
    timeline: Mutex<Option<Arc<Timeline>>>,
}

/// The receiver: its base URL and what it has seen since the last [`Receiver::reset`].
pub(crate) struct Receiver {
    pub(crate) addr: String,
    state: Arc<State>,
    hold: watch::Sender<bool>,
}

impl Receiver {
    /// Listens on `127.0.0.1:0` and serves until the process ends.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let epoch = Instant::now();
        let state = Arc::new(State { first: AtomicU64::new(u64::MAX), ..State::default() });
        let (hold, hold_rx) = watch::channel(false);
        let addr = format!("http://{}", listener.local_addr().expect("local address"));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let (st, hold_rx) = (st.clone(), hold_rx.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (st, mut hold_rx) = (st.clone(), hold_rx.clone());
                        async move {
                            let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                            let _ = req.into_body().collect().await?;
                            let now = epoch.elapsed().as_nanos() as u64 + 1;
                            st.first.fetch_min(now, Ordering::Relaxed);
                            st.last.fetch_max(now, Ordering::Relaxed);
                            if let Some(t) = st.timeline.lock().expect("not poisoned").as_ref()
                                && let Some(i) = id.as_deref().and_then(event_index)
                            {
                                t.arrived(i);
                            }
                            if *hold_rx.borrow() {
                                st.held.fetch_add(1, Ordering::SeqCst);
                                let _ = hold_rx.wait_for(|h| !*h).await;
                                st.held.fetch_sub(1, Ordering::SeqCst);
                            }
                            let delay = st.delay_ms.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            st.count.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state, hold }
    }

    /// Forgets what was seen; records arrivals on `timeline` from now on, if given.
    pub(crate) fn reset(&self, timeline: Option<Arc<Timeline>>) {
        self.state.count.store(0, Ordering::SeqCst);
        self.state.first.store(u64::MAX, Ordering::SeqCst);
        self.state.last.store(0, Ordering::SeqCst);
        *self.state.timeline.lock().expect("not poisoned") = timeline;
    }

    /// Requests answered since the last reset.
    pub(crate) fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Requests being held open now.
    pub(crate) fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Takes `delay` to answer each request from now on (zero: at once).
    pub(crate) fn slow(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Holds every request from now on (true) or releases them all (false).
    pub(crate) fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Waits until `n` requests were answered (or `limit` passes, then `Err` with the count).
    pub(crate) async fn wait(&self, n: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while self.count() < n {
            if Instant::now() > deadline {
                return Err(format!("the receiver got {} of {n} requests within {limit:?}", self.count()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Requests per second from the first to the last arrival since the reset.
    pub(crate) fn rate(&self) -> f64 {
        let (f, l) = (self.state.first.load(Ordering::SeqCst), self.state.last.load(Ordering::SeqCst));
        let n = self.count();
        if n < 2 || l <= f {
            return f64::NAN;
        }
        (n - 1) as f64 / ((l - f) as f64 / 1e9)
    }
}
