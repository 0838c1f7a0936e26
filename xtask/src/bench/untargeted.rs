//! Case 2: what a process that is not the target pays while fdtrace runs, against the floor and
//! the raw syscall tracepoints.
use super::*;

impl Bench {
    pub(super) fn case2(&mut self) {
        let what = "open/close loop in a process that is not the target (fdtrace -p of a `sleep`)";
        let floor_what = "loop, the floor: an empty BPF program on every tracepoint fdtrace \
                          attaches (examples/floor; no process traced)";
        let raw_what = "loop, raw syscall tracepoints: a filter-only program on every syscall's \
                        entry and exit (examples/floor raw; no process traced)";
        let reps = self.p.reps;
        let pairs = self.p.pairs;
        let floor_tps = self.all_tracepoints("case 2");
        // untraced, untargeted (fdtrace), floor, raw floor: rotated from one repetition to the
        // next.
        let names = ["untraced", "untargeted", "floor", "raw-floor"];
        let mut runs: Vec<[Option<f64>; 4]> = vec![[None; 4]; reps];
        let mut last_err = [None, None, None, None];
        for (rep, got) in runs.iter_mut().enumerate() {
            for k in 0..4 {
                let c = (rep + k) % 4;
                let r = match c {
                    0 => self
                        .run_loop(self.openclose(pairs), "openclose", pairs)
                        .and_then(|o| ns_per_pair(&o)),
                    1 => self.untargeted_once(),
                    2 => match &floor_tps {
                        Some(tps) => self
                            .start_floor(tps)
                            .and_then(|floor| self.loop_under(floor, pairs)),
                        None => continue,
                    },
                    _ => self
                        .start_raw_floor()
                        .and_then(|floor| self.loop_under(floor, pairs)),
                };
                match r {
                    Ok(ns) => {
                        eprintln!(
                            "bench: case 2 rep {}/{reps}: {:<10} {ns:>9.0} ns/pair",
                            rep + 1,
                            names[c]
                        );
                        got[c] = Some(ns);
                    }
                    Err(e) => {
                        eprintln!(
                            "bench: case 2 rep {}/{reps} {} failed: {e:#}",
                            rep + 1,
                            names[c]
                        );
                        last_err[c] = Some(e);
                    }
                }
            }
        }
        let column = |c: usize| -> Vec<Option<f64>> { runs.iter().map(|r| r[c]).collect() };
        let (base, traced, floor, raw_floor) = (column(0), column(1), column(2), column(3));
        let [_, traced_err, floor_err, raw_err] = last_err;
        let ratios = |xs: &[Option<f64>]| -> Vec<f64> {
            xs.iter()
                .zip(&base)
                .filter_map(|(t, b)| Some((*t)? / (*b)?))
                .collect()
        };
        let b: Vec<f64> = base.iter().flatten().copied().collect();
        for (xs, err, row_what, under) in [
            (&traced, traced_err, what, Untargeted::Fdtrace),
            (&floor, floor_err, floor_what, Untargeted::Floor),
            (&raw_floor, raw_err, raw_what, Untargeted::RawFloor),
        ] {
            let key = |stat| Fact::UntargetedRatio { under, stat };
            let rs = ratios(xs);
            let t: Vec<f64> = xs.iter().flatten().copied().collect();
            match (median(&rs), median(&t), median(&b)) {
                (Some(r), Some(t), Some(b)) => {
                    self.set(key(Stat::Median), r);
                    let (lo, hi) = range(&rs);
                    self.set(key(Stat::Lo), lo);
                    self.set(key(Stat::Hi), hi);
                    let mut row = Row::new(
                        2,
                        row_what,
                        format!(
                            "{t:.0} ns/pair vs {b:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of runs)",
                            rs.len()
                        ),
                    )
                    .vs(format!("{r:.3}x ({:+.1}%)", (r - 1.0) * 100.0));
                    if under == Untargeted::Fdtrace {
                        row = row.target("< 3% slower", r < 1.03);
                    }
                    self.rows.push(row);
                }
                _ if under == Untargeted::Floor && floor_tps.is_none() => {
                    self.rows
                        .push(Row::skipped(2, row_what, "`fdtrace tracepoints` failed"));
                }
                _ => self.rows.push(Row::failed(
                    2,
                    row_what,
                    &err.unwrap_or_else(|| anyhow!("no successful pair of runs")),
                )),
            }
        }
    }

    /// The loop (ns per pair) while `floor` holds its programs attached; then `floor` detaches.
    pub(super) fn loop_under(&mut self, mut floor: Proc, pairs: u64) -> Result<f64> {
        let r = self
            .run_loop(self.openclose(pairs), "openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        floor.stop();
        r
    }

    pub(super) fn untargeted_once(&mut self) -> Result<f64> {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        self.record(&cmd, &[]);
        let sleeper = Proc::start(&mut cmd, "sleep", false)?;
        let json = self.tmp("untargeted.json");
        let tracer = self.attach(sleeper.pid(), &json, "fdtrace -p sleep")?;
        let pairs = self.p.pairs;
        let r = self
            .run_loop(self.openclose(pairs), "openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        let report = self.detach(tracer, &json);
        drop(sleeper);
        let ns = r?;
        let report = report?;
        if lost_events(&report) != 0 {
            self.notes.push(format!(
                "case 2: fdtrace tracing `sleep` reported {} lost events",
                lost_events(&report)
            ));
        }
        Ok(ns)
    }
}

// ---------------------------------------------------------------------------------------------
// Case 3: sustained event rate, and the user side alone
