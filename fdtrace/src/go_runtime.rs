//! What fdtrace needs to know of a Go binary to tell its goroutines apart: its Go version, the
//! offsets of `runtime.g`'s `goid`, `parentGoid` and `gopc`, and where net/http's `queueForDial` and
//! `dialConnFor` are (the probes of `go_links`).
//!
//! The offsets come from the binary's DWARF (`runtime.g`'s members) and, where it has none
//! (`-ldflags=-w`), from a table by Go version, read from `.go.buildinfo`.
use std::path::Path;

use gimli::{EndianSlice, LittleEndian};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The function entered in the goroutine that asks for a connection, with the `*wantConn` as its
/// first argument (Go 1.17+ register ABI: rbx, the receiver being in rax).
pub const REQUEST_FN: &str = "net/http.(*Transport).queueForDial";
/// The function entered in the goroutine that dials for a `*wantConn`.
pub const DIAL_FN: &str = "net/http.(*Transport).dialConnFor";

/// `runtime.g` offsets: `goid`, `parentGoid` (0: none, before Go 1.21) and `gopc` (0:
/// unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GLayout {
    pub goid: u32,
    pub parent_goid: u32,
    pub gopc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// (major, minor), e.g. (1, 21).
    pub version: Option<(u32, u32)>,
    /// None: neither DWARF nor a known version gave it.
    pub layout: Option<GLayout>,
    /// File offsets of [`REQUEST_FN`] and [`DIAL_FN`], when the binary has a symbol table.
    pub request: Option<u64>,
    pub dial: Option<u64>,
}

impl GoBinary {
    /// The `TARGETS` value of a process running this binary with stacks captured as `capture`.
    pub fn target_value(&self, capture: u16) -> u32 {
        match self.layout {
            // Go 1.17+ only: r14 is the g from the register ABI on.
            Some(l) if self.version.is_none_or(|v| v >= (1, 17)) => {
                fdtrace_common::go::target_value(capture, l.goid, l.parent_goid, l.gopc)
            }
            _ => u32::from(capture),
        }
    }
}

/// The layout of `runtime.g` in a Go release, as its DWARF shows (checked for each release
/// Debian serves by `tests/go_links.rs`): goid moved when 1.23 added a field before it. `gopc`
/// only where a release's DWARF was seen (1.19, 1.21 to 1.24); 1.17, 1.18 and 1.20 binaries
/// without DWARF get no creator frames.
pub fn layout_of_version(v: (u32, u32)) -> Option<GLayout> {
    match v {
        (1, 17..=20) => Some(GLayout {
            goid: 152,
            parent_goid: 0,
            gopc: if v.1 == 19 { 296 } else { 0 },
        }),
        (1, 21..=22) => Some(GLayout {
            goid: 152,
            parent_goid: 272,
            gopc: 280,
        }),
        (1, 23..=24) => Some(GLayout {
            goid: 160,
            parent_goid: 280,
            gopc: 288,
        }),
        _ => None,
    }
}

/// Inspect a Go binary; None when `path` is not one (or cannot be read).
pub fn inspect(path: &Path) -> Option<GoBinary> {
    let data = std::fs::read(path).ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let version = obj
        .section_by_name(".go.buildinfo")
        .and_then(|s| s.data().ok())
        .and_then(buildinfo_version);
    if version.is_none() && obj.section_by_name(".gopclntab").is_none() {
        return None;
    }
    let layout = dwarf_layout(&obj).or_else(|| version.and_then(layout_of_version));
    let mut request = None;
    let mut dial = None;
    for sym in obj.symbols() {
        let slot = match sym.name_bytes() {
            Ok(n) if n == REQUEST_FN.as_bytes() => &mut request,
            Ok(n) if n == DIAL_FN.as_bytes() => &mut dial,
            _ => continue,
        };
        *slot = crate::elf_symbols::file_offset(&obj, sym.address());
    }
    // A stripped binary: the runtime's own table names every function.
    if (request.is_none() || dial.is_none())
        && let Some(t) = crate::gopclntab::PcLnTab::read(path)
    {
        let at = |name: &str| t.entry_of(name).and_then(|a| t.offset_of_address(a));
        request = request.or_else(|| at(REQUEST_FN));
        dial = dial.or_else(|| at(DIAL_FN));
    }
    Some(GoBinary {
        version,
        layout,
        request,
        dial,
    })
}

/// The `runtime.g` layout in the DWARF of the binary at `path` alone (None without DWARF).
pub fn dwarf_layout_of(path: &Path) -> Option<GLayout> {
    let data = std::fs::read(path).ok()?;
    dwarf_layout(&object::File::parse(&*data).ok()?)
}

/// The Go version in a `.go.buildinfo` section (Go 1.18+ layout: the version string inline at
/// byte 32, after a varint length).
fn buildinfo_version(data: &[u8]) -> Option<(u32, u32)> {
    if !data.starts_with(b"\xff Go buildinf:") || data.len() < 33 || data[15] & 2 == 0 {
        return None;
    }
    let (len, used) = varint(&data[32..])?;
    let start = 32 + used;
    let s = std::str::from_utf8(data.get(start..start + len as usize)?).ok()?;
    parse_version(s)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// "go1.21.13" (or "go1.24.4 X:…") → (1, 21).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let rest = s.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The name of an entry: inline (as Go writes them) or in .debug_str.
fn name_of<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    e: &gimli::DebuggingInformationEntry<Slice<'a>>,
) -> Option<&'a [u8]> {
    match e.attr_value(gimli::DW_AT_name)? {
        gimli::AttributeValue::String(s) => Some(s.slice()),
        gimli::AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o).ok().map(|s| s.slice()),
        _ => None,
    }
}

/// The offsets of `goid` and `parentGoid` among `runtime.g`'s members, from the DWARF.
fn dwarf_layout(obj: &object::File) -> Option<GLayout> {
    let sections: Vec<(gimli::SectionId, std::borrow::Cow<[u8]>)> = [
        gimli::SectionId::DebugInfo,
        gimli::SectionId::DebugAbbrev,
        gimli::SectionId::DebugStr,
    ]
    .into_iter()
    .map(|id| {
        let data = obj
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or_default();
        (id, data)
    })
    .collect();
    let get = |id: gimli::SectionId| -> EndianSlice<LittleEndian> {
        let data = sections
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, d)| &**d)
            .unwrap_or(&[]);
        EndianSlice::new(data, LittleEndian)
    };
    let dwarf = gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(get(id))).ok()?;
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        // Entries only: a whole unit would also parse its line program and ranges.
        let Ok(abbrevs) = dwarf.abbreviations(&header) else {
            continue;
        };
        let mut entries = header.entries(&abbrevs);
        let mut in_g = None;
        let mut found = GLayout {
            goid: 0,
            parent_goid: 0,
            gopc: 0,
        };
        while let Ok(Some(e)) = entries.next_dfs() {
            let depth = e.depth();
            if let Some(d) = in_g {
                if depth <= d {
                    break;
                }
                if depth == d + 1 && e.tag() == gimli::DW_TAG_member {
                    let off = e
                        .attr_value(gimli::DW_AT_data_member_location)
                        .and_then(|v| v.udata_value());
                    match (name_of(&dwarf, e), off) {
                        (Some(b"goid"), Some(o)) => found.goid = o as u32,
                        (Some(b"parentGoid"), Some(o)) => found.parent_goid = o as u32,
                        (Some(b"gopc"), Some(o)) => found.gopc = o as u32,
                        _ => {}
                    }
                }
                continue;
            }
            if e.tag() == gimli::DW_TAG_structure_type && name_of(&dwarf, e) == Some(b"runtime.g") {
                in_g = Some(depth);
            }
        }
        if in_g.is_some() {
            return (found.goid != 0).then_some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("go1.21.13"), Some((1, 21)));
        assert_eq!(
            parse_version("go1.24.4 X:nocoverageredesign"),
            Some((1, 24))
        );
        assert_eq!(parse_version("go1.22rc1"), Some((1, 22)));
        assert_eq!(parse_version("devel"), None);
        let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
        info.resize(32, 0);
        info.push(9);
        info.extend_from_slice(b"go1.19.8\n");
        assert_eq!(buildinfo_version(&info), Some((1, 19)));
        info[15] = 0;
        assert_eq!(buildinfo_version(&info), None);
    }

    #[test]
    fn layouts_by_version() {
        assert_eq!(layout_of_version((1, 16)), None);
        assert_eq!(layout_of_version((1, 19)).unwrap().parent_goid, 0);
        assert_eq!(layout_of_version((1, 23)).unwrap().goid, 160);
        let b = GoBinary {
            version: Some((1, 21)),
            layout: layout_of_version((1, 21)),
            request: None,
            dial: None,
        };
        let v = b.target_value(fdtrace_common::capture::FRAME_POINTERS);
        assert_eq!(v & 0xff, 2);
        assert_eq!((v >> 8) & 0xff, 152 / 8);
        assert_eq!((v >> 16) & 0xff, 272 / 8);
        assert_eq!(v >> 24, 280 / 8);
        // No gopc offset known: no creator, the rest as before.
        let unknown = GoBinary {
            layout: layout_of_version((1, 20)),
            ..b.clone()
        };
        assert_eq!(unknown.target_value(2) >> 24, 0);
        assert_eq!((unknown.target_value(2) >> 8) & 0xff, 152 / 8);
        let old = GoBinary {
            version: Some((1, 16)),
            ..b
        };
        assert_eq!(old.target_value(2), 2);
    }

    #[test]
    fn not_go() {
        assert_eq!(inspect(Path::new("/bin/true")), None);
    }
}
