//! Case 9: what a process outside the target pays while fdtrace traces a whole cgroup
//! (`--cgroup`, `--container`). The kernel then looks up the cgroup of every process that is not
//! traced yet at each hooked syscall (one helper call and one hash lookup): the open/close loop,
//! outside a cgroup that holds a sleeping process, runs untraced and under `fdtrace --cgroup`,
//! rotated; per-run ratios against the untraced loop, and the same against `fdtrace -p` of a
//! sleeping process (case 2's untargeted configuration) to isolate the cgroup check.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{Bench, Fact, Proc, Row, lost_events, median, ns_per_pair, range};

/// A cgroup v2 made for the bench, holding one sleeping process; removed when dropped.
struct SleepingCgroup {
    dir: PathBuf,
    sleeper: Proc,
}

impl SleepingCgroup {
    fn new(b: &mut Bench) -> Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let Some(mount) = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        }) else {
            bail!("no cgroup v2 hierarchy on this host");
        };
        let dir = mount.join(format!("fdtrace-bench-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        b.record(&cmd, &[]);
        let sleeper = Proc::start(&mut cmd, "sleep", false)?;
        let me = SleepingCgroup { dir, sleeper };
        std::fs::write(me.dir.join("cgroup.procs"), me.sleeper.pid().to_string())
            .context("moving the sleeper into the cgroup")?;
        Ok(me)
    }
}

impl Drop for SleepingCgroup {
    fn drop(&mut self) {
        self.sleeper.stop();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Bench {
    pub(super) fn case9(&mut self) {
        let pairs = self.p.pairs;
        let what = format!(
            "open/close loop outside the target ({pairs} pairs) while fdtrace traces a cgroup \
             (`--cgroup`)"
        );
        let cg = match SleepingCgroup::new(self) {
            Ok(c) => c,
            Err(e) => {
                self.rows.push(Row::skipped(9, what, format!("{e:#}")));
                return;
            }
        };
        // untraced, --cgroup, -p of a sleeper outside it: rotated.
        let names = ["untraced", "cgroup", "untargeted"];
        let mut runs: Vec<[Option<f64>; 3]> = vec![[None; 3]; self.p.reps];
        let mut last_err = None;
        for (rep, got) in runs.iter_mut().enumerate() {
            for k in 0..3 {
                let c = (rep + k) % 3;
                let r = match c {
                    0 => self
                        .run_loop(self.openclose(pairs), "openclose", pairs)
                        .and_then(|o| ns_per_pair(&o)),
                    1 => self.loop_while_tracing(
                        vec!["--cgroup".into(), cg.dir.to_string_lossy().into_owned()],
                        &[(cg.dir.to_string_lossy().into_owned(), "$CGROUP")],
                    ),
                    _ => {
                        let pid = cg.sleeper.pid().to_string();
                        self.loop_while_tracing(
                            vec!["-p".into(), pid.clone()],
                            &[(pid.clone(), "$PID")],
                        )
                    }
                };
                match r {
                    Ok(ns) => {
                        eprintln!(
                            "bench: case 9 rep {}/{}: {:<10} {ns:>9.0} ns/pair",
                            rep + 1,
                            self.p.reps,
                            names[c]
                        );
                        got[c] = Some(ns);
                    }
                    Err(e) => {
                        eprintln!("bench: case 9 {} failed: {e:#}", names[c]);
                        last_err = Some(e);
                    }
                }
            }
        }
        drop(cg);
        let ratios = |a: usize, b: usize| -> Vec<f64> {
            runs.iter().filter_map(|r| Some(r[a]? / r[b]?)).collect()
        };
        let col = |c: usize| -> Vec<f64> { runs.iter().filter_map(|r| r[c]).collect() };
        let (vs_untraced, vs_untargeted) = (ratios(1, 0), ratios(1, 2));
        match (
            median(&vs_untraced),
            median(&vs_untargeted),
            median(&col(1)),
            median(&col(0)),
        ) {
            (Some(r), Some(q), Some(t), Some(b)) => {
                let (lo, hi) = range(&vs_untraced);
                let (qlo, qhi) = range(&vs_untargeted);
                self.set(Fact::CgroupRatio, r);
                self.set(Fact::CgroupVsUntargeted, q);
                self.rows.push(
                    Row::new(
                        9,
                        what,
                        format!(
                            "{t:.0} ns/pair vs {b:.0} untraced (per-run ratios {lo:.3}–{hi:.3}); \
                             vs `fdtrace -p` of a process elsewhere: {q:.3}x (per-run \
                             {qlo:.3}–{qhi:.3}), {} runs",
                            vs_untraced.len()
                        ),
                    )
                    .vs(format!("{r:.3}x ({:+.1}%)", (r - 1.0) * 100.0)),
                );
            }
            _ => self.rows.push(Row::failed(
                9,
                what,
                &last_err.unwrap_or_else(|| anyhow::anyhow!("no complete repetition")),
            )),
        }
    }

    /// The loop's ns per pair while `fdtrace ARGS` runs (ARGS name a target elsewhere).
    fn loop_while_tracing(&mut self, args: Vec<String>, subst: &[(String, &str)]) -> Result<f64> {
        let pairs = self.p.pairs;
        let json = self.tmp("case9.json");
        let tracer = self.attach_to(&args, &json, "fdtrace", subst)?;
        let r = self
            .run_loop(self.openclose(pairs), "openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        let report = self.detach(tracer, &json);
        let ns = r?;
        // A cgroup that only sleeps has one process with nothing to say; the report is read to
        // check that nothing was lost.
        if let Ok(rep) = report
            && lost_events(&rep) != 0
        {
            self.notes.push(format!(
                "case 9: fdtrace {} reported {} lost events",
                args.join(" "),
                lost_events(&rep)
            ));
        }
        Ok(ns)
    }
}
