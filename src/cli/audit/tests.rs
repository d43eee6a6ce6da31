use super::*;

#[test]
fn pages_split_into_entry_lines() {
    assert_eq!(
        page_lines(b"{\"a\":1}\n{}\n", 2),
        Ok(vec![&b"{\"a\":1}"[..], b"{}"])
    );
    assert_eq!(page_lines(b"{}", 5), Ok(vec![&b"{}"[..]]));
    assert_eq!(page_lines(b"", 5), Err("no entries".to_owned()));
    assert_eq!(page_lines(b"\n", 5), Err("no entries".to_owned()));
    assert_eq!(
        page_lines(b"{}\n\n{}\n", 5),
        Err("an empty line".to_owned())
    );
    assert!(page_lines(b"{}\n{}\n{}\n", 2).is_err());
}

#[test]
fn the_exporter_reads_a_heads_size_without_its_key() {
    let head = Checkpoint {
        origin: "ee.xborder.test/audit".to_owned(),
        size: 42,
        root: [3; 32],
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let note = crate::audit::checkpoint::sign(&head, &head.origin, &key).unwrap();
    assert_eq!(unverified_head(&note), Some(head));
    assert_eq!(unverified_head("ee.xborder.test/audit\n42\n"), None);
}

/// A log of `n` made-up entry lines and the note of its head.
fn paged_log(n: u64) -> (Vec<Vec<u8>>, String) {
    let lines: Vec<Vec<u8>> = (0..n)
        .map(|i| format!(r#"{{"index":{i}}}"#).into_bytes())
        .collect();
    let head = Checkpoint {
        origin: "ee.xborder.test/audit".to_owned(),
        size: n,
        root: [1; 32],
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let note = crate::audit::checkpoint::sign(&head, &head.origin, &key).unwrap();
    (lines, note)
}

/// Answers a page as the admin API does, at most `cap` lines whatever
/// the limit (a server may send fewer than asked).
fn page(lines: &[Vec<u8>], start: u64, limit: u64, cap: u64) -> Bytes {
    let end = (start + limit.min(cap)).min(lines.len() as u64);
    let mut body = Vec::new();
    for line in &lines[start as usize..end as usize] {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    Bytes::from(body)
}

#[test]
fn exports_are_written_page_by_page() {
    let (lines, note) = paged_log(7);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let mut asked = Vec::new();
    let head = write_export(&out, note.as_bytes(), 3, |start, limit| {
        asked.push((start, limit));
        Ok(page(&lines, start, limit, 2))
    })
    .unwrap();
    assert_eq!(head.size, 7);
    assert_eq!(asked, [(0, 3), (2, 3), (4, 3), (6, 1)]);
    let export = Export::read_from(&std::fs::read(&out).unwrap()[..]).unwrap();
    assert_eq!(export.header.checkpoint, note);
    assert_eq!(export.entries, lines);
}

#[test]
fn a_failed_export_leaves_no_file_behind() {
    let (lines, note) = paged_log(7);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    // The connection drops after the first page.
    let err = write_export(&out, note.as_bytes(), 3, |start, limit| {
        if start > 0 {
            anyhow::bail!("cannot reach the admin listener");
        }
        Ok(page(&lines, start, limit, 3))
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("nothing written"), "{err:#}");
    // The log is shorter than its head says.
    let err = write_export(&out, note.as_bytes(), 3, |start, limit| {
        Ok(page(&lines[..5], start, limit, 3))
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("entries from 5 (limit 2): no entries"),
        "{err:#}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(write_export(&out, b"not a note", 3, |_, _| unreachable!()).is_err());
}

#[test]
fn receipts_are_read_from_the_jws_payload() {
    assert!(receipt_payload("a.b").is_err());
    assert!(receipt_payload("a.!!.c").is_err());
    let err = receipt_payload(&format!("a.{}.c", URL_SAFE_NO_PAD.encode("{}"))).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a transfer receipt"),
        "{err:#}"
    );
}
