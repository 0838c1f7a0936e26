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
        let svma_start = mapping_svma(&obj, m.offset)?;
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
}
