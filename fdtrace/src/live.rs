//! What the live view shows while fdtrace runs: a screen redrawn every second on a terminal, or
//! one line per interval otherwise.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    frame_label,
    model::{FdTable, Origin, StackId},
    report::fmt_age,
    stacks::StackStore,
    symbolize::Symbols,
    user_frame::user_frame,
    verdict::{self, History, Verdict},
};

/// One call site in the live view.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveSite {
    pub at: String,
    pub count: usize,
    pub growth_per_min: Option<f64>,
    pub verdict: Verdict,
    pub oldest_age_s: Option<f64>,
}

/// A snapshot of one process for the live view.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveStatus {
    pub pid: u32,
    pub comm: String,
    pub elapsed_s: f64,
    pub open: usize,
    pub by_kind: BTreeMap<&'static str, usize>,
    pub tcp_states: BTreeMap<&'static str, usize>,
    pub limit: Option<u64>,
    pub growth_per_min: Option<f64>,
    pub eta_s: Option<f64>,
    pub lost_events: u64,
    pub drift: u64,
    /// Largest first.
    pub sites: Vec<LiveSite>,
    /// Descriptors open before tracing began, by group (`tcp to 10.0.0.5:80 CLOSE_WAIT`),
    /// largest first: their counts fall as they close.
    pub preexisting: Vec<(String, usize)>,
    /// Failed births so far by errno (`EMFILE`, `ENFILE`), as the kernel counted them.
    pub failed: BTreeMap<&'static str, u64>,
    /// Births that came without their stack because the ring buffer was half full.
    pub stacks_dropped: u64,
}

/// Build the snapshot of a process (symbolizes the top sites, once per stack).
#[allow(clippy::too_many_arguments)]
pub fn status(
    pid: u32,
    comm: &str,
    elapsed_s: f64,
    table: &FdTable,
    history: &History,
    stacks: &mut StackStore,
    symbols: &Symbols,
    now_ns: u64,
    limit: Option<u64>,
    lost_events: u64,
    top: usize,
) -> LiveStatus {
    let mut by_kind = BTreeMap::new();
    let mut tcp_states = BTreeMap::new();
    let mut per_site: BTreeMap<StackId, (usize, u64)> = BTreeMap::new();
    let mut pre = Vec::new();
    for (fd, e) in table.iter() {
        if e.origin == Origin::Preexisting {
            pre.push(crate::report::FdEntry::new(fd, e, now_ns));
        }
        *by_kind.entry(e.kind.as_str()).or_insert(0) += 1;
        if let Some(st) = e.sock.as_ref().and_then(|s| s.state_name()) {
            *tcp_states.entry(st).or_insert(0) += 1;
        }
        if let Origin::Stack(id) = e.origin {
            let s = per_site.entry(id).or_insert((0, u64::MAX));
            s.0 += 1;
            s.1 = s.1.min(e.opened_ns.unwrap_or(u64::MAX));
        }
    }
    let mut ranked: Vec<(StackId, usize, u64)> = per_site
        .into_iter()
        .map(|(id, (n, t))| (id, n, t))
        .collect();
    ranked.sort_by_key(|&(id, n, _)| (std::cmp::Reverse(n), id));
    ranked.truncate(top);
    let sites = ranked
        .into_iter()
        .map(|(id, count, oldest_ns)| {
            let oldest_age_s =
                (oldest_ns != u64::MAX).then(|| now_ns.saturating_sub(oldest_ns) as f64 / 1e9);
            let frames = stacks.frames(id, symbols);
            let at = user_frame(&frames)
                .and_then(|i| frames.get(i))
                .map(frame_label::at)
                .unwrap_or_else(|| "an unknown call site".into());
            let t = history.site_trend(id, oldest_age_s);
            LiveSite {
                at,
                count,
                growth_per_min: t.growth_per_min,
                verdict: t.verdict,
                oldest_age_s,
            }
        })
        .collect();
    let growth_per_min = history.total_trend().growth_per_min;
    let preexisting = crate::preexisting::group(&pre, &[])
        .into_iter()
        .take(top)
        .map(|g| {
            let label = match g.state {
                Some(st) => format!("{} {st}", g.pattern),
                None => g.pattern,
            };
            (label, g.count)
        })
        .collect();
    let failed = crate::model::COUNTED_FAILURES
        .into_iter()
        .map(|(errno, name)| (name, table.failure_count(errno).0))
        .filter(|(_, n)| *n > 0)
        .collect();
    LiveStatus {
        failed,
        stacks_dropped: table.stats.stacks_dropped,
        preexisting,
        pid,
        comm: comm.to_string(),
        elapsed_s,
        open: table.len(),
        by_kind,
        tcp_states,
        limit,
        growth_per_min,
        eta_s: verdict::exhaustion_eta_s(table.len(), limit, growth_per_min),
        lost_events,
        drift: table.stats.drift_opens + table.stats.drift_closes,
        sites,
    }
}

fn counts(m: &BTreeMap<&'static str, usize>) -> String {
    let mut v: Vec<(&&str, &usize)> = m.iter().collect();
    v.sort_by_key(|(k, n)| (std::cmp::Reverse(**n), **k));
    v.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn growth(g: Option<f64>) -> String {
    g.map(|g| format!("{g:+.1}/min"))
        .unwrap_or_else(|| "-".into())
}

/// The screen, redrawn every interval on a terminal; `width` columns wide (long lines are cut).
pub fn render_screen(s: &LiveStatus, width: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "fdtrace: pid {} ({}), {} traced; Ctrl-C for the report",
        s.pid,
        s.comm,
        fmt_age(s.elapsed_s),
    );
    let _ = write!(
        o,
        "lost events {}; drift corrected {}",
        s.lost_events, s.drift
    );
    if s.stacks_dropped > 0 {
        let _ = write!(o, "; stacks dropped under load {}", s.stacks_dropped);
    }
    o.push('\n');
    if !s.failed.is_empty() {
        let failed: Vec<String> = s.failed.iter().map(|(e, n)| format!("{n} {e}")).collect();
        let _ = writeln!(
            o,
            "failed births (too many open files): {}",
            failed.join(", ")
        );
    }
    let _ = write!(o, "open descriptors: {}", s.open);
    if !s.by_kind.is_empty() {
        let _ = write!(o, " ({})", counts(&s.by_kind));
    }
    if let Some(l) = s.limit {
        let _ = write!(o, "; limit {l}");
    }
    o.push('\n');
    let _ = write!(o, "growth {}", growth(s.growth_per_min));
    if let Some(eta) = s.eta_s {
        let _ = write!(o, "; limit reached in about {}", fmt_age(eta));
    }
    o.push('\n');
    if !s.tcp_states.is_empty() {
        let _ = writeln!(o, "TCP sockets: {}", counts(&s.tcp_states));
    }
    if !s.preexisting.is_empty() {
        let groups: Vec<String> = s
            .preexisting
            .iter()
            .take(3)
            .map(|(label, n)| format!("{n} {label}"))
            .collect();
        let _ = writeln!(o, "pre-existing: {}", groups.join(", "));
    }
    let _ = writeln!(
        o,
        "\n{:>7} {:>12} {:>8} {:>9}  call site",
        "open", "growth", "verdict", "oldest"
    );
    for site in &s.sites {
        let row = format!(
            "{:>7} {:>12} {:>8} {:>9}  ",
            site.count,
            growth(site.growth_per_min),
            site.verdict.as_str(),
            site.oldest_age_s.map(fmt_age).unwrap_or_default(),
        );
        let room = width.saturating_sub(row.chars().count());
        let _ = writeln!(o, "{row}{}", shorten_site(&site.at, room));
    }
    crate::terminal::fit_lines(&o, width)
}

/// A call site (`function at /path/file.c:12`) in `room` characters: the path loses its
/// leading directories first, so that the file and line stay in view.
fn shorten_site(at: &str, room: usize) -> String {
    if at.chars().count() <= room {
        return at.to_string();
    }
    if let Some((func, path)) = at.rsplit_once(" at ") {
        let keep = room.saturating_sub(func.chars().count() + " at …".chars().count());
        let tail: Vec<char> = path.chars().collect();
        if keep >= 8 && keep < tail.len() {
            let cut: String = tail[tail.len() - keep..].iter().collect();
            return format!("{func} at …{cut}");
        }
    }
    at.to_string()
}

/// One line per interval when the output is not a terminal.
pub fn render_line(s: &LiveStatus) -> String {
    let mut o = format!(
        "fdtrace: {} pid {} open {} ({})",
        fmt_age(s.elapsed_s),
        s.pid,
        s.open,
        growth(s.growth_per_min)
    );
    if !s.tcp_states.is_empty() {
        let _ = write!(o, " tcp[{}]", counts(&s.tcp_states));
    }
    if let Some(top) = s.sites.first() {
        let _ = write!(
            o,
            " top: {} x{} {}",
            top.at,
            top.count,
            top.verdict.as_str()
        );
    }
    for (e, n) in &s.failed {
        let _ = write!(o, " failed {n} {e}");
    }
    let _ = write!(o, " lost {}", s.lost_events);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LiveStatus {
        LiveStatus {
            pid: 4242,
            comm: "imgsrv".into(),
            elapsed_s: 75.0,
            open: 612,
            by_kind: [("file", 212), ("socket", 400)].into_iter().collect(),
            tcp_states: [("CLOSE_WAIT", 398), ("LISTEN", 2)].into_iter().collect(),
            limit: Some(1024),
            growth_per_min: Some(35.2),
            eta_s: Some(702.0),
            lost_events: 0,
            drift: 0,
            sites: vec![LiveSite {
                at: "leak_file at leaky.c:19".into(),
                count: 212,
                growth_per_min: Some(30.0),
                verdict: Verdict::Leaking,
                oldest_age_s: Some(61.0),
            }],
            preexisting: vec![("tcp to 10.0.0.5:80 CLOSE_WAIT".into(), 398)],
            failed: [("EMFILE", 1200)].into_iter().collect(),
            stacks_dropped: 0,
        }
    }

    #[test]
    fn screen_shows_counts_growth_and_sites() {
        let s = render_screen(&sample(), 200);
        assert!(s.contains("pid 4242 (imgsrv)"), "{s}");
        assert!(
            s.contains("open descriptors: 612 (400 socket, 212 file); limit 1024"),
            "{s}"
        );
        assert!(
            s.contains("+35.2/min; limit reached in about 11m42s"),
            "{s}"
        );
        assert!(s.contains("lost events 0; drift corrected 0"), "{s}");
        assert!(s.contains("TCP sockets: 398 CLOSE_WAIT, 2 LISTEN"), "{s}");
        assert!(
            s.contains("pre-existing: 398 tcp to 10.0.0.5:80 CLOSE_WAIT"),
            "{s}"
        );
        assert!(s.contains("leaking"), "{s}");
        assert!(s.contains("leak_file at leaky.c:19"), "{s}");
    }

    #[test]
    fn screen_fits_80_columns() {
        let mut st = sample();
        st.sites[0].at = format!(
            "a_very_long_function_name at /{}/leaky.c:19",
            "deep".repeat(20)
        );
        st.comm = "a-long-command-name".into();
        let s = render_screen(&st, 80);
        for l in s.lines() {
            assert!(l.chars().count() <= 80, "{l}");
        }
        // Nothing but the site's path is cut: the function, file and line stay.
        assert!(s.contains("limit reached in about 11m42s"), "{s}");
        assert!(s.contains("a_very_long_function_name at …"), "{s}");
        assert!(s.contains("eaky.c:19\n"), "{s}");
        assert!(s.contains("Ctrl-C for the report"), "{s}");
    }

    #[test]
    fn sub_second_intervals_show_distinct_times() {
        let mut st = sample();
        let mut seen = Vec::new();
        for i in 1..=6 {
            st.elapsed_s = i as f64 * 0.5;
            seen.push(render_line(&st).split(' ').nth(1).unwrap().to_string());
        }
        let mut uniq = seen.clone();
        uniq.dedup();
        assert_eq!(uniq, seen);
    }

    #[test]
    fn line_mode_is_one_line() {
        let l = render_line(&sample());
        assert_eq!(l.lines().count(), 1);
        assert!(
            l.starts_with("fdtrace: 1m15s pid 4242 open 612 (+35.2/min)"),
            "{l}"
        );
        assert!(
            l.contains("top: leak_file at leaky.c:19 x212 leaking"),
            "{l}"
        );
    }
}
