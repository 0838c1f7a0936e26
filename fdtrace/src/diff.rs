//! `fdtrace diff A B`: which call sites grew between two recordings.
//!
//! Each recording is reported as `fdtrace report` would (every process); call sites are matched
//! across the two by their first frame in the program's own code (function, file, line), or by
//! their whole stack when they have none, since addresses differ from run to run.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Result;
use serde::Serialize;

use crate::{
    replay::Replay,
    report::{Report, Site},
};

/// What makes two call sites of different recordings the same.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SiteKey {
    /// The first frame in the program's own code: function, file, line.
    User(String, String, u32),
    /// Every frame (`function file:line (module)`), innermost first.
    Frames(Vec<String>),
}

/// The key of a report's call site.
pub fn site_key(s: &Site) -> SiteKey {
    if let Some(f) = s.user_frame.and_then(|i| s.frames.get(i))
        && let (Some(func), Some(file), Some(line)) = (&f.function, &f.file, f.line)
    {
        return SiteKey::User(func.clone(), file.clone(), line);
    }
    SiteKey::Frames(s.frames.iter().map(crate::frame_label::key).collect())
}

/// How people read a site: `leak_file at /w/leaky.c:20`.
fn site_label(key: &SiteKey) -> String {
    match key {
        SiteKey::User(func, file, line) => format!("{func} at {file}:{line}"),
        SiteKey::Frames(frames) => match frames.first() {
            Some(f) => format!("{f} (no frame of the program's own)"),
            None => "an unknown call site".into(),
        },
    }
}

#[derive(Debug, Serialize)]
pub struct DiffSite {
    /// `function at file:line` of the site's first frame in the program's own code.
    pub site: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The kind of descriptors (`file`, `socket`, …) in the recording that has more.
    pub kind: &'static str,
    /// Descriptors of this site still open at the end of A and of B.
    pub count_a: u64,
    pub count_b: u64,
    /// `count_b - count_a`: positive when the site grew.
    pub delta: i64,
    /// The stack of one of its descriptors (from B when B has it), innermost first.
    pub frames: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    /// Descriptors opened while traced and still open at the end, over every site.
    pub total_a: u64,
    pub total_b: u64,
    pub delta: i64,
    /// Every site of either recording, largest growth first.
    pub sites: Vec<DiffSite>,
}

/// Open descriptors per site of a report and the processes in it.
fn collect<'r>(r: &'r Report, out: &mut BTreeMap<SiteKey, (u64, &'r Site)>) {
    for s in &r.sites {
        let e = out.entry(site_key(s)).or_insert((0, s));
        e.0 += s.count as u64;
        if s.count > e.1.count {
            e.1 = s;
        }
    }
    for p in &r.processes {
        collect(p, out);
    }
}

/// Compare the call sites of two reports.
pub fn compare(a: &Report, b: &Report, a_name: &str, b_name: &str) -> Diff {
    let (mut ma, mut mb) = (BTreeMap::new(), BTreeMap::new());
    collect(a, &mut ma);
    collect(b, &mut mb);
    let mut keys: Vec<&SiteKey> = ma.keys().chain(mb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut sites: Vec<DiffSite> = keys
        .into_iter()
        .map(|k| {
            let ca = ma.get(k).map_or(0, |e| e.0);
            let cb = mb.get(k).map_or(0, |e| e.0);
            let example = match (ma.get(k), mb.get(k)) {
                (Some(x), Some(y)) if x.1.count > y.1.count => x.1,
                (_, Some(y)) => y.1,
                (Some(x), None) => x.1,
                (None, None) => unreachable!("a key of one of the two"),
            };
            let (function, file, line) = match k {
                SiteKey::User(f, file, l) => (Some(f.clone()), Some(file.clone()), Some(*l)),
                SiteKey::Frames(_) => (None, None, None),
            };
            DiffSite {
                site: site_label(k),
                function,
                file,
                line,
                kind: example.kind,
                count_a: ca,
                count_b: cb,
                delta: cb as i64 - ca as i64,
                frames: example.frames.iter().map(crate::frame_label::key).collect(),
            }
        })
        .collect();
    sites.sort_by(|x, y| {
        y.delta
            .cmp(&x.delta)
            .then(y.count_b.cmp(&x.count_b))
            .then_with(|| x.site.cmp(&y.site))
    });
    let total_a: u64 = ma.values().map(|e| e.0).sum();
    let total_b: u64 = mb.values().map(|e| e.0).sum();
    Diff {
        a: a_name.to_string(),
        b: b_name.to_string(),
        total_a,
        total_b,
        delta: total_b as i64 - total_a as i64,
        sites,
    }
}

fn report_of(path: &Path) -> Result<Report> {
    let mut replay = Replay::read(path, None, |_, _| {})?;
    match replay.report(None) {
        Some(r) => Ok(r),
        None => Err(replay.holds_nothing(path, "compare")),
    }
}

/// The comparison for people.
pub fn render_text(d: &Diff) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "call sites of {} (A) and {} (B): descriptors opened while traced and still open at the end, largest growth first\n",
        d.a, d.b
    );
    let _ = writeln!(s, "{:>8} {:>8} {:>8}  call site", "A", "B", "delta");
    for x in &d.sites {
        let _ = writeln!(
            s,
            "{:>8} {:>8} {:>8}  {} ({})",
            x.count_a,
            x.count_b,
            format!("{:+}", x.delta),
            x.site,
            x.kind
        );
    }
    let _ = writeln!(
        s,
        "{:>8} {:>8} {:>8}  total",
        d.total_a,
        d.total_b,
        format!("{:+}", d.delta)
    );
    s
}

/// The comparison of the recordings at `a` and `b`.
pub fn diff_files(a: &Path, b: &Path) -> Result<Diff> {
    let (ra, rb) = (report_of(a)?, report_of(b)?);
    Ok(compare(
        &ra,
        &rb,
        &a.display().to_string(),
        &b.display().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::JsonFrame;
    use crate::report::Meta;

    fn frame(function: &str, file: Option<&str>, line: u32, addr: u64) -> JsonFrame {
        JsonFrame {
            function: Some(function.into()),
            file: file.map(String::from),
            line: file.map(|_| line),
            addr: format!("{addr:#x}"),
            module: Some("/w/leaky".into()),
            inlined: false,
        }
    }

    fn site(count: usize, frames: Vec<JsonFrame>, user_frame: Option<usize>) -> Site {
        Site {
            count,
            kind: "file",
            example: String::new(),
            user_frame,
            truncated: false,
            method: "dwarf",
            verdict: crate::verdict::Verdict::Unknown,
            growth_per_min: None,
            oldest_age_s: None,
            newest_age_s: None,
            frames,
            sockets: Vec::new(),
            hint: None,
            fds: Vec::new(),
        }
    }

    fn report(sites: Vec<Site>) -> Report {
        Report {
            meta: Meta {
                pid: 1,
                parent: None,
                command: None,
                duration_s: 1.0,
                target_exited: false,
                lost_events: 0,
                stack_errors: 0,
                missing_tracepoints: Vec::new(),
                rlimit_nofile: None,
                container: None,
            },
            open_count: 0,
            shown: None,
            growth_per_min: None,
            exhaustion_eta_s: None,
            sites,
            preexisting: Vec::new(),
            preexisting_groups: Vec::new(),
            untraced: Vec::new(),
            drift: None,
            model: Default::default(),
            failed_opens: Vec::new(),
            failure_totals: Vec::new(),
            tcp_states: Default::default(),
            processes: Vec::new(),
            recording: None,
            live_updates_dropped: None,
            stray_events: None,
            runtime_hint: None,
        }
    }

    fn leak(count: usize, addr: u64) -> Site {
        site(
            count,
            vec![
                frame("__libc_open64", None, 0, 0x7f00),
                frame("leak_file", Some("/w/leaky.c"), 20, addr),
            ],
            Some(1),
        )
    }

    #[test]
    fn sites_match_by_user_frame_and_sort_by_growth() {
        // Addresses differ between runs; the user frame does not.
        let a = report(vec![
            leak(10, 0x1000),
            site(5, vec![frame("[x]", None, 0, 1)], None),
        ]);
        let mut b = report(vec![site(
            3,
            vec![
                frame("__libc_open64", None, 0, 0x7f00),
                frame("leak_stream", Some("/w/leaky.c"), 37, 0x2000),
            ],
            Some(1),
        )]);
        // With -f, the same line in a child adds to it.
        let mut child = report(vec![leak(30, 0x5000)]);
        child.meta.pid = 2;
        b.sites.push(leak(10, 0x9000));
        b.processes.push(child);
        let d = compare(&a, &b, "a", "b");
        let rows: Vec<(String, u64, u64, i64)> = d
            .sites
            .iter()
            .map(|s| (s.site.clone(), s.count_a, s.count_b, s.delta))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("leak_file at /w/leaky.c:20".into(), 10, 40, 30),
                ("leak_stream at /w/leaky.c:37".into(), 0, 3, 3),
                (
                    "[x] (/w/leaky) (no frame of the program's own)".into(),
                    5,
                    0,
                    -5
                ),
            ]
        );
        assert_eq!((d.total_a, d.total_b, d.delta), (15, 43, 28));
        assert_eq!(d.sites[0].line, Some(20));
        let text = render_text(&d);
        assert!(
            text.contains("      10       40      +30  leak_file at /w/leaky.c:20 (file)"),
            "{text}"
        );
        assert!(text.contains("      15       43      +28  total"), "{text}");
    }

    #[test]
    fn go_marker_frames_key_alike_whichever_goroutine_asked() {
        let joined = |goid: u64| {
            let mut marker = frame(&format!("[requested by goroutine {goid}]"), None, 0, 0);
            marker.module = None;
            site(
                3,
                vec![
                    frame("net.socket", Some("/go/src/net/sock.go"), 19, 0x401000),
                    marker,
                    frame(
                        "net/http.(*Client).Get",
                        Some("/go/src/net/http/client.go"),
                        479,
                        0x402000,
                    ),
                ],
                None,
            )
        };
        assert_eq!(site_key(&joined(19)), site_key(&joined(2041)));
        assert_ne!(
            site_key(&joined(19)),
            site_key(&site(
                3,
                vec![frame(
                    "net.socket",
                    Some("/go/src/net/sock.go"),
                    19,
                    0x401000
                )],
                None
            ))
        );
        // Started by another goroutine in each recording: the same site.
        let created = |text: &str| {
            let mut marker = frame(text, None, 0, 0);
            marker.module = None;
            site(
                1,
                vec![
                    frame("net.socket", Some("/go/src/net/sock.go"), 19, 0x401000),
                    marker,
                    frame(
                        "database/sql.OpenDB",
                        Some("/go/src/database/sql/sql.go"),
                        792,
                        0x403000,
                    ),
                ],
                None,
            )
        };
        assert_eq!(
            site_key(&created("[created by goroutine 1]")),
            site_key(&created("[created by goroutine 77]"))
        );
        assert_eq!(
            site_key(&created("[created by goroutine 1]")),
            site_key(&created("[created by a goroutine]"))
        );
        assert_ne!(
            site_key(&created("[created by goroutine 1]")),
            site_key(&joined(1))
        );
    }
}
