//! What the review commands (`xborder request …`, `xborder grant …`) share:
//! the flags that say where the admin listener is and who we are, a small
//! mTLS client for its JSON API, and a table formatter for plain output.
//!
//! A problem+json answer becomes an error that names its stable `code` and
//! its title, with any field errors or policy findings listed under it, so
//! `main` prints e.g. `error: state_conflict: the request is approved, not pending`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{self, BorderClient, ClientError};
use crate::policy::Finding;
use crate::tls::{self, IdentityFileError};

/// Where the admin listener is and the identity to present to it.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminArgs {
    /// The gateway's admin listener.
    #[arg(long = "admin", env = "XBORDER_ADMIN", value_name = "HOST:PORT")]
    pub admin: String,
    /// The CA certificate (PEM) that issued the gateway's server certificate.
    #[arg(long, env = "XBORDER_CA", value_name = "PATH")]
    pub ca: PathBuf,
    /// Our admin client certificate (PEM).
    #[arg(long, env = "XBORDER_CERT", value_name = "PATH")]
    pub cert: PathBuf,
    /// The private key (PEM) of `--cert`.
    #[arg(long, env = "XBORDER_KEY", value_name = "PATH")]
    pub key: PathBuf,
    /// Print the API's JSON answer (pretty) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A flag's value (or the file it names) is unusable.
    #[error("{flag}: {problem}")]
    Flag { flag: &'static str, problem: String },
    #[error("`{0}` is not a valid API path")]
    Path(String),
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot reach the admin listener at {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: ClientError,
    },
    /// The admin listener would not take our certificate: another trust
    /// domain, an unknown or rogue CA, expired or revoked.
    #[error(
        "the admin listener at {addr} refused this client certificate: it answered with the \
         TLS alert {alert:?} (the gateway's log says why); --cert (XBORDER_CERT) must be \
         issued by the gateway's own jurisdiction's CA, in its trust domain, unexpired and \
         not revoked"
    )]
    CertificateRefused {
        addr: String,
        alert: rustls::AlertDescription,
    },
    /// The gateway refused, with a problem+json answer.
    #[error("{0}")]
    Problem(Box<ProblemAnswer>),
    /// An answer that is neither the expected JSON nor a problem.
    #[error("unexpected answer from the admin listener ({status}): {body}")]
    Unexpected { status: StatusCode, body: String },
}

/// The members of an RFC 9457 problem that an operator needs to read.
#[derive(Debug, Deserialize)]
pub struct ProblemAnswer {
    pub code: String,
    pub title: String,
    #[serde(default)]
    pub errors: Vec<FieldErrorAnswer>,
    #[serde(default)]
    pub findings: Vec<Finding>,
    pub detail: Option<String>,
    /// What the operator probably got wrong, added by this client.
    #[serde(skip)]
    pub hint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FieldErrorAnswer {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ProblemAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        for e in &self.errors {
            write!(f, "\n  {}: {}", e.field, e.problem)?;
        }
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A client of one gateway's admin API, as one admin identity.
pub struct AdminClient {
    runtime: tokio::runtime::Runtime,
    client: BorderClient,
    addr: SocketAddr,
    /// The name the gateway's certificate must carry: the host of `--admin`.
    server_name: String,
}

impl AdminClient {
    /// Reads the CA, certificate and key named by `args`; each problem names
    /// the file and the flag it came from.
    pub fn new(args: &AdminArgs) -> Result<Self, AdminError> {
        let (addr, server_name) = resolve(&args.admin)?;
        let roots = roots(&args.ca)?;
        let key = identity(&args.cert, &args.key)?;
        let tls = tls::client_config_with(roots, key).map_err(|problem| AdminError::Flag {
            flag: "--cert",
            problem,
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?;
        Ok(Self {
            runtime,
            client: BorderClient::new(tls),
            addr,
            server_name,
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.call(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        self.call(Method::POST, path, Some(body))
    }

    /// A GET whose answer is not JSON (a signed note, NDJSON): the body of
    /// a success as it came.
    pub fn get_bytes(&self, path: &str) -> Result<Bytes, AdminError> {
        let (status, body) = self.exchange(Method::GET, path, None)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.refusal(status, &body))
        }
    }

    /// A GET whose successful answer is text to show as it is (a report in
    /// CSV or Markdown, say) rather than JSON.
    pub fn get_text(&self, path: &str) -> Result<String, AdminError> {
        let (status, body) = self.exchange(Method::GET, path, None)?;
        if status.is_success() {
            return String::from_utf8(body.to_vec()).map_err(|_| unexpected(status, &body));
        }
        Err(self.refusal(status, &body))
    }

    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, AdminError> {
        let (status, body) = self.exchange(method, path, body)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| unexpected(status, &body));
        }
        Err(self.refusal(status, &body))
    }

    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), AdminError> {
        let unreachable = |source| match source {
            ClientError::CertificateRefused(alert) => AdminError::CertificateRefused {
                addr: self.addr.to_string(),
                alert,
            },
            source => AdminError::Unreachable {
                addr: self.addr.to_string(),
                source,
            },
        };
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let mut request = http::Request::new(crate::wire::full(bytes));
        *request.method_mut() = method;
        *request.uri_mut() = path
            .parse()
            .map_err(|_| AdminError::Path(path.to_owned()))?;
        if body.is_some() {
            request.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        self.runtime.block_on(async {
            let mut conn = self
                .client
                .connect(self.addr, &self.server_name)
                .await
                .map_err(unreachable)?;
            let response = conn.send(request).await.map_err(unreachable)?;
            let (parts, body) = client::collect(response).await.map_err(unreachable)?;
            Ok((parts.status, body))
        })
    }
}

impl AdminClient {
    /// A refusal: the problem+json answer, or the start of whatever came.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> AdminError {
        match serde_json::from_slice::<ProblemAnswer>(body) {
            Ok(mut problem) => {
                // The border answers the admin paths it does not serve so;
                // the admin listener serves every path this client calls.
                if matches!(
                    problem.code.as_str(),
                    "method_not_allowed" | "route_not_found"
                ) {
                    problem.hint = Some(format!(
                        "{} looks like a gateway's border listener, not its admin listener: \
                         check --admin (XBORDER_ADMIN)",
                        self.addr
                    ));
                }
                AdminError::Problem(Box::new(problem))
            }
            Err(_) => unexpected(status, body),
        }
    }
}

fn unexpected(status: StatusCode, body: &[u8]) -> AdminError {
    AdminError::Unexpected {
        status,
        body: String::from_utf8_lossy(body).chars().take(512).collect(),
    }
}

/// `HOST:PORT` to an address and the server name to check the certificate for.
fn resolve(admin: &str) -> Result<(SocketAddr, String), AdminError> {
    let bad = |problem: String| AdminError::Flag {
        flag: "--admin",
        problem,
    };
    let (host, port) = admin
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("`{admin}` is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("`{port}` in `{admin}` is not a port")))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad(format!("`{admin}` has no host")));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve `{host}`: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("`{host}` resolves to no address")))?;
    Ok((addr, host.to_owned()))
}

fn roots(ca: &Path) -> Result<RootCertStore, AdminError> {
    tls::roots_from_file(ca).map_err(|problem| AdminError::Flag {
        flag: "--ca",
        problem,
    })
}

fn identity(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, AdminError> {
    tls::identity_from_files(cert, key).map_err(|problems| {
        // Name the first problem; the CLI stops at one.
        match problems.into_iter().next() {
            Some(IdentityFileError::Certificate(problem)) => AdminError::Flag {
                flag: "--cert",
                problem,
            },
            Some(IdentityFileError::Key(problem)) => AdminError::Flag {
                flag: "--key",
                problem,
            },
            Some(IdentityFileError::Mismatch) | None => AdminError::Flag {
                flag: "--key",
                problem: format!(
                    "{} does not match the certificate in --cert ({})",
                    key.display(),
                    cert.display()
                ),
            },
        }
    })
}

/// Prints `value` as pretty JSON (for `--json`).
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Deserializes one item of an API answer into the view a command prints.
pub fn view<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).map_err(|e| {
        anyhow::anyhow!("the admin listener sent a {what} this client does not understand: {e}")
    })
}

/// Columns padded to their widest cell, two spaces apart; the last one unpadded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key  value` lines, keys padded to the longest.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// A timestamp as a table shows it: RFC 3339 to the second.
pub fn short_time(t: crate::clock::Timestamp) -> String {
    let text = t.to_string();
    match text.split_once('.') {
        // "2026-01-31T12:00:00.25Z" -> "2026-01-31T12:00:00Z"
        Some((seconds, rest)) if rest.ends_with('Z') => format!("{seconds}Z"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "v".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&["ID", "STATE", "END"], &rows),
            "ID    STATE       END\na     long value  x\nbbbb  v\n"
        );
    }

    #[test]
    fn admin_addresses_parse_with_their_server_name() {
        let (addr, name) = resolve("127.0.0.1:8443").unwrap();
        assert_eq!(addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(name, "127.0.0.1");
        let (addr, name) = resolve("[::1]:9").unwrap();
        assert_eq!(addr, "[::1]:9".parse().unwrap());
        assert_eq!(name, "::1");
        for bad in ["localhost", ":80", "host:port"] {
            let err = resolve(bad).unwrap_err().to_string();
            assert!(err.starts_with("--admin: "), "{err}");
        }
    }

    #[test]
    fn problems_name_code_title_and_details() {
        let problem: ProblemAnswer = serde_json::from_str(
            r#"{"type":"t","status":400,"code":"invalid_request","title":"the request has invalid fields",
                "errors":[{"field":"lifetime","problem":"not a duration"}]}"#,
        )
        .unwrap();
        assert_eq!(
            problem.to_string(),
            "invalid_request: the request has invalid fields\n  lifetime: not a duration"
        );
    }
}
