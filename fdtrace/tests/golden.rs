//! Live mode and replay agree (issue 16's guard): one synthetic stream of kernel events, applied
//! by the live session while it records, gives the same report as the recording replayed, and
//! as the same recording written as format 1.1 wrote it (its facts as JSON) replayed.
//! Root-free: no kernel, no eBPF; the events are built here, as the ring buffer would hand
//! them over, for processes that do not exist (nothing is read from /proc for them).
use fdtrace::{
    clock::monotonic_ns,
    events::{Event, Open, UserStack},
    model::FdKind,
    process::{State, UnwindMode},
    procinfo::ProcFd,
    recorder::Recorder,
    replay::Replay,
    report::Meta,
    session::Session,
    symbolize::Symbols,
};
use fdtrace_common::{CLONE_FILES, Header, SockInfo, capture, kind, syscall};
use serde_json::Value;

/// The root is this test's own process, so that its stacks fall in mappings (its own code,
/// read from /proc/self/maps) and are told apart and named; the others are pids no process
/// has (above the largest `pid_max`, 4,194,304), so nothing is read of them.
fn root() -> u32 {
    std::process::id()
}
const CHILD: u32 = 4_194_401;
const THREAD_SHARER: u32 = 4_194_402;

/// A made-up stack: return addresses just inside functions of this test, innermost first.
fn at(fns: &[usize]) -> Vec<u64> {
    fns.iter().map(|&f| f as u64 + 4).collect()
}

/// Call sites: made-up stacks through this file's functions.
struct Sites {
    config: Vec<u64>,
    lp: Vec<u64>,
    pipe: Vec<u64>,
    dup: Vec<u64>,
    child: Vec<u64>,
    dial: Vec<u64>,
}

fn sites() -> Sites {
    let (a, b, c, d) = (
        stream as *const () as usize,
        meta as *const () as usize,
        rewrite_as_format_1_1 as *const () as usize,
        differences as *const () as usize,
    );
    Sites {
        config: at(&[a, b, c]),
        lp: at(&[b, a, c]),
        pipe: at(&[c, a]),
        dup: at(&[d, a]),
        child: at(&[d, b, c]),
        dial: at(&[a, d]),
    }
}

struct Stream {
    t0: u64,
    events: Vec<Event<'static>>,
}

impl Stream {
    fn hdr(&self, kind: u32, tgid: u32, ms: u64) -> Header {
        Header {
            kind,
            tgid,
            tid: tgid,
            _pad: 0,
            ts_ns: self.t0 + ms * 1_000_000,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        tgid: u32,
        ms: u64,
        fd: i32,
        sc: u32,
        path: &str,
        at: &[u64],
    ) -> &mut Open<'static> {
        let hdr = self.hdr(kind::OPEN, tgid, ms);
        self.events.push(Event::Open(Open {
            hdr,
            fd,
            fd2: -1,
            arg: -1,
            flags: 0,
            syscall: sc,
            path: path.into(),
            ip: at[0],
            sp: 0x7ff0_0000,
            bp: 0,
            goid: 0,
            parent_goid: 0,
            gopc: 0,
            sock: SockInfo::default(),
            control: Vec::new(),
            stack: UserStack::FramePointers(at.to_vec()),
        }));
        match self.events.last_mut() {
            Some(Event::Open(o)) => o,
            _ => unreachable!(),
        }
    }

    fn close(&mut self, tgid: u32, ms: u64, fd: i32) {
        let hdr = self.hdr(kind::CLOSE, tgid, ms);
        self.events.push(Event::Close { hdr, fd });
    }
}

/// A day in the life of a leaking service: files opened in a loop and never
/// closed, a config file closed, a pipe with one end closed, a dup, a close-on-exec change, a
/// failed open at the limit, a socket connected, a close_range, a thread that shares the table,
/// a child that inherits the table, closes and opens in its own, execs and exits.
fn stream() -> Stream {
    let mut s = Stream {
        // After the recording began, as the kernel's events always are.
        t0: monotonic_ns(),
        events: Vec::new(),
    };
    let at = sites();
    let root = root();
    s.open(root, 1, 3, syscall::OPENAT, "/etc/svc.conf", &at.config);
    s.close(root, 2, 3);
    for i in 0..8 {
        s.open(
            root,
            10 + i,
            3 + i as i32,
            syscall::OPENAT,
            "/data/img",
            &at.lp,
        );
    }
    s.close(root, 20, 5);
    let p = s.open(root, 30, 11, syscall::PIPE, "", &at.pipe);
    p.fd2 = 12;
    s.close(root, 31, 12);
    let d = s.open(root, 32, 13, syscall::DUP, "", &at.dup);
    d.arg = 11;
    let hdr = s.hdr(kind::CLOEXEC, root, 33);
    s.events.push(Event::Cloexec {
        hdr,
        fd: 13,
        on: true,
    });
    let f = s.open(root, 34, -24, syscall::OPENAT, "/data/img", &at.lp);
    f.hdr.kind = kind::OPEN_FAILED;
    let failed = match s.events.pop() {
        Some(Event::Open(o)) => o,
        _ => unreachable!(),
    };
    s.events.push(Event::OpenFailed(failed));
    let sock = s.open(root, 40, 14, syscall::SOCKET, "", &at.dial);
    sock.sock = SockInfo {
        sk: 0xffff_8880_0000_1000,
        family: 2,
        sk_type: 1,
        protocol: 6,
        state: 7,
        ..SockInfo::default()
    };
    let hdr = s.hdr(kind::SOCK_ADDR, root, 41);
    let mut addr = vec![2, 0, 0x1f, 0x90, 10, 0, 0, 5];
    addr.resize(16, 0);
    s.events.push(Event::SockAddr {
        hdr,
        fd: 14,
        op: fdtrace_common::SOCK_OP_CONNECT,
        addr,
    });
    let hdr = s.hdr(kind::CLOSE_RANGE, root, 42);
    s.events.push(Event::CloseRange {
        hdr,
        first: 9,
        last: 10,
        flags: 0,
    });
    // A thread of its own process sharing the table (CLONE_FILES): its births are the root's.
    let hdr = s.hdr(kind::FORK, root, 50);
    s.events.push(Event::Fork {
        hdr,
        child: THREAD_SHARER,
        flags: CLONE_FILES,
    });
    s.open(THREAD_SHARER, 51, 15, syscall::OPENAT, "/data/img", &at.lp);
    // A child with a copy of the table.
    let hdr = s.hdr(kind::FORK, root, 60);
    s.events.push(Event::Fork {
        hdr,
        child: CHILD,
        flags: 0,
    });
    s.close(CHILD, 61, 4);
    s.open(CHILD, 62, 4, syscall::OPENAT, "/tmp/child.log", &at.child);
    s.open(CHILD, 63, 16, syscall::OPENAT, "/tmp/child.log", &at.child);
    // The parent's loop, in the child: one call site with the files it inherited from there.
    s.open(CHILD, 63, 18, syscall::OPENAT, "/data/img", &at.lp);
    let hdr = s.hdr(kind::EXEC, CHILD, 64);
    s.events.push(Event::Exec { hdr });
    s.open(CHILD, 65, 17, syscall::OPENAT, "/tmp/after-exec", &at.child);
    let hdr = s.hdr(kind::EXIT, CHILD, 70);
    s.events.push(Event::Exit { hdr });
    s.close(root, 80, 6);
    s.open(root, 81, 6, syscall::OPENAT, "/data/img", &at.lp);
    s
}

fn meta(pid: u32, exited: bool) -> Meta {
    Meta {
        pid,
        parent: None,
        command: None,
        duration_s: 60.0,
        target_exited: exited,
        lost_events: 0,
        stack_errors: 0,
        missing_tracepoints: Vec::new(),
        rlimit_nofile: None,
        container: None,
    }
}

/// The stream through a live session that records it, ended 90 ms after its start with the
/// root exited or (`alive`) still running with `proc_fds` as /proc's view of it; returns the
/// live report and the one replayed from the recording, as JSON.
fn live_and_replayed(alive: Option<Vec<ProcFd>>) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.fdtrace");
    let mut first = State::new(root(), UnwindMode::Fp, capture::FRAME_POINTERS);
    first.log = Some(Vec::new());
    let mut session = Session::new(first, true);
    session.start_recording(Recorder::create(&path, "golden".into()).unwrap());
    let s = stream();
    let ended_ns = s.hdr(kind::EXIT, root(), 90).ts_ns;
    for ev in s.events.iter().cloned() {
        session.apply(ev);
    }
    if alive.is_none() {
        let hdr = s.hdr(kind::EXIT, root(), 90);
        session.apply(Event::Exit { hdr });
    }
    let mut pids: Vec<u32> = session.procs.keys().copied().collect();
    pids.sort_by_key(|&p| p != root());
    let ends: Vec<(u32, Meta, Option<Vec<ProcFd>>)> = pids
        .iter()
        .map(|&pid| match &alive {
            Some(fds) if pid == root() => (pid, meta(pid, false), Some(fds.clone())),
            _ => (pid, meta(pid, true), None),
        })
        .collect();
    let symbols = Symbols::new();
    let live = session
        .report(&ends, None, &symbols, ended_ns)
        .expect("a live report");
    let reason = if alive.is_some() {
        "interrupted"
    } else {
        "target exited"
    };
    session
        .finish_recording(&ends, 0, reason, ended_ns)
        .unwrap()
        .expect("a recording");
    let replayed = |path: &std::path::Path| {
        let mut replay = Replay::read(path, None, |_, _| {}).unwrap();
        serde_json::to_value(replay.report(None).expect("a replayed report")).unwrap()
    };
    let old = dir.path().join("golden-1.1.fdtrace");
    rewrite_as_format_1_1(&path, &old);
    let live = serde_json::to_value(&live).unwrap();
    assert_same(&live, &replayed(&old), "(format 1.1)");
    (live, replayed(&path))
}

/// The recording at `from` written to `to` with its typed facts as the JSON `Extra` records of
/// format 1.1 (as fdtrace 0.1 wrote them).
fn rewrite_as_format_1_1(from: &std::path::Path, to: &std::path::Path) {
    use fdtrace_record::Record;
    let reader = fdtrace_record::Reader::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut writer =
        fdtrace_record::Writer::new(std::fs::File::create(to).unwrap(), &reader.header().clone())
            .unwrap();
    let mut facts = 0;
    for r in reader {
        let r = r.unwrap();
        let extra = |ts_ns: u64, tgid: u32, name: &str, json: Value| Record::Extra {
            ts_ns,
            tgid,
            name: name.into(),
            json: json.to_string(),
        };
        let old = match &r {
            Record::FailedOpen {
                ts_ns,
                tgid,
                stack,
                errno,
                example,
            } => extra(
                *ts_ns,
                *tgid,
                "failed_open",
                serde_json::json!({"stack": stack, "errno": errno, "example": example}),
            ),
            Record::FailureTotal {
                ts_ns,
                tgid,
                syscall,
                errno,
                count,
            } => extra(
                *ts_ns,
                *tgid,
                "failure_total",
                serde_json::json!({"syscall": syscall, "errno": errno, "count": count}),
            ),
            Record::Untraced {
                ts_ns,
                tgid,
                fd,
                kind,
                cloexec,
                target,
            } => extra(
                *ts_ns,
                *tgid,
                "untraced",
                serde_json::json!({"fd": fd, "kind": FdKind::from_code(*kind), "target": target, "cloexec": cloexec}),
            ),
            Record::DriftClose { ts_ns, tgid, fd } => extra(
                *ts_ns,
                *tgid,
                "drift_close",
                serde_json::json!({ "fd": fd }),
            ),
            Record::ProcessEnd { ts_ns, tgid, .. } => extra(
                *ts_ns,
                *tgid,
                "meta",
                serde_json::to_value(fdtrace::end_records::meta(&r).unwrap()).unwrap(),
            ),
            Record::ProcFds { ts_ns, tgid, .. } => extra(
                *ts_ns,
                *tgid,
                "proc_fds",
                serde_json::to_value(fdtrace::end_records::fds(&r).unwrap()).unwrap(),
            ),
            _ => r.clone(),
        };
        facts += usize::from(old != r);
        writer.write(&old).unwrap();
    }
    writer.finish().unwrap();
    assert!(facts > 0, "the recording has facts to write as JSON");
}

/// The open sites of a report: (count, innermost function), sorted.
fn counts(r: &Value) -> Vec<(u64, String)> {
    let mut c: Vec<(u64, String)> = r["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["count"].as_u64().unwrap(),
                s["frames"][0]["function"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect();
    c.sort();
    c
}

#[test]
fn live_and_replayed_reports_of_one_stream_are_identical() {
    let (live, replayed) = live_and_replayed(None);
    // The stream was seen whole: both sides modelled the same births.
    // The root's 15 births (the pipe's two ends, the sharing thread's one), the child's 4.
    assert_eq!(live["model"]["opens"], 15, "{:#}", live["model"]);
    assert_eq!(live["processes"].as_array().map(Vec::len), Some(1));
    assert_eq!(live["processes"][0]["model"]["opens"], 4);
    // Told apart by their stacks: the root's loop (6 open: 3, 4, 6, 7, 8, and the sharing
    // thread's 15), pipe, dup and socket; the child's inherited loop files, pipe and socket (its
    // dup was close-on-exec) and its own four, one of them in the loop.
    let named = |n: &str| format!("golden::{n}");
    assert_eq!(
        counts(&live),
        [
            (1, named("differences")),
            (1, named("rewrite_as_format_1_1")),
            (1, named("stream")),
            (6, named("meta"))
        ]
    );
    assert_eq!(
        counts(&live["processes"][0]),
        [
            (1, named("rewrite_as_format_1_1")),
            (1, named("stream")),
            (3, named("differences")),
            (6, named("meta"))
        ]
    );
    assert_eq!(
        live["failed_opens"][0]["count"], 1,
        "{:#}",
        live["failed_opens"]
    );
    assert_same(&live, &replayed, "");
}

#[test]
fn live_and_replayed_reports_agree_on_a_process_still_running_and_its_drift() {
    // /proc's view at the end: the model's descriptors but 15, and 20, which it never saw.
    let fd = |fd: i32, kind: FdKind, target: &str| ProcFd {
        fd,
        target: target.to_string(),
        kind,
        cloexec: false,
        age_ns: None,
    };
    let mut proc_fds: Vec<ProcFd> = [3, 4, 6, 7, 8]
        .into_iter()
        .map(|n| fd(n, FdKind::File, "/data/img"))
        .collect();
    proc_fds.push(fd(11, FdKind::Pipe, "pipe:[77]"));
    proc_fds.push(fd(13, FdKind::Pipe, "pipe:[77]"));
    proc_fds.push(fd(14, FdKind::Socket, "socket:[78]"));
    proc_fds.push(fd(20, FdKind::File, "/var/log/unseen"));
    let (live, replayed) = live_and_replayed(Some(proc_fds));
    assert_eq!(live["target_exited"], false);
    let fds = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["fd"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        fds(&live["drift"]["missed_opens"]),
        [20],
        "{:#}",
        live["drift"]
    );
    assert_eq!(
        fds(&live["drift"]["missed_closes"]),
        [15],
        "{:#}",
        live["drift"]
    );
    assert_same(&live, &replayed, "");
}

/// Every difference between `a` and `b`, by JSON path, in one failure.
fn assert_same(a: &Value, b: &Value, at: &str) {
    let mut diffs = Vec::new();
    differences(a, b, at, &mut diffs);
    assert!(
        diffs.is_empty(),
        "live and replayed reports differ:\n{}",
        diffs.join("\n")
    );
}

fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (p, q) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(p, q, &format!("{at}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{at}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: live {a} / replayed {b}")),
        _ => {}
    }
}
