//! Unwinding of the user stacks captured at each descriptor birth.
//!
//! The kernel side copies the user registers and the top of the user stack. Here we walk it with
//! the DWARF call-frame information (`.eh_frame`) of each mapped binary through framehop, which
//! falls back to frame pointers where a binary has no CFI. This finds the caller of `open()` even
//! through glibc and other code built without frame pointers.
use std::{collections::HashMap, path::Path, sync::Arc};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::procinfo::Mapping;

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

/// The unwound stack and whether it ended early (ran out of copied stack or unwind info).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<RawFrame>,
    pub truncated: bool,
}

type Data = Arc<[u8]>;

/// Unwinds stacks of one process; keeps its executable mappings and their unwind tables.
pub struct StackUnwinder {
    unwinder: UnwinderX86_64<ArcSlice>,
    cache: CacheX86_64,
    mappings: Vec<Mapping>,
    files: HashMap<std::path::PathBuf, Option<Data>>,
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
            cache: CacheX86_64::new(),
            mappings: Vec::new(),
            files: HashMap::new(),
        }
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn mapping_for(&self, addr: u64) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.contains(addr))
    }

    /// Replace the known mappings (after exec, or when an address is not covered).
    pub fn set_mappings(&mut self, mappings: Vec<Mapping>) {
        if mappings == self.mappings {
            return;
        }
        for m in &self.mappings {
            self.unwinder.remove_module(m.start);
        }
        self.mappings = mappings;
        for m in self.mappings.clone() {
            if let Some(module) = self.module_for(&m) {
                self.unwinder.add_module(module);
            }
        }
    }

    fn file(&mut self, path: &Path) -> Option<Data> {
        self.files
            .entry(path.to_path_buf())
            .or_insert_with(|| std::fs::read(path).ok().map(Data::from))
            .clone()
    }

    fn module_for(&mut self, m: &Mapping) -> Option<Module<ArcSlice>> {
        let data = self.file(&m.path)?;
        let obj = object::File::parse(&*data).ok()?;
        // The stated address of the mapping's start: find the segment holding its file offset.
        let seg = obj.segments().find(|s| {
            let (off, size) = s.file_range();
            off <= m.offset && m.offset < off + size.max(1)
        })?;
        let svma_start = seg.address() + (m.offset - seg.file_range().0);
        let base_avma = m.start.wrapping_sub(svma_start);
        let section = |name: &str| -> (Option<std::ops::Range<u64>>, Option<ArcSlice>) {
            match obj.section_by_name(name) {
                Some(s) => {
                    let range = s.address()..s.address() + s.size();
                    let bytes = s.file_range().map(|(off, size)| ArcSlice {
                        data: data.clone(),
                        range: off as usize..(off + size) as usize,
                    });
                    (Some(range), bytes.filter(|b| b.range.end <= b.data.len()))
                }
                None => (None, None),
            }
        };
        let (text_svma, text) = section(".text");
        let (eh_frame_svma, eh_frame) = section(".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr");
        let (got_svma, _) = section(".got");
        let (_, debug_frame) = section(".debug_frame");
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
        Some(Module::new(
            m.path.to_string_lossy().into_owned(),
            m.start..m.end,
            base_avma,
            info,
        ))
    }

    /// Unwind a captured stack: registers at the syscall and a copy of the stack from `sp` up.
    pub fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Unwound {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut out = Unwound::default();
        let mut iter = self.unwinder.iter_frames(
            ip,
            UnwindRegsX86_64::new(ip, sp, bp),
            &mut self.cache,
            &mut read_stack,
        );
        loop {
            match iter.next() {
                Ok(Some(frame)) => {
                    let (addr, lookup) = match frame {
                        FrameAddress::InstructionPointer(a) => (a, a),
                        FrameAddress::ReturnAddress(a) => (a.get(), a.get() - 1),
                    };
                    out.frames.push(RawFrame { addr, lookup });
                    if out.frames.len() >= MAX_FRAMES {
                        out.truncated = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    out.truncated = true;
                    break;
                }
            }
        }
        out
    }
}
