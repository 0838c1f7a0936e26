//! The byte-level codec: varints, strings, the header body and the records inside a block.
//!
//! This is the exact encoding described in `docs/FORMAT.md`; keep the two in step. Nothing here
//! does I/O: the writer and reader move whole blocks, and this module turns their decompressed
//! bytes into records and back.
//!
//! Every decoding function is bounded by the input slice: a length or count is checked against
//! the bytes that remain before anything is allocated, so garbage cannot make it allocate more
//! than the (already capped) block size, and it never panics.

use crate::record::{Header, Record, SymFrame};

// Record tags (format 1.0; 1.1 appended `born_ns` to `Preexisting`). Never renumber: add new ones at the end and bump the minor version.
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
/// Highest tag this version knows.
pub(crate) const TAG_MAX_KNOWN: u64 = TAG_EXTRA;

/// A decoding failure inside a buffer: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Byte position in the decoded buffer.
    pub pos: usize,
    pub expected: String,
    pub found: String,
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends `v` as an unsigned LEB128 varint (7 bits per byte, low first, high bit = more).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, v: &Option<T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            put(out, x);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, v: &Option<String>) {
    put_opt(out, v, |o, s| put_str(o, s));
}

/// Encodes the header body (the part after the fixed file prefix).
pub(crate) fn encode_header(h: &Header, out: &mut Vec<u8>) {
    put_str(out, &h.fdtrace_version);
    put_str(out, &h.hostname);
    put_str(out, &h.kernel_release);
    put_varint(out, h.start_unix_ns);
    put_varint(out, h.start_monotonic_ns);
    put_varint(out, h.recorder_cmdline.len() as u64);
    for a in &h.recorder_cmdline {
        put_str(out, a);
    }
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
            put_varint(out, cmdline.len() as u64);
            for a in cmdline {
                put_str(out, a);
            }
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

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over a byte slice; every read is bounds-checked.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn err(
        &self,
        pos: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> DecodeError {
        DecodeError {
            pos,
            expected: expected.into(),
            found: found.into(),
        }
    }

    fn end_err(&self, field: &str, what: &str) -> DecodeError {
        self.err(self.pos, format!("{what} ({field})"), "the end of the data")
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.end_err(field, "a byte"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bool(&mut self, field: &str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(at, format!("0 or 1 ({field})"), format!("{b}"))),
        }
    }

    pub fn varint(&mut self, field: &str) -> Result<u64, DecodeError> {
        let at = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.end_err(field, "a varint"))?;
            self.pos += 1;
            // The 10th byte may only hold the top bit of a u64.
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(
            at,
            format!("a varint of at most 64 bits ({field})"),
            "a longer one",
        ))
    }

    pub fn u16(&mut self, field: &str) -> Result<u16, DecodeError> {
        let at = self.pos;
        let v = self.varint(field)?;
        u16::try_from(v)
            .map_err(|_| self.err(at, format!("a 16-bit value ({field})"), format!("{v}")))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        let at = self.pos;
        let v = self.varint(field)?;
        u32::try_from(v)
            .map_err(|_| self.err(at, format!("a 32-bit value ({field})"), format!("{v}")))
    }

    pub fn i64(&mut self, field: &str) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.varint(field)?))
    }

    pub fn i32(&mut self, field: &str) -> Result<i32, DecodeError> {
        let at = self.pos;
        let v = self.i64(field)?;
        i32::try_from(v)
            .map_err(|_| self.err(at, format!("a 32-bit value ({field})"), format!("{v}")))
    }

    /// A length or count of items that take at least `min_item` bytes each: it must fit in
    /// what remains, which bounds every allocation by the buffer size.
    pub fn len(&mut self, field: &str, min_item: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint(field)?;
        let max = self.remaining() / min_item.max(1);
        if n > max as u64 {
            return Err(self.err(
                at,
                format!("a length of at most {max} ({field}, bounded by the remaining data)"),
                format!("{n}"),
            ));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self, field: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(field, 1)?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    pub fn string(&mut self, field: &str) -> Result<String, DecodeError> {
        let at = self.pos;
        let b = self.bytes(field)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(
                at,
                format!("a UTF-8 string ({field})"),
                format!("invalid UTF-8 at byte {} of it", e.valid_up_to()),
            )),
        }
    }

    pub fn opt<T>(
        &mut self,
        field: &str,
        get: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        Ok(if self.bool(field)? {
            Some(get(self)?)
        } else {
            None
        })
    }

    pub fn strings(&mut self, field: &str) -> Result<Vec<String>, DecodeError> {
        let n = self.len(field, 1)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.string(field)?);
        }
        Ok(v)
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
        let mut d = Dec::new(&self.buf);
        d.pos = self.pos;
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
                format!("a record tag of at most {TAG_MAX_KNOWN} (format 1.1)"),
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
    fn varint_round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= 10);
            let mut d = Dec::new(&out);
            assert_eq!(d.varint("v").unwrap(), v);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn zigzag_round_trips_edges() {
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = [0xff; 11];
        let e = Dec::new(&bytes).varint("x").unwrap_err();
        assert_eq!(e.pos, 0);
        // Ten bytes whose last one holds more than the 64th bit.
        let mut bytes = [0xff; 10];
        bytes[9] = 0x02;
        assert!(Dec::new(&bytes).varint("x").is_err());
    }

    #[test]
    fn huge_length_is_rejected_before_allocating() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX / 2);
        let e = Dec::new(&out).string("s").unwrap_err();
        assert!(e.expected.contains("at most 0"), "{e:?}");
    }

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

    #[test]
    fn u32_overflow_is_an_error() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(u32::MAX) + 1);
        assert!(Dec::new(&out).u32("x").is_err());
    }
}
