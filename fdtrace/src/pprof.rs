//! pprof profiles (`fdtrace export --format pprof`): the profile of a recording's open
//! descriptors, built from the messages of pprof's own `profile.proto` (github.com/google/pprof,
//! package `perftools.profiles`, in `fdtrace/proto/`) as prost generates them.
use std::collections::HashMap;

use prost::Message as _;

use crate::export::OpenGroup;

/// The messages of pprof's `profile.proto`, generated from that file by prost-build
/// (`build.rs`).
#[allow(clippy::all, missing_docs)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}
pub use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// The string table: index 0 is "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
}

/// (module, address, the lines: (function id, line) innermost first)
type LocKey = (Option<String>, u64, Vec<(u64, i64)>);

/// The profile of `groups`: sample type `descriptors`/`count`, one sample per group with its
/// count, one location per frame address (inlined frames as extra lines of their caller's
/// location), labels `kind` (and `proto`, `state`, `peer` for sockets) and `pid`.
pub fn profile(
    groups: &[OpenGroup],
    time_nanos: i64,
    duration_nanos: i64,
    comments: &[&str],
) -> Profile {
    let mut strings = Strings::new();
    let mut function: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut location: Vec<Location> = Vec::new();
    let mut location_ids: HashMap<LocKey, u64> = HashMap::new();
    let mut sample: Vec<Sample> = Vec::new();
    // One mapping per binary with the span of its addresses; programs before shared
    // libraries, since pprof names the profile after the first mapping.
    let mut spans: Vec<(String, u64, u64)> = Vec::new();
    for f in groups.iter().flat_map(|g| &g.frames) {
        let Some(m) = &f.module else { continue };
        match spans.iter_mut().find(|(p, _, _)| p == m) {
            Some(e) => {
                e.1 = e.1.min(f.addr);
                e.2 = e.2.max(f.addr);
            }
            None => spans.push((m.clone(), f.addr, f.addr)),
        }
    }
    let is_library = |p: &str| p.rsplit('/').next().is_some_and(|n| n.contains(".so"));
    spans.sort_by_key(|(p, _, _)| is_library(p));
    let mapping_ids: HashMap<String, u64> = spans
        .iter()
        .enumerate()
        .map(|(i, (p, _, _))| (p.clone(), i as u64 + 1))
        .collect();
    let value_type = ValueType {
        r#type: strings.id("descriptors"),
        unit: strings.id("count"),
    };

    for g in groups {
        let mut location_id: Vec<u64> = Vec::new();
        let mut pending: Vec<&crate::symbolize::Frame> = Vec::new();
        for (i, f) in g.frames.iter().enumerate() {
            pending.push(f);
            // A location ends with its non-inlined frame (or with the stack).
            if f.inlined && i + 1 < g.frames.len() {
                continue;
            }
            let mut lines: Vec<(u64, i64)> = Vec::new();
            for p in pending.drain(..) {
                let name = strings.id(p.function.as_deref().unwrap_or("??"));
                let filename = strings.id(p.file.as_deref().unwrap_or(""));
                let next = function.len() as u64 + 1;
                let id = *function_ids.entry((name, filename)).or_insert_with(|| {
                    function.push(Function {
                        id: next,
                        name,
                        system_name: name,
                        filename,
                        ..Function::default()
                    });
                    next
                });
                lines.push((id, i64::from(p.line.unwrap_or(0))));
            }
            let key: LocKey = (f.module.clone(), f.addr, lines);
            if let Some(&id) = location_ids.get(&key) {
                location_id.push(id);
                continue;
            }
            let id = location.len() as u64 + 1;
            location.push(Location {
                id,
                mapping_id: f
                    .module
                    .as_deref()
                    .and_then(|m| mapping_ids.get(m).copied())
                    .unwrap_or(0),
                address: f.addr,
                line: key
                    .2
                    .iter()
                    .map(|&(function_id, line)| Line { function_id, line })
                    .collect(),
                ..Location::default()
            });
            location_ids.insert(key, id);
            location_id.push(id);
        }
        let mut label = Vec::new();
        let mut text = |key: &str, value: &str| {
            label.push(Label {
                key: strings.id(key),
                str: strings.id(value),
                ..Label::default()
            })
        };
        text("kind", g.kind);
        if let Some(p) = &g.proto {
            text("proto", p);
        }
        if let Some(st) = g.state {
            text("state", st);
        }
        if let Some(p) = &g.peer {
            text("peer", p);
        }
        label.push(Label {
            key: strings.id("pid"),
            num: i64::from(g.pid),
            ..Label::default()
        });
        sample.push(Sample {
            location_id,
            value: vec![g.count as i64],
            label,
        });
    }
    let mapping = spans
        .iter()
        .enumerate()
        .map(|(i, (path, lo, hi))| Mapping {
            id: i as u64 + 1,
            memory_start: *lo,
            memory_limit: hi.saturating_add(1),
            filename: strings.id(path),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Mapping::default()
        })
        .collect();
    let comment = comments.iter().map(|c| strings.id(c)).collect();
    Profile {
        sample_type: vec![value_type],
        sample,
        mapping,
        location,
        function,
        string_table: strings.table,
        time_nanos,
        duration_nanos,
        period_type: Some(value_type),
        period: 1,
        comment,
        ..Profile::default()
    }
}

/// The serialized (not yet compressed) profile of `groups` (see [`profile`]).
pub fn encode(
    groups: &[OpenGroup],
    time_nanos: i64,
    duration_nanos: i64,
    comments: &[&str],
) -> Vec<u8> {
    profile(groups, time_nanos, duration_nanos, comments).encode_to_vec()
}
