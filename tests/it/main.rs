//! Integration tests: real TLS on loopback sockets, real files, the real binary.
//!
//! One test binary with modules, sharing the harness in `support`.

mod admin_ops;
mod audit_api;
mod audit_cli;
mod audit_tamper;
mod binary;
mod border;
mod canonical;
mod cli_admin;
mod deploy;
mod durability;
mod fuzz_corpus;
mod hostile;
mod layers;
mod lifecycle;
mod load;
mod metrics;
mod notify;
mod pg;
mod pki;
mod prometheus;
mod reload;
mod replicas;
mod report_cli;
mod review;
mod sealing;
mod store;
mod support;
mod transfer;
