//! The one vocabulary of changes to a process's descriptor table: the records a recording
//! holds. Live mode turns each kernel event into such a record and applies it here (then
//! writes it, when recording); a replay applies each record it reads with the same function.
//! So the two cannot disagree on what a birth, a close, an exec or a correction does to the
//! table: the rule is written once, in [`apply`] and the `FdTable` methods it calls.
//!
//! Not table changes, and so not here: processes coming and going (fork, exit: the session's
//! and the replay's own bookkeeping of processes), sockets' addresses and states (live mode
//! knows more of a socket than a record keeps), stacks, symbols and the recording's end.
use compact_str::CompactString;
use fdtrace_record::Record;

use crate::model::{FdKind, FdTable, OpenFd, Origin, StackId};

/// Apply `r` to `table` if it is a change of the table; returns whether it was one. (A
/// recording of format 1.1 keeps some of them as JSON: see `legacy_records`.)
pub fn apply(table: &mut FdTable, r: &Record) -> bool {
    apply_with(table, r, None)
}

/// [`apply`] for a record that is not kept afterwards: its text (a birth's target, a failure's
/// example) moves into the table instead of being copied, an allocation less per birth.
pub fn apply_spent(table: &mut FdTable, mut r: Record) -> bool {
    let text = match &mut r {
        // A birth, the most frequent change: its target moves into the table.
        Record::Open { target, .. } => {
            let target = std::mem::take(target);
            open(table, &r, target);
            return true;
        }
        Record::Preexisting { target, .. } | Record::Untraced { target, .. } => {
            Some(std::mem::take(target))
        }
        Record::FailedOpen { example, .. } => Some(std::mem::take(example)),
        _ => None,
    };
    apply_with(table, &r, text)
}

/// `apply`, with the record's text already taken out of it (`text`), or copied from it.
fn apply_with(table: &mut FdTable, r: &Record, text: Option<String>) -> bool {
    let text = move |s: &String| text.unwrap_or_else(|| s.clone());
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
            text(target),
            *cloexec,
            *born_ns,
        ),
        Record::Open { target, .. } => open(table, r, target.clone()),
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
        Record::FailedOpen {
            ts_ns,
            stack,
            errno,
            example,
            ..
        } => table.failed(*stack as StackId, *errno, *ts_ns, text(example)),
        Record::FailureTotal {
            syscall,
            errno,
            count,
            ..
        } => {
            table.set_failure_total(*syscall, *errno, *count);
        }
        Record::Untraced {
            fd,
            kind,
            cloexec,
            target,
            ..
        } => table.untraced(*fd, FdKind::from_code(*kind), text(target), *cloexec),
        Record::DriftClose { fd, .. } => table.drift_close(*fd),
        _ => return false,
    }
    true
}

/// A birth (`r`, a `Record::Open`) into the table, with its target (`target`: moved out of the
/// record or copied from it).
fn open(table: &mut FdTable, r: &Record, target: CompactString) {
    let Record::Open {
        ts_ns,
        fd,
        kind,
        cloexec,
        stack,
        ..
    } = r
    else {
        return;
    };
    table.open(
        *fd,
        OpenFd {
            kind: FdKind::from_code(*kind),
            target,
            opened_ns: Some(*ts_ns),
            origin: stack.map(Origin::Stack).unwrap_or(Origin::Untraced),
            cloexec: *cloexec,
            sock: None,
        },
    );
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
            target: format!("/f{fd}").into(),
        }
    }

    /// Reconciliation found fd 9, a pipe, without its birth.
    fn untraced_pipe(ts_ns: u64) -> Record {
        Record::Untraced {
            ts_ns,
            tgid: 1,
            fd: 9,
            kind: FdKind::Pipe.code(),
            cloexec: false,
            target: "pipe:[1]".into(),
        }
    }

    /// An open of "/f" at stack 2 failed with EMFILE.
    fn failed_open(ts_ns: u64) -> Record {
        Record::FailedOpen {
            ts_ns,
            tgid: 1,
            stack: 2,
            errno: 24,
            example: "/f".into(),
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
        for r in [
            Record::DriftClose {
                ts_ns: 22,
                tgid: 1,
                fd: 6,
            },
            untraced_pipe(22),
            failed_open(22),
        ] {
            assert!(apply(&mut t, &r));
        }
        assert!(!apply(&mut t, &Record::Exit { ts_ns: 23, tgid: 1 }));
        let fds: Vec<(i32, Origin)> = t.iter().map(|(fd, e)| (fd, e.origin)).collect();
        assert_eq!(fds, [(7, Origin::Stack(2)), (9, Origin::Untraced)]);
        assert_eq!(t.get(9).map(|e| e.kind), Some(FdKind::Pipe));
        assert_eq!(t.failure_count(24), (1, 1));
        assert_eq!((t.stats.drift_closes, t.stats.drift_opens), (1, 1));
    }

    #[test]
    fn a_spent_record_changes_the_table_as_a_kept_one_does() {
        let records = [
            Record::Preexisting {
                tgid: 1,
                fd: 0,
                kind: FdKind::Other.code(),
                cloexec: false,
                target: "/dev/pts/0".into(),
                born_ns: None,
            },
            open(3, 10, false, Some(0)),
            open(4, 11, true, Some(1)),
            Record::Close {
                ts_ns: 12,
                tgid: 1,
                tid: 1,
                fd: 3,
            },
            untraced_pipe(13),
            failed_open(14),
            Record::Exit { ts_ns: 15, tgid: 1 },
        ];
        let (mut kept, mut spent) = (FdTable::new(), FdTable::new());
        for r in records {
            assert_eq!(apply(&mut kept, &r), apply_spent(&mut spent, r));
        }
        let entries = |t: &FdTable| -> Vec<(i32, OpenFd)> {
            t.iter().map(|(fd, e)| (fd, e.clone())).collect()
        };
        assert_eq!(entries(&spent), entries(&kept));
        assert_eq!(spent.get(0).unwrap().target, "/dev/pts/0");
        assert_eq!(spent.get(4).unwrap().target, "/f4");
        assert_eq!(spent.failures, kept.failures);
        assert_eq!(spent.failures[&2].example, "/f");
        assert_eq!(spent.stats, kept.stats);
    }
}
