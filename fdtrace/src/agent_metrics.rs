//! The agent's Prometheus metrics (OpenMetrics text, by the `prometheus-client` crate): every
//! watched process's count, limit, growth and time to exhaustion; the call sites of the
//! processes being recorded (and of those recorded, while they live), with their verdicts and
//! lost events; and the agent's own health. A label budget bounds the series: a host with
//! thousands of processes, or a process with thousands of sites, cannot blow up a monitoring
//! system's cardinality (what is left out is counted in `fdtrace_agent_series_dropped`).
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Processes exported at most (traced ones first, then by open count).
pub const MAX_PROCESSES: usize = 100;
/// Call sites exported at most, over all processes (largest first), and per process.
pub const MAX_SITES: usize = 200;
pub const MAX_SITES_PER_PROCESS: usize = 20;

/// A site's label: its own line (the first frame of the program's code, or else its first
/// frame) as `function at file:line`.
pub fn site_label(s: &crate::report::Site) -> String {
    let Some(f) = s
        .user_frame
        .and_then(|i| s.frames.get(i))
        .or(s.frames.first())
    else {
        return "[no stack]".into();
    };
    // No binary or address: a label names the same line across processes and runs.
    crate::frame_label::at(crate::frame_label::Parts {
        module: None,
        addr: None,
        ..f.into()
    })
}

/// One watched process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub container: String,
    pub open: usize,
    pub limit: Option<u64>,
    /// Steady growth, descriptors per minute (None: not growing steadily).
    pub growth_per_min: Option<f64>,
    pub traced: bool,
}

/// One call site of a recorded process.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRow {
    pub pid: u32,
    pub comm: String,
    /// `function at file:line` of the site's own line (or its first frame).
    pub site: String,
    pub kind: String,
    pub verdict: String,
    pub count: u64,
}

/// What one recording of a process says so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub sites: Vec<SiteRow>,
    pub lost_events: u64,
}

/// The agent's own counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub polls: u64,
    pub last_poll_seconds: f64,
    pub watched: usize,
    pub recording: usize,
    pub triggers_fraction: u64,
    pub triggers_eta: u64,
    pub recorded: u64,
    pub failed: u64,
    pub deleted: u64,
    pub disk_bytes: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcLabels {
    pid: u32,
    comm: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    pid: u32,
    comm: String,
    site: String,
    kind: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabels {
    family: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn proc_labels(p: &ProcessRow) -> ProcLabels {
    ProcLabels {
        pid: p.pid,
        comm: p.comm.clone(),
        container: p.container.clone(),
    }
}

/// The exposition text of one moment.
pub fn encode(
    health: &Health,
    processes: &[ProcessRow],
    recorded: &[(u32, String, Recorded)],
) -> String {
    let mut reg = Registry::with_prefix("fdtrace");

    let mut procs: Vec<&ProcessRow> = processes.iter().collect();
    procs.sort_by(|a, b| b.traced.cmp(&a.traced).then(b.open.cmp(&a.open)));
    let dropped_procs = procs.len().saturating_sub(MAX_PROCESSES);
    procs.truncate(MAX_PROCESSES);
    let open = Family::<ProcLabels, Gauge>::default();
    let limit = Family::<ProcLabels, Gauge>::default();
    let growth = Family::<ProcLabels, FGauge>::default();
    let eta = Family::<ProcLabels, FGauge>::default();
    let traced = Family::<ProcLabels, Gauge>::default();
    for p in &procs {
        let l = proc_labels(p);
        open.get_or_create(&l).set(p.open as i64);
        traced.get_or_create(&l).set(i64::from(p.traced));
        if let Some(lim) = p.limit {
            limit.get_or_create(&l).set(lim as i64);
        }
        if let Some(g) = p.growth_per_min {
            growth.get_or_create(&l).set(g);
            if let Some(lim) = p.limit
                && g > 0.0
            {
                let left = lim.saturating_sub(p.open as u64) as f64;
                eta.get_or_create(&l).set(left / g * 60.0);
            }
        }
    }
    reg.register(
        "process_open_fds",
        "Open file descriptors of a watched process (from /proc/PID/fd)",
        open,
    );
    reg.register(
        "process_fd_limit",
        "Soft RLIMIT_NOFILE of a watched process",
        limit,
    );
    reg.register(
        "process_fd_growth_per_minute",
        "Steady growth of a process's open descriptors, per minute (only while steady)",
        growth,
    );
    reg.register(
        "process_fd_exhaustion_seconds",
        "Seconds until a steadily growing process reaches its soft RLIMIT_NOFILE",
        eta,
    );
    reg.register(
        "process_recording",
        "1 while the agent records the process",
        traced,
    );

    let site_open = Family::<SiteLabels, Gauge>::default();
    let lost = Family::<ProcLabels, Gauge>::default();
    let mut sites: Vec<&SiteRow> = Vec::new();
    let mut dropped_sites = 0;
    for (pid, comm, r) in recorded {
        let mut mine: Vec<&SiteRow> = r.sites.iter().collect();
        mine.sort_by_key(|s| std::cmp::Reverse(s.count));
        dropped_sites += mine.len().saturating_sub(MAX_SITES_PER_PROCESS);
        mine.truncate(MAX_SITES_PER_PROCESS);
        sites.extend(mine);
        lost.get_or_create(&ProcLabels {
            pid: *pid,
            comm: comm.clone(),
            container: String::new(),
        })
        .set(r.lost_events as i64);
    }
    sites.sort_by_key(|s| std::cmp::Reverse(s.count));
    dropped_sites += sites.len().saturating_sub(MAX_SITES);
    sites.truncate(MAX_SITES);
    for s in sites {
        site_open
            .get_or_create(&SiteLabels {
                pid: s.pid,
                comm: s.comm.clone(),
                site: s.site.clone(),
                kind: s.kind.clone(),
                verdict: s.verdict.clone(),
            })
            .set(s.count as i64);
    }
    reg.register(
        "site_open_fds",
        "Descriptors still open per call site of a recorded process, with the site's verdict",
        site_open,
    );
    reg.register(
        "recording_lost_events",
        "Events lost so far by the recording of a process",
        lost,
    );

    let agent = reg.sub_registry_with_prefix("agent");
    let g = |v: i64| {
        let x = Gauge::<i64>::default();
        x.set(v);
        x
    };
    let c = |v: u64| {
        let x = Counter::<u64>::default();
        x.inc_by(v);
        x
    };
    agent.register("polls", "Polls of the descriptor counts", c(health.polls));
    let poll = FGauge::default();
    poll.set(health.last_poll_seconds);
    agent.register(
        "last_poll_seconds",
        "How long the last poll of every watched process took",
        poll,
    );
    agent.register(
        "watched_processes",
        "Processes watched at the last poll",
        g(health.watched as i64),
    );
    agent.register(
        "recordings_active",
        "Recordings being written",
        g(health.recording as i64),
    );
    let triggers = Family::<ReasonLabels, Counter>::default();
    for (reason, n) in [
        ("fraction", health.triggers_fraction),
        ("eta", health.triggers_eta),
    ] {
        triggers
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc_by(n);
    }
    agent.register("triggers", "Recordings started, by trigger", triggers);
    let outcomes = Family::<OutcomeLabels, Counter>::default();
    for (outcome, n) in [("recorded", health.recorded), ("failed", health.failed)] {
        outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }
    agent.register("recordings_ended", "Recordings ended, by outcome", outcomes);
    agent.register(
        "recordings_deleted",
        "Recordings deleted to keep the directory within --max-disk",
        c(health.deleted),
    );
    agent.register(
        "disk_bytes",
        "Bytes the recordings in the directory take",
        g(health.disk_bytes as i64),
    );
    let dropped = Family::<FamilyLabels, Gauge>::default();
    for (family, n) in [("process", dropped_procs), ("site", dropped_sites)] {
        dropped
            .get_or_create(&FamilyLabels {
                family: family.into(),
            })
            .set(n as i64);
    }
    agent.register(
        "series_dropped",
        "Processes or sites left out of these metrics by the label budget",
        dropped,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, open: usize, traced: bool) -> ProcessRow {
        ProcessRow {
            pid,
            comm: format!("p{pid}"),
            container: String::new(),
            open,
            limit: Some(1024),
            growth_per_min: (pid == 7).then_some(60.0),
            traced,
        }
    }

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn processes_sites_and_health() {
        let health = Health {
            polls: 12,
            watched: 3,
            recording: 1,
            triggers_eta: 1,
            disk_bytes: 4096,
            ..Health::default()
        };
        let site = SiteRow {
            pid: 7,
            comm: "p7".into(),
            site: "main at drip.c:21".into(),
            kind: "file".into(),
            verdict: "leaking".into(),
            count: 212,
        };
        let t = encode(
            &health,
            &[proc(7, 124, true), proc(8, 10, false)],
            &[(
                7,
                "p7".into(),
                Recorded {
                    sites: vec![site],
                    lost_events: 0,
                },
            )],
        );
        let l = r#"{pid="7",comm="p7",container=""}"#;
        assert_eq!(
            value(&t, &format!("fdtrace_process_open_fds{l}")),
            Some("124")
        );
        assert_eq!(
            value(&t, &format!("fdtrace_process_fd_limit{l}")),
            Some("1024")
        );
        assert_eq!(
            value(&t, &format!("fdtrace_process_recording{l}")),
            Some("1")
        );
        assert_eq!(
            value(&t, &format!("fdtrace_process_fd_exhaustion_seconds{l}")),
            Some("900.0")
        );
        assert_eq!(
            value(
                &t,
                r#"fdtrace_site_open_fds{pid="7",comm="p7",site="main at drip.c:21",kind="file",verdict="leaking"}"#
            ),
            Some("212")
        );
        assert_eq!(value(&t, "fdtrace_agent_polls_total"), Some("12"));
        assert_eq!(
            value(&t, r#"fdtrace_agent_triggers_total{reason="eta"}"#),
            Some("1")
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
        // A process that is not growing steadily has no growth or exhaustion series.
        assert!(
            !t.contains(r#"fdtrace_process_fd_growth_per_minute{pid="8""#),
            "{t}"
        );
    }

    #[test]
    fn the_label_budget_holds() {
        let procs: Vec<ProcessRow> = (0..(MAX_PROCESSES as u32 + 50))
            .map(|p| proc(p, p as usize, p == 3))
            .collect();
        let sites = (0..300)
            .map(|i| SiteRow {
                pid: 3,
                comm: "p3".into(),
                site: format!("f{i} at x.c:{i}"),
                kind: "file".into(),
                verdict: "unknown".into(),
                count: i,
            })
            .collect();
        let t = encode(
            &Health::default(),
            &procs,
            &[(
                3,
                "p3".into(),
                Recorded {
                    sites,
                    lost_events: 0,
                },
            )],
        );
        let count = |prefix: &str| t.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count("fdtrace_process_open_fds{"), MAX_PROCESSES);
        // The traced one is kept though it is small.
        assert!(t.contains(r#"fdtrace_process_open_fds{pid="3""#), "{t}");
        assert_eq!(count("fdtrace_site_open_fds{"), MAX_SITES_PER_PROCESS);
        assert!(t.contains(r#"site="f299 at x.c:299""#));
        assert_eq!(
            value(&t, r#"fdtrace_agent_series_dropped{family="process"}"#),
            Some("50")
        );
        assert_eq!(
            value(&t, r#"fdtrace_agent_series_dropped{family="site"}"#),
            Some("280")
        );
    }
}
