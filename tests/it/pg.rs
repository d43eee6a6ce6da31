//! A real PostgreSQL server from the system packages, for the tests.
//!
//! [`shared`] starts one server per test binary (initdb in a temp dir, a
//! Unix socket there and a free loopback port), on first use; each test
//! takes a fresh database from it with [`Server::database`]. A test that
//! stops the database starts its own with [`Server::start`]. A watcher
//! process stops every server when the test binary exits, however it exits.
//!
//! The binaries are found under `/usr/lib/postgresql/*/bin`. Without them
//! the tests skip with a loud message, unless `CI` is set: CI installs
//! PostgreSQL, so there a missing server is a failure. As root (initdb
//! refuses root) the server runs as the `postgres` user via `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use xborder::store::postgres::PostgresSettings;

pub struct Server {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The server shared by the tests of this binary; `None` when PostgreSQL
/// is not installed and `CI` is unset (the caller skips).
pub fn shared() -> Option<&'static Server> {
    static SHARED: OnceLock<Option<Server>> = OnceLock::new();
    SHARED.get_or_init(Server::start).as_ref()
}

/// The binaries' directory, or `None` (after saying so) when absent.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    if let Some(bin) = found.pop() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and CI is set: CI must run the PostgreSQL tests"
        );
    }
    eprintln!(
        "\n*** SKIPPING PostgreSQL tests: no /usr/lib/postgresql/*/bin/initdb. \
         Install it (apt-get install postgresql) to run them; CI always does. ***\n"
    );
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Server {
    /// Starts a server of its own (stopped when dropped, or at exit),
    /// without fsync: the tests are about behaviour, not durability.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// As [`Server::start`], with fsync on, as in production (benchmarks).
    #[allow(dead_code)]
    pub fn start_durable() -> Option<Self> {
        Self::start_with(true)
    }

    fn start_with(fsync: bool) -> Option<Self> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("xborder-pg-")
            .tempdir()
            .expect("a temp dir for PostgreSQL");
        let data = dir.path().join("data");
        let socket_dir = dir.path().to_owned();
        let port = free_port();
        let server = Self {
            data,
            socket_dir,
            port,
            bin,
            _dir: dir,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.socket_dir.as_os_str())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of the PostgreSQL temp dir failed");
        }
        server.run(
            "initdb",
            &[
                "-D",
                path(&server.data),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        std::fs::write(
            server.data.join("postgresql.auto.conf"),
            format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 max_connections = 300\n{}",
                server.socket_dir.display(),
                if fsync {
                    ""
                } else {
                    "fsync = off\nfull_page_writes = off\n"
                }
            ),
        )
        .expect("write postgresql.auto.conf");
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(server.data.join("postgresql.auto.conf"))
                .status();
        }
        server.start_again();
        server.stop_at_exit();
        Some(server)
    }

    /// Starts (again) on the same port and socket, and waits until it accepts.
    pub fn start_again(&self) {
        let log = self.socket_dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops it: `mode` is `fast` (disconnect clients, clean shutdown) or
    /// `immediate` (as if the machine lost power).
    pub fn stop(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", mode, "-w", "stop"],
        );
    }

    /// A fresh, empty database on this server.
    pub async fn database(&self) -> PostgresSettings {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = self.connection("postgres");
        let (client, conn) = admin.connect(tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        PostgresSettings {
            connection: self.connection(&name),
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// A connection string to database `name` over the Unix socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={name}",
            self.socket_dir.display(),
            self.port
        )
    }

    fn connection(&self, name: &str) -> tokio_postgres::Config {
        self.url(name).parse().expect("a valid connection string")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .current_dir(&self.socket_dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.socket_dir.join("server.log")).unwrap_or_default()
        );
    }

    /// A detached watcher that stops the server once this process is gone.
    fn stop_at_exit(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = format!(
            "{}{} -D {} -m immediate stop",
            if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl.display(),
            self.data.display()
        );
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            std::process::id(),
            self.socket_dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "sh" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec!["-c", "exec \"$0\" \"$@\""]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", path(&self.data), "-m", "immediate", "stop"])
            .output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
