//! Integration tests: the real binary against a real RabbitMQ (a vhost per test) and real HTTP
//! receivers on loopback.

mod acks;
mod api;
mod broker;
mod budgets;
mod cli;
mod common;
mod console;
mod data_dir;
mod delivery;
mod errors;
mod filters;
mod hardening;
mod ingest;
mod init;
mod observability;
mod pipeline;
mod plan;
mod policies;
mod publish;
mod quickstart;
mod reload;
mod replay;
mod resilience;
mod shapes;
mod signatures;
mod ssrf;
mod store;
mod store_batches;
mod telemetry;
mod tokens;
mod worker;
