//! `[listeners]` and `[timeouts]`: the addresses the gateway binds (border,
//! admin, ops, local) and how long a handshake, a request's headers, an idle
//! connection, an upstream connect and a graceful shutdown may take.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Validator, raw};

#[derive(Clone, Debug)]
pub struct Listeners {
    /// Foreign peers, mTLS.
    pub border: SocketAddr,
    /// Our reviewers and operators, mTLS with admin identities.
    pub admin: Option<SocketAddr>,
    /// Probes and metrics, plain HTTP.
    pub ops: Option<SocketAddr>,
    /// Our own apps (sidecar), plain HTTP on loopback: calls out to foreign borders.
    pub local: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A TLS handshake must finish within this.
    pub tls_handshake: Duration,
    /// A request's headers must arrive within this (slowloris).
    pub header_read: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle: Duration,
    pub upstream_connect: Duration,
    /// On SIGTERM, in-flight exchanges get this long to finish.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tls_handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Validator<'_> {
    pub(super) fn listeners(&mut self, raw: raw::Listeners) -> Option<Listeners> {
        let border = self.parse::<SocketAddr>("listeners.border", &raw.border);
        let admin = raw
            .admin
            .map(|a| self.parse::<SocketAddr>("listeners.admin", &a));
        let ops = raw
            .ops
            .map(|a| self.parse::<SocketAddr>("listeners.ops", &a));
        let local = raw
            .local
            .map(|a| self.parse::<SocketAddr>("listeners.local", &a));
        if let Some(Some(addr)) = local
            && !addr.ip().is_loopback()
        {
            // The local listener speaks plain HTTP with our identity behind it.
            self.errors.push(
                "listeners.local",
                format!(
                    "{addr} is not a loopback address: the local listener is for apps on this host"
                ),
            );
        }
        // Two listeners on one address cannot both bind; port 0 means "any free port".
        let mut seen: HashMap<SocketAddr, &str> = HashMap::new();
        for (name, addr) in [
            ("border", border),
            ("admin", admin.flatten()),
            ("ops", ops.flatten()),
            ("local", local.flatten()),
        ] {
            let Some(addr) = addr.filter(|a| a.port() != 0) else {
                continue;
            };
            if let Some(other) = seen.insert(addr, name) {
                self.errors.push(
                    format!("listeners.{name}"),
                    format!("{addr} is also the address of `listeners.{other}`"),
                );
            }
        }
        // A bad optional address is reported; that listener is left out.
        Some(Listeners {
            border: border?,
            admin: admin.flatten(),
            ops: ops.flatten(),
            local: local.flatten(),
        })
    }

    pub(super) fn timeouts(&mut self, raw: raw::Timeouts) -> Option<Timeouts> {
        let defaults = Timeouts::default();
        let mut one = |key: &str, value: Option<String>, default: Duration| match value {
            None => Some(default),
            Some(v) => self.duration(&format!("timeouts.{key}"), &v),
        };
        let t = (
            one("tls_handshake", raw.tls_handshake, defaults.tls_handshake),
            one("header_read", raw.header_read, defaults.header_read),
            one("idle", raw.idle, defaults.idle),
            one(
                "upstream_connect",
                raw.upstream_connect,
                defaults.upstream_connect,
            ),
            one(
                "shutdown_grace",
                raw.shutdown_grace,
                defaults.shutdown_grace,
            ),
        );
        Some(Timeouts {
            tls_handshake: t.0?,
            header_read: t.1?,
            idle: t.2?,
            upstream_connect: t.3?,
            shutdown_grace: t.4?,
        })
    }
}
