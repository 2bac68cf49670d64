//! Delivery: one message, at least once.

pub mod attempt;
pub mod http;
pub mod verdict;
