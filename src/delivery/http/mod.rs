//! Outbound HTTP: signing ([`sign`]), the SSRF guard ([`guard`]), the pooled client
//! ([`client`]) and retry timing ([`retry`]). Nothing here acks or touches the broker.

pub mod client;
pub mod guard;
pub mod retry;
pub mod sign;
