//! Case 8: under load. Bursts of open/close pairs from 8 and 32 threads at once, a storm of
//! "too many open files" failures, each traced by pid with the default settings (lost events,
//! the leaks at their line, the cost per pair); and attaching to a process that holds many
//! descriptors (time to tracing, peak RSS).
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Bench, Fact, Proc, Row, lost_events, median, range};

/// Pairs per thread of the bursts, leaks per thread, failing opens per thread of the storm.
const PAIRS: u64 = 20_000;
const LEAKS: u64 = 100;
const STORM_PAIRS: u64 = 2000;
const STORM_FAILS: u64 = 20_100;
/// Descriptors held by the process fdtrace attaches to (the figure), as far as the
/// descriptor limit allows.
const HELD_WANTED: u64 = 100_000;

/// What one burst run measured.
struct BurstRun {
    ns: f64,
    opened: u64,
    emfile: u64,
    report: Option<serde_json::Value>,
}

/// The leaks' count when the report has exactly one site.
fn leaks_at_one_site(j: &serde_json::Value) -> Option<u64> {
    match j["sites"].as_array()?.as_slice() {
        [one] => one["count"].as_u64(),
        _ => None,
    }
}

fn numbers(done: &str) -> Result<Vec<u64>> {
    done.trim()
        .strip_prefix("done ")
        .context("no `done` line")?
        .split(' ')
        .map(|x| x.parse::<u64>().context("a number"))
        .collect()
}

/// The hard limit on descriptors of this process (fdtrace's and the holder's limit too).
fn nofile_hard() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_max
}

impl Bench {
    fn burst_bin(&self) -> PathBuf {
        self.root.join("target/bench/burst")
    }

    /// [`Self::burst_run`] traced by the `--baseline` binary.
    fn baseline_run(&mut self, args: [u64; 4]) -> Option<Result<BurstRun>> {
        let base = self.baseline.clone()?;
        let ours = std::mem::replace(&mut self.fdtrace, base);
        let r = self.burst_run(args, true);
        self.fdtrace = ours;
        Some(r)
    }

    /// One run of `burst THREADS PAIRS LEAKS FAILS`, traced by `fdtrace -p` when `traced`.
    fn burst_run(&mut self, args: [u64; 4], traced: bool) -> Result<BurstRun> {
        let mut cmd = Command::new(self.burst_bin());
        cmd.args(args.map(|n| n.to_string()));
        self.record(&cmd, &[]);
        let mut prog = Proc::start(&mut cmd, "burst", true)?;
        prog.wait_line("ready", Duration::from_secs(10))?;
        let json = self.tmp("burst.json");
        let tracer = if traced {
            Some(self.attach(prog.pid(), &json, "fdtrace -p burst")?)
        } else {
            None
        };
        prog.send_line();
        let done = prog.wait_line("done", Duration::from_secs(300))?;
        let n = numbers(&done)?;
        let report = match tracer {
            Some(t) => Some(self.detach(t, &json)?),
            None => None,
        };
        drop(prog);
        Ok(BurstRun {
            opened: n[0],
            emfile: n[1],
            ns: *n.get(3).context("no time in the `done` line")? as f64,
            report,
        })
    }

    pub(super) fn case8(&mut self) {
        let reps = self.p.reps.min(3);
        for threads in [8u64, 32] {
            let what = format!(
                "burst: {threads} threads × {PAIRS} open/close pairs, then {LEAKS} leaks each, \
                 `fdtrace -p` with default settings"
            );
            match self.burst_case(threads, reps) {
                Ok(row) => self.rows.push(row),
                Err(e) => self.rows.push(Row::failed(8, what, &e)),
            }
        }
        let what = format!(
            "EMFILE storm: 8 threads at the descriptor limit, {STORM_FAILS} failing opens each \
             (after {STORM_PAIRS} pairs and {LEAKS} leaks), `fdtrace -p`"
        );
        match self.storm_case(reps) {
            Ok(row) => self.rows.push(row),
            Err(e) => self.rows.push(Row::failed(8, what, &e)),
        }
        let held = HELD_WANTED.min(nofile_hard().saturating_sub(100));
        let what = format!(
            "attach: `fdtrace -p` of a process holding {held} descriptors{}",
            if held < HELD_WANTED {
                format!(" (this machine's descriptor limit allows no more; {HELD_WANTED} asked)")
            } else {
                String::new()
            }
        );
        match self.attach_case(held) {
            Ok(row) => self.rows.push(row),
            Err(e) => self.rows.push(Row::failed(8, what, &e)),
        }
    }

    fn burst_case(&mut self, threads: u64, reps: usize) -> Result<Row> {
        let args = [threads, PAIRS, LEAKS, 0];
        let (mut untraced, mut traced, mut lost, mut wrong) = (vec![], vec![], vec![], 0);
        let (mut base_lost, mut base_wrong) = (vec![], 0);
        let pairs = (threads * PAIRS) as f64;
        for rep in 0..reps {
            if let Some(r) = self.baseline_run(args) {
                let j = r?.report.context("no report")?;
                base_lost.push(lost_events(&j));
                if leaks_at_one_site(&j) != Some(threads * LEAKS) {
                    base_wrong += 1;
                }
            }
            for on in [rep % 2 == 1, rep % 2 == 0] {
                let r = self.burst_run(args, on)?;
                if r.opened != threads * LEAKS {
                    bail!("burst leaked {} of {}", r.opened, threads * LEAKS);
                }
                let ns = r.ns / pairs;
                eprintln!(
                    "bench: case 8 rep {}/{reps}: {threads} threads {:<8} {ns:>7.0} ns/pair",
                    rep + 1,
                    if on { "traced" } else { "untraced" }
                );
                match r.report {
                    Some(j) => {
                        traced.push(ns);
                        lost.push(lost_events(&j));
                        if leaks_at_one_site(&j) != Some(threads * LEAKS) {
                            wrong += 1;
                        }
                    }
                    None => untraced.push(ns),
                }
            }
        }
        let (t, u) = (
            median(&traced).unwrap_or(0.0),
            median(&untraced).unwrap_or(0.0),
        );
        let events = threads * (2 * PAIRS + LEAKS);
        let (lo, hi) = range(&traced);
        let max_lost = lost.iter().copied().max().unwrap_or(0);
        self.set(Fact::BurstRatio { threads }, t / u);
        self.set(Fact::BurstLostEvents { threads }, max_lost as f64);
        let rate = events as f64 / (t * pairs / 1e9);
        Ok(Row::new(
            8,
            format!(
                "burst: {threads} threads × {PAIRS} open/close pairs, then {LEAKS} leaks each, \
                 `fdtrace -p` with default settings"
            ),
            format!(
                "{t:.0} ns/pair traced (range {lo:.0}–{hi:.0}) vs {u:.0} untraced, {reps} runs each; \
                 {events} events per run at {rate:.0} events/s; lost events per run: {lost:?}; \
                 runs with the leaks not exactly at their one site: {wrong}{}",
                self.baseline_text(
                    &base_lost,
                    base_wrong,
                    "runs with the leaks not exactly at their one site"
                )
            ),
        )
        .vs(format!("{:.2}x", t / u))
        .target(
            "0 lost, leaks exact",
            max_lost == 0 && wrong == 0 && !traced.is_empty(),
        ))
    }

    fn storm_case(&mut self, reps: usize) -> Result<Row> {
        let threads = 8;
        let args = [threads, STORM_PAIRS, LEAKS, STORM_FAILS];
        let (mut rates, mut lost, mut uncounted, mut sent) = (vec![], vec![], 0, vec![]);
        let mut untraced_rates = vec![];
        let (mut base_lost, mut base_uncounted) = (vec![], 0);
        for rep in 0..reps {
            if let Some(r) = self.baseline_run(args) {
                let r = r?;
                let j = r.report.context("no report")?;
                base_lost.push(lost_events(&j));
                // Older binaries count failures only at their sites.
                let counted = match j["failure_totals"].as_array() {
                    Some(t) => t.iter().filter_map(|t| t["count"].as_u64()).sum::<u64>(),
                    None => j["failed_opens"]
                        .as_array()
                        .map(|f| f.iter().filter_map(|f| f["count"].as_u64()).sum())
                        .unwrap_or(0),
                };
                if counted != r.emfile {
                    base_uncounted += 1;
                }
            }
            for on in [rep % 2 == 1, rep % 2 == 0] {
                let r = self.burst_run(args, on)?;
                // The run's failures per second (the pairs and leaks are a small part of it).
                let rate = r.emfile as f64 / (r.ns / 1e9);
                match r.report {
                    Some(j) => {
                        rates.push(rate);
                        lost.push(lost_events(&j));
                        let counted = j["failure_totals"]
                            .as_array()
                            .and_then(|t| t.iter().find(|t| t["errno"] == "EMFILE"))
                            .map(|t| (t["count"].as_u64(), t["with_stack"].as_u64()));
                        match counted {
                            Some((Some(c), Some(w))) => {
                                if c != r.emfile {
                                    uncounted += 1;
                                }
                                sent.push(w);
                            }
                            _ => uncounted += 1,
                        }
                    }
                    None => untraced_rates.push(rate),
                }
            }
        }
        let (t, u) = (
            median(&rates).unwrap_or(0.0),
            median(&untraced_rates).unwrap_or(0.0),
        );
        let max_lost = lost.iter().copied().max().unwrap_or(0);
        self.set(Fact::StormLostEvents, max_lost as f64);
        Ok(Row::new(
            8,
            format!(
                "EMFILE storm: 8 threads at the descriptor limit, {STORM_FAILS} failing opens each \
                 (after {STORM_PAIRS} pairs and {LEAKS} leaks), `fdtrace -p`"
            ),
            format!(
                "{t:.0} failures/s traced vs {u:.0} untraced, {reps} runs each; lost events per \
                 run: {lost:?}; runs whose kernel count differs from the program's: {uncounted}; \
                 failures sent with their stacks per run: {sent:?}{}",
                self.baseline_text(
                    &base_lost,
                    base_uncounted,
                    "runs whose count of failures differs from the program's"
                )
            ),
        )
        .vs(format!("{:.2}x the rate", t / u))
        .target(
            "every failure counted, 0 lost",
            max_lost == 0 && uncounted == 0 && !rates.is_empty(),
        ))
    }

    /// What the `--baseline` binary's runs measured, for a row.
    fn baseline_text(&self, lost: &[u64], wrong: usize, what: &str) -> String {
        match &self.baseline {
            Some(b) if !lost.is_empty() => format!(
                "; the same traced by `{}` (--baseline): lost events per run: {lost:?}; {what}: \
                 {wrong}",
                b.display()
            ),
            _ => String::new(),
        }
    }

    fn attach_case(&mut self, held: u64) -> Result<Row> {
        let mut holder = Command::new(&self.openclose);
        holder.args(["-w", "-k", &held.to_string(), "1"]);
        self.record(&holder, &[]);
        let mut holder = Proc::start(&mut holder, "openclose -w -k", true)?;
        holder.wait_line("ready", Duration::from_secs(60))?;
        let json = self.tmp("attach.json");
        let (mut cmd, _) = self.fdtrace_under_time();
        cmd.args(["-q", "--json", "-d", "1", "-o"])
            .arg(&json)
            .args(["-p", &holder.pid().to_string()]);
        self.record(&cmd, &[(holder.pid().to_string(), "$PID")]);
        let started = Instant::now();
        let mut f = Proc::start(&mut cmd, "fdtrace -p (held descriptors)", false)?;
        let mut to_tracing = None;
        let deadline = started + Duration::from_secs(120);
        while to_tracing.is_none() && Instant::now() < deadline && !f.exited() {
            if let Some((true, line)) = f.take_line(Duration::from_millis(5))
                && line.contains("tracing pid")
            {
                to_tracing = Some(started.elapsed().as_secs_f64());
            }
        }
        let out = f.finish(Duration::from_secs(120))?;
        if !out.status.success() {
            bail!("fdtrace failed ({}): {}", out.status, out.stderr.trim());
        }
        let to_tracing = to_tracing.context("fdtrace never said it was tracing")?;
        let rss_mib = out
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|k| k / 1024.0);
        let report = super::read_report(&json)?;
        let pre = report["preexisting"].as_array().map(Vec::len).unwrap_or(0) as u64;
        drop(holder);
        self.set(Fact::AttachSeconds, to_tracing);
        if let Some(m) = rss_mib {
            self.set(Fact::AttachRssMib, m);
        }
        let all = pre >= held;
        Ok(Row::new(
            8,
            format!(
                "attach: `fdtrace -p` of a process holding {held} descriptors{}",
                if held < HELD_WANTED {
                    format!(
                        " (this machine's descriptor limit allows no more; {HELD_WANTED} asked)"
                    )
                } else {
                    String::new()
                }
            ),
            format!(
                "{to_tracing:.2} s to \"tracing\"; peak RSS {}; {pre} descriptors in `preexisting`",
                rss_mib
                    .map(|m| format!("{m:.1} MiB"))
                    .unwrap_or_else(|| "not measured (no /usr/bin/time)".into())
            ),
        )
        .target(
            "< 3 s, < 128 MiB, every one listed",
            to_tracing < 3.0 && rss_mib.is_some_and(|m| m < 128.0) && all,
        ))
    }
}
