//! CPython code objects read from a live process: a frame's function (`co_qualname`), file
//! (`co_filename`) and line (`co_linetable` at the frame's instruction), each code object read
//! once.
use crate::python::{CodeLayout, Interpreter, Memory};

/// The module of a Python frame in reports.
pub const PY_MODULE: &str = "python";

/// What a code object says of itself.
struct Code {
    /// Its type, name, file, line table and first line pointers as read: a code object freed
    /// and another made at its address (code made at run time) is told apart by them.
    identity: [u64; 4],
    qualname: String,
    filename: String,
    firstlineno: i32,
    linetable: Vec<u8>,
}

/// A Python frame, named.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Named {
    pub function: String,
    pub file: String,
    pub line: Option<u32>,
}

/// Code objects of one process, read on first sight (each use checks it is still the same).
pub struct CodeReader {
    mem: Memory,
    layout: CodeLayout,
    code_type: u64,
    cache: foldhash::HashMap<u64, Option<std::sync::Arc<Code>>>,
}

/// More code objects than this: the cache starts again (code made at run time by `exec`).
const MAX_CODES: usize = 65536;
/// Longest string read from a code object.
const MAX_STR: u64 = 4096;

impl CodeReader {
    pub fn new(pid: u32, interp: &Interpreter) -> Option<CodeReader> {
        Some(CodeReader {
            mem: Memory::of(pid)?,
            layout: interp.code,
            code_type: interp.code_type,
            cache: Default::default(),
        })
    }

    /// The frame of code object `code` at instruction pointer `instr`, or None when `code` is
    /// not a code object (any more).
    pub fn name(&mut self, code: u64, instr: u64) -> Option<Named> {
        if self.cache.len() >= MAX_CODES {
            self.cache.clear();
        }
        let c = match (self.identity(code), self.cache.get(&code)) {
            (Ok(Some(id)), Some(Some(c))) if c.identity == id => c.clone(),
            (Ok(Some(id)), _) => {
                let c = self.read(id).map(std::sync::Arc::new);
                self.cache.insert(code, c.clone());
                c?
            }
            // The memory cannot be read any more (the process exited since the birth): what
            // was read before, unchecked.
            (Err(()), Some(Some(c))) => c.clone(),
            _ => return None,
        };
        let first = code + self.layout.code_adaptive;
        // Instructions are 2-byte code units; before the first one (a frame just entered), the
        // function's first line.
        let lasti = if instr >= first {
            ((instr - first) / 2) as i64
        } else {
            -1
        };
        Some(Named {
            function: c.qualname.clone(),
            file: c.filename.clone(),
            line: line_of(&c.linetable, c.firstlineno, lasti),
        })
    }

    /// The code object's file, name, line table and first line, from one read of its head
    /// (other fields change as the code runs); Ok(None) when it is not a code object, Err when
    /// the memory cannot be read.
    fn identity(&self, code: u64) -> Result<Option<[u64; 4]>, ()> {
        let l = &self.layout;
        let end = l
            .filename
            .max(l.qualname)
            .max(l.linetable)
            .max(l.firstlineno)
            + 8;
        let mut b = vec![0u8; end as usize];
        if !self.mem.read(code, &mut b) {
            return Err(());
        }
        if b[8..16] != self.code_type.to_le_bytes() {
            return Ok(None);
        }
        let word = |at: u64| {
            let at = at as usize;
            u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
        };
        Ok(Some([
            word(l.filename),
            word(l.qualname),
            word(l.linetable),
            word(l.firstlineno) & 0xffff_ffff,
        ]))
    }

    fn read(&self, identity: [u64; 4]) -> Option<Code> {
        let [filename, qualname, table, firstlineno] = identity;
        // A bytes object: its size at 16, its bytes at 32 (3.11 to 3.13).
        let n = self.mem.u64(table + 16)?.min(1 << 20) as usize;
        let mut linetable = vec![0u8; n];
        if !self.mem.read(table + 32, &mut linetable) {
            return None;
        }
        Some(Code {
            identity,
            qualname: self.string(qualname)?,
            filename: self.string(filename)?,
            firstlineno: firstlineno as u32 as i32,
            linetable,
        })
    }

    /// A compact `str` object (as names and file names are).
    fn string(&self, obj: u64) -> Option<String> {
        let len = self.mem.u64(obj + 16)?.min(MAX_STR);
        let state = self.mem.u32(obj + 32)?;
        let kind = (state >> 2) & 7;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        if !compact {
            return None;
        }
        let at = obj
            + if ascii {
                self.layout.ascii_size
            } else {
                self.layout.compact_size
            };
        let width = if ascii { 1 } else { u64::from(kind) };
        if !matches!(width, 1 | 2 | 4) {
            return None;
        }
        let mut bytes = vec![0u8; (len * width) as usize];
        if !self.mem.read(at, &mut bytes) {
            return None;
        }
        Some(match width {
            1 => bytes.iter().map(|&b| char::from(b)).collect(),
            2 => bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                .collect(),
        })
    }
}

/// The line of instruction `lasti` (in code units; -1: none begun) in a 3.11+ location table
/// (CPython's `Objects/locations.md`): entries of a first byte (bit 7 set; bits 3-6 a code,
/// bits 0-2 the length in code units less one) and the code's data.
pub fn line_of(table: &[u8], firstlineno: i32, lasti: i64) -> Option<u32> {
    if lasti < 0 {
        return u32::try_from(firstlineno).ok();
    }
    let mut line = i64::from(firstlineno);
    let mut addr: i64 = 0;
    let mut i = 0;
    while i < table.len() {
        let b = table[i];
        i += 1;
        let code = (b >> 3) & 15;
        let end = addr + i64::from(b & 7) + 1;
        let (delta, located) = match code {
            // No location.
            15 => (0, false),
            // Long form and no-column form: a signed line delta first.
            14 | 13 => (signed_varint(table, &mut i), true),
            // One-line forms: the delta is in the code.
            10..=12 => (i64::from(code) - 10, true),
            // Short forms: the same line.
            _ => (0, true),
        };
        line += delta;
        // Skip the rest of the entry (columns): up to the next first byte.
        while i < table.len() && table[i] & 0x80 == 0 {
            i += 1;
        }
        if lasti < end {
            return if located {
                u32::try_from(line).ok()
            } else {
                None
            };
        }
        addr = end;
    }
    None
}

fn varint(table: &[u8], i: &mut usize) -> u64 {
    let mut val = 0u64;
    let mut shift = 0;
    while let Some(&b) = table.get(*i) {
        *i += 1;
        val |= u64::from(b & 63) << shift;
        shift += 6;
        if b & 64 == 0 || shift > 60 {
            break;
        }
    }
    val
}

fn signed_varint(table: &[u8], i: &mut usize) -> i64 {
    let v = varint(table, i);
    if v & 1 != 0 {
        -((v >> 1) as i64)
    } else {
        (v >> 1) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction's line as CPython itself gives it (`co_lines()`), against the table
    /// decoded here, over the code objects of a module of CPython's own standard library.
    #[test]
    fn lines_as_cpython_gives_them() {
        let script = r#"
import json, sys, types, dis, inspect
out = []
def walk(c):
    out.append({"table": list(c.co_linetable), "first": c.co_firstlineno,
                "lines": [[s, e, l] for s, e, l in c.co_lines()]})
    for k in c.co_consts:
        if isinstance(k, types.CodeType): walk(k)
import argparse
walk(compile(inspect.getsource(argparse), "argparse.py", "exec"))
print(json.dumps(out))
"#;
        let mut checked = 0;
        for python in ["/usr/bin/python3.11", "python3"] {
            let Ok(out) = std::process::Command::new(python)
                .args(["-c", script])
                .output()
            else {
                continue;
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let codes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            for c in codes.as_array().unwrap() {
                let table: Vec<u8> = c["table"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8)
                    .collect();
                let first = c["first"].as_i64().unwrap() as i32;
                for r in c["lines"].as_array().unwrap() {
                    let (s, e) = (r[0].as_i64().unwrap(), r[1].as_i64().unwrap());
                    let want = r[2].as_i64().map(|l| l as u32);
                    for byte in (s..e).step_by(2) {
                        assert_eq!(line_of(&table, first, byte / 2), want, "offset {byte}");
                        checked += 1;
                    }
                }
            }
            break;
        }
        assert!(checked > 10_000, "only {checked} instructions checked");
    }

    #[test]
    fn short_tables() {
        // One entry, no-column form (13), delta +2, 3 code units.
        let t = [0x80 | (13 << 3) | 2, 4];
        assert_eq!(line_of(&t, 10, 0), Some(12));
        assert_eq!(line_of(&t, 10, 2), Some(12));
        assert_eq!(line_of(&t, 10, 3), None, "past the table");
        assert_eq!(line_of(&t, 10, -1), Some(10));
        // No location (15).
        assert_eq!(line_of(&[0x80 | (15 << 3)], 10, 0), None);
        // Negative delta: -3 is zigzag 7.
        let t = [0x80 | (13 << 3), 7];
        assert_eq!(line_of(&t, 10, 0), Some(7));
    }
}
