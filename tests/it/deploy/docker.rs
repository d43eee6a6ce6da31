//! The image: the `Dockerfile` runs the binary as non-root and exposes the
//! config's listeners, and `.dockerignore` gives the build the sources and
//! no keys.

use std::collections::BTreeSet;

use super::{CONFIG_PATH, assert_cli_accepts, gateway_config, read, repo};

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
