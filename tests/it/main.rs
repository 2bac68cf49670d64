//! Integration tests: the real binary against a real RabbitMQ (a vhost per test) and real HTTP
//! receivers on loopback.

mod api;
mod broker;
mod cli;
mod common;
mod console;
mod delivery;
mod hardening;
mod observability;
mod pipeline;
mod policies;
mod quickstart;
mod reload;
mod resilience;
mod signatures;
mod store;
mod store_batches;
mod telemetry;
mod tokens;
mod worker;
