//! The transfer service: the checks every transfer passes before anything
//! moves ([`check`], in the order of DESIGN.md), then the stream that moves
//! it ([`stream`]): the upstream's response is sealed to the grant's
//! recipient as it flows, counted against the grant's quotas, shaped by the
//! rate limits, cut when the grant ends, and closed with a signed receipt.

pub mod check;
pub mod metrics;
pub mod stream;

pub use metrics::TransferMetrics;
pub use stream::Transfers;
