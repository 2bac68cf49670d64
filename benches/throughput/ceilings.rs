//! The ceilings of one broker: a bare consumer that only acks, a bare relay (consume → POST →
//! ack) at 32 and at one in flight, its latency at the latency run's rate, and a bare hyper
//! client that only POSTs. What hookrelay's figures are compared with.

use crate::common::Size;
use crate::process::{self, BusKind};
use crate::rabbit::{self, Vhost};
use crate::receiver::Timeline;
use crate::{Bench, CONCURRENCY, PREFETCH, ceil, ceiling_group, embedded, http};

impl Bench {
    /// The bare consumer on `kind` with `queues` queues of `n` events: `ceiling.<…>.consume.<key>`.
    pub(crate) async fn ceiling_consume(&mut self, kind: BusKind, queues: usize, n: usize, size: Size, key: &str) {
        let rate = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                Ok(rabbit::bare_consumer(&vh.url(), queues, n, size, PREFETCH as u16).await)
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => embedded::bare_consumer(dir.path(), queues, n, size, PREFETCH as u16).await,
                Err(e) => Err(e.to_string()),
            },
        };
        let what = format!("{} bare consumer, {queues} queue(s), {}", kind.label(), size.label());
        match rate {
            Ok(r) => {
                self.report.record(ceil(kind, &format!("consume.{key}")), r);
                self.progress(&what, &format!("{r:.0} deliveries/s"));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }

    pub(crate) async fn ceiling_post(&mut self, size: Size, n: usize, key: &str) {
        let post = http::bare_post(&format!("{}/bare", self.rx.addr), n, size, CONCURRENCY).await;
        self.report.record(format!("ceiling.post.{key}"), post);
        self.progress(&format!("bare POST {}", size.label()), &format!("{post:.0}/s"));
    }

    /// Measures what `key` needs when this repetition has not measured it yet.
    pub(crate) async fn ensure(&mut self, kind: BusKind, key: &str) {
        if self.report.current(&ceil(kind, key)).is_some() {
            return;
        }
        let n = self.opts.events;
        match key {
            "consume.1k" => self.ceiling_consume(kind, 1, n, Size::Kib1, "1k").await,
            "relay1.1k" => self.ceiling_relay(kind, (n / 4).max(100), 1).await,
            _ => unreachable!("no ceiling {key}"),
        }
    }

    pub(crate) async fn ensure_post(&mut self) {
        if self.report.current("ceiling.post.1k").is_none() {
            self.ceiling_post(Size::Kib1, self.opts.events, "1k").await;
        }
    }

    /// The bare relay on `kind`, `n` events from a filled queue, `in_flight` at once.
    pub(crate) async fn ceiling_relay(&mut self, kind: BusKind, n: usize, in_flight: usize) {
        let target = format!("{}/bare", self.rx.addr);
        let done = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                rabbit::declare_bare(&vh.url(), 1).await;
                rabbit::publish_bulk(&vh.url(), "bare", "order.paid", Size::Kib1, n).await;
                self.rx.reset(None);
                rabbit::bare_relay(&vh.url(), &target, n, PREFETCH as u16, in_flight).await;
                Ok(())
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => {
                    self.rx.reset(None);
                    embedded::bare_relay(dir.path(), &target, n, PREFETCH as u16, in_flight).await
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let key = if in_flight == 1 { "relay1.1k" } else { "relay.1k" };
        let what = format!("{} bare relay, {in_flight} at once", kind.label());
        match done {
            Ok(()) => {
                let rate = self.rx.rate();
                self.report.record(ceil(kind, key), rate);
                self.progress(&what, &format!("{rate:.0}/s"));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }

    /// The bare relay's latency on `kind`, events published at `rate`.
    pub(crate) async fn ceiling_relay_latency(&mut self, kind: BusKind, rate: f64, events: usize) {
        let timeline = Timeline::new(events);
        self.rx.reset(Some(timeline.clone()));
        let target = format!("{}/bare", self.rx.addr);
        let done = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                rabbit::declare_bare(&vh.url(), 1).await;
                let url = vh.url();
                let t = target.clone();
                let relay =
                    tokio::spawn(
                        async move { rabbit::bare_relay(&url, &t, events, PREFETCH as u16, CONCURRENCY).await },
                    );
                rabbit::publish_paced(&vh.url(), "bare", "order.paid", Size::Kib1, events, rate, &timeline).await;
                relay.await.map_err(|e| e.to_string())
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => {
                    embedded::bare_relay_paced(
                        dir.path(),
                        &target,
                        events,
                        rate,
                        &timeline,
                        PREFETCH as u16,
                        CONCURRENCY,
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            },
        };
        self.rx.reset(None);
        let what = format!("{} bare relay latency", kind.label());
        match done {
            Ok(()) => {
                let l = process::summarize(&timeline, events);
                self.report.record(ceil(kind, "relay.p50"), l.p50_ms);
                self.report.record(ceil(kind, "relay.p99"), l.p99_ms);
                self.progress(&what, &format!("{rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }

    /// The ceilings of one broker (the whole `ceilings` group).
    pub(crate) async fn ceilings(&mut self, kind: BusKind) {
        let n = self.opts.events;
        self.ceiling_consume(kind, 1, n, Size::Kib1, "1k").await;
        if kind == BusKind::RabbitMq {
            self.ceiling_post(Size::Kib1, n, "1k").await;
        }
        self.ceiling_relay(kind, n, CONCURRENCY).await;
        self.ceiling_relay(kind, (n / 4).max(100), 1).await;
    }
}
