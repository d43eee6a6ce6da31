//! The systemd unit runs the binary with flags it has, in a sandbox.

use std::collections::BTreeMap;

use super::{assert_cli_accepts, gateway_config, read};

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
