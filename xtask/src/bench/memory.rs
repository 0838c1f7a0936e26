//! Cases 5 and 6: fdtrace's peak memory, and a recording's size and cost.
use super::*;

impl Bench {
    pub(super) fn case5(&mut self) {
        let (held, pairs) = (self.p.rss_held, self.p.rss_pairs);
        let what = format!(
            "fdtrace peak RSS: {held} descriptors held, {pairs} open/close pairs ({} events)",
            2 * pairs + held
        );
        match self.peak_rss() {
            Ok((kib, how, report)) => {
                let mib = kib as f64 / 1024.0;
                self.set(Fact::PeakRssMib, mib);
                self.rows.push(
                    Row::new(
                        5,
                        what,
                        format!(
                            "{mib:.1} MiB ({how}); lost events {}, {} opens modelled",
                            lost_events(&report),
                            model_opens(&report)
                        ),
                    )
                    .target("< 64 MiB", mib < 64.0),
                );
            }
            Err(e) => self.rows.push(Row::failed(5, what, &e)),
        }
        let what = "fdtrace peak RSS following short-lived processes: `fdtrace -f` of a shell \
                    that runs /bin/true 1000 times, then 4000 times";
        if self.tool("time").is_none() {
            self.rows.push(Row::skipped(5, what, "time not installed"));
        } else {
            match (self.follow_rss(1000), self.follow_rss(4000)) {
                (Ok((a, la)), Ok((b, lb))) => {
                    let per = (b as f64 - a as f64) / 3000.0;
                    self.set(Fact::FollowRssKibPerProcess, per);
                    self.rows.push(Row::new(
                        5,
                        what,
                        format!(
                            "{:.1} MiB, then {:.1} MiB: {per:.0} KiB more per process the session \
                             keeps (its table and stacks for the report); lost events {}",
                            a as f64 / 1024.0,
                            b as f64 / 1024.0,
                            la + lb
                        ),
                    ));
                }
                (Err(e), _) | (_, Err(e)) => self.rows.push(Row::failed(5, what, &e)),
            }
        }
        // What the two BTF parses of start-up take, each alone in a process.
        for (step, fact) in [
            ("layout", Fact::StartupLayoutMib),
            ("aya", Fact::StartupAyaMib),
        ] {
            let mut cmd = Command::new(&self.startup_mem);
            cmd.arg(step);
            self.record(&cmd, &[]);
            let r = Proc::start(&mut cmd, "startup_memory", false)
                .and_then(|p| p.finish(Duration::from_secs(120)));
            match r {
                Ok(out) if out.status.success() => {
                    let (a, b) = (
                        field(&out.stdout, "hwm_before_kib "),
                        field(&out.stdout, "hwm_after_kib "),
                    );
                    if let (Some(a), Some(b)) = (a, b) {
                        self.set(fact, (b - a) / 1024.0);
                    }
                }
                Ok(out) => self.notes.push(format!(
                    "case 5: startup_memory {step} failed: {}",
                    out.stderr.trim()
                )),
                Err(e) => self
                    .notes
                    .push(format!("case 5: startup_memory {step} failed: {e:#}")),
            }
        }
    }

    /// fdtrace's peak RSS (KiB, `/usr/bin/time -v`) following a shell that runs `/bin/true`
    /// `n` times, and the events it lost.
    fn follow_rss(&mut self, n: u64) -> Result<(u64, u64)> {
        let json = self.tmp("follow.json");
        let (mut cmd, _) = self.fdtrace_under_time();
        cmd.args(["-f", "--json", "-o"])
            .arg(&json)
            .args(["--", "sh", "-c"])
            .arg(format!(
                "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i + 1)); done"
            ));
        self.record(&cmd, &[]);
        let out = Proc::start(&mut cmd, "fdtrace -f (peak RSS)", false)?
            .finish(Duration::from_secs(600))?;
        if !out.status.success() {
            bail!("fdtrace failed ({}): {}", out.status, out.stderr.trim());
        }
        let kib = out
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("no maximum RSS from time -v")?;
        Ok((kib, lost_events(&read_report(&json)?)))
    }

    /// fdtrace under `/usr/bin/time -v` (its maximum RSS on stderr) when installed, else alone;
    /// and whether it is under `time`.
    pub(super) fn fdtrace_under_time(&self) -> (Command, bool) {
        match self.tool("time") {
            Some(t) => {
                let mut c = Command::new(t);
                c.arg("-v").arg(&self.fdtrace);
                (c, true)
            }
            None => (Command::new(&self.fdtrace), false),
        }
    }

    /// Peak RSS in KiB: from `/usr/bin/time -v` when present, else the last VmHWM seen.
    pub(super) fn peak_rss(&mut self) -> Result<(u64, &'static str, serde_json::Value)> {
        let json = self.tmp("rss.json");
        let (mut cmd, time) = self.fdtrace_under_time();
        cmd.arg("--json")
            .arg("-o")
            .arg(&json)
            .arg("--")
            .arg(&self.openclose)
            .arg("-k")
            .arg(self.p.rss_held.to_string())
            .arg(self.p.rss_pairs.to_string());
        self.record(&cmd, &[]);
        let mut p = Proc::start(&mut cmd, "fdtrace (peak RSS)", false)?;
        let fdtrace_pid = if time {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(&c) = children(p.pid()).first() {
                    break c;
                }
                if p.exited() || Instant::now() > deadline {
                    bail!("fdtrace did not start under time: {}", p.stderr_tail());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            p.pid()
        };
        let timeout = Self::loop_timeout(self.p.rss_pairs) + Duration::from_secs(120);
        let deadline = Instant::now() + timeout;
        let mut polled = 0;
        // The peak when fdtrace starts following the ring buffer: start-up alone.
        let mut at_start = None;
        while !p.exited() {
            if let Some(k) = vm_hwm_kib(fdtrace_pid) {
                polled = polled.max(k);
            }
            if at_start.is_none()
                && std::fs::read_to_string(format!("/proc/{fdtrace_pid}/wchan"))
                    .is_ok_and(|w| w.contains("epoll"))
            {
                at_start = vm_hwm_kib(fdtrace_pid);
                if let Some(k) = at_start {
                    self.set(Fact::StartupRssMib, k as f64 / 1024.0);
                }
                if let Some(k) = bpf_map_rss_kib(fdtrace_pid) {
                    self.set(Fact::RingRssMib, k as f64 / 1024.0);
                }
            }
            if Instant::now() > deadline {
                break;
            }
            let poll = if at_start.is_some() { 100 } else { 5 };
            let _ = p.take_line(Duration::from_millis(poll));
        }
        let out = p.finish(Duration::from_secs(1))?;
        if !out.status.success() {
            bail!("fdtrace failed ({}): {}", out.status, out.stderr.trim());
        }
        let report = read_report(&json)?;
        let from_time = out
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        self.notes.push(format!(
            "case 5: fdtrace's VmHWM when it began following the ring buffer (start-up only): {}; \
             polled every 100 ms until exit: {:.1} MiB{}",
            at_start
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "not seen".into()),
            polled as f64 / 1024.0,
            from_time
                .map(|k| format!("; `time -v` maximum RSS: {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        ));
        match from_time {
            Some(k) => Ok((k, "/usr/bin/time -v", report)),
            None if polled > 0 => Ok((polled, "VmHWM, polled", report)),
            None => bail!("no peak RSS measured"),
        }
    }

    pub(super) fn case6(&mut self) {
        let pairs = self.p.sustained_pairs / 2;
        let file = self.tmp("openclose.fdtrace");
        let _ = std::fs::remove_file(&file);
        let mut cmd = Command::new(&self.fdtrace);
        cmd.args(["record", "-q", "-o"])
            .arg(&file)
            .arg("--")
            .arg(&self.openclose)
            .arg(pairs.to_string());
        let what = format!("recording: bytes per event, open/close loop ({pairs} pairs)");
        let recorded = self
            .run_loop(cmd, "fdtrace record -- openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        let size = std::fs::metadata(&file).map(|m| m.len());
        match (recorded, size) {
            (Ok(ns), Ok(bytes)) => {
                let events = 2 * pairs;
                let per_event = bytes as f64 / events as f64;
                self.set(Fact::RecordBytesPerEvent, per_event);
                self.set(Fact::RecordNsPerPair, ns);
                let vs = self
                    .facts
                    .get(&Fact::LoopFdtraceNs)
                    .map(|live| format!("; {:.2}x the live mode's time per pair", ns / live))
                    .unwrap_or_default();
                self.rows.push(
                    Row::new(
                        6,
                        what,
                        format!(
                            "{bytes} bytes for {events} events: {per_event:.2} bytes/event; {ns:.0} ns/pair while recording{vs}"
                        ),
                    )
                    .target("<= 16 bytes/event", per_event <= 16.0),
                );
            }
            (Err(e), _) => self.rows.push(Row::failed(6, what, &e)),
            (_, Err(e)) => self.rows.push(Row::failed(6, what, &e.into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run and the report
