//! Format evolution: what a reader does with files from newer minor versions, hand-built here
//! byte by byte as docs/FORMAT.md describes them.

mod common;

use common::{assert_one_line, read_all};
use fdtrace_record::{ErrorKind, ReadError, Reader, Record, Tail};

/// A valid recording (no blocks) whose header says format 1.`minor`, with `extra` bytes
/// appended to the header body (fields a newer minor version added).
fn file_with_minor(minor: u16, extra: &[u8]) -> Vec<u8> {
    let mut f = common::write_all(&[]);
    let mut body = f[20..].to_vec();
    body.extend_from_slice(extra);
    f.truncate(20);
    f[10..12].copy_from_slice(&minor.to_le_bytes());
    f[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&f[8..16]);
    crc.update(&body);
    let c = crc.finalize();
    f[16..20].copy_from_slice(&c.to_le_bytes());
    f.extend(body);
    f
}

fn block(data: &[u8], count: u32) -> Vec<u8> {
    let compressed = zstd::bulk::compress(data, 3).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(b"FDBK");
    b.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
    let hcrc = crc32fast::hash(&b[0..20]);
    b.extend_from_slice(&hcrc.to_le_bytes());
    b.extend_from_slice(&compressed);
    b
}

/// Records of a block: Exit at ts 100; a tag-40 record with a timestamp (+50) and a 3-byte
/// body; an Exit (+10) with an extra trailing field byte; a tag-41 record without timestamp.
fn block_from_the_future() -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&[21, 200, 1, 1, 7]); // Exit: head 10<<1|1, ts zigzag(100)=200, len 1, tgid 7
    d.extend_from_slice(&[81, 100, 3, 0xaa, 0xbb, 0xcc]); // tag 40 with ts: +50
    d.extend_from_slice(&[21, 20, 2, 7, 0x55]); // Exit +10, tgid 7, one byte of a new field
    d.extend_from_slice(&[82, 0]); // tag 41, no timestamp, empty body
    d.extend_from_slice(&[21, 2, 1, 8]); // Exit +1, tgid 8
    block(&d, 5)
}

#[test]
fn newer_minor_header_fields_are_ignored() {
    let f = file_with_minor(4, &[1, 2, 3]);
    let r = Reader::new(&f[..]).unwrap();
    assert_eq!(r.version(), (1, 4));
    assert_eq!(r.header(), &common::header());
}

#[test]
fn same_minor_with_extra_header_bytes_is_damage() {
    let f = file_with_minor(0, &[1, 2, 3]);
    let e = Reader::new(&f[..]).unwrap_err();
    assert_one_line(&e);
    assert!(
        e.to_string().contains("expected the end of the header"),
        "{e}"
    );
}

#[test]
fn unknown_tags_of_a_newer_minor_are_reported_and_skipped() {
    let mut f = file_with_minor(3, &[]);
    let block_at = f.len() as u64;
    f.extend(block_from_the_future());
    let mut r = Reader::new(&f[..]).unwrap();
    let items: Vec<_> = r.by_ref().collect();
    assert_eq!(items.len(), 5);
    assert_eq!(
        items[0].as_ref().unwrap(),
        &Record::Exit {
            ts_ns: 100,
            tgid: 7
        }
    );
    let e = items[1].as_ref().unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        matches!(
            e,
            ReadError::UnknownRecord {
                tag: 40,
                ts_ns: Some(150),
                file_minor: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "unknown record in the block at offset {block_at}, record 1 (byte 5 of its decompressed data): tag 40 is newer than this reader (format 1.2, file is 1.3); record skipped"
        )
    );
    // The skipped record's timestamp still counts for the next delta.
    assert_eq!(
        items[2].as_ref().unwrap(),
        &Record::Exit {
            ts_ns: 160,
            tgid: 7
        }
    );
    assert!(matches!(
        items[3],
        Err(ReadError::UnknownRecord {
            tag: 41,
            ts_ns: None,
            ..
        })
    ));
    assert_eq!(
        items[4].as_ref().unwrap(),
        &Record::Exit {
            ts_ns: 161,
            tgid: 8
        }
    );
    assert_eq!(r.tail(), &Tail::Complete);
}

#[test]
fn unknown_tags_in_a_known_minor_are_damage() {
    let mut f = file_with_minor(2, &[]);
    f.extend(block_from_the_future());
    let got = read_all(&f).unwrap();
    assert_eq!(
        got.records,
        vec![Record::Exit {
            ts_ns: 100,
            tgid: 7
        }]
    );
    assert_eq!(got.errors.len(), 1);
    let e = &got.errors[0];
    assert!(e.is_fatal() && e.kind() == ErrorKind::Damaged, "{e}");
    assert!(e.to_string().contains("found tag 40"), "{e}");
    assert!(matches!(got.tail, Tail::Stopped { .. }));
}

/// A 1.0 `Preexisting` record ends before `born_ns` (appended in 1.1): read as unknown.
#[test]
fn a_format_1_0_preexisting_record_reads_without_its_birth_time() {
    let mut f = file_with_minor(0, &[]);
    // tag 12 without timestamp (head 24), body of 7 bytes: tgid 7, fd 3 (zigzag 6), kind 1,
    // cloexec 0, target "/x".
    f.extend(block(&[24, 7, 7, 6, 1, 0, 2, b'/', b'x'], 1));
    let got = read_all(&f).unwrap();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(
        got.records,
        vec![Record::Preexisting {
            tgid: 7,
            fd: 3,
            kind: 1,
            cloexec: false,
            target: "/x".into(),
            born_ns: None,
        }]
    );
}

#[test]
fn timestamp_flag_must_match_the_tag() {
    let mut f = file_with_minor(0, &[]);
    f.extend(block(&[20, 1, 7], 1)); // Exit without its timestamp
    let got = read_all(&f).unwrap();
    assert!(got.records.is_empty());
    let msg = got.errors[0].to_string();
    assert!(msg.contains("expected tag 10 with a timestamp"), "{msg}");
}
