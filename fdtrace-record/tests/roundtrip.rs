//! Writing then reading gives back exactly the header and the records written.

mod common;

use common::{header, one_of_each, read_all, record, write_all};
use fdtrace_record::{Reader, Record, Tail, Writer};
use proptest::prelude::*;

#[test]
fn every_variant_round_trips() {
    let records = one_of_each();
    let bytes = write_all(&records);
    let r = Reader::new(&bytes[..]).unwrap();
    assert_eq!(r.header(), &header());
    assert_eq!(r.version(), (1, 2));
    let got = read_all(&bytes).unwrap();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(got.records, records);
    assert_eq!(got.tail, Tail::Complete);
}

#[test]
fn empty_recording_has_header_and_no_records() {
    let bytes = write_all(&[]);
    let got = read_all(&bytes).unwrap();
    assert!(got.records.is_empty());
    assert!(got.errors.is_empty());
    assert_eq!(got.tail, Tail::Complete);
}

#[test]
fn empty_header_round_trips() {
    let w = Writer::new(Vec::new(), &Default::default()).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(
        Reader::new(&bytes[..]).unwrap().header(),
        &Default::default()
    );
}

#[test]
fn stats_count_what_reached_the_inner_writer() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let after_header = w.bytes_written();
    assert_eq!(after_header, w.get_ref().len() as u64);
    let records = one_of_each();
    for r in &records {
        w.write(r).unwrap();
    }
    // Less than one block: all buffered.
    assert_eq!(w.records_written(), 0);
    assert_eq!(w.buffered_records(), records.len() as u64);
    assert_eq!(w.bytes_written(), after_header);
    w.flush().unwrap();
    assert_eq!(w.records_written(), records.len() as u64);
    assert_eq!(w.buffered_records(), 0);
    assert_eq!(w.bytes_written(), w.get_ref().len() as u64);
    // Flushing with nothing buffered writes no empty block.
    let before = w.bytes_written();
    w.flush().unwrap();
    assert_eq!(w.bytes_written(), before);
    let bytes = w.finish().unwrap();
    let mut r = Reader::new(&bytes[..]).unwrap();
    assert_eq!(r.by_ref().count(), records.len());
    assert_eq!(r.blocks_read(), 1);
    assert_eq!(r.offset(), bytes.len() as u64);
}

#[test]
fn a_full_block_is_written_without_flush() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    w.set_block_size(100);
    let rec = Record::Open {
        ts_ns: 1,
        tgid: 1,
        tid: 1,
        fd: 3,
        kind: 1,
        syscall: 1,
        cloexec: false,
        stack: None,
        target: "x".repeat(150).into(),
    };
    w.write(&rec).unwrap();
    assert_eq!(
        w.records_written(),
        1,
        "the block filled up and was written"
    );
    assert_eq!(w.bytes_written(), w.get_ref().len() as u64);
}

#[test]
fn timestamps_are_absolute_across_blocks() {
    // Non-monotonic and extreme timestamps, one block per record and all in one block.
    let stamps = [5u64, 3, u64::MAX, 0, 1 << 63, 7, 7];
    let records: Vec<Record> = stamps
        .iter()
        .map(|&ts_ns| Record::Exit { ts_ns, tgid: 1 })
        .collect();
    for block_size in [1, 1 << 16] {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        w.set_block_size(block_size);
        for r in &records {
            w.write(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(read_all(&bytes).unwrap().records, records);
    }
}

#[test]
fn records_and_header_are_plain_serde_types() {
    // A report can dump a recording as JSON (serde derive, not the on-disk encoding).
    let records = one_of_each();
    let json = serde_json::to_string(&records).unwrap();
    assert!(json.contains("save_image"));
    let back: Vec<Record> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, records);
    let h = serde_json::to_string(&header()).unwrap();
    assert_eq!(
        serde_json::from_str::<fdtrace_record::Header>(&h).unwrap(),
        header()
    );
}

#[test]
fn oversized_record_is_refused_and_writer_stays_usable() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let huge = Record::End {
        ts_ns: 1,
        reason: "x".repeat(fdtrace_record::MAX_RECORD_BODY + 1),
    };
    let e = w.write(&huge).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let ok = Record::End {
        ts_ns: 2,
        reason: "done".into(),
    };
    w.write(&ok).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(read_all(&bytes).unwrap().records, vec![ok]);
}

#[test]
fn largest_record_round_trips() {
    // A record at the size limit, in a maximal block, stays within the reader's caps.
    let big = Record::End {
        ts_ns: 1,
        reason: "y".repeat(fdtrace_record::MAX_RECORD_BODY - 8),
    };
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    w.set_block_size(usize::MAX);
    w.write(&big).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(read_all(&bytes).unwrap().records, vec![big]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any records, any block size, flushes anywhere: the reader returns them all, in order.
    #[test]
    fn arbitrary_records_round_trip(
        items in proptest::collection::vec((record(), proptest::bool::weighted(0.1)), 0..120),
        block_size in prop_oneof![1usize..200, 200usize..5000, Just(1 << 16)],
    ) {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        w.set_block_size(block_size);
        let mut flushes = 0;
        for (r, flush) in &items {
            w.write(r).unwrap();
            if *flush {
                w.flush().unwrap();
                flushes += 1;
            }
        }
        let bytes = w.finish().unwrap();
        let mut reader = Reader::new(&bytes[..]).unwrap();
        prop_assert_eq!(reader.header(), &header());
        let got: Vec<Record> = reader.by_ref().map(Result::unwrap).collect();
        let want: Vec<Record> = items.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(reader.tail(), &Tail::Complete);
        prop_assert_eq!(reader.offset(), bytes.len() as u64);
        if flushes > 0 {
            prop_assert!(reader.blocks_read() >= 1);
        }
    }

    /// Any header round-trips.
    #[test]
    fn arbitrary_header_round_trips(
        version in any::<String>(),
        hostname in any::<String>(),
        kernel in any::<String>(),
        unix in any::<u64>(),
        mono in any::<u64>(),
        cmdline in proptest::collection::vec(any::<String>(), 0..5),
        target in any::<String>(),
    ) {
        let h = fdtrace_record::Header {
            fdtrace_version: version,
            hostname,
            kernel_release: kernel,
            start_unix_ns: unix,
            start_monotonic_ns: mono,
            recorder_cmdline: cmdline,
            target,
        };
        let bytes = Writer::new(Vec::new(), &h).unwrap().finish().unwrap();
        let r = Reader::new(&bytes[..]).unwrap();
        prop_assert_eq!(r.header(), &h);
    }
}
