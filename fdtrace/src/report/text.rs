//! The report as text, for people.
use std::fmt::Write as _;

use super::*;
use crate::{frame_label, verdict::Verdict};

pub fn fmt_age(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// "37 tcp sockets to 127.0.0.1:8081 in CLOSE_WAIT, oldest 5m12s".
fn socket_group_text(g: &SocketGroup) -> String {
    let noun = if g.count == 1 { "socket" } else { "sockets" };
    let mut t = format!("{} {} {noun}", g.count, g.proto);
    match (g.state, &g.peer, &g.local) {
        (Some("LISTEN"), _, Some(l)) => t += &format!(" listening on {l}"),
        (_, p, Some(l)) if g.accepted => {
            t += &format!(" accepted on {l}");
            if let Some(p) = p {
                t += &format!(" from {p}");
            }
        }
        (_, Some(p), _) => t += &format!(" to {p}"),
        (_, None, Some(l)) => t += &format!(" on {l}"),
        _ => {}
    }
    if let Some(st) = g.state
        && st != "LISTEN"
    {
        t += &format!(" in {st}");
    }
    if let Some(a) = g.oldest_state_age_s {
        t += &format!(", oldest {}", fmt_age(a));
    }
    t
}

/// Who opened a site's descriptors: its first frame of the program's own code; a complete stack
/// without one (Go's net/http dials in a goroutine of its own) is said to be library code, only
/// a stack cut short or missing is unknown.
fn site_origin_text(site: &Site) -> String {
    if site.method == crate::unwind::Method::Shed.as_str() {
        return format!(
            "{} (fdtrace's ring buffer was half full: the births arrived, their stacks did not)",
            crate::stacks::STACK_DROPPED
        );
    }
    match site.user_frame.and_then(|i| site.frames.get(i)) {
        Some(f) => frame_label::at(f),
        None if !site.truncated && !site.frames.is_empty() => {
            "library code only (no frame of the program's own code)".into()
        }
        None => "an unknown call site".into(),
    }
}

/// The report for people.
pub fn render_text(r: &Report) -> String {
    render_text_all(r, false)
}

/// [`render_text`]; `all`: every pre-existing descriptor too, not only their groups.
pub fn render_text_all(r: &Report, all: bool) -> String {
    let mut s = String::new();
    if let Some(rec) = &r.recording {
        let _ = writeln!(
            s,
            "recording {} (host {}, kernel {}){}",
            rec.file,
            rec.hostname,
            rec.kernel_release,
            match rec.at_s {
                Some(at) => format!(", as of {at:.1}s into it"),
                None => String::new(),
            }
        );
        if let Some(cut) = &rec.cut_short {
            let _ = writeln!(s, "WARNING: {cut}; everything before it is reported");
        }
    }
    let name = r.meta.command.as_deref().unwrap_or("?");
    let leaked: usize = r.sites.iter().map(|x| x.count).sum();
    let contained = r
        .meta
        .container
        .as_ref()
        .filter(|c| c.is_contained())
        .map(|c| format!("\nin {}", c.describe()))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "fdtrace: pid {} ({name}), traced for {:.1}s{}{contained}",
        r.meta.pid,
        r.meta.duration_s,
        if r.meta.target_exited && r.meta.parent.is_some() {
            "; exited: this is what it held at exit"
        } else if r.meta.target_exited {
            "; the process exited: this is what it held at exit"
        } else {
            ""
        }
    );
    if let Some(sh) = &r.shown {
        let _ = writeln!(
            s,
            "{} descriptors open; shown: the {} at least {} old or of unknown age (--min-age)",
            r.open_count,
            sh.count,
            fmt_age(sh.min_age_s)
        );
    }
    let _ = writeln!(
        s,
        "{} descriptors {}: {} opened while traced, from {} call site{}; {} pre-existing",
        r.shown.as_ref().map_or(r.open_count, |sh| sh.count),
        if r.shown.is_some() { "shown" } else { "open" },
        leaked,
        r.sites.len(),
        if r.sites.len() == 1 { "" } else { "s" },
        r.preexisting.len()
    );
    let _ = writeln!(
        s,
        "lost events: {}{}",
        r.meta.lost_events,
        if r.meta.lost_events > 0 {
            " (WARNING: counts below may be wrong)"
        } else {
            ""
        }
    );
    if r.model.stacks_dropped > 0 {
        let _ = writeln!(
            s,
            "stacks dropped under load: {} births arrived without their stacks (fdtrace's ring \
             buffer was half full); their descriptors still open are under \"{}\"",
            r.model.stacks_dropped,
            crate::stacks::STACK_DROPPED
        );
    }
    if let Some(n) = r.live_updates_dropped.filter(|&n| n > 0) {
        let _ = writeln!(
            s,
            "live view: {n} updates dropped (stderr was not being read; tracing went on)"
        );
    }
    if let Some(hint) = r.runtime_hint {
        let _ = writeln!(s, "{hint}");
    }
    if r.meta.stack_errors > 0 {
        let _ = writeln!(
            s,
            "stacks that could not be captured: {}",
            r.meta.stack_errors
        );
    }
    if let (Some(eta), Some(limit)) = (
        r.exhaustion_eta_s,
        r.meta.rlimit_nofile.and_then(|l| l.soft),
    ) {
        let _ = writeln!(
            s,
            "at this rate ({:+.1}/min) pid {} hits its limit of {limit} open files in about {}",
            r.growth_per_min.unwrap_or(0.0),
            r.meta.pid,
            fmt_age(eta)
        );
    }
    if !r.tcp_states.is_empty() {
        let by_state: Vec<String> = r
            .tcp_states
            .iter()
            .map(|(st, n)| format!("{n} {st}"))
            .collect();
        let _ = writeln!(s, "TCP sockets: {}", by_state.join(", "));
    }
    if let Some(d) = &r.drift {
        if d.is_zero() {
            let _ = writeln!(s, "checked against /proc/{}/fd: no drift", r.meta.pid);
        } else {
            let _ = writeln!(
                s,
                "drift against /proc/{}/fd: {} descriptors the model missed, {} closes it missed, {} close-on-exec flags it got wrong",
                r.meta.pid,
                d.missed_opens.len(),
                d.missed_closes.len(),
                d.cloexec_mismatches.len()
            );
        }
    }
    for t in &r.failure_totals {
        if t.count > t.with_stack {
            let per: Vec<String> = t
                .by_syscall
                .iter()
                .map(|(sc, n)| format!("{n} {sc}"))
                .collect();
            let _ = writeln!(
                s,
                "\n{} births failed with {} (too many open files) in all, counted in the kernel{}; \
                 the call sites below are from the {} sent with their stacks (at most {} per CPU \
                 every {} ms)",
                t.count,
                t.errno,
                if per.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", per.join(", "))
                },
                t.with_stack,
                fdtrace_common::FAIL_SAMPLES_PER_WINDOW,
                fdtrace_common::FAIL_SAMPLE_WINDOW_NS / 1_000_000
            );
        }
    }
    for f in &r.failed_opens {
        let at = f
            .user_frame
            .and_then(|i| f.frames.get(i))
            .map(frame_label::at)
            .unwrap_or_else(|| "an unknown call site".into());
        let limit = match r.meta.rlimit_nofile.and_then(|l| l.soft) {
            Some(soft) if f.errno == "EMFILE" => {
                format!(" (limit {soft} open files, {} open now)", r.open_count)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "\n{} {} failed with {} (too many open files){limit}, at {at}; last {} ago",
            f.count,
            if f.count == 1 { "birth" } else { "births" },
            f.errno,
            f.last_age_s.map(fmt_age).unwrap_or_default()
        );
        for (i, fr) in f.frames.iter().enumerate() {
            let mark = if Some(i) == f.user_frame { "->" } else { "  " };
            let _ = writeln!(s, "  {mark} #{i:<2} {}", frame_label::at(fr));
        }
    }
    for site in &r.sites {
        let _ = writeln!(s);
        let at = site_origin_text(site);
        let ages = match (site.newest_age_s, site.oldest_age_s) {
            (Some(a), Some(b)) if site.count > 1 => format!("ages {}..{}", fmt_age(a), fmt_age(b)),
            (Some(a), _) => format!("age {}", fmt_age(a)),
            _ => String::new(),
        };
        let trend = match (site.verdict, site.growth_per_min) {
            (Verdict::Leaking, Some(g)) => format!(": LEAKING, {g:+.1}/min"),
            (Verdict::Held, _) => ": held (steady)".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{} {} still open, opened by {at}{trend}",
            site.count,
            if site.count == 1 {
                site.kind.to_string()
            } else {
                format!("{}s", site.kind)
            }
        );
        let _ = writeln!(
            s,
            "    {ages}; e.g. {}; {}",
            site.example,
            match site.method {
                "fp" => "unwound with frame pointers (fp)",
                "shed" => "no stack (shed)",
                _ => "unwound with DWARF CFI (dwarf)",
            }
        );
        for g in &site.sockets {
            let _ = writeln!(s, "    {}", socket_group_text(g));
        }
        if let Some(h) = &site.hint {
            let _ = writeln!(s, "    hint: {h}");
        }
        let shed = site.method == crate::unwind::Method::Shed.as_str();
        for (i, f) in site.frames.iter().enumerate().filter(|_| !shed) {
            let mark = if Some(i) == site.user_frame {
                "->"
            } else {
                "  "
            };
            let _ = writeln!(s, "  {mark} #{i:<2} {}", frame_label::at(f));
        }
        if site.truncated {
            let _ = writeln!(s, "     (stack cut short)");
        }
    }
    if r.model.drift_opens + r.model.drift_closes > 0 {
        let _ = writeln!(
            s,
            "\ncorrected during the session (checked against /proc): {} descriptors opened without a traced birth, {} closed without a traced close",
            r.model.drift_opens, r.model.drift_closes
        );
        for p in &r.untraced {
            let _ = writeln!(s, "  fd {:<4} {:<8} {}", p.fd, p.kind, p.target);
        }
    }
    crate::preexisting::render(
        &mut s,
        &r.preexisting_groups,
        &r.preexisting,
        &r.sites,
        site_origin_text,
        all,
    );
    for child in &r.processes {
        let _ = match child.meta.parent {
            Some(parent) => writeln!(
                s,
                "\n==== child pid {} (of pid {parent}) ====",
                child.meta.pid
            ),
            // Another process of the traced cgroup.
            None => writeln!(s, "\n==== pid {} ====", child.meta.pid),
        };
        s += &render_text_all(child, all);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_a_site_without_a_user_frame() {
        let jf = |function: &str| JsonFrame {
            function: Some(function.into()),
            file: Some(format!("/usr/lib/go-1.19/src/{function}.go")),
            line: Some(7),
            addr: "0x1000".into(),
            module: Some("/tmp/gosvc".into()),
            inlined: false,
        };
        let mut site = Site {
            count: 30,
            kind: "socket",
            example: String::new(),
            user_frame: None,
            truncated: false,
            method: "fp",
            verdict: Verdict::Unknown,
            growth_per_min: None,
            oldest_age_s: None,
            newest_age_s: None,
            frames: vec![jf("net/http.(*Transport).dialConn"), jf("runtime.goexit")],
            sockets: Vec::new(),
            hint: None,
            fds: Vec::new(),
        };
        // net/http's own dialing goroutine: the whole stack, none of it the program's.
        assert_eq!(
            site_origin_text(&site),
            "library code only (no frame of the program's own code)"
        );
        site.truncated = true;
        assert_eq!(site_origin_text(&site), "an unknown call site");
        site.truncated = false;
        site.frames.clear();
        assert_eq!(site_origin_text(&site), "an unknown call site");
        site.frames = vec![jf("main.upload")];
        site.user_frame = Some(0);
        assert_eq!(
            site_origin_text(&site),
            "main.upload at /usr/lib/go-1.19/src/main.upload.go:7"
        );
    }
}
