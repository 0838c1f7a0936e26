//! Shared helpers for the integration tests: proptest strategies and sample data.
#![allow(dead_code)]

use fdtrace_record::{
    Container, Header, NofileLimit, ProcFd, ReadError, Reader, Record, SymFrame, Tail, Writer,
};
use proptest::prelude::*;

pub fn header() -> Header {
    Header {
        fdtrace_version: "0.1.0".into(),
        hostname: "testhost".into(),
        kernel_release: "6.8.0-test".into(),
        start_unix_ns: 1_700_000_000_123_456_789,
        start_monotonic_ns: 12_345_678_901,
        recorder_cmdline: vec![
            "fdtrace".into(),
            "record".into(),
            "-o".into(),
            "x.fdt".into(),
        ],
        target: "pid 1234 (imgsrv)".into(),
    }
}

fn text() -> impl Strategy<Value = String> {
    // Mostly paths, sometimes any Unicode (multi-byte, control characters, empty).
    prop_oneof![
        3 => "(/[a-z0-9._-]{1,12}){1,4}",
        1 => any::<String>(),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// Timestamps: realistic monotonic values and any u64 (deltas must wrap correctly).
fn ts() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 1_000_000_000u64..2_000_000_000_000, 1 => any::<u64>()]
}

fn sym_frame() -> impl Strategy<Value = SymFrame> {
    (
        any::<u64>(),
        opt_text(),
        opt_text(),
        any::<Option<u32>>(),
        opt_text(),
        any::<bool>(),
    )
        .prop_map(|(addr, function, file, line, module, inlined)| SymFrame {
            addr,
            function,
            file,
            line,
            module,
            inlined,
        })
}

/// Any record, every variant, any field values.
pub fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            any::<u32>(),
            any::<Option<u32>>(),
            text(),
            proptest::collection::vec(text(), 0..4)
        )
            .prop_map(|(tgid, parent, comm, cmdline)| Record::Process {
                tgid,
                parent,
                comm,
                cmdline
            }),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            text(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))
        )
            .prop_map(
                |(tgid, start, end, offset, path, build_id)| Record::Mapping {
                    tgid,
                    start,
                    end,
                    offset,
                    path,
                    build_id
                }
            ),
        (
            any::<u32>(),
            proptest::collection::vec(any::<u64>(), 0..40),
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(id, frames, truncated, method)| Record::Stack {
                id,
                frames,
                truncated,
                method
            }),
        (any::<u32>(), proptest::collection::vec(sym_frame(), 0..6))
            .prop_map(|(stack_id, frames)| Record::Symbols { stack_id, frames }),
        (
            ts(),
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            any::<Option<u32>>(),
            text()
        )
            .prop_map(
                |(ts_ns, tgid, tid, fd, kind, syscall, cloexec, stack, target)| Record::Open {
                    ts_ns,
                    tgid,
                    tid,
                    fd,
                    kind,
                    syscall,
                    cloexec,
                    stack,
                    target: target.into()
                }
            ),
        (ts(), any::<u32>(), any::<u32>(), any::<i32>()).prop_map(|(ts_ns, tgid, tid, fd)| {
            Record::Close {
                ts_ns,
                tgid,
                tid,
                fd,
            }
        }),
        (
            ts(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(
                |(ts_ns, tgid, first, last, cloexec_only)| Record::CloseRange {
                    ts_ns,
                    tgid,
                    first,
                    last,
                    cloexec_only
                }
            ),
        (ts(), any::<u32>(), any::<i32>(), any::<bool>()).prop_map(|(ts_ns, tgid, fd, on)| {
            Record::SetCloexec {
                ts_ns,
                tgid,
                fd,
                on,
            }
        }),
        (ts(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
            |(ts_ns, parent, child, shares_table)| Record::Fork {
                ts_ns,
                parent,
                child,
                shares_table
            }
        ),
        (ts(), any::<u32>()).prop_map(|(ts_ns, tgid)| Record::Exec { ts_ns, tgid }),
        (ts(), any::<u32>()).prop_map(|(ts_ns, tgid)| Record::Exit { ts_ns, tgid }),
        (
            (
                ts(),
                any::<u32>(),
                any::<i32>(),
                any::<u8>(),
                opt_text(),
                opt_text()
            ),
            (
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
                any::<bool>(),
                proptest::option::of(any::<u64>())
            )
        )
            .prop_map(
                |(
                    (ts_ns, tgid, fd, state, local, peer),
                    (family, sk_type, protocol, accepted, since_ns),
                )| Record::SockState {
                    ts_ns,
                    tgid,
                    fd,
                    state,
                    local,
                    peer,
                    family,
                    sk_type,
                    protocol,
                    accepted,
                    since_ns,
                }
            ),
        (ts(), any::<u32>(), text(), text()).prop_map(|(ts_ns, tgid, name, json)| {
            Record::Extra {
                ts_ns,
                tgid,
                name,
                json,
            }
        }),
        (
            any::<u32>(),
            any::<i32>(),
            any::<u8>(),
            any::<bool>(),
            text(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(tgid, fd, kind, cloexec, target, born_ns)| Record::Preexisting {
                    tgid,
                    fd,
                    kind,
                    cloexec,
                    target,
                    born_ns
                }
            ),
        (ts(), any::<u32>(), any::<u32>(), any::<i32>(), text()).prop_map(
            |(ts_ns, tgid, stack, errno, example)| Record::FailedOpen {
                ts_ns,
                tgid,
                stack,
                errno,
                example,
            }
        ),
        (ts(), any::<u32>(), any::<u32>(), any::<i32>(), any::<u64>()).prop_map(
            |(ts_ns, tgid, syscall, errno, count)| Record::FailureTotal {
                ts_ns,
                tgid,
                syscall,
                errno,
                count,
            }
        ),
        (
            ts(),
            any::<u32>(),
            any::<i32>(),
            any::<u8>(),
            any::<bool>(),
            text()
        )
            .prop_map(
                |(ts_ns, tgid, fd, kind, cloexec, target)| Record::Untraced {
                    ts_ns,
                    tgid,
                    fd,
                    kind,
                    cloexec,
                    target,
                }
            ),
        (ts(), any::<u32>(), any::<i32>()).prop_map(|(ts_ns, tgid, fd)| Record::DriftClose {
            ts_ns,
            tgid,
            fd
        }),
        (
            (ts(), any::<u32>(), any::<Option<u32>>(), opt_text()),
            // Any number but NaN (which equals nothing, itself included).
            any::<f64>().prop_filter("not NaN", |d| !d.is_nan()),
            (any::<bool>(), any::<u64>(), any::<u64>()),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of((any::<Option<u64>>(), any::<Option<u64>>())),
            proptest::option::of((
                (opt_text(), opt_text(), opt_text(), opt_text()),
                proptest::collection::vec(any::<u32>(), 0..4)
            )),
        )
            .prop_map(
                |(
                    (ts_ns, tgid, parent, command),
                    duration_s,
                    (target_exited, lost_events, stack_errors),
                    missing_tracepoints,
                    nofile,
                    container,
                )| Record::ProcessEnd {
                    ts_ns,
                    tgid,
                    parent,
                    command,
                    duration_s,
                    target_exited,
                    lost_events,
                    stack_errors,
                    missing_tracepoints,
                    nofile: nofile.map(|(soft, hard)| NofileLimit { soft, hard }),
                    container: container.map(|((cgroup, id, runtime, pod_uid), nspid)| {
                        Box::new(Container {
                            cgroup,
                            id,
                            runtime,
                            pod_uid,
                            nspid,
                        })
                    }),
                }
            ),
        (
            ts(),
            any::<u32>(),
            proptest::collection::vec(
                (
                    any::<i32>(),
                    any::<u8>(),
                    any::<bool>(),
                    any::<Option<u64>>(),
                    text()
                ),
                0..4
            )
        )
            .prop_map(|(ts_ns, tgid, fds)| Record::ProcFds {
                ts_ns,
                tgid,
                fds: fds
                    .into_iter()
                    .map(|(fd, kind, cloexec, age_ns, target)| ProcFd {
                        fd,
                        kind,
                        cloexec,
                        age_ns,
                        target,
                    })
                    .collect(),
            }),
        (ts(), any::<u64>()).prop_map(|(ts_ns, count)| Record::Lost { ts_ns, count }),
        (ts(), text()).prop_map(|(ts_ns, reason)| Record::End { ts_ns, reason }),
    ]
}

/// One record of every variant, with simple values.
pub fn one_of_each() -> Vec<Record> {
    vec![
        Record::Process {
            tgid: 1234,
            parent: Some(1),
            comm: "imgsrv".into(),
            cmdline: vec!["./imgsrv".into(), "--port".into(), "80".into()],
        },
        Record::Mapping {
            tgid: 1234,
            start: 0x5555_5555_4000,
            end: 0x5555_5555_9000,
            offset: 0x1000,
            path: "/usr/bin/imgsrv".into(),
            build_id: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        },
        Record::Stack {
            id: 7,
            frames: vec![0x7f00_0000_1234, 0x5555_5555_4321, 0x5555_5555_4000],
            truncated: false,
            method: 1,
        },
        Record::Symbols {
            stack_id: 7,
            frames: vec![SymFrame {
                addr: 0x5555_5555_4321,
                function: Some("save_image".into()),
                file: Some("demo/imgsrv.c".into()),
                line: Some(15),
                module: Some("imgsrv".into()),
                inlined: false,
            }],
        },
        Record::Preexisting {
            tgid: 1234,
            fd: 0,
            kind: 1,
            cloexec: false,
            target: "/dev/pts/0".into(),
            born_ns: None,
        },
        Record::Open {
            ts_ns: 5_000_000_000,
            tgid: 1234,
            tid: 1235,
            fd: 3,
            kind: 1,
            syscall: 1,
            cloexec: true,
            stack: Some(7),
            target: "/tmp/upload-1.jpg".into(),
        },
        Record::Close {
            ts_ns: 5_000_001_000,
            tgid: 1234,
            tid: 1235,
            fd: 3,
        },
        Record::CloseRange {
            ts_ns: 5_000_002_000,
            tgid: 1234,
            first: 3,
            last: u32::MAX,
            cloexec_only: true,
        },
        Record::SetCloexec {
            ts_ns: 5_000_003_000,
            tgid: 1234,
            fd: 4,
            on: true,
        },
        Record::Fork {
            ts_ns: 5_000_004_000,
            parent: 1234,
            child: 1240,
            shares_table: false,
        },
        Record::Exec {
            ts_ns: 5_000_005_000,
            tgid: 1240,
        },
        Record::SockState {
            ts_ns: 5_000_006_000,
            tgid: 1234,
            fd: 5,
            state: 1,
            local: Some("127.0.0.1:8080".into()),
            peer: None,
            family: 2,
            sk_type: 1,
            protocol: 6,
            accepted: false,
            since_ns: Some(5_000_006_000),
        },
        Record::Extra {
            ts_ns: 5_000_006_500,
            tgid: 1234,
            name: "failed_open".into(),
            json: "{\"errno\":24}".into(),
        },
        Record::FailedOpen {
            ts_ns: 5_000_006_600,
            tgid: 1234,
            stack: 7,
            errno: 24,
            example: "/var/log/a".into(),
        },
        Record::FailureTotal {
            ts_ns: 5_000_006_700,
            tgid: 1234,
            syscall: 1,
            errno: 24,
            count: 3,
        },
        Record::Untraced {
            ts_ns: 5_000_006_800,
            tgid: 1234,
            fd: 9,
            kind: 1,
            cloexec: false,
            target: "/etc/hosts".into(),
        },
        Record::DriftClose {
            ts_ns: 5_000_006_850,
            tgid: 1234,
            fd: 10,
        },
        Record::ProcessEnd {
            ts_ns: 5_000_006_900,
            tgid: 1234,
            parent: None,
            command: Some("imgsrv".into()),
            duration_s: 12.5,
            target_exited: false,
            lost_events: 0,
            stack_errors: 1,
            missing_tracepoints: vec!["sys_exit_openat2".into()],
            nofile: Some(NofileLimit {
                soft: Some(1024),
                hard: None,
            }),
            container: Some(Box::new(Container {
                cgroup: Some("/system.slice/x.scope".into()),
                id: None,
                runtime: None,
                pod_uid: None,
                nspid: vec![1234, 1],
            })),
        },
        Record::ProcFds {
            ts_ns: 5_000_006_950,
            tgid: 1234,
            fds: vec![ProcFd {
                fd: 0,
                kind: 4,
                cloexec: false,
                age_ns: Some(70),
                target: "pipe:[5]".into(),
            }],
        },
        Record::Lost {
            ts_ns: 5_000_007_000,
            count: 12,
        },
        Record::Exit {
            ts_ns: 5_000_008_000,
            tgid: 1240,
        },
        Record::End {
            ts_ns: 5_000_009_000,
            reason: "SIGINT".into(),
        },
    ]
}

/// Everything a reader produced from a file.
#[derive(Debug)]
pub struct ReadAll {
    pub records: Vec<Record>,
    pub errors: Vec<ReadError>,
    pub tail: Tail,
}

/// Reads `bytes` to the end. `Err` when the header cannot be read.
pub fn read_all(bytes: &[u8]) -> Result<ReadAll, ReadError> {
    let mut r = Reader::new(bytes)?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for item in r.by_ref() {
        match item {
            Ok(rec) => records.push(rec),
            Err(e) => errors.push(e),
        }
    }
    Ok(ReadAll {
        records,
        errors,
        tail: r.tail().clone(),
    })
}

/// Writes `records` into an in-memory recording.
pub fn write_all(records: &[Record]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

/// An error message is a single, non-empty line.
pub fn assert_one_line(e: &ReadError) {
    let msg = e.to_string();
    assert!(!msg.is_empty());
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "not one line: {msg:?}"
    );
}
