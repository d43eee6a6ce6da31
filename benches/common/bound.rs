//! The per-byte passes a sealed transfer costs one core, each priced alone
//! on this machine: ChaCha20-Poly1305 in 64 KiB chunks (age's STREAM
//! cipher), SHA-256, and the TLS record layer as rustls runs it (a loopback
//! TLS 1.3 stream in this process, so AES-GCM, framing and the socket copies
//! are all in). The gateway runs one side of that stream — it seals records
//! and sends, its client opens them and receives — and AES-GCM costs the
//! same both ways, so one side is priced at half the pair's time.
//! [`Bound::measure`] adds them up: one core doing every pass in sequence,
//! SHA-256 twice (plaintext and ciphertext).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xborder::pki::{DevCa, LeafSpec};
use xborder::tls;

use super::table::{MIB, Table, mb_per_s};

const CHUNK: usize = 64 << 10;
/// Bytes each primitive pass runs over.
const PRIMITIVE_BYTES: usize = 64 * MIB;
/// Passes per primitive; the fastest counts (least disturbed by the machine).
const PRIMITIVE_PASSES: usize = 5;
/// Bytes written through the loopback TLS stream, per pass.
const TLS_BYTES: usize = 256 * MIB;
const TLS_PASSES: usize = 2;
const PASS_LIMIT: Duration = Duration::from_secs(60);

/// Each primitive's rate on one core, in MB/s, and the bounds they imply.
pub struct Bound {
    pub chacha: f64,
    pub sha256: f64,
    pub tls: f64,
    pub suite: String,
}

impl Bound {
    /// Prices every pass; the CPU work runs on the calling thread, the TLS
    /// stream on `runtime`.
    pub fn measure() -> Self {
        let data: Vec<u8> = (0..PRIMITIVE_BYTES)
            .map(|i| (i * 31 + i / 251) as u8)
            .collect();
        let chacha = mb_per_s(
            PRIMITIVE_BYTES,
            best_of(PRIMITIVE_PASSES, || chacha_pass(&data)),
        );
        let sha256 = mb_per_s(
            PRIMITIVE_BYTES,
            best_of(PRIMITIVE_PASSES, || sha256_pass(&data)),
        );
        drop(data);
        // Both ends on one thread, so the pair's time is the sum of its two
        // sides whatever the cores and pinning of the caller.
        let one_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime can be built on this machine");
        let (tls_time, suite) = one_thread.block_on(tls_stream());
        Self {
            chacha,
            sha256,
            tls: mb_per_s(TLS_BYTES, tls_time / 2),
            suite,
        }
    }

    /// A sealed transfer: age's cipher, SHA-256 of the plaintext and of the
    /// ciphertext, and TLS.
    pub fn sealed(&self) -> f64 {
        1.0 / (1.0 / self.chacha + 2.0 / self.sha256 + 1.0 / self.tls)
    }

    /// A pass-through transfer: SHA-256 of the body, and TLS.
    pub fn pass_through(&self) -> f64 {
        1.0 / (1.0 / self.sha256 + 1.0 / self.tls)
    }

    pub fn rows(&self, table: &mut Table) {
        table.row(
            "chacha20poly1305 64KiB chunks",
            self.chacha,
            "MB/s",
            format!("in place, STREAM nonces, best of {PRIMITIVE_PASSES} x 64 MiB"),
        );
        table.row(
            "sha256",
            self.sha256,
            "MB/s",
            format!("64 KiB updates, best of {PRIMITIVE_PASSES} x 64 MiB"),
        );
        table.row(
            "tls1.3 loopback stream, one side",
            self.tls,
            "MB/s",
            format!(
                "{}, rustls+ring, half a writer+reader pair's time, best of {TLS_PASSES} x {} MiB",
                self.suite,
                TLS_BYTES / MIB
            ),
        );
        table.row(
            "bound sealed 1/(1/chacha+2/sha256+1/tls)",
            self.sealed(),
            "MB/s",
            "one core, passes in sequence".to_owned(),
        );
    }
}

/// The fastest of `passes` runs of `pass`.
fn best_of(passes: usize, mut pass: impl FnMut()) -> Duration {
    (0..passes)
        .map(|_| {
            let start = Instant::now();
            pass();
            start.elapsed()
        })
        .min()
        .expect("at least one pass")
}

/// ChaCha20-Poly1305 over `data` in 64 KiB chunks, each with its own nonce,
/// as age's STREAM construction does (into a scratch chunk: no allocation).
fn chacha_pass(data: &[u8]) {
    let aead = ChaCha20Poly1305::new(&[7; 32].into());
    let mut chunk = vec![0u8; CHUNK];
    for (counter, piece) in data.chunks(CHUNK).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&(counter as u64).to_be_bytes());
        let buf = &mut chunk[..piece.len()];
        buf.copy_from_slice(piece);
        let tag = aead
            .encrypt_in_place_detached(&nonce.into(), b"", buf)
            .expect("64 KiB is far below the AEAD's length limit");
        black_box(tag);
    }
    black_box(&chunk);
}

fn sha256_pass(data: &[u8]) {
    let mut hasher = Sha256::new();
    for piece in data.chunks(CHUNK) {
        hasher.update(piece);
    }
    black_box(hasher.finalize());
}

/// The fastest of [`TLS_PASSES`] passes of [`TLS_BYTES`] through a loopback
/// TLS 1.3 connection (each on a fresh connection, handshake not timed), and
/// the negotiated cipher suite.
async fn tls_stream() -> (Duration, String) {
    let ca = DevCa::new(&"EE".parse().expect("EE is a jurisdiction")).expect("a dev CA");
    let leaf = ca
        .issue(&LeafSpec::server(
            "spiffe://ee.xborder.test/tls-bench"
                .parse()
                .expect("a SPIFFE ID"),
        ))
        .expect("a dev CA issues a server leaf");
    let server = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
        .expect("the dev leaf and its key match");
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der())
        .expect("the dev CA is a usable root");
    // The suite the e2e load generator offers (what a browser or curl
    // negotiates first on x86 with AES-NI), so the bound and the measured
    // transfers pay for the same cipher.
    let offered = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..(*tls::provider()).clone()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(offered))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));

    let mut best = Duration::MAX;
    let mut suite = String::new();
    // One short warm-up pass, then the measured ones.
    for (pass, bytes) in std::iter::once(16 * MIB)
        .chain(std::iter::repeat_n(TLS_BYTES, TLS_PASSES))
        .enumerate()
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let acceptor = acceptor.clone();
        let reader = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("the client connects");
            let _ = tcp.set_nodelay(true);
            let mut tls = acceptor.accept(tcp).await.expect("TLS handshake (server)");
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < bytes {
                let n = tls.read(&mut buf).await.expect("TLS read");
                assert!(n > 0, "stream ended after {got} of {bytes} bytes");
                got += n;
            }
            Instant::now()
        });
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to 127.0.0.1");
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").expect("a valid server name");
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake (client)");
        suite = tls
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let chunk = vec![0x5au8; CHUNK];
        let start = Instant::now();
        let write = async {
            for _ in 0..bytes / CHUNK {
                tls.write_all(&chunk).await.expect("TLS write");
            }
            tls.flush().await.expect("TLS flush");
        };
        tokio::time::timeout(PASS_LIMIT, write)
            .await
            .expect("TLS pass within its time limit");
        let done = tokio::time::timeout(PASS_LIMIT, reader)
            .await
            .expect("TLS reader within its time limit")
            .expect("TLS reader task");
        if pass > 0 {
            best = best.min(done - start);
        }
    }
    (best, suite)
}
