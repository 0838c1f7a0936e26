//! The size target: a busy open/close loop must cost at most 16 bytes per event on disk.

mod common;

use fdtrace_record::{Record, Writer};

/// xorshift64*: deterministic jitter without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn open_close_stream_is_at_most_16_bytes_per_event() {
    const EVENTS: u64 = 100_000;
    let mut w = Writer::new(Vec::new(), &common::header()).unwrap();
    let header_bytes = w.bytes_written();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A realistic monotonic clock: ~1 µs between events, with jitter of a few hundred ns.
    let mut ts = 86_400_000_000_000u64;
    for i in 0..EVENTS {
        ts += 700 + rng.next() % 600;
        let r = if i % 2 == 0 {
            Record::Open {
                ts_ns: ts,
                tgid: 48_213,
                tid: 48_219,
                fd: 7,
                kind: 1,
                syscall: 1,
                cloexec: true,
                stack: Some(42),
                target: "/var/lib/imgsrv/cache/index.db".into(),
            }
        } else {
            Record::Close {
                ts_ns: ts,
                tgid: 48_213,
                tid: 48_219,
                fd: 7,
            }
        };
        w.write(&r).unwrap();
        // The tracer flushes every second; at one event per µs that is far apart.
    }
    let bytes = w.finish().unwrap();
    let body = bytes.len() as u64 - header_bytes;
    let per_event = body as f64 / EVENTS as f64;
    println!(
        "{EVENTS} open/close events: {body} bytes after the header, {per_event:.2} bytes/event"
    );
    assert_eq!(
        common::read_all(&bytes).unwrap().records.len() as u64,
        EVENTS
    );
    assert!(per_event <= 16.0, "{per_event:.2} bytes per event");
}
