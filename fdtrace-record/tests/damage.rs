//! Cut, flipped, foreign and random files: the reader never panics, returns every record of
//! every complete block, and explains each problem in one line naming the offset.

mod common;

use common::{assert_one_line, header, one_of_each, read_all, record};
use fdtrace_record::{BLOCK_HEADER_LEN, ErrorKind, ReadError, Reader, Record, Tail, Writer};
use proptest::prelude::*;

/// A small recording of several blocks (flushed every 3 records), the records, and the file
/// offsets where each block ends (the first entry is the end of the file header).
fn small_recording() -> (Vec<u8>, Vec<Record>, Vec<u64>) {
    let records = one_of_each();
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let mut ends = vec![w.bytes_written()];
    for (i, r) in records.iter().enumerate() {
        w.write(r).unwrap();
        if i % 3 == 2 {
            w.flush().unwrap();
            ends.push(w.bytes_written());
        }
    }
    w.flush().unwrap();
    if *ends.last().unwrap() != w.bytes_written() {
        ends.push(w.bytes_written());
    }
    let bytes = w.finish().unwrap();
    assert_eq!(*ends.last().unwrap(), bytes.len() as u64);
    assert!(ends.len() >= 5, "several blocks");
    (bytes, records, ends)
}

/// How many records the blocks ending at `ends[1..=k]` hold (3 per block, the rest in the last).
fn records_in_first_blocks(k: usize, total: usize) -> usize {
    (3 * k).min(total)
}

#[test]
fn truncation_at_every_offset() {
    let (bytes, records, ends) = small_recording();
    let header_end = ends[0];
    for cut in 0..=bytes.len() as u64 {
        let data = &bytes[..cut as usize];
        if cut < header_end {
            let e = Reader::new(data).unwrap_err();
            assert_one_line(&e);
            assert!(e.is_damaged(), "cut {cut}: {e}");
            assert!(
                matches!(e, ReadError::TruncatedHeader { len, .. } if len == cut),
                "cut {cut}: {e}"
            );
            continue;
        }
        let got = read_all(data).unwrap();
        assert!(got.errors.is_empty(), "cut {cut}: {:?}", got.errors);
        // The complete blocks are those ending at or before the cut.
        let complete = ends[1..].iter().filter(|&&e| e <= cut).count();
        let n = records_in_first_blocks(complete, records.len());
        assert_eq!(got.records, records[..n], "cut {cut}");
        let last_end = ends[complete];
        if cut == last_end {
            assert_eq!(got.tail, Tail::Complete, "cut {cut}");
        } else {
            let block_len = ends[complete + 1] - last_end;
            let available = cut - last_end;
            let expected = if available < BLOCK_HEADER_LEN as u64 {
                BLOCK_HEADER_LEN as u64
            } else {
                block_len
            };
            assert_eq!(
                got.tail,
                Tail::Truncated {
                    offset: last_end,
                    expected,
                    available
                },
                "cut {cut}"
            );
            let msg = got.tail.to_string();
            assert!(msg.contains(&format!("cut at byte {last_end}")), "{msg}");
        }
    }
}

/// Reads a file that must be damaged: the header fails, or iteration ends with exactly one
/// fatal error after a prefix of `original`.
fn assert_detected(data: &[u8], original: &[Record], what: &str) {
    let got = match read_all(data) {
        Err(e) => {
            assert_one_line(&e);
            assert!(e.is_damaged(), "{what}: {e}");
            return;
        }
        Ok(got) => got,
    };
    assert_eq!(
        got.errors.len(),
        1,
        "{what}: {:?} tail {:?}",
        got.errors,
        got.tail
    );
    let e = &got.errors[0];
    assert_one_line(e);
    assert!(e.is_damaged() && e.is_fatal(), "{what}: {e}");
    assert!(
        matches!(got.tail, Tail::Stopped { .. }),
        "{what}: {:?}",
        got.tail
    );
    assert!(got.records.len() <= original.len());
    assert_eq!(got.records, original[..got.records.len()], "{what}");
}

#[test]
fn every_single_bit_flip_is_detected() {
    let (bytes, records, _) = small_recording();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut data = bytes.clone();
            data[i] ^= 1 << bit;
            assert_detected(&data, &records, &format!("bit {bit} of byte {i}"));
        }
    }
}

#[test]
fn foreign_files_are_not_recordings() {
    let elf = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00";
    let e = Reader::new(&elf[..]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"not an fdtrace recording: expected magic "FDTRACE\0" at offset 0, found "\x7fELF\x02\x01\x01\x00""#
    );
    assert_eq!(e.kind(), ErrorKind::Damaged);
    assert!(e.is_damaged());

    let e = Reader::new(&b"hello\n"[..]).unwrap_err();
    assert!(matches!(e, ReadError::NotRecording { .. }), "{e}");
    assert_one_line(&e);
}

#[test]
fn empty_file_is_a_cut_header() {
    let e = Reader::new(&b""[..]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "recording cut short: expected a 20-byte file header at offset 0, found the end of the file at offset 0"
    );
    assert!(e.is_damaged());
}

#[test]
fn other_major_version_is_unsupported() {
    let (mut bytes, _, _) = small_recording();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    let e = Reader::new(&bytes[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.is_damaged());
    assert_eq!(
        e.to_string(),
        "unsupported fdtrace recording format 2.2: expected format version 1.x at offset 8 (this reader knows 1.2)"
    );
}

#[test]
fn checksum_mismatch_names_the_block_offset() {
    let (bytes, records, ends) = small_recording();
    // Flip a byte in the compressed data of the second block.
    let mut data = bytes.clone();
    let at = ends[1] as usize + BLOCK_HEADER_LEN + 2;
    data[at] ^= 0x40;
    let got = read_all(&data).unwrap();
    assert_eq!(got.records, records[..3]);
    let msg = got.errors[0].to_string();
    let data_at = ends[1] + BLOCK_HEADER_LEN as u64;
    assert!(
        msg.starts_with(&format!("damaged recording at offset {data_at}: expected ")),
        "{msg}"
    );
    assert!(msg.contains("checksum"), "{msg}");
    assert_eq!(got.errors[0].offset(), data_at);
    assert_eq!(got.tail, Tail::Stopped { offset: ends[1] });
}

#[test]
fn zeroed_tail_is_damage_not_truncation() {
    // A file system may leave zeros after a crash: that is not a block.
    let (mut bytes, records, ends) = small_recording();
    let end = bytes.len();
    bytes.extend_from_slice(&[0; 100]);
    let got = read_all(&bytes).unwrap();
    assert_eq!(got.records, records);
    let msg = got.errors[0].to_string();
    assert_eq!(
        msg,
        format!(
            r#"damaged recording at offset {end}: expected block magic "FDBK", found "\x00\x00\x00\x00""#
        )
    );
    assert_eq!(*ends.last().unwrap(), end as u64);
}

/// A block with correct magic and checksums around `data` (compressed with zstd).
fn valid_block(data: &[u8], count: u32) -> Vec<u8> {
    let compressed = zstd::bulk::compress(data, 1).unwrap();
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

#[test]
fn record_count_mismatch_is_damage() {
    let header_only = common::write_all(&[]);
    // Exit record: head (10 << 1 | 1), ts delta 2 (zigzag 4), body length 1, tgid 5.
    let exit = [21u8, 4, 1, 5];
    for count in [0u32, 2] {
        let mut data = header_only.clone();
        data.extend(valid_block(&exit, count));
        let got = read_all(&data).unwrap();
        assert_eq!(got.errors.len(), 1, "count {count}");
        assert_one_line(&got.errors[0]);
        assert!(
            got.errors[0].to_string().contains("records"),
            "{}",
            got.errors[0]
        );
    }
    let mut data = header_only.clone();
    data.extend(valid_block(&exit, 1));
    let got = read_all(&data).unwrap();
    assert_eq!(got.records, vec![Record::Exit { ts_ns: 2, tgid: 5 }]);
}

#[test]
fn bad_record_inside_a_valid_block_names_block_record_and_byte() {
    let mut data = common::write_all(&[]);
    let block_at = data.len();
    // A good Exit, then an Open whose body ends after tgid and tid (body length 2).
    let bytes = [21u8, 4, 1, 5, 9, 2, 2, 1, 1];
    data.extend(valid_block(&bytes, 2));
    let got = read_all(&data).unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(
        got.errors[0].to_string(),
        format!(
            "damaged recording in the block at offset {block_at}, record 1 (byte 9 of its decompressed data): expected a varint (Open.fd), found the end of the data"
        )
    );
}

#[test]
fn oversized_block_lengths_are_refused_before_allocating() {
    let mut data = common::write_all(&[]);
    let at = data.len();
    let mut b = Vec::new();
    b.extend_from_slice(b"FDBK");
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&10u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let hcrc = crc32fast::hash(&b);
    b.extend_from_slice(&hcrc.to_le_bytes());
    data.extend(b);
    let got = read_all(&data).unwrap();
    assert_eq!(
        got.errors[0].to_string(),
        format!(
            "damaged recording at offset {}: expected a compressed block length of at most 16777216, found 4294967295",
            at + 4
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random bytes: never a panic; errors are one line and about the contents.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        match read_all(&data) {
            Err(e) => { assert_one_line(&e); prop_assert!(e.is_damaged()); }
            Ok(got) => for e in &got.errors { assert_one_line(e); prop_assert!(e.is_damaged()); }
        }
    }

    /// A valid header followed by random bytes (often starting like a block).
    #[test]
    fn random_blocks_never_panic(
        magic in proptest::bool::ANY,
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut file = common::write_all(&[]);
        if magic {
            file.extend_from_slice(b"FDBK");
        }
        file.extend_from_slice(&data);
        let got = read_all(&file).unwrap();
        for e in &got.errors { assert_one_line(e); prop_assert!(e.is_damaged()); }
    }

    /// Random data inside blocks whose checksums are right: the record decoder itself must
    /// reject it cleanly.
    #[test]
    fn random_block_contents_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..1024),
        count in 0u32..50,
    ) {
        let mut file = common::write_all(&[]);
        file.extend(valid_block(&data, count));
        let got = read_all(&file).unwrap();
        prop_assert!(got.errors.len() <= 1);
        for e in &got.errors { assert_one_line(e); prop_assert!(e.is_damaged()); }
    }

    /// A valid recording of random records with a few random bytes overwritten.
    #[test]
    fn overwritten_bytes_are_detected(
        records in proptest::collection::vec(record(), 1..40),
        hits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let bytes = common::write_all(&records);
        let mut data = bytes.clone();
        for (i, v) in &hits {
            let at = i.index(data.len());
            data[at] = *v;
        }
        if data != bytes {
            assert_detected(&data, &records, "overwritten");
        }
    }
}
