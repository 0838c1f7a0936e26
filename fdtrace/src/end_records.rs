//! The records a recording ends with, to and from the report's own types: what live mode knew
//! of each process ([`Record::ProcessEnd`], the report's [`Meta`]) and what `/proc/PID/fd`
//! held ([`Record::ProcFds`], the drift check's [`ProcFd`]s).
use fdtrace_record::Record;

use crate::container::Container;
use crate::model::FdKind;
use crate::procinfo::{NofileLimit, ProcFd};
use crate::report::Meta;

/// `meta` as the record of the process at `ts_ns`.
pub fn process_end(ts_ns: u64, meta: &Meta) -> Record {
    Record::ProcessEnd {
        ts_ns,
        tgid: meta.pid,
        parent: meta.parent,
        command: meta.command.clone(),
        duration_s: meta.duration_s,
        target_exited: meta.target_exited,
        lost_events: meta.lost_events,
        stack_errors: meta.stack_errors,
        missing_tracepoints: meta.missing_tracepoints.clone(),
        nofile: meta.rlimit_nofile.map(|l| fdtrace_record::NofileLimit {
            soft: l.soft,
            hard: l.hard,
        }),
        container: meta.container.as_ref().map(|c| {
            Box::new(fdtrace_record::Container {
                cgroup: c.cgroup.clone(),
                id: c.id.clone(),
                runtime: c.runtime.clone(),
                pod_uid: c.pod_uid.clone(),
                nspid: c.nspid.clone(),
            })
        }),
    }
}

/// The [`Meta`] a [`Record::ProcessEnd`] holds (None for any other record).
pub fn meta(r: &Record) -> Option<Meta> {
    let Record::ProcessEnd {
        tgid,
        parent,
        command,
        duration_s,
        target_exited,
        lost_events,
        stack_errors,
        missing_tracepoints,
        nofile,
        container,
        ..
    } = r
    else {
        return None;
    };
    Some(Meta {
        pid: *tgid,
        parent: *parent,
        command: command.clone(),
        duration_s: *duration_s,
        target_exited: *target_exited,
        lost_events: *lost_events,
        stack_errors: *stack_errors,
        missing_tracepoints: missing_tracepoints.clone(),
        rlimit_nofile: nofile.map(|l| NofileLimit {
            soft: l.soft,
            hard: l.hard,
        }),
        container: container.as_ref().map(|c| Container {
            cgroup: c.cgroup.clone(),
            id: c.id.clone(),
            runtime: c.runtime.clone(),
            pod_uid: c.pod_uid.clone(),
            nspid: c.nspid.clone(),
        }),
    })
}

/// `fds`, what `/proc/PID/fd` of `tgid` held at `ts_ns`, as its record.
pub fn proc_fds(ts_ns: u64, tgid: u32, fds: &[ProcFd]) -> Record {
    Record::ProcFds {
        ts_ns,
        tgid,
        fds: fds
            .iter()
            .map(|f| fdtrace_record::ProcFd {
                fd: f.fd,
                kind: f.kind.code(),
                cloexec: f.cloexec,
                age_ns: f.age_ns,
                target: f.target.clone(),
            })
            .collect(),
    }
}

/// The descriptors a [`Record::ProcFds`] holds (None for any other record).
pub fn fds(r: &Record) -> Option<Vec<ProcFd>> {
    let Record::ProcFds { fds, .. } = r else {
        return None;
    };
    Some(
        fds.iter()
            .map(|f| ProcFd {
                fd: f.fd,
                target: f.target.clone(),
                kind: FdKind::from_code(f.kind),
                cloexec: f.cloexec,
                age_ns: f.age_ns,
            })
            .collect(),
    )
}
