//! HotSpot in a traced process: names the frames its interpreter runs. The JVM describes its
//! own data structures for the serviceability agent (`gHotSpotVMStructs`, `gHotSpotVMTypes`,
//! `gHotSpotVMIntConstants`, exported by `libjvm.so`): from them, fdtrace reads the method an
//! interpreter frame runs (`Method*` at fp-24) and where in it (the bytecode pointer at fp-64,
//! x86-64's fixed interpreter frame) out of `/proc/PID/mem`: the class, the method, the source
//! file and the line of the bytecode (the method's compressed line-number table).
use std::collections::HashMap;
use std::path::Path;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

use crate::java_code_cache::CodeCache;
use crate::remote_memory::Memory;

/// Where an interpreter frame keeps its method and its bytecode pointer, below its frame
/// pointer (`frame::interpreter_frame_method_offset` = -3 and `…_bcp_offset` = -8 words on
/// x86-64, JDK 8 to 21).
pub const METHOD_SLOT: u64 = 24;
pub const BCP_SLOT: u64 = 64;

/// What one interpreter frame is running.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JavaFrame {
    /// `package.Class.method`.
    pub function: String,
    /// The class's source file as compiled in (`Leak.java`).
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Offsets and sizes the JVM gives for the structures read.
#[derive(Clone, Debug)]
struct Layout {
    method_const: u64,
    const_constants: u64,
    const_size_words: u64,
    const_flags: u64,
    /// Is `ConstMethod::_flags` 4 bytes (JDK 21) rather than 2?
    const_flags_wide: bool,
    has_line_table: u32,
    const_code_size: u64,
    const_name_index: u64,
    sizeof_const: u64,
    cp_holder: u64,
    cp_source_file: Option<u64>,
    sizeof_cp: u64,
    klass_name: u64,
    klass_methods: u64,
    array_data: u64,
    symbol_length: u64,
    symbol_body: u64,
    /// How line-number tables write their ints.
    coding: IntCoding,
}

/// One method, as read once.
struct Method {
    class_and_name: String,
    file: Option<String>,
    code_base: u64,
    code_size: u64,
    /// (bytecode index, line), in table order.
    lines: Vec<(u32, u32)>,
}

/// The JVM of one process.
pub struct JavaVm {
    mem: Memory,
    layout: Layout,
    /// The interpreter's code: frames whose pc is here are interpreter frames.
    interpreter: (u64, u64),
    methods: HashMap<u64, Option<std::rc::Rc<Method>>>,
    /// The JIT's code: what compiled frames run, and what they inlined.
    code: Option<CodeCache>,
}

/// The JVM's self-description: fields by "Type::field" (offset, or address when static),
/// type sizes, integer constants.
#[derive(Default)]
pub(crate) struct VmStructs {
    pub fields: HashMap<String, u64>,
    pub types: HashMap<String, u64>,
    pub ints: HashMap<String, i64>,
}

impl JavaVm {
    /// The JVM in process `pid`, if `libjvm.so` is mapped and describes itself.
    pub fn find(pid: u32) -> Option<JavaVm> {
        let maps = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.maps())
            .ok()?;
        let m = maps.iter().find(|m| {
            matches!(&m.pathname, procfs::process::MMapPath::Path(p)
                if p.file_name().is_some_and(|n| n == "libjvm.so"))
        })?;
        let procfs::process::MMapPath::Path(path) = &m.pathname else {
            return None;
        };
        let host = crate::binaries::source_of(pid, m)?;
        let (symbols, base) = exported(&host)?;
        let bias = crate::binaries::first_page(&maps, path)?.wrapping_sub(base);
        let mem = Memory::of(pid)?;
        let vm = VmStructs::read(&mem, |name| symbols.get(name).map(|a| a + bias))?;
        // The JVM's major version (a static int); JDK 21 is also the first whose ConstMethod
        // keeps its flags in a struct of their own.
        let major = vm
            .fields
            .get("Abstract_VM_Version::_vm_major_version")
            .and_then(|&a| mem.u32(a))
            .unwrap_or(if vm.fields.contains_key("ConstMethod::_flags._flags") {
                21
            } else {
                17
            });
        let coding = IntCoding::of_version(major);
        let layout = vm.layout(coding)?;
        let queue = mem.u64(*vm.fields.get("AbstractInterpreter::_code")?)?;
        let start = mem.u64(queue + vm.fields.get("StubQueue::_stub_buffer")?)?;
        let len = mem.u32(queue + vm.fields.get("StubQueue::_buffer_limit")?)?;
        Some(JavaVm {
            code: CodeCache::of(&vm, coding),
            mem,
            layout,
            interpreter: (start, start + u64::from(len)),
            methods: HashMap::new(),
        })
    }

    /// The Java frames of compiled code at return address `pc`, innermost first (the methods
    /// the JIT inlined there, then the one it compiled), each at the line of its call; None
    /// when `pc` is in no compiled method.
    pub fn compiled(&mut self, pc: u64) -> Option<Vec<JavaFrame>> {
        let scopes = self.code.as_mut()?.scopes(&self.mem, pc)?;
        scopes
            .iter()
            .map(|&(method, bci)| {
                let m = self.method_info(method)?;
                Some(frame_at(&m, bci))
            })
            .collect()
    }

    /// The frame size of the compiled Java code `pc` returns into (see
    /// [`CodeCache::frame_bytes`]).
    pub fn compiled_frame_bytes(&mut self, pc: u64) -> Option<u64> {
        self.code.as_mut()?.frame_bytes(&self.mem, pc)
    }

    /// The name of the JVM's other code `pc` returns into (see [`CodeCache::stub_name`]).
    pub fn stub_name(&mut self, pc: u64) -> Option<String> {
        self.code.as_mut()?.stub_name(&self.mem, pc)
    }

    /// Is `pc` in the interpreter's code?
    pub fn is_interpreter(&self, pc: u64) -> bool {
        (self.interpreter.0..self.interpreter.1).contains(&pc)
    }

    /// The method of an interpreter frame and the line of its bytecode pointer (`bcp`; 0 in
    /// a native method's frame): None when `method` is not a method of its class (not an
    /// interpreter frame after all, or the class was unloaded).
    pub fn frame(&mut self, method: u64, bcp: u64) -> Option<JavaFrame> {
        let m = self.method_info(method)?;
        let bci = bcp
            .checked_sub(m.code_base)
            .filter(|&b| b < m.code_size)
            .map(|b| b as u32);
        Some(frame_at(&m, bci))
    }

    /// A method, read once.
    fn method_info(&mut self, method: u64) -> Option<std::rc::Rc<Method>> {
        if self.methods.len() > 100_000 {
            self.methods.clear();
        }
        match self.methods.get(&method) {
            Some(m) => m.clone(),
            None => {
                let m = self.method(method).map(std::rc::Rc::new);
                self.methods.insert(method, m.clone());
                m
            }
        }
    }

    fn method(&self, method: u64) -> Option<Method> {
        let l = &self.layout;
        let mem = &self.mem;
        if method == 0 || !method.is_multiple_of(8) {
            return None;
        }
        let cm = mem.u64(method + l.method_const)?;
        let cp = mem.u64(cm + l.const_constants)?;
        let holder = mem.u64(cp + l.cp_holder)?;
        // The method must be one of its class's methods: anything else read at fp-24 is not.
        let methods = mem.u64(holder + l.klass_methods)?;
        let count = mem.u32(methods)?.min(65_535) as usize;
        let list = mem.bytes(methods + l.array_data, count * 8)?;
        if !list
            .chunks_exact(8)
            .any(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) == method)
        {
            return None;
        }
        let symbol = |index: u16| -> Option<String> {
            let sym = mem.u64(cp + l.sizeof_cp + u64::from(index) * 8)?;
            self.symbol(sym)
        };
        let class = self.symbol(mem.u64(holder + l.klass_name)?)?;
        let name = symbol(mem.u16(cm + l.const_name_index)?)?;
        let file = l
            .cp_source_file
            .and_then(|o| mem.u16(cp + o))
            .filter(|&i| i != 0)
            .and_then(symbol);
        let code_size = u64::from(mem.u16(cm + l.const_code_size)?);
        let code_base = cm + l.sizeof_const;
        let flags = if l.const_flags_wide {
            mem.u32(cm + l.const_flags)?
        } else {
            u32::from(mem.u16(cm + l.const_flags)?)
        };
        let lines = if flags & l.has_line_table != 0 {
            // The table follows the bytecodes, within the method's words.
            let size = mem.u32(cm + l.const_size_words)? as u64 * 8;
            let table = (code_base + code_size)..(cm + size.min(1 << 20));
            mem.bytes(
                table.start,
                (table.end.saturating_sub(table.start)) as usize,
            )
            .map(|b| line_table(&b, l.coding))
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        Some(Method {
            class_and_name: format!("{}.{name}", class.replace('/', ".")),
            file,
            code_base,
            code_size,
            lines,
        })
    }

    fn symbol(&self, sym: u64) -> Option<String> {
        let len = self.mem.u16(sym + self.layout.symbol_length)?;
        let bytes = self
            .mem
            .bytes(sym + self.layout.symbol_body, usize::from(len))?;
        String::from_utf8(bytes).ok()
    }
}

/// A method's frame at bytecode `bci` (None: no bytecode, a native method).
fn frame_at(m: &Method, bci: Option<u32>) -> JavaFrame {
    JavaFrame {
        function: m.class_and_name.clone(),
        file: m.file.clone(),
        line: bci.and_then(|b| line_of(&m.lines, b)),
    }
}

/// The `gHotSpot…` symbols of `libjvm.so` (file addresses) and the lowest address its segments
/// ask for.
fn exported(file: &Path) -> Option<(HashMap<String, u64>, u64)> {
    let data = std::fs::read(file).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let base = elf.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let symbols: HashMap<String, u64> = elf
        .dynamic_symbols()
        .filter_map(|s| {
            let name = s.name().ok()?;
            name.starts_with("gHotSpot")
                .then(|| (name.to_string(), s.address()))
        })
        .collect();
    (!symbols.is_empty()).then_some((symbols, base))
}

impl VmStructs {
    /// Read the three tables (`symbol`: the address of an exported `gHotSpot…` variable).
    fn read(mem: &Memory, symbol: impl Fn(&str) -> Option<u64>) -> Option<VmStructs> {
        let var = |name: &str| mem.u64(symbol(name)?);
        // Each table: its start and stride, and where each entry names itself; it ends at an
        // entry with a null name. Calls `each` with the entry's address and name.
        let walk = |table: &str, entry: &str, name: &str, each: &mut dyn FnMut(u64, String)| {
            let start = var(&format!("gHotSpot{table}"))?;
            let stride = var(&format!("gHotSpot{entry}EntryArrayStride"))?;
            let name_at = var(&format!("gHotSpot{entry}Entry{name}Offset"))?;
            for i in 0..20_000 {
                let e = start + i * stride;
                match mem.u64(e + name_at)? {
                    0 => break,
                    n => each(e, mem.c_str(n, 256)?),
                }
            }
            Some(())
        };
        let mut out = VmStructs::default();
        // Fields: typeName, fieldName, isStatic, offset, address.
        let field_name = var("gHotSpotVMStructEntryFieldNameOffset")?;
        let is_static = var("gHotSpotVMStructEntryIsStaticOffset")?;
        let offset = var("gHotSpotVMStructEntryOffsetOffset")?;
        let address = var("gHotSpotVMStructEntryAddressOffset")?;
        walk("VMStructs", "VMStruct", "TypeName", &mut |e, t| {
            let f = mem.u64(e + field_name).and_then(|f| mem.c_str(f, 256));
            let value = match mem.u32(e + is_static) {
                Some(0) => mem.u64(e + offset),
                _ => mem.u64(e + address),
            };
            if let (Some(f), Some(v)) = (f, value) {
                out.fields.insert(format!("{t}::{f}"), v);
            }
        })?;
        // Types: typeName, size.
        let size = var("gHotSpotVMTypeEntrySizeOffset")?;
        walk("VMTypes", "VMType", "TypeName", &mut |e, t| {
            if let Some(v) = mem.u64(e + size) {
                out.types.insert(t, v);
            }
        })?;
        // Integer constants: name, value (an int).
        let value = var("gHotSpotVMIntConstantEntryValueOffset")?;
        walk("VMIntConstants", "VMIntConstant", "Name", &mut |e, n| {
            if let Some(v) = mem.u32(e + value) {
                out.ints.insert(n, i64::from(v as i32));
            }
        })?;
        Some(out)
    }

    fn layout(&self, coding: IntCoding) -> Option<Layout> {
        let f = |k: &str| self.fields.get(k).copied();
        // JDK 21 keeps ConstMethod's flags in a struct of their own.
        let (const_flags, const_flags_wide) = match f("ConstMethod::_flags._flags") {
            Some(o) => (o, true),
            None => (f("ConstMethod::_flags")?, false),
        };
        let has_line_table = [
            "ConstMethod::_has_linenumber_table",
            "ConstMethodFlags::_misc_has_linenumber_table",
        ]
        .iter()
        .find_map(|k| self.ints.get(*k))
        .copied()? as u32;
        Some(Layout {
            method_const: f("Method::_constMethod")?,
            const_constants: f("ConstMethod::_constants")?,
            const_size_words: f("ConstMethod::_constMethod_size")?,
            const_flags,
            const_flags_wide,
            has_line_table,
            const_code_size: f("ConstMethod::_code_size")?,
            const_name_index: f("ConstMethod::_name_index")?,
            sizeof_const: *self.types.get("ConstMethod")?,
            cp_holder: f("ConstantPool::_pool_holder")?,
            cp_source_file: f("ConstantPool::_source_file_name_index")
                .or_else(|| f("InstanceKlass::_source_file_name_index")),
            sizeof_cp: *self.types.get("ConstantPool")?,
            klass_name: f("Klass::_name")?,
            klass_methods: f("InstanceKlass::_methods")?,
            array_data: f("Array<Method*>::_data").unwrap_or(8),
            symbol_length: f("Symbol::_length")?,
            symbol_body: f("Symbol::_body")?,
            coding,
        })
    }
}

/// How HotSpot's compressed streams (line-number tables, the JIT's debug information) write an
/// int: 1 to 5 bytes, 6 more bits per byte after the first while a byte is "high".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntCoding {
    /// JDK 8 to 20: bytes below 192 end an int.
    Classic,
    /// JDK 21 and later (`UNSIGNED5`): as classic, but every byte is one more than its digit
    /// (no byte is 0), so bytes below 192 (digits below 191) end an int.
    Unsigned5,
}

impl IntCoding {
    /// The coding of a JVM of this major version.
    pub(crate) fn of_version(major: u32) -> IntCoding {
        if major >= 21 {
            IntCoding::Unsigned5
        } else {
            IntCoding::Classic
        }
    }

    /// The int at `pos`, moving `pos` past it.
    pub(crate) fn read_int(self, b: &[u8], pos: &mut usize) -> Option<u32> {
        let (excluded, low) = match self {
            IntCoding::Classic => (0, 192),
            IntCoding::Unsigned5 => (1, 191),
        };
        let mut digit = || -> Option<u32> {
            let byte = u32::from(*b.get(*pos)?);
            *pos += 1;
            byte.checked_sub(excluded)
        };
        let d0 = digit()?;
        if d0 < low {
            return Some(d0);
        }
        let mut sum = d0;
        let mut shift = 6;
        for i in 1..=4 {
            let di = digit()?;
            sum = sum.wrapping_add(di << shift);
            if di < low || i == 4 {
                break;
            }
            shift += 6;
        }
        Some(sum)
    }

    fn read_signed(self, b: &[u8], pos: &mut usize) -> Option<i32> {
        let v = self.read_int(b, pos)?;
        Some(((v >> 1) as i32) ^ -((v & 1) as i32))
    }
}

/// A method's compressed line-number table as (bytecode index, line) pairs: a byte
/// `bci_delta << 3 | line_delta` for small steps, else 0xFF and two signed ints; 0 ends it.
fn line_table(b: &[u8], coding: IntCoding) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let (mut bci, mut line, mut pos) = (0i64, 0i64, 0usize);
    while let Some(&next) = b.get(pos) {
        pos += 1;
        match next {
            0 => break,
            0xFF => {
                let (Some(db), Some(dl)) = (
                    coding.read_signed(b, &mut pos),
                    coding.read_signed(b, &mut pos),
                ) else {
                    break;
                };
                bci += i64::from(db);
                line += i64::from(dl);
            }
            _ => {
                bci += i64::from(next >> 3);
                line += i64::from(next & 7);
            }
        }
        match (u32::try_from(bci), u32::try_from(line)) {
            (Ok(b), Ok(l)) => out.push((b, l)),
            _ => break,
        }
    }
    out
}

/// The line of bytecode `bci`, as HotSpot's `Method::line_number_from_bci` finds it: the entry
/// for `bci` itself, else the one with the largest index below it.
fn line_of(table: &[(u32, u32)], bci: u32) -> Option<u32> {
    if let Some(&(_, l)) = table.iter().find(|(b, _)| *b == bci) {
        return Some(l);
    }
    table
        .iter()
        .filter(|(b, _)| *b < bci)
        .max_by_key(|(b, _)| *b)
        .map(|&(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_tables_decode_as_hotspot_reads_them() {
        // bci 0 → line 17 (escaped: the line step is over 7), bci 4 → 18 (one byte: 4<<3|1),
        // bci 300 → line 10 (escaped, a negative step: -8 is zig-zag 15), then the end.
        let table = [
            0xFF,
            0,
            34,           // +0 bci, +17 lines
            (4 << 3) | 1, // +4 bci, +1 line
            0xFF,
            208,
            6,
            15, // +296 bci (zig-zag 592 in two bytes), -8 lines (zig-zag 15)
            0,
            0xAA,
        ];
        // 592 in HotSpot's stream: 208 (192 + 16, a high byte), then 6: 208 + 6 << 6.
        assert_eq!(208 + (6 << 6), 592);
        let t = line_table(&table, IntCoding::Classic);
        assert_eq!(t, vec![(0, 17), (4, 18), (300, 10)]);
        // JDK 21's UNSIGNED5: every byte of an int one more (so 0 only ends the table).
        let unsigned5 = [0xFF, 1, 35, (4 << 3) | 1, 0xFF, 209, 7, 16, 0, 0xAA];
        assert_eq!(line_table(&unsigned5, IntCoding::Unsigned5), t);
        // A byte of 0 inside an UNSIGNED5 int is no int.
        assert_eq!(IntCoding::Unsigned5.read_int(&[0], &mut 0), None);
        // The largest one-byte value of each: 191 and 190; then two bytes.
        assert_eq!(IntCoding::Classic.read_int(&[191], &mut 0), Some(191));
        assert_eq!(IntCoding::Unsigned5.read_int(&[191], &mut 0), Some(190));
        let mut pos = 0;
        assert_eq!(
            IntCoding::Unsigned5.read_int(&[192, 2, 9], &mut pos),
            Some(191 + (1 << 6))
        );
        assert_eq!(pos, 2);
        assert_eq!(line_of(&t, 0), Some(17));
        assert_eq!(line_of(&t, 3), Some(17));
        assert_eq!(line_of(&t, 4), Some(18));
        assert_eq!(line_of(&t, 299), Some(18));
        assert_eq!(line_of(&t, 1000), Some(10));
        assert_eq!(line_of(&[], 5), None);
    }
}
