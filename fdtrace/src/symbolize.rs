//! Symbolization of unwound frames to function, file and line with blazesym.
//!
//! Addresses are normalized to file offsets with the mappings captured while the process was
//! alive, so stacks can be symbolized after the process exited (its binaries stay on disk).
use crate::gopclntab::PcLnTab;
use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};
use serde::Serialize;

use crate::{procinfo::Mapping, unwind::RawFrame};

/// One symbolized frame (inlined calls are frames of their own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The absolute address of the frame (shared by the inlined frames at one address).
    pub addr: u64,
    /// The binary holding the address.
    pub module: Option<String>,
    /// Whether this frame was inlined into the next one.
    pub inlined: bool,
}

impl Frame {
    /// A frame that stands for something other than code (its text in `function`).
    pub fn marker(text: &str) -> Frame {
        Frame {
            function: Some(text.to_string()),
            file: None,
            line: None,
            addr: 0,
            module: None,
            inlined: false,
        }
    }

    /// A frame at `addr` without a name (in `module`, when known).
    fn unsymbolized(addr: u64, module: Option<String>) -> Frame {
        Frame {
            function: None,
            file: None,
            line: None,
            addr,
            module,
            inlined: false,
        }
    }
}

pub struct Symbols {
    symbolizer: Symbolizer,
    /// Go binaries without a symbol table: their `.gopclntab`, read once per file.
    go_tables: std::sync::Mutex<
        std::collections::HashMap<std::path::PathBuf, Option<std::sync::Arc<PcLnTab>>>,
    >,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    pub fn new() -> Self {
        Self {
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .build(),
            go_tables: Default::default(),
        }
    }

    /// Symbolize frames, innermost first; inlined calls become extra frames before their caller.
    pub fn frames(&self, raw: &[RawFrame], mappings: &[Mapping]) -> Vec<Frame> {
        let mut out = Vec::with_capacity(raw.len());
        for f in raw {
            if let Some(text) = crate::link_markers::marker_text(f.addr) {
                out.push(Frame::marker(&text));
                continue;
            }
            let Some(m) = mappings.iter().find(|m| m.contains(f.lookup)) else {
                out.push(Frame::unsymbolized(f.addr, None));
                continue;
            };
            let module = Some(m.path.to_string_lossy().into_owned());
            // The process's own file (see `binaries`); none reachable: no symbols.
            let Some(source) = &m.source else {
                out.push(Frame::unsymbolized(f.addr, module));
                continue;
            };
            let src = Source::Elf(Elf::new(source));
            let sym = self
                .symbolizer
                .symbolize_single(&src, Input::FileOffset(m.file_offset(f.lookup)));
            let Ok(Symbolized::Sym(sym)) = sym else {
                let go = self.gopclntab_frames(source, m.file_offset(f.lookup), f.addr, &module);
                if go.is_empty() {
                    out.push(Frame::unsymbolized(f.addr, module));
                } else {
                    out.extend(go);
                }
                continue;
            };
            for inl in sym.inlined.iter().rev() {
                let (file, line) = match &inl.code_info {
                    Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                    None => (None, None),
                };
                out.push(Frame {
                    function: Some(inl.name.to_string()),
                    file,
                    line,
                    addr: f.addr,
                    module: module.clone(),
                    inlined: true,
                });
            }
            let (file, line) = match &sym.code_info {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            out.push(Frame {
                function: Some(sym.name.to_string()),
                file,
                line,
                addr: f.addr,
                module,
                inlined: false,
            });
        }
        out
    }

    /// A Go binary's frames at one address from its `.gopclntab` (stripped binaries have no
    /// other table): inlined calls first, as blazesym gives them.
    fn gopclntab_frames(
        &self,
        source: &std::path::Path,
        file_offset: u64,
        addr: u64,
        module: &Option<String>,
    ) -> Vec<Frame> {
        let table = {
            let Ok(mut tables) = self.go_tables.lock() else {
                return Vec::new();
            };
            tables
                .entry(source.to_path_buf())
                .or_insert_with(|| PcLnTab::read(source).map(std::sync::Arc::new))
                .clone()
        };
        let Some(table) = table else {
            return Vec::new();
        };
        let Some(at) = table.address_of_offset(file_offset) else {
            return Vec::new();
        };
        let infos = table.lookup(at);
        let n = infos.len();
        infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| Frame {
                function: Some(info.function),
                file: info.file,
                line: info.line,
                addr,
                module: module.clone(),
                inlined: i + 1 < n,
            })
            .collect()
    }
}
