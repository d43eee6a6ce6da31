//! `xborder fetch`: pull evidence through a foreign border, verify the
//! gateway's receipt against the ciphertext, decrypt.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::client::BorderClient;
use crate::tls::{self, IdentityFileError};

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The gateway's border and the path, e.g. https://127.0.0.1:8443/v1/data/subscriber/+3725550123
    url: String,
    /// File holding the grant token.
    #[arg(long)]
    token: PathBuf,
    /// Our age identity file (the `AGE-SECRET-KEY-1...` line), to decrypt.
    #[arg(long)]
    identity: PathBuf,
    /// The certificate the grant is bound to (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The private key (PEM) of `--cert`.
    #[arg(long)]
    key: PathBuf,
    /// The CA that issued the gateway's server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Where to write the plaintext; nothing is written unless every check passes.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let url: http::Uri = args
        .url
        .parse()
        .with_context(|| format!("`{}` is not a URL", args.url))?;
    if url.scheme_str() != Some("https") {
        bail!("`{}`: the border is https://", args.url);
    }
    let host = url
        .host()
        .context("the URL has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port_u16().unwrap_or(443);
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let token = std::fs::read_to_string(&args.token)
        .with_context(|| format!("--token {}", args.token.display()))?
        .trim()
        .to_owned();
    let identity_text = std::fs::read_to_string(&args.identity)
        .with_context(|| format!("--identity {}", args.identity.display()))?;
    let identity: age::x25519::Identity = identity_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse().ok())
        .with_context(|| {
            format!(
                "--identity {}: no age X25519 identity in it",
                args.identity.display()
            )
        })?;
    let roots = tls::roots_from_file(&args.ca).map_err(|e| anyhow::anyhow!("--ca: {e}"))?;
    let key = tls::identity_from_files(&args.cert, &args.key).map_err(|problems| {
        let first = problems.into_iter().next();
        match first {
            Some(IdentityFileError::Certificate(e)) => anyhow::anyhow!("--cert: {e}"),
            Some(IdentityFileError::Key(e)) => anyhow::anyhow!("--key: {e}"),
            _ => anyhow::anyhow!(
                "--key {} does not match --cert {}",
                args.key.display(),
                args.cert.display()
            ),
        }
    })?;
    let client =
        BorderClient::new(tls::client_config_with(roots, key).map_err(anyhow::Error::msg)?);
    super::runtime()?.block_on(async {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let mut conn = client.connect(addr, &host).await?;
        let fetched = crate::fetch::fetch(&mut conn, &path, &token, &identity, &args.out).await?;
        let r = &fetched.receipt;
        println!(
            "{}: {} bytes decrypted; transfer {} under grant {}, receipt verified (ciphertext SHA-256 {}); \
             receipt logged as audit entry {} of {}'s tree of {}",
            fetched.out.display(),
            r.plaintext_bytes,
            r.transfer_id,
            r.grant_id,
            r.ciphertext_sha256,
            r.audit_index.unwrap_or_default(),
            fetched.logged_in.origin,
            fetched.logged_in.size,
        );
        Ok(())
    })
}
