//! Case 1: the open/close loop, untraced, under fdtrace and under the floors (empty programs on
//! the same tracepoints), and the diagnosis of where its time goes.
use super::*;

/// The tracepoints fdtrace attaches for open, openat and close (its `exit_regs_*` programs read
/// the arguments at exit, so open and openat have no entry program).
pub(super) const OPENCLOSE_TPS: [&str; 3] = ["sys_exit_openat", "sys_exit_open", "sys_enter_close"];

pub(super) const BPFTRACE_EQUIVALENT: &str = "tracepoint:syscalls:sys_exit_openat /pid == cpid/ { @open[tid, args->ret] = ustack; } tracepoint:syscalls:sys_enter_close /pid == cpid/ { delete(@open[tid, args->fd]); }";

pub(super) fn tracepoint_exists(name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(t).join("events/syscalls").join(name).exists())
}

/// Start examples/floor (stdin piped: it detaches at end of file) and wait until it says its
/// programs are attached.
pub(super) fn start_ready(cmd: &mut Command, what: &str) -> Result<Proc> {
    let mut p = Proc::start(cmd, what, true)?;
    if let Err(e) = p.wait_line("ready", Duration::from_secs(120)) {
        p.stop();
        return Err(e);
    }
    Ok(p)
}

/// The tracepoints fdtrace attaches for open, openat and close, as `syscalls:NAME`.
pub(super) fn openclose_tracepoints() -> Vec<String> {
    let tps: Vec<&str> = OPENCLOSE_TPS
        .iter()
        .copied()
        .filter(|tp| tracepoint_exists(tp))
        .collect();
    let tps = if tps.is_empty() {
        OPENCLOSE_TPS.to_vec()
    } else {
        tps
    };
    tps.iter().map(|tp| format!("syscalls:{tp}")).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum LoopCfg {
    Untraced,
    Fdtrace,
    Floor,
    RawFloor,
    BpftraceEmpty,
    Bpftrace,
    Strace,
}

impl LoopCfg {
    pub(super) fn label(self) -> &'static str {
        match self {
            LoopCfg::Untraced => "untraced",
            LoopCfg::Fdtrace => "fdtrace (`fdtrace --json -o FILE -- openclose N`)",
            LoopCfg::Floor => {
                "floor: an empty BPF program on the same tracepoints (examples/floor, loaded as \
                 fdtrace loads its own)"
            }
            LoopCfg::BpftraceEmpty => "bpftrace with empty blocks on the same tracepoints",
            LoopCfg::RawFloor => {
                "raw syscall tracepoints: a filter-only program on every syscall's entry and \
                 exit (examples/floor raw)"
            }
            LoopCfg::Bpftrace => "bpftrace script doing the equivalent work",
            LoopCfg::Strace => "strace -f -e trace=openat,close",
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            LoopCfg::Untraced => "untraced",
            LoopCfg::Fdtrace => "fdtrace",
            LoopCfg::Floor => "floor",
            LoopCfg::RawFloor => "raw-floor",
            LoopCfg::BpftraceEmpty => "bt-empty",
            LoopCfg::Bpftrace => "bpftrace",
            LoopCfg::Strace => "strace",
        }
    }
}

impl Bench {
    pub(super) fn loop_once(&mut self, cfg: LoopCfg, lost: &mut Vec<u64>) -> Result<f64> {
        let pairs = self.p.pairs;
        let oc = self.openclose.display().to_string();
        match cfg {
            LoopCfg::Untraced => {
                ns_per_pair(&self.run_loop(self.openclose(pairs), "openclose", pairs)?)
            }
            LoopCfg::Fdtrace => {
                let json = self.tmp("loop-fdtrace.json");
                let mut cmd = self.fdtrace_cmd(&json);
                cmd.arg("--").arg(&self.openclose).arg(pairs.to_string());
                let ns = ns_per_pair(&self.run_loop(cmd, "fdtrace -- openclose", pairs)?)?;
                let report = read_report(&json)?;
                lost.push(lost_events(&report));
                if model_opens(&report) < pairs {
                    self.notes.push(format!(
                        "case 1: an fdtrace run modelled {} opens of {pairs} (lost events {})",
                        model_opens(&report),
                        lost_events(&report)
                    ));
                }
                Ok(ns)
            }
            LoopCfg::Floor => {
                let floor = self.start_floor(&openclose_tracepoints())?;
                self.loop_under(floor, pairs)
            }
            LoopCfg::BpftraceEmpty | LoopCfg::Bpftrace => {
                let prog = if cfg == LoopCfg::BpftraceEmpty {
                    openclose_tracepoints()
                        .iter()
                        .map(|tp| format!("tracepoint:{tp} {{}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    BPFTRACE_EQUIVALENT.to_string()
                };
                let mut cmd = Command::new(self.tool("bpftrace").context("bpftrace")?);
                cmd.arg("-o")
                    .arg(self.tmp("bpftrace.out"))
                    .arg("-e")
                    .arg(prog)
                    .arg("-c")
                    .arg(format!("{oc} {pairs}"));
                ns_per_pair(&self.run_loop(cmd, "bpftrace -c openclose", pairs)?)
            }
            LoopCfg::RawFloor => {
                let floor = self.start_raw_floor()?;
                self.loop_under(floor, pairs)
            }
            LoopCfg::Strace => {
                let n = self.p.strace_pairs;
                let mut cmd = Command::new(self.tool("strace").context("strace")?);
                cmd.args(["-f", "-e", "trace=openat,close", "-o", "/dev/null"])
                    .arg(&self.openclose)
                    .arg(n.to_string());
                ns_per_pair(&self.run_loop(cmd, "strace openclose", n)?)
            }
        }
    }

    pub(super) fn case1(&mut self) {
        let mut cfgs = vec![
            LoopCfg::Untraced,
            LoopCfg::Fdtrace,
            LoopCfg::Floor,
            LoopCfg::RawFloor,
        ];
        let mut skipped = Vec::new();
        match self.missing(&["bpftrace"]) {
            None => cfgs.extend([LoopCfg::BpftraceEmpty, LoopCfg::Bpftrace]),
            Some(why) => skipped.extend([
                (LoopCfg::BpftraceEmpty, why.clone()),
                (LoopCfg::Bpftrace, why),
            ]),
        }
        match self.missing(&["strace"]) {
            None => cfgs.push(LoopCfg::Strace),
            Some(why) => skipped.push((LoopCfg::Strace, why)),
        }
        let reps = self.p.reps;
        let mut samples: BTreeMap<LoopCfg, Vec<Option<f64>>> =
            cfgs.iter().map(|&c| (c, vec![None; reps])).collect();
        let mut errors: BTreeMap<LoopCfg, anyhow::Error> = BTreeMap::new();
        let mut lost = Vec::new();
        for rep in 0..reps {
            let mut order = cfgs.clone();
            order.rotate_left(rep % cfgs.len());
            for cfg in order {
                match self.loop_once(cfg, &mut lost) {
                    Ok(ns) => {
                        eprintln!(
                            "bench: case 1 rep {}/{reps}: {:<9} {ns:>9.0} ns/pair",
                            rep + 1,
                            cfg.key()
                        );
                        samples.get_mut(&cfg).expect("cfg")[rep] = Some(ns);
                    }
                    Err(e) => {
                        eprintln!(
                            "bench: case 1 rep {}/{reps}: {} failed: {e:#}",
                            rep + 1,
                            cfg.key()
                        );
                        errors.insert(cfg, e);
                    }
                }
            }
        }
        let base = samples[&LoopCfg::Untraced].clone();
        // Per repetition: ratio to, and cost added over, the untraced run of the same repetition.
        let paired = |cfg: LoopCfg, f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
            samples
                .get(&cfg)
                .map(|v| {
                    v.iter()
                        .zip(&base)
                        .filter_map(|(x, b)| Some(f((*x)?, (*b)?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let all: Vec<LoopCfg> = [
            LoopCfg::Untraced,
            LoopCfg::Fdtrace,
            LoopCfg::Floor,
            LoopCfg::RawFloor,
            LoopCfg::BpftraceEmpty,
            LoopCfg::Bpftrace,
            LoopCfg::Strace,
        ]
        .to_vec();
        let mut added: BTreeMap<LoopCfg, f64> = BTreeMap::new();
        for cfg in all {
            let what = format!("open/close loop: {}", cfg.label());
            if let Some((_, why)) = skipped.iter().find(|(c, _)| *c == cfg) {
                self.rows.push(Row::skipped(1, what, why.clone()));
                continue;
            }
            let got: Vec<f64> = samples[&cfg].iter().flatten().copied().collect();
            let Some(med) = median(&got) else {
                let e = errors
                    .remove(&cfg)
                    .unwrap_or_else(|| anyhow!("no successful run"));
                self.rows.push(Row::failed(1, what, &e));
                continue;
            };
            let (lo, hi) = range(&got);
            let n = if cfg == LoopCfg::Strace {
                self.p.strace_pairs
            } else {
                self.p.pairs
            };
            let result = format!(
                "{med:.0} ns/pair (range {lo:.0}–{hi:.0}, {} runs × {n} pairs)",
                got.len()
            );
            self.set(
                match cfg {
                    LoopCfg::Untraced => Fact::LoopUntracedNs,
                    LoopCfg::Fdtrace => Fact::LoopFdtraceNs,
                    LoopCfg::Floor => Fact::LoopFloorNs,
                    LoopCfg::RawFloor => Fact::LoopRawFloorNs,
                    LoopCfg::BpftraceEmpty => Fact::LoopBpftraceEmptyNs,
                    LoopCfg::Bpftrace => Fact::LoopBpftraceNs,
                    LoopCfg::Strace => Fact::LoopStraceNs,
                },
                med,
            );
            let mut row = Row::new(1, what, result);
            if cfg != LoopCfg::Untraced {
                let ratio = median(&paired(cfg, &|x, b| x / b));
                let add = median(&paired(cfg, &|x, b| x - b));
                if let (Some(ratio), Some(add)) = (ratio, add) {
                    added.insert(cfg, add);
                    row = row.vs(format!("{} (+{add:.0} ns)", loop_ratio(ratio)));
                    if cfg == LoopCfg::Fdtrace {
                        self.set(Fact::LoopFdtraceRatio, ratio);
                        self.set(Fact::LoopFdtraceAddedNs, add);
                        row = row.target("≤ 1.50x", ratio <= 1.5);
                    }
                    match cfg {
                        LoopCfg::Floor => self.set(Fact::LoopFloorAddedNs, add),
                        LoopCfg::RawFloor => self.set(Fact::LoopRawFloorAddedNs, add),
                        LoopCfg::BpftraceEmpty => self.set(Fact::LoopBpftraceEmptyAddedNs, add),
                        LoopCfg::Bpftrace => self.set(Fact::LoopBpftraceAddedNs, add),
                        LoopCfg::Strace => self.set(Fact::LoopStraceRatio, ratio),
                        _ => {}
                    }
                }
            }
            self.rows.push(row);
        }
        // fdtrace's added cost against the floor's and bpftrace's.
        let fd = added.get(&LoopCfg::Fdtrace).copied();
        match (fd, added.get(&LoopCfg::Floor).copied()) {
            (Some(fd), Some(floor)) => {
                let (result, met) = if floor > 0.0 {
                    let r = fd / floor;
                    self.set(Fact::LoopFdtraceVsFloor, r);
                    (format!("+{fd:.0} ns vs +{floor:.0} ns: {r:.1}x"), r <= 2.0)
                } else {
                    (
                        format!("+{fd:.0} ns vs +{floor:.0} ns (floor within noise)"),
                        fd <= 0.0,
                    )
                };
                self.rows.push(
                    Row::new(1, "added cost per pair: fdtrace vs the floor", result)
                        .target("≤ 2x the floor's", met),
                );
            }
            (_, None) => self.rows.push(Row::skipped(
                1,
                "added cost per pair: fdtrace vs the floor",
                self.missing(&["bpftrace"])
                    .unwrap_or_else(|| "no floor measurement".into()),
            )),
            (None, _) => self.rows.push(Row::skipped(
                1,
                "added cost per pair: fdtrace vs the floor",
                "no fdtrace measurement",
            )),
        }
        match (fd, added.get(&LoopCfg::Bpftrace).copied()) {
            (Some(fd), Some(bt)) => self.rows.push(
                Row::new(
                    1,
                    "added cost per pair: fdtrace vs the bpftrace script",
                    format!("+{fd:.0} ns vs +{bt:.0} ns"),
                )
                .target("lower than bpftrace's", fd < bt),
            ),
            _ => self.rows.push(Row::skipped(
                1,
                "added cost per pair: fdtrace vs the bpftrace script",
                self.missing(&["bpftrace"])
                    .unwrap_or_else(|| "a measurement is missing".into()),
            )),
        }
        if !lost.is_empty() {
            let total: u64 = lost.iter().sum();
            self.set(Fact::LoopLostEvents, total as f64);
            self.notes.push(format!(
                "case 1: lost events over the {} fdtrace runs: {total}",
                lost.len()
            ));
        }
        if fd.is_some()
            && let Err(e) = self.diagnose_loop()
        {
            self.notes
                .push(format!("case 1 diagnostic run failed: {e:#}"));
        }
    }

    /// Two more fdtrace runs of the loop, attached with -p to `openclose -w`, with the kernel's
    /// BPF run-time statistics on: time in each of fdtrace's programs, the consumer's CPU time
    /// and its wake-ups, per pair. The second run stops fdtrace's process (SIGSTOP) during a
    /// loop short enough for the ring buffer to hold all its records: no record is consumed, so
    /// the kernel never has a caught-up consumer to wake, and nothing competes for the CPUs.
    pub(super) fn diagnose_loop(&mut self) -> Result<()> {
        let stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
        let normal = self.diag_run(self.p.pairs, false);
        // The short stopped runs are noisy alone: several, summed.
        let mut runs = Vec::new();
        let mut last_err = None;
        for _ in 0..STOPPED_RUNS {
            match self.diag_run(STOPPED_PAIRS, true) {
                Ok(d) => runs.push(d),
                Err(e) => last_err = Some(e),
            }
        }
        let stopped =
            Diag::merge(runs).ok_or_else(|| last_err.unwrap_or_else(|| anyhow!("no stopped run")));
        drop(stats);
        for (run, prefix, d) in [
            (DiagRun::Normal, "diag", normal),
            (DiagRun::Stopped, "stopped", stopped),
        ] {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    self.notes
                        .push(format!("diagnostic run ({prefix}) failed: {e:#}"));
                    continue;
                }
            };
            let n = d.pairs as f64;
            let bpf: f64 = d.progs.iter().map(|p| p.2 as f64).sum::<f64>() / n;
            self.set(Fact::DiagLoopNs { run }, d.loop_ns);
            self.set(Fact::DiagBpfNsPerPair { run }, bpf);
            self.set(Fact::DiagConsumerCpuNsPerPair { run }, d.cpu_ns / n);
            self.set(Fact::DiagConsumerWakeupsPerPair { run }, d.wakeups / n);
            self.set(Fact::DiagLostEvents { run }, d.lost as f64);
            let mut s = if run == DiagRun::Normal {
                format!(
                    "diagnostic run (`fdtrace -p` on `openclose -w {}`, kernel.bpf_stats_enabled=1): {:.0} ns/pair; \
                     time in fdtrace's BPF programs {bpf:.0} ns/pair; fdtrace's own CPU time {:.0} ns/pair \
                     ({:.0}% of the loop's wall time); fdtrace woke up {:.2} times per pair; lost events {}. Programs that ran:",
                    d.pairs,
                    d.loop_ns,
                    d.cpu_ns / n,
                    100.0 * d.cpu_ns / (d.loop_ns * n),
                    d.wakeups / n,
                    d.lost
                )
            } else {
                format!(
                    "diagnostic runs with fdtrace stopped (SIGSTOP) during the loop ({STOPPED_RUNS} × \
                     `openclose -w {STOPPED_PAIRS}`, kernel.bpf_stats_enabled=1; a quarter of the ring buffer holds every \
                     record, nothing is consumed while the loop runs): {:.0} ns/pair (median); time in fdtrace's BPF \
                     programs {bpf:.0} ns/pair; lost events {}. Programs that ran (all runs):",
                    d.loop_ns, d.lost
                )
            };
            for (name, cnt, t) in d.progs.iter().take(6) {
                // The kernel keeps the first 15 bytes of a program's name.
                let name = OPEN_CLOSE_PROGS
                    .iter()
                    .map(|(p, _)| *p)
                    .find(|p| p.get(..name.len().max(15)).unwrap_or(p) == name)
                    .unwrap_or(name);
                let _ = write!(
                    s,
                    " {name} {cnt} runs, {:.0} ns/run, {:.0} ns/pair;",
                    *t as f64 / *cnt as f64,
                    *t as f64 / n
                );
                // Only the programs that ran for the loop's pairs (not a stray call elsewhere).
                if let Some(program) = OPEN_CLOSE_PROGS
                    .iter()
                    .map(|(p, _)| *p)
                    .find(|p| *p == name)
                    && *cnt as f64 >= n / 2.0
                {
                    self.set(
                        Fact::ProgramNsPerRun { run, program },
                        *t as f64 / *cnt as f64,
                    );
                    self.set(Fact::ProgramNsPerPair { run, program }, *t as f64 / n);
                }
            }
            s.pop();
            s.push('.');
            self.notes.push(s);
        }
        Ok(())
    }

    pub(super) fn diag_run(&mut self, pairs: u64, stop_consumer: bool) -> Result<Diag> {
        let mut cmd = Command::new(&self.openclose);
        cmd.arg("-w").arg(pairs.to_string());
        self.record(&cmd, &[]);
        let mut target = Proc::start(&mut cmd, "openclose -w", true)?;
        target.wait_line("ready", Duration::from_secs(10))?;
        let json = self.tmp("diag.json");
        let tracer = self.attach(target.pid(), &json, "fdtrace -p openclose")?;
        if stop_consumer {
            tracer.signal(libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(100));
        }
        let before = ConsumerSnapshot::take(tracer.pid())?;
        target.send_line();
        let line = target.wait_line("ns_per_pair", Self::loop_timeout(pairs));
        if !stop_consumer {
            // Let the consumer drain what is left before reading the counters.
            std::thread::sleep(Duration::from_millis(500));
        }
        let after = ConsumerSnapshot::take(tracer.pid());
        // Names while the programs are still loaded.
        let names = ConsumerSnapshot::names(&after);
        if stop_consumer {
            tracer.signal(libc::SIGCONT);
        }
        target.send_line();
        let _ = target.finish(Duration::from_secs(10));
        let report = self.detach(tracer, &json)?;
        let (line, after) = (line?, after?);
        let loop_ns: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .context("ns_per_pair")?;
        let progs = ConsumerSnapshot::runs_between(&before, &after, &names);
        Ok(Diag {
            pairs,
            loop_ns,
            progs,
            cpu_ns: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * 1e9 / clk_tck(),
            wakeups: after.voluntary.saturating_sub(before.voluntary) as f64,
            lost: lost_events(&report),
        })
    }
}

/// fdtrace's programs that run in the loop (the first two only on kernels where the user
/// registers cannot be read), with what each does.
pub(super) const OPEN_CLOSE_PROGS: [(&str, &str); 4] = [
    (
        "exit_regs_openat",
        "the open record: arguments and registers from `pt_regs`, path, 2 KiB stack copy",
    ),
    (
        "exit_open",
        "the open record: remembered arguments, registers, path, 2 KiB stack copy",
    ),
    ("enter_openat", "filter, remember the arguments"),
    ("enter_close", "filter, a 32-byte close record"),
];

/// Pairs of the diagnostic run with a stopped consumer: their records (about 2.4 KiB per open)
/// must fit in a quarter of fdtrace's 16 MiB ring buffer, below which the programs ask for a
/// wake-up only once per 2 MiB.
pub(super) const STOPPED_PAIRS: u64 = 1500;
pub(super) const STOPPED_RUNS: usize = 5;

/// What a diagnostic run measured.
pub(super) struct Diag {
    pub(super) pairs: u64,
    pub(super) loop_ns: f64,
    /// (program name, runs, run time in ns) of the programs that ran during the loop.
    pub(super) progs: Vec<(String, u64, u64)>,
    /// fdtrace's CPU time during the loop.
    pub(super) cpu_ns: f64,
    /// fdtrace's voluntary context switches (sleeps) during the loop.
    pub(super) wakeups: f64,
    pub(super) lost: u64,
}

impl Diag {
    /// Several runs as one: counts and times summed, the median loop time.
    pub(super) fn merge(runs: Vec<Diag>) -> Option<Diag> {
        let loop_ns = median(&runs.iter().map(|d| d.loop_ns).collect::<Vec<_>>())?;
        let mut progs: Vec<(String, u64, u64)> = Vec::new();
        for (name, c, t) in runs.iter().flat_map(|d| d.progs.iter().cloned()) {
            match progs.iter_mut().find(|p| p.0 == name) {
                Some(p) => {
                    p.1 += c;
                    p.2 += t;
                }
                None => progs.push((name, c, t)),
            }
        }
        progs.sort_by_key(|p| std::cmp::Reverse(p.2));
        Some(Diag {
            pairs: runs.iter().map(|d| d.pairs).sum(),
            loop_ns,
            progs,
            cpu_ns: runs.iter().map(|d| d.cpu_ns).sum(),
            wakeups: runs.iter().map(|d| d.wakeups).sum(),
            lost: runs.iter().map(|d| d.lost).sum(),
        })
    }
}

/// Counters of an fdtrace process: its BPF programs' run time and count (from fdinfo, with
/// kernel.bpf_stats_enabled), its CPU time and voluntary context switches.
pub(super) struct ConsumerSnapshot {
    pub(super) progs: BTreeMap<u32, (u64, u64)>,
    pub(super) cpu_ticks: u64,
    pub(super) voluntary: u64,
}

impl ConsumerSnapshot {
    /// The names of the programs in a snapshot, read while they are still loaded.
    pub(super) fn names(snap: &Result<Self>) -> BTreeMap<u32, String> {
        snap.as_ref()
            .map(|a| {
                a.progs
                    .keys()
                    .filter_map(|&id| Some((id, prog_name(id)?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (name, runs, run time in ns) of each program that ran between two snapshots, the most
    /// costly first.
    pub(super) fn runs_between(
        before: &Self,
        after: &Self,
        names: &BTreeMap<u32, String>,
    ) -> Vec<(String, u64, u64)> {
        let mut progs = Vec::new();
        for (id, (t1, c1)) in &after.progs {
            let (t0, c0) = before.progs.get(id).copied().unwrap_or((0, 0));
            let (dt, dc) = (t1.saturating_sub(t0), c1.saturating_sub(c0));
            if dc > 0 {
                let name = names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("prog {id}"));
                progs.push((name, dc, dt));
            }
        }
        progs.sort_by_key(|p| std::cmp::Reverse(p.2));
        progs
    }

    pub(super) fn take(pid: u32) -> Result<Self> {
        let mut progs = BTreeMap::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            if link.to_string_lossy() != "anon_inode:bpf-prog" {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let get = |k: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let (Some(id), Some(t), Some(c)) =
                (get("prog_id:"), get("run_time_ns:"), get("run_cnt:"))
            {
                progs.insert(id as u32, (t, c));
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command (which may contain spaces): state is field 3; utime and
        // stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let cpu_ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let voluntary = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Self {
            progs,
            cpu_ticks,
            voluntary,
        })
    }
}

pub(super) fn clk_tck() -> f64 {
    // SAFETY: no arguments.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The name of a loaded BPF program (BPF_PROG_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD).
pub(super) fn prog_name(id: u32) -> Option<String> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const NAME_OFF: usize = 64;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: `attr` is a zeroed bpf_attr of the given size with prog_id set.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut info = [0u8; 256];
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` names our fd and a writable buffer of `info.len()` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    // SAFETY: closing the fd we got above.
    unsafe { libc::close(fd as i32) };
    if rc != 0 {
        return None;
    }
    let name = &info[NAME_OFF..NAME_OFF + 16];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&name[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

// ---------------------------------------------------------------------------------------------
// Case 2: the loop in a process fdtrace is not tracing
