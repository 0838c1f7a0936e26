//! `fdtrace report FILE --timeline [--html OUT.html]`: how the number of open descriptors grew
//! over a recording, overall and for the call sites holding the most at its end. A leak is a
//! line that only goes up.
//!
//! The recording is replayed once; just before each record is applied, every sample moment it
//! passes is taken from the tables as they are (one pass over the open descriptors per record
//! that crosses a moment). Without `--interval` the samples start 10 ms apart and the interval
//! doubles whenever they would pass [`MAX_SAMPLES`], so any recording gets a few hundred.
use std::{collections::HashMap, fmt::Write as _, path::Path, time::Duration};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    model::StackId,
    replay::Replay,
    symbolize::{Frame, Symbols},
    user_frame::user_frame,
};

/// Samples kept when the interval is chosen automatically.
pub const MAX_SAMPLES: usize = 400;
/// The most samples an explicit `--interval` may ask for.
const MAX_FIXED_SAMPLES: usize = 100_000;
const FIRST_INTERVAL_NS: u64 = 10_000_000;
/// Call sites drawn: the ones with the most descriptors open at the end.
pub const TOP_SITES: usize = 5;

type Counts = HashMap<StackId, u64>;

/// Samples of the per-stack counts at `k * interval_ns` after the start.
struct Sampler {
    interval_ns: u64,
    fixed: bool,
    next_k: u64,
    samples: Vec<(u64, Counts)>,
    overflow: bool,
}

impl Sampler {
    fn new(interval: Option<Duration>) -> Self {
        Self {
            interval_ns: interval
                .map(|d| (d.as_nanos() as u64).max(1))
                .unwrap_or(FIRST_INTERVAL_NS),
            fixed: interval.is_some(),
            next_k: 0,
            samples: Vec::new(),
            overflow: false,
        }
    }

    /// Take the samples due up to `until_ns` (strictly before it unless `inclusive`), all with
    /// the counts `counts` gives (asked once, only when a sample is due).
    fn take(&mut self, until_ns: u64, inclusive: bool, counts: impl FnOnce() -> Counts) {
        let mut counts = Some(counts);
        let mut now: Option<Counts> = None;
        loop {
            let t = self.next_k.saturating_mul(self.interval_ns);
            if self.overflow || t > until_ns || (t == until_ns && !inclusive) {
                return;
            }
            if now.is_none() {
                now = counts.take().map(|f| f());
            }
            self.samples.push((t, now.clone().unwrap_or_default()));
            self.next_k += 1;
            if self.fixed {
                self.overflow = self.samples.len() > MAX_FIXED_SAMPLES;
            } else if self.samples.len() > MAX_SAMPLES {
                // Every other sample is a sample of twice the interval.
                self.interval_ns *= 2;
                self.samples = std::mem::take(&mut self.samples)
                    .into_iter()
                    .step_by(2)
                    .collect();
                self.next_k = self.next_k.div_ceil(2);
            }
        }
    }
}

/// The growth of the open descriptors over a recording.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub file: String,
    /// What was recorded (the recorder's description of its target).
    pub target: String,
    /// Seconds between samples (the last sample is the end of the recording or `--at`).
    pub interval_s: f64,
    /// Moment of each sample, seconds after the recording began.
    pub times_s: Vec<f64>,
    /// Descriptors opened while traced and still open (every call site, every process; those
    /// open before tracing began are not counted).
    pub total: Vec<u64>,
    /// The call sites with the most descriptors open at the end (at most 5), largest first.
    pub sites: Vec<TimelineSite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimelineSite {
    /// `function file:line` of the site's first frame in the program's own code.
    pub label: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The creating stack's id in the recording.
    pub stack_id: StackId,
    /// Open descriptors of this site at each sample.
    pub counts: Vec<u64>,
}

impl TimelineSite {
    /// Never went down and ended higher than it began: what a leak looks like.
    pub fn only_grows(&self) -> bool {
        self.counts.windows(2).all(|w| w[0] <= w[1]) && self.counts.last() > self.counts.first()
    }
}

/// The frame naming a site: its first frame in the program's own code, else its innermost.
fn site_frame(frames: &[Frame]) -> Option<&Frame> {
    user_frame(frames)
        .and_then(|i| frames.get(i))
        .or_else(|| frames.first())
}

/// `leak_file leaky.c:20`.
pub fn label(frames: &[Frame], stack_id: StackId) -> String {
    let Some(f) = site_frame(frames) else {
        return format!("stack {stack_id}");
    };
    crate::frame_label::short(f)
}

/// Replay `path` (up to `at_s`) and sample it.
pub fn build(path: &Path, at_s: Option<f64>, interval: Option<Duration>) -> Result<Timeline> {
    let mut sampler = Sampler::new(interval);
    let mut replay = Replay::read_with(
        path,
        at_s,
        |r, rec| {
            if let Some(ts) = rec.ts_ns() {
                let rel = ts.saturating_sub(r.header.start_monotonic_ns);
                sampler.take(rel, false, || r.open_per_stack());
            }
        },
        |_, _| {},
    )?;
    if replay.root.is_none() {
        return Err(replay.holds_nothing(path, "report"));
    }
    let end = replay
        .now_ns()
        .saturating_sub(replay.header.start_monotonic_ns);
    let last = replay.open_per_stack();
    sampler.take(end, true, || last.clone());
    if sampler.overflow {
        bail!(
            "--interval {}s gives more than {MAX_FIXED_SAMPLES} samples: pick a longer one",
            sampler.interval_ns as f64 / 1e9
        );
    }
    if sampler.samples.last().is_none_or(|(t, _)| *t < end) {
        sampler.samples.push((end, last.clone()));
    }
    // The sites with the most open at the end.
    let mut top: Vec<(StackId, u64)> = last.iter().map(|(&id, &n)| (id, n)).collect();
    top.sort_by_key(|&(id, n)| (std::cmp::Reverse(n), id));
    top.truncate(TOP_SITES);
    let symbols = Symbols::new();
    let mut sites: Vec<TimelineSite> = top
        .iter()
        .map(|&(id, _)| {
            let frames = replay.stacks.frames(id, &symbols);
            let f = site_frame(&frames);
            TimelineSite {
                label: label(&frames, id),
                function: f.and_then(|f| f.function.clone()),
                file: f.and_then(|f| f.file.clone()),
                line: f.and_then(|f| f.line),
                stack_id: id,
                counts: sampler
                    .samples
                    .iter()
                    .map(|(_, c)| c.get(&id).copied().unwrap_or(0))
                    .collect(),
            }
        })
        .collect();
    // Two stacks through the same line (different callers) keep apart by their ids.
    let labels: Vec<String> = sites.iter().map(|s| s.label.clone()).collect();
    for s in &mut sites {
        if labels.iter().filter(|l| **l == s.label).count() > 1 {
            s.label = format!("{} (stack {})", s.label, s.stack_id);
        }
    }
    Ok(Timeline {
        file: path.display().to_string(),
        target: replay.header.target.clone(),
        interval_s: sampler.interval_ns as f64 / 1e9,
        times_s: sampler
            .samples
            .iter()
            .map(|(t, _)| *t as f64 / 1e9)
            .collect(),
        total: sampler
            .samples
            .iter()
            .map(|(_, c)| c.values().sum())
            .collect(),
        sites,
    })
}

/// Rows of the text table: every sample, or about 20 of them (the last always) when `thin`.
fn rows(n: usize, thin: bool) -> Vec<usize> {
    let step = if thin { n.div_ceil(20).max(1) } else { 1 };
    let mut v: Vec<usize> = (0..n).step_by(step).collect();
    if n > 0 && v.last() != Some(&(n - 1)) {
        v.push(n - 1);
    }
    v
}

/// The table for people.
pub fn render_text(t: &Timeline, thin: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "timeline of {} ({}): descriptors opened while traced and still open",
        t.file, t.target
    );
    if t.sites.is_empty() {
        let _ = writeln!(s, "no call site holds a descriptor at the end");
    }
    for (i, site) in t.sites.iter().enumerate() {
        let first = site.counts.first().copied().unwrap_or(0);
        let last = site.counts.last().copied().unwrap_or(0);
        let peak = site.counts.iter().copied().max().unwrap_or(0);
        let shape = if site.only_grows() {
            "only grew".to_string()
        } else if peak > last {
            format!("peaked at {peak}")
        } else {
            "went up and down".to_string()
        };
        let path = match (&site.file, site.line) {
            (Some(f), Some(l)) if f.contains('/') => format!(" [{f}:{l}]"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  #{} {}: {first} -> {last}, {shape}{path}",
            i + 1,
            site.label
        );
    }
    let _ = write!(s, "\n{:>10} {:>7}", "time", "total");
    for i in 0..t.sites.len() {
        let _ = write!(s, " {:>7}", format!("#{}", i + 1));
    }
    s.push('\n');
    let decimals = if t.interval_s >= 1.0 { 1 } else { 2 };
    for i in rows(t.times_s.len(), thin) {
        let _ = write!(
            s,
            "{:>10} {:>7}",
            format!("{:.*}s", decimals, t.times_s[i]),
            t.total[i]
        );
        for site in &t.sites {
            let _ = write!(s, " {:>7}", site.counts[i]);
        }
        s.push('\n');
    }
    s
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o += "&amp;",
            '<' => o += "&lt;",
            '>' => o += "&gt;",
            '"' => o += "&quot;",
            '\'' => o += "&#39;",
            c => o.push(c),
        }
    }
    o
}

/// A round step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `range`.
fn nice_step(range: f64, ticks: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

const COLORS: [&str; TOP_SITES] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"];
const TOTAL_COLOR: &str = "#333333";

/// The chart: an SVG with axes, one line for the total and one per site, and a legend.
pub fn render_svg(t: &Timeline) -> String {
    let (w, plot_h) = (960.0, 360.0);
    let (ml, mr, mt) = (70.0, 30.0, 20.0);
    let pw = w - ml - mr;
    let legend_top = mt + plot_h + 55.0;
    let h = legend_top + 24.0 * (t.sites.len() as f64 + 1.0) + 10.0;
    let t_max = t.times_s.last().copied().unwrap_or(0.0).max(1e-3);
    let y_top = t.total.iter().copied().max().unwrap_or(0).max(1) as f64;
    let y_step = nice_step(y_top, 6.0).max(1.0);
    // Some room above the highest line.
    let y_max = (y_top * 1.05 / y_step).ceil() * y_step;
    let x = |s: f64| ml + s / t_max * pw;
    let y = |v: f64| mt + plot_h - v / y_max * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12" role="img" aria-label="open descriptors over time">"#
    );
    // Grid and y axis.
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 8.0,
            yy + 4.0,
            fmt_tick(v, y_step)
        );
        v += y_step;
    }
    // x axis.
    let x_step = nice_step(t_max, 10.0);
    let mut v = 0.0;
    while v <= t_max * (1.0 + 1e-9) {
        let xx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            mt + plot_h,
            mt + plot_h + 5.0,
            mt + plot_h + 19.0,
            fmt_tick(v, x_step)
        );
        v += x_step;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{:.1}" stroke="#333"/><line x1="{ml}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        mt + plot_h,
        mt + plot_h,
        ml + pw,
        mt + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the recording began</text>"#,
        ml + pw / 2.0,
        mt + plot_h + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">open descriptors</text>"#,
        mt + plot_h / 2.0
    );
    // The lines, the total first (underneath).
    // A line with the same values as one drawn before it (a site holding every descriptor
    // has the total's line) is dashed, so that both can be seen and the legend says why.
    let same_as = |i: usize| -> Option<String> {
        let counts = &t.sites[i].counts;
        if *counts == t.total {
            return Some("the total".into());
        }
        t.sites[..i]
            .iter()
            .position(|o| o.counts == *counts)
            .map(|j| format!("#{}", j + 1))
    };
    let dash = |i: usize| {
        same_as(i)
            .map(|_| r#" stroke-dasharray="8 5""#)
            .unwrap_or("")
    };
    let line = |s: &mut String, values: &[u64], color: &str, width: f64, name: &str, dash: &str| {
        let pts: Vec<String> = t
            .times_s
            .iter()
            .zip(values)
            .map(|(&tt, &n)| format!("{:.1},{:.1}", x(tt), y(n as f64)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}"{dash} stroke-linejoin="round" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(name)
        );
    };
    line(
        &mut s,
        &t.total,
        TOTAL_COLOR,
        3.0,
        "total opened while traced",
        "",
    );
    // Sites in order, so that a dashed line lies on the line it repeats.
    for (i, site) in t.sites.iter().enumerate() {
        line(&mut s, &site.counts, COLORS[i], 2.0, &site.label, dash(i));
    }
    // Legend.
    let mut entries: Vec<(String, &str, String, &str)> = vec![(
        "total (every call site)".into(),
        TOTAL_COLOR,
        format!("{} at the end", t.total.last().copied().unwrap_or(0)),
        "",
    )];
    for (i, site) in t.sites.iter().enumerate() {
        let last = site.counts.last().copied().unwrap_or(0);
        entries.push((
            site.label.clone(),
            COLORS[i],
            format!(
                "{last} at the end{}{}",
                if site.only_grows() {
                    ", only grew: a leak"
                } else {
                    ""
                },
                match same_as(i) {
                    Some(other) => format!(" (dashed: the same counts as {other})"),
                    None => String::new(),
                }
            ),
            dash(i),
        ));
    }
    for (i, (name, color, note, dash)) in entries.iter().enumerate() {
        let yy = legend_top + 24.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{color}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}"><tspan font-weight="bold">{}</tspan>: {}</text>"#,
            ml + 30.0,
            ml + 40.0,
            yy + 4.0,
            esc(name),
            esc(note)
        );
    }
    s += "</svg>\n";
    s
}

/// A self-contained page (no scripts, nothing fetched) with the chart and the table.
pub fn render_html(t: &Timeline) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>fdtrace timeline: {}</title>",
        esc(&t.target)
    );
    s += "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}th{background:#f4f4f4}td.l,th.l{text-align:left}</style>\n</head>\n<body>\n";
    let _ = writeln!(
        s,
        "<h1>Open descriptors over time</h1>\n<p>Recording <code>{}</code> of <code>{}</code>: descriptors opened while traced and still open, in total and for the {} call site{} holding the most at the end. A leak is a line that only goes up.</p>",
        esc(&t.file),
        esc(&t.target),
        t.sites.len(),
        if t.sites.len() == 1 { "" } else { "s" }
    );
    s += &render_svg(t);
    s += "<h2>Call sites</h2>\n<table>\n<tr><th>#</th><th class=\"l\">site</th><th class=\"l\">file</th><th>at start</th><th>peak</th><th>at end</th></tr>\n";
    for (i, site) in t.sites.iter().enumerate() {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&site.label),
            esc(&match (&site.file, site.line) {
                (Some(f), Some(l)) => format!("{f}:{l}"),
                (Some(f), None) => f.clone(),
                _ => String::new(),
            }),
            site.counts.first().copied().unwrap_or(0),
            site.counts.iter().copied().max().unwrap_or(0),
            site.counts.last().copied().unwrap_or(0)
        );
    }
    s += "</table>\n<h2>Samples</h2>\n<table>\n<tr><th>time (s)</th><th>total</th>";
    for (i, site) in t.sites.iter().enumerate() {
        let _ = write!(s, "<th title=\"{}\">#{}</th>", esc(&site.label), i + 1);
    }
    s += "</tr>\n";
    for i in rows(t.times_s.len(), true) {
        let _ = write!(s, "<tr><td>{:.2}</td><td>{}</td>", t.times_s[i], t.total[i]);
        for site in &t.sites {
            let _ = write!(s, "<td>{}</td>", site.counts[i]);
        }
        s += "</tr>\n";
    }
    s += "</table>\n</body>\n</html>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(StackId, u64)]) -> Counts {
        pairs.iter().copied().collect()
    }

    #[test]
    fn samples_see_the_state_before_the_record_that_passes_them() {
        let mut s = Sampler::new(Some(Duration::from_millis(100)));
        // A record at 0.25 s: samples at 0, 0.1 and 0.2 see the state before it.
        s.take(250_000_000, false, || counts(&[]));
        // At 0.3 s exactly: not yet the 0.3 s sample (it includes records at 0.3 s).
        s.take(300_000_000, false, || counts(&[(1, 1)]));
        s.take(450_000_000, false, || counts(&[(1, 2)]));
        s.take(500_000_000, true, || counts(&[(1, 3)]));
        let got: Vec<(u64, u64)> = s
            .samples
            .iter()
            .map(|(t, c)| (t / 1_000_000, c.get(&1).copied().unwrap_or(0)))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0), (100, 0), (200, 0), (300, 2), (400, 2), (500, 3)]
        );
    }

    #[test]
    fn automatic_interval_doubles_and_keeps_every_other_sample() {
        let mut s = Sampler::new(None);
        let n = 10_000_000_000u64; // 10 s
        s.take(n, true, || counts(&[(7, 1)]));
        assert!(s.samples.len() <= MAX_SAMPLES, "{}", s.samples.len());
        assert!(s.samples.len() > MAX_SAMPLES / 2 - 1, "{}", s.samples.len());
        // Still evenly spaced from 0.
        for (k, (t, _)) in s.samples.iter().enumerate() {
            assert_eq!(*t, k as u64 * s.interval_ns);
        }
        assert_eq!(s.interval_ns, 40_000_000);
        assert_eq!(s.samples.last().unwrap().0, n);
    }

    #[test]
    fn only_grows() {
        let site = |counts: Vec<u64>| TimelineSite {
            label: String::new(),
            function: None,
            file: None,
            line: None,
            stack_id: 0,
            counts,
        };
        assert!(site(vec![0, 0, 3, 3, 10]).only_grows());
        assert!(!site(vec![0, 5, 3, 10]).only_grows());
        assert!(!site(vec![4, 4, 4]).only_grows());
    }

    fn timeline() -> Timeline {
        Timeline {
            file: "/tmp/a.fdtrace".into(),
            target: "./leaky 40 <&>".into(),
            interval_s: 0.5,
            times_s: vec![0.0, 0.5, 1.0, 1.5, 1.7],
            total: vec![0, 10, 20, 40, 50],
            sites: vec![TimelineSite {
                label: "leak_file leaky.c:20".into(),
                function: Some("leak_file".into()),
                file: Some("/w/leaky.c".into()),
                line: Some(20),
                stack_id: 3,
                counts: vec![0, 8, 16, 32, 40],
            }],
        }
    }

    #[test]
    fn text_table() {
        let text = render_text(&timeline(), false);
        assert!(
            text.contains("#1 leak_file leaky.c:20: 0 -> 40, only grew [/w/leaky.c:20]"),
            "{text}"
        );
        assert!(text.contains("     1.70s      50      40"), "{text}");
        // Every sample is a row; thinned, about 20 rows with the last one kept.
        assert_eq!(text.lines().filter(|l| l.contains("s  ")).count(), 5);
        assert_eq!(rows(100, true).len(), 21);
        assert_eq!(rows(101, true).last(), Some(&100));
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let html = render_html(&timeline());
        assert!(html.contains("<svg"));
        assert!(html.contains("leak_file leaky.c:20"));
        assert!(html.contains("./leaky 40 &lt;&amp;&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(!html.contains("dasharray"), "{html}");
    }

    #[test]
    fn a_line_on_top_of_another_is_dashed_and_said() {
        let mut t = timeline();
        t.sites[0].counts = t.total.clone();
        let mut second = t.sites[0].clone();
        second.label = "other leaky.c:30".into();
        second.counts = vec![0, 1, 1, 1, 1];
        let mut third = second.clone();
        third.label = "third leaky.c:40".into();
        t.sites.push(second);
        t.sites.push(third);
        let html = render_html(&t);
        // Two polylines dashed (#1 on the total, #3 on #2), and their legend lines.
        assert_eq!(html.matches("<polyline").count(), 4);
        assert_eq!(html.matches("stroke-dasharray").count(), 4, "{html}");
        assert!(
            html.contains("(dashed: the same counts as the total)"),
            "{html}"
        );
        assert!(html.contains("(dashed: the same counts as #2)"), "{html}");
    }

    #[test]
    fn nice_steps() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(nice_step(50.0, 6.0), 10.0));
        assert!(close(nice_step(3.4, 10.0), 0.5));
        assert!(close(nice_step(1.0, 6.0), 0.2));
        assert_eq!(fmt_tick(0.5, 0.5), "0.5");
        assert_eq!(fmt_tick(20.0, 10.0), "20");
    }
}
