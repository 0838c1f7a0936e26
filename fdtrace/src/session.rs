//! A tracing session's processes: `Session`, every traced process, which applies the kernel's
//! records to the process they belong to, follows forks, execs and the processes that join a
//! traced cgroup, and writes the recording.

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use fdtrace_common::{FailKey, Header, capture};
use fdtrace_record::Record;
use tracing::{debug, warn};

use crate::{
    cgroup::Cgroup,
    clock::monotonic_ns,
    events::{self, Event},
    process::{State, UnwindMode, attach_running},
    procinfo,
    procinfo::ProcFd,
    recorder::Recorder,
    report::{self, Meta, Report},
    symbolize::Symbols,
    tracer::Tracer,
};

/// Every traced process of a session: the target and, with `-f`, its descendants; or every
/// process of a cgroup.
pub struct Session {
    /// The target process; with a cgroup, the first process found in it (None until then).
    pub root: Option<u32>,
    pub follow: bool,
    /// The cgroup traced (`--cgroup`, `--container`): its processes come and go, and the
    /// session ends when it is removed, not when a process exits.
    pub cgroup: Option<Cgroup>,
    /// How the stacks of processes that join the cgroup are unwound.
    pub unwind: UnwindMode,
    /// Records from processes not traced (the kernel filter lets none through; counted to
    /// show it).
    pub stray_events: u64,
    /// By pid, exited ones included (they keep what they held at exit).
    pub procs: std::collections::BTreeMap<u32, State>,
    /// Children created with CLONE_FILES share their parent's table: pid -> the owner's pid.
    alias: foldhash::HashMap<u32, u32>,
    pub decode_errors: u64,
    /// Processes that exited, to be removed from the kernel filter.
    pub gone: Vec<u32>,
    /// `fdtrace record`: where the changes to the model go.
    pub recorder: Option<Recorder>,
}

impl Session {
    pub fn new(root: State, follow: bool) -> Self {
        let mut s = Self::of_cgroup(None, root.mode);
        s.follow = follow;
        s.add_process(root);
        s
    }

    /// A session without processes yet: those of `cgroup` are added as they are found.
    pub fn of_cgroup(cgroup: Option<Cgroup>, unwind: UnwindMode) -> Self {
        Self {
            root: None,
            follow: true,
            cgroup,
            unwind,
            stray_events: 0,
            procs: Default::default(),
            alias: Default::default(),
            decode_errors: 0,
            gone: Vec::new(),
            recorder: None,
        }
    }

    /// A process traced on its own account (not as a traced process's child): the target, or a
    /// process of the cgroup. Written to the recording, if any.
    pub fn add_process(&mut self, p: State) {
        let pid = p.pid;
        self.root.get_or_insert(pid);
        let comm = p.comm.clone().unwrap_or_default();
        self.procs.insert(pid, p);
        if let Some(rec) = self.recorder.as_mut() {
            rec.write(&Record::Process {
                tgid: pid,
                parent: None,
                comm,
                cmdline: procinfo::cmdline(pid),
            });
            self.flush_log(pid);
        }
    }

    /// Record into `recorder` from now on, starting with what is known of each process.
    pub fn start_recording(&mut self, mut recorder: Recorder) {
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for &pid in &pids {
            let p = &self.procs[&pid];
            recorder.write(&Record::Process {
                tgid: pid,
                parent: p.parent,
                comm: p.comm.clone().unwrap_or_default(),
                cmdline: procinfo::cmdline(pid),
            });
        }
        self.recorder = Some(recorder);
        for pid in pids {
            self.flush_log(pid);
        }
    }

    /// A process of the traced cgroup that the kernel traces from now on: read what it holds
    /// now, as when attaching to a pid.
    fn on_join(&mut self, pid: u32) {
        if self.procs.get(&pid).is_some_and(|p| p.exited_ns.is_none())
            || self.alias.contains_key(&pid)
        {
            return;
        }
        match attach_running(pid, self.unwind, self.recorder.is_some()) {
            Ok(mut p) => {
                debug!(
                    "pid {pid} ({}) joined the cgroup",
                    p.comm.as_deref().unwrap_or("?")
                );
                // The kernel copies its stacks until told otherwise.
                if p.capture != capture::STACK_COPY {
                    p.capture_change = Some(p.capture);
                }
                self.add_process(p);
            }
            Err(e) => {
                debug!("pid {pid} joined the cgroup but could not be read: {e:#}");
                self.gone.push(pid);
            }
        }
    }

    /// The kernel's counts of failed births, into each process's table (and its recording
    /// when they changed).
    pub(crate) fn take_failure_counts(&mut self, counts: &[(FailKey, u64)]) {
        let now = monotonic_ns();
        for (k, n) in counts {
            if let Some(p) = self.procs.get_mut(&k.tgid)
                && p.table.failure_total(k.syscall, k.errno as i32) != Some(*n)
            {
                p.change(Record::FailureTotal {
                    ts_ns: now,
                    tgid: k.tgid,
                    syscall: k.syscall,
                    errno: k.errno as i32,
                    count: *n,
                });
            }
        }
    }

    /// Move every process's logged changes into the recording (nothing when not recording).
    pub(crate) fn flush_logs(&mut self) {
        if self.recorder.is_none() {
            return;
        }
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            self.flush_log(pid);
        }
    }

    /// Move a process's logged changes into the recording, numbering its stacks.
    pub(crate) fn flush_log(&mut self, pid: u32) {
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let Some(log) = p.log.as_mut() else {
            return;
        };
        if log.is_empty() {
            return;
        }
        let entries = std::mem::take(log);
        for mut r in entries {
            match &mut r {
                Record::Open {
                    stack: Some(id), ..
                } => *id = rec.stack_id(pid, *id, &p.stacks),
                Record::FailedOpen { stack, .. } => *stack = rec.stack_id(pid, *stack, &p.stacks),
                _ => {}
            }
            rec.write(&r);
        }
    }

    /// End of a recording at `now` (the moment the live reports describe, so that a replay's
    /// ages are theirs): what each process held and what /proc said, the symbols of every
    /// stack, the counters.
    pub fn finish_recording(
        &mut self,
        reports: &[(u32, Meta, Option<Vec<ProcFd>>)],
        lost: u64,
        reason: &str,
        now: u64,
    ) -> Result<Option<(u64, std::path::PathBuf)>> {
        self.flush_logs();
        let Some(mut rec) = self.recorder.take() else {
            return Ok(None);
        };
        for (pid, meta, proc_fds) in reports {
            rec.write(&crate::end_records::process_end(now, meta));
            if let Some(fds) = proc_fds {
                rec.write(&crate::end_records::proc_fds(now, *pid, fds));
            }
        }
        let symbols = Symbols::new();
        for (id, &(pid, local)) in rec.stacks().to_vec().iter().enumerate() {
            let frames = self
                .procs
                .get_mut(&pid)
                .map(|p| p.stacks.frames(local, &symbols))
                .unwrap_or_default();
            rec.write(&Record::Symbols {
                stack_id: id as u32,
                frames: crate::recorder::sym_frames(&frames),
            });
        }
        rec.write(&Record::Lost {
            ts_ns: now,
            count: lost,
        });
        rec.write(&Record::End {
            ts_ns: now,
            reason: reason.to_string(),
        });
        let bytes = rec.finish()?;
        Ok(Some((bytes, rec.path.clone())))
    }

    /// Before the report and the recording's symbols: name the JIT frames of stacks seen before
    /// a runtime's perf map named their code.
    pub fn name_jit_frames(&mut self) {
        for p in self.procs.values_mut() {
            p.name_jit_frames();
        }
    }

    /// The report at the end of a session (`ends`: each process's meta and, while it lives,
    /// its `/proc/PID/fd`): each process as of its exit, or of `ended_ns` while it lives, the
    /// root's with the others' in it; None when the root was never seen.
    pub fn report(
        &mut self,
        ends: &[(u32, Meta, Option<Vec<ProcFd>>)],
        min_age_s: Option<f64>,
        symbols: &Symbols,
        ended_ns: u64,
    ) -> Option<Report> {
        let mut reports = Vec::new();
        for (pid, meta, proc_fds) in ends {
            let Some(p) = self.procs.get_mut(pid) else {
                continue;
            };
            reports.push(report::build(
                meta.clone(),
                &p.table,
                min_age_s,
                &mut p.stacks,
                symbols,
                p.exited_ns.unwrap_or(ended_ns),
                proc_fds.as_deref(),
                Some(&p.history),
            ));
        }
        Report::of_root(reports, self.root?)
    }

    /// The target process (None for a cgroup that has held no process yet).
    pub fn root(&self) -> Option<&State> {
        self.procs.get(&self.root?)
    }

    fn owner(&self, tgid: u32) -> u32 {
        self.alias.get(&tgid).copied().unwrap_or(tgid)
    }

    /// Has every traced process exited?
    pub fn all_exited(&self) -> bool {
        self.procs.values().all(|p| p.exited_ns.is_some())
    }

    fn on_fork(&mut self, hdr: Header, child: u32, flags: u64) {
        let owner = self.owner(hdr.tgid);
        if flags & fdtrace_common::CLONE_FILES != 0 {
            self.alias.insert(child, owner);
            return;
        }
        if !self.follow || self.procs.contains_key(&child) {
            return;
        }
        // Kernel-created threads (io_uring workers) arrive without clone flags.
        if procinfo::tgid_of(child).is_some_and(|t| t != child) {
            return;
        }
        if let Some(p) = self.procs.get(&owner) {
            let c = p.fork_child(child);
            let comm = c.comm.clone().unwrap_or_default();
            self.procs.insert(child, c);
            if let Some(rec) = self.recorder.as_mut() {
                rec.write(&Record::Fork {
                    ts_ns: hdr.ts_ns,
                    parent: owner,
                    child,
                    shares_table: false,
                });
                rec.write(&Record::Process {
                    tgid: child,
                    parent: Some(owner),
                    comm,
                    cmdline: Vec::new(),
                });
            }
        }
    }

    fn on_exec(&mut self, hdr: Header) {
        let pid = hdr.tgid;
        if let Some(owner) = self.alias.remove(&pid) {
            // exec unshares a shared table: the process goes on with a copy of it.
            if self.follow
                && let Some(p) = self.procs.get(&owner)
            {
                let mut c = p.fork_child(pid);
                c.parent = Some(owner);
                self.procs.insert(pid, c);
            } else {
                self.gone.push(pid);
                return;
            }
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.apply(Event::Exec { hdr });
            p.comm = procinfo::comm(pid).or(p.comm.take());
            let (parent, comm) = (p.parent, p.comm.clone().unwrap_or_default());
            self.flush_log(pid);
            if let Some(rec) = self.recorder.as_mut() {
                rec.write(&Record::Process {
                    tgid: pid,
                    parent,
                    comm,
                    cmdline: procinfo::cmdline(pid),
                });
            }
        }
    }

    /// Apply one event to the process it belongs to.
    pub fn apply(&mut self, ev: Event) {
        match ev {
            Event::Fork { hdr, child, flags } => self.on_fork(hdr, child, flags),
            Event::Exec { hdr } => self.on_exec(hdr),
            Event::Join { hdr } => self.on_join(hdr.tgid),
            Event::Exit { hdr } if hdr.tid == hdr.tgid && self.alias.contains_key(&hdr.tgid) => {
                self.alias.remove(&hdr.tgid);
                self.gone.push(hdr.tgid);
            }
            Event::SockState(st) => {
                // Any process that inherited the socket sees the change.
                for p in self.procs.values_mut() {
                    p.apply(Event::SockState(st));
                }
                self.flush_logs();
            }
            ev => {
                let hdr = *ev.header();
                let key = self.owner(hdr.tgid);
                match self.procs.get_mut(&key) {
                    Some(p) => {
                        let exited = p.apply(ev);
                        if exited && (Some(key) != self.root || self.cgroup.is_some()) {
                            self.gone.push(key);
                        }
                    }
                    None => self.stray_events += 1,
                }
                self.flush_log(key);
            }
        }
    }

    /// Drain every record waiting in the ring buffer; returns their bytes.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> u64 {
        let mut bytes = 0;
        while let Some(item) = ring.next() {
            bytes += item.len() as u64;
            // The record stays reserved while it is applied: the event borrows its stack copy.
            match events::decode(&item) {
                Ok(ev) => self.apply(ev),
                Err(e) => {
                    if self.decode_errors == 0 {
                        warn!("undecodable event: {e}");
                    }
                    self.decode_errors += 1;
                }
            }
            drop(item);
        }
        bytes
    }

    /// Let the kernel forget the processes that exited, and tell it how to capture the stacks
    /// of processes that exec'd another program.
    pub fn untarget_gone(&mut self, tracer: &mut Tracer) {
        for pid in self.gone.drain(..) {
            tracer.remove_target(pid);
        }
        for p in self.procs.values_mut() {
            if p.exited_ns.is_none()
                && let Some(layout) = p.runtime.tick()
                && let Err(e) = tracer.set_python(p.pid, layout)
            {
                warn!("pid {}: Python frames will not be read: {e:#}", p.pid);
            }
            if let Some(c) = p.capture_change.take()
                && p.exited_ns.is_none()
            {
                debug!("pid {} exec'd: stacks now captured as {c}", p.pid);
                if let Err(e) = tracer.add_target(p.pid, c) {
                    warn!("could not change how stacks are captured: {e:#}");
                }
            }
        }
    }

    /// The session is over: the root exited and, when following, every descendant too.
    pub fn finished(&self) -> bool {
        if self.cgroup.is_some() {
            // Processes come and go: the cgroup's removal ends it (checked by the caller).
            return false;
        }
        let root_gone = self.root().is_none_or(|r| r.exited_ns.is_some());
        root_gone && (!self.follow || self.all_exited())
    }
}
