use super::*;
use crate::identity::Role;

const GOOD: &str = r#"
jurisdiction = "EE"
data_dir = "data"

[listeners]
border = "127.0.0.1:8443"
admin = "127.0.0.1:8444"
ops = "127.0.0.1:9090"

[identity]
certificate = "gateway.pem"
key = "gateway-key.pem"

[trust.EE]
trust_domain = "ee.xborder.test"
ca = "ca.pem"

[trust.FI]
trust_domain = "fi.xborder.test"
ca = "../fi/ca.pem"
crls = ["../fi/ca.crl"]

[tokens]
signing_key = "token-key.pem"

[audit]
signing_key = "audit-key.pem"
pseudonym_key = "audit-pseudonym.key"

[admin.identities]
"spiffe://ee.xborder.test/admin/operator" = ["operator", "approver"]

[policy.EE.FI]
legal_bases = ["eu-2023-1543"]
categories = ["subscriber", "content"]
max_targets = 10
max_period = "366d"
max_lifetime = "30d"

[policy.EE.FI.approvals]
content = 2

[[routes]]
prefix = "/v1/data/subscriber"
upstream = "http://127.0.0.1:8081/subscriber"
category = "subscriber"
"#;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("/etc/xborder/gateway.toml"), text)
}

fn keys(err: ConfigErrors) -> Vec<String> {
    err.0.into_iter().map(|e| e.key).collect()
}

#[test]
fn a_good_file_resolves_paths_against_its_directory() {
    let config = load(GOOD).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/xborder/data"));
    let fi: Jurisdiction = "FI".parse().unwrap();
    assert_eq!(config.trust[&fi].ca, Path::new("/etc/xborder/../fi/ca.pem"));
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.routes[0].strip("/v1/data/subscriber/x"), Some("/x"));
    assert_eq!(config.routes[0].strip("/v1/data/subscriber"), Some(""));
    assert_eq!(config.routes[0].strip("/v1/data/subscribers"), None);
}

#[test]
fn every_unknown_key_is_named() {
    let text = GOOD.replace(
        "[listeners]",
        "colour = \"red\"\n[listeners]\nbordr = \"x\"",
    );
    let err = load(&text).unwrap_err();
    assert_eq!(keys(err.clone()), vec!["colour", "listeners.bordr"]);
    assert!(
        err.to_string()
            .contains("/etc/xborder/gateway.toml: `colour`: unknown key")
    );
}

#[test]
fn bad_durations_and_addresses_are_all_reported() {
    let text = format!("{GOOD}\n[timeouts]\nidle = \"5 parsecs\"\nheader_read = \"0s\"\n")
        .replace("127.0.0.1:9090", "localhost");
    let err = load(&text).unwrap_err();
    let mut keys = keys(err);
    keys.sort();
    assert_eq!(
        keys,
        vec!["listeners.ops", "timeouts.header_read", "timeouts.idle"]
    );
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let text = GOOD.replace("127.0.0.1:9090", "127.0.0.1:8443");
    let err = load(&text).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].key, "listeners.ops");
    assert!(err.0[0].problem.contains("listeners.border"));
    // Ephemeral ports never collide.
    let text = GOOD
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace("127.0.0.1:8443", "127.0.0.1:0");
    assert!(load(&text).is_ok());
}

#[test]
fn routes_are_checked() {
    let text = format!(
        "{GOOD}\n[[routes]]\nprefix = \"/v1/requests\"\nupstream = \"https://x\"\ncategory = \"Content\"\n\
         [[routes]]\nprefix = \"/v1/data/subscriber\"\nupstream = \"http://127.0.0.1:1\"\ncategory = \"traffic\"\n"
    );
    let err = load(&text).unwrap_err();
    assert_eq!(
        keys(err),
        vec![
            "routes[1].prefix",
            "routes[1].upstream",
            "routes[1].category",
            "routes[2].prefix"
        ]
    );
}

#[test]
fn a_routes_query_parameters_are_names_and_never_the_period() {
    let route = |parameters: &str| {
        format!(
            "{GOOD}\n[[routes]]\nprefix = \"/v1/data/traffic\"\nupstream = \"http://127.0.0.1:1\"\n\
             category = \"traffic\"\nparameters = {parameters}\n"
        )
    };
    let config = load(&route(r#"["fields", "page_size"]"#)).unwrap();
    let traffic = config.routes.last().unwrap();
    assert_eq!(traffic.parameters, ["fields", "page_size"]);
    for bad in [r#"["a&b"]"#, r#"["from"]"#, r#"["x", "x"]"#, r#"[""]"#] {
        let err = load(&route(bad)).unwrap_err();
        assert_eq!(keys(err), vec!["routes[1].parameters"], "{bad}");
    }
}

#[test]
fn identities_and_trust_are_typed() {
    let text = GOOD
        .replace(
            "spiffe://ee.xborder.test/admin/operator",
            "spiffe://fi.xborder.test/admin/x",
        )
        .replace(
            "trust_domain = \"fi.xborder.test\"",
            "trust_domain = \"ee.xborder.test\"",
        )
        .replace("jurisdiction = \"EE\"", "jurisdiction = \"Estonia\"");
    let mut keys = keys(load(&text).unwrap_err());
    keys.sort();
    assert_eq!(keys, vec!["jurisdiction", "trust.FI.trust_domain"]);
}

#[test]
fn admins_must_be_ours() {
    let text = GOOD.replace(
        "spiffe://ee.xborder.test/admin/operator",
        "spiffe://fi.xborder.test/admin/x",
    );
    assert_eq!(
        keys(load(&text).unwrap_err()),
        vec!["admin.identities.\"spiffe://fi.xborder.test/admin/x\""]
    );
}

#[test]
fn a_type_error_names_its_key() {
    let text = GOOD.replace("data_dir = \"data\"", "data_dir = 7");
    let err = load(&text).unwrap_err();
    assert!(err.to_string().contains("data_dir"), "{err}");
}

#[test]
fn tokens_default_their_issuer_and_audience_to_our_gateway() {
    let config = load(GOOD).unwrap();
    assert_eq!(config.tokens.issuer, "spiffe://ee.xborder.test/gateway");
    assert_eq!(config.tokens.audience, config.tokens.issuer);
    assert_eq!(
        config.tokens.signing_key,
        Path::new("/etc/xborder/token-key.pem")
    );
    let text = GOOD.replace("signing_key = \"token-key.pem\"\n", "");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("signing_key"), "{err}");
}

#[test]
fn the_audit_log_needs_its_keys_and_defaults_its_origin() {
    let config = load(GOOD).unwrap();
    assert_eq!(config.audit.origin, "ee.xborder.test/audit");
    assert_eq!(
        config.audit.pseudonym_key,
        Path::new("/etc/xborder/audit-pseudonym.key")
    );
    assert_eq!(config.reports, crate::config::ReportSettings::default());
    assert_eq!(config.reports.k_anonymity, 5);

    let text = GOOD.replace("[audit]\n", "[audit_typo]\n");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("missing: add [audit]"), "{err}");

    let text = GOOD.replace(
        "pseudonym_key = \"audit-pseudonym.key\"\n",
        "pseudonym_key = \"audit-pseudonym.key\"\norigin = \"has space\"\n",
    ) + "\n[reports]\nk_anonymity = 10\nepsilon = -1.0\n";
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("audit.origin"), "{err}");
    assert!(err.contains("reports.epsilon"), "{err}");

    // ε = 1e-300 once saturated every published count at 2⁶⁴ − 1.
    for bad in ["1e-300", "0.001", "11.0"] {
        let text = GOOD.to_owned() + &format!("\n[reports]\nepsilon = {bad}\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("`reports.epsilon`: "), "{err}");
        assert!(err.contains("0.01 ≤ ε ≤ 10"), "{err}");
    }

    let text = GOOD.to_owned() + "\n[reports]\nk_anonymity = 10\nepsilon = 0.5\n";
    let config = load(&text).unwrap();
    assert_eq!(config.reports.k_anonymity, 10);
    assert_eq!(config.reports.epsilon, Some(0.5));
}

#[test]
fn roles_and_policies_are_typed_and_every_bad_key_named() {
    let config = load(GOOD).unwrap();
    let operator: SpiffeId = "spiffe://ee.xborder.test/admin/operator".parse().unwrap();
    assert_eq!(
        config.admins[&operator],
        vec![Role::Operator, Role::Approver]
    );
    assert_eq!(config.policies.len(), 1);

    let text = GOOD
        .replace("[\"operator\", \"approver\"]", "[\"operator\", \"king\"]")
        .replace("max_period = \"366d\"", "max_period = \"a while\"")
        .replace("content = 2", "content = 0\nsecrets = 1")
        .replace(
            "categories = [\"subscriber\", \"content\"]",
            "categories = [\"subscriber\", \"content\"]\ncolour = \"red\"",
        );
    let mut keys = keys(load(&text).unwrap_err());
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "admin.identities.\"spiffe://ee.xborder.test/admin/operator\"",
            "policy.EE.FI.approvals.content",
            "policy.EE.FI.colour",
            "policy.EE.FI.max_period",
        ]
    );
}

#[test]
fn the_local_listener_is_loopback_only_and_needs_our_client_identity() {
    let text = GOOD.replace(
        "ops = \"127.0.0.1:9090\"",
        "ops = \"127.0.0.1:9090\"\nlocal = \"0.0.0.0:8081\"",
    );
    let mut keys = keys(load(&text).unwrap_err());
    keys.sort();
    assert_eq!(keys, vec!["identity.client_certificate", "listeners.local"]);

    let text = GOOD
        .replace(
            "ops = \"127.0.0.1:9090\"",
            "ops = \"127.0.0.1:9090\"\nlocal = \"127.0.0.1:8081\"",
        )
        .replace(
            "key = \"gateway-key.pem\"",
            "key = \"gateway-key.pem\"\nclient_certificate = \"c.pem\"\nclient_key = \"k.pem\"",
        );
    let config = load(&text).unwrap();
    assert_eq!(
        config.listeners.local,
        Some("127.0.0.1:8081".parse().unwrap())
    );
}

#[test]
fn peers_are_host_and_port_resolved_later() {
    let text = format!(
        "{GOOD}\n[peers.FI]\nborder = \"gateway.fi.example:8443\"\n\n[peers.LV]\nborder = \"no-port\"\n"
    );
    assert_eq!(keys(load(&text).unwrap_err()), vec!["peers.LV.border"]);
    let text = format!("{GOOD}\n[peers.FI]\nborder = \"gateway.fi.example:8443\"\n");
    let config = load(&text).unwrap();
    let fi: Jurisdiction = "FI".parse().unwrap();
    assert_eq!(config.peers[&fi].border, "gateway.fi.example:8443");
    assert_eq!(config.peers[&fi].server_name, "gateway.fi.example");
}

#[test]
fn notify_defaults_to_no_webhook_and_checks_every_key() {
    let config = load(GOOD).unwrap();
    assert_eq!(config.notify, NotifySettings::default());
    assert_eq!(config.notify.webhook, None);
    assert_eq!(config.notify.timeout, Duration::from_secs(10));

    let text = format!(
        "{GOOD}\n[notify]\nwebhook = \"http://127.0.0.1:9000/notices?from=ee\"\ntimeout = \"3s\"\n\
         retry_min = \"500ms\"\nretry_max = \"1h\"\n"
    );
    let notify = load(&text).unwrap().notify;
    assert_eq!(
        notify.webhook.unwrap().to_string(),
        "http://127.0.0.1:9000/notices?from=ee"
    );
    assert_eq!(
        (notify.timeout, notify.retry_min, notify.retry_max),
        (
            Duration::from_secs(3),
            Duration::from_millis(500),
            Duration::from_secs(3600)
        )
    );

    let text = format!(
        "{GOOD}\n[notify]\nwebhook = \"https://notices.ee.example/in\"\ntimeout = \"0s\"\n\
         retry_min = \"1h\"\nretry_max = \"1m\"\ncolour = \"red\"\n"
    );
    let err = load(&text).unwrap_err();
    let mut keys = keys(err.clone());
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "notify.colour",
            "notify.retry_max",
            "notify.timeout",
            "notify.webhook"
        ]
    );
    assert!(err.to_string().contains("https is not supported"), "{err}");

    for (webhook, problem) in [
        ("ftp://x/y", "not an http:// URL"),
        ("/notices", "not an http:// URL"),
        ("http://user:secret@127.0.0.1:9000/", "credentials"),
        ("not a url at all", "not a URL"),
    ] {
        let text = format!("{GOOD}\n[notify]\nwebhook = \"{webhook}\"\n");
        let err = load(&text).unwrap_err();
        assert_eq!(keys_of(&err), vec!["notify.webhook"], "{webhook}");
        assert!(err.to_string().contains(problem), "{webhook}: {err}");
        assert!(!err.to_string().contains("secret@"), "{err}");
    }
}

fn keys_of(err: &ConfigErrors) -> Vec<String> {
    err.0.iter().map(|e| e.key.clone()).collect()
}

#[test]
fn the_store_defaults_to_sqlite_and_a_postgres_store_is_checked_key_by_key() {
    assert!(matches!(load(GOOD).unwrap().store, StoreSettings::Sqlite));

    let inline = format!(
        "{GOOD}\n[store]\nbackend = \"postgres\"\nurl = \"host=/run/postgresql dbname=xborder\"\npool_size = 4\nconnect_timeout = \"2s\"\n"
    );
    match load(&inline).unwrap().store {
        StoreSettings::Postgres(pg) => {
            assert_eq!(pg.pool_size, 4);
            assert_eq!(pg.connect_timeout, Duration::from_secs(2));
            assert_eq!(pg.connection.get_dbname(), Some("xborder"));
        }
        other => panic!("{other:?}"),
    }

    let bad = format!(
        "{GOOD}\n[store]\nbackend = \"postgres\"\nurl = \"postgresql://x:hunter2@db/xborder\"\npool_size = 0\nconnect_timeout = \"soon\"\ncolour = \"blue\"\n"
    );
    let errors = load(&bad).unwrap_err();
    let text = errors.to_string();
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    let mut named = keys(errors);
    named.sort();
    assert_eq!(
        named,
        [
            "store.colour",
            "store.connect_timeout",
            "store.pool_size",
            "store.url"
        ]
    );

    let missing =
        format!("{GOOD}\n[store]\nbackend = \"postgres\"\nurl_file = \"nowhere/pg.url\"\n");
    let errors = load(&missing).unwrap_err().to_string();
    assert!(
        errors.contains("store.url_file") && errors.contains("/etc/xborder/nowhere/pg.url"),
        "{errors}"
    );

    let wrong = format!("{GOOD}\n[store]\nbackend = \"mysql\"\n");
    assert_eq!(keys(load(&wrong).unwrap_err()), ["store.backend"]);
    let stray = format!("{GOOD}\n[store]\npool_size = 3\n");
    assert_eq!(keys(load(&stray).unwrap_err()), ["store.pool_size"]);
}
