//! Case 12: what naming a language runtime's frames costs per birth (issue 21): the open/close
//! loop in Python (`bench/openclose.py`, Debian's python3), in Java (`bench/OpenClose.java`,
//! compiled by the JIT) and in C (`bench/openclose.c`), each untraced and under
//! `fdtrace -- PROGRAM`, in the same run. For Python fdtrace reads the interpreter's frame chain
//! at each birth besides the 2 KiB stack copy; for Java it copies 30 KiB of stack and reads the
//! JVM's code cache and methods; the added time per open/close pair is compared with C's (the
//! copy alone).
use std::{collections::BTreeMap, process::Command};

use anyhow::{Result, bail};

use super::{Bench, Fact, Row, lost_events, median, model_opens, ns_per_pair, read_report};

const PYTHON: &str = "/usr/bin/python3";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cfg {
    CUntraced,
    CTraced,
    PyUntraced,
    PyTraced,
    JavaUntraced,
    JavaTraced,
}

impl Bench {
    pub(super) fn case12(&mut self) {
        let what = "Python's open/close loop (os.open/os.close) vs C's, untraced and under fdtrace";
        if !std::path::Path::new(PYTHON).exists() {
            self.rows.push(Row::failed(
                12,
                what,
                &anyhow::anyhow!("{PYTHON} is not installed"),
            ));
            return;
        }
        // Python's loop is slower: fewer pairs take as long.
        let pairs = self.p.pairs / 4;
        let classes = match self.compile_java() {
            Ok(d) => d,
            Err(e) => {
                self.rows.push(Row::failed(12, what, &e));
                return;
            }
        };
        let cfgs = [
            Cfg::CUntraced,
            Cfg::CTraced,
            Cfg::PyUntraced,
            Cfg::PyTraced,
            Cfg::JavaUntraced,
            Cfg::JavaTraced,
        ];
        let mut samples: BTreeMap<Cfg, Vec<f64>> = BTreeMap::new();
        for rep in 0..self.p.reps {
            let mut order = cfgs.to_vec();
            order.rotate_left(rep % cfgs.len());
            for cfg in order {
                match self.runtime_loop(cfg, pairs, &classes) {
                    Ok(ns) => samples.entry(cfg).or_default().push(ns),
                    Err(e) => {
                        self.rows
                            .push(Row::failed(12, format!("{what}: {cfg:?}"), &e));
                        return;
                    }
                }
            }
        }
        let m = |c: Cfg| median(samples.get(&c).map(Vec::as_slice).unwrap_or(&[])).unwrap_or(0.0);
        let (cu, ct, pu, pt, ju, jt) = (
            m(Cfg::CUntraced),
            m(Cfg::CTraced),
            m(Cfg::PyUntraced),
            m(Cfg::PyTraced),
            m(Cfg::JavaUntraced),
            m(Cfg::JavaTraced),
        );
        self.set(Fact::RuntimeCAddedNs, ct - cu);
        self.set(Fact::RuntimePyAddedNs, pt - pu);
        self.set(Fact::RuntimeJavaAddedNs, jt - ju);
        self.rows.push(
            Row::new(
                12,
                format!("{what} ({pairs} pairs, median of {})", self.p.reps),
                format!(
                    "C {cu:.0} → {ct:.0} ns per pair (+{:.0} ns); Python {pu:.0} → {pt:.0} ns \
                     (+{:.0} ns: the frame chain read per birth); Java {ju:.0} → {jt:.0} ns \
                     (+{:.0} ns: 30 KiB copied, the JVM's code read per birth)",
                    ct - cu,
                    pt - pu,
                    jt - ju
                ),
            )
            .vs(format!(
                "added cost per birth: Python {:.1}x C's, Java {:.1}x",
                (pt - pu) / (ct - cu).max(1.0),
                (jt - ju) / (ct - cu).max(1.0)
            )),
        );
    }

    /// `bench/OpenClose.java` compiled into a directory of the run's.
    fn compile_java(&mut self) -> Result<std::path::PathBuf> {
        let dir = self.tmp("java-classes");
        std::fs::create_dir_all(&dir)?;
        let st = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg(self.root.join("bench/OpenClose.java"))
            .status()
            .map_err(|e| anyhow::anyhow!("javac (Debian: openjdk-17-jdk-headless): {e}"))?;
        if !st.success() {
            bail!("javac bench/OpenClose.java: {st}");
        }
        Ok(dir)
    }

    fn runtime_loop(&mut self, cfg: Cfg, pairs: u64, classes: &std::path::Path) -> Result<f64> {
        let program = match cfg {
            Cfg::CUntraced | Cfg::CTraced => vec![self.openclose.display().to_string()],
            Cfg::PyUntraced | Cfg::PyTraced => vec![
                PYTHON.to_string(),
                self.root.join("bench/openclose.py").display().to_string(),
            ],
            Cfg::JavaUntraced | Cfg::JavaTraced => vec![
                "java".to_string(),
                "-cp".to_string(),
                classes.display().to_string(),
                "OpenClose".to_string(),
            ],
        };
        let traced = matches!(cfg, Cfg::CTraced | Cfg::PyTraced | Cfg::JavaTraced);
        let json = self.tmp("runtime-loop.json");
        let mut cmd = if traced {
            let mut c = self.fdtrace_cmd(&json);
            c.arg("--");
            c
        } else {
            Command::new(&program[0])
        };
        let args = if traced { &program[..] } else { &program[1..] };
        cmd.args(args).arg(pairs.to_string());
        let ns = ns_per_pair(&self.run_loop(cmd, &format!("{cfg:?}"), pairs)?)?;
        if traced {
            let report = read_report(&json)?;
            if lost_events(&report) != 0 || model_opens(&report) < pairs {
                bail!(
                    "{cfg:?}: {} opens modelled of {pairs}, {} lost events",
                    model_opens(&report),
                    lost_events(&report)
                );
            }
            // The loop leaks one descriptor in `loop`: its site must be named there, or the
            // frames were not read and the run measured less than it says.
            let function = match cfg {
                Cfg::PyTraced => Some("loop"),
                Cfg::JavaTraced => Some("OpenClose.loop"),
                _ => None,
            };
            if let Some(function) = function {
                let named = report["sites"].as_array().into_iter().flatten().any(|s| {
                    s["user_frame"]
                        .as_u64()
                        .and_then(|i| s["frames"][i as usize]["function"].as_str())
                        == Some(function)
                });
                if !named {
                    bail!(
                        "{cfg:?}: the loop's leak was not named at `{function}`: frames not read"
                    );
                }
            }
        }
        Ok(ns)
    }
}
