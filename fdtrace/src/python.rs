//! CPython in a traced process: where its interpreter is, which version, and the offsets the
//! kernel needs to read the frame chain of a thread (`fdtrace_common::PyLayout`) and user space
//! needs to read code objects (`CodeLayout`). 3.11 and 3.12 from tables (measured with
//! `offsetof` against each version's internal headers); 3.13 from the offsets the interpreter
//! publishes itself (`_PyRuntime.debug_offsets`).
use std::path::{Path, PathBuf};

pub use crate::remote_memory::Memory;

use fdtrace_common::{PyLayout, py};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

/// Where a code object keeps what names a frame, and how strings are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLayout {
    pub filename: u64,
    pub qualname: u64,
    pub firstlineno: u64,
    pub linetable: u64,
    /// `co_code_adaptive`: the instructions, which a frame's instruction pointer points into.
    pub code_adaptive: u64,
    /// `sizeof(PyASCIIObject)`: where an ASCII string's characters start.
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub compact_size: u64,
}

/// The interpreter of one process.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// `PY_VERSION_HEX`.
    pub version: u32,
    pub kernel: PyLayout,
    pub code: CodeLayout,
    /// Address of `PyCode_Type`: a frame's code object is believed only when its type is this.
    pub code_type: u64,
    /// Where `_PyEval_EvalFrameDefault` is: each of its frames on the native stack runs a
    /// group of Python frames.
    pub eval: Option<(u64, u64)>,
}

impl Interpreter {
    /// "3.11" for a version.
    pub fn version_text(&self) -> String {
        version_text(self.version)
    }
}

fn version_text(v: u32) -> String {
    format!("{}.{}", v >> 24, (v >> 16) & 0xff)
}

/// Why a Python process's frames cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unsupported {
    #[error("Python {0}: its frames are read for CPython 3.11 to 3.13")]
    Version(String),
    #[error("Python {0} built without the GIL: its frames are not read")]
    FreeThreaded(String),
    #[error("the interpreter's offsets ({0}) do not look right")]
    Offsets(String),
}

/// 3.11 (3.11.2 and 3.11.7 alike).
const V3_11: (PyLayout, CodeLayout) = (
    PyLayout {
        interpreters_head: 40,
        threads_head: 16,
        thread_next: 8,
        thread_tid: 160,
        thread_frame: 56,
        cframe_frame: 8,
        frame_code: 32,
        frame_previous: 48,
        frame_instr: 56,
        frame_entry: 68,
        entry_mode: py::ENTRY_FLAG,
    },
    CodeLayout {
        filename: 112,
        qualname: 128,
        firstlineno: 72,
        linetable: 136,
        code_adaptive: 184,
        ascii_size: 48,
        compact_size: 72,
    },
);

/// 3.12 (3.12.1).
const V3_12: (PyLayout, CodeLayout) = (
    PyLayout {
        interpreters_head: 40,
        threads_head: 72,
        thread_next: 8,
        thread_tid: 144,
        thread_frame: 56,
        cframe_frame: 0,
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56,
        frame_entry: 70,
        entry_mode: py::ENTRY_SHIM,
    },
    CodeLayout {
        filename: 112,
        qualname: 128,
        firstlineno: 68,
        linetable: 136,
        code_adaptive: 192,
        ascii_size: 40,
        compact_size: 56,
    },
);

/// Words of `_Py_DebugOffsets` as 3.13 lays it out (all `uint64_t`, after an 8-byte cookie).
mod debug_offsets {
    pub const WORDS: usize = 73;
    pub const VERSION: usize = 1;
    pub const FREE_THREADED: usize = 2;
    pub const INTERPRETERS_HEAD: usize = 5;
    pub const THREADS_HEAD: usize = 9;
    pub const THREAD_NEXT: usize = 21;
    pub const CURRENT_FRAME: usize = 23;
    pub const NATIVE_THREAD_ID: usize = 25;
    pub const FRAME_PREVIOUS: usize = 29;
    pub const FRAME_EXECUTABLE: usize = 30;
    pub const FRAME_INSTR_PTR: usize = 31;
    pub const FRAME_OWNER: usize = 33;
    pub const CODE_FILENAME: usize = 35;
    pub const CODE_QUALNAME: usize = 37;
    pub const CODE_LINETABLE: usize = 38;
    pub const CODE_FIRSTLINENO: usize = 39;
    pub const CODE_ADAPTIVE: usize = 43;
    pub const UNICODE_ASCII_SIZE: usize = 70;
}

/// The layout 3.13's `_Py_DebugOffsets` gives (`w`: its words, the cookie first).
fn from_debug_offsets(w: &[u64]) -> Result<(PyLayout, CodeLayout), Unsupported> {
    use debug_offsets as d;
    if w.len() < d::WORDS || &w[0].to_le_bytes() != b"xdebugpy" {
        return Err(Unsupported::Offsets("no debug offsets".into()));
    }
    let version = w[d::VERSION] as u32;
    if w[d::FREE_THREADED] != 0 {
        return Err(Unsupported::FreeThreaded(version_text(version)));
    }
    let small = |i: usize| -> Result<u32, Unsupported> {
        u32::try_from(w[i])
            .ok()
            .filter(|&v| v < 1 << 16)
            .ok_or_else(|| Unsupported::Offsets(format!("word {i} is {}", w[i])))
    };
    let ascii = u64::from(small(d::UNICODE_ASCII_SIZE)?);
    Ok((
        PyLayout {
            interpreters_head: u64::from(small(d::INTERPRETERS_HEAD)?),
            threads_head: small(d::THREADS_HEAD)?,
            thread_next: small(d::THREAD_NEXT)?,
            thread_tid: small(d::NATIVE_THREAD_ID)?,
            thread_frame: small(d::CURRENT_FRAME)?,
            cframe_frame: py::NO_CFRAME,
            frame_code: small(d::FRAME_EXECUTABLE)?,
            frame_previous: small(d::FRAME_PREVIOUS)?,
            frame_instr: small(d::FRAME_INSTR_PTR)?,
            frame_entry: small(d::FRAME_OWNER)?,
            entry_mode: py::ENTRY_SHIM,
        },
        CodeLayout {
            filename: u64::from(small(d::CODE_FILENAME)?),
            qualname: u64::from(small(d::CODE_QUALNAME)?),
            firstlineno: u64::from(small(d::CODE_FIRSTLINENO)?),
            linetable: u64::from(small(d::CODE_LINETABLE)?),
            code_adaptive: u64::from(small(d::CODE_ADAPTIVE)?),
            ascii_size: ascii,
            // `PyCompactUnicodeObject` adds `utf8_length` and `utf8` to `PyASCIIObject`.
            compact_size: ascii + 16,
        },
    ))
}

/// The symbols of a CPython binary fdtrace uses, as file addresses.
struct Symbols {
    runtime: u64,
    code_type: u64,
    version: Option<u64>,
    eval: Option<(u64, u64)>,
    /// The lowest address a loadable segment asks for (the load bias is taken from it).
    base: u64,
}

fn symbols_of(file: &Path) -> Option<Symbols> {
    let data = std::fs::read(file).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let mut s = Symbols {
        runtime: 0,
        code_type: 0,
        version: None,
        eval: None,
        base: elf.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff,
    };
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        match sym.name() {
            Ok("_PyRuntime") => s.runtime = sym.address(),
            Ok("PyCode_Type") => s.code_type = sym.address(),
            Ok("Py_Version") => s.version = Some(sym.address()),
            Ok("_PyEval_EvalFrameDefault") if sym.size() > 0 => {
                s.eval = Some((sym.address(), sym.address() + sym.size()))
            }
            _ => {}
        }
    }
    (s.runtime != 0 && s.code_type != 0).then_some(s)
}

/// The CPython interpreter of process `pid`: Ok(None) when none of its mapped files is one (not
/// Python, or its libpython not loaded yet); an error for a version fdtrace cannot read.
pub fn find(pid: u32) -> Result<Option<Interpreter>, Unsupported> {
    let Ok(maps) = procfs::process::Process::new(pid as i32).and_then(|p| p.maps()) else {
        return Ok(None);
    };
    let mut seen: Vec<PathBuf> = Vec::new();
    for m in maps.iter() {
        let procfs::process::MMapPath::Path(path) = &m.pathname else {
            continue;
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("python") || name.starts_with("libpython")) || seen.contains(path) {
            continue;
        }
        seen.push(path.clone());
        let Some(host) = crate::binaries::source_of(pid, m) else {
            continue;
        };
        let Some(sym) = symbols_of(&host) else {
            continue;
        };
        // The load bias: where the file's first page is mapped, less what it asked for.
        let Some(first) = crate::binaries::first_page(&maps, path) else {
            continue;
        };
        let bias = first.wrapping_sub(sym.base);
        let Some(mem) = Memory::of(pid) else {
            return Ok(None);
        };
        return interpreter(&mem, &sym, bias).map(Some);
    }
    Ok(None)
}

fn interpreter(mem: &Memory, sym: &Symbols, bias: u64) -> Result<Interpreter, Unsupported> {
    let runtime = sym.runtime.wrapping_add(bias);
    let version = sym
        .version
        .and_then(|a| mem.u32(a.wrapping_add(bias)))
        .unwrap_or(0);
    let major_minor = version >> 16;
    let (kernel, code) = match major_minor {
        0x030B => V3_11,
        0x030C => V3_12,
        0x030D => {
            let mut bytes = vec![0u8; debug_offsets::WORDS * 8];
            if !mem.read(runtime, &mut bytes) {
                return Err(Unsupported::Offsets("unreadable".into()));
            }
            let words: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            from_debug_offsets(&words)?
        }
        // Before 3.11 `Py_Version` did not exist.
        0 => return Err(Unsupported::Version("older than 3.11".into())),
        _ => return Err(Unsupported::Version(version_text(version))),
    };
    let kernel = PyLayout {
        interpreters_head: runtime + kernel.interpreters_head,
        ..kernel
    };
    Ok(Interpreter {
        version,
        kernel,
        code,
        code_type: sym.code_type.wrapping_add(bias),
        eval: sym
            .eval
            .map(|(a, b)| (a.wrapping_add(bias), b.wrapping_add(bias))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_offsets_of_3_13() {
        // The words of 3.13.0's `_Py_DebugOffsets` that fdtrace reads (from `offsetof`).
        let mut w = vec![0u64; debug_offsets::WORDS];
        w[0] = u64::from_le_bytes(*b"xdebugpy");
        w[debug_offsets::VERSION] = 0x030D00F0;
        for (i, v) in [
            (debug_offsets::INTERPRETERS_HEAD, 632),
            (debug_offsets::THREADS_HEAD, 7344),
            (debug_offsets::THREAD_NEXT, 8),
            (debug_offsets::CURRENT_FRAME, 72),
            (debug_offsets::NATIVE_THREAD_ID, 160),
            (debug_offsets::FRAME_PREVIOUS, 8),
            (debug_offsets::FRAME_EXECUTABLE, 0),
            (debug_offsets::FRAME_INSTR_PTR, 56),
            (debug_offsets::FRAME_OWNER, 70),
            (debug_offsets::CODE_FILENAME, 112),
            (debug_offsets::CODE_QUALNAME, 128),
            (debug_offsets::CODE_LINETABLE, 136),
            (debug_offsets::CODE_FIRSTLINENO, 68),
            (debug_offsets::CODE_ADAPTIVE, 200),
            (debug_offsets::UNICODE_ASCII_SIZE, 40),
        ] {
            w[i] = v;
        }
        let (k, c) = from_debug_offsets(&w).unwrap();
        assert_eq!(k.thread_tid, 160);
        assert_eq!(k.cframe_frame, py::NO_CFRAME);
        assert_eq!(c.code_adaptive, 200);
        assert_eq!(c.compact_size, 56);
        w[debug_offsets::FREE_THREADED] = 1;
        assert_eq!(
            from_debug_offsets(&w),
            Err(Unsupported::FreeThreaded("3.13".into()))
        );
        w[0] = 0;
        assert!(from_debug_offsets(&w).is_err());
    }
}
