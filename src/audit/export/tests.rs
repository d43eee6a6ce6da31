use proptest::prelude::*;

use super::*;

fn header(size: u64) -> Header {
    Header {
        origin: "xborder.example/audit".to_owned(),
        size,
        checkpoint: "xborder.example/audit\n2\nAAAA\n\n\u{2014} xborder.example/audit QUJD\n"
            .to_owned(),
    }
}

fn export() -> Export {
    Export {
        header: header(2),
        entries: vec![br#"{"index":0}"#.to_vec(), br#"{"index":1} "#.to_vec()],
    }
}

fn read(bytes: &[u8]) -> Result<Export, ExportError> {
    Export::read_from(bytes)
}

#[test]
fn exports_round_trip_byte_for_byte() {
    let mut file = Vec::new();
    export().write_to(&mut file).unwrap();
    let text = String::from_utf8(file.clone()).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"format":"xborder-audit-export","version":1,"origin":"xborder.example/audit","size":2,"checkpoint":"xborder.example/audit\n2\n"#),
        "{first}"
    );
    assert!(text.ends_with("{\"index\":1} \n"), "{text}");
    assert_eq!(read(&file).unwrap(), export());
}

#[test]
fn the_streaming_writer_matches_and_refuses_a_short_or_long_export() {
    let mut whole = Vec::new();
    export().write_to(&mut whole).unwrap();

    let mut writer = ExportWriter::new(Vec::new(), &header(2)).unwrap();
    for entry in &export().entries {
        writer.entry(entry).unwrap();
    }
    assert!(writer.entry(b"{}").is_err(), "a third entry of two");
    assert_eq!(writer.written(), 2);
    assert_eq!(writer.finish().unwrap(), whole);

    let mut short = ExportWriter::new(Vec::new(), &header(2)).unwrap();
    short.entry(b"{}").unwrap();
    let err = short.finish().unwrap_err().to_string();
    assert!(err.contains("1 of the 2 entries"), "{err}");

    let mut writer = ExportWriter::new(Vec::new(), &header(3)).unwrap();
    for bad in [&b""[..], b"{}\n{}"] {
        assert!(writer.entry(bad).is_err());
    }
    assert_eq!(writer.written(), 0);
}

#[test]
fn readers_name_the_line_of_each_problem() {
    let mut file = Vec::new();
    export().write_to(&mut file).unwrap();
    let too_long = format!("line 4: longer than {MAX_LINE} bytes");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "the file is empty"),
        (file[..file.len() - 1].to_vec(), "line 3: ends without a newline"),
        ([&file[..], b"\n"].concat(), "line 4: empty"),
        (
            [&file[..], &vec![b'x'; MAX_LINE + 1][..], b"\n"].concat(),
            &too_long,
        ),
        (b"not json\n".to_vec(), "line 1: not an xborder audit export header"),
        (
            b"{\"format\":\"something-else\",\"version\":1}\n".to_vec(),
            "line 1: not an xborder audit export header: `format` is `something-else`",
        ),
        (
            b"{\"format\":\"xborder-audit-export\",\"version\":2,\"more\":1}\n".to_vec(),
            "line 1: export format version 2; this xborder reads version 1",
        ),
        (
            b"{\"format\":\"xborder-audit-export\",\"version\":1,\"origin\":\"o\",\"size\":0,\"checkpoint\":\"c\",\"extra\":1}\n"
                .to_vec(),
            "line 1: not an xborder audit export header: unknown field `extra`",
        ),
    ];
    for (bytes, expected) in cases {
        let err = read(&bytes).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "expected `{expected}`, got `{err}`"
        );
    }
}

#[test]
fn a_line_too_long_is_refused_before_it_is_held() {
    // An endless line without a newline: the reader stops at the bound.
    let endless = std::io::BufReader::new(std::io::repeat(b'{'));
    let with_header = std::io::Read::chain(&b"{\"format\":\"xborder-audit-export\",\"version\":1,\"origin\":\"o\",\"size\":0,\"checkpoint\":\"c\"}\n"[..], endless);
    let err = Export::read_from(std::io::BufReader::new(with_header)).unwrap_err();
    assert!(matches!(err, ExportError::LineTooLong { line: 2 }), "{err}");
}

proptest! {
    #[test]
    fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read(&bytes);
        let mut prefixed = b"{\"format\":\"xborder-audit-export\",\"version\":1,\"origin\":\"o\",\"size\":1,\"checkpoint\":\"c\"}\n".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = read(&prefixed);
    }

    #[test]
    fn any_entries_round_trip(
        entries in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..64),
            0..16,
        ),
        origin in "[a-z./]{1,20}",
    ) {
        let export = Export {
            header: Header { origin, size: entries.len() as u64, checkpoint: "c\n\n\u{2014} k x\n".to_owned() },
            entries,
        };
        let mut file = Vec::new();
        export.write_to(&mut file).unwrap();
        prop_assert_eq!(read(&file).unwrap(), export);
    }
}
