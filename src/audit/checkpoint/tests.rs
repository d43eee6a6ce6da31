use proptest::prelude::*;

use super::*;
use crate::audit::merkle::{MemoryTree, leaf_hash};

/// golang.org/x/mod sumdb/note's example (see tests/data/README.md).
const GO_NOTE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/go_signed_note.json"
));

#[derive(serde::Deserialize)]
struct GoNote {
    signer_key: String,
    verifier_key: String,
    name: String,
    key_id: String,
    text: String,
    note: String,
}

fn go_note() -> GoNote {
    serde_json::from_str(GO_NOTE).expect("vendored note parses")
}

/// The Go signer key is `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
fn go_signing_key(v: &GoNote) -> SigningKey {
    let typed = STANDARD
        .decode(v.signer_key.splitn(5, '+').nth(4).expect("5 parts"))
        .expect("base64");
    assert_eq!(typed[0], ED25519);
    SigningKey::from_bytes(&typed[1..].try_into().expect("32-byte seed"))
}

const NAME: &str = "xborder.example/audit";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn checkpoint() -> Checkpoint {
    let mut tree = MemoryTree::new();
    for i in 0..42u32 {
        tree.append(leaf_hash(&i.to_be_bytes()));
    }
    Checkpoint {
        origin: NAME.to_owned(),
        size: tree.size(),
        root: tree.root(),
    }
}

#[test]
fn reproduces_the_go_signed_note_byte_for_byte() {
    let v = go_note();
    let signer = go_signing_key(&v);
    assert_eq!(sign_note(&v.text, &v.name, &signer), Ok(v.note.clone()));
    assert_eq!(
        format_vkey(&v.name, &signer.verifying_key()),
        Ok(v.verifier_key.clone())
    );
    assert_eq!(
        format!("{:08x}", key_id(&v.name, &signer.verifying_key())),
        v.key_id
    );
    let (name, verifier) = parse_vkey(&v.verifier_key).expect("Go's vkey parses");
    assert_eq!(name, v.name);
    assert_eq!(open_note(&v.note, &name, &verifier), Ok(v.text.as_str()));
    let tampered = v.note.replace("cryptography", "cryptographY");
    assert_eq!(
        open_note(&tampered, &name, &verifier),
        Err(CheckpointError::BadSignature)
    );
}

#[test]
fn key_id_of_a_fixed_key() {
    // Computed independently of key_id: SHA-256 over the concatenation.
    let verifier = key(7).verifying_key();
    let mut preimage = NAME.as_bytes().to_vec();
    preimage.extend_from_slice(&[0x0a, 0x01]);
    preimage.extend_from_slice(verifier.as_bytes());
    let digest = Sha256::digest(&preimage);
    assert_eq!(key_id(NAME, &verifier).to_be_bytes(), digest[..4]);
    let vkey = format_vkey(NAME, &verifier).expect("valid name");
    assert_eq!(
        vkey,
        format!(
            "{NAME}+{}+{}",
            hex::encode(&digest[..4]),
            STANDARD.encode([&[1u8][..], verifier.as_bytes()].concat())
        )
    );
}

#[test]
fn round_trip() {
    let cp = checkpoint();
    let note = sign(&cp, NAME, &key(1)).expect("valid names");
    assert!(note.starts_with(&format!(
        "{NAME}\n42\n{}\n\n\u{2014} {NAME} ",
        STANDARD.encode(cp.root)
    )));
    assert_eq!(open(&note, NAME, &key(1).verifying_key()), Ok(cp.clone()));
    let (name, verifier) =
        parse_vkey(&format_vkey(NAME, &key(1).verifying_key()).unwrap()).unwrap();
    assert_eq!(open(&note, &name, &verifier), Ok(cp));
}

#[test]
fn empty_tree_round_trips() {
    let cp = Checkpoint {
        origin: NAME.to_owned(),
        size: 0,
        root: crate::audit::merkle::empty_root(),
    };
    let note = sign(&cp, NAME, &key(1)).unwrap();
    assert!(note.starts_with(&format!(
        "{NAME}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    )));
    assert_eq!(open(&note, NAME, &key(1).verifying_key()), Ok(cp));
}

#[test]
fn tampered_body_size_or_root_is_refused() {
    let cp = checkpoint();
    let note = sign(&cp, NAME, &key(1)).unwrap();
    let verifier = key(1).verifying_key();
    let other_root = STANDARD.encode(leaf_hash(b"other"));
    for tampered in [
        note.replacen("42\n", "43\n", 1),
        note.replacen(&STANDARD.encode(cp.root), &other_root, 1),
        note.replacen(NAME, "xborder.example/other", 1),
        note.replacen("\n\n", "\nextension\n\n", 1),
    ] {
        assert_ne!(tampered, note);
        assert_eq!(
            open(&tampered, NAME, &verifier),
            Err(CheckpointError::BadSignature),
            "{tampered}"
        );
    }
}

#[test]
fn signature_by_another_key_is_refused() {
    let note = sign(&checkpoint(), NAME, &key(2)).unwrap();
    // Same name, different key: a different key id, so not our signature.
    assert_eq!(
        open(&note, NAME, &key(1).verifying_key()),
        Err(CheckpointError::NotSigned)
    );
    // Another name altogether.
    let note = sign(&checkpoint(), "someone.else/log", &key(1)).unwrap();
    assert_eq!(
        open(&note, NAME, &key(1).verifying_key()),
        Err(CheckpointError::NotSigned)
    );
}

#[test]
fn a_forged_signature_under_our_key_id_is_refused() {
    let note = sign(&checkpoint(), NAME, &key(1)).unwrap();
    let line_start = note.rfind('\u{2014}').unwrap();
    let blob = STANDARD
        .decode(note[line_start..].trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    let mut forged = blob.clone();
    forged[10] ^= 1;
    let forged = note.replacen(&STANDARD.encode(&blob), &STANDARD.encode(&forged), 1);
    assert_eq!(
        open(&forged, NAME, &key(1).verifying_key()),
        Err(CheckpointError::BadSignature)
    );
}

#[test]
fn cosignatures_by_unknown_keys_are_ignored() {
    let cp = checkpoint();
    let ours = sign(&cp, NAME, &key(1)).unwrap();
    let witness = sign(&cp, "witness.example", &key(3)).unwrap();
    let witness_line = &witness[witness.rfind('\u{2014}').unwrap()..];
    let both = format!("{ours}{witness_line}");
    assert_eq!(open(&both, NAME, &key(1).verifying_key()), Ok(cp.clone()));
    let both = format!(
        "{}\n\n{witness_line}{}",
        cp.body().trim_end(),
        &ours[ours.rfind('\u{2014}').unwrap()..]
    );
    assert_eq!(open(&both, NAME, &key(1).verifying_key()), Ok(cp));
}

#[test]
fn malformed_notes_are_refused() {
    let note = sign(&checkpoint(), NAME, &key(1)).unwrap();
    let verifier = key(1).verifying_key();
    let malformed = Err(CheckpointError::MalformedNote);
    assert_eq!(
        open(note.trim_end(), NAME, &verifier),
        malformed,
        "no final newline"
    );
    assert_eq!(
        open(&note.replacen("\n\n", "\n", 1), NAME, &verifier),
        malformed,
        "no blank line"
    );
    assert_eq!(
        open(&note.replace('\u{2014}', "-"), NAME, &verifier),
        malformed,
        "hyphen, not em dash"
    );
    assert_eq!(
        open(&note.replacen("42", "4\t2", 1), NAME, &verifier),
        malformed,
        "control character"
    );
    assert_eq!(
        open(&format!("{note}\u{2014} {NAME}\n"), NAME, &verifier),
        malformed,
        "line without signature"
    );
    assert_eq!(
        open(&format!("{note}\u{2014} {NAME} !!!\n"), NAME, &verifier),
        malformed,
        "bad base64"
    );
    let line = &note[note.rfind('\u{2014}').unwrap()..];
    assert_eq!(
        open(&format!("{note}{line}"), NAME, &verifier),
        malformed,
        "signed twice by one key"
    );
    assert_eq!(
        open(&checkpoint().body(), NAME, &verifier),
        malformed,
        "unsigned"
    );
}

#[test]
fn checkpoint_bodies_follow_the_spec() {
    let cp = checkpoint();
    let root = STANDARD.encode(cp.root);
    assert_eq!(Checkpoint::parse(&cp.body()), Ok(cp.clone()));
    // Extension lines: opaque, accepted if non-empty.
    assert_eq!(
        Checkpoint::parse(&format!("{NAME}\n42\n{root}\nextra line\n")),
        Ok(cp.clone())
    );
    let malformed = Err(CheckpointError::MalformedCheckpoint);
    for body in [
        format!("{NAME}\n42\n{root}\n\nextra\n"),
        format!("{NAME}\n042\n{root}\n"),
        format!("{NAME}\n+42\n{root}\n"),
        format!("{NAME}\n-1\n{root}\n"),
        format!("{NAME}\n18446744073709551616\n{root}\n"),
        format!("{NAME}\n42\n{}\n", root.trim_end_matches('=')),
        format!("{NAME}\n42\n{}\n", STANDARD.encode([0u8; 31])),
        format!("\n42\n{root}\n"),
        format!("{NAME}\n42\n{root}"),
        format!("{NAME}\n42\n"),
    ] {
        assert_eq!(Checkpoint::parse(&body), malformed, "{body:?}");
    }
}

#[test]
fn invalid_names_are_refused() {
    let cp = checkpoint();
    for name in ["", "has space", "has+plus", "tab\there"] {
        assert_eq!(
            sign(&cp, name, &key(1)),
            Err(CheckpointError::InvalidKeyName),
            "{name:?}"
        );
        assert_eq!(
            format_vkey(name, &key(1).verifying_key()),
            Err(CheckpointError::InvalidKeyName)
        );
    }
    let bad_origin = Checkpoint {
        origin: "two\nlines".to_owned(),
        ..cp
    };
    assert_eq!(
        sign(&bad_origin, NAME, &key(1)),
        Err(CheckpointError::InvalidOrigin)
    );
}

#[test]
fn malformed_verifier_keys_are_refused() {
    let good = format_vkey(NAME, &key(1).verifying_key()).unwrap();
    let (name, id, typed) = {
        let mut p = good.splitn(3, '+');
        (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
    };
    let other_key = STANDARD.encode([&[1u8][..], key(2).verifying_key().as_bytes()].concat());
    let wrong_type = STANDARD.encode([&[2u8][..], key(1).verifying_key().as_bytes()].concat());
    for bad in [
        format!("{name}+{id}"),
        format!("{name}+{}+{typed}", id.to_uppercase()),
        format!("{name}+0{id}+{typed}"),
        format!("{name}+{id}+{other_key}"),
        format!("{name}+{id}+{wrong_type}"),
        format!("other.name+{id}+{typed}"),
        format!("{name}+{id}+{}", &typed[..typed.len() - 4]),
        format!("+{id}+{typed}"),
    ] {
        assert_eq!(
            parse_vkey(&bad).map(|_| ()),
            Err(CheckpointError::MalformedVerifierKey),
            "{bad}"
        );
    }
}

proptest! {
    #[test]
    fn open_never_panics_and_refuses_garbage(note in "\\PC*") {
        prop_assert!(open(&note, NAME, &key(1).verifying_key()).is_err());
        let _ = parse_vkey(&note);
        let _ = Checkpoint::parse(&note);
    }

    #[test]
    fn any_checkpoint_round_trips(size in any::<u64>(), root in any::<[u8; 32]>(), origin in "[a-z./]{1,40}") {
        let cp = Checkpoint { origin, size, root };
        let note = sign(&cp, NAME, &key(1)).unwrap();
        prop_assert_eq!(open(&note, NAME, &key(1).verifying_key()), Ok(cp));
    }
}
