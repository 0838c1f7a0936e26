//! The byte-level codec: varints, strings, the header body and the records inside a block.
//!
//! This is the exact encoding described in `docs/FORMAT.md`; keep the two in step. Nothing here
//! does I/O: the writer and reader move whole blocks, and this module turns their decompressed
//! bytes into records and back.
//!
//! Every decoding function is bounded by the input slice: a length or count is checked against
//! the bytes that remain before anything is allocated, so garbage cannot make it allocate more
//! than the (already capped) block size, and it never panics.

use crate::FORMAT_MINOR;
use crate::record::{Container, Header, NofileLimit, ProcFd, Record, SymFrame};
pub(crate) use crate::values::DecodeError;
use crate::values::*;

// Record tags (format 1.0; 1.1 appended `born_ns` to `Preexisting`; 1.2 added 16-21). Never
// renumber: add new ones at the end and bump the minor version.
pub(crate) const TAG_PROCESS: u64 = 0;
pub(crate) const TAG_MAPPING: u64 = 1;
pub(crate) const TAG_STACK: u64 = 2;
pub(crate) const TAG_SYMBOLS: u64 = 3;
pub(crate) const TAG_OPEN: u64 = 4;
pub(crate) const TAG_CLOSE: u64 = 5;
pub(crate) const TAG_CLOSE_RANGE: u64 = 6;
pub(crate) const TAG_SET_CLOEXEC: u64 = 7;
pub(crate) const TAG_FORK: u64 = 8;
pub(crate) const TAG_EXEC: u64 = 9;
pub(crate) const TAG_EXIT: u64 = 10;
pub(crate) const TAG_SOCK_STATE: u64 = 11;
pub(crate) const TAG_PREEXISTING: u64 = 12;
pub(crate) const TAG_LOST: u64 = 13;
pub(crate) const TAG_END: u64 = 14;
pub(crate) const TAG_EXTRA: u64 = 15;
pub(crate) const TAG_FAILED_OPEN: u64 = 16;
pub(crate) const TAG_FAILURE_TOTAL: u64 = 17;
pub(crate) const TAG_UNTRACED: u64 = 18;
pub(crate) const TAG_DRIFT_CLOSE: u64 = 19;
pub(crate) const TAG_PROCESS_END: u64 = 20;
pub(crate) const TAG_PROC_FDS: u64 = 21;
/// Highest tag this version knows.
pub(crate) const TAG_MAX_KNOWN: u64 = TAG_PROC_FDS;

/// Encodes the header body (the part after the fixed file prefix).
pub(crate) fn encode_header(h: &Header, out: &mut Vec<u8>) {
    put_str(out, &h.fdtrace_version);
    put_str(out, &h.hostname);
    put_str(out, &h.kernel_release);
    put_varint(out, h.start_unix_ns);
    put_varint(out, h.start_monotonic_ns);
    put_strings(out, &h.recorder_cmdline);
    put_str(out, &h.target);
}

/// The tag of a record.
pub(crate) fn tag_of(r: &Record) -> u64 {
    match r {
        Record::Process { .. } => TAG_PROCESS,
        Record::Mapping { .. } => TAG_MAPPING,
        Record::Stack { .. } => TAG_STACK,
        Record::Symbols { .. } => TAG_SYMBOLS,
        Record::Open { .. } => TAG_OPEN,
        Record::Close { .. } => TAG_CLOSE,
        Record::CloseRange { .. } => TAG_CLOSE_RANGE,
        Record::SetCloexec { .. } => TAG_SET_CLOEXEC,
        Record::Fork { .. } => TAG_FORK,
        Record::Exec { .. } => TAG_EXEC,
        Record::Exit { .. } => TAG_EXIT,
        Record::SockState { .. } => TAG_SOCK_STATE,
        Record::Preexisting { .. } => TAG_PREEXISTING,
        Record::Lost { .. } => TAG_LOST,
        Record::End { .. } => TAG_END,
        Record::Extra { .. } => TAG_EXTRA,
        Record::FailedOpen { .. } => TAG_FAILED_OPEN,
        Record::FailureTotal { .. } => TAG_FAILURE_TOTAL,
        Record::Untraced { .. } => TAG_UNTRACED,
        Record::DriftClose { .. } => TAG_DRIFT_CLOSE,
        Record::ProcessEnd { .. } => TAG_PROCESS_END,
        Record::ProcFds { .. } => TAG_PROC_FDS,
    }
}

/// Does a record with this (known) tag carry a timestamp?
fn tag_has_ts(tag: u64) -> bool {
    !matches!(
        tag,
        TAG_PROCESS | TAG_MAPPING | TAG_STACK | TAG_SYMBOLS | TAG_PREEXISTING
    )
}

/// Encodes the fields of `r` other than its timestamp (the record "body").
fn encode_body(r: &Record, out: &mut Vec<u8>) {
    match r {
        Record::Process {
            tgid,
            parent,
            comm,
            cmdline,
        } => {
            put_varint(out, (*tgid).into());
            put_opt(out, parent, |o, p| put_varint(o, (*p).into()));
            put_str(out, comm);
            put_strings(out, cmdline);
        }
        Record::Mapping {
            tgid,
            start,
            end,
            offset,
            path,
            build_id,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, *start);
            put_varint(out, *end);
            put_varint(out, *offset);
            put_str(out, path);
            put_opt(out, build_id, |o, b| put_bytes(o, b));
        }
        Record::Stack {
            id,
            frames,
            truncated,
            method,
        } => {
            put_varint(out, (*id).into());
            put_varint(out, frames.len() as u64);
            // Each address as the (wrapping) difference from the previous one: frames of one
            // module are close together.
            let mut prev = 0u64;
            for &f in frames {
                put_i64(out, f.wrapping_sub(prev) as i64);
                prev = f;
            }
            put_bool(out, *truncated);
            out.push(*method);
        }
        Record::Symbols { stack_id, frames } => {
            put_varint(out, (*stack_id).into());
            put_varint(out, frames.len() as u64);
            for f in frames {
                put_varint(out, f.addr);
                put_opt_str(out, &f.function);
                put_opt_str(out, &f.file);
                put_opt(out, &f.line, |o, l| put_varint(o, (*l).into()));
                put_opt_str(out, &f.module);
                put_bool(out, f.inlined);
            }
        }
        Record::Open {
            ts_ns: _,
            tgid,
            tid,
            fd,
            kind,
            syscall,
            cloexec,
            stack,
            target,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, (*tid).into());
            put_i64(out, (*fd).into());
            out.push(*kind);
            out.push(*syscall);
            put_bool(out, *cloexec);
            put_opt(out, stack, |o, s| put_varint(o, (*s).into()));
            put_str(out, target);
        }
        Record::Close {
            ts_ns: _,
            tgid,
            tid,
            fd,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, (*tid).into());
            put_i64(out, (*fd).into());
        }
        Record::CloseRange {
            ts_ns: _,
            tgid,
            first,
            last,
            cloexec_only,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, (*first).into());
            put_varint(out, (*last).into());
            put_bool(out, *cloexec_only);
        }
        Record::SetCloexec {
            ts_ns: _,
            tgid,
            fd,
            on,
        } => {
            put_varint(out, (*tgid).into());
            put_i64(out, (*fd).into());
            put_bool(out, *on);
        }
        Record::Fork {
            ts_ns: _,
            parent,
            child,
            shares_table,
        } => {
            put_varint(out, (*parent).into());
            put_varint(out, (*child).into());
            put_bool(out, *shares_table);
        }
        Record::Exec { ts_ns: _, tgid } | Record::Exit { ts_ns: _, tgid } => {
            put_varint(out, (*tgid).into());
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
            put_varint(out, (*tgid).into());
            put_i64(out, (*fd).into());
            out.push(*state);
            put_opt_str(out, local);
            put_opt_str(out, peer);
            put_varint(out, (*family).into());
            put_varint(out, (*sk_type).into());
            put_varint(out, (*protocol).into());
            put_bool(out, *accepted);
            put_opt(out, since_ns, |o, v| put_varint(o, *v));
        }
        Record::Extra {
            ts_ns: _,
            tgid,
            name,
            json,
        } => {
            put_varint(out, (*tgid).into());
            put_str(out, name);
            put_str(out, json);
        }
        Record::FailedOpen {
            ts_ns: _,
            tgid,
            stack,
            errno,
            example,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, (*stack).into());
            put_i64(out, (*errno).into());
            put_str(out, example);
        }
        Record::FailureTotal {
            ts_ns: _,
            tgid,
            syscall,
            errno,
            count,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, (*syscall).into());
            put_i64(out, (*errno).into());
            put_varint(out, *count);
        }
        Record::Untraced {
            ts_ns: _,
            tgid,
            fd,
            kind,
            cloexec,
            target,
        } => {
            put_varint(out, (*tgid).into());
            put_i64(out, (*fd).into());
            out.push(*kind);
            put_bool(out, *cloexec);
            put_str(out, target);
        }
        Record::DriftClose { ts_ns: _, tgid, fd } => {
            put_varint(out, (*tgid).into());
            put_i64(out, (*fd).into());
        }
        Record::ProcessEnd {
            ts_ns: _,
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
        } => {
            put_varint(out, (*tgid).into());
            put_opt(out, parent, |o, p| put_varint(o, (*p).into()));
            put_opt_str(out, command);
            put_f64(out, *duration_s);
            put_bool(out, *target_exited);
            put_varint(out, *lost_events);
            put_varint(out, *stack_errors);
            put_strings(out, missing_tracepoints);
            put_opt(out, nofile, |o, l| {
                put_opt(o, &l.soft, |o, v| put_varint(o, *v));
                put_opt(o, &l.hard, |o, v| put_varint(o, *v));
            });
            put_opt(out, container, |o, c| {
                put_opt_str(o, &c.cgroup);
                put_opt_str(o, &c.id);
                put_opt_str(o, &c.runtime);
                put_opt_str(o, &c.pod_uid);
                put_varint(o, c.nspid.len() as u64);
                for &p in &c.nspid {
                    put_varint(o, p.into());
                }
            });
        }
        Record::ProcFds {
            ts_ns: _,
            tgid,
            fds,
        } => {
            put_varint(out, (*tgid).into());
            put_varint(out, fds.len() as u64);
            for f in fds {
                put_i64(out, f.fd.into());
                out.push(f.kind);
                put_bool(out, f.cloexec);
                put_opt(out, &f.age_ns, |o, v| put_varint(o, *v));
                put_str(out, &f.target);
            }
        }
        Record::Preexisting {
            tgid,
            fd,
            kind,
            cloexec,
            target,
            born_ns,
        } => {
            put_varint(out, (*tgid).into());
            put_i64(out, (*fd).into());
            out.push(*kind);
            put_bool(out, *cloexec);
            put_str(out, target);
            // 1.1
            put_opt(out, born_ns, |o, v| put_varint(o, *v));
        }
        Record::Lost { ts_ns: _, count } => put_varint(out, *count),
        Record::End { ts_ns: _, reason } => put_str(out, reason),
    }
}

/// Per-block encoding state: the timestamp the next delta is taken from.
#[derive(Debug, Default)]
pub(crate) struct BlockEncoder {
    prev_ts: u64,
    body: Vec<u8>,
}

impl BlockEncoder {
    /// Starts a new block: timestamps restart from 0, so each block decodes on its own.
    pub fn reset(&mut self) {
        self.prev_ts = 0;
    }

    /// Appends one framed record (head, timestamp delta, body length, body) to `out`.
    ///
    /// A record whose body would exceed `max_body` bytes is not written (the state is left
    /// unchanged) and its body size is returned as the error.
    pub fn encode(&mut self, r: &Record, max_body: usize, out: &mut Vec<u8>) -> Result<(), usize> {
        self.body.clear();
        encode_body(r, &mut self.body);
        if self.body.len() > max_body {
            return Err(self.body.len());
        }
        let ts = r.ts_ns();
        put_varint(out, (tag_of(r) << 1) | ts.is_some() as u64);
        if let Some(ts) = ts {
            put_i64(out, ts.wrapping_sub(self.prev_ts) as i64);
            self.prev_ts = ts;
        }
        put_bytes(out, &self.body);
        Ok(())
    }
}

/// Decodes the header body. `allow_trailing`: the file has a newer minor version, whose header
/// may have fields appended that this version does not know (they are ignored).
pub(crate) fn decode_header(buf: &[u8], allow_trailing: bool) -> Result<Header, DecodeError> {
    let mut d = Dec::new(buf);
    let h = Header {
        fdtrace_version: d.string("header.fdtrace_version")?,
        hostname: d.string("header.hostname")?,
        kernel_release: d.string("header.kernel_release")?,
        start_unix_ns: d.varint("header.start_unix_ns")?,
        start_monotonic_ns: d.varint("header.start_monotonic_ns")?,
        recorder_cmdline: d.strings("header.recorder_cmdline")?,
        target: d.string("header.target")?,
    };
    if !allow_trailing && !d.is_empty() {
        return Err(d.err(
            d.pos(),
            "the end of the header",
            format!("{} more bytes", d.remaining()),
        ));
    }
    Ok(h)
}

/// What one framed record in a block decoded to.
#[derive(Debug)]
pub(crate) enum Decoded {
    Record(Record),
    /// A tag this version does not know (from a newer minor version); skipped.
    Unknown {
        tag: u64,
        ts_ns: Option<u64>,
    },
}

/// Per-block decoding state, mirror of [`BlockEncoder`]: owns the decompressed block.
pub(crate) struct BlockDecoder {
    buf: Vec<u8>,
    pos: usize,
    prev_ts: u64,
    /// Unknown tags and trailing fields are allowed (the file's minor version is newer).
    newer: bool,
}

impl BlockDecoder {
    pub fn new(buf: Vec<u8>, newer: bool) -> Self {
        BlockDecoder {
            buf,
            pos: 0,
            prev_ts: 0,
            newer,
        }
    }

    /// All records of the block were decoded.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Byte position of the next record in the decompressed block.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Decodes the next framed record. On error the block should be abandoned.
    pub fn next(&mut self) -> Result<Decoded, DecodeError> {
        let mut d = Dec::at(&self.buf, self.pos);
        let head_at = d.pos();
        let head = d.varint("record head")?;
        let tag = head >> 1;
        let has_ts = head & 1 == 1;
        let ts = if has_ts {
            let delta = d.i64("record timestamp delta")?;
            let ts = self.prev_ts.wrapping_add(delta as u64);
            self.prev_ts = ts;
            Some(ts)
        } else {
            None
        };
        let body = d.bytes("record body length")?;
        if tag > TAG_MAX_KNOWN {
            if self.newer {
                self.pos = d.pos();
                return Ok(Decoded::Unknown { tag, ts_ns: ts });
            }
            return Err(d.err(
                head_at,
                format!("a record tag of at most {TAG_MAX_KNOWN} (format 1.{FORMAT_MINOR})"),
                format!("tag {tag}"),
            ));
        }
        if has_ts != tag_has_ts(tag) {
            return Err(d.err(
                head_at,
                format!(
                    "tag {tag} {} a timestamp",
                    if tag_has_ts(tag) { "with" } else { "without" }
                ),
                format!("the timestamp flag {}", has_ts as u8),
            ));
        }
        let mut b = Dec::new(body);
        let rec = decode_body(tag, ts.unwrap_or(0), &mut b).map_err(|mut e| {
            e.pos += d.pos() - body.len();
            e
        })?;
        if !self.newer && !b.is_empty() {
            return Err(d.err(
                d.pos() - b.remaining(),
                format!("the end of the {} record", rec.name()),
                format!("{} more bytes", b.remaining()),
            ));
        }
        self.pos = d.pos();
        Ok(Decoded::Record(rec))
    }
}

fn decode_body(tag: u64, ts_ns: u64, d: &mut Dec) -> Result<Record, DecodeError> {
    Ok(match tag {
        TAG_PROCESS => Record::Process {
            tgid: d.u32("Process.tgid")?,
            parent: d.opt("Process.parent", |d| d.u32("Process.parent"))?,
            comm: d.string("Process.comm")?,
            cmdline: d.strings("Process.cmdline")?,
        },
        TAG_MAPPING => Record::Mapping {
            tgid: d.u32("Mapping.tgid")?,
            start: d.varint("Mapping.start")?,
            end: d.varint("Mapping.end")?,
            offset: d.varint("Mapping.offset")?,
            path: d.string("Mapping.path")?,
            build_id: d.opt("Mapping.build_id", |d| {
                d.bytes("Mapping.build_id").map(<[u8]>::to_vec)
            })?,
        },
        TAG_STACK => {
            let id = d.u32("Stack.id")?;
            let n = d.len("Stack.frames", 1)?;
            let mut frames = Vec::with_capacity(n);
            let mut prev = 0u64;
            for _ in 0..n {
                prev = prev.wrapping_add(d.i64("Stack.frames")? as u64);
                frames.push(prev);
            }
            Record::Stack {
                id,
                frames,
                truncated: d.bool("Stack.truncated")?,
                method: d.u8("Stack.method")?,
            }
        }
        TAG_SYMBOLS => {
            let stack_id = d.u32("Symbols.stack_id")?;
            // A frame takes at least 6 bytes: addr, four option flags and `inlined`.
            let n = d.len("Symbols.frames", 6)?;
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                frames.push(SymFrame {
                    addr: d.varint("SymFrame.addr")?,
                    function: d.opt("SymFrame.function", |d| d.string("SymFrame.function"))?,
                    file: d.opt("SymFrame.file", |d| d.string("SymFrame.file"))?,
                    line: d.opt("SymFrame.line", |d| d.u32("SymFrame.line"))?,
                    module: d.opt("SymFrame.module", |d| d.string("SymFrame.module"))?,
                    inlined: d.bool("SymFrame.inlined")?,
                });
            }
            Record::Symbols { stack_id, frames }
        }
        TAG_OPEN => Record::Open {
            ts_ns,
            tgid: d.u32("Open.tgid")?,
            tid: d.u32("Open.tid")?,
            fd: d.i32("Open.fd")?,
            kind: d.u8("Open.kind")?,
            syscall: d.u8("Open.syscall")?,
            cloexec: d.bool("Open.cloexec")?,
            stack: d.opt("Open.stack", |d| d.u32("Open.stack"))?,
            target: d.string("Open.target")?,
        },
        TAG_CLOSE => Record::Close {
            ts_ns,
            tgid: d.u32("Close.tgid")?,
            tid: d.u32("Close.tid")?,
            fd: d.i32("Close.fd")?,
        },
        TAG_CLOSE_RANGE => Record::CloseRange {
            ts_ns,
            tgid: d.u32("CloseRange.tgid")?,
            first: d.u32("CloseRange.first")?,
            last: d.u32("CloseRange.last")?,
            cloexec_only: d.bool("CloseRange.cloexec_only")?,
        },
        TAG_SET_CLOEXEC => Record::SetCloexec {
            ts_ns,
            tgid: d.u32("SetCloexec.tgid")?,
            fd: d.i32("SetCloexec.fd")?,
            on: d.bool("SetCloexec.on")?,
        },
        TAG_FORK => Record::Fork {
            ts_ns,
            parent: d.u32("Fork.parent")?,
            child: d.u32("Fork.child")?,
            shares_table: d.bool("Fork.shares_table")?,
        },
        TAG_EXEC => Record::Exec {
            ts_ns,
            tgid: d.u32("Exec.tgid")?,
        },
        TAG_EXIT => Record::Exit {
            ts_ns,
            tgid: d.u32("Exit.tgid")?,
        },
        TAG_SOCK_STATE => Record::SockState {
            ts_ns,
            tgid: d.u32("SockState.tgid")?,
            fd: d.i32("SockState.fd")?,
            state: d.u8("SockState.state")?,
            local: d.opt("SockState.local", |d| d.string("SockState.local"))?,
            peer: d.opt("SockState.peer", |d| d.string("SockState.peer"))?,
            family: d.u16("SockState.family")?,
            sk_type: d.u16("SockState.sk_type")?,
            protocol: d.u16("SockState.protocol")?,
            accepted: d.bool("SockState.accepted")?,
            since_ns: d.opt("SockState.since_ns", |d| d.varint("SockState.since_ns"))?,
        },
        TAG_EXTRA => Record::Extra {
            ts_ns,
            tgid: d.u32("Extra.tgid")?,
            name: d.string("Extra.name")?,
            json: d.string("Extra.json")?,
        },
        TAG_FAILED_OPEN => Record::FailedOpen {
            ts_ns,
            tgid: d.u32("FailedOpen.tgid")?,
            stack: d.u32("FailedOpen.stack")?,
            errno: d.i32("FailedOpen.errno")?,
            example: d.string("FailedOpen.example")?,
        },
        TAG_FAILURE_TOTAL => Record::FailureTotal {
            ts_ns,
            tgid: d.u32("FailureTotal.tgid")?,
            syscall: d.u32("FailureTotal.syscall")?,
            errno: d.i32("FailureTotal.errno")?,
            count: d.varint("FailureTotal.count")?,
        },
        TAG_UNTRACED => Record::Untraced {
            ts_ns,
            tgid: d.u32("Untraced.tgid")?,
            fd: d.i32("Untraced.fd")?,
            kind: d.u8("Untraced.kind")?,
            cloexec: d.bool("Untraced.cloexec")?,
            target: d.string("Untraced.target")?,
        },
        TAG_DRIFT_CLOSE => Record::DriftClose {
            ts_ns,
            tgid: d.u32("DriftClose.tgid")?,
            fd: d.i32("DriftClose.fd")?,
        },
        TAG_PROCESS_END => Record::ProcessEnd {
            ts_ns,
            tgid: d.u32("ProcessEnd.tgid")?,
            parent: d.opt("ProcessEnd.parent", |d| d.u32("ProcessEnd.parent"))?,
            command: d.opt("ProcessEnd.command", |d| d.string("ProcessEnd.command"))?,
            duration_s: d.f64("ProcessEnd.duration_s")?,
            target_exited: d.bool("ProcessEnd.target_exited")?,
            lost_events: d.varint("ProcessEnd.lost_events")?,
            stack_errors: d.varint("ProcessEnd.stack_errors")?,
            missing_tracepoints: d.strings("ProcessEnd.missing_tracepoints")?,
            nofile: d.opt("ProcessEnd.nofile", |d| {
                Ok(NofileLimit {
                    soft: d.opt("NofileLimit.soft", |d| d.varint("NofileLimit.soft"))?,
                    hard: d.opt("NofileLimit.hard", |d| d.varint("NofileLimit.hard"))?,
                })
            })?,
            container: d.opt("ProcessEnd.container", |d| {
                let cgroup = d.opt("Container.cgroup", |d| d.string("Container.cgroup"))?;
                let id = d.opt("Container.id", |d| d.string("Container.id"))?;
                let runtime = d.opt("Container.runtime", |d| d.string("Container.runtime"))?;
                let pod_uid = d.opt("Container.pod_uid", |d| d.string("Container.pod_uid"))?;
                let n = d.len("Container.nspid", 1)?;
                let mut nspid = Vec::with_capacity(n);
                for _ in 0..n {
                    nspid.push(d.u32("Container.nspid")?);
                }
                Ok(Box::new(Container {
                    cgroup,
                    id,
                    runtime,
                    pod_uid,
                    nspid,
                }))
            })?,
        },
        TAG_PROC_FDS => {
            let tgid = d.u32("ProcFds.tgid")?;
            // An entry takes at least 5 bytes: fd, kind, cloexec, the option flag, the target's
            // length.
            let n = d.len("ProcFds.fds", 5)?;
            let mut fds = Vec::with_capacity(n);
            for _ in 0..n {
                fds.push(ProcFd {
                    fd: d.i32("ProcFd.fd")?,
                    kind: d.u8("ProcFd.kind")?,
                    cloexec: d.bool("ProcFd.cloexec")?,
                    age_ns: d.opt("ProcFd.age_ns", |d| d.varint("ProcFd.age_ns"))?,
                    target: d.string("ProcFd.target")?,
                });
            }
            Record::ProcFds { ts_ns, tgid, fds }
        }
        TAG_PREEXISTING => Record::Preexisting {
            tgid: d.u32("Preexisting.tgid")?,
            fd: d.i32("Preexisting.fd")?,
            kind: d.u8("Preexisting.kind")?,
            cloexec: d.bool("Preexisting.cloexec")?,
            target: d.string("Preexisting.target")?,
            // Appended in 1.1: a 1.0 body ends before it.
            born_ns: if d.is_empty() {
                None
            } else {
                d.opt("Preexisting.born_ns", |d| d.varint("Preexisting.born_ns"))?
            },
        },
        TAG_LOST => Record::Lost {
            ts_ns,
            count: d.varint("Lost.count")?,
        },
        TAG_END => Record::End {
            ts_ns,
            reason: d.string("End.reason")?,
        },
        _ => unreachable!("caller checks tag <= TAG_MAX_KNOWN"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_md_example_bytes() {
        // The example at the end of docs/FORMAT.md.
        let mut enc = BlockEncoder {
            prev_ts: 5_000,
            body: Vec::new(),
        };
        let rec = Record::Open {
            ts_ns: 6_000,
            tgid: 48_213,
            tid: 48_219,
            fd: 7,
            kind: 1,
            syscall: 1,
            cloexec: true,
            stack: Some(42),
            target: "/a".into(),
        };
        let mut out = Vec::new();
        enc.encode(&rec, usize::MAX, &mut out).unwrap();
        let want = [
            0x09, 0xd0, 0x0f, 0x0f, 0xd5, 0xf8, 0x02, 0xdb, 0xf8, 0x02, 0x0e, 0x01, 0x01, 0x01,
            0x01, 0x2a, 0x02, 0x2f, 0x61,
        ];
        assert_eq!(out, want);
        let mut dec = BlockDecoder::new(out, false);
        dec.prev_ts = 5_000;
        match dec.next().unwrap() {
            Decoded::Record(r) => assert_eq!(r, rec),
            other => panic!("{other:?}"),
        }
        assert!(dec.is_empty());
    }
}
