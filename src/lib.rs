//! xborder: a mutual-TLS gateway for evidence that crosses a border.
//!
//! The code map is in the README; each module owns one concept of the
//! vocabulary (peer, jurisdiction, request, grant, transfer, receipt, audit).
#![forbid(unsafe_code)]

/// Serialises a type as its `Display` string and parses it back with `FromStr`.
macro_rules! serde_as_string {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod atomic_file;
pub mod category;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod grant;
pub mod grants;
pub mod id;
pub mod identity;
pub mod metrics;
pub mod notice;
pub mod notify;
pub mod pki;
pub mod policy;
pub mod ratelimit;
pub mod report;
pub mod request;
pub mod review;
pub mod server;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod transfers;
pub mod upstream_example;
pub mod wire;

pub mod audit;
