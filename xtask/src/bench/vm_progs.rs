//! The VM bench's per-program table: each program's runs and run time during the stopped loop
//! run once more with BPF statistics on (`progs` and `progloop` lines of the guest).
use std::collections::BTreeMap;

use super::vm::STOPPED_PAIRS;

/// What one program did during a statistics loop: its runs and their total time (guest ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProgRuns {
    pub(super) name: String,
    pub(super) runs: u64,
    pub(super) ns: u64,
}

/// Each set's statistics loop: the programs that ran during it, the most costly first (from
/// `progs SET before|after ID NAME NS RUNS` lines, the difference of the two reads), and the
/// loop's time per pair (`progloop SET NS`) where it gave one.
pub(super) fn prog_runs(measured: &[String]) -> BTreeMap<String, (Vec<ProgRuns>, Option<f64>)> {
    runs_of(measured, "progs", "progloop")
}

/// Each set's nginx statistics run: the programs that ran during it (`nprogs` lines, as
/// `progs`), and the requests it served (`nprogloop SET REQUESTS`).
pub(super) fn nginx_prog_runs(
    measured: &[String],
) -> BTreeMap<String, (Vec<ProgRuns>, Option<f64>)> {
    runs_of(measured, "nprogs", "nprogloop")
}

/// The statistics runs of `snap` lines (`SNAP SET before|after ID NAME NS RUNS`) and their
/// figure (`FIGURE SET VALUE`).
fn runs_of(
    measured: &[String],
    snap: &str,
    figure: &str,
) -> BTreeMap<String, (Vec<ProgRuns>, Option<f64>)> {
    type Snapshot = BTreeMap<u32, (String, u64, u64)>;
    let mut snaps: BTreeMap<(String, String), Snapshot> = BTreeMap::new();
    let mut loops: BTreeMap<String, Option<f64>> = BTreeMap::new();
    for m in measured {
        let f: Vec<&str> = m.split_whitespace().collect();
        match f[..] {
            [tag, set, phase, id, name, ns, runs] if tag == snap => {
                if let (Ok(id), Ok(ns), Ok(runs)) = (id.parse(), ns.parse(), runs.parse()) {
                    snaps
                        .entry((set.to_string(), phase.to_string()))
                        .or_default()
                        .insert(id, (name.to_string(), ns, runs));
                }
            }
            [tag, set, value] if tag == figure => {
                loops.insert(set.to_string(), value.parse().ok());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (set, ns_per_pair) in loops {
        let none = Snapshot::new();
        let before = snaps.get(&(set.clone(), "before".into())).unwrap_or(&none);
        let Some(after) = snaps.get(&(set.clone(), "after".into())) else {
            out.insert(set, (Vec::new(), ns_per_pair));
            continue;
        };
        let mut progs: Vec<ProgRuns> = after
            .iter()
            .filter_map(|(id, (name, ns, runs))| {
                let (ns0, runs0) = before.get(id).map_or((0, 0), |b| (b.1, b.2));
                let runs = runs.saturating_sub(runs0);
                (runs > 0).then(|| ProgRuns {
                    name: name.clone(),
                    runs,
                    ns: ns.saturating_sub(ns0),
                })
            })
            .collect();
        progs.sort_by_key(|p| std::cmp::Reverse(p.ns));
        out.insert(set, (progs, ns_per_pair));
    }
    out
}

/// The median time per pair of the untraced loop's runs (guest ns).
pub(super) fn untraced_ns(measured: &[String]) -> Option<f64> {
    median_figure(measured, "untraced")
}

/// The median figure of the runs of configuration `what` alone (`bench REP WHAT - FIGURE`).
pub(super) fn median_figure(measured: &[String], what: &str) -> Option<f64> {
    let mut v: Vec<f64> = measured
        .iter()
        .filter_map(|m| match m.split_whitespace().collect::<Vec<_>>()[..] {
            ["bench", _, w, "-", ns] if w == what => ns.parse().ok(),
            _ => None,
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The per-program table of the statistics loops.
pub(super) fn prog_section(
    progs: &BTreeMap<String, (Vec<ProgRuns>, Option<f64>)>,
    untraced: Option<f64>,
) -> String {
    let Some(u) = untraced.filter(|u| *u > 0.0) else {
        return String::new();
    };
    if progs.values().all(|p| p.0.is_empty()) {
        return String::new();
    }
    let pairs = STOPPED_PAIRS as f64;
    let mut s = format!(
        "\nPer program, the kernel side: the stopped loop once more for each set ({STOPPED_PAIRS} \
         pairs), with `kernel.bpf_stats_enabled=1`: each program's runs and run time as the \
         kernel counts them, the difference of two reads (`fdtrace/examples/prog_stats.rs`) \
         around the loop, in guest time (instructions). A program's time does not hold its \
         hook's own (the trampoline, or the tracepoint's record and the syscall-tracing path); \
         the counts also hold the few runs for the VM's other processes meanwhile (the reads \
         themselves); the statistics lengthen each run a little. Shares are of the untraced \
         pair (the median of the untraced runs above, {u:.0} guest ns).\n\n\
         | set | program | runs per pair | guest ns per run | per pair, share of an untraced pair |\n\
         |---|---|---|---|---|\n"
    );
    for (set, (list, loop_ns)) in progs {
        let mut total = 0.0;
        for p in list {
            let per_pair = p.ns as f64 / pairs;
            total += per_pair;
            s.push_str(&format!(
                "| {set} | `{}` | {:.2} | {:.0} | {:.1}% |\n",
                p.name,
                p.runs as f64 / pairs,
                p.ns as f64 / p.runs as f64,
                per_pair / u * 100.0
            ));
        }
        let whole = loop_ns.map_or("the loop with statistics on failed".to_string(), |ns| {
            format!(
                "the loop with statistics on: {:.2}x the untraced pair",
                ns / u
            )
        });
        s.push_str(&format!(
            "| {set} | all programs ({whole}) | | | {:.1}% |\n",
            total / u * 100.0
        ));
    }
    s
}

/// The per-program table of the nginx statistics runs, per request, as shares of an untraced
/// request's time (the VM's one vCPU: `1 / requests per second` of the untraced runs).
pub(super) fn nginx_prog_section(
    progs: &BTreeMap<String, (Vec<ProgRuns>, Option<f64>)>,
    untraced_rps: Option<f64>,
    wrk_secs: u32,
) -> String {
    let Some(rps) = untraced_rps.filter(|r| *r > 0.0) else {
        return String::new();
    };
    if progs.values().all(|p| p.0.is_empty()) {
        return String::new();
    }
    let per_request = 1e9 / rps;
    let mut s = format!(
        "\nPer program, nginx: one more run per set with fdtrace's process stopped, with \
         `kernel.bpf_stats_enabled=1` ({wrk_secs} s of wrk): each program's runs and run time \
         during it, per request served, as shares of an untraced request's time (the VM's \
         one vCPU runs nginx, wrk and the kernel: {per_request:.0} guest ns per request \
         untraced). As in the loop's table, a program's time does not hold its hook's own.\n\n\
         | set | program | runs per request | guest ns per run | per request, share of an untraced request |\n\
         |---|---|---|---|---|\n"
    );
    for (set, (list, requests)) in progs {
        let Some(requests) = requests.filter(|r| *r > 0.0) else {
            s.push_str(&format!(
                "| {set} | (wrk's request count missing: the run failed) | | | |\n"
            ));
            continue;
        };
        let mut total = 0.0;
        for p in list {
            let per_req = p.ns as f64 / requests;
            total += per_req;
            if per_req / per_request < 0.0005 {
                continue;
            }
            s.push_str(&format!(
                "| {set} | `{}` | {:.2} | {:.0} | {:.1}% |\n",
                p.name,
                p.runs as f64 / requests,
                p.ns as f64 / p.runs as f64,
                per_req / per_request * 100.0
            ));
        }
        s.push_str(&format!(
            "| {set} | all programs ({requests:.0} requests; rows under 0.05% left out) | | | {:.1}% |\n",
            total / per_request * 100.0
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_programs_runs_are_the_difference_of_the_two_reads() {
        let lines: Vec<String> = [
            "bench 1 untraced - 1000",
            "bench 2 untraced - 1200",
            "bench 3 untraced - 1100",
            // A program that ran before the loop only, one that ran during it, one new.
            "progs trampolines before 7 fentry_fd_insta 500 10",
            "progs trampolines before 8 fexit_openat 9000 30",
            "progs trampolines after 7 fentry_fd_insta 500 10",
            "progs trampolines after 8 fexit_openat 4409000 4030",
            "progs trampolines after 9 fentry_close 880000 4000",
            "progloop trampolines 1650",
            "progs tracepoints after 3 exit_regs_opena 4000000 4000",
            "progloop tracepoints failed",
            "progs nonsense",
        ]
        .map(String::from)
        .into();
        let runs = prog_runs(&lines);
        let (tramp, loop_ns) = &runs["trampolines"];
        assert_eq!(*loop_ns, Some(1650.0));
        assert_eq!(
            tramp,
            &vec![
                ProgRuns {
                    name: "fexit_openat".into(),
                    runs: 4000,
                    ns: 4_400_000
                },
                ProgRuns {
                    name: "fentry_close".into(),
                    runs: 4000,
                    ns: 880_000
                },
            ]
        );
        assert_eq!(runs["tracepoints"].1, None);
        assert_eq!(untraced_ns(&lines), Some(1100.0));
        let text = prog_section(&runs, untraced_ns(&lines));
        // 4000 pairs: 1100 ns per pair and per run of fexit_openat, 100% of the untraced pair.
        assert!(
            text.contains("| trampolines | `fexit_openat` | 1.00 | 1100 | 100.0% |"),
            "{text}"
        );
        assert!(text.contains("| trampolines | `fentry_close` | 1.00 | 220 | 20.0% |"));
        assert!(text.contains("statistics on: 1.50x the untraced pair) | | | 120.0% |"));
        assert!(text.contains("(the loop with statistics on failed) | | | 90.9% |"));
        // Nothing to say without the untraced runs or without any program's runs.
        assert_eq!(prog_section(&runs, None), "");
        assert_eq!(prog_section(&BTreeMap::new(), Some(1.0)), "");
    }

    #[test]
    fn nginx_programs_per_request() {
        let lines: Vec<String> = [
            "nprogs trampolines before 8 fexit_accept4 1000 10",
            "nprogs trampolines after 8 fexit_accept4 2001000 1010",
            "nprogs trampolines after 9 sock_state 1000 500",
            "nprogloop trampolines 1000",
            "nprogs tracepoints after 3 exit_regs_accep 5000 5",
            "nprogloop tracepoints failed",
            // The loop's lines are not nginx's.
            "progs trampolines after 4 fentry_close 9999999 9999",
        ]
        .map(String::from)
        .into();
        let runs = nginx_prog_runs(&lines);
        assert_eq!(runs["trampolines"].0.len(), 2);
        // 1000 requests/s untraced: 1 ms per request; 2000 ns per request is 0.2% of it.
        let text = nginx_prog_section(&runs, Some(1000.0), 10);
        assert!(
            text.contains("| trampolines | `fexit_accept4` | 1.00 | 2000 | 0.2% |"),
            "{text}"
        );
        // 1 ns per request: under 0.05%, counted in the total only.
        assert!(!text.contains("sock_state"), "{text}");
        assert!(
            text.contains("all programs (1000 requests; rows under 0.05% left out) | | | 0.2% |"),
            "{text}"
        );
        assert!(text.contains("| tracepoints | (wrk's request count missing"));
        assert_eq!(nginx_prog_section(&runs, None, 10), "");
    }
}
