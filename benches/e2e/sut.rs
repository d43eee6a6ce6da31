//! The systems under test: xborder (the release binary), nginx and haproxy,
//! each a process pinned to the SUT core, each terminating mutual TLS with
//! the same server certificate, trusting FI's CA for clients, and
//! forwarding to the same sink. Their CPU time and resident memory are read
//! from `/proc`, over the process and its children (nginx's worker).

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::world::World;

/// The core the systems under test run on; the bench itself takes the other.
pub const SUT_CPU: &str = "0";
pub const CLIENT_CPU: &str = "1";

pub struct Sut {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Sut {
    /// xborder, from `world`'s config; also returns its admin address.
    pub fn xborder(world: &World, sink: SocketAddr) -> (Self, SocketAddr) {
        let config = world.gateway_config(sink);
        let mut child = Command::new("taskset")
            .args(["-c", SUT_CPU, env!("CARGO_BIN_EXE_xborder")])
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xborder under taskset");
        let stderr = child.stderr.take().expect("a piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the log for the listeners' addresses, then drains it, so a
        // full pipe never stalls the gateway.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                if value["fields"]["message"] == "listening" {
                    let _ = tx.send((
                        value["fields"]["listener"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        value["fields"]["addr"].as_str().unwrap_or("").to_owned(),
                    ));
                } else if value["level"] == "ERROR" {
                    eprintln!("xborder: {line}");
                }
            }
        });
        let (mut border, mut admin) = (None, None);
        while border.is_none() || admin.is_none() {
            let (listener, addr) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("xborder says where it listens within 30 s");
            let addr = addr.parse().ok();
            match listener.as_str() {
                "border" => border = addr,
                "admin" => admin = addr,
                _ => {}
            }
        }
        let border = border.expect("a border address");
        let sut = Self {
            name: "xborder",
            addr: border,
            child,
        };
        (sut, admin.expect("an admin address"))
    }

    /// nginx 1 worker, proxying to the sink over a keep-alive upstream pool.
    pub fn nginx(world: &World, sink: SocketAddr) -> Self {
        let port = free_port();
        let dir = world.path("nginx");
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx's temp dir");
        let d = dir.display();
        let cert = world.path("ee/gateway.pem");
        let key = world.path("ee/gateway-key.pem");
        let ca = world.path("fi/ca.pem");
        let text = format!(
            r#"
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/cb; proxy_temp_path {d}/tmp/px; fastcgi_temp_path {d}/tmp/fc;
  uwsgi_temp_path {d}/tmp/uw; scgi_temp_path {d}/tmp/sc;
  keepalive_requests 1000000; keepalive_timeout 75s;
  ssl_protocols TLSv1.3;
  ssl_session_tickets off;
  ssl_session_cache off;
  upstream sink {{ server {sink}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_client_certificate {ca}; ssl_verify_client on; ssl_verify_depth 2;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Client-DN $ssl_client_s_dn;
    location = /hs {{ return 404; }}
    location / {{ proxy_pass http://sink; }}
  }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
            ca = ca.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, text).expect("write nginx.conf");
        let child = Command::new("taskset")
            .args(["-c", SUT_CPU, "nginx", "-c"])
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx under taskset");
        Self::ready("nginx", port, child, &dir.join("error.log"))
    }

    /// haproxy, one thread, proxying to the sink.
    pub fn haproxy(world: &World, sink: SocketAddr) -> Self {
        let port = free_port();
        let dir = world.path("haproxy");
        std::fs::create_dir_all(&dir).expect("haproxy's dir");
        let combined = dir.join("server.pem");
        std::fs::write(
            &combined,
            format!("{}{}", world.gateway.cert_pem(), world.gateway.key_pem()),
        )
        .expect("write haproxy's certificate");
        let text = format!(
            r#"
global
  nbthread 1
  maxconn 8000
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
  log stdout format raw local0 warning
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  option http-keep-alive
  http-reuse always
frontend border
  bind 127.0.0.1:{port} ssl crt {combined} ca-file {ca} verify required alpn http/1.1
  http-request return status 404 if {{ path /hs }}
  http-request set-header X-Client-DN %{{+Q}}[ssl_c_s_dn]
  default_backend sink
backend sink
  server s1 {sink}
"#,
            combined = combined.display(),
            ca = world.path("fi/ca.pem").display(),
        );
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, text).expect("write haproxy.cfg");
        let child = Command::new("taskset")
            .args(["-c", SUT_CPU, "haproxy", "-db", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy under taskset");
        Self::ready("haproxy", port, child, &conf)
    }

    fn ready(name: &'static str, port: u16, mut child: Child, look_at: &Path) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited ({status}); see {}", look_at.display());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {addr} within 20 s; see {}",
                look_at.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { name, addr, child }
    }

    /// CPU seconds (user + system) of the process and its children so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids()
            .iter()
            .filter_map(|pid| stat_fields(*pid))
            .map(|f| (f.utime + f.stime) as f64 / clock_ticks())
            .sum()
    }

    /// Resident memory of the process and its children, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if stat_fields(pid).is_some_and(|f| f.ppid == root) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        // SIGTERM: nginx's master takes its worker with it; xborder drains.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

/// Fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Pins this process (before it starts threads, so all of them) to the
/// load generator's core.
pub fn pin_self() {
    let status = Command::new("taskset")
        .args(["-p", "-c", CLIENT_CPU, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: could not pin the bench to CPU {CLIENT_CPU}");
    }
}
