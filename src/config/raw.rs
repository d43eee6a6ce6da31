//! The configuration file as written, before validation: every field a
//! string or a table, so that typing happens in one place with keyed errors.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::RawPairPolicy;

#[derive(Deserialize)]
pub struct Config {
    pub jurisdiction: String,
    pub data_dir: String,
    pub listeners: Listeners,
    pub identity: Identity,
    pub timeouts: Option<Timeouts>,
    pub reload: Option<Reload>,
    #[serde(default)]
    pub trust: BTreeMap<String, Trust>,
    pub admin: Option<Admin>,
    #[serde(default)]
    pub routes: Vec<Route>,
    pub tokens: Option<Tokens>,
    pub audit: Option<Audit>,
    pub reports: Option<Reports>,
    pub notify: Option<Notify>,
    pub store: Option<Store>,
    #[serde(default)]
    pub policy: BTreeMap<String, BTreeMap<String, RawPairPolicy>>,
    #[serde(default)]
    pub peers: BTreeMap<String, Peer>,
}

#[derive(Deserialize)]
pub struct Tokens {
    pub signing_key: String,
    #[serde(default)]
    pub verify_keys: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Option<String>,
}

#[derive(Deserialize)]
pub struct Audit {
    pub signing_key: String,
    pub pseudonym_key: String,
    pub origin: Option<String>,
}

#[derive(Deserialize)]
pub struct Reports {
    pub k_anonymity: Option<u64>,
    pub epsilon: Option<f64>,
}

#[derive(Deserialize)]
pub struct Notify {
    pub webhook: Option<String>,
    pub timeout: Option<String>,
    pub retry_min: Option<String>,
    pub retry_max: Option<String>,
}

#[derive(Deserialize)]
pub struct Store {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub url_file: Option<String>,
    pub pool_size: Option<u64>,
    pub connect_timeout: Option<String>,
}

#[derive(Deserialize)]
pub struct Listeners {
    pub border: String,
    pub admin: Option<String>,
    pub ops: Option<String>,
    pub local: Option<String>,
}

#[derive(Deserialize)]
pub struct Peer {
    pub border: String,
    pub server_name: Option<String>,
}

#[derive(Deserialize)]
pub struct Identity {
    pub certificate: String,
    pub key: String,
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Timeouts {
    pub tls_handshake: Option<String>,
    pub header_read: Option<String>,
    pub idle: Option<String>,
    pub upstream_connect: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Deserialize)]
pub struct Reload {
    pub interval: Option<String>,
}

#[derive(Deserialize)]
pub struct Trust {
    pub trust_domain: String,
    pub ca: String,
    #[serde(default)]
    pub crls: Vec<String>,
}

#[derive(Deserialize, Default)]
pub struct Admin {
    /// SPIFFE ID → roles.
    #[serde(default)]
    pub identities: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
pub struct Route {
    pub prefix: String,
    pub upstream: String,
    pub category: String,
    pub seal: Option<bool>,
    #[serde(default)]
    pub parameters: Vec<String>,
}
