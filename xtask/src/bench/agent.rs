//! Case 11: what `fdtrace agent` costs while nothing grows (issue 24). The agent runs with its
//! defaults (every process, polled every 5 s) and, in a second run, polled every second; its
//! CPU time, peak memory and the eBPF programs it holds are read from /proc at the end. Idle,
//! it must attach nothing: no process pays for it but the agent itself.
use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{Bench, Fact, Proc, Row};

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("a stat line")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A field in KiB of /proc/PID/status (VmHWM, VmRSS).
fn status_kib(pid: u32, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Descriptors of a process that are eBPF objects (programs, maps, links).
fn bpf_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf"))
                })
                .count()
        })
        .unwrap_or(0)
}

struct Idle {
    secs: f64,
    cpu: f64,
    hwm_mib: Option<f64>,
    bpf: usize,
    processes: usize,
}

impl Bench {
    pub(super) fn case11(&mut self) {
        let secs = if self.p.quick { 20 } else { 60 };
        for interval in ["5s", "1s"] {
            let what = format!(
                "`fdtrace agent` idle for {secs} s, every process polled every {interval}{}",
                if interval == "5s" {
                    " (its default)"
                } else {
                    ""
                }
            );
            match self.agent_idle(interval, secs) {
                Ok(r) => {
                    let share = r.cpu / r.secs * 100.0;
                    self.set(
                        if interval == "5s" {
                            Fact::AgentCpuPct5s
                        } else {
                            Fact::AgentCpuPct1s
                        },
                        share,
                    );
                    self.rows.push(
                        Row::new(
                            11,
                            what,
                            format!(
                                "{:.0} ms of CPU in {:.0} s ({share:.2}% of one CPU) watching {} \
                                 processes; peak RSS {}; eBPF objects held: {}",
                                r.cpu * 1000.0,
                                r.secs,
                                r.processes,
                                r.hwm_mib
                                    .map(|m| format!("{m:.1} MiB"))
                                    .unwrap_or_else(|| "?".into()),
                                r.bpf
                            ),
                        )
                        .vs(format!("{} eBPF objects: nothing attached", r.bpf)),
                    );
                }
                Err(e) => self.rows.push(Row::failed(11, what, &e)),
            }
        }
    }

    fn agent_idle(&mut self, interval: &str, secs: u64) -> Result<Idle> {
        let dir = self.tmp("agent-recordings");
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(&self.fdtrace);
        // Nothing on this host is near its limit; a trigger would make the run not idle.
        cmd.args(["agent", "--interval", interval, "--dir"])
            .arg(&dir);
        self.record(&cmd, &[]);
        let mut agent = Proc::start(&mut cmd, "fdtrace agent", false)?;
        // Its first line (on stderr) says what it watches.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if std::time::Instant::now() > deadline || agent.exited() {
                bail!("fdtrace agent never said it was watching");
            }
            if let Some((true, l)) = agent.take_line(Duration::from_millis(50))
                && l.contains("watching")
            {
                break;
            }
        }
        let t = std::time::Instant::now();
        let cpu0 = cpu_secs(agent.pid())?;
        std::thread::sleep(Duration::from_secs(secs));
        let cpu = cpu_secs(agent.pid())? - cpu0;
        let elapsed = t.elapsed().as_secs_f64();
        let hwm_mib = status_kib(agent.pid(), "VmHWM:").map(|k| k / 1024.0);
        let bpf = bpf_fds(agent.pid());
        let processes = std::fs::read_dir("/proc")?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .count();
        agent.signal(libc::SIGINT);
        let out = agent.finish(Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "fdtrace agent failed ({}): {}",
                out.status,
                out.stderr.trim()
            );
        }
        if out.stderr.contains("tracing pid") {
            bail!(
                "a process on this host triggered a recording, so the run was not idle: {}",
                out.stderr.trim()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Idle {
            secs: elapsed,
            cpu,
            hwm_mib,
            bpf,
            processes,
        })
    }
}
