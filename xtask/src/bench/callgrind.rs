//! fdtrace's own instructions per event, under callgrind (cases 3 and 4): `fdtrace -p` runs
//! under `valgrind --tool=callgrind` with counting off; a case turns it on just before the load
//! starts, and counting stops once fdtrace is idle again (its CPU time still for a second), so the
//! count holds every record's decoding and modelling, and the few timer wake-ups meanwhile. An
//! instruction count, not a time: this machine's load does not move it.
use super::*;

/// fdtrace under callgrind, attached to a process.
pub(super) struct Callgrind {
    tracer: Proc,
    control: PathBuf,
    out: PathBuf,
    json: PathBuf,
}

impl Callgrind {
    /// Turn counting on or off (`callgrind_control -i`).
    pub(super) fn count(&self, on: bool) -> Result<()> {
        let on = if on { "on" } else { "off" };
        let o = Command::new(&self.control)
            .args(["-i", on, &self.tracer.pid().to_string()])
            .output()
            .context("running callgrind_control")?;
        if !o.status.success() {
            bail!(
                "callgrind_control -i {on} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Bench {
    /// Start `fdtrace -p PID` under callgrind, counting off, and wait until it follows the ring
    /// buffer. Its ring buffer (256 MiB) holds what a case sends while it falls behind.
    pub(super) fn callgrind_fdtrace(&mut self, pid: u32, tag: &str) -> Result<Callgrind> {
        let valgrind = self.tool("valgrind").context("valgrind")?;
        let control = self
            .tool("callgrind_control")
            .context("callgrind_control")?;
        let out = self.tmp(&format!("callgrind-{tag}.out"));
        let json = self.tmp(&format!("callgrind-{tag}.json"));
        let mut cmd = Command::new(valgrind);
        cmd.args(["--tool=callgrind", "--instr-atstart=no"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&self.fdtrace)
            .args(["--ring-mb", "256", "--json", "-o"])
            .arg(&json)
            .args(["-p", &pid.to_string()]);
        // Under valgrind, start-up (reading fdtrace's own debug information) takes a while.
        let tracer = self.attach_cmd(
            cmd,
            "fdtrace under callgrind",
            &[(pid.to_string(), "$PID")],
            Duration::from_secs(300),
        )?;
        Ok(Callgrind {
            tracer,
            control,
            out,
            json,
        })
    }

    /// Wait until fdtrace is idle, stop counting, end it (its report), and return the
    /// instructions counted and the events it lost.
    pub(super) fn callgrind_finish(&self, c: Callgrind) -> Result<(u64, u64)> {
        wait_idle(c.tracer.pid(), Duration::from_secs(300))?;
        c.count(false)?;
        let report = self.detach(c.tracer, &c.json)?;
        let text = std::fs::read_to_string(&c.out)
            .with_context(|| format!("reading {}", c.out.display()))?;
        // `totals:` sums what was counted while counting was on (`summary:`, of the last part,
        // is 0 with it off at the end).
        let total: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no totals in callgrind's output")?;
        Ok((total, lost_events(&report)))
    }
}

/// Wait until process `pid` has used less than 20 ms of CPU in a second.
fn wait_idle(pid: u32, timeout: Duration) -> Result<()> {
    let cpu_ns = || -> Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .with_context(|| format!("reading /proc/{pid}/schedstat"))?;
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("a schedstat line")
    };
    let deadline = Instant::now() + timeout;
    let mut before = cpu_ns()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ns()?;
        if now.saturating_sub(before) < 20_000_000 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pid {pid} still busy after {timeout:?}");
        }
        before = now;
    }
}
