//! Recordings of format 1.0 and 1.1 kept some facts as JSON in `Record::Extra` records, named
//! by what they held; format 1.2 has a typed record for each. [`typed`] reads such an `Extra`
//! as the record 1.2 writes, so a replay of an old file applies the same records as one of a
//! new file. (The JSON layouts below are those fdtrace 0.1 wrote; nothing writes them now.)
use fdtrace_record::Record;

use crate::model::FdKind;
use crate::procinfo::ProcFd;
use crate::report::Meta;

/// A birth that failed with EMFILE or ENFILE: `{"stack", "errno", "example"}`.
const FAILED_OPEN: &str = "failed_open";
/// The kernel's count of failures: `{"syscall", "errno", "count"}`.
const FAILURE_TOTAL: &str = "failure_total";
/// Reconciliation found a descriptor never seen born: `{"fd", "kind", "target", "cloexec"}`
/// (`kind` as the report names it, e.g. `"file"`).
const UNTRACED: &str = "untraced";
/// Reconciliation found a descriptor closed unseen: `{"fd"}`.
const DRIFT_CLOSE: &str = "drift_close";
/// The report's `meta` of a process at the end.
const META: &str = "meta";
/// `/proc/PID/fd` at the end: a list of the report's `ProcFd`s.
const PROC_FDS: &str = "proc_fds";

/// The typed record an old `Extra` record stands for; None for any other record, and for an
/// `Extra` this version does not know or cannot read (said at debug level).
pub fn typed(r: &Record) -> Option<Record> {
    let Record::Extra {
        ts_ns,
        tgid,
        name,
        json,
    } = r
    else {
        return None;
    };
    let (ts_ns, tgid) = (*ts_ns, *tgid);
    let typed = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            // Missing numbers read as 0 (a descriptor as -1), as fdtrace 0.1's own reader did.
            let int = |key: &str| v[key].as_i64().unwrap_or(0);
            Some(match name.as_str() {
                FAILED_OPEN => Record::FailedOpen {
                    ts_ns,
                    tgid,
                    stack: int("stack") as u32,
                    errno: int("errno") as i32,
                    example: v["example"].as_str().unwrap_or_default().to_string(),
                },
                FAILURE_TOTAL => Record::FailureTotal {
                    ts_ns,
                    tgid,
                    syscall: int("syscall") as u32,
                    errno: int("errno") as i32,
                    count: v["count"].as_u64().unwrap_or(0),
                },
                UNTRACED => Record::Untraced {
                    ts_ns,
                    tgid,
                    fd: v["fd"].as_i64().unwrap_or(-1) as i32,
                    kind: serde_json::from_value::<FdKind>(v["kind"].clone())
                        .unwrap_or(FdKind::Other)
                        .code(),
                    cloexec: v["cloexec"].as_bool().unwrap_or(false),
                    target: v["target"].as_str().unwrap_or_default().to_string(),
                },
                DRIFT_CLOSE => Record::DriftClose {
                    ts_ns,
                    tgid,
                    fd: v["fd"].as_i64().unwrap_or(-1) as i32,
                },
                META => {
                    crate::end_records::process_end(ts_ns, &serde_json::from_value::<Meta>(v).ok()?)
                }
                PROC_FDS => crate::end_records::proc_fds(
                    ts_ns,
                    tgid,
                    &serde_json::from_value::<Vec<ProcFd>>(v).ok()?,
                ),
                _ => return None,
            })
        });
    if typed.is_none() {
        tracing::debug!("record {name} ignored");
    }
    typed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(name: &str, json: serde_json::Value) -> Record {
        Record::Extra {
            ts_ns: 5,
            tgid: 7,
            name: name.into(),
            json: json.to_string(),
        }
    }

    /// Each JSON layout fdtrace 0.1 wrote (as it wrote them), read as its typed record.
    #[test]
    fn the_json_of_format_1_1_reads_as_the_typed_records() {
        let cases = [
            (
                extra(
                    FAILED_OPEN,
                    serde_json::json!({"stack": 3, "errno": 24, "example": "/a"}),
                ),
                Record::FailedOpen {
                    ts_ns: 5,
                    tgid: 7,
                    stack: 3,
                    errno: 24,
                    example: "/a".into(),
                },
            ),
            (
                extra(
                    FAILURE_TOTAL,
                    serde_json::json!({"syscall": 1, "errno": 23, "count": 160000}),
                ),
                Record::FailureTotal {
                    ts_ns: 5,
                    tgid: 7,
                    syscall: 1,
                    errno: 23,
                    count: 160_000,
                },
            ),
            (
                extra(
                    UNTRACED,
                    serde_json::json!({"fd": 9, "kind": "socket", "target": "socket:[1]", "cloexec": true}),
                ),
                Record::Untraced {
                    ts_ns: 5,
                    tgid: 7,
                    fd: 9,
                    kind: FdKind::Socket.code(),
                    cloexec: true,
                    target: "socket:[1]".into(),
                },
            ),
            (
                extra(DRIFT_CLOSE, serde_json::json!({"fd": 6})),
                Record::DriftClose {
                    ts_ns: 5,
                    tgid: 7,
                    fd: 6,
                },
            ),
            (
                extra(
                    PROC_FDS,
                    serde_json::json!([{"fd": 0, "target": "pipe:[5]", "kind": "pipe", "cloexec": false, "age_ns": 70}]),
                ),
                Record::ProcFds {
                    ts_ns: 5,
                    tgid: 7,
                    fds: vec![fdtrace_record::ProcFd {
                        fd: 0,
                        kind: FdKind::Pipe.code(),
                        cloexec: false,
                        age_ns: Some(70),
                        target: "pipe:[5]".into(),
                    }],
                },
            ),
        ];
        for (old, new) in cases {
            assert_eq!(typed(&old), Some(new), "{old:?}");
        }
        // Fields missing read as fdtrace 0.1's reader read them: the failure still counts.
        assert_eq!(
            typed(&extra(FAILED_OPEN, serde_json::json!({"errno": 24}))),
            Some(Record::FailedOpen {
                ts_ns: 5,
                tgid: 7,
                stack: 0,
                errno: 24,
                example: String::new(),
            })
        );
        // A meta as 0.1 wrote it (serde of the report's Meta), a container included.
        let meta = serde_json::json!({
            "pid": 7, "parent": 1, "command": "srv", "duration_s": 2.5, "target_exited": true,
            "lost_events": 3, "stack_errors": 4, "missing_tracepoints": ["sys_exit_openat2"],
            "rlimit_nofile": {"soft": 1024, "hard": null},
            "container": {"cgroup": "/x", "id": null, "runtime": null, "pod_uid": null, "nspid": [7, 1]}
        });
        let got = typed(&extra(META, meta)).unwrap();
        let m = crate::end_records::meta(&got).unwrap();
        assert_eq!(
            (
                m.pid,
                m.parent,
                m.command.as_deref(),
                m.duration_s,
                m.target_exited
            ),
            (7, Some(1), Some("srv"), 2.5, true)
        );
        assert_eq!((m.lost_events, m.stack_errors), (3, 4));
        assert_eq!(m.missing_tracepoints, ["sys_exit_openat2"]);
        assert_eq!(
            m.rlimit_nofile.map(|l| (l.soft, l.hard)),
            Some((Some(1024), None))
        );
        assert_eq!(m.container.unwrap().nspid, [7, 1]);
        // Not a known fact, unreadable JSON, not an Extra: nothing.
        assert_eq!(typed(&extra("other", serde_json::json!({}))), None);
        let broken = Record::Extra {
            ts_ns: 1,
            tgid: 1,
            name: DRIFT_CLOSE.into(),
            json: "{".into(),
        };
        assert_eq!(typed(&broken), None);
        assert_eq!(typed(&Record::Exec { ts_ns: 1, tgid: 1 }), None);
    }
}
