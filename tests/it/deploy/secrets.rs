//! The secrets as `deploy/README.md` creates them: laid out as the
//! manifests mount them, beside the ConfigMap's config, they make a real
//! gateway that serves.

use std::collections::BTreeMap;
use std::process::Command;

use http::StatusCode;
use tokio_util::sync::CancellationToken;
use xborder::config::Config;

use super::{
    BIN, CONFIG_PATH, configmap_text, deployment, gateway_config, list, ops_paths, pod_spec, read,
    resolvable, sidecar,
};
use crate::support::{Running, plain_get};

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
