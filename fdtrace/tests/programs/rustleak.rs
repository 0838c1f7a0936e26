//! A Rust program that leaks `std::fs::File`s at a known line and handles them correctly at
//! another. The tests find the lines through the markers in the comments (LEAK_RUST, OK_RUST)
//! and build it as a release binary without frame pointers:
//! `rustc -C opt-level=2 -C force-frame-pointers=no -g`.
//!
//! usage: rustleak N [DELAY_MS] [LINGER_MS]
//!   waits DELAY_MS (and, with LEAKY_WAIT set, for a line on stdin), then N times: leaks one file created with File::create (forgotten with
//!   mem::forget) and opens and closes another; prints "done" and waits LINGER_MS (or until
//!   killed when LINGER_MS is 0).
use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

#[inline(never)]
fn leak_file(dir: &Path, i: usize) {
    let f = File::create(dir.join(format!("leak-{i}.txt"))); /* LEAK_RUST */
    if let Ok(mut f) = f {
        let _ = f.write_all(b"x");
        std::mem::forget(f);
    }
}

#[inline(never)]
fn read_correctly(dir: &Path) {
    let f = File::options().create(true).append(true).open(dir.join("config.txt")); /* OK_RUST */
    if let Ok(mut f) = f {
        let _ = f.write_all(b"ok\n");
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n = args.first().copied().unwrap_or(40) as usize;
    let delay_ms = args.get(1).copied().unwrap_or(0);
    let linger_ms = args.get(2).copied().unwrap_or(0);
    let dir = PathBuf::from(std::env::var_os("LEAKY_DIR").unwrap_or_else(|| "/tmp".into()));
    std::thread::sleep(Duration::from_millis(delay_ms));
    if std::env::var_os("LEAKY_WAIT").is_some() {
        // Until a tracer has attached: the test sends a line.
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    for i in 0..n {
        leak_file(&dir, i);
        read_correctly(&dir);
    }
    println!("done");
    if linger_ms > 0 {
        std::thread::sleep(Duration::from_millis(linger_ms));
    } else {
        loop {
            std::thread::park();
        }
    }
}
