//! The one vocabulary of changes to a process's descriptor table: the records a recording
//! holds. Live mode turns each kernel event into such a record and applies it here (then
//! writes it, when recording); a replay applies each record it reads with the same function.
//! So the two cannot disagree on what a birth, a close, an exec or a correction does to the
//! table: the rule is written once, in [`apply`] and the `FdTable` methods it calls.
//!
//! Not table changes, and so not here: processes coming and going (fork, exit: the session's
//! and the replay's own bookkeeping of processes), sockets' addresses and states (live mode
//! knows more of a socket than a record keeps), stacks, symbols and the recording's end.
use fdtrace_record::Record;

use crate::model::{FdKind, FdTable, OpenFd, Origin, StackId};

/// Names of the changes kept as JSON in `Record::Extra` (see docs/FORMAT.md).
pub mod extra {
    /// A birth that failed with EMFILE or ENFILE: `{"stack", "errno", "example"}`.
    pub const FAILED_OPEN: &str = "failed_open";
    /// The kernel's count of failures: `{"syscall", "errno", "count"}`.
    pub const FAILURE_TOTAL: &str = "failure_total";
    /// Reconciliation found a descriptor never seen born: `{"fd", "kind", "target", "cloexec"}`.
    pub const UNTRACED: &str = "untraced";
    /// Reconciliation found a descriptor closed unseen: `{"fd"}`.
    pub const DRIFT_CLOSE: &str = "drift_close";
}

/// Apply `r` to `table` if it is a change of the table; returns whether it was one. An
/// unreadable `Extra` change is ignored (and said at debug level).
pub fn apply(table: &mut FdTable, r: &Record) -> bool {
    match r {
        Record::Preexisting {
            fd,
            kind,
            cloexec,
            target,
            born_ns,
            ..
        } => table.preexisting(
            *fd,
            FdKind::from_code(*kind),
            target.clone(),
            *cloexec,
            *born_ns,
        ),
        Record::Open {
            ts_ns,
            fd,
            kind,
            cloexec,
            stack,
            target,
            ..
        } => {
            table.open(
                *fd,
                OpenFd {
                    kind: FdKind::from_code(*kind),
                    target: target.clone(),
                    opened_ns: Some(*ts_ns),
                    origin: stack.map(Origin::Stack).unwrap_or(Origin::Untraced),
                    cloexec: *cloexec,
                    sock: None,
                },
            );
        }
        Record::Close { fd, .. } => {
            table.close(*fd);
        }
        Record::CloseRange {
            first,
            last,
            cloexec_only,
            ..
        } => {
            table.close_range(*first, *last, *cloexec_only);
        }
        Record::SetCloexec { fd, on, .. } => table.set_cloexec(*fd, *on),
        Record::Exec { .. } => {
            table.exec();
        }
        Record::Extra {
            ts_ns, name, json, ..
        } => return apply_extra(table, *ts_ns, name, json),
        _ => return false,
    }
    true
}

fn apply_extra(table: &mut FdTable, ts_ns: u64, name: &str, json: &str) -> bool {
    if ![
        extra::FAILED_OPEN,
        extra::FAILURE_TOTAL,
        extra::UNTRACED,
        extra::DRIFT_CLOSE,
    ]
    .contains(&name)
    {
        return false;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        tracing::debug!("unreadable {name} record ignored");
        return true;
    };
    let fd = v["fd"].as_i64().unwrap_or(-1) as i32;
    match name {
        extra::FAILED_OPEN => {
            let stack = v["stack"].as_u64().unwrap_or(0) as StackId;
            let errno = v["errno"].as_i64().unwrap_or(0) as i32;
            let example = v["example"].as_str().unwrap_or_default().to_string();
            table.failed(stack, errno, ts_ns, example);
        }
        extra::FAILURE_TOTAL => {
            let syscall = v["syscall"].as_u64().unwrap_or(0) as u32;
            let errno = v["errno"].as_i64().unwrap_or(0) as i32;
            let count = v["count"].as_u64().unwrap_or(0);
            table.set_failure_total(syscall, errno, count);
        }
        extra::UNTRACED => {
            let kind = serde_json::from_value(v["kind"].clone()).unwrap_or(FdKind::Other);
            let target = v["target"].as_str().unwrap_or_default().to_string();
            let cloexec = v["cloexec"].as_bool().unwrap_or(false);
            table.untraced(fd, kind, target, cloexec);
        }
        _ => table.drift_close(fd),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(fd: i32, ts_ns: u64, cloexec: bool, stack: Option<u32>) -> Record {
        Record::Open {
            ts_ns,
            tgid: 1,
            tid: 1,
            fd,
            kind: FdKind::File.code(),
            syscall: 1,
            cloexec,
            stack,
            target: format!("/f{fd}"),
        }
    }

    #[test]
    fn records_change_the_table_as_their_syscalls_do() {
        let mut t = FdTable::new();
        for r in [
            open(3, 10, false, Some(0)),
            open(4, 11, true, Some(1)),
            open(5, 12, false, None),
            Record::SetCloexec {
                ts_ns: 13,
                tgid: 1,
                fd: 5,
                on: true,
            },
            Record::Close {
                ts_ns: 14,
                tgid: 1,
                tid: 1,
                fd: 3,
            },
            Record::Exec { ts_ns: 15, tgid: 1 },
        ] {
            assert!(apply(&mut t, &r));
        }
        // 3 closed, 4 and 5 close-on-exec: nothing left.
        assert!(t.is_empty());
        assert_eq!((t.stats.opens, t.stats.closes), (3, 1));
        for r in [open(6, 20, false, Some(2)), open(7, 21, false, Some(2))] {
            apply(&mut t, &r);
        }
        let extra = |name: &str, json: serde_json::Value| Record::Extra {
            ts_ns: 22,
            tgid: 1,
            name: name.into(),
            json: json.to_string(),
        };
        assert!(apply(
            &mut t,
            &extra(extra::DRIFT_CLOSE, serde_json::json!({"fd": 6}))
        ));
        assert!(apply(
            &mut t,
            &extra(
                extra::UNTRACED,
                serde_json::json!({"fd": 9, "kind": "pipe", "target": "pipe:[1]", "cloexec": false})
            )
        ));
        assert!(apply(
            &mut t,
            &extra(
                extra::FAILED_OPEN,
                serde_json::json!({"stack": 2, "errno": 24, "example": "/f"})
            )
        ));
        assert!(!apply(&mut t, &extra("meta", serde_json::json!({}))));
        let fds: Vec<(i32, Origin)> = t.iter().map(|(fd, e)| (fd, e.origin)).collect();
        assert_eq!(fds, [(7, Origin::Stack(2)), (9, Origin::Untraced)]);
        assert_eq!(t.get(9).map(|e| e.kind), Some(FdKind::Pipe));
        assert_eq!(t.failure_count(24), (1, 1));
        assert_eq!((t.stats.drift_closes, t.stats.drift_opens), (1, 1));
    }
}
