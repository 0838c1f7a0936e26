//! `fdtrace export FILE --format pprof|folded|svg|jsonl`: a recording for other tools.
//!
//! - `pprof`: the descriptors still open at the end of the recording (or `--at`) as a
//!   gzip-compressed pprof profile (module `pprof`: profile.proto's messages by prost), one
//!   sample per creating stack and labels, for `go tool pprof`.
//! - `folded`: the same stacks in the collapsed format of FlameGraph and inferno
//!   (`root;…;leaf count`).
//! - `svg`: a flame graph of those stacks, drawn by inferno.
//! - `jsonl`: every record of the recording as one JSON object a line, after the header.
use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
};

use crate::{
    model::{Origin, StackId},
    replay::Replay,
    symbolize::{Frame, Symbols},
};
use anyhow::{Context as _, Result, bail};
use fdtrace_record::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// gzip-compressed pprof profile (`go tool pprof FILE`).
    Pprof,
    /// Folded stacks, root first (`frame;frame;frame count`), for flame graph tools.
    Folded,
    /// One JSON object per line: the header, then every record.
    Jsonl,
    /// A flame graph (SVG).
    Svg,
}

/// Descriptors open at one moment that share a process, a creating stack and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenGroup {
    pub pid: u32,
    /// The creating stack, innermost first. Descriptors without one get a single pseudo-frame
    /// (`[pre-existing]`, `[untraced]`, `[unknown stack]`).
    pub frames: Vec<Frame>,
    pub kind: &'static str,
    /// Sockets: protocol (`tcp`, `unix-stream`, …), TCP state and peer, when known.
    pub proto: Option<String>,
    pub state: Option<&'static str>,
    pub peer: Option<String>,
    pub count: u64,
}

/// A frame standing for descriptors without a creating stack.
fn pseudo_frame(name: &str) -> Frame {
    Frame {
        function: Some(name.to_string()),
        file: None,
        line: None,
        addr: 0,
        module: None,
        inlined: false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Stack(StackId),
    /// With the group's pattern (see `preexisting`).
    Preexisting(String),
    Untraced,
}

/// (pid, source, kind, proto, state, peer)
type GroupKey = (
    u32,
    Source,
    &'static str,
    Option<String>,
    Option<&'static str>,
    Option<String>,
);

/// The descriptors open where the replay stopped, grouped like the report (a process that
/// exited counts what it held when it exited); with `min_age_s`, only those at least that old.
/// Pre-existing descriptors are left out unless `preexisting`, and then stand under
/// `[pre-existing]` by their group's pattern (`/var/spool/img-*.jpg`, `tcp to 10.0.0.5:80`).
pub fn open_groups(
    replay: &mut Replay,
    min_age_s: Option<f64>,
    preexisting: bool,
) -> Vec<OpenGroup> {
    let now_default = replay.now_ns();
    let mut counts: BTreeMap<GroupKey, u64> = BTreeMap::new();
    for (&pid, p) in &replay.procs {
        let now_ns = match p.exited_ns {
            Some(t) if t <= now_default => t,
            _ => now_default,
        };
        let mut table = p.table.clone();
        if let Some(min) = min_age_s {
            table.retain_older(now_ns, min);
        }
        for (_, e) in table.iter() {
            let s = e.sock.as_ref();
            let source = match e.origin {
                Origin::Stack(id) => Source::Stack(id),
                Origin::Preexisting if !preexisting => continue,
                Origin::Preexisting => Source::Preexisting(match s {
                    Some(s) => crate::preexisting::socket_pattern(
                        &s.proto_name(),
                        s.peer_text().as_deref(),
                        s.local_text().as_deref(),
                    ),
                    None if e.kind == crate::model::FdKind::Pipe => "pipe".into(),
                    None => crate::preexisting::path_pattern(&e.target),
                }),
                Origin::Untraced => Source::Untraced,
            };
            let peer = s.and_then(|s| {
                if s.accepted {
                    s.peer_host()
                } else {
                    s.peer_text()
                }
            });
            let key = (
                pid,
                source,
                e.kind.as_str(),
                s.map(|s| s.proto_name()),
                s.and_then(|s| s.state_name()),
                peer,
            );
            *counts.entry(key).or_default() += 1;
        }
    }
    let symbols = Symbols::new();
    counts
        .into_iter()
        .map(|((pid, source, kind, proto, state, peer), count)| {
            let frames = match source {
                Source::Stack(id) => {
                    let f = replay.stacks.frames(id, &symbols);
                    if f.is_empty() {
                        vec![pseudo_frame("[unknown stack]")]
                    } else {
                        f
                    }
                }
                Source::Preexisting(pattern) => {
                    vec![pseudo_frame(&pattern), pseudo_frame("[pre-existing]")]
                }
                Source::Untraced => vec![pseudo_frame("[untraced]")],
            };
            OpenGroup {
                pid,
                frames,
                kind,
                proto,
                state,
                peer,
                count,
            }
        })
        .collect()
}

/// A recording (`file`, as of `at` seconds into it or its end) written to `out` in `format`
/// (`min_age`, `preexisting`: which open descriptors, for the formats of stacks).
pub fn export(
    file: &Path,
    at: Option<f64>,
    min_age: Option<f64>,
    preexisting: bool,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<()> {
    if let ExportFormat::Jsonl = format {
        jsonl(file, at, out)?;
    } else {
        let mut replay = Replay::read(file, at, |_, _| {})?;
        if replay.root.is_none() {
            return Err(replay.holds_nothing(file, "export"));
        }
        let groups = open_groups(&mut replay, min_age, preexisting);
        match format {
            ExportFormat::Pprof => {
                let start = replay.header.start_unix_ns as i64;
                let duration = replay
                    .now_ns()
                    .saturating_sub(replay.header.start_monotonic_ns)
                    as i64;
                let comment = format!(
                    "fdtrace: descriptors open {} of {} ({})",
                    match at {
                        Some(at) => format!("{at}s into the recording"),
                        None => "at the end".into(),
                    },
                    file.display(),
                    replay.header.target
                );
                let profile = crate::pprof::encode(&groups, start, duration, &[&comment]);
                let mut gz =
                    flate2::write::GzEncoder::new(&mut *out, flate2::Compression::default());
                gz.write_all(&profile)?;
                gz.finish()?;
            }
            ExportFormat::Folded => out.write_all(folded(&groups).as_bytes())?,
            ExportFormat::Svg => {
                let lines = folded(&groups);
                if lines.is_empty() {
                    bail!(
                        "{}: no descriptor open {}: nothing to draw",
                        file.display(),
                        if at.is_some() { "then" } else { "at the end" }
                    );
                }
                let subtitle = format!(
                    "{} — {}{}",
                    replay.header.target,
                    file.display(),
                    match at {
                        Some(at) => format!(", {at}s into it"),
                        None => String::new(),
                    }
                );
                flamegraph(&lines, &subtitle, out)?;
            }
            ExportFormat::Jsonl => unreachable!(),
        }
    }
    Ok(())
}

/// One JSON line, `{"type":"Open","ts_ns":…,…}` with the fields in the order of their struct,
/// from serde's `{"Open":{…}}` (or from a plain object, for the header).
fn typed_line<T: serde::Serialize>(name: &str, v: &T) -> serde_json::Result<String> {
    let s = serde_json::to_string(v)?;
    let tag = serde_json::to_string(name)?;
    let wrapped = format!("{{{tag}:");
    let inner = s
        .strip_prefix(&wrapped)
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(&s);
    Ok(match inner.strip_prefix('{') {
        Some("}") => format!("{{\"type\":{tag}}}\n"),
        Some(fields) => format!("{{\"type\":{tag},{fields}\n"),
        None => format!("{{\"type\":{tag},\"value\":{inner}}}\n"),
    })
}

/// The header, then every record replayed (up to `at_s`), one JSON object a line.
fn jsonl(path: &Path, at_s: Option<f64>, out: &mut dyn Write) -> Result<()> {
    let mut err: Option<io::Error> = None;
    let mut wrote_header = false;
    let replay = Replay::read(path, at_s, |r, rec: &Record| {
        if err.is_some() {
            return;
        }
        let mut text = String::new();
        if !wrote_header {
            wrote_header = true;
            text += &typed_line("Header", &r.header).unwrap_or_default();
        }
        text += &typed_line(rec.name(), rec).unwrap_or_default();
        if let Err(e) = out.write_all(text.as_bytes()) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e).context("writing the export");
    }
    if !wrote_header {
        out.write_all(typed_line("Header", &replay.header)?.as_bytes())?;
    }
    Ok(())
}

/// The name of a frame in folded stacks: `leak_file leaky.c:20`, `[libc.so.6]` without
/// symbols. `;` separates frames in the format, so it cannot appear in a name.
pub fn frame_name(f: &Frame) -> String {
    let base = crate::frame_label::base;
    let name = match (&f.function, &f.file) {
        (None, _) => match &f.module {
            Some(m) => format!("[{}]", base(m)),
            None => "[unknown]".into(),
        },
        // As perf writes them: a symbol without a source file alone.
        (Some(func), None) => func.clone(),
        _ => crate::frame_label::short(f),
    };
    name.replace(';', ",").replace(['\n', '\r'], " ")
}

/// Collapsed stacks, root first, one `frame;frame;…;leaf count` line per distinct stack, in
/// the order inferno's collapsers write them (sorted).
pub fn folded(groups: &[OpenGroup]) -> String {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for g in groups {
        let names: Vec<String> = g.frames.iter().rev().map(frame_name).collect();
        *stacks.entry(names.join(";")).or_default() += g.count;
    }
    let mut s = String::new();
    for (stack, n) in stacks {
        s += &format!("{stack} {n}\n");
    }
    s
}

/// A flame graph (SVG) of folded stacks.
fn flamegraph(folded: &str, subtitle: &str, out: &mut dyn Write) -> Result<()> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = "Open descriptors by creating stack".into();
    opts.subtitle = Some(subtitle.to_string());
    opts.count_name = "descriptors".into();
    // The same colors for the same functions in every export.
    opts.hash = true;
    opts.deterministic = true;
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), out)
        .context("drawing the flame graph")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;

    fn frame(function: &str, file: &str, line: u32, addr: u64, inlined: bool) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            addr,
            module: Some("/w/leaky".into()),
            inlined,
        }
    }

    fn libc_open() -> Frame {
        Frame {
            function: Some("__libc_open64".into()),
            file: None,
            line: None,
            addr: 0x7f00_0000_1000,
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
            inlined: false,
        }
    }

    fn groups() -> Vec<OpenGroup> {
        let g = |frames: Vec<Frame>, count| OpenGroup {
            pid: 42,
            frames,
            kind: "file",
            proto: None,
            state: None,
            peer: None,
            count,
        };
        vec![
            g(
                vec![
                    libc_open(),
                    frame("leak_file", "/w/leaky.c", 20, 0x1100, false),
                    frame("main", "/w/leaky.c", 60, 0x1200, false),
                ],
                40,
            ),
            g(
                vec![
                    libc_open(),
                    // open_log inlined into leak_stream: one address, two lines.
                    frame("open_log", "/w/log.h", 3, 0x1300, true),
                    frame("leak_stream", "/w/leaky.c", 37, 0x1300, false),
                    frame("main", "/w/leaky.c", 64, 0x1210, false),
                ],
                10,
            ),
            OpenGroup {
                proto: Some("tcp".into()),
                state: Some("CLOSE_WAIT"),
                peer: Some("127.0.0.1:8081".into()),
                kind: "socket",
                ..g(vec![pseudo_frame("[pre-existing]")], 2)
            },
        ]
    }

    #[test]
    fn frame_names() {
        assert_eq!(
            frame_name(&frame("leak_file", "/w/leaky.c", 20, 1, false)),
            "leak_file leaky.c:20"
        );
        assert_eq!(frame_name(&libc_open()), "__libc_open64");
        let unknown = Frame {
            function: None,
            file: None,
            line: None,
            addr: 5,
            module: Some("/usr/lib/libz.so.1".into()),
            inlined: false,
        };
        assert_eq!(frame_name(&unknown), "[libz.so.1]");
        let f = Frame {
            module: None,
            ..unknown
        };
        assert_eq!(frame_name(&f), "[unknown]");
        // `;` separates frames: it cannot stay in a name.
        let f = frame("<[u8; 4] as Foo>::bar", "/w/x.rs", 1, 1, false);
        assert_eq!(frame_name(&f), "<[u8, 4] as Foo>::bar x.rs:1");
    }

    #[test]
    fn folded_stacks_are_root_first_and_merged() {
        let mut gs = groups();
        // The same stack in another process adds up.
        gs.push(OpenGroup {
            pid: 43,
            count: 2,
            ..gs[0].clone()
        });
        let text = folded(&gs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "[pre-existing] 2",
                "main leaky.c:60;leak_file leaky.c:20;__libc_open64 42",
                "main leaky.c:64;leak_stream leaky.c:37;open_log log.h:3;__libc_open64 10",
            ]
        );
        assert_eq!(folded(&[]), "");
    }

    /// A protobuf reader of its own for the tests (not prost's, which wrote the profile): each
    /// field as (number, varint or bytes).
    #[derive(Debug, Clone, PartialEq)]
    enum F {
        V(u64),
        B(Vec<u8>),
    }

    fn read_varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    fn decode(b: &[u8]) -> Vec<(u32, F)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let key = read_varint(b, &mut i);
            let field = (key >> 3) as u32;
            match key & 7 {
                0 => out.push((field, F::V(read_varint(b, &mut i)))),
                2 => {
                    let n = read_varint(b, &mut i) as usize;
                    out.push((field, F::B(b[i..i + n].to_vec())));
                    i += n;
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }

    fn get(fields: &[(u32, F)], n: u32) -> Vec<F> {
        fields
            .iter()
            .filter(|(f, _)| *f == n)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn uint(fields: &[(u32, F)], n: u32) -> u64 {
        match get(fields, n).first() {
            Some(F::V(v)) => *v,
            None => 0,
            other => panic!("field {n}: {other:?}"),
        }
    }

    fn bytes(f: &F) -> &[u8] {
        match f {
            F::B(b) => b,
            other => panic!("not bytes: {other:?}"),
        }
    }

    fn packed(fields: &[(u32, F)], n: u32) -> Vec<u64> {
        let mut v = Vec::new();
        for f in get(fields, n) {
            let b = bytes(&f);
            let mut i = 0;
            while i < b.len() {
                v.push(read_varint(b, &mut i));
            }
        }
        v
    }

    #[test]
    fn profile_decodes_back() {
        let bytes_ = crate::pprof::encode(&groups(), 1_000, 2_000, &["a comment"]);
        let p = decode(&bytes_);
        let strings: Vec<String> = get(&p, 6)
            .iter()
            .map(|f| String::from_utf8(bytes(f).to_vec()).unwrap())
            .collect();
        assert_eq!(strings[0], "");
        let s = |i: u64| strings[i as usize].as_str();
        // Sample type descriptors/count, and the same as the period type.
        let st = decode(bytes(&get(&p, 1)[0]));
        assert_eq!((s(uint(&st, 1)), s(uint(&st, 2))), ("descriptors", "count"));
        assert_eq!(get(&p, 11), get(&p, 1));
        assert_eq!((uint(&p, 9), uint(&p, 10), uint(&p, 12)), (1_000, 2_000, 1));
        assert_eq!(s(packed(&p, 13)[0]), "a comment");
        // Functions by id: name and file.
        let functions: HashMap<u64, (String, String)> = get(&p, 5)
            .iter()
            .map(|f| {
                let f = decode(bytes(f));
                assert_eq!(uint(&f, 2), uint(&f, 3), "system name");
                (
                    uint(&f, 1),
                    (s(uint(&f, 2)).to_string(), s(uint(&f, 4)).to_string()),
                )
            })
            .collect();
        // Locations by id: address, mapping and lines (function name, line).
        let mappings: Vec<Vec<(u32, F)>> = get(&p, 3).iter().map(|m| decode(bytes(m))).collect();
        assert_eq!(mappings.len(), 2, "leaky and libc");
        // The program first: pprof names the profile after it.
        assert_eq!(s(uint(&mappings[0], 5)), "/w/leaky");
        for m in &mappings {
            assert!(uint(m, 2) < uint(m, 3));
            for flag in 7..=10 {
                assert_eq!(uint(m, flag), 1);
            }
        }
        let locations: HashMap<u64, (u64, Vec<(String, u64)>)> = get(&p, 4)
            .iter()
            .map(|l| {
                let l = decode(bytes(l));
                let lines = get(&l, 4)
                    .iter()
                    .map(|line| {
                        let line = decode(bytes(line));
                        (functions[&uint(&line, 1)].0.clone(), uint(&line, 2))
                    })
                    .collect();
                (uint(&l, 1), (uint(&l, 3), lines))
            })
            .collect();
        assert_eq!(functions.len(), 6, "{functions:?}");
        assert_eq!(locations.len(), 6, "{locations:?}");
        let samples: Vec<Vec<(u32, F)>> = get(&p, 2).iter().map(|x| decode(bytes(x))).collect();
        assert_eq!(samples.len(), 3);
        let stack = |sample: &[(u32, F)]| -> Vec<Vec<(String, u64)>> {
            packed(sample, 1)
                .iter()
                .map(|id| locations[id].1.clone())
                .collect()
        };
        let labels = |sample: &[(u32, F)]| -> Vec<(String, String)> {
            get(sample, 3)
                .iter()
                .map(|l| {
                    let l = decode(bytes(l));
                    let v = if uint(&l, 2) != 0 {
                        s(uint(&l, 2)).to_string()
                    } else {
                        uint(&l, 3).to_string()
                    };
                    (s(uint(&l, 1)).to_string(), v)
                })
                .collect()
        };
        let l = |f: &str, n: u64| (f.to_string(), n);
        assert_eq!(packed(&samples[0], 2), vec![40]);
        assert_eq!(
            stack(&samples[0]),
            vec![
                vec![l("__libc_open64", 0)],
                vec![l("leak_file", 20)],
                vec![l("main", 60)]
            ]
        );
        assert_eq!(
            labels(&samples[0]),
            vec![
                ("kind".to_string(), "file".to_string()),
                ("pid".to_string(), "42".to_string())
            ]
        );
        // The inlined frame is the first line of its caller's location.
        assert_eq!(packed(&samples[1], 2), vec![10]);
        let st = stack(&samples[1]);
        assert_eq!(st[1], vec![l("open_log", 3), l("leak_stream", 37)]);
        assert_eq!(packed(&samples[1], 1)[0], packed(&samples[0], 1)[0]);
        // Sockets carry their state and peer.
        assert_eq!(packed(&samples[2], 2), vec![2]);
        assert_eq!(stack(&samples[2]), vec![vec![l("[pre-existing]", 0)]]);
        let lb = labels(&samples[2]);
        for want in [
            ("kind", "socket"),
            ("proto", "tcp"),
            ("state", "CLOSE_WAIT"),
            ("peer", "127.0.0.1:8081"),
        ] {
            assert!(
                lb.contains(&(want.0.to_string(), want.1.to_string())),
                "{lb:?}"
            );
        }
        assert_eq!(functions[&1].1, "");
        assert!(
            functions
                .values()
                .any(|(n, f)| n == "leak_file" && f == "/w/leaky.c")
        );
    }

    #[test]
    fn jsonl_objects_carry_their_type() {
        let rec = Record::Close {
            ts_ns: 5,
            tgid: 1,
            tid: 2,
            fd: 3,
        };
        let line = typed_line(rec.name(), &rec).unwrap();
        assert_eq!(
            line,
            "{\"type\":\"Close\",\"ts_ns\":5,\"tgid\":1,\"tid\":2,\"fd\":3}\n"
        );
        let h = fdtrace_record::Header {
            target: "pid 1".into(),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&typed_line("Header", &h).unwrap()).unwrap();
        assert_eq!(
            (&v["type"], &v["target"]),
            (&Value::from("Header"), &Value::from("pid 1"))
        );
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            Empty {},
        }
        assert_eq!(
            typed_line("Unit", &E::Unit).unwrap(),
            "{\"type\":\"Unit\",\"value\":\"Unit\"}\n"
        );
        assert_eq!(
            typed_line("Empty", &E::Empty {}).unwrap(),
            "{\"type\":\"Empty\"}\n"
        );
    }
}
