//! Case 3: the sustained rate the consumer keeps up with.
use super::*;

impl Bench {
    pub(super) fn case3(&mut self) {
        let pairs = self.p.sustained_pairs;
        // The loop's own full single-thread rate, for reference.
        let untraced = self
            .run_loop(self.openclose(pairs), "openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        let json = self.tmp("sustained.json");
        let mut cmd = self.fdtrace_cmd(&json);
        cmd.arg("--").arg(&self.openclose).arg(pairs.to_string());
        let what = format!("lost events, loop at full speed under fdtrace ({pairs} pairs)");
        let traced = self
            .run_loop(cmd, "fdtrace -- openclose", pairs)
            .and_then(|o| ns_per_pair(&o))
            .and_then(|ns| read_report(&json).map(|r| (ns, r)));
        let untraced_eps = untraced.as_ref().ok().map(|ns| 2e9 / ns);
        if let Some(eps) = untraced_eps {
            self.set(Fact::SustainedUntracedEventsPerS, eps);
        }
        match traced {
            Ok((ns, report)) => {
                let lost = lost_events(&report);
                let eps = 2e9 / ns;
                self.set(Fact::SustainedLostEvents, lost as f64);
                self.set(Fact::SustainedTracedEventsPerS, eps);
                self.rows.push(
                    Row::new(
                        3,
                        what,
                        format!(
                            "{lost} lost of {} events, at {:.0} events/s ({ns:.0} ns/pair){}",
                            2 * pairs,
                            eps,
                            untraced_eps
                                .map(|u| format!("; untraced the loop makes {u:.0} events/s"))
                                .unwrap_or_default()
                        ),
                    )
                    .target("0 lost", lost == 0),
                );
            }
            Err(e) => self.rows.push(Row::failed(3, what, &e)),
        }
        let what = "user side alone: decode + State::apply (examples/user_throughput)";
        match self.user_throughput() {
            Ok(out) => {
                let apply = field(&out, "apply_events_per_s ").unwrap_or(f64::NAN);
                let decode = field(&out, "decode_events_per_s ").unwrap_or(f64::NAN);
                let nostack = field(&out, "decode_nostack_events_per_s ").unwrap_or(f64::NAN);
                let frames = field(&out, "unwound_frames ").unwrap_or(f64::NAN);
                self.set(Fact::UserEventsPerS, apply);
                self.set(Fact::UserDecodeEventsPerS, decode);
                self.set(Fact::UserDecodeNostackEventsPerS, nostack);
                let headroom = untraced_eps
                    .map(|u| format!("; {:.1}x the untraced loop's rate", apply / u))
                    .unwrap_or_default();
                self.rows.push(Row::new(
                    3,
                    what,
                    format!(
                        "{apply:.0} events/s ({frames:.0}-frame stacks){headroom}; decode alone {decode:.0}/s, {nostack:.0}/s without the stack copy"
                    ),
                ));
            }
            Err(e) => self.rows.push(Row::failed(3, what, &e)),
        }
        let pairs = self.p.callgrind_pairs;
        let what = format!(
            "fdtrace's instructions per open/close pair: `fdtrace -p` of the loop under callgrind, {pairs} pairs"
        );
        match self.missing(&["valgrind", "callgrind_control"]) {
            Some(m) => self.rows.push(Row::skipped(3, what, m)),
            None => match self.consumer_instructions(pairs) {
                Ok((per_pair, lost)) => {
                    self.set(Fact::ConsumerInstructionsPerPair, per_pair);
                    self.rows.push(Row::new(
                        3,
                        what,
                        format!(
                            "{per_pair:.0} instructions per pair (2 records), counted from the \
                             loop's start until fdtrace went idle; lost events {lost}"
                        ),
                    ));
                }
                Err(e) => self.rows.push(Row::failed(3, what, &e)),
            },
        }
    }

    /// The instructions fdtrace's process executes per open/close pair it consumes, counted
    /// from the start of an `openclose -w` loop until fdtrace is idle again (see
    /// `callgrind.rs`). Returns (instructions per pair, events lost).
    fn consumer_instructions(&mut self, pairs: u64) -> Result<(f64, u64)> {
        let mut cmd = Command::new(&self.openclose);
        cmd.args(["-w", &pairs.to_string()]);
        self.record(&cmd, &[]);
        let mut target = Proc::start(&mut cmd, "openclose -w", true)?;
        let ready = target.wait_line("ready", Duration::from_secs(10))?;
        let pid = target.pid();
        if ready.trim() != format!("ready {pid}") {
            bail!("unexpected line from openclose: {ready}");
        }
        let tracer = self.callgrind_fdtrace(pid, "loop")?;
        tracer.count(true)?;
        target.send_line();
        target.wait_line("ns_per_pair", Self::loop_timeout(pairs))?;
        let (total, lost) = self.callgrind_finish(tracer)?;
        target.send_line();
        drop(target);
        Ok((total as f64 / pairs as f64, lost))
    }

    /// The user-side benchmark on the stack of a real `openclose -w` blocked in read().
    pub(super) fn user_throughput(&mut self) -> Result<String> {
        let mut cmd = Command::new(&self.openclose);
        cmd.args(["-w", "1"]);
        let mut target = Proc::start(&mut cmd, "openclose -w", true)?;
        let ready = target.wait_line("ready", Duration::from_secs(10))?;
        let pid = target.pid();
        if ready.trim() != format!("ready {pid}") {
            bail!("unexpected line from openclose: {ready}");
        }
        // Wait until it sleeps in read().
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .unwrap_or_default()
            .starts_with("0 ")
        {
            if Instant::now() > deadline {
                bail!("openclose -w did not block in read()");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut cmd = Command::new(&self.user_tp);
        cmd.arg(self.p.user_pairs.to_string()).arg(pid.to_string());
        self.record(&cmd, &[(pid.to_string(), "$PID")]);
        let out =
            Proc::start(&mut cmd, "user_throughput", false)?.finish(Duration::from_secs(300))?;
        drop(target);
        if !out.status.success() {
            bail!(
                "user_throughput failed ({}): {}",
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }
}

// ---------------------------------------------------------------------------------------------
// Case 4: nginx under wrk
