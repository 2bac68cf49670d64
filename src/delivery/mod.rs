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
//! Where the endpoint policies of issue 14 plug in, without changing this shape:
//! - **rate limit**: in [`worker`], before each [`attempt::Attempt::send`], wait for the
//!   route's token (a 429's `Retry-After` drains the route's bucket, not only the event's);
//! - **circuit breaker**: in [`worker`], every [`verdict::AttemptResult`] feeds the route's
//!   circuit state before [`verdict::decide`]; while open, the worker does not attempt and
//!   settles the message as held;
//! - **batching**: in [`worker`]'s unordered loop, messages gather into one body up to
//!   `max_events` or `max_wait`, sent as one attempt and settled one by one;
//! - **scheduled and held delivery**: in [`settle`], a not-before time (`deliverat`, or a
//!   circuit's open period) is a park with that delay, not counted as an attempt.

pub mod attempt;
pub mod http;
pub mod settle;
pub mod verdict;
pub mod worker;
