//! Transfers across the border: one payload that crosses under a grant.
//!
//! [`check`] runs the checks every transfer passes before anything moves, in
//! the order of DESIGN.md. [`stream`] moves it: the upstream's response is
//! sealed to the grant's recipient as it flows ([`seal`]), counted against the
//! grant's quotas, shaped by the rate limits, cut when the grant ends, and
//! closed with a signed [`receipt`].

pub mod check;
pub mod quota;
pub mod receipt;
pub mod seal;
pub mod stream;
