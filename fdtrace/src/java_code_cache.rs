//! HotSpot's compiled code in a traced process: the compiled method (`nmethod`) a return address
//! is in, found as the JVM finds it (the segment map of its code heaps), and the Java methods
//! and bytecode indices of the call there, the JIT's inlined methods included: the debug
//! information the JIT records for every call (a `PcDesc` for the return address, then its
//! chain of scopes in the method's `scopes_data`). Offsets from the JVM's `VMStructs`.
use std::collections::HashMap;

use crate::{
    java_vm::{IntCoding, VmStructs},
    remote_memory::Memory,
};

/// A compiled Java method's blob: "nmethod", "native nmethod" (a native method's wrapper).
fn is_nmethod(name: &str) -> bool {
    name == "nmethod" || name == "native nmethod"
}

/// What a compiled call site runs: (Method*, bytecode index), innermost first; the index is
/// None where the JIT recorded none.
pub type Scopes = Vec<(u64, Option<u32>)>;

struct Layout {
    /// `CodeCache::_heaps`: the address of the static.
    heaps: u64,
    array_len: u64,
    array_data: u64,
    heap_memory: u64,
    heap_segmap: u64,
    heap_log2_segment: u64,
    space_low: u64,
    space_high: u64,
    block_used: u64,
    sizeof_block: u64,
    blob_name: u64,
    code_begin: u64,
    code_end: u64,
    method: u64,
    scopes_data: u64,
    metadata: u64,
    scopes_pcs: u64,
    pcs_end: u64,
    compile_id: u64,
    frame_size: u64,
    sizeof_pc_desc: u64,
    pc_offset: u64,
    pc_scope: u64,
    /// How `scopes_data` writes its ints.
    coding: IntCoding,
}

/// A call site read before: its nmethod (checked by compile id at each use: the code of a
/// method thrown away can be replaced by another's).
struct Known {
    nmethod: u64,
    compile_id: u32,
    /// The frame's size in bytes, return address included.
    frame_bytes: u64,
    scopes: Scopes,
}

pub struct CodeCache {
    l: Layout,
    known: HashMap<u64, Option<Known>>,
    /// The names of the JVM's other code (stubs, adapters) by return address: never freed.
    stubs: HashMap<u64, Option<String>>,
}

impl CodeCache {
    pub(crate) fn of(vm: &VmStructs, coding: IntCoding) -> Option<CodeCache> {
        let f = |k: &str| vm.fields.get(k).copied();
        let t = |k: &str| vm.types.get(k).copied();
        Some(CodeCache {
            l: Layout {
                heaps: f("CodeCache::_heaps")?,
                array_len: f("GrowableArrayBase::_len").unwrap_or(0),
                array_data: f("GrowableArray<int>::_data")?,
                heap_memory: f("CodeHeap::_memory")?,
                heap_segmap: f("CodeHeap::_segmap")?,
                heap_log2_segment: f("CodeHeap::_log2_segment_size")?,
                space_low: f("VirtualSpace::_low")?,
                space_high: f("VirtualSpace::_high")?,
                block_used: f("HeapBlock::Header::_used")?,
                sizeof_block: t("HeapBlock")?,
                blob_name: f("CodeBlob::_name")?,
                code_begin: f("CodeBlob::_code_begin")?,
                code_end: f("CodeBlob::_code_end")?,
                method: f("CompiledMethod::_method")?,
                scopes_data: f("CompiledMethod::_scopes_data_begin")?,
                metadata: f("nmethod::_metadata_offset")?,
                scopes_pcs: f("nmethod::_scopes_pcs_offset")?,
                pcs_end: f("nmethod::_dependencies_offset")?,
                compile_id: f("nmethod::_compile_id")?,
                frame_size: f("CodeBlob::_frame_size")?,
                sizeof_pc_desc: t("PcDesc")?,
                pc_offset: f("PcDesc::_pc_offset")?,
                pc_scope: f("PcDesc::_scope_decode_offset")?,
                coding,
            },
            known: HashMap::new(),
            stubs: HashMap::new(),
        })
    }

    /// The name of the code blob `pc` returns into that is not a compiled method (the call
    /// stub, an adapter: "StubRoutines (1)", "I2C/C2I adapters").
    pub fn stub_name(&mut self, mem: &Memory, pc: u64) -> Option<String> {
        if self.stubs.len() > 10_000 {
            self.stubs.clear();
        }
        let l = &self.l;
        self.stubs
            .entry(pc)
            .or_insert_with(|| {
                let blob = Self::blob_at(l, mem, pc - 1)?;
                let name = mem.c_str(mem.u64(blob + l.blob_name)?, 128)?;
                (!is_nmethod(&name) && !name.is_empty()).then_some(name)
            })
            .clone()
    }

    /// The scopes of the call that returns to `pc` (None: not compiled Java code).
    pub fn scopes(&mut self, mem: &Memory, pc: u64) -> Option<Scopes> {
        self.known(mem, pc).map(|k| k.scopes.clone())
    }

    /// The size in bytes of the frame of compiled Java code that `pc` returns into (its
    /// caller's stack pointer is this much above its own, with the return address just below
    /// and the saved frame pointer below that, as `frame::sender_for_compiled_frame` has it).
    pub fn frame_bytes(&mut self, mem: &Memory, pc: u64) -> Option<u64> {
        self.known(mem, pc)
            .map(|k| k.frame_bytes)
            .filter(|&b| b >= 16)
    }

    fn known(&mut self, mem: &Memory, pc: u64) -> Option<&Known> {
        let fresh = match self.known.get(&pc) {
            None => false,
            Some(None) => true,
            // Once the JVM has exited its code cannot be checked again: what was read while
            // it ran stands (its births are still being processed).
            Some(Some(k)) => match mem.u32(k.nmethod + self.l.compile_id) {
                Some(id) => id == k.compile_id,
                None => mem.gone(),
            },
        };
        if !fresh {
            if self.known.len() > 100_000 {
                self.known.clear();
            }
            let k = self.read(mem, pc);
            self.known.insert(pc, k);
        }
        self.known.get(&pc)?.as_ref()
    }

    fn read(&self, mem: &Memory, pc: u64) -> Option<Known> {
        let l = &self.l;
        // A return address can end its code: the call is the last instruction.
        let nm = Self::blob_at(l, mem, pc - 1)?;
        if !is_nmethod(&mem.c_str(mem.u64(nm + l.blob_name)?, 32)?) {
            return None;
        }
        let begin = mem.u64(nm + l.code_begin)?;
        if !(begin..mem.u64(nm + l.code_end)?).contains(&(pc - 1)) {
            return None;
        }
        let offset = (pc - begin) as u32;
        let frame_bytes = u64::from(mem.u32(nm + l.frame_size)?) * 8;
        let compile_id = mem.u32(nm + l.compile_id)?;
        let pcs = nm + u64::from(mem.u32(nm + l.scopes_pcs)?);
        let end = nm + u64::from(mem.u32(nm + l.pcs_end)?);
        let table = mem.bytes(pcs, end.checked_sub(pcs)?.min(1 << 20) as usize)?;
        let field = |rec: &[u8], at: u64| -> Option<u32> {
            Some(u32::from_le_bytes(
                rec.get(at as usize..at as usize + 4)?.try_into().ok()?,
            ))
        };
        // No debug information for this return address (a native method's wrapper calling its
        // C function): the compiled method alone, without a line.
        let mut scopes = vec![(mem.u64(nm + l.method)?, None)];
        let Some(mut decode) = table
            .chunks_exact(l.sizeof_pc_desc as usize)
            .find(|rec| field(rec, l.pc_offset) == Some(offset))
            .and_then(|rec| field(rec, l.pc_scope))
        else {
            return Some(Known {
                nmethod: nm,
                compile_id,
                frame_bytes,
                scopes,
            });
        };
        let data = mem.u64(nm + l.scopes_data)?;
        let metadata = nm + u64::from(mem.u32(nm + l.metadata)?);
        scopes.clear();
        // `DebugInformationRecorder::serialized_null` (0): the compiled method itself.
        for _ in 0..64 {
            if decode == 0 {
                scopes.push((mem.u64(nm + l.method)?, None));
                break;
            }
            // Three compressed ints: the sender's scope, the method's metadata index, the bci.
            let b = mem.bytes(data + u64::from(decode), 15)?;
            let mut pos = 0;
            let sender = l.coding.read_int(&b, &mut pos)?;
            let index = l.coding.read_int(&b, &mut pos)?;
            // `InvocationEntryBci` (-1) is stored as 0.
            let bci = l.coding.read_int(&b, &mut pos)?.checked_sub(1);
            let method = match index {
                0 => 0,
                i => mem.u64(metadata + (u64::from(i) - 1) * 8)?,
            };
            scopes.push((method, bci));
            if sender == 0 {
                break;
            }
            decode = sender;
        }
        Some(Known {
            nmethod: nm,
            compile_id,
            frame_bytes,
            scopes,
        })
    }

    /// The code blob `pc` is in: its heap's segment map says how many segments back its block
    /// starts (0: here; 0xFF: free), as `CodeHeap::find_start` reads it.
    fn blob_at(l: &Layout, mem: &Memory, pc: u64) -> Option<u64> {
        let heaps = mem.u64(l.heaps)?;
        let count = mem.u32(heaps + l.array_len)?.min(16);
        let data = mem.u64(heaps + l.array_data)?;
        for i in 0..u64::from(count) {
            let heap = mem.u64(data + i * 8)?;
            let low = mem.u64(heap + l.heap_memory + l.space_low)?;
            let high = mem.u64(heap + l.heap_memory + l.space_high)?;
            if !(low..high).contains(&pc) {
                continue;
            }
            let log2 = mem.u32(heap + l.heap_log2_segment)?;
            let map = mem.u64(heap + l.heap_segmap + l.space_low)?;
            let mut seg = (pc - low) >> log2;
            for _ in 0..100_000 {
                match mem.bytes(map + seg, 1)?[0] {
                    0xFF => return None,
                    0 => break,
                    hop => seg = seg.checked_sub(u64::from(hop))?,
                }
            }
            let block = low + (seg << log2);
            if mem.bytes(block + l.block_used, 1)?[0] == 0 {
                return None;
            }
            return Some(block + l.sizeof_block);
        }
        None
    }
}
