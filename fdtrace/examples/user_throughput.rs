//! The user side of fdtrace alone, without the kernel: how many ring-buffer records per second
//! `events::decode` and `process::State::apply` (unwinding, stack interning, the descriptor
//! model) get through. Used by `cargo xtask bench`.
//!
//! ```sh
//! cargo run --release -p fdtrace --example user_throughput -- PAIRS [PID]
//! ```
//!
//! The records are synthetic but shaped like the ones of a real open/close loop: an `OpenEvent`
//! of `/dev/null` carrying the registers and a real 2 KiB copy of a stack (so the DWARF unwinder
//! walks real frames through real `.eh_frame`), then a `CloseEvent` of the same number.
//!
//! With PID (a process blocked in a syscall, e.g. the bench's `openclose -w` waiting on stdin;
//! needs root), the stack is that process's: its stack and instruction pointers from
//! `/proc/PID/syscall`, the copy from `/proc/PID/mem`, the mappings from `/proc/PID/maps`.
//! Without PID, this program's own stack is used; it may unwind short: fdtrace's unwinder
//! (`unwind::StackUnwinder::module_for`) takes the segment whose file range holds the page-aligned
//! offset of the executable mapping, which for a binary linked by rust-lld (executable segment not
//! page-aligned in the file) is the read-only segment before it, so the `.eh_frame` lookups of
//! this binary's own code are off by the difference. The count of unwound frames is printed.
//! Prints `key value` lines.
use std::{hint::black_box, os::unix::fs::FileExt as _, time::Instant};

use fdtrace::{events, process::State};
use fdtrace_common::{
    CloseEvent, Header, MAX_PATH, OpenEvent, STACK_BYTES, SockInfo, kind, syscall,
};

/// Read up to STACK_BYTES of PID's memory at `sp`.
fn read_stack(pid: &str, sp: u64) -> Vec<u8> {
    let mut stack = vec![0u8; STACK_BYTES];
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("/proc/PID/mem");
    let mut done = 0;
    while done < STACK_BYTES {
        match mem.read_at(&mut stack[done..], sp + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    stack
}

/// The registers and stack of a process blocked in a syscall (`/proc/PID/syscall` ends with
/// the stack pointer and the program counter; the frame pointer is not shown there).
fn capture_pid(pid: u32) -> (u64, u64, u64, Vec<u8>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).expect("/proc/PID/syscall");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.len() >= 3,
        "process {pid} is not blocked in a syscall: {text}"
    );
    let hex = |w: &str| u64::from_str_radix(w.trim_start_matches("0x"), 16).expect("hex");
    let sp = hex(words[words.len() - 2]);
    let ip = hex(words[words.len() - 1]);
    (ip, sp, 0, read_stack(&pid.to_string(), sp))
}

fn as_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-old-data #[repr(C)] value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: u32, pid: u32) -> Header {
    Header {
        kind,
        tgid: pid,
        tid: pid,
        _pad: 0,
        ts_ns: fdtrace::clock::monotonic_ns(),
    }
}

/// Events per second of `f` over `pairs` open/close pairs (two events each).
fn rate(pairs: u64, mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..pairs {
        f(i);
    }
    (2 * pairs) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: u64 = args
        .next()
        .map(|a| a.parse().expect("PAIRS must be a number"))
        .unwrap_or(1_000_000);
    let pid: Option<u32> = args
        .next()
        .map(|a| a.parse().expect("PID must be a number"));
    // Captured from a small frame (main's own frame holds nothing big), so the 2 KiB copy
    // reaches the callers as it does for a typical `open()` call site.
    let (ip, sp, bp, stack) = match pid {
        Some(p) => capture_pid(p),
        None => fdtrace::own_stack::capture_here(),
    };
    run(
        pairs,
        pid.unwrap_or_else(std::process::id),
        (ip, sp, bp),
        &stack,
    );
}

#[inline(never)]
fn run(pairs: u64, pid: u32, (ip, sp, bp): (u64, u64, u64), captured: &[u8]) {
    // (Zeros past the end of the stack, where the copy stopped.)
    let mut stack = [0u8; STACK_BYTES];
    stack[..captured.len()].copy_from_slice(captured);
    let mut path = [0u8; MAX_PATH];
    path[..9].copy_from_slice(b"/dev/null");
    let open_ev = OpenEvent {
        hdr: header(kind::OPEN, pid),
        fd: 1000,
        fd2: -1,
        flags: 0,
        syscall: syscall::OPENAT,
        stack_len: STACK_BYTES as u16,
        stack_kind: fdtrace_common::capture::STACK_COPY,
        arg: -1,
        ip,
        sp,
        bp,
        goid: 0,
        parent_goid: 0,
        gopc: 0,
        sock: SockInfo::default(),
        path,
        stack,
    };
    let open = as_bytes(&open_ev);
    let open_nostack = as_bytes(&OpenEvent {
        stack_len: 0,
        ..open_ev
    });
    let close = as_bytes(&CloseEvent {
        hdr: header(kind::CLOSE, pid),
        fd: 1000,
        _pad: 0,
    });

    // Decoding alone (it copies the stack into a new Vec per open).
    let decode = rate(pairs, |_| {
        black_box(events::decode(black_box(&open)).unwrap());
        black_box(events::decode(black_box(&close)).unwrap());
    });
    let decode_nostack = rate(pairs, |_| {
        black_box(events::decode(black_box(&open_nostack)).unwrap());
        black_box(events::decode(black_box(&close)).unwrap());
    });

    // Decoding and applying: what fdtrace does with each record it takes from the ring.
    let mut state = State::new(
        pid,
        fdtrace::process::UnwindMode::Dwarf,
        fdtrace_common::capture::STACK_COPY,
    );
    state.baseline(true).expect("reading /proc/PID");
    let apply = rate(pairs, |_| {
        state.apply(events::decode(black_box(&open)).unwrap());
        state.apply(events::decode(black_box(&close)).unwrap());
    });
    let frames = state.stacks.get(0).map(|s| s.raw.frames.len()).unwrap_or(0);
    assert_eq!(state.table.stats.opens, pairs, "every open applied");
    assert_eq!(state.stacks.len(), 1, "one distinct stack");

    println!("pairs {pairs}");
    println!("events {}", 2 * pairs);
    println!("unwound_frames {frames}");
    println!("decode_events_per_s {decode:.0}");
    println!("decode_nostack_events_per_s {decode_nostack:.0}");
    println!("apply_events_per_s {apply:.0}");
}
