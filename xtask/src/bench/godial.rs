//! Case 10: what fdtrace's Go link probes cost (issue 19). `bench/godial` makes one HTTP
//! request per new connection (its upstream closes each): every request is one
//! `queueForDial` and one `dialConnFor` probe hit, besides the births and deaths fdtrace traces
//! anyway. Rotated: untraced, `fdtrace -p` (with the probes), `fdtrace --no-go-links -p`; the
//! probes' cost per request is the difference between the last two.
use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{Bench, Fact, Proc, Row, field, lost_events, median, range};

impl Bench {
    pub(super) fn case10(&mut self) {
        let n = if self.p.quick { 2_000 } else { 10_000 };
        let what = format!(
            "Go net/http client, {n} requests, a new connection each (`bench/godial`): the \
             net/http probes that name the requesting goroutine"
        );
        let bin = match self.godial() {
            Ok(b) => b,
            Err(e) => {
                self.rows.push(Row::failed(10, what, &e));
                return;
            }
        };
        let names = ["untraced", "links", "no links"];
        let mut runs: Vec<[Option<f64>; 3]> = vec![[None; 3]; self.p.reps];
        let mut last_err = None;
        for (rep, got) in runs.iter_mut().enumerate() {
            for k in 0..3 {
                let c = (rep + k) % 3;
                let args: &[&str] = match c {
                    0 => &[],
                    1 => &["fdtrace"],
                    _ => &["fdtrace", "--no-go-links"],
                };
                match self.godial_run(&bin, n, args) {
                    Ok(ns) => {
                        eprintln!(
                            "bench: case 10 rep {}/{}: {:<9} {ns:>9.0} ns/request",
                            rep + 1,
                            self.p.reps,
                            names[c]
                        );
                        got[c] = Some(ns);
                    }
                    Err(e) => {
                        eprintln!("bench: case 10 {} failed: {e:#}", names[c]);
                        last_err = Some(e);
                    }
                }
            }
        }
        let col = |c: usize| -> Vec<f64> { runs.iter().filter_map(|r| r[c]).collect() };
        let diffs: Vec<f64> = runs.iter().filter_map(|r| Some(r[1]? - r[2]?)).collect();
        let ratios: Vec<f64> = runs.iter().filter_map(|r| Some(r[1]? / r[0]?)).collect();
        match (
            median(&col(0)),
            median(&col(1)),
            median(&col(2)),
            median(&diffs),
            median(&ratios),
        ) {
            (Some(u), Some(l), Some(nl), Some(d), Some(r)) => {
                let (lo, hi) = range(&diffs);
                self.set(Fact::GoProbeNs, d);
                self.set(Fact::GoRatio, r);
                self.rows.push(
                    Row::new(
                        10,
                        what,
                        format!(
                            "{l:.0} ns/request traced with the probes, {nl:.0} without \
                             (`--no-go-links`), {u:.0} untraced: the probes cost {d:.0} ns per \
                             request (per-run {lo:.0} to {hi:.0}), {} runs",
                            diffs.len()
                        ),
                    )
                    .vs(format!("{r:.3}x ({:+.1}%)", (r - 1.0) * 100.0)),
                );
            }
            _ => self.rows.push(Row::failed(
                10,
                what,
                &last_err.unwrap_or_else(|| anyhow::anyhow!("no complete repetition")),
            )),
        }
    }

    /// bench/godial, built with the system's Go into target/bench.
    fn godial(&mut self) -> Result<PathBuf> {
        let out = self.root.join("target/bench");
        let bin = out.join("godial");
        let mut cmd = Command::new("go");
        cmd.arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(self.root.join("bench/godial.go"))
            .env("GOCACHE", out.join("go-cache"))
            .env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "");
        let st = cmd.status().context("running go (Debian: golang-go)")?;
        if !st.success() {
            bail!("go build of bench/godial.go failed ({st})");
        }
        Ok(bin)
    }

    /// One run of godial: untraced (`fdtrace` empty) or traced by `fdtrace ARGS… -p PID`.
    fn godial_run(&mut self, bin: &PathBuf, n: u32, fdtrace: &[&str]) -> Result<f64> {
        let mut cmd = Command::new(bin);
        cmd.arg(n.to_string());
        self.record(&cmd, &[]);
        let mut target = Proc::start(&mut cmd, "godial", true)?;
        target.wait_line("ready", Duration::from_secs(30))?;
        let json = self.tmp("case10.json");
        let tracer = if fdtrace.is_empty() {
            None
        } else {
            let args: Vec<String> = fdtrace[1..].iter().map(|s| s.to_string()).collect();
            Some(self.attach_with(target.pid(), &json, "fdtrace", &args, &[])?)
        };
        target.send_line();
        let line = target.wait_line("ns_per_request", Duration::from_secs(600));
        let report = tracer.map(|t| self.detach(t, &json));
        let out = target.finish(Duration::from_secs(30))?;
        let line = line?;
        if let Some(rep) = report {
            let rep = rep?;
            if lost_events(&rep) != 0 {
                self.notes.push(format!(
                    "case 10: fdtrace {} reported {} lost events",
                    fdtrace.join(" "),
                    lost_events(&rep)
                ));
            }
        }
        if !out.status.success() {
            bail!("godial failed ({}): {}", out.status, out.stderr.trim());
        }
        field(&format!("{line}\n"), "ns_per_request ")
            .with_context(|| format!("no `ns_per_request` in {line:?}"))
    }
}
