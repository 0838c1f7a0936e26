//! Unwinding of the user stacks captured at each descriptor birth.
//!
//! Two methods, chosen per process (`--unwind auto|fp|dwarf`):
//! - `dwarf`: the kernel side copies the user registers and the top of the user stack. Here we
//!   walk it with the DWARF call-frame information (`.eh_frame`, `.debug_frame`) of each mapped
//!   binary through framehop, which falls back to frame pointers where a binary has no CFI. This
//!   finds the caller of `open()` even through glibc and other code built without frame
//!   pointers, as far as the copy reaches.
//! - `fp`: the kernel walks the frame-pointer chain itself (`bpf_get_stack`), as deep as it
//!   goes. Right for Go, which keeps frame pointers, runs its syscalls on goroutine stacks with
//!   large frames and has no `.eh_frame`; wrong for glibc, which does not keep them.
use std::{collections::HashMap, io::Read as _, path::Path, sync::Arc};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};
use serde::Serialize;

use crate::{
    procinfo::Mapping,
    stack_scan::{self, Call, CfiCoverage},
    unwind_memo::{ScanMemo, Walks, stack_word},
};

/// Longest stack we keep.
pub const MAX_FRAMES: usize = 64;

/// One frame of an unwound stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// Absolute address: the instruction pointer for the first frame, return addresses after.
    pub addr: u64,
    /// Address to look up symbols with (return address minus one, so it lands on the call).
    pub lookup: u64,
}

/// How a stack was unwound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// DWARF CFI (framehop) over the copied top of the stack.
    #[default]
    Dwarf,
    /// The kernel's frame-pointer walk.
    Fp,
    /// None: the birth was sent without its stack because fdtrace's ring buffer was half full
    /// (the births of all such stacks share one site, "[stack dropped under load]").
    Shed,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Dwarf => "dwarf",
            Method::Fp => "fp",
            Method::Shed => "shed",
        }
    }
}

/// What a language runtime says of a frame in its JIT code (HotSpot's, read from the JVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeFrame {
    /// Compiled code whose frame is this many bytes, return address included.
    Compiled {
        bytes: u64,
    },
    /// The interpreter: a frame-pointer frame that keeps its caller's stack pointer just below
    /// its frame pointer.
    Interpreted,
    Unknown,
}

/// The unwound stack and whether it ended early (ran out of copied stack or unwind info, or the
/// frame-pointer chain left the program's code).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<RawFrame>,
    pub truncated: bool,
    pub method: Method,
    /// For frames in JIT code, from the stack copy: (frame index, the words a HotSpot
    /// interpreter frame keeps its method and bytecode pointer in, below its frame pointer).
    pub jit_slots: Vec<(usize, u64, u64)>,
}

#[cfg(test)]
impl Unwound {
    /// A whole stack of these return addresses (each looked up one byte before), unwound by
    /// `method`: the stacks of unit tests.
    pub fn of_return_addresses(addrs: &[u64], method: Method) -> Self {
        Unwound {
            frames: addrs
                .iter()
                .map(|&a| RawFrame {
                    addr: a,
                    lookup: a - 1,
                })
                .collect(),
            truncated: false,
            method,
            ..Default::default()
        }
    }
}

/// Does this executable keep frame pointers and lack the CFI a DWARF unwinder needs: a Go
/// binary (`.go.buildinfo`, `.gopclntab` or the Go build-id note)? `--unwind auto` walks the
/// frame pointers of such programs and unwinds the others with DWARF CFI.
pub fn is_go_binary(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let cache = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&cache) else {
        return false;
    };
    [".go.buildinfo", ".gopclntab", ".note.go.buildid"]
        .iter()
        .any(|name| obj.section_by_name(name).is_some())
}

/// Most addresses the kernel's frame-pointer walk returns (`kernel.perf_event_max_stack`, and
/// the room in the event).
fn fp_capacity() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        let sysctl = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(127);
        (fdtrace_common::STACK_BYTES / 8).min(sysctl)
    })
}

/// A file's bytes (or a decompressed section), shared by the modules that use them, and a
/// binary's by every process that maps it (`binary_files`).
type Data = crate::binary_files::Data;

/// A section's bytes as framehop needs them: a view of the file, or decompressed when the
/// section is compressed (Go compresses `.debug_frame` with zlib). None when unreadable.
fn section_bytes(data: &Data, s: &object::Section<'_, '_>) -> Option<ArcSlice> {
    let c = s.compressed_file_range().ok()?;
    let start = usize::try_from(c.offset).ok()?;
    let end = start.checked_add(usize::try_from(c.compressed_size).ok()?)?;
    if end > data.len() {
        return None;
    }
    match c.format {
        object::CompressionFormat::None => Some(ArcSlice {
            data: data.clone(),
            range: start..end,
        }),
        object::CompressionFormat::Zlib => {
            let size = usize::try_from(c.uncompressed_size).ok()?;
            let mut out = Vec::with_capacity(size.min(256 << 20));
            flate2::read::ZlibDecoder::new(&data[start..end])
                .take(size as u64)
                .read_to_end(&mut out)
                .ok()?;
            let len = out.len();
            Some(ArcSlice {
                data: Arc::new(out),
                range: 0..len,
            })
        }
        _ => None,
    }
}

/// The stated virtual address (svma) at which an executable mapping of the file at `offset`
/// starts.
///
/// The kernel maps a segment from its file offset rounded down to a page, so the mapping may
/// start before the segment's own offset: lld (Rust's default linker) lays segments out with
/// `p_offset` not page aligned (e.g. offset 0x13f90 at address 0x14f90, mapped from offset
/// 0x13000 at address 0x14000). The executable segment whose page-aligned range holds the
/// offset is the one; a read-only segment that merely covers the same file bytes is not.
pub fn mapping_svma(obj: &object::File<'_>, offset: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let mut best: Option<(bool, u64, u64)> = None;
    for seg in obj.segments() {
        let (off, size) = seg.file_range();
        let aligned = off & !(PAGE - 1);
        if !(aligned <= offset && offset < off + size.max(1)) {
            continue;
        }
        let exec = match seg.flags() {
            object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
            _ => false,
        };
        // Prefer executable segments, then the one starting closest to the offset.
        let Some(svma) = seg
            .address()
            .checked_add(offset)
            .and_then(|a| a.checked_sub(off))
        else {
            continue;
        };
        if best.is_none_or(|(e, a, _)| (exec, aligned) > (e, a)) {
            best = Some((exec, aligned, svma));
        }
    }
    best.map(|(_, _, svma)| svma)
}

/// Unwinds stacks of one process; keeps its executable mappings and their unwind tables.
pub struct StackUnwinder {
    unwinder: UnwinderX86_64<ArcSlice>,
    /// framehop's cache of unwind rules (25 KB), made at the first walk: a process that never
    /// has a birth to unwind (a shell's child that execs at once) or has exited needs none.
    cache: Option<Box<CacheX86_64>>,
    mappings: Vec<Mapping>,
    files: HashMap<std::path::PathBuf, Option<Data>>,
    /// What each mapping's binary describes in `.eh_frame`, by mapping start.
    cfi: HashMap<u64, CfiCoverage>,
    /// `needs_scan`'s answers by address (direct-mapped; emptied with the mappings): the same
    /// return addresses come back in every stack of a call site, and the two searches behind an
    /// answer were the user side's most costly step.
    scan_memo: ScanMemo,
    /// The last walk from each (ip, sp), with the words it read (see `unwind`); emptied with
    /// the mappings and when the JIT code moves.
    pub(crate) walks: Walks,
    /// Anonymous executable memory: code a runtime compiled (JIT), sorted (start, end).
    jit: Vec<(u64, u64)>,
}

/// A cheap clonable view of a file's bytes, as framehop wants `Deref<Target=[u8]>`.
#[derive(Clone, Default)]
pub struct ArcSlice {
    data: Data,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for ArcSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }
}

impl Default for StackUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl StackUnwinder {
    pub fn new() -> Self {
        Self {
            unwinder: UnwinderX86_64::new(),
            cache: None,
            mappings: Vec::new(),
            files: HashMap::new(),
            cfi: HashMap::new(),
            scan_memo: ScanMemo::default(),
            walks: Default::default(),
            jit: Vec::new(),
        }
    }

    /// The process exited: nothing is left to unwind. Everything is dropped (the binaries'
    /// bytes, their call-frame tables, the caches and kept walks; the mappings, which a stack
    /// took with it when it was interned), so that a session following many short-lived
    /// processes keeps only what its report needs of each. Should a birth come after all (the
    /// leader thread exited before the others), its address is in no mapping and the mappings
    /// are read again.
    pub fn release(&mut self) {
        *self = Self::new();
    }

    /// Holds some binary's bytes that `other` holds too (the same copy).
    #[cfg(test)]
    pub(crate) fn shares_a_binary_with(&self, other: &StackUnwinder) -> bool {
        self.files.iter().any(|(p, d)| {
            matches!((d, other.files.get(p)), (Some(a), Some(Some(b))) if Arc::ptr_eq(a, b))
        })
    }

    /// Holds no binary, table, cache or memo (as `release` leaves it).
    #[cfg(test)]
    pub(crate) fn holds_nothing(&self) -> bool {
        self.files.is_empty()
            && self.cfi.is_empty()
            && self.cache.is_none()
            && !self.scan_memo.holds_slots()
            && self.walks.is_empty()
            && self.jit.is_empty()
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn mapping_for(&self, addr: u64) -> Option<&Mapping> {
        // Sorted by start and disjoint (see `set_mappings`): a search, not a scan, several
        // times per frame of every stack (a JVM maps thousands of files).
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| m.contains(addr))
    }

    /// Replace the known mappings (after exec, or when an address is not covered).
    /// The anonymous executable ranges of the process (its JIT-compiled code).
    pub fn set_jit(&mut self, mut ranges: Vec<(u64, u64)>) {
        ranges.sort_unstable();
        if ranges != self.jit {
            // A kept walk may have taken a return address for one into a file's code.
            self.walks.clear();
        }
        self.jit = ranges;
    }

    /// Is `addr` in JIT-compiled code?
    pub fn is_jit(&self, addr: u64) -> bool {
        let i = self.jit.partition_point(|r| r.0 <= addr);
        i > 0 && addr < self.jit[i - 1].1
    }

    pub fn set_mappings(&mut self, mut mappings: Vec<Mapping>) {
        // /proc/PID/maps lists them in address order already.
        mappings.sort_by_key(|m| m.start);
        if mappings == self.mappings {
            return;
        }
        for m in &self.mappings {
            self.unwinder.remove_module(m.start);
        }
        self.mappings = mappings;
        self.cfi.clear();
        self.scan_memo.clear();
        self.walks.clear();
        for m in self.mappings.clone() {
            if let Some((module, cfi)) = self.module_for(&m) {
                self.unwinder.add_module(module);
                self.cfi.insert(m.start, cfi);
            }
        }
        // Files no longer mapped (a library unloaded, the program before an exec) are dropped.
        let mapped: std::collections::HashSet<&Path> = self
            .mappings
            .iter()
            .filter_map(|m| m.source.as_deref())
            .collect();
        self.files.retain(|p, _| mapped.contains(p.as_path()));
    }

    fn file(&mut self, path: &Path) -> Option<Data> {
        self.files
            .entry(path.to_path_buf())
            .or_insert_with(|| crate::binary_files::read(path))
            .clone()
    }

    fn module_for(&mut self, m: &Mapping) -> Option<(Module<ArcSlice>, CfiCoverage)> {
        let data = self.file(m.source.as_deref()?)?;
        let obj = object::File::parse(data.as_slice()).ok()?;
        let svma_start = mapping_svma(&obj, m.offset)?;
        let base_avma = m.start.wrapping_sub(svma_start);
        let section = |name: &str| -> (Option<std::ops::Range<u64>>, Option<ArcSlice>) {
            match obj.section_by_name(name) {
                Some(s) => {
                    let range = s.address()..s.address() + s.size();
                    (Some(range), section_bytes(&data, &s))
                }
                None => (None, None),
            }
        };
        let (text_svma, text) = section(".text");
        let (eh_frame_svma, eh_frame) = section(".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr");
        let (got_svma, _) = section(".got");
        let (_, debug_frame) = section(".debug_frame");
        let cfi = match (&eh_frame, &eh_frame_svma) {
            (Some(bytes), Some(at)) => CfiCoverage::from_eh_frame(
                bytes,
                at.start,
                text_svma.as_ref().map(|t| t.start),
                base_avma,
            ),
            _ => CfiCoverage::default(),
        }
        .with_functions(&obj, base_avma);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            got_svma,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            debug_frame,
            ..Default::default()
        };
        Some((
            Module::new(
                m.path.to_string_lossy().into_owned(),
                m.start..m.end,
                base_avma,
                info,
            ),
            cfi,
        ))
    }

    /// Is `addr` in code that its binary leaves without call-frame information while it
    /// describes other code (musl's C library)? Its frame pointer cannot be trusted either.
    fn needs_scan(&self, addr: u64) -> bool {
        self.scan_memo.get_or(addr, || {
            self.mapping_for(addr)
                .and_then(|m| self.cfi.get(&m.start))
                .is_some_and(|c| c.any() && !c.covers(addr))
        })
    }

    /// The `len` bytes of mapped code that end at `end`, from the mapping's file.
    fn code_before(&self, end: u64, len: u64) -> Option<&[u8]> {
        let m = self.mapping_for(end.checked_sub(1)?)?;
        let Some(Some(data)) = m.source.as_ref().and_then(|p| self.files.get(p)) else {
            return None;
        };
        let off = (end - m.start).checked_add(m.offset)?;
        // Not before the mapping's first byte.
        let from = off.saturating_sub(len).max(m.offset);
        data.get(from as usize..off as usize)
    }

    /// Does `addr` point just after a call instruction in mapped code?
    fn after_call(&self, addr: u64) -> bool {
        self.code_before(addr, 7)
            .and_then(stack_scan::call_before)
            .is_some()
    }

    /// Could `addr` be the return address of the frame whose code is at `pc`? It must point just
    /// after a call instruction in mapped code; a direct call within `pc`'s binary must call
    /// the function `pc` is in: code at or before `pc` and not before the named function that
    /// holds `pc` (hidden functions have no name), or a jump to it (a tail-calling stub such as
    /// musl's `__syscall_cp`). A stale return address of an earlier call, left in the frame,
    /// rarely does.
    fn is_return_address(&self, addr: u64, pc: u64) -> bool {
        if self.mapping_for(addr).is_none() {
            return false;
        }
        match self.code_before(addr, 7).and_then(stack_scan::call_before) {
            None => false,
            Some(Call::Indirect) => true,
            Some(Call::Direct(rel)) => {
                let target = addr.wrapping_add_signed(rel.into());
                let module = |a: u64| self.mapping_for(a).map(|m| m.start);
                let Some(m) = module(pc) else {
                    return true;
                };
                if module(target) != Some(m) {
                    return true;
                }
                let holder = self.cfi.get(&m).and_then(|c| c.function_at(pc));
                let calls_pc = |t: u64| t <= pc && holder.is_none_or(|f| t >= f);
                calls_pc(target)
                    || self
                        .code_before(target + 5, 5)
                        .and_then(|stub| stack_scan::jump_target(stub, target))
                        .is_some_and(calls_pc)
            }
        }
    }

    /// The stack from the kernel's frame-pointer walk: the instruction pointer, then return
    /// addresses. The walk ends where the chain leaves the mapped code (garbage or the end of
    /// the chain), or at the capacity of the walk; the stack is marked truncated then, unless the
    /// chain ended cleanly (the kernel stopped at a null frame pointer after a mapped address).
    pub fn unwind_fp(&self, ips: &[u64]) -> Unwound {
        let mut out = Unwound {
            method: Method::Fp,
            ..Default::default()
        };
        for (i, &a) in ips.iter().enumerate() {
            if a == 0 || self.mapping_for(a).is_none() {
                // The chain left the program's code: what follows is not a stack.
                out.truncated = true;
                break;
            }
            let lookup = if i == 0 { a } else { a - 1 };
            out.frames.push(RawFrame { addr: a, lookup });
            if out.frames.len() >= MAX_FRAMES {
                out.truncated = i + 1 < ips.len();
                break;
            }
        }
        if ips.len() >= fp_capacity() {
            out.truncated = true;
        }
        out
    }

    /// One frame-pointer step for a process with JIT code: the return address at `bp + 8` when
    /// it is JIT code, or code without CFI that is a return address for `pc`. Moves `regs`.
    fn jit_frame_pointer_step(
        &self,
        regs: &mut UnwindRegsX86_64,
        pc: u64,
        read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
    ) -> Option<u64> {
        if self.jit.is_empty() {
            return None;
        }
        let bp = regs.bp();
        if bp < regs.sp() || !bp.is_multiple_of(8) {
            return None;
        }
        let ra = read_stack(bp.checked_add(8)?).ok()?;
        let caller_bp = read_stack(bp).ok()?;
        // Into code without CFI (V8's builtins and its interpreter, which keep frame pointers
        // however they call each other, often through registers or stubs): a return address
        // for `pc`, or any address after a call when the chain goes up the stack.
        let plausible = self.is_jit(ra)
            || (ra > 0
                && self.needs_scan(ra - 1)
                && (self.is_return_address(ra, pc) || (caller_bp > bp && self.after_call(ra))));
        if !plausible {
            return None;
        }
        regs.set_sp(bp + 16);
        regs.set_bp(caller_bp);
        regs.set_ip(ra);
        Some(ra)
    }

    /// One step out of a frame of JIT code, as the runtime that made it says (HotSpot's own
    /// walk: compiled frames by their size, whatever their code did with the frame-pointer
    /// register; interpreter frames by their frame pointer). Moves `regs`.
    fn runtime_step(
        &self,
        kind: RuntimeFrame,
        regs: &mut UnwindRegsX86_64,
        read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
    ) -> Option<u64> {
        let (sp, ra, bp) = match kind {
            RuntimeFrame::Compiled { bytes } => {
                let sp = regs.sp().checked_add(bytes)?;
                (sp, read_stack(sp - 8).ok()?, read_stack(sp - 16).ok()?)
            }
            RuntimeFrame::Interpreted => {
                let fp = regs.bp();
                if fp < regs.sp() || !fp.is_multiple_of(8) {
                    return None;
                }
                // The caller's stack pointer before the interpreter extended it (the one a
                // compiled caller's frame size counts from).
                let sender_sp = read_stack(fp - 8).ok()?;
                if sender_sp <= fp {
                    return None;
                }
                (sender_sp, read_stack(fp + 8).ok()?, read_stack(fp).ok()?)
            }
            RuntimeFrame::Unknown => return None,
        };
        if ra == 0 || !(self.is_jit(ra) || self.mapping_for(ra).is_some()) {
            return None;
        }
        regs.set_sp(sp);
        regs.set_bp(bp);
        regs.set_ip(ra);
        Some(ra)
    }

    /// The number of the walk `unwind` would give again for these registers and this copy of
    /// the stack (the same walk as before: same registers, the same words where it depends on
    /// them, same mappings), if it keeps one. A caller may keep what it made of that walk under
    /// this number: a number is never given to a walk that found other frames, and the walk is
    /// dropped when the mappings or JIT code change.
    pub fn kept_walk(&self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Option<u64> {
        self.walks.get(ip, sp, bp, stack).map(|m| m.serial)
    }

    /// Unwind a captured stack: registers at the syscall and a copy of the stack from `sp` up.
    /// `runtime` says what a return address into JIT code returns into.
    ///
    /// A walk is a function of the registers, the stack words it reads and the mappings: the
    /// same call site in the same thread gives the same registers and, where it reads, the same
    /// words, so the last walk from these registers is kept with the words it read, and given
    /// again when the copy holds the same words there, but for saved frame pointers shown not
    /// to matter (`Walks`; walks through JIT code, whose runtime's answers are not the stack's,
    /// are not kept).
    pub fn unwind(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        runtime: &mut dyn FnMut(u64) -> RuntimeFrame,
    ) -> Unwound {
        let kept = self
            .walks
            .get(ip, sp, bp, stack)
            .map(|m| (m.unwound.clone(), m.stack_bytes));
        let (out, stack_bytes, kept) = match kept {
            Some((out, stack_bytes)) => (out, stack_bytes, true),
            None => {
                let mut reads = Vec::new();
                let (out, stack_bytes) = self.walk(ip, sp, bp, stack, runtime, &mut reads);
                if !out.frames.iter().any(|f| self.is_jit(f.lookup)) {
                    let searched = out.frames.iter().any(|f| self.needs_scan(f.lookup));
                    let (regs, unwound) = ((ip, sp, bp), out.clone());
                    self.walks.keep(regs, reads, unwound, stack_bytes, searched);
                }
                (out, stack_bytes, false)
            }
        };
        tracing::trace!(
            frames = out.frames.len(),
            stack_bytes,
            copied = stack.len(),
            truncated = out.truncated,
            kept,
            "unwound"
        );
        out
    }

    /// The walk itself, noting each word of the copy it reads (or fails to) in `reads`; with
    /// how much stack its frames took (what a copy must hold).
    fn walk(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        runtime: &mut dyn FnMut(u64) -> RuntimeFrame,
        reads: &mut Vec<(u64, Option<u64>)>,
    ) -> (Unwound, u64) {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let w = stack_word(stack, sp, addr);
            reads.push((addr, w));
            w.ok_or(())
        };
        let mut out = Unwound {
            method: Method::Dwarf,
            ..Default::default()
        };
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frame = FrameAddress::InstructionPointer(ip);
        loop {
            let (addr, lookup) = match frame {
                FrameAddress::InstructionPointer(a) => (a, a),
                FrameAddress::ReturnAddress(a) => (a.get(), a.get() - 1),
            };
            out.frames.push(RawFrame { addr, lookup });
            if out.frames.len() >= MAX_FRAMES {
                out.truncated = true;
                break;
            }
            if self.is_jit(lookup) {
                // What an interpreter frame keeps below its frame pointer, if this is one.
                let mut slot = |below: u64| {
                    regs.bp()
                        .checked_sub(below)
                        .and_then(|a| read_stack(a).ok())
                };
                if let (Some(method), Some(bcp)) = (
                    slot(crate::java_vm::METHOD_SLOT),
                    slot(crate::java_vm::BCP_SLOT),
                ) {
                    out.jit_slots.push((out.frames.len() - 1, method, bcp));
                }
            }
            let step = match frame {
                FrameAddress::ReturnAddress(_) if self.is_jit(lookup) => {
                    self.runtime_step(runtime(addr), &mut regs, &mut read_stack)
                }
                _ => None,
            };
            let next = if let Some(ra) = step {
                Ok(Some(ra))
            } else if self.needs_scan(lookup) {
                // A runtime's code without CFI (V8's builtins inside `node`) keeps frame
                // pointers: follow them when they lead into JIT code or to such code again,
                // which a scan for return addresses into mapped files would skip.
                if let Some(f) = self
                    .jit_frame_pointer_step(&mut regs, lookup, &mut read_stack)
                    .and_then(FrameAddress::from_return_address)
                {
                    frame = f;
                    continue;
                }
                stack_scan::find_return_address(regs.sp(), &mut read_stack, |a| {
                    self.is_return_address(a, lookup)
                })
                .map(|(slot, ra)| {
                    // The caller's stack pointer is just above its return address; its frame
                    // pointer is assumed unchanged (code without frame pointers keeps it).
                    regs.set_sp(slot + 8);
                    regs.set_ip(ra);
                    Some(ra)
                })
                .ok_or(())
            } else {
                let cache = self
                    .cache
                    .get_or_insert_with(|| Box::new(CacheX86_64::new()));
                self.unwinder
                    .unwind_frame(frame, &mut regs, cache, &mut read_stack)
                    .map_err(|_| ())
            };
            match next.map(|ra| ra.map(FrameAddress::from_return_address)) {
                Ok(Some(Some(f))) => frame = f,
                Ok(None) => break,
                // A null return address, or no rule to go on with.
                Ok(Some(None)) | Err(()) => {
                    out.truncated = true;
                    break;
                }
            }
        }
        // How much stack the frames took: what a copy must hold (`-vvv`).
        (out, regs.sp().saturating_sub(sp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[unsafe(no_mangle)]
    #[inline(never)]
    extern "C" fn fdtrace_unwind_svma_probe() -> u64 {
        std::hint::black_box(42)
    }

    /// The test binary is linked like Rust programs are (lld: the executable segment's file
    /// offset is not page aligned): the address of a function in its mapping must map back to
    /// the function's stated address.
    #[test]
    fn svma_of_an_executable_mapping() {
        let addr = fdtrace_unwind_svma_probe as *const () as u64;
        let maps = crate::procinfo::exec_mappings(std::process::id());
        let m = maps.iter().find(|m| m.contains(addr)).expect("own mapping");
        let data = std::fs::read(&m.path).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        use object::ObjectSymbol as _;
        let sym = obj
            .symbols()
            .find(|s| s.name() == Ok("fdtrace_unwind_svma_probe"))
            .expect("symbol");
        let svma_start = mapping_svma(&obj, m.offset).unwrap();
        assert_eq!(addr - m.start + svma_start, sym.address());
    }

    #[test]
    fn the_mapping_of_an_address_is_found_in_any_order_given() {
        let map = |start: u64, end: u64| crate::procinfo::Mapping {
            start,
            end,
            offset: 0,
            path: format!("/nonexistent/{start:x}").into(),
            source: None,
        };
        let mut u = StackUnwinder::new();
        // Out of order on purpose; gaps between them.
        u.set_mappings(vec![
            map(0x7000, 0x8000),
            map(0x1000, 0x2000),
            map(0x3000, 0x5000),
        ]);
        let start_of = |a: u64| u.mapping_for(a).map(|m| m.start);
        assert_eq!(start_of(0xfff), None);
        assert_eq!(start_of(0x1000), Some(0x1000));
        assert_eq!(start_of(0x1fff), Some(0x1000));
        assert_eq!(start_of(0x2000), None);
        assert_eq!(start_of(0x4abc), Some(0x3000));
        assert_eq!(start_of(0x5000), None);
        assert_eq!(start_of(0x7fff), Some(0x7000));
        assert_eq!(start_of(0x8000), None);
        assert_eq!(start_of(u64::MAX), None);
    }

    #[test]
    fn frame_pointer_walks_end_where_the_code_ends() {
        let mut u = StackUnwinder::new();
        u.mappings = vec![crate::procinfo::Mapping {
            start: 0x400000,
            end: 0x500000,
            offset: 0,
            path: "/nonexistent".into(),
            source: None,
        }];
        let w = u.unwind_fp(&[0x401000, 0x402000, 0x403000]);
        assert_eq!(w.method, Method::Fp);
        assert!(!w.truncated);
        assert_eq!(
            w.frames,
            vec![
                RawFrame {
                    addr: 0x401000,
                    lookup: 0x401000
                },
                RawFrame {
                    addr: 0x402000,
                    lookup: 0x401fff
                },
                RawFrame {
                    addr: 0x403000,
                    lookup: 0x402fff
                },
            ]
        );
        // The chain wandered off into data: cut there and say so.
        let w = u.unwind_fp(&[0x401000, 0x402000, 0x7, 0x403000]);
        assert_eq!(w.frames.len(), 2);
        assert!(w.truncated);
        // A walk as long as the kernel allows may have been cut.
        let full = vec![0x401000; fp_capacity()];
        assert!(u.unwind_fp(&full).truncated);
    }

    #[test]
    fn go_binaries_are_recognized() {
        // This test binary is Rust; a missing file is nothing.
        assert!(!is_go_binary(&std::env::current_exe().unwrap()));
        assert!(!is_go_binary(Path::new("/nonexistent")));
    }
}
