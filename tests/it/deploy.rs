//! The deployment files agree with the binary and with each other: the
//! Kubernetes manifests (`deploy/kubernetes/`), the `Dockerfile` and
//! `.dockerignore`, the systemd unit, and the secret-creation commands of
//! `deploy/README.md`.
//!
//! Nothing here needs a cluster or a Docker engine: the manifests are parsed,
//! the ConfigMap's `gateway.toml` goes through `Config::parse` and, laid out
//! on disk as the Secrets would be, through a real `Gateway::build`; every
//! command line goes through the real binary's CLI with `--help` appended.
//!
//! One story a module: the Kubernetes manifests ([`kubernetes`]), the
//! secrets as `deploy/README.md` creates them ([`secrets`]), the image
//! ([`docker`]) and the systemd unit ([`systemd`]). The readers of the
//! repository's files and of the manifests, and the CLI check, which they
//! share, are here.

use std::path::{Path, PathBuf};
use std::process::Command;

use xborder::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

mod docker;
mod kubernetes;
mod secrets;
mod systemd;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");
/// Where the sidecar's config file is mounted, as the binary is told.
const CONFIG_PATH: &str = "/etc/xborder/gateway.toml";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of every file in `deploy/kubernetes/`, with its file.
fn documents() -> Vec<(String, Yaml)> {
    let dir = repo("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        for doc in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn of_kind(kind: &str) -> Vec<Yaml> {
    documents()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn deployment() -> Yaml {
    let mut found = of_kind("Deployment");
    assert_eq!(found.len(), 1, "one Deployment");
    found.remove(0)
}

fn pod_spec(deployment: &Yaml) -> &Yaml {
    &deployment["spec"]["template"]["spec"]
}

fn list(node: &Yaml) -> &[Yaml] {
    node.as_vec().map_or(&[], Vec::as_slice)
}

fn strings(node: &Yaml) -> Vec<String> {
    list(node)
        .iter()
        .map(|s| s.as_str().expect("a list of strings").to_owned())
        .collect()
}

/// The xborder container: the one that runs `serve`.
fn sidecar(deployment: &Yaml) -> Yaml {
    let serving: Vec<&Yaml> = list(&pod_spec(deployment)["containers"])
        .iter()
        .filter(|c| strings(&c["args"]).iter().any(|a| a == "serve"))
        .collect();
    assert_eq!(serving.len(), 1, "exactly one container runs `serve`");
    serving[0].clone()
}

/// The `gateway.toml` the ConfigMap holds.
fn configmap_text() -> String {
    let maps: Vec<Yaml> = of_kind("ConfigMap")
        .into_iter()
        .filter(|m| !m["data"]["gateway.toml"].is_badvalue())
        .collect();
    assert_eq!(maps.len(), 1, "one ConfigMap holds gateway.toml");
    maps[0]["data"]["gateway.toml"].as_str().unwrap().to_owned()
}

/// The ConfigMap's config with each `[peers]` border name replaced by
/// `localhost`: `Config::parse` resolves peer names, and this machine cannot
/// resolve the example's. Asserts the names are DNS names, not addresses.
fn resolvable(text: &str) -> String {
    let table: toml::Table = text.parse().unwrap();
    let mut text = text.to_owned();
    let peers = table
        .get("peers")
        .and_then(|p| p.as_table())
        .expect("[peers]");
    assert!(!peers.is_empty(), "at least one [peers.CC]");
    for (cc, peer) in peers {
        let border = peer["border"].as_str().unwrap();
        let (host, port) = border.rsplit_once(':').expect("host:port");
        assert!(
            host.parse::<std::net::IpAddr>().is_err() && host.contains('.'),
            "peers.{cc}.border names its gateway by DNS name, not {host}"
        );
        let quoted = format!("\"{border}\"");
        assert_eq!(text.matches(&quoted).count(), 1);
        text = text.replace(&quoted, &format!("\"localhost:{port}\""));
    }
    text
}

fn gateway_config() -> Config {
    Config::parse(Path::new(CONFIG_PATH), &resolvable(&configmap_text()))
        .unwrap_or_else(|e| panic!("the ConfigMap's gateway.toml is refused:\n{e}"))
}

/// Runs the binary with `args` and `--help` appended: every argument before
/// it must parse (clap stops at `--help`, so it goes last).
fn assert_cli_accepts(what: &str, args: &[String]) {
    let output = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(
        output.status.success(),
        "{what}: the binary refuses {args:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `--help` leaves flag values unchecked: run `serve` for real with
    // `--config` pointing at a missing file. It must get as far as reading
    // the config (exit 1), past argument parsing (a usage error exits 2).
    if let Some(at) = args.iter().position(|a| a == "--config")
        && args.iter().any(|a| a == "serve")
    {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args.to_vec();
        args[at + 1] = dir.path().join("missing.toml").display().to_string();
        let output = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {args:?}:\n{stderr}");
        assert!(
            stderr.contains("cannot read"),
            "{what}: {args:?}:\n{stderr}"
        );
    }
}

/// The paths the manifests probe and scrape, with the port they name.
fn ops_paths() -> Vec<String> {
    let deployment = deployment();
    let container = sidecar(&deployment);
    let mut paths: Vec<String> = ["livenessProbe", "readinessProbe", "startupProbe"]
        .iter()
        .filter_map(|p| container[*p]["httpGet"]["path"].as_str().map(str::to_owned))
        .collect();
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    paths.push(
        annotations["prometheus.io/path"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    paths
}
