//! Delivery: one message, at least once. The only module that acks a route message
//! ([`settle`]); the dead-letter indexer in [`crate::runtime`] acks its own queue only.
//!
//! One message's stages, top to bottom (each a file):
//!
//! ```text
//! worker   take the message (ordered: one at a time; unordered: up to `concurrency`)
//!   │      prepare it through the route's pipeline (filtered → ack; refused → dead letter)
//! attempt  sign and POST it once (http/: guarded client, signing)        ─┐ per attempt
//! verdict  decide(result, retry policy, attempt, ordered) → Verdict        │
//! worker   report it: delivery log, metrics, span, log line              │
//! settle   Delivered → ack · RetryInPlace → wait, attempt again ─────────┘
//!          Park → confirmed delayed publish, ack · DeadLetter → confirmed dead letter, ack
//! ```
//!
//! Endpoint policies ([`policy`]: circuit breaker and rate limit, as values) sit beside this
//! shape, in one [`gate::Gate`] per route that the worker consults at two points:
//! - before each [`attempt::Attempt::send`]: the route's circuit (open: no attempt, the event is
//!   held, parked with a not-before time by [`settle`] or, ordered, in place) and its token
//!   (waited for in process; a 429's `Retry-After` drains the route's bucket, not only the
//!   event's);
//! - after it: the [`verdict::AttemptResult`] feeds the circuit (a failed probe is retried, never
//!   exhausts its event), and, for API subscriptions, `disable_after`.
//!
//! The delivery shapes (docs/delivery-shapes.md) plug into [`worker`] without changing this
//! shape: **per-key order** (an ordered route's `order_key`) runs one sequential line per key
//! behind the single-active consumer; **scheduled delivery** (`deliverat`) holds a message
//! before its first attempt as the gate holds one (parked with a not-before time, or in place);
//! **batches** (`[batch]`) gather messages after their pipeline into one body, sent as one
//! attempt and settled one by one.

pub mod attempt;
pub mod gate;
pub mod http;
pub mod policy;
pub mod settle;
pub mod verdict;
pub mod worker;
