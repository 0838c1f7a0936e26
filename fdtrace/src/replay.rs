//! Replaying a recording (`fdtrace report FILE`, timelines, exports, diffs) into the same
//! reports as live mode, after the traced process is gone and on another machine: the
//! recorded changes rebuild the same tables (with the function live mode applied them with),
//! and the report is built by the same code.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use fdtrace_record::{Header, Reader, Record, Tail};

use crate::{
    endpoint::Endpoint,
    model::{FdTable, Origin, StackId},
    procinfo::{Mapping, ProcFd},
    report::{self, Meta, Report},
    sockets::SocketInfo,
    stacks::StackStore,
    symbolize::{Frame, Symbols},
    unwind::{Method, Unwound},
    verdict::History,
};

/// One process as rebuilt from a recording.
#[derive(Default)]
pub struct ReplayedProcess {
    pub pid: u32,
    pub parent: Option<u32>,
    pub comm: Option<String>,
    pub table: FdTable,
    pub exited_ns: Option<u64>,
    /// The session's own description of the process, written when recording ended.
    pub meta: Option<Meta>,
    /// /proc/PID/fd when recording ended (None if the process had exited).
    pub proc_fds: Option<Vec<ProcFd>>,
    /// Open counts per site, sampled every second of the recording while replaying.
    pub history: History,
}

/// A recording, replayed up to its end or to a moment of it.
pub struct Replay {
    pub header: Header,
    pub root: Option<u32>,
    pub procs: BTreeMap<u32, ReplayedProcess>,
    pub stacks: StackStore,
    /// Monotonic time of the last record applied.
    pub last_ns: u64,
    /// Monotonic time of the last record in the file (later than `last_ns` with `--at`).
    pub end_ns: u64,
    pub lost_events: u64,
    /// Why the recording ended, when it ended normally.
    pub end: Option<String>,
    /// Said when the file was cut short (a killed recorder, a full disk).
    pub tail_note: Option<String>,
    /// Replay stopped at this moment (`--at`).
    pub at_ns: Option<u64>,
    /// Every record, for callers that want to follow the replay (timelines).
    records_seen: u64,
    /// Executable mappings recorded so far, latest last.
    mappings: Vec<Mapping>,
    /// When the next history sample is due.
    next_sample_ns: u64,
}

/// A recording that cannot be read (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Damaged(pub String);

impl Replay {
    /// The error for a recording at `path` with no process in it, for a command that would
    /// `doing` (e.g. "report") it: why (cut short, or empty), with exit code 2.
    pub fn holds_nothing(&self, path: &Path, doing: &str) -> anyhow::Error {
        let why = self
            .tail_note
            .clone()
            .unwrap_or_else(|| "it holds no process".into());
        Damaged(format!("{}: nothing to {doing}: {why}", path.display())).into()
    }

    /// Replay the recording at `path`, up to `at_s` seconds after it started when given.
    /// `observe` sees every record applied, in order.
    pub fn read(
        path: &Path,
        at_s: Option<f64>,
        observe: impl FnMut(&Replay, &Record),
    ) -> Result<Replay> {
        Self::read_with(path, at_s, |_, _| {}, observe)
    }

    /// [`Replay::read`], also showing `before` every record about to be applied, with the
    /// replay as it was just before it (the state at any moment earlier than the record).
    pub fn read_with(
        path: &Path,
        at_s: Option<f64>,
        mut before: impl FnMut(&Replay, &Record),
        mut observe: impl FnMut(&Replay, &Record),
    ) -> Result<Replay> {
        let mut reader = Reader::open(path).map_err(|e| {
            if e.is_damaged() {
                anyhow::Error::new(Damaged(format!("{}: {e}", path.display())))
            } else {
                anyhow::anyhow!("{}: {e}", path.display())
            }
        })?;
        let header = reader.header().clone();
        let at_ns = at_s.map(|s| header.start_monotonic_ns + (s * 1e9) as u64);
        let mut r = Replay {
            root: None,
            procs: BTreeMap::new(),
            stacks: StackStore::new(),
            last_ns: header.start_monotonic_ns,
            end_ns: header.start_monotonic_ns,
            lost_events: 0,
            end: None,
            tail_note: None,
            at_ns,
            records_seen: 0,
            mappings: Vec::new(),
            next_sample_ns: 0,
            header,
        };
        let mut ended = false;
        for item in reader.by_ref() {
            let rec = match item {
                Ok(rec) => rec,
                Err(e) if e.is_fatal() => {
                    return Err(anyhow::Error::new(Damaged(format!(
                        "{}: {e}",
                        path.display()
                    ))));
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            if let Some(ts) = rec.ts_ns() {
                r.end_ns = r.end_ns.max(ts);
            }
            ended |= matches!(rec, Record::End { .. });
            if let (Some(at), Some(ts)) = (at_ns, rec.ts_ns())
                && ts > at
            {
                // Later changes are past the moment asked for; stacks and symbols still count.
                if !matches!(rec, Record::Symbols { .. } | Record::Stack { .. }) {
                    continue;
                }
            }
            before(&r, &rec);
            r.apply(&rec);
            observe(&r, &rec);
        }
        if let Tail::Truncated { .. } | Tail::Stopped { .. } = reader.tail() {
            r.tail_note = Some(reader.tail().to_string());
        } else if !ended && r.root.is_some() {
            r.tail_note = Some(
                "the recording has no end: its recorder was killed (or is still running), and \
                 its last second may be missing"
                    .into(),
            );
        }
        if let Some(at) = at_s
            && at_ns.is_some_and(|a| a > r.end_ns)
        {
            bail!(
                "--at {at}: the recording is only {:.1}s long",
                r.end_ns.saturating_sub(r.header.start_monotonic_ns) as f64 / 1e9
            );
        }
        Ok(r)
    }

    fn proc(&mut self, pid: u32) -> &mut ReplayedProcess {
        self.root.get_or_insert(pid);
        self.procs.entry(pid).or_insert_with(|| ReplayedProcess {
            pid,
            ..Default::default()
        })
    }

    fn apply(&mut self, rec: &Record) {
        self.records_seen += 1;
        if let Some(ts) = rec.ts_ns() {
            self.last_ns = self.last_ns.max(ts);
            // The state just before this record, once a second, as live mode samples it.
            if ts >= self.next_sample_ns {
                for p in self.procs.values_mut() {
                    if p.exited_ns.is_none() {
                        p.history.sample(ts, &p.table);
                    }
                }
                self.next_sample_ns = ts + 1_000_000_000;
            }
        }
        self.apply_record(rec);
    }

    /// What one record changes.
    fn apply_record(&mut self, rec: &Record) {
        match rec {
            Record::Process {
                tgid, parent, comm, ..
            } => {
                let p = self.proc(*tgid);
                p.parent = *parent;
                p.comm = Some(comm.clone());
            }
            Record::Mapping {
                start,
                end,
                offset,
                path,
                build_id: recorded,
                ..
            } => {
                // Only a file that is still the same binary can give the stack's symbols.
                let p = PathBuf::from(path);
                if recorded.is_none() || crate::recorder::build_id(&p) == *recorded {
                    self.mappings.push(Mapping {
                        start: *start,
                        end: *end,
                        offset: *offset,
                        source: Some(p.clone()),
                        path: p,
                    });
                }
            }
            Record::Stack {
                frames,
                truncated,
                method,
                ..
            } => {
                let mut mappings: Vec<Mapping> = Vec::new();
                for &a in frames {
                    if let Some(m) = self.mappings.iter().rev().find(|m| m.contains(a))
                        && !mappings.contains(m)
                    {
                        mappings.push(m.clone());
                    }
                }
                self.stacks.push(
                    Unwound {
                        frames: crate::link_markers::frames_of_addresses(frames),
                        truncated: *truncated,
                        method: match *method {
                            1 => Method::Fp,
                            2 => Method::Shed,
                            _ => Method::Dwarf,
                        },
                        ..Default::default()
                    },
                    mappings,
                );
            }
            Record::Symbols { stack_id, frames } => {
                let frames = frames
                    .iter()
                    .map(|f| Frame {
                        function: f.function.clone(),
                        file: f.file.clone(),
                        line: f.line,
                        addr: f.addr,
                        module: f.module.clone(),
                        inlined: f.inlined,
                    })
                    .collect();
                self.stacks.set_symbolized(*stack_id, frames);
            }
            Record::Preexisting { tgid, .. }
            | Record::Open { tgid, .. }
            | Record::Close { tgid, .. }
            | Record::CloseRange { tgid, .. }
            | Record::SetCloexec { tgid, .. } => {
                crate::table_changes::apply(&mut self.proc(*tgid).table, rec);
            }
            Record::Fork {
                parent,
                child,
                shares_table,
                ..
            } => {
                // A shared table's changes are recorded under its owner.
                if !shares_table {
                    let table = self.proc(*parent).table.inherited();
                    let comm = self.proc(*parent).comm.clone();
                    let c = self.proc(*child);
                    c.table = table;
                    c.parent = Some(*parent);
                    c.comm = comm;
                }
            }
            Record::Exec { tgid, .. } => {
                crate::table_changes::apply(&mut self.proc(*tgid).table, rec);
            }
            Record::Exit { ts_ns, tgid } => {
                self.proc(*tgid).exited_ns = Some(*ts_ns);
            }
            Record::SockState {
                ts_ns: _,
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
            } => {
                if let Some(e) = self.proc(*tgid).table.get_mut(*fd) {
                    e.sock = Some(Box::new(SocketInfo {
                        sk: 0,
                        family: *family,
                        sk_type: *sk_type,
                        protocol: *protocol,
                        local: local.clone().map(Endpoint::from),
                        peer: peer.clone().map(Endpoint::from),
                        state: (*state != 0).then_some(*state),
                        state_since_ns: *since_ns,
                        accepted: *accepted,
                    }));
                }
            }
            Record::FailedOpen { tgid, .. }
            | Record::FailureTotal { tgid, .. }
            | Record::Untraced { tgid, .. }
            | Record::DriftClose { tgid, .. } => {
                crate::table_changes::apply(&mut self.proc(*tgid).table, rec);
            }
            Record::ProcessEnd { tgid, .. } => {
                self.proc(*tgid).meta = crate::end_records::meta(rec);
            }
            Record::ProcFds { tgid, .. } => {
                self.proc(*tgid).proc_fds = crate::end_records::fds(rec);
            }
            // Format 1.1's JSON facts, read as the typed records above.
            Record::Extra { .. } => {
                if let Some(typed) = crate::legacy_records::typed(rec) {
                    self.apply_record(&typed);
                }
            }
            Record::Lost { count, .. } => self.lost_events += count,
            Record::End { reason, .. } => self.end = Some(reason.clone()),
        }
    }

    /// Descriptors created while traced (by a known stack) and open now, per creating stack,
    /// over every process: what the report's call sites count at this point of the replay (a
    /// process that exited counts what it held when it exited). Costs one pass over the open
    /// descriptors.
    pub fn open_per_stack(&self) -> HashMap<StackId, u64> {
        let mut counts: HashMap<StackId, u64> = HashMap::new();
        for p in self.procs.values() {
            for (_, e) in p.table.iter() {
                if let Origin::Stack(id) = e.origin {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        counts
    }

    /// The moment the replay describes: `--at`, or the last record applied.
    pub fn now_ns(&self) -> u64 {
        self.at_ns.unwrap_or(self.last_ns)
    }

    /// The report as of the end of the replay, built like the live one.
    pub fn report(&mut self, min_age_s: Option<f64>) -> Option<Report> {
        let root = self.root?;
        let symbols = Symbols::new();
        let now_default = self.at_ns.unwrap_or(self.last_ns);
        let duration_s = (now_default.saturating_sub(self.header.start_monotonic_ns)) as f64 / 1e9;
        let mut reports = Vec::new();
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let p = &self.procs[&pid];
            let exited = p.exited_ns.is_some_and(|t| t <= now_default);
            let now_ns = if exited {
                p.exited_ns.unwrap_or(now_default)
            } else {
                now_default
            };
            let mut meta = p.meta.clone().unwrap_or(Meta {
                pid,
                parent: p.parent,
                command: p.comm.clone(),
                duration_s,
                target_exited: exited,
                lost_events: self.lost_events,
                stack_errors: 0,
                missing_tracepoints: Vec::new(),
                rlimit_nofile: None,
                container: None,
            });
            // The drift check compares with /proc as of the recording's end only.
            let proc_fds = if self.at_ns.is_none() {
                p.proc_fds.clone()
            } else {
                meta.duration_s = duration_s;
                meta.target_exited = exited;
                None
            };
            reports.push(report::build(
                meta,
                &p.table,
                min_age_s,
                &mut self.stacks,
                &symbols,
                now_ns,
                proc_fds.as_deref(),
                Some(&p.history),
            ));
        }
        Report::of_root(reports, root)
    }
}
