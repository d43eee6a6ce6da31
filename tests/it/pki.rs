//! The development PKI, checked on real files with the verifiers the gateway
//! uses (rustls/webpki with the ring provider) and with x509-parser.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr as _;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, client::WebPkiServerVerifier};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
use xborder::identity::{Jurisdiction, SpiffeId};
use xborder::pki::{DevCa, LeafSpec, write_dev_set};

fn ee() -> Jurisdiction {
    "EE".parse().unwrap()
}

fn fi() -> Jurisdiction {
    "FI".parse().unwrap()
}

/// A dev set for EE and FI in a fresh temporary directory.
struct DevSet {
    dir: tempfile::TempDir,
}

impl DevSet {
    fn write() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_dev_set(dir.path(), &[ee(), fi()]).unwrap();
        Self { dir }
    }

    fn path(&self, cc: &str, name: &str) -> PathBuf {
        self.dir.path().join(cc).join(name)
    }

    fn cert(&self, cc: &str, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(self.path(cc, name)).unwrap()
    }

    fn crl(&self, cc: &str) -> CertificateRevocationListDer<'static> {
        CertificateRevocationListDer::from_pem_file(self.path(cc, "ca.crl")).unwrap()
    }
}

const FILES: [&str; 15] = [
    "ca.pem",
    "ca-key.pem",
    "ca.crl",
    "gateway.pem",
    "gateway-key.pem",
    "client.pem",
    "client-key.pem",
    "admin.pem",
    "admin-key.pem",
    "age-identity.txt",
    "age-recipient.txt",
    "token-key.pem",
    "audit-key.pem",
    "audit-pseudonym.key",
    "gateway.toml",
];

const SECRETS: [&str; 8] = [
    "ca-key.pem",
    "gateway-key.pem",
    "client-key.pem",
    "admin-key.pem",
    "age-identity.txt",
    "token-key.pem",
    "audit-key.pem",
    "audit-pseudonym.key",
];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'_>) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned()).unwrap();
    Arc::new(roots)
}

/// Verifies `leaf` as a client certificate the way the border listener does.
fn verify_client(
    ca: &CertificateDer<'_>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    leaf: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .with_crls(crls)
        .build()
        .unwrap();
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map(drop)
}

/// Verifies `leaf` as the server certificate of `localhost`.
fn verify_server(ca: &CertificateDer<'_>, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(drop)
}

#[test]
fn dev_set_writes_every_file_and_keys_are_private() {
    let set = DevSet::write();
    for cc in ["ee", "fi"] {
        for name in FILES {
            let mode = fs::metadata(set.path(cc, name))
                .unwrap_or_else(|e| panic!("{cc}/{name}: {e}"))
                .permissions()
                .mode();
            if SECRETS.contains(&name) {
                assert_eq!(mode & 0o777, 0o600, "{cc}/{name} is {mode:o}");
            } else {
                assert_eq!(mode & 0o022, 0, "{cc}/{name} is {mode:o}");
            }
        }
        // Atomic writes leave no temporary files behind.
        let entries = fs::read_dir(set.dir.path().join(cc)).unwrap().count();
        assert_eq!(entries, FILES.len(), "{cc} has stray files");
    }
}

#[test]
fn written_files_are_reported_with_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_dev_set(dir.path(), &[ee(), fi()]).unwrap();
    assert_eq!(written.len(), 2 * FILES.len());
    assert_eq!(
        written.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
        xborder::pki::dev_set_paths(dir.path(), &[ee(), fi()]),
    );
    for file in &written {
        let name = file.path.file_name().unwrap().to_str().unwrap();
        assert_eq!(file.secret, SECRETS.contains(&name), "{name}");
        assert!(!file.what.is_empty());
    }
}

#[test]
fn duplicate_jurisdictions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_dev_set(dir.path(), &[ee(), ee()]).unwrap_err();
    assert!(err.to_string().contains("EE"), "{err}");
}

#[test]
fn certificates_carry_the_promised_extensions() {
    let set = DevSet::write();

    let ca_der = set.cert("ee", "ca.pem");
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let bc = ca.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert_eq!(
        ca.subject().to_string(),
        "CN=xborder dev CA EE, O=xborder dev"
    );

    let gateway_der = set.cert("ee", "gateway.pem");
    let (_, gateway) = X509Certificate::from_der(&gateway_der).unwrap();
    let eku = gateway.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let names = &gateway
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(names.contains(&GeneralName::DNSName("localhost")));
    assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    let uris: Vec<_> = names
        .iter()
        .filter(|n| matches!(n, GeneralName::URI(_)))
        .collect();
    assert_eq!(
        uris,
        [&GeneralName::URI("spiffe://ee.xborder.test/gateway")]
    );
    assert!(!gateway.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(gateway.subject().to_string(), "CN=gateway");
    // Random, positive, 16 bytes.
    assert_eq!(gateway.raw_serial().len(), 16);
    assert!(gateway.raw_serial()[0] < 0x80);

    for (name, spiffe_id) in [
        ("client.pem", "spiffe://ee.xborder.test/gateway"),
        ("admin.pem", "spiffe://ee.xborder.test/admin/operator"),
    ] {
        let der = set.cert("ee", name);
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "{name}");
        assert_eq!(
            xborder::identity::spiffe_id_of(&der).unwrap().as_str(),
            spiffe_id
        );
    }
}

#[test]
fn leaves_verify_against_their_own_ca_only() {
    let set = DevSet::write();
    let ee_ca = set.cert("ee", "ca.pem");
    let fi_ca = set.cert("fi", "ca.pem");

    verify_server(&ee_ca, &set.cert("ee", "gateway.pem")).unwrap();
    assert!(verify_server(&fi_ca, &set.cert("ee", "gateway.pem")).is_err());
    // A client certificate is no server certificate (EKU).
    assert!(verify_server(&ee_ca, &set.cert("ee", "client.pem")).is_err());

    for name in ["client.pem", "admin.pem"] {
        verify_client(&ee_ca, vec![set.crl("ee")], &set.cert("ee", name)).unwrap();
        verify_client(&fi_ca, vec![set.crl("fi")], &set.cert("fi", name)).unwrap();
        assert!(verify_client(&fi_ca, vec![], &set.cert("ee", name)).is_err());
        assert!(verify_client(&ee_ca, vec![], &set.cert("fi", name)).is_err());
    }
}

#[test]
fn a_crl_lists_what_was_revoked_and_the_verifier_refuses_it() {
    let ca = DevCa::new(&ee()).unwrap();
    let id = SpiffeId::new(ca.trust_domain(), "gateway").unwrap();
    let revoked = ca.issue(&LeafSpec::client(id.clone())).unwrap();
    let kept = ca.issue(&LeafSpec::client(id)).unwrap();

    let empty = ca.crl_pem(&[]).unwrap();
    let crl_pem = ca.crl_pem(&[&revoked]).unwrap();
    assert!(crl_pem.starts_with("-----BEGIN X509 CRL-----"));

    let numbers: Vec<_> = [&empty, &crl_pem]
        .iter()
        .map(|pem| {
            let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
            let serials: Vec<Vec<u8>> = crl
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect();
            (crl.crl_number().unwrap().clone(), serials)
        })
        .collect();
    assert!(numbers[0].1.is_empty());
    assert_eq!(numbers[1].1, [revoked.serial().to_bytes()]);
    assert!(numbers[1].0 > numbers[0].0, "CRL numbers must increase");

    let crl = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).unwrap();
    let err = verify_client(&ca.cert_der(), vec![crl.clone()], &revoked.cert_der()).unwrap_err();
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    ));
    verify_client(&ca.cert_der(), vec![crl], &kept.cert_der()).unwrap();
}

#[test]
fn leaf_specs_make_expired_and_mis_issued_certificates() {
    let ca = DevCa::new(&ee()).unwrap();
    let now = OffsetDateTime::now_utc();

    let expired = LeafSpec::client(SpiffeId::new(ca.trust_domain(), "gateway").unwrap())
        .valid(now - Duration::days(2), now - Duration::days(1));
    let err = verify_client(
        &ca.cert_der(),
        vec![],
        &ca.issue(&expired).unwrap().cert_der(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
        )
    ));

    // EE's CA issuing an FI identity: the chain verifies, the trust-domain
    // binding is what must catch it.
    let foreign = SpiffeId::new(&fi().dev_trust_domain(), "gateway").unwrap();
    let mis_issued = ca.issue(&LeafSpec::client(foreign.clone())).unwrap();
    verify_client(&ca.cert_der(), vec![], &mis_issued.cert_der()).unwrap();
    assert_eq!(
        xborder::identity::spiffe_id_of(&mis_issued.cert_der()).unwrap(),
        foreign
    );

    assert!(
        ca.issue(&expired.valid(now, now - Duration::seconds(1)))
            .is_err()
    );
}

#[test]
fn debug_output_shows_no_keys() {
    let ca = DevCa::new(&ee()).unwrap();
    let issued = ca
        .issue(&LeafSpec::server(
            SpiffeId::new(ca.trust_domain(), "gateway").unwrap(),
        ))
        .unwrap();
    let debug = format!("{ca:?} {issued:?}");
    assert!(debug.contains("EE") && debug.contains("spiffe://ee.xborder.test/gateway"));
    for key in [ca.key_pem(), issued.key_pem()] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "Debug shows key material");
        }
    }
    assert!(!debug.contains("PRIVATE KEY"));
}

#[test]
fn age_identity_matches_its_recipient() {
    let set = DevSet::write();
    for cc in ["ee", "fi"] {
        let identity_file = fs::read_to_string(set.path(cc, "age-identity.txt")).unwrap();
        let lines: Vec<&str> = identity_file.lines().collect();
        assert_eq!(lines.len(), 3, "{identity_file}");
        assert!(lines[0].starts_with("# created: "));
        let identity = age::x25519::Identity::from_str(lines[2]).unwrap();
        let recipient = fs::read_to_string(set.path(cc, "age-recipient.txt")).unwrap();
        assert_eq!(format!("{}\n", identity.to_public()), recipient);
        assert_eq!(lines[1], format!("# public key: {}", recipient.trim_end()));
    }
}

#[test]
fn gateway_configs_parse_and_point_at_real_files() {
    let set = DevSet::write();
    let mut ports = HashSet::new();
    for (cc, own, other) in [("ee", "EE", "FI"), ("fi", "FI", "EE")] {
        let config_path = set.path(cc, "gateway.toml");
        let text = fs::read_to_string(&config_path).unwrap();
        let config: toml::Value = toml::from_str(&text).unwrap();
        let base = config_path.parent().unwrap();
        let exists = |value: &toml::Value| file_exists(base, value.as_str().unwrap());

        assert_eq!(config["jurisdiction"].as_str(), Some(own));
        for listener in ["border", "admin", "ops"] {
            let addr = config["listeners"][listener].as_str().unwrap();
            let port = addr.strip_prefix("127.0.0.1:").unwrap();
            assert!(ports.insert(port.parse::<u16>().unwrap()), "{addr} twice");
        }
        let upstream = config["routes"][0]["upstream"].as_str().unwrap();
        let port = upstream
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix("/subscriber"))
            .unwrap();
        assert!(ports.insert(port.parse().unwrap()), "{upstream} twice");

        for key in ["certificate", "key", "client_certificate", "client_key"] {
            assert!(exists(&config["identity"][key]), "identity.{key}");
        }
        for peer in [own, other] {
            let trust = &config["trust"][peer];
            assert_eq!(
                trust["trust_domain"].as_str().unwrap(),
                format!("{}.xborder.test", peer.to_ascii_lowercase())
            );
            assert!(exists(&trust["ca"]), "trust.{peer}.ca");
            assert!(exists(&trust["crls"][0]), "trust.{peer}.crls");
        }
        let operator = format!("spiffe://{cc}.xborder.test/admin/operator");
        let roles = config["admin"]["identities"][operator.as_str()]
            .as_array()
            .unwrap();
        assert!(
            roles.iter().any(|r| r.as_str() == Some("approver")),
            "{roles:?}"
        );
        assert!(
            exists(&config["tokens"]["signing_key"]),
            "tokens.signing_key"
        );
        // The pair policy for the other jurisdiction of the set, and only that.
        let policies = config["policy"][own].as_table().unwrap();
        assert_eq!(policies.keys().collect::<Vec<_>>(), vec![other]);
        // And the whole file is a configuration the gateway accepts.
        let path = set.path(cc, "gateway.toml");
        xborder::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn file_exists(base: &Path, relative: &str) -> bool {
    base.join(relative).is_file()
}

fn xborder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xborder"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_names_a_bad_jurisdiction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let output = xborder(&["pki", "dev", "--out", out, "--jurisdictions", "EE,XX1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("XX1"), "{stderr}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "wrote files");
}

#[test]
fn cli_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = ["pki", "dev", "--out", out, "--jurisdictions", "EE,FI"];

    let first = xborder(&args);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("ca-key.pem") && stdout.contains("(secret, 0600)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("xborder serve --config {out}/ee/gateway.toml")),
        "{stdout}"
    );
    let ca_before = fs::read(dir.path().join("ee/ca.pem")).unwrap();

    let second = xborder(&args);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("ee/ca.pem") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(dir.path().join("ee/ca.pem")).unwrap(), ca_before);

    let forced = xborder(&[&args[..], &["--force"]].concat());
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(fs::read(dir.path().join("ee/ca.pem")).unwrap(), ca_before);
}
