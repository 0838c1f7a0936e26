//! Recording a session (`fdtrace record`, `--record`): the changes to each process's
//! descriptor table as the live session makes them, every creating stack once (numbered by
//! what it is, whichever process saw it) with its mappings and, when the recording ends, its
//! symbols, so that the binaries are not needed later. `replay.rs` reads it back.
use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use fdtrace_record::{Header, Record, SymFrame, Writer};

use crate::{
    model::StackId, procinfo::Mapping, sockets::SocketInfo, stacks::StackStore, symbolize::Frame,
    unwind::Method,
};

/// The record describing socket `fd` of `tgid` as it is now.
pub fn sock_record(tgid: u32, fd: i32, ts_ns: u64, s: &SocketInfo) -> Record {
    Record::SockState {
        ts_ns,
        tgid,
        fd,
        state: s.state.unwrap_or(0),
        local: s.local_text(),
        peer: s.peer_text(),
        family: s.family,
        sk_type: s.sk_type,
        protocol: s.protocol,
        accepted: s.accepted,
        since_ns: s.state_since_ns,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What makes two processes' stacks one: method, truncated, return addresses, mappings, JIT
/// names.
type StackContent = (
    Method,
    bool,
    Vec<u64>,
    Vec<crate::procinfo::Mapping>,
    Vec<(u64, crate::runtime::JitName)>,
);

/// Writes a recording while the session runs.
pub struct Recorder {
    writer: Option<Writer<File>>,
    pub path: PathBuf,
    /// (pid, that process's stack id) → the recording's stack id.
    stack_ids: HashMap<(u32, StackId), u32>,
    /// The same, by what a stack is (its frames, how it was unwound, where they lie).
    content_ids: HashMap<StackContent, u32>,
    /// The recording's stack ids, in order: where to find each one's symbols at the end.
    stacks: Vec<(u32, StackId)>,
    /// Mappings already written, and the build ids of the files.
    mappings: std::collections::HashSet<Mapping>,
    build_ids: HashMap<PathBuf, Option<Vec<u8>>>,
    /// The first write error: recording stops there; what was written stays readable.
    pub error: Option<io::Error>,
}

impl Recorder {
    /// Create the file (mode 0600; an existing file is not overwritten).
    pub fn create(path: &Path, target: String) -> Result<Self> {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let header = Header {
            fdtrace_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: hostname(),
            kernel_release: kernel_release(),
            start_unix_ns: now_unix,
            start_monotonic_ns: crate::clock::monotonic_ns(),
            recorder_cmdline: std::env::args().collect(),
            target,
        };
        let writer = Writer::create(path, &header).with_context(|| {
            format!(
                "creating the recording {} (fdtrace does not overwrite a file)",
                path.display()
            )
        })?;
        Ok(Self {
            writer: Some(writer),
            path: path.to_path_buf(),
            stack_ids: HashMap::new(),
            content_ids: HashMap::new(),
            stacks: Vec::new(),
            mappings: Default::default(),
            build_ids: HashMap::new(),
            error: None,
        })
    }

    /// Write one record. After a write error (a full disk, say) nothing more is written.
    pub fn write(&mut self, r: &Record) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        if let Err(e) = w.write(r) {
            self.writer = None;
            self.error = Some(e);
        }
    }

    /// The recording's id of a process's stack, writing the stack on first use.
    pub fn stack_id(&mut self, pid: u32, local: StackId, stacks: &StackStore) -> u32 {
        if let Some(&id) = self.stack_ids.get(&(pid, local)) {
            return id;
        }
        // One id per stack, whichever process saw it: a child interns its births in a copy of
        // its parent's stacks, so a stack seen by both is one call site in the live report,
        // and must be one in the recording too.
        let content = stacks.get(local).map(|s| {
            (
                s.raw.method,
                s.raw.truncated,
                s.raw.frames.iter().map(|f| f.addr).collect::<Vec<u64>>(),
                s.mappings.clone(),
                s.jit.clone(),
            )
        });
        if let Some(&id) = content.as_ref().and_then(|c| self.content_ids.get(c)) {
            self.stack_ids.insert((pid, local), id);
            return id;
        }
        let id = self.stacks.len() as u32;
        self.stack_ids.insert((pid, local), id);
        if let Some(c) = content {
            self.content_ids.insert(c, id);
        }
        self.stacks.push((pid, local));
        let (frames, truncated, method) = stacks
            .get(local)
            .map(|s| {
                (
                    s.raw.frames.iter().map(|f| f.addr).collect(),
                    s.raw.truncated,
                    s.raw.method,
                )
            })
            .unwrap_or((Vec::new(), true, Method::Dwarf));
        // The mappings its frames fall in, so a recording cut before its symbols were written
        // can still be symbolized from the binaries (checked by build id).
        for m in stacks
            .get(local)
            .map(|s| s.mappings.clone())
            .unwrap_or_default()
        {
            if self.mappings.insert(m.clone()) {
                let build_id = match &m.source {
                    Some(source) => self
                        .build_ids
                        .entry(source.clone())
                        .or_insert_with(|| build_id(source))
                        .clone(),
                    None => None,
                };
                self.write(&Record::Mapping {
                    tgid: pid,
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    path: m.path.to_string_lossy().into_owned(),
                    build_id,
                });
            }
        }
        self.write(&Record::Stack {
            id,
            frames,
            truncated,
            method: match method {
                Method::Dwarf => 0,
                Method::Fp => 1,
                Method::Shed => 2,
            },
        });
        id
    }

    /// Every recording stack as (process, that process's stack id), in id order.
    pub fn stacks(&self) -> &[(u32, StackId)] {
        &self.stacks
    }

    /// Write out the buffered records as a complete block.
    pub fn flush(&mut self) {
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.flush()
        {
            self.writer = None;
            self.error = Some(e);
        }
    }

    /// Flush, sync and close the file. Returns the bytes written.
    pub fn finish(&mut self) -> Result<u64> {
        if let Some(mut w) = self.writer.take() {
            let res = w.sync();
            let bytes = w.bytes_written();
            if let Err(e) = res.and_then(|_| w.finish().map(|_| ())) {
                self.error = Some(e);
            } else {
                return Ok(bytes);
            }
        }
        match &self.error {
            Some(e) => anyhow::bail!(
                "writing the recording {} failed ({e}); everything recorded before the failure is readable",
                self.path.display()
            ),
            None => Ok(0),
        }
    }
}

/// The GNU build id of an ELF file.
pub fn build_id(path: &Path) -> Option<Vec<u8>> {
    use object::Object as _;
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.build_id().ok().flatten().map(|b| b.to_vec())
}

/// Symbols of a stack in the recording's form.
pub fn sym_frames(frames: &[Frame]) -> Vec<SymFrame> {
    frames
        .iter()
        .map(|f| SymFrame {
            addr: f.addr,
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
            module: f.module.clone(),
            inlined: f.inlined,
        })
        .collect()
}
