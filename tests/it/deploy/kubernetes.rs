//! The Kubernetes manifests (`deploy/kubernetes/`) agree with the binary:
//! every manifest parses and names no namespace, the ConfigMap holds a
//! config the gateway accepts, the container ports are the config's
//! listeners, probes and scrape annotations point at the ops listener and
//! it serves them, every file the config names is mounted (and Secrets can
//! rotate), every container runs non-root and locked down, the pod drains
//! and keeps one writer, the Services expose border and admin only, and
//! the container command lines are accepted by the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::StatusCode;
use yaml_rust2::Yaml;

use super::{
    CONFIG_PATH, assert_cli_accepts, deployment, documents, gateway_config, list, of_kind,
    ops_paths, pod_spec, sidecar, strings,
};
use crate::support::{Running, World, plain_get};

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
