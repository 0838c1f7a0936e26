//! Go's own symbol table, `.gopclntab`: function names, files and lines, present in every Go
//! binary, stripped ones included (the runtime needs it for tracebacks). Read for binaries
//! without a symbol table, where blazesym finds nothing (Go 1.18+ layout: magic 0xfffffff0 for
//! 1.18 and 1.19, 0xfffffff1 from 1.20).
//!
//! Inlined calls are expanded as the runtime's tracebacks do: the inline tree of a function
//! (its `FUNCDATA_InlTree`, found through `runtime.firstmoduledata`'s `gofunc`) names the
//! inlined function at a pc and the pc of its call site in the caller.
use std::path::Path;

use object::{Object as _, ObjectSection as _};

/// One binary's table.
pub struct PcLnTab {
    /// The section's bytes.
    data: Vec<u8>,
    min_lc: u64,
    text_start: u64,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// `(entry address, offset of its _func)`, sorted by entry; the last entry is the end of
    /// the text.
    funcs: Vec<(u64, usize)>,
    /// (file offset, size, address) of the sections, to turn file offsets into addresses.
    sections: Vec<(u64, u64, u64)>,
    /// The Go 1.20+ layouts (magic 0xfffffff1) rather than 1.18's and 1.19's.
    go120: bool,
    /// The whole file, for the inline trees (None in tests without one).
    file: Vec<u8>,
    /// `moduledata.gofunc`: the base of funcdata offsets (0: not found, no inline trees).
    gofunc: u64,
}

/// `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree`.
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;

/// A function and, at the address asked for, its file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcInfo {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn cstr_at(b: &[u8], off: usize) -> Option<String> {
    let rest = b.get(off..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn uvarint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl PcLnTab {
    /// The table of the ELF binary at `path`; None when it has none in a layout known here.
    pub fn read(path: &Path) -> Option<PcLnTab> {
        let file = std::fs::read(path).ok()?;
        let (data, tab_addr, sections, noptrdata) = {
            let obj = object::File::parse(&*file).ok()?;
            let tab = obj.section_by_name(".gopclntab")?;
            let sections: Vec<(u64, u64, u64)> = obj
                .sections()
                .filter_map(|s| {
                    let (off, size) = s.file_range()?;
                    (s.address() != 0).then_some((off, size, s.address()))
                })
                .collect();
            let noptrdata = obj
                .section_by_name(".noptrdata")
                .and_then(|s| s.file_range());
            (
                tab.data().ok()?.to_vec(),
                tab.address(),
                sections,
                noptrdata,
            )
        };
        let mut t = Self::parse(data, sections)?;
        t.file = file;
        if let Some((off, size)) = noptrdata {
            t.gofunc = t
                .find_gofunc(tab_addr, off as usize, size as usize)
                .unwrap_or(0);
        }
        Some(t)
    }

    /// `runtime.firstmoduledata` (in .noptrdata) starts with the address of the pclntab and
    /// holds the text's start at word 22; `gofunc` is word 38 (Go 1.18, 1.19) or 40 (1.20+,
    /// after the coverage counters).
    fn find_gofunc(&self, tab_addr: u64, off: usize, size: usize) -> Option<u64> {
        let words = self.file.get(off..off + size)?;
        let gofunc_word = if self.go120 { 40 } else { 38 };
        (0..words.len().saturating_sub(8 * (gofunc_word + 1)))
            .step_by(8)
            .find(|&i| {
                u64_at(words, i) == Some(tab_addr)
                    && u64_at(words, i + 8 * 22) == Some(self.text_start)
            })
            .and_then(|i| u64_at(words, i + 8 * gofunc_word))
    }

    fn parse(data: Vec<u8>, sections: Vec<(u64, u64, u64)>) -> Option<PcLnTab> {
        let magic = u32_at(&data, 0)?;
        if !matches!(magic, 0xffff_fff0 | 0xffff_fff1) || data.get(7) != Some(&8) {
            return None;
        }
        let min_lc = u64::from(*data.get(6)?);
        let word = |i: usize| u64_at(&data, 8 + 8 * i).map(|v| v as usize);
        let nfunc = word(0)?;
        let text_start = word(2)? as u64;
        let (funcnames, cutab, filetab, pctab, pcln) =
            (word(3)?, word(4)?, word(5)?, word(6)?, word(7)?);
        let mut funcs = Vec::with_capacity(nfunc + 1);
        for i in 0..=nfunc {
            let entry = u32_at(&data, pcln + 8 * i)?;
            let func = u32_at(&data, pcln + 8 * i + 4)?;
            funcs.push((text_start + u64::from(entry), pcln + func as usize));
        }
        Some(PcLnTab {
            go120: magic == 0xffff_fff1,
            file: Vec::new(),
            gofunc: 0,
            data,
            min_lc,
            text_start,
            funcnames,
            cutab,
            filetab,
            pctab,
            funcs,
            sections,
        })
    }

    /// The address a file offset of the binary is loaded at (before relocation).
    pub fn address_of_offset(&self, off: u64) -> Option<u64> {
        self.sections
            .iter()
            .find(|(o, size, _)| off >= *o && off < o + size)
            .map(|(o, _, addr)| off - o + addr)
    }

    /// The function holding `addr`: its entry address and the offset of its `_func`.
    fn func(&self, addr: u64) -> Option<(u64, usize)> {
        if addr < self.text_start {
            return None;
        }
        let i = self.funcs.partition_point(|&(entry, _)| entry <= addr);
        // Past the last function: the final entry only marks the end of the text.
        (i > 0 && i < self.funcs.len()).then(|| self.funcs[i - 1])
    }

    /// The value of a pc-value table at `addr` (a function entered at `entry`).
    fn pcvalue(&self, table: u32, entry: u64, addr: u64) -> Option<i64> {
        if table == 0 {
            return None;
        }
        let mut pos = self.pctab + table as usize;
        let (mut pc, mut val) = (entry, -1i64);
        let mut first = true;
        loop {
            let uv = uvarint(&self.data, &mut pos)?;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            let delta = if uv & 1 != 0 {
                !(uv >> 1) as i64
            } else {
                (uv >> 1) as i64
            };
            val += delta;
            pc += uvarint(&self.data, &mut pos)? * self.min_lc;
            if addr < pc {
                return Some(val);
            }
        }
    }

    /// Function, file and line at `addr` (an address of the binary as linked): the innermost
    /// inlined call first, then the functions it was inlined into, the outermost last.
    pub fn lookup(&self, addr: u64) -> Vec<PcInfo> {
        let Some((entry, f)) = self.func(addr) else {
            return Vec::new();
        };
        let d = &self.data;
        let (Some(pcfile), Some(pcln), Some(cu)) =
            (u32_at(d, f + 20), u32_at(d, f + 24), u32_at(d, f + 32))
        else {
            return Vec::new();
        };
        let at = |pc: u64| -> (Option<String>, Option<u32>) {
            let line = self
                .pcvalue(pcln, entry, pc)
                .and_then(|l| u32::try_from(l).ok());
            let file = self
                .pcvalue(pcfile, entry, pc)
                .and_then(|n| u32::try_from(n).ok())
                .and_then(|n| u32_at(d, self.cutab + 4 * (cu as usize + n as usize)))
                .filter(|&off| off != u32::MAX)
                .and_then(|off| cstr_at(d, self.filetab + off as usize));
            (file, line)
        };
        let mut out = Vec::new();
        let mut pc = addr;
        // Each step moves to the call site in the caller: a tree deeper than this is damaged.
        for _ in 0..32 {
            let (file, line) = at(pc);
            match self.inlined_at(f, entry, pc) {
                Some((function, parent_pc)) => {
                    out.push(PcInfo {
                        function,
                        file,
                        line,
                    });
                    pc = entry + parent_pc;
                }
                None => {
                    if let Some(function) =
                        u32_at(d, f + 4).and_then(|n| cstr_at(d, self.funcnames + n as usize))
                    {
                        out.push(PcInfo {
                            function,
                            file,
                            line,
                        });
                    }
                    break;
                }
            }
        }
        out
    }

    /// The function inlined at `pc` of the function whose `_func` is at `f` (entered at
    /// `entry`), and the offset of its call site from the entry.
    fn inlined_at(&self, f: usize, entry: u64, pc: u64) -> Option<(String, u64)> {
        if self.gofunc == 0 {
            return None;
        }
        let d = &self.data;
        let fixed = if self.go120 { 44 } else { 40 };
        let npcdata = u32_at(d, f + 28)? as usize;
        let nfuncdata = *d.get(f + fixed - 1)? as usize;
        if npcdata <= PCDATA_INL_TREE_INDEX || nfuncdata <= FUNCDATA_INL_TREE {
            return None;
        }
        let table = u32_at(d, f + fixed + 4 * PCDATA_INL_TREE_INDEX)?;
        let index = self.pcvalue(table, entry, pc)?;
        if index < 0 {
            return None;
        }
        let tree = u32_at(d, f + fixed + 4 * npcdata + 4 * FUNCDATA_INL_TREE)?;
        if tree == u32::MAX {
            return None;
        }
        // inlinedCall: 1.20+ {funcID u8, _ [3]u8, nameOff i32, parentPc i32, startLine i32};
        // 1.18, 1.19 {parent i16, funcID u8, _ u8, file i32, line i32, func_ i32, parentPc i32}.
        let (size, name_at, parent_at) = if self.go120 { (16, 4, 8) } else { (20, 12, 16) };
        let call = self.file_offset(self.gofunc + u64::from(tree) + index as u64 * size)?;
        let name = u32_at(&self.file, call + name_at)?;
        let parent_pc = u32_at(&self.file, call + parent_at)?;
        Some((
            cstr_at(d, self.funcnames + name as usize)?,
            u64::from(parent_pc),
        ))
    }

    fn file_offset(&self, addr: u64) -> Option<usize> {
        self.offset_of_address(addr).map(|o| o as usize)
    }

    /// The entry address of the function named `name`.
    pub fn entry_of(&self, name: &str) -> Option<u64> {
        self.funcs[..self.funcs.len().saturating_sub(1)]
            .iter()
            .find(|&&(_, f)| {
                u32_at(&self.data, f + 4)
                    .and_then(|n| cstr_at(&self.data, self.funcnames + n as usize))
                    .is_some_and(|n| n == name)
            })
            .map(|&(entry, _)| entry)
    }

    /// The file offset of an address of the binary as linked.
    pub fn offset_of_address(&self, addr: u64) -> Option<u64> {
        self.sections
            .iter()
            .find(|(_, size, a)| addr >= *a && addr < a + size)
            .map(|(o, _, a)| addr - a + o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let b = [0x96, 0x01, 0x05];
        let mut pos = 0;
        assert_eq!(uvarint(&b, &mut pos), Some(150));
        assert_eq!(uvarint(&b, &mut pos), Some(5));
        assert_eq!(uvarint(&b, &mut pos), None);
    }

    /// A table of one function at 0x1000..0x1100, built as the Go linker lays it out.
    fn table() -> PcLnTab {
        let mut d = vec![0u8; 72];
        d[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        d[6] = 1;
        d[7] = 8;
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes())
        };
        // funcnames at 72: "main.f\0"
        let funcnames = d.len();
        d.extend_from_slice(b"main.f\0");
        // cutab: one CU with one file, at filetab offset 0.
        let cutab = d.len();
        d.extend_from_slice(&0u32.to_le_bytes());
        let filetab = d.len();
        d.extend_from_slice(b"/src/main.go\0");
        // pctab: byte 0 unused; pcln at 1: line 10 for 0x10 bytes, then 12 for 0xf0.
        let pctab = d.len();
        d.push(0);
        d.extend_from_slice(&[22, 0x10, 4, 0xf0, 0x01, 0]);
        // pcfile at 7: file 0 for the whole function.
        d.extend_from_slice(&[2, 0x80, 0x02, 0]);
        let pcln = d.len();
        // functab: (entry 0, func at 16), (end 0x100, 0); then the _func.
        for v in [0u32, 16, 0x100, 0] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        let mut func = [0u32; 9];
        func[1] = 0; // nameoff
        func[5] = 7; // pcfile
        func[6] = 1; // pcln
        func[8] = 0; // cuOffset
        for v in func {
            d.extend_from_slice(&v.to_le_bytes());
        }
        for (i, v) in [1u64, 1, 0x1000, funcnames as u64, cutab as u64]
            .into_iter()
            .chain([filetab as u64, pctab as u64, pcln as u64])
            .enumerate()
        {
            put(&mut d, i, v);
        }
        PcLnTab::parse(d, vec![(0x1000, 0x100, 0x1000)]).unwrap()
    }

    #[test]
    fn lines_and_files() {
        let t = table();
        let at = |a: u64| t.lookup(a);
        assert_eq!(
            at(0x1004),
            vec![PcInfo {
                function: "main.f".into(),
                file: Some("/src/main.go".into()),
                line: Some(10),
            }]
        );
        assert_eq!(at(0x1010)[0].line, Some(12));
        assert_eq!(at(0x10ff)[0].line, Some(12));
        assert_eq!(at(0x1100), vec![]);
        assert_eq!(at(0xfff), vec![]);
        assert_eq!(t.entry_of("main.f"), Some(0x1000));
        assert_eq!(t.entry_of("main.g"), None);
        assert_eq!(t.offset_of_address(0x1010), Some(0x1010));
    }
}
