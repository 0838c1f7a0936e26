//! Privileged end-to-end tests of the rule that nothing fdtrace shows while it runs may stall the
//! tracing: metrics clients that connect and say nothing, send megabytes of headers or garbage,
//! and a live view written to a pipe nobody reads. In each, the traced program's events must all
//! arrive (0 lost) and the model must be exact.
use std::os::unix::process::CommandExt as _;
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

/// Wait for the traced program's "done" on `out`, then stop fdtrace with SIGINT and return its
/// JSON report.
fn stop_after_done(tracer: &mut Child, out: impl std::io::Read, report: &Path) -> Value {
    let mut lines = BufReader::new(out).lines();
    let line = lines.next().expect("the program's output").unwrap();
    assert_eq!(line, "done");
    // A tracer stalled by its output never gets to the signal: that fails here, not hangs.
    let st = stop_with_sigint(tracer);
    assert!(st.success(), "fdtrace failed: {st}");
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// 0 lost events, every pair and the leak counted exactly, and the model equal to /proc.
fn assert_exact(j: &Value, pairs: u64, leaks: u64) {
    assert_eq!(j["lost_events"], 0, "{j:#}");
    let leak = site_at(j, "churn.c", line_of("churn.c", "LEAK")).expect("the leak's site");
    assert_eq!(leak["count"], leaks, "{leak:#}");
    // The loader's and libc's opens come on top of the loop's pairs and the leaks.
    let opens = j["model"]["opens"].as_u64().unwrap();
    assert!(
        (pairs + leaks..pairs + leaks + 20).contains(&opens),
        "{opens} opens for {pairs} pairs and {leaks} leaks"
    );
    assert_eq!(j["drift"]["missed_opens"], Value::Array(vec![]), "{j:#}");
    assert_eq!(j["drift"]["missed_closes"], Value::Array(vec![]), "{j:#}");
}

/// One scrape, with its time; panics when not answered within 2 s (only a stall misses that).
fn scrape(port: u16) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body)
        .expect("a scrape answered within 2 s");
    (body, t.elapsed())
}

#[test]
fn metrics_clients_that_misbehave_never_blind_the_tracer() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("churn.c", dir.path(), &["-O0"]);
    let port = free_port();
    let report = dir.path().join("r.json");
    const PAIRS: u64 = 400_000;
    const LEAKS: u64 = 800;
    let mut tracer = Killed(
        Command::new(fdtrace_bin())
            .args(["-q", "--json", "--metrics", &format!("127.0.0.1:{port}")])
            .arg("-o")
            .arg(&report)
            .arg("--")
            .arg(&bin)
            .args(["3000", &PAIRS.to_string(), &LEAKS.to_string(), "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = tracer.0.stdout.take().unwrap();
    // The endpoint is up once fdtrace traces; the program waits 3 s before its loop.
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "no metrics endpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    // 200 clients that connect and send half a request head.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // One that sends 10 MB of headers, one that sends garbage.
    let flood = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
        let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
        let mut sent = 0;
        while sent < 10 << 20 {
            if s.write_all(line.as_bytes()).is_err() {
                break;
            }
            sent += line.len();
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    });
    let mut g = TcpStream::connect(("127.0.0.1", port)).unwrap();
    g.write_all(&[0xde, 0xad, 0xbe, 0xef, b'\r', b'\n', b'\r', b'\n'])
        .unwrap();
    let mut garbage = String::new();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = g.read_to_string(&mut garbage);
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    // Scrapes while the program runs its loop.
    let mut latencies = Vec::new();
    for _ in 0..6 {
        let (body, took) = scrape(port);
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("fdtrace_lost_events_total 0"), "{body}");
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("scrape latencies with 200 idle clients: {latencies:?}");
    let flooded = flood.join().unwrap();
    assert!(
        flooded.is_empty() || flooded.starts_with("HTTP/1.1 431"),
        "{flooded:?}"
    );
    let j = stop_after_done(&mut tracer.0, out, &report);
    drop(idle);
    assert_exact(&j, PAIRS, LEAKS);
}

/// A pipe whose buffer is already full: every write to it blocks until someone reads.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: pipe2/fcntl/write on descriptors this function creates and owns.
    unsafe {
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let (r, w) = (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]));
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        let chunk = [b'x'; 4096];
        while libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) > 0 {}
        let one = [b'x'];
        while libc::write(w.as_raw_fd(), one.as_ptr().cast(), 1) > 0 {}
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, 0);
        (r, w)
    }
}

#[test]
fn a_live_view_nobody_reads_never_stalls_the_tracer() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("churn.c", dir.path(), &["-O0"]);
    let report = dir.path().join("r.json");
    let (_reader, writer) = full_pipe();
    const PAIRS: u64 = 200_000;
    const LEAKS: u64 = 300;
    // 20 s of churn, a live line every 0.2 s into a pipe that is full from the start.
    let mut tracer = KilledGroup(
        Command::new(fdtrace_bin())
            .args(["--json", "--interval", "0.2", "-o"])
            .process_group(0)
            .arg(&report)
            .arg("--")
            .arg(&bin)
            .args(["500", &PAIRS.to_string(), &LEAKS.to_string(), "20000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(writer))
            .spawn()
            .unwrap(),
    );
    let out = tracer.0.stdout.take().unwrap();
    let j = stop_after_done(&mut tracer.0, out, &report);
    assert_exact(&j, PAIRS, LEAKS);
    let dropped = j["live_updates_dropped"].as_u64().expect("a count");
    assert!(dropped >= 80, "{dropped} live updates dropped in 20 s");
}
