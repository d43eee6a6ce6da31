//! xborder: a mutual-TLS gateway for evidence that crosses a border.
//!
//! The code map is in the README; each module owns one concept of the
//! vocabulary (peer, jurisdiction, request, grant, transfer, receipt, audit).
#![forbid(unsafe_code)]

pub mod category;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod tls;
pub mod upstream_example;
