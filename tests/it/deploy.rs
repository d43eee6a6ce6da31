//! The deployment files agree with the binary and with each other: the
//! Kubernetes manifests (`deploy/kubernetes/`), the `Dockerfile` and
//! `.dockerignore`, the systemd unit, and the secret-creation commands of
//! `deploy/README.md`.
//!
//! Nothing here needs a cluster or a Docker engine: the manifests are parsed,
//! the ConfigMap's `gateway.toml` goes through `Config::parse` and, laid out
//! on disk as the Secrets would be, through a real `Gateway::bind`; every
//! command line goes through the real binary's CLI with `--help` appended.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use http::StatusCode;
use tokio_util::sync::CancellationToken;
use xborder::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{Running, World, plain_get};

const BIN: &str = env!("CARGO_BIN_EXE_xborder");
/// Where the sidecar's config file is mounted, as the binary is told.
const CONFIG_PATH: &str = "/etc/xborder/gateway.toml";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------
// Kubernetes manifests

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

/// The sidecar's named container ports.
fn named_ports(container: &Yaml) -> BTreeMap<String, u16> {
    list(&container["ports"])
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("every port is named").to_owned();
            let port = p["containerPort"].as_i64().expect("containerPort") as u16;
            (name, port)
        })
        .collect()
}

/// A probe or Service port: a number, or the name of a container port.
fn resolve_port(port: &Yaml, named: &BTreeMap<String, u16>) -> u16 {
    match port {
        Yaml::Integer(n) => *n as u16,
        Yaml::String(name) => match name.parse() {
            Ok(n) => n,
            Err(_) => *named
                .get(name)
                .unwrap_or_else(|| panic!("port `{name}` is not a container port")),
        },
        other => panic!("not a port: {other:?}"),
    }
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

#[test]
fn every_manifest_parses_and_is_namespace_agnostic() {
    let docs = documents();
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for kind in ["ConfigMap", "Deployment", "Service"] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
    for (file, doc) in &docs {
        let name = doc["metadata"]["name"].as_str();
        assert!(
            doc["apiVersion"].as_str().is_some(),
            "{file}: a document without apiVersion"
        );
        assert!(name.is_some(), "{file}: a document without metadata.name");
        assert!(
            doc["metadata"]["namespace"].is_badvalue(),
            "{file}: {name:?} names a namespace; apply with -n instead"
        );
        // Secrets are referenced, never shipped: they are made from a PKI.
        assert_ne!(
            doc["kind"].as_str(),
            Some("Secret"),
            "{file}: secret material in the manifests"
        );
    }
}

#[test]
fn the_configmap_holds_a_config_the_gateway_accepts() {
    let config = gateway_config();
    let local = config
        .listeners
        .local
        .expect("a local listener for the apps in the pod");
    assert_eq!(
        local.ip(),
        std::net::Ipv4Addr::LOCALHOST,
        "local listener on 127.0.0.1"
    );
    // The others listen on the pod's addresses, or neither probes nor peers reach them.
    let admin = config.listeners.admin.expect("an admin listener");
    let ops = config
        .listeners
        .ops
        .expect("an ops listener for probes and metrics");
    for addr in [config.listeners.border, admin, ops] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr} is not reachable from outside the pod"
        );
    }
    assert!(config.identity.client_certificate.is_some());
    assert!(!config.peers.is_empty());
    assert!(config.data_dir.is_absolute());
}

#[test]
fn container_ports_are_the_configs_listeners() {
    let config = gateway_config();
    let listeners: BTreeMap<&str, u16> = [
        ("border", Some(config.listeners.border)),
        ("admin", config.listeners.admin),
        ("ops", config.listeners.ops),
    ]
    .into_iter()
    .filter_map(|(name, addr)| Some((name, addr?.port())))
    .collect();
    let ports = named_ports(&sidecar(&deployment()));
    assert!(!ports.is_empty());
    for (name, port) in &ports {
        assert_eq!(
            listeners.get(name.as_str()),
            Some(port),
            "container port {name}={port} is not listeners.{name} of the config ({listeners:?})"
        );
    }
    assert!(ports.contains_key("border") && ports.contains_key("ops"));
    let local = config.listeners.local.unwrap().port();
    assert!(
        !ports.values().any(|p| *p == local),
        "the loopback-only local port is declared"
    );
}

#[test]
fn probes_and_scrape_annotations_point_at_the_ops_listener() {
    let ops = gateway_config().listeners.ops.unwrap().port();
    let deployment = deployment();
    let container = sidecar(&deployment);
    let named = named_ports(&container);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(resolve_port(&get["port"], &named), ops, "{probe} port");
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(ops.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
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

#[tokio::test]
async fn the_ops_listener_serves_every_probe_and_scrape_path() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    for path in ops_paths() {
        let (status, body) = plain_get(gateway.ops, &path).await;
        assert_eq!(status, StatusCode::OK, "GET {path} on ops: {body}");
    }
    gateway.shutdown().await;
}

#[test]
fn every_file_the_config_names_is_mounted_and_secrets_can_rotate() {
    let config = gateway_config();
    let deployment = deployment();
    let spec = pod_spec(&deployment);
    let volumes: BTreeMap<String, Yaml> = list(&spec["volumes"])
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect();
    let container = sidecar(&deployment);
    let mounts = list(&container["volumeMounts"]);
    for mount in mounts {
        let name = mount["name"].as_str().unwrap();
        assert!(
            volumes.contains_key(name),
            "volumeMount {name} has no volume"
        );
    }
    // The mount a path lies under (the deepest, as the kernel resolves it).
    let mount_of = |path: &Path| -> &Yaml {
        mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("{} is on no volume of the sidecar", path.display()))
    };

    let mut secret_files: Vec<(&str, &PathBuf)> = vec![
        ("identity.certificate", &config.identity.certificate),
        ("identity.key", &config.identity.key),
        ("tokens.signing_key", &config.tokens.signing_key),
        ("audit.signing_key", &config.audit.signing_key),
        ("audit.pseudonym_key", &config.audit.pseudonym_key),
    ];
    secret_files.extend(
        config
            .identity
            .client_certificate
            .iter()
            .map(|p| ("identity.client_certificate", p)),
    );
    secret_files.extend(
        config
            .identity
            .client_key
            .iter()
            .map(|p| ("identity.client_key", p)),
    );
    secret_files.extend(
        config
            .tokens
            .verify_keys
            .iter()
            .map(|p| ("tokens.verify_keys", p)),
    );
    for anchor in config.trust.values() {
        secret_files.push(("trust.*.ca", &anchor.ca));
        secret_files.extend(anchor.crls.iter().map(|p| ("trust.*.crls", p)));
    }
    for (key, path) in secret_files {
        let mount = mount_of(path);
        let volume = &volumes[mount["name"].as_str().unwrap()];
        assert!(
            !volume["secret"]["secretName"].is_badvalue(),
            "{key}: {} is not from a Secret",
            path.display()
        );
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "{key}: mount is not read-only"
        );
        // A subPath mount never sees the Secret's updates: rotation would stall.
        assert!(
            mount["subPath"].is_badvalue(),
            "{key}: mounted by subPath, so rotation never arrives"
        );
        let mode = volume["secret"]["defaultMode"]
            .as_i64()
            .expect("an explicit defaultMode");
        assert!(
            mode == 0o400 || mode == 0o440,
            "{key}: mode {mode:o} gives more than owner/group read"
        );
    }

    // The data directory: writable, on a volume that outlives the container.
    let data = mount_of(&config.data_dir);
    assert_ne!(
        data["readOnly"].as_bool(),
        Some(true),
        "data_dir is read-only"
    );
    let volume = &volumes[data["name"].as_str().unwrap()];
    assert!(
        !volume["persistentVolumeClaim"].is_badvalue() || !volume["emptyDir"].is_badvalue(),
        "data_dir is on neither a PersistentVolumeClaim nor an emptyDir"
    );

    // The config file itself, from the ConfigMap, where the args say.
    let args = strings(&container["args"]);
    let at = args.iter().position(|a| a == "--config").expect("--config");
    assert_eq!(args[at + 1], CONFIG_PATH);
    let mount = mount_of(Path::new(CONFIG_PATH));
    let volume = &volumes[mount["name"].as_str().unwrap()];
    assert!(
        !volume["configMap"]["name"].is_badvalue(),
        "the config is not from the ConfigMap"
    );
}

#[test]
fn every_container_runs_non_root_and_locked_down_with_resources() {
    let deployment = deployment();
    let spec = pod_spec(&deployment);
    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    for container in list(&spec["containers"]) {
        let name = container["name"].as_str().unwrap();
        let sc = &container["securityContext"];
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{name}");
        let user = sc["runAsUser"].as_i64().or(pod["runAsUser"].as_i64());
        assert!(user.is_some_and(|u| u != 0), "{name}: runAsUser {user:?}");
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert!(
            sc["capabilities"]["add"].is_badvalue(),
            "{name} adds capabilities"
        );
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod["seccompProfile"]["type"].as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{name}");
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !container["resources"][bound][resource].is_badvalue(),
                    "{name}: no resources.{bound}.{resource}"
                );
            }
        }
    }
    assert_eq!(
        sidecar(&deployment)["securityContext"]["runAsUser"].as_i64(),
        Some(65532)
    );
}

#[test]
fn the_pod_drains_and_keeps_one_writer() {
    let config = gateway_config();
    let deployment = deployment();
    let grace = pod_spec(&deployment)["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace as u64 > config.timeouts.shutdown_grace.as_secs(),
        "the kubelet kills before timeouts.shutdown_grace ends"
    );
    // SQLite in data_dir has one writer: never two pods at once.
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
}

#[test]
fn services_expose_border_and_admin_never_ops_and_select_the_pod() {
    let config = gateway_config();
    let deployment = deployment();
    let container = sidecar(&deployment);
    let named = named_ports(&container);
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_hash()
        .unwrap();
    let ops = config.listeners.ops.unwrap().port();
    let mut exposed = BTreeSet::new();
    for service in of_kind("Service") {
        let name = service["metadata"]["name"].as_str().unwrap().to_owned();
        for (key, value) in service["spec"]["selector"].as_hash().expect("a selector") {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{name}: selector {key:?} misses the pod"
            );
        }
        for port in list(&service["spec"]["ports"]) {
            let target = resolve_port(&port["targetPort"], &named);
            assert_ne!(target, ops, "{name} exposes the plain-HTTP ops listener");
            exposed.insert(target);
        }
    }
    assert!(
        exposed.contains(&config.listeners.border.port()),
        "no Service for the border"
    );
}

#[test]
fn container_command_lines_are_accepted_by_the_binary() {
    let deployment = deployment();
    let container = sidecar(&deployment);
    assert!(
        container["command"].is_badvalue(),
        "the sidecar keeps the image's ENTRYPOINT"
    );
    let args = strings(&container["args"]);
    assert_eq!(
        args,
        ["--log-format", "json", "serve", "--config", CONFIG_PATH]
    );
    assert_cli_accepts("sidecar args", &args);

    // Other containers running the xborder image (the example data service).
    let image = container["image"].as_str().unwrap();
    let config = gateway_config();
    for other in list(&pod_spec(&deployment)["containers"]) {
        if other["image"].as_str() != Some(image) || other["name"] == container["name"] {
            continue;
        }
        let args = strings(&other["args"]);
        assert_cli_accepts(other["name"].as_str().unwrap(), &args);
        // The example data service is where the routes go.
        if let Some(at) = args.iter().position(|a| a == "--listen") {
            let listen: SocketAddr = args[at + 1].parse().unwrap();
            assert!(
                listen.ip().is_loopback(),
                "the data service is reachable from outside the pod"
            );
            for route in &config.routes {
                assert_eq!(
                    route.upstream.port_u16(),
                    Some(listen.port()),
                    "{}",
                    route.prefix
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The secrets as deploy/README.md creates them, against the real gateway

/// `kubectl [-n NS] create secret generic NAME --from-file=KEY=pki/...` in
/// deploy/README.md (not the `--dry-run` rotation example): secret name →
/// (key, file under the `xborder pki dev --out pki` output).
fn readme_secrets() -> BTreeMap<String, Vec<(String, String)>> {
    let text = read("deploy/README.md").replace("\\\n", " ");
    let mut secrets: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("create secret generic ") else {
            continue;
        };
        if !line.trim_start().starts_with("kubectl ") || rest.contains("--dry-run") {
            continue;
        }
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap().to_owned();
        for word in words {
            if let Some(pair) = word.strip_prefix("--from-file=") {
                let (key, file) = pair.split_once('=').expect("--from-file=KEY=FILE");
                let file = file
                    .strip_prefix("pki/")
                    .expect("files from `xborder pki dev --out pki`");
                secrets
                    .entry(name.clone())
                    .or_default()
                    .push((key.to_owned(), file.to_owned()));
            }
        }
    }
    secrets
}

#[tokio::test]
async fn the_configmap_config_serves_with_the_secrets_the_readme_creates() {
    let secrets = readme_secrets();
    let deployment = deployment();
    let spec = pod_spec(&deployment);
    let container = sidecar(&deployment);

    // Every Secret the pod mounts is one the README creates, and back.
    let mut mounted: BTreeMap<String, String> = BTreeMap::new();
    for mount in list(&container["volumeMounts"]) {
        let volume = list(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            mounted.insert(
                secret.to_owned(),
                mount["mountPath"].as_str().unwrap().to_owned(),
            );
        }
    }
    assert_eq!(
        mounted.keys().collect::<Vec<_>>(),
        secrets.keys().collect::<Vec<_>>(),
        "the Secrets the pod mounts and those deploy/README.md creates differ"
    );

    // `xborder pki dev --out pki`, then the files where the Secrets put them.
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .args(["pki", "dev", "--out"])
        .arg(dir.path().join("pki"))
        .args(["--jurisdictions", "EE,FI"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let root = dir.path().join("root");
    for (secret, files) in &secrets {
        let mount = root.join(mounted[secret].trim_start_matches('/'));
        std::fs::create_dir_all(&mount).unwrap();
        for (key, file) in files {
            std::fs::copy(dir.path().join("pki").join(file), mount.join(key))
                .unwrap_or_else(|e| panic!("{secret}: {file}: {e}"));
        }
    }

    // The ConfigMap's config as is, but under `root`, on ephemeral loopback
    // ports, with the data directory in the temporary directory.
    let config = gateway_config();
    let mut text = resolvable(&configmap_text()).replace("\"/", &format!("\"{}/", root.display()));
    for addr in [
        Some(config.listeners.border),
        config.listeners.admin,
        config.listeners.ops,
        config.listeners.local,
    ]
    .into_iter()
    .flatten()
    {
        text = text.replace(&format!("\"{addr}\""), "\"127.0.0.1:0\"");
    }
    let data_dir = root.join(config.data_dir.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = root.join(CONFIG_PATH.trim_start_matches('/'));
    std::fs::write(&file, &text).unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));

    let gateway = Running::start_with(config, CancellationToken::new()).await;
    for path in ops_paths() {
        let (status, body) = plain_get(gateway.ops, &path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------
// Dockerfile and .dockerignore

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The instructions of the last stage (the image that ships).
fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let from = all.iter().rposition(|(op, _)| op == "FROM").expect("FROM");
    assert!(
        all[..from].iter().any(|(op, _)| op == "FROM"),
        "a multi-stage build: builder, then runtime"
    );
    all[from..].to_vec()
}

fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value)
        .unwrap_or_else(|e| panic!("not exec form (JSON array): {value}: {e}"))
}

#[test]
fn the_image_runs_the_binary_as_non_root_and_exposes_the_listeners() {
    let all = dockerfile();
    let builder = all
        .iter()
        .find(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        builder.1.contains("--release") && builder.1.contains("--locked"),
        "{}",
        builder.1
    );

    let runtime = runtime_stage();
    let get = |name: &str| -> Vec<&String> {
        runtime
            .iter()
            .filter(|(op, _)| op == name)
            .map(|(_, rest)| rest)
            .collect()
    };
    let user = get("USER");
    let user = user.last().expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(!matches!(uid, "0" | "root" | ""), "runs as {user}");
    assert_eq!(
        uid, "65532",
        "the distroless nonroot user, as the pod's runAsUser"
    );

    let entrypoint = exec_form(get("ENTRYPOINT").last().expect("ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/xborder"]);
    let copies = get("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.contains("--from=") && c.ends_with("/usr/local/bin/xborder")),
        "the binary is copied from the builder: {copies:?}"
    );
    let cmd = exec_form(get("CMD").last().expect("CMD"));
    assert_eq!(cmd, ["serve", "--config", CONFIG_PATH]);
    assert_cli_accepts("Dockerfile CMD", &cmd);

    let config = gateway_config();
    let expected: BTreeSet<u16> = [
        Some(config.listeners.border),
        config.listeners.admin,
        config.listeners.ops,
    ]
    .into_iter()
    .flatten()
    .map(|a| a.port())
    .collect();
    let exposed: BTreeSet<u16> = get("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(
        exposed, expected,
        "EXPOSE and the ConfigMap's listeners differ"
    );
}

#[test]
fn the_build_context_holds_sources_and_no_keys() {
    let lines: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("*"),
        "everything is ignored first"
    );
    let included: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix('!')).collect();
    for path in &included {
        let path = path.trim_end_matches('/');
        assert!(
            repo(path).exists(),
            ".dockerignore lets in {path}, which does not exist"
        );
        for secret in ["certs", "target", ".git", "config"] {
            assert!(!path.starts_with(secret), ".dockerignore lets {path} in");
        }
    }
    // Patterns after the last re-inclusion keep keys out of what came back.
    let last_include = lines.iter().rposition(|l| l.starts_with('!')).unwrap();
    for pattern in ["**/*.pem", "**/*.key"] {
        let at = lines.iter().position(|l| l == pattern);
        assert!(
            at.is_some_and(|at| at > last_include),
            "{pattern} is not excluded last"
        );
    }
    // What the builder copies is in the context.
    for (op, rest) in dockerfile() {
        if op != "COPY" || rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                included.iter().any(|i| i.trim_end_matches('/') == source),
                "COPY {source} is not let into the context"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// systemd

fn unit() -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("deploy/systemd/xborder.service").lines() {
        let line = line.trim();
        if line.starts_with(['#', ';', '[']) || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        keys.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    keys
}

#[test]
fn the_systemd_unit_runs_flags_the_binary_has_in_a_sandbox() {
    let unit = unit();
    let one = |key: &str| -> &str {
        let values = unit.get(key).unwrap_or_else(|| panic!("{key}= missing"));
        values.last().unwrap()
    };
    let exec: Vec<String> = one("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/xborder");
    assert!(exec.iter().any(|a| a == "serve"));
    assert_cli_accepts("ExecStart", &exec[1..]);

    assert!(
        one("ExecReload").contains("-HUP"),
        "reload sends SIGHUP (certificate reload)"
    );
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("StateDirectory"), "xborder");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert!(!matches!(one("User"), "root" | "0"));
    // The TLS files are re-read in place: they need a user that exists before
    // the service starts, not a dynamic one.
    assert_ne!(
        unit.get("DynamicUser")
            .and_then(|v| v.last())
            .map(String::as_str),
        Some("yes")
    );
    let stop: std::time::Duration = humantime::parse_duration(one("TimeoutStopSec"))
        .unwrap_or_else(|_| std::time::Duration::from_secs(one("TimeoutStopSec").parse().unwrap()));
    assert!(
        stop > gateway_config().timeouts.shutdown_grace,
        "systemd kills before the drain ends"
    );
}
