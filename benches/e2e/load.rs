//! The load generator: FI's police as an HTTP/1.1 client over mutual TLS
//! (TLS 1.3, AES-128-GCM, X25519, no resumption: every connection a full
//! handshake), the same against every target. Every loop is bounded by a
//! duration, and every wait by a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, ring};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::world::World;

const WAIT: Duration = Duration::from_secs(30);

/// Where to send, and the grant token when the target checks one.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub token: Option<Arc<str>>,
}

#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
}

/// What a timed loop did.
#[derive(Default)]
pub struct Done {
    pub ok: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Done {
    fn merge(&mut self, other: Done) {
        self.ok += other.ok;
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.latencies.extend(other.latencies);
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}

impl Client {
    pub fn new(world: &World) -> Self {
        let provider = CryptoProvider {
            cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![ring::kx_group::X25519],
            ..ring::default_provider()
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(world.ee.cert_der())
            .expect("the dev CA is a usable root");
        let key = provider
            .key_provider
            .load_private_key(world.police.key_der())
            .expect("ring loads a dev key");
        let certified = CertifiedKey::new(vec![world.police.cert_der()], key);
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::new(
                certified,
            ))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Self {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    async fn tls(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a valid server name");
        self.connector.connect(name, tcp).await
    }

    async fn http(&self, addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
        let tls = self.tls(addr).await.map_err(|e| format!("TLS: {e}"))?;
        let (send, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))?;
        tokio::spawn(driver);
        Ok(send)
    }

    /// `conns` loops for `duration`, each: a new TCP connection, a full mTLS
    /// handshake, `GET /hs` with `Connection: close` (404 everywhere, with
    /// no upstream leg), the answer read to its end.
    pub async fn handshakes(&self, addr: SocketAddr, conns: usize, duration: Duration) -> Done {
        let deadline = Instant::now() + duration;
        let loops = (0..conns).map(|_| {
            let client = self.clone();
            tokio::spawn(async move {
                let mut done = Done::default();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match tokio::time::timeout(WAIT, client.one_handshake(addr)).await {
                        Ok(Ok(())) => {
                            done.ok += 1;
                            done.latencies.push(start.elapsed());
                        }
                        Ok(Err(e)) => done.fail(e),
                        Err(_) => done.fail("timed out".to_owned()),
                    }
                }
                done
            })
        });
        join(loops, duration).await
    }

    async fn one_handshake(&self, addr: SocketAddr) -> Result<(), String> {
        let mut tls = self.tls(addr).await.map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(b"GET /hs HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::with_capacity(1024);
        // A peer may close without close_notify; what was read counts.
        let _ = tls.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 404") {
            Ok(())
        } else {
            Err(format!(
                "unexpected answer: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(80)])
            ))
        }
    }

    /// `conns` keep-alive connections for `duration`, each sending `GET
    /// path` one after another and reading each answer to its end.
    pub async fn keep_alive(
        &self,
        target: &Target,
        path: &str,
        conns: usize,
        duration: Duration,
    ) -> Done {
        let mut senders = Vec::with_capacity(conns);
        for _ in 0..conns {
            match self.http(target.addr).await {
                Ok(send) => senders.push(send),
                Err(e) => panic!("opening {conns} keep-alive connections: {e}"),
            }
        }
        let deadline = Instant::now() + duration;
        let loops = senders.into_iter().map(|mut send| {
            let target = target.clone();
            let path = path.to_owned();
            tokio::spawn(async move {
                let mut done = Done::default();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let request = target.get(&path);
                    match tokio::time::timeout(WAIT, fetch(&mut send, request)).await {
                        Ok(Ok(_)) => {
                            done.ok += 1;
                            done.latencies.push(start.elapsed());
                        }
                        Ok(Err(e)) => {
                            done.fail(e);
                            break;
                        }
                        Err(_) => {
                            done.fail("timed out".to_owned());
                            break;
                        }
                    }
                }
                done
            })
        });
        join(loops, duration).await
    }

    /// `rounds` transfers of `path` one after another on one connection; the
    /// body bytes received and the time it took.
    pub async fn download(&self, target: &Target, path: &str, rounds: usize) -> (u64, Duration) {
        let mut send = self
            .http(target.addr)
            .await
            .unwrap_or_else(|e| panic!("a connection for downloads: {e}"));
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes +=
                tokio::time::timeout(Duration::from_secs(120), fetch(&mut send, target.get(path)))
                    .await
                    .expect("a download within 120 s")
                    .unwrap_or_else(|e| panic!("download: {e}"));
        }
        (bytes, start.elapsed())
    }

    /// Opens `n` connections, starts a slow transfer of `path` on each, and
    /// once every one has its answer's head (all `n` in flight), calls
    /// `sample` a few times; then reads every transfer to its end. The
    /// largest sample.
    pub async fn in_flight(
        &self,
        target: &Target,
        path: &str,
        n: usize,
        sample: impl Fn() -> u64,
    ) -> u64 {
        let mut bodies = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        for _ in 0..n {
            let send = self
                .http(target.addr)
                .await
                .unwrap_or_else(|e| panic!("opening {n} connections: {e}"));
            senders.push(send);
        }
        for send in &mut senders {
            let response = tokio::time::timeout(WAIT, send.send_request(target.get(path)))
                .await
                .expect("an answer's head within 30 s")
                .expect("the target answers a slow transfer");
            assert_eq!(response.status(), StatusCode::OK, "slow transfer refused");
            bodies.push(response.into_body());
        }
        let mut peak = 0;
        for _ in 0..5 {
            peak = peak.max(sample());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reads = bodies.into_iter().map(|body| {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(60), body.collect()).await;
            })
        });
        for read in reads {
            let _ = read.await;
        }
        drop(senders);
        peak
    }
}

impl Target {
    fn get(&self, path: &str) -> Request<Empty<Bytes>> {
        let mut request = Request::get(path)
            .header(header::HOST, "localhost")
            .body(Empty::new())
            .expect("bench paths are valid");
        if let Some(token) = &self.token {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .expect("a JWT is a valid header value"),
            );
        }
        request
    }
}

/// Sends `request` and reads the body to its end; the body's length.
async fn fetch(
    send: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<u64, String> {
    send.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = 0;
    let mut head = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            if head.len() < 200 {
                head.extend_from_slice(&data[..data.len().min(200)]);
            }
        }
    }
    if status == StatusCode::OK {
        Ok(bytes)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&head)))
    }
}

/// Waits for every loop (they end at their deadline; a loop stuck past it
/// plus the wait is abandoned) and adds up what they did.
async fn join(
    loops: impl Iterator<Item = tokio::task::JoinHandle<Done>>,
    duration: Duration,
) -> Done {
    let start = Instant::now();
    let mut all = Done::default();
    for handle in loops.collect::<Vec<_>>() {
        match tokio::time::timeout(duration + WAIT, handle).await {
            Ok(Ok(done)) => all.merge(done),
            Ok(Err(e)) => all.fail(format!("a load task failed: {e}")),
            Err(_) => all.fail("a load task outlived its deadline".to_owned()),
        }
    }
    all.elapsed = start.elapsed().min(duration);
    all
}
