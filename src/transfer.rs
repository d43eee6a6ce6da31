//! A transfer: one payload that crosses the border under a grant, as a
//! domain concept with no store and no server: the [`route`] it takes, the
//! age [`seal`] its payload is written in, the [`quota`] it is counted
//! against, and the signed [`receipt`] that closes it.
//!
//! The service that runs transfers (check, open, stream, close) is
//! [`crate::transfers`].

pub mod quota;
pub mod receipt;
pub mod route;
pub mod seal;

pub use route::Route;
