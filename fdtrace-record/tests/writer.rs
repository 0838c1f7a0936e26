//! The writer against real files, a full disk and failing sinks.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;

use common::{header, one_of_each, read_all};
use fdtrace_record::{ErrorKind, Reader, Record, Tail, Writer};

#[test]
fn create_makes_a_0600_file_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.fdt");
    let mut w = Writer::create(&path, &header()).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "mode {mode:o}");
    for r in one_of_each() {
        w.write(&r).unwrap();
    }
    w.sync().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), w.bytes_written());
    w.finish().unwrap();

    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.header(), &header());
    let records: Vec<Record> = r.by_ref().map(Result::unwrap).collect();
    assert_eq!(records, one_of_each());
    assert_eq!(r.tail(), &Tail::Complete);
}

#[test]
fn create_refuses_an_existing_file_or_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.fdt");
    fs::write(&path, b"precious").unwrap();
    let e = Writer::create(&path, &header()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&path).unwrap(), b"precious");

    let link = dir.path().join("link.fdt");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = Writer::create(&link, &header()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn open_of_a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.fdt");
    let e = Reader::open(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(!e.is_damaged());
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot open recording ") && msg.contains("missing.fdt"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn dev_full_gives_an_error_not_a_panic() {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let e = Writer::new(full, &header()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

/// A sink that takes `room` bytes, then fails with ENOSPC (accepting a partial write first).
#[derive(Debug)]
struct FullAfter {
    data: Vec<u8>,
    room: usize,
}

impl Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.room - self.data.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_disk_stops_the_writer_and_leaves_a_readable_file() {
    for room in [300, 555, 1000, 2001] {
        let mut w = Writer::new(
            FullAfter {
                data: Vec::new(),
                room,
            },
            &header(),
        )
        .unwrap();
        w.set_block_size(64);
        let mut written = Vec::new();
        let mut first_err = None;
        for i in 0..1000u32 {
            let r = Record::Open {
                ts_ns: 1_000_000 + u64::from(i) * 1000,
                tgid: 10,
                tid: 11,
                fd: 3 + (i % 50) as i32,
                kind: 1,
                syscall: 1,
                cloexec: false,
                stack: Some(i % 7),
                target: format!("/data/file-{i}").into(),
            };
            match w.write(&r) {
                Ok(()) => written.push(r),
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        let e = first_err.expect("the sink fills up");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        // Every later call fails the same way.
        let again = w.write(&Record::Exit { ts_ns: 1, tgid: 1 }).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::StorageFull);
        assert!(again.to_string().contains("earlier error"), "{again}");
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);

        let in_blocks = w.records_written() as usize;
        let bytes = w.get_ref().data.clone();
        assert!(w.bytes_written() <= bytes.len() as u64);
        assert_eq!(w.finish().unwrap_err().kind(), io::ErrorKind::StorageFull);

        // The file holds every complete block; the cut one is reported as the tail.
        let got = read_all(&bytes).unwrap();
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        assert_eq!(got.records, written[..in_blocks], "room {room}");
        match got.tail {
            Tail::Truncated { offset, .. } => assert!(offset <= bytes.len() as u64),
            Tail::Complete => {}
            other => panic!("room {room}: {other:?}"),
        }
    }
}

#[test]
fn dropping_an_unfinished_writer_flushes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.fdt");
    {
        let mut w = Writer::create(&path, &header()).unwrap();
        w.write(&Record::Exec { ts_ns: 9, tgid: 3 }).unwrap();
    }
    let got = read_all(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(got.records, vec![Record::Exec { ts_ns: 9, tgid: 3 }]);
}

#[test]
fn killed_recorder_leaves_every_flushed_record() {
    // What a reader sees while the recorder is still writing (or after it was killed): the
    // flushed blocks, then possibly part of the next one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.fdt");
    let mut w = Writer::create(&path, &header()).unwrap();
    for r in one_of_each() {
        w.write(&r).unwrap();
    }
    w.flush().unwrap();
    w.write(&Record::Exit { ts_ns: 1, tgid: 1 }).unwrap(); // buffered only
    let mut bytes = fs::read(&path).unwrap();
    // Simulate all but the last 3 bytes of the next block reaching the disk.
    let mut next = Vec::new();
    {
        let mut w2 = Writer::new(&mut next, &header()).unwrap();
        w2.write(&Record::Exit { ts_ns: 1, tgid: 1 }).unwrap();
        w2.finish().unwrap();
    }
    let hdr_len = Reader::new(&next[..]).unwrap().offset() as usize;
    let block = &next[hdr_len..];
    let end = bytes.len() as u64;
    let cut = block.len() - 3;
    bytes.extend_from_slice(&block[..cut]);
    let got = read_all(&bytes).unwrap();
    assert_eq!(got.records, one_of_each());
    assert_eq!(
        got.tail,
        Tail::Truncated {
            offset: end,
            expected: block.len() as u64,
            available: cut as u64
        }
    );
    drop(w);
}
