//! `--metrics ADDR`: a Prometheus exposition of what fdtrace sees, for fleet monitoring.
use std::fmt::Write as _;

use crate::live::LiveStatus;

/// Prometheus label value escaping: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for the traced processes.
pub fn render(procs: &[LiveStatus], lost_events: u64) -> String {
    let mut o = String::new();
    let header = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
    };
    header(
        &mut o,
        "fdtrace_open_descriptors",
        "gauge",
        "Descriptors open in a traced process, by kind.",
    );
    for p in procs {
        for (kind, n) in &p.by_kind {
            let _ = writeln!(
                o,
                "fdtrace_open_descriptors{{pid=\"{}\",comm=\"{}\",kind=\"{kind}\"}} {n}",
                p.pid,
                esc(&p.comm)
            );
        }
    }
    header(
        &mut o,
        "fdtrace_tcp_sockets",
        "gauge",
        "TCP sockets of a traced process, by state.",
    );
    for p in procs {
        for (state, n) in &p.tcp_states {
            let _ = writeln!(
                o,
                "fdtrace_tcp_sockets{{pid=\"{}\",comm=\"{}\",state=\"{state}\"}} {n}",
                p.pid,
                esc(&p.comm)
            );
        }
    }
    header(
        &mut o,
        "fdtrace_site_open_descriptors",
        "gauge",
        "Descriptors still open, by the call site that created them (top sites).",
    );
    for p in procs {
        for s in &p.sites {
            let _ = writeln!(
                o,
                "fdtrace_site_open_descriptors{{pid=\"{}\",site=\"{}\",verdict=\"{}\"}} {}",
                p.pid,
                esc(&s.at),
                s.verdict.as_str(),
                s.count
            );
        }
    }
    header(
        &mut o,
        "fdtrace_site_growth_per_minute",
        "gauge",
        "Net growth of a call site's open descriptors, per minute.",
    );
    for p in procs {
        for s in &p.sites {
            if let Some(g) = s.growth_per_min {
                let _ = writeln!(
                    o,
                    "fdtrace_site_growth_per_minute{{pid=\"{}\",site=\"{}\"}} {g}",
                    p.pid,
                    esc(&s.at)
                );
            }
        }
    }
    header(
        &mut o,
        "fdtrace_preexisting_descriptors",
        "gauge",
        "Descriptors open before tracing began and still open, by group (top groups).",
    );
    for p in procs {
        for (group, n) in &p.preexisting {
            let _ = writeln!(
                o,
                "fdtrace_preexisting_descriptors{{pid=\"{}\",group=\"{}\"}} {n}",
                p.pid,
                esc(group)
            );
        }
    }
    header(
        &mut o,
        "fdtrace_rlimit_nofile",
        "gauge",
        "Soft RLIMIT_NOFILE of a traced process.",
    );
    for p in procs {
        if let Some(l) = p.limit {
            let _ = writeln!(o, "fdtrace_rlimit_nofile{{pid=\"{}\"}} {l}", p.pid);
        }
    }
    header(
        &mut o,
        "fdtrace_exhaustion_eta_seconds",
        "gauge",
        "Seconds until the process reaches its descriptor limit at the current growth.",
    );
    for p in procs {
        if let Some(eta) = p.eta_s {
            let _ = writeln!(
                o,
                "fdtrace_exhaustion_eta_seconds{{pid=\"{}\"}} {eta}",
                p.pid
            );
        }
    }
    header(
        &mut o,
        "fdtrace_failed_births_total",
        "counter",
        "Births that failed with too many open files, by errno (counted in the kernel).",
    );
    for p in procs {
        for (errno, n) in &p.failed {
            let _ = writeln!(
                o,
                "fdtrace_failed_births_total{{pid=\"{}\",comm=\"{}\",errno=\"{errno}\"}} {n}",
                p.pid,
                esc(&p.comm)
            );
        }
    }
    header(
        &mut o,
        "fdtrace_stacks_dropped_total",
        "counter",
        "Births that arrived without their stack because fdtrace's ring buffer was half full.",
    );
    for p in procs {
        let _ = writeln!(
            o,
            "fdtrace_stacks_dropped_total{{pid=\"{}\",comm=\"{}\"}} {}",
            p.pid,
            esc(&p.comm),
            p.stacks_dropped
        );
    }
    header(
        &mut o,
        "fdtrace_lost_events_total",
        "counter",
        "Events the kernel could not hand to fdtrace (ring buffer full).",
    );
    let _ = writeln!(o, "fdtrace_lost_events_total {lost_events}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveSite;
    use crate::verdict::Verdict;

    #[test]
    fn exposition_has_every_family_and_escapes_labels() {
        let p = LiveStatus {
            pid: 7,
            comm: "we\"ird".into(),
            elapsed_s: 1.0,
            open: 3,
            by_kind: [("file", 2), ("socket", 1)].into_iter().collect(),
            tcp_states: [("CLOSE_WAIT", 1)].into_iter().collect(),
            limit: Some(1024),
            growth_per_min: Some(6.0),
            eta_s: Some(10210.0),
            lost_events: 0,
            drift: 0,
            sites: vec![LiveSite {
                at: "f at a.c:3".into(),
                count: 2,
                growth_per_min: Some(6.0),
                verdict: Verdict::Leaking,
                oldest_age_s: Some(20.0),
            }],
            preexisting: vec![("/var/img-*.jpg".into(), 40)],
            failed: [("EMFILE", 12)].into_iter().collect(),
            stacks_dropped: 3,
        };
        let t = render(&[p], 5);
        assert!(
            t.contains("fdtrace_open_descriptors{pid=\"7\",comm=\"we\\\"ird\",kind=\"file\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("fdtrace_tcp_sockets{pid=\"7\",comm=\"we\\\"ird\",state=\"CLOSE_WAIT\"} 1")
        );
        assert!(t.contains(
            "fdtrace_site_open_descriptors{pid=\"7\",site=\"f at a.c:3\",verdict=\"leaking\"} 2"
        ));
        assert!(t.contains("fdtrace_rlimit_nofile{pid=\"7\"} 1024"));
        assert!(
            t.contains("fdtrace_preexisting_descriptors{pid=\"7\",group=\"/var/img-*.jpg\"} 40")
        );
        assert!(t.contains("fdtrace_exhaustion_eta_seconds{pid=\"7\"} 10210"));
        assert!(t.contains("fdtrace_lost_events_total 5"));
        assert!(t.contains(
            "fdtrace_failed_births_total{pid=\"7\",comm=\"we\\\"ird\",errno=\"EMFILE\"} 12"
        ));
        assert!(t.contains("fdtrace_stacks_dropped_total{pid=\"7\",comm=\"we\\\"ird\"} 3"));
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.rsplit_once(' ').unwrap().1.parse::<f64>().is_ok(), "{l}");
        }
    }
}
