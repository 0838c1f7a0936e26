//! `cargo xtask bench`: fdtrace's cost measured against baselines taken in the same run.
//!
//! Every comparison alternates its configurations within each repetition (the order rotates
//! from one repetition to the next) and reports medians, so slow drifts of the machine's load
//! hit every configuration alike. The processes started here are put in their own process
//! groups and ended by those ids; every wait has a timeout; a case that cannot run (a tool is
//! missing, a run fails) becomes a row saying so and the other cases go on.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

mod agent;
mod cgroup;
mod godial;
mod load;
mod runtimes;
mod scrape;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Repetitions of each configuration; medians are reported [default: 5, 3 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: Option<u32>,
    /// A short run: fewer pairs, repetitions and seconds (rougher numbers). Does not write
    /// docs/PERFORMANCE.md unless --output says so.
    #[arg(long)]
    quick: bool,
    /// Run only these cases (1-12, comma-separated). Does not write docs/PERFORMANCE.md unless
    /// --output says so.
    #[arg(long, value_delimiter = ',', value_name = "CASES")]
    only: Vec<u32>,
    /// Write the report to FILE [default: docs/PERFORMANCE.md, only for a full run].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Another fdtrace binary (one built from an earlier commit, say) whose figures case 8 shows
    /// next to this one's.
    #[arg(long, value_name = "FDTRACE")]
    baseline: Option<PathBuf>,
}

/// Sizes of the runs.
#[derive(Clone, Copy, Debug)]
struct Params {
    /// `--quick`.
    quick: bool,
    reps: usize,
    /// open/close pairs per loop run (cases 1 and 2).
    pairs: u64,
    /// Pairs under strace (it is ~10x slower; the result is per pair all the same).
    strace_pairs: u64,
    /// Pairs of the sustained-rate run (case 3).
    sustained_pairs: u64,
    /// Pairs fed to the user-side benchmark (case 3).
    user_pairs: u64,
    /// Seconds of each wrk run (case 4).
    wrk_secs: u32,
    /// Descriptors held open and pairs of the peak-RSS run (case 5).
    rss_held: u64,
    rss_pairs: u64,
}

impl Params {
    fn new(opts: &Opts) -> Self {
        let q = opts.quick;
        Self {
            reps: opts.reps.unwrap_or(if q { 3 } else { 5 }) as usize,
            quick: q,
            pairs: if q { 50_000 } else { 200_000 },
            strace_pairs: if q { 5_000 } else { 20_000 },
            sustained_pairs: if q { 200_000 } else { 1_000_000 },
            user_pairs: if q { 200_000 } else { 1_000_000 },
            wrk_secs: if q { 2 } else { 5 },
            rss_held: 1000,
            rss_pairs: if q { 500_000 } else { 5_000_000 },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Process groups started and not yet reaped, for the signal handler.
static GROUPS: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for g in &GROUPS {
        let pgid = g.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill is async-signal-safe; the group is one we started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// On Ctrl-C (or SIGTERM, SIGHUP), end every process group the bench started and let the
/// run unwind: no new process starts, the guards remove the temporary directory and restore
/// sysctls, and no report is written.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only uses atomics and kill().
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn register_group(pgid: i32) {
    for g in &GROUPS {
        if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister_group(pgid: i32) {
    for g in &GROUPS {
        let _ = g.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A started process (leader of its own process group) with its output read line by line.
struct Proc {
    child: Child,
    what: String,
    lines: Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

/// What a finished process printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Proc {
    /// Start `cmd` in a new process group, stdout and stderr piped, stdin piped when asked
    /// (otherwise /dev/null).
    fn start(cmd: &mut Command, what: &str, with_stdin: bool) -> Result<Self> {
        if interrupted() {
            bail!("interrupted");
        }
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {what}: {cmd:?}"))?;
        register_group(child.id() as i32);
        let (tx, rx) = channel();
        for (is_err, stream) in [
            (
                false,
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                true,
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            what: what.to_string(),
            lines: rx,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdin,
            status: None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn take_line(&mut self, timeout: Duration) -> Option<(bool, String)> {
        match self.lines.recv_timeout(timeout) {
            Ok((is_err, line)) => {
                if is_err {
                    self.stderr.push(line.clone());
                } else {
                    self.stdout.push(line.clone());
                }
                Some((is_err, line))
            }
            Err(_) => None,
        }
    }

    /// Wait for a line of stdout starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((false, line)) = self.take_line(Duration::from_millis(50))
                && line.starts_with(prefix)
            {
                return Ok(line);
            }
            if self.exited() {
                // Output may still be in the pipe.
                while let Some((is_err, line)) = self.take_line(Duration::from_millis(200)) {
                    if !is_err && line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                bail!(
                    "{} exited ({}) before printing `{prefix}`: {}",
                    self.what,
                    self.status.map(|s| s.to_string()).unwrap_or_default(),
                    self.stderr_tail()
                );
            }
        }
        bail!(
            "{} did not print `{prefix}` within {timeout:?}: {}",
            self.what,
            self.stderr_tail()
        )
    }

    fn send_line(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
        }
    }

    fn exited(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.status = Some(s);
        }
        self.status.is_some()
    }

    fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: signalling our own child, which is not reaped yet.
            unsafe { libc::kill(self.pid() as i32, sig) };
        }
    }

    /// Signal the whole process group (our child leads it).
    fn signal_group(&self, sig: i32) {
        // SAFETY: the group was created for this child; the leader is ours.
        unsafe { libc::kill(-(self.pid() as i32), sig) };
    }

    fn stderr_tail(&self) -> String {
        let n = self.stderr.len();
        self.stderr[n.saturating_sub(5)..].join(" | ")
    }

    /// Wait for the process to exit by itself; after `timeout` it is ended and this fails.
    fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "{} did not finish within {timeout:?} and was ended: {}",
                    self.what,
                    self.stderr_tail()
                );
            }
            let _ = self.take_line(Duration::from_millis(20));
        }
        // Anything left in the group (a child the leader did not wait for) goes too.
        self.signal_group(libc::SIGKILL);
        unregister_group(self.pid() as i32);
        // The rest of the output.
        let drain_deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < drain_deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok((true, l)) => self.stderr.push(l),
                Ok((false, l)) => self.stdout.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        Ok(Finished {
            status: self.status.expect("exited"),
            stdout: std::mem::take(&mut self.stdout).join("\n"),
            stderr: std::mem::take(&mut self.stderr).join("\n"),
        })
    }

    /// End the process group: SIGTERM, then SIGKILL after a grace period.
    fn stop(&mut self) {
        self.stdin = None;
        if !self.exited() {
            self.signal_group(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while !self.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !self.exited() {
                self.signal_group(libc::SIGKILL);
                if let Ok(s) = self.child.wait() {
                    self.status = Some(s);
                }
            }
        }
        self.signal_group(libc::SIGKILL);
        unregister_group(self.pid() as i32);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.stop();
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("fdtrace-bench.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets a sysctl file and restores its value when dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Self> {
        let old = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Self {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

/// The peers and load generators the bench compares with, and their Debian packages.
const TOOLS: [(&str, &str); 5] = [
    ("bpftrace", "bpftrace"),
    ("strace", "strace"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
    ("time", "time"),
];

fn find_tool(name: &str) -> Option<PathBuf> {
    super::deps::find_program(name)
}

/// A loop's time ratio, with a third decimal where two would round it onto the 1.5x target
/// (1.503x reads as "1.50x, missed" otherwise).
fn loop_ratio(r: f64) -> String {
    if (r - 1.5).abs() < 0.005 {
        format!("{r:.3}x")
    } else {
        format!("{r:.2}x")
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The value after `key ` on a line of `text`.
fn field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
}

fn ns_per_pair(out: &Finished) -> Result<f64> {
    if !out.status.success() {
        bail!("the loop failed ({}): {}", out.status, out.stderr.trim());
    }
    field(&out.stdout, "ns_per_pair ")
        .with_context(|| format!("no `ns_per_pair` in the output: {}", out.stdout.trim()))
}

/// Read a process's own memory peak (VmHWM, KiB).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// RSS (KiB) of a process's shared BPF map mappings (`anon_inode:bpf-map`, `r--s`): fdtrace's
/// ring buffer, whose data pages the kernel maps twice in a row (so records can wrap around).
fn bpf_map_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut in_map = false;
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first().is_some_and(|a| {
            a.contains('-') && a.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            in_map = f.get(1).is_some_and(|p| p.ends_with('s'))
                && f.last().is_some_and(|n| *n == "anon_inode:bpf-map");
        } else if in_map && f.first() == Some(&"Rss:") {
            total += f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(total)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// (busy, total) jiffies of all CPUs from /proc/stat, and the time it was read (s).
fn cpu_stat() -> Option<(f64, f64, f64)> {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total, now))
}

/// Busy share of all CPUs between two /proc/stat readings.
fn busy(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let total = b.1 - a.1;
    (total > 0.0).then(|| (b.0 - a.0) / total)
}

fn first_line(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Met,
    Missed,
    Info,
    Skipped,
    Failed,
}

#[derive(Clone, Debug)]
struct Row {
    case: u32,
    what: String,
    result: String,
    vs: String,
    target: String,
    status: Status,
}

impl Row {
    fn new(case: u32, what: impl Into<String>, result: impl Into<String>) -> Self {
        Self {
            case,
            what: what.into(),
            result: result.into(),
            vs: String::new(),
            target: String::new(),
            status: Status::Info,
        }
    }

    fn vs(mut self, vs: impl Into<String>) -> Self {
        self.vs = vs.into();
        self
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.status = if met { Status::Met } else { Status::Missed };
        self
    }

    fn skipped(case: u32, what: impl Into<String>, why: impl Into<String>) -> Self {
        let mut r = Self::new(case, what, format!("skipped: {}", why.into()));
        r.status = Status::Skipped;
        r
    }

    fn failed(case: u32, what: impl Into<String>, err: &anyhow::Error) -> Self {
        let mut msg = format!("{err:#}").replace('\n', " ").replace('|', "/");
        if msg.len() > 300 {
            let mut cut = 300;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let mut r = Self::new(case, what, format!("failed: {msg}"));
        r.status = Status::Failed;
        r
    }

    fn status_text(&self) -> &'static str {
        match self.status {
            Status::Met => "met",
            Status::Missed => "**missed**",
            Status::Info => "",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| # | measurement | result | vs untraced | target | status |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.case,
            r.what,
            r.result,
            r.vs,
            r.target,
            r.status_text()
        );
    }
    s
}

/// The harness: paths, tools, commands shown in the report, results.
struct Bench {
    root: PathBuf,
    p: Params,
    fdtrace: PathBuf,
    openclose: PathBuf,
    user_tp: PathBuf,
    startup_mem: PathBuf,
    /// examples/floor: empty programs loaded as fdtrace loads its own, or the filter-only
    /// program on the raw syscall tracepoints.
    floor: PathBuf,
    tmp: TempDir,
    tools: BTreeMap<&'static str, Option<PathBuf>>,
    /// Commands as run (paths relative to the checkout, the temp dir as $TMP), in order.
    commands: Vec<String>,
    rows: Vec<Row>,
    /// Numbers the analysis refers to.
    facts: BTreeMap<String, f64>,
    /// Measured text the analysis quotes (program costs, say).
    texts: BTreeMap<String, String>,
    /// Observations for the analysis (diagnostics, caveats).
    notes: Vec<String>,
    /// The nginx configuration of case 4, as shown in the report.
    nginx_conf: Option<String>,
    /// `--baseline`: another fdtrace binary for case 8.
    baseline: Option<PathBuf>,
}

impl Bench {
    fn tool(&self, name: &str) -> Option<PathBuf> {
        self.tools.get(name).cloned().flatten()
    }

    fn missing(&self, names: &[&str]) -> Option<String> {
        let m: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.tool(n).is_none())
            .collect();
        (!m.is_empty()).then(|| format!("{} not installed", m.join(", ")))
    }

    fn set(&mut self, key: impl Into<String>, value: f64) {
        self.facts.insert(key.into(), value);
    }

    fn tmp(&self, name: &str) -> PathBuf {
        self.tmp.0.join(name)
    }

    /// Remember a command for the report, with stable placeholders.
    fn record(&mut self, cmd: &Command, subst: &[(String, &str)]) {
        let root = format!("{}/", self.root.display());
        let tmp = self.tmp.0.display().to_string();
        let tidy = |s: &str| -> String {
            if let Some((_, to)) = subst.iter().find(|(from, _)| from == s) {
                return to.to_string();
            }
            let mut s = s.replace(&tmp, "$TMP").replace(&root, "");
            if (s.starts_with("/usr/") || s.starts_with("/bin/"))
                && let Some(name) = Path::new(&s).file_name()
            {
                s = name.to_string_lossy().into_owned();
            }
            let plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,+-$".contains(c);
            if s.is_empty() || !s.chars().all(plain) {
                format!("'{}'", s.replace('\'', r"'\''"))
            } else {
                s
            }
        };
        let mut line = tidy(&cmd.get_program().to_string_lossy());
        for a in cmd.get_args() {
            line.push(' ');
            line.push_str(&tidy(&a.to_string_lossy()));
        }
        self.record_line(line);
    }

    /// Record a command line as it should be shown.
    fn record_line(&mut self, line: String) {
        if !self.commands.contains(&line) {
            self.commands.push(line);
        }
    }

    fn loop_timeout(pairs: u64) -> Duration {
        Duration::from_secs(120) + Duration::from_micros(pairs * 100)
    }

    fn openclose(&self, pairs: u64) -> Command {
        let mut c = Command::new(&self.openclose);
        c.arg(pairs.to_string());
        c
    }

    fn run_loop(&mut self, mut cmd: Command, what: &str, pairs: u64) -> Result<Finished> {
        self.record(&cmd, &[]);
        Proc::start(&mut cmd, what, false)?.finish(Self::loop_timeout(pairs))
    }

    fn fdtrace_cmd(&self, json: &Path) -> Command {
        let mut c = Command::new(&self.fdtrace);
        c.arg("--json").arg("-o").arg(json);
        c
    }

    /// Start `fdtrace -p PID` and wait until it follows the ring buffer: its only thread sleeps
    /// in epoll_wait once every program is attached and the target is in the filter.
    fn attach(&mut self, pid: u32, json: &Path, what: &str) -> Result<Proc> {
        self.attach_with(pid, json, what, &[], &[])
    }

    /// `attach` with more options, and more placeholders for the command shown.
    fn attach_with(
        &mut self,
        pid: u32,
        json: &Path,
        what: &str,
        args: &[String],
        subst: &[(String, &str)],
    ) -> Result<Proc> {
        let mut target = args.to_vec();
        target.extend(["-p".to_string(), pid.to_string()]);
        let mut subst = subst.to_vec();
        subst.push((pid.to_string(), "$PID"));
        self.attach_to(&target, json, what, &subst)
    }

    /// Start `fdtrace --json -o JSON ARGS` (ARGS name the target) and wait until it follows the
    /// ring buffer.
    fn attach_to(
        &mut self,
        args: &[String],
        json: &Path,
        what: &str,
        subst: &[(String, &str)],
    ) -> Result<Proc> {
        let mut cmd = self.fdtrace_cmd(json);
        cmd.args(args);
        self.record(&cmd, subst);
        let mut p = Proc::start(&mut cmd, what, false)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if p.exited() {
                let _ = p.take_line(Duration::from_millis(200));
                bail!("{what} exited while attaching: {}", p.stderr_tail());
            }
            let wchan =
                std::fs::read_to_string(format!("/proc/{}/wchan", p.pid())).unwrap_or_default();
            if wchan.contains("epoll") {
                break;
            }
            if Instant::now() > deadline {
                bail!("{what} did not attach within 60 s (wchan {wchan})");
            }
            let _ = p.take_line(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        Ok(p)
    }

    /// Stop an attached fdtrace (SIGINT: it writes its report) and read the report.
    fn detach(&self, p: Proc, json: &Path) -> Result<serde_json::Value> {
        p.signal(libc::SIGINT);
        let out = p.finish(Duration::from_secs(120))?;
        if !out.status.success() {
            bail!("fdtrace failed ({}): {}", out.status, out.stderr.trim());
        }
        read_report(json)
    }
}

fn read_report(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn lost_events(report: &serde_json::Value) -> u64 {
    report["lost_events"].as_u64().unwrap_or(u64::MAX)
}

fn model_opens(report: &serde_json::Value) -> u64 {
    report["model"]["opens"].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Case 1: the open/close loop under each configuration

/// The tracepoints fdtrace attaches for open, openat and close (its `exit_regs_*` programs read
/// the arguments at exit, so open and openat have no entry program).
const OPENCLOSE_TPS: [&str; 3] = ["sys_exit_openat", "sys_exit_open", "sys_enter_close"];

const BPFTRACE_EQUIVALENT: &str = "tracepoint:syscalls:sys_exit_openat /pid == cpid/ { @open[tid, args->ret] = ustack; } tracepoint:syscalls:sys_enter_close /pid == cpid/ { delete(@open[tid, args->fd]); }";

fn tracepoint_exists(name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(t).join("events/syscalls").join(name).exists())
}

/// Start examples/floor (stdin piped: it detaches at end of file) and wait until it says its
/// programs are attached.
fn start_ready(cmd: &mut Command, what: &str) -> Result<Proc> {
    let mut p = Proc::start(cmd, what, true)?;
    if let Err(e) = p.wait_line("ready", Duration::from_secs(120)) {
        p.stop();
        return Err(e);
    }
    Ok(p)
}

/// The tracepoints fdtrace attaches for open, openat and close, as `syscalls:NAME`.
fn openclose_tracepoints() -> Vec<String> {
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
enum LoopCfg {
    Untraced,
    Fdtrace,
    Floor,
    RawFloor,
    BpftraceEmpty,
    Bpftrace,
    Strace,
}

impl LoopCfg {
    fn label(self) -> &'static str {
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

    fn key(self) -> &'static str {
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
    fn loop_once(&mut self, cfg: LoopCfg, lost: &mut Vec<u64>) -> Result<f64> {
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

    fn case1(&mut self) {
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
                    LoopCfg::Untraced => "c1.untraced_ns",
                    LoopCfg::Fdtrace => "c1.fdtrace_ns",
                    LoopCfg::Floor => "c1.floor_ns",
                    LoopCfg::RawFloor => "c1.raw_floor_ns",
                    LoopCfg::BpftraceEmpty => "c1.bpftrace_empty_ns",
                    LoopCfg::Bpftrace => "c1.bpftrace_ns",
                    LoopCfg::Strace => "c1.strace_ns",
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
                        self.set("c1.fdtrace_ratio", ratio);
                        self.set("c1.fdtrace_added_ns", add);
                        row = row.target("≤ 1.50x", ratio <= 1.5);
                    }
                    match cfg {
                        LoopCfg::Floor => self.set("c1.floor_added_ns", add),
                        LoopCfg::RawFloor => self.set("c1.raw_floor_added_ns", add),
                        LoopCfg::BpftraceEmpty => self.set("c1.bpftrace_empty_added_ns", add),
                        LoopCfg::Bpftrace => self.set("c1.bpftrace_added_ns", add),
                        LoopCfg::Strace => self.set("c1.strace_ratio", ratio),
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
                    self.set("c1.fdtrace_vs_floor", r);
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
            self.set("c1.lost_events", total as f64);
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
    fn diagnose_loop(&mut self) -> Result<()> {
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
        for (prefix, d) in [("diag", normal), ("stopped", stopped)] {
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
            self.set(format!("{prefix}.loop_ns"), d.loop_ns);
            self.set(format!("{prefix}.bpf_ns_per_pair"), bpf);
            self.set(format!("{prefix}.consumer_cpu_ns_per_pair"), d.cpu_ns / n);
            self.set(format!("{prefix}.consumer_wakeups_per_pair"), d.wakeups / n);
            self.set(format!("{prefix}.lost_events"), d.lost as f64);
            let mut s = if prefix == "diag" {
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
                if OPEN_CLOSE_PROGS.iter().any(|(p, _)| *p == name) && *cnt as f64 >= n / 2.0 {
                    self.set(
                        format!("{prefix}.{name}_ns_per_run"),
                        *t as f64 / *cnt as f64,
                    );
                    self.set(format!("{prefix}.{name}_ns_per_pair"), *t as f64 / n);
                }
            }
            s.pop();
            s.push('.');
            self.notes.push(s);
        }
        Ok(())
    }

    fn diag_run(&mut self, pairs: u64, stop_consumer: bool) -> Result<Diag> {
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
const OPEN_CLOSE_PROGS: [(&str, &str); 4] = [
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
const STOPPED_PAIRS: u64 = 1500;
const STOPPED_RUNS: usize = 5;

/// What a diagnostic run measured.
struct Diag {
    pairs: u64,
    loop_ns: f64,
    /// (program name, runs, run time in ns) of the programs that ran during the loop.
    progs: Vec<(String, u64, u64)>,
    /// fdtrace's CPU time during the loop.
    cpu_ns: f64,
    /// fdtrace's voluntary context switches (sleeps) during the loop.
    wakeups: f64,
    lost: u64,
}

impl Diag {
    /// Several runs as one: counts and times summed, the median loop time.
    fn merge(runs: Vec<Diag>) -> Option<Diag> {
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
struct ConsumerSnapshot {
    progs: BTreeMap<u32, (u64, u64)>,
    cpu_ticks: u64,
    voluntary: u64,
}

impl ConsumerSnapshot {
    /// The names of the programs in a snapshot, read while they are still loaded.
    fn names(snap: &Result<Self>) -> BTreeMap<u32, String> {
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
    fn runs_between(
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

    fn take(pid: u32) -> Result<Self> {
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

fn clk_tck() -> f64 {
    // SAFETY: no arguments.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The name of a loaded BPF program (BPF_PROG_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD).
fn prog_name(id: u32) -> Option<String> {
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

impl Bench {
    fn case2(&mut self) {
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
        for (xs, err, row_what, key) in [
            (&traced, traced_err, what, "c2.ratio"),
            (&floor, floor_err, floor_what, "c2.floor_ratio"),
            (&raw_floor, raw_err, raw_what, "c2.raw_floor_ratio"),
        ] {
            let rs = ratios(xs);
            let t: Vec<f64> = xs.iter().flatten().copied().collect();
            match (median(&rs), median(&t), median(&b)) {
                (Some(r), Some(t), Some(b)) => {
                    self.set(key, r);
                    let (lo, hi) = range(&rs);
                    self.set(format!("{key}_lo"), lo);
                    self.set(format!("{key}_hi"), hi);
                    let mut row = Row::new(
                        2,
                        row_what,
                        format!(
                            "{t:.0} ns/pair vs {b:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of runs)",
                            rs.len()
                        ),
                    )
                    .vs(format!("{r:.3}x ({:+.1}%)", (r - 1.0) * 100.0));
                    if key == "c2.ratio" {
                        row = row.target("< 3% slower", r < 1.03);
                    }
                    self.rows.push(row);
                }
                _ if key == "c2.floor_ratio" && floor_tps.is_none() => {
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
    fn loop_under(&mut self, mut floor: Proc, pairs: u64) -> Result<f64> {
        let r = self
            .run_loop(self.openclose(pairs), "openclose", pairs)
            .and_then(|o| ns_per_pair(&o));
        floor.stop();
        r
    }

    fn untargeted_once(&mut self) -> Result<f64> {
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

impl Bench {
    fn case3(&mut self) {
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
            self.set("c3.untraced_events_per_s", eps);
        }
        match traced {
            Ok((ns, report)) => {
                let lost = lost_events(&report);
                let eps = 2e9 / ns;
                self.set("c3.lost_events", lost as f64);
                self.set("c3.traced_events_per_s", eps);
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
                self.set("c3.user_events_per_s", apply);
                self.set("c3.decode_events_per_s", decode);
                self.set("c3.decode_nostack_events_per_s", nostack);
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
    }

    /// The user-side benchmark on the stack of a real `openclose -w` blocked in read().
    fn user_throughput(&mut self) -> Result<String> {
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

impl Bench {
    fn case4(&mut self) {
        let what = "nginx static file, wrk -t1 -c16 'Connection: close' (fdtrace -p of the worker)";
        if let Some(why) = self.missing(&["nginx", "wrk"]) {
            self.rows.push(Row::skipped(4, what, why));
            return;
        }
        if let Err(e) = self.nginx_runs(what) {
            self.rows.push(Row::failed(4, what, &e));
        }
    }

    fn nginx_runs(&mut self, what: &str) -> Result<()> {
        let dir = self.tmp("nginx");
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        // The worker runs as an unprivileged user: it must be able to read the files.
        use std::os::unix::fs::PermissionsExt as _;
        for d in [&self.tmp.0, &dir, &www] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        let body: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        std::fs::write(www.join("index.html"), body)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.display();
        let conf = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), &conf)?;
        self.nginx_conf = Some(conf.replace(&self.tmp.0.display().to_string(), "$TMP"));
        let mut cmd = Command::new(self.tool("nginx").context("nginx")?);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off; master_process on; worker_processes 1;"]);
        self.record(&cmd, &[]);
        let mut nginx = Proc::start(&mut cmd, "nginx", false)?;
        // Ready when it accepts connections and its worker exists.
        let deadline = Instant::now() + Duration::from_secs(15);
        let worker = loop {
            if nginx.exited() {
                let _ = nginx.take_line(Duration::from_millis(200));
                bail!(
                    "nginx exited: {} {}",
                    nginx.stderr_tail(),
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            let kids = children(nginx.pid());
            if kids.len() == 1 && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break kids[0];
            }
            if Instant::now() > deadline {
                bail!("nginx did not get ready within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let url = format!("http://127.0.0.1:{port}/index.html");
        let reps = self.p.reps;
        let mut base = vec![None; reps];
        let mut traced = vec![None; reps];
        let mut floor = vec![None; reps];
        let floor_tps = self.all_tracepoints("case 4");
        let mut last_err = None;
        let mut lost = 0;
        // Busy share of all CPUs during untraced and traced runs; fdtrace's share of one CPU.
        let (mut busy_u, mut busy_t, mut fdtrace_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            // Untraced, traced, floor: the order rotates from one repetition to the next.
            let mut turns = [Turn::Untraced, Turn::Traced, Turn::Floor];
            turns.rotate_left(rep % 3);
            for turn in turns {
                let traced_turn = turn == Turn::Traced;
                if turn == Turn::Floor {
                    let Some(tps) = floor_tps.as_ref() else {
                        continue;
                    };
                    match self.wrk_under_floor(&url, tps) {
                        Ok(rps) => {
                            eprintln!(
                                "bench: case 4 rep {}/{reps}: floor    {rps:>9.0} requests/s",
                                rep + 1
                            );
                            floor[rep] = Some(rps);
                        }
                        Err(e) => {
                            eprintln!("bench: case 4 rep {}/{reps} (floor) failed: {e:#}", rep + 1);
                            self.notes
                                .push(format!("case 4: a floor run failed: {e:#}"));
                        }
                    }
                    continue;
                }
                let r = if traced_turn {
                    let json = self.tmp("nginx.json");
                    match self.attach(worker, &json, "fdtrace -p nginx worker") {
                        Ok(tracer) => {
                            let (c0, t0) = (cpu_stat(), ConsumerSnapshot::take(tracer.pid()));
                            let r = self.wrk(&url);
                            let (c1, t1) = (cpu_stat(), ConsumerSnapshot::take(tracer.pid()));
                            if let (Some(b), Ok(t0), Ok(t1)) = (busy(c0, c1), t0, t1) {
                                busy_t.push(b);
                                let secs = c1.map_or(0.0, |c| c.2) - c0.map_or(0.0, |c| c.2);
                                fdtrace_cpu.push(
                                    t1.cpu_ticks.saturating_sub(t0.cpu_ticks) as f64
                                        / clk_tck()
                                        / secs,
                                );
                            }
                            let report = self.detach(tracer, &json);
                            match (r, report) {
                                (Ok(rps), Ok(rep)) => {
                                    lost += lost_events(&rep);
                                    Ok(rps)
                                }
                                (Err(e), _) | (_, Err(e)) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    let c0 = cpu_stat();
                    let r = self.wrk(&url);
                    if let Some(b) = busy(c0, cpu_stat()) {
                        busy_u.push(b);
                    }
                    r
                };
                match r {
                    Ok(rps) => {
                        eprintln!(
                            "bench: case 4 rep {}/{reps}: {:<8} {rps:>9.0} requests/s",
                            rep + 1,
                            if traced_turn { "traced" } else { "untraced" }
                        );
                        if traced_turn {
                            traced[rep] = Some(rps);
                        } else {
                            base[rep] = Some(rps);
                        }
                    }
                    Err(e) => {
                        eprintln!("bench: case 4 rep {}/{reps} failed: {e:#}", rep + 1);
                        last_err = Some(e);
                    }
                }
                if !children(nginx.pid()).contains(&worker) {
                    bail!("the nginx worker {worker} is gone");
                }
            }
        }
        if let Err(e) = self.nginx_diag(worker, &url) {
            self.notes
                .push(format!("case 4: diagnostic run failed: {e:#}"));
        }
        nginx.stop();
        let t: Vec<f64> = traced.iter().flatten().copied().collect();
        let b: Vec<f64> = base.iter().flatten().copied().collect();
        let ratios: Vec<f64> = traced
            .iter()
            .zip(&base)
            .filter_map(|(t, b)| Some((*t)? / (*b)?))
            .collect();
        let (Some(tm), Some(bm), Some(r)) = (median(&t), median(&b), median(&ratios)) else {
            return Err(last_err.unwrap_or_else(|| anyhow!("no successful pair of runs")));
        };
        let loss = (1.0 - r) * 100.0;
        let floor_ratios: Vec<f64> = floor
            .iter()
            .zip(&base)
            .filter_map(|(f, b)| Some((*f)? / (*b)?))
            .collect();
        let mut floor_row = None;
        if let (Some(fm), Some(fr)) = (
            median(&floor.iter().flatten().copied().collect::<Vec<_>>()),
            median(&floor_ratios),
        ) {
            let (lo, hi) = range(&floor_ratios);
            self.set("c4.floor_rps", fm);
            self.set("c4.floor_loss_pct", (1.0 - fr) * 100.0);
            floor_row = Some(Row::new(
                4,
                "nginx, the floor: an empty BPF program on every tracepoint fdtrace attaches (examples/floor)",
                format!(
                    "{fm:.0} req/s vs {bm:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of runs)",
                    floor_ratios.len()
                ),
            ).vs(format!("{fr:.3}x ({:.1}% fewer requests)", (1.0 - fr) * 100.0)));
        }
        self.set("c4.untraced_rps", bm);
        self.set("c4.traced_rps", tm);
        self.set("c4.loss_pct", loss);
        self.set("c4.lost_events", lost as f64);
        for (k, v) in [
            ("c4.busy_untraced_pct", median(&busy_u)),
            ("c4.busy_traced_pct", median(&busy_t)),
            ("c4.fdtrace_cpu_pct", median(&fdtrace_cpu)),
        ] {
            if let Some(v) = v {
                self.set(k, 100.0 * v);
            }
        }
        let (lo, hi) = range(&ratios);
        self.rows.push(
            Row::new(
                4,
                what,
                format!(
                    "{tm:.0} req/s traced vs {bm:.0} untraced (per-run ratios {lo:.3}–{hi:.3}, {} pairs of {} s runs; lost events {lost})",
                    ratios.len(),
                    self.p.wrk_secs
                ),
            )
            .vs(format!("{r:.3}x ({loss:.1}% fewer requests)"))
            .target("< 5% loss", loss < 5.0),
        );
        self.rows.extend(floor_row);
        Ok(())
    }

    /// One more traced wrk run with BPF statistics on: what each of fdtrace's programs costs
    /// per request.
    fn nginx_diag(&mut self, worker: u32, url: &str) -> Result<()> {
        let stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
        let json = self.tmp("nginx-diag.json");
        let tracer = self.attach(worker, &json, "fdtrace -p nginx worker")?;
        let before = ConsumerSnapshot::take(tracer.pid());
        let r = self.wrk_run(url);
        let after = ConsumerSnapshot::take(tracer.pid());
        let names = ConsumerSnapshot::names(&after);
        let report = self.detach(tracer, &json);
        drop(stats);
        let (WrkRun { rps, requests }, before, after) = (r?, before?, after?);
        let _ = report?;
        let progs = ConsumerSnapshot::runs_between(&before, &after, &names);
        let total: f64 = progs.iter().map(|p| p.2 as f64).sum::<f64>() / requests;
        self.set("c4.diag_rps", rps);
        self.set("c4.bpf_ns_per_request", total);
        let per = |p: &(String, u64, u64)| {
            format!(
                "`{}` {:.1} runs per request, {:.0} ns per run, {:.0} ns per request",
                p.0,
                p.1 as f64 / requests,
                p.2 as f64 / p.1 as f64,
                p.2 as f64 / requests
            )
        };
        let top: Vec<String> = progs.iter().take(4).map(per).collect();
        self.texts.insert("c4.top_progs".into(), top.join("; "));
        let all: Vec<String> = progs
            .iter()
            .filter(|p| p.1 as f64 >= 0.05 * requests)
            .map(per)
            .collect();
        self.notes.push(format!(
            "case 4 diagnostic run (`fdtrace -p` of the worker, kernel.bpf_stats_enabled=1, one \
             {} s wrk run): {rps:.0} requests/s; fdtrace's BPF programs ran {total:.0} ns per \
             request (those that ran at least once per 20 requests): {}",
            self.p.wrk_secs,
            all.join("; ")
        ));
        Ok(())
    }

    /// Requests per second of a wrk run against `url`.
    fn wrk(&mut self, url: &str) -> Result<f64> {
        Ok(self.wrk_run(url)?.rps)
    }

    fn wrk_run(&mut self, url: &str) -> Result<WrkRun> {
        let mut cmd = Command::new(self.tool("wrk").context("wrk")?);
        cmd.args(["-t1", "-c16"])
            .arg(format!("-d{}s", self.p.wrk_secs))
            .args(["-H", "Connection: close"])
            .arg(url);
        self.record(&cmd, &[]);
        let out = Proc::start(&mut cmd, "wrk", false)?
            .finish(Duration::from_secs(self.p.wrk_secs as u64 + 60))?;
        if !out.status.success() {
            bail!("wrk failed ({}): {}", out.status, out.stderr.trim());
        }
        if let Some(l) = out
            .stdout
            .lines()
            .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        {
            self.notes
                .push(format!("case 4: wrk reported `{}`", l.trim()));
        }
        let rps = field(&out.stdout, "Requests/sec:")
            .with_context(|| format!("no Requests/sec in wrk's output: {}", out.stdout))?;
        // "  70934 requests in 5.00s, 85.10MB read"
        let requests = out
            .stdout
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("requests in")
                    .then(|| n.parse::<f64>().ok())?
            })
            .unwrap_or(rps * self.p.wrk_secs as f64);
        Ok(WrkRun { rps, requests })
    }
}

/// What one wrk run measured.
struct WrkRun {
    rps: f64,
    requests: f64,
}

/// Which configuration a case-4 run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    Untraced,
    Traced,
    Floor,
}

impl Bench {
    /// Every tracepoint fdtrace attaches on this kernel, as `CATEGORY:NAME` (from `fdtrace
    /// tracepoints`). None when the list cannot be had.
    fn all_tracepoints(&mut self, case: &str) -> Option<Vec<String>> {
        let out = Command::new(&self.fdtrace)
            .arg("tracepoints")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with("(missing)"))
            .map(str::to_string)
            .collect();
        if !out.status.success() || tps.is_empty() {
            self.notes.push(format!(
                "{case}: no floor: `fdtrace tracepoints` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(tps)
    }

    /// Start examples/floor with its empty program on `tps` and wait until it is attached.
    fn start_floor(&mut self, tps: &[String]) -> Result<Proc> {
        let mut cmd = Command::new(&self.floor);
        cmd.arg("tp").args(tps);
        if tps.len() > 3 {
            self.record_line(format!(
                "target/release/examples/floor tp CATEGORY:NAME ... (the {} tracepoints \
                 `fdtrace tracepoints` lists)",
                tps.len()
            ));
        } else {
            self.record(&cmd, &[]);
        }
        start_ready(&mut cmd, "floor")
    }

    /// Start `examples/floor raw` and wait until its program is attached.
    fn start_raw_floor(&mut self) -> Result<Proc> {
        let mut cmd = Command::new(&self.floor);
        cmd.arg("raw");
        self.record(&cmd, &[]);
        start_ready(&mut cmd, "floor raw")
    }

    /// wrk against nginx while the floor's empty program is attached to `tps`.
    fn wrk_under_floor(&mut self, url: &str, tps: &[String]) -> Result<f64> {
        let mut bt = self.start_floor(tps)?;
        let r = self.wrk(url);
        bt.stop();
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Case 5: fdtrace's peak RSS; case 6: recording size

impl Bench {
    fn case5(&mut self) {
        let (held, pairs) = (self.p.rss_held, self.p.rss_pairs);
        let what = format!(
            "fdtrace peak RSS: {held} descriptors held, {pairs} open/close pairs ({} events)",
            2 * pairs + held
        );
        match self.peak_rss() {
            Ok((kib, how, report)) => {
                let mib = kib as f64 / 1024.0;
                self.set("c5.rss_mib", mib);
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
        // What the two BTF parses of start-up take, each alone in a process.
        for step in ["layout", "aya"] {
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
                        self.set(format!("c5.{step}_mib"), (b - a) / 1024.0);
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

    /// fdtrace under `/usr/bin/time -v` (its maximum RSS on stderr) when installed, else alone;
    /// and whether it is under `time`.
    fn fdtrace_under_time(&self) -> (Command, bool) {
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
    fn peak_rss(&mut self) -> Result<(u64, &'static str, serde_json::Value)> {
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
                    self.set("c5.startup_mib", k as f64 / 1024.0);
                }
                if let Some(k) = bpf_map_rss_kib(fdtrace_pid) {
                    self.set("c5.ring_mib", k as f64 / 1024.0);
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

    fn case6(&mut self) {
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
                self.set("c6.bytes_per_event", per_event);
                self.set("c6.record_ns_per_pair", ns);
                let vs = self
                    .facts
                    .get("c1.fdtrace_ns")
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

pub fn bench(opts: Opts) -> Result<()> {
    let is_root = super::output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0");
    if !is_root {
        bail!("the bench loads eBPF programs (fdtrace, bpftrace): run it as root");
    }
    for c in &opts.only {
        if !(1..=12).contains(c) {
            bail!("--only takes case numbers 1 to 12, got {c}");
        }
    }
    let p = Params::new(&opts);
    let root = super::root();
    install_signal_handlers();
    super::build()?;
    super::run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "fdtrace",
                "--example",
                "user_throughput",
                "--example",
                "startup_memory",
                "--example",
                "floor",
            ])
            .current_dir(&root)
            .env("PATH", super::path_with_tools()),
    )?;
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let openclose = out.join("openclose");
    super::run(
        Command::new("cc")
            .args(["-O2", "-g", "-Wall", "-o"])
            .arg(&openclose)
            .arg(root.join("bench/openclose.c")),
    )?;
    super::run(
        Command::new("cc")
            .args(["-O2", "-g", "-Wall", "-pthread", "-o"])
            .arg(out.join("burst"))
            .arg(root.join("fdtrace/tests/programs/burst.c")),
    )?;

    // Tools that cannot be installed leave their rows saying so.
    if let Err(e) = super::deps::ensure(super::deps::NEEDS, super::deps::For::Bench) {
        eprintln!("bench: {e:#}");
    }
    let tools: BTreeMap<&'static str, Option<PathBuf>> =
        TOOLS.into_iter().map(|(t, _)| (t, find_tool(t))).collect();
    for (t, p) in &tools {
        match p {
            Some(p) => eprintln!("bench: {t}: {}", p.display()),
            None => eprintln!("bench: {t}: not installed; its rows will say so"),
        }
    }
    let started = Instant::now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut b = Bench {
        fdtrace: root.join("target/release/fdtrace"),
        user_tp: root.join("target/release/examples/user_throughput"),
        startup_mem: root.join("target/release/examples/startup_memory"),
        floor: root.join("target/release/examples/floor"),
        openclose,
        root: root.clone(),
        p,
        tmp: TempDir::new()?,
        tools,
        commands: Vec::new(),
        rows: Vec::new(),
        facts: BTreeMap::new(),
        texts: BTreeMap::new(),
        notes: Vec::new(),
        nginx_conf: None,
        baseline: opts.baseline.clone(),
    };
    let wants = |c: u32| opts.only.is_empty() || opts.only.contains(&c);
    type Case = fn(&mut Bench);
    let cases: [(u32, Case); 12] = [
        (1, Bench::case1),
        (2, Bench::case2),
        (3, Bench::case3),
        (4, Bench::case4),
        (5, Bench::case5),
        (6, Bench::case6),
        (7, Bench::case7),
        (8, Bench::case8),
        (9, Bench::case9),
        (10, Bench::case10),
        (11, Bench::case11),
        (12, Bench::case12),
    ];
    for (n, f) in cases {
        if wants(n) && !interrupted() {
            eprintln!(
                "bench: case {n} ({:.0} s so far)",
                started.elapsed().as_secs_f64()
            );
            f(&mut b);
        }
    }
    if interrupted() {
        bail!("interrupted: the processes the bench started were ended; no report written");
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = table(&b.rows);
    println!("\n{table}");
    for r in &b.rows {
        if matches!(r.status, Status::Met | Status::Missed) {
            println!(
                "target {}: {} — {} ({})",
                if r.status == Status::Met {
                    "met   "
                } else {
                    "MISSED"
                },
                r.target,
                r.what,
                if r.vs.is_empty() { &r.result } else { &r.vs }
            );
        }
    }
    for n in &b.notes {
        println!("\nnote: {n}");
    }
    let path = match opts.output {
        Some(p) => Some(p),
        None if opts.only.is_empty() && !opts.quick => Some(root.join("docs/PERFORMANCE.md")),
        None => None,
    };
    match path {
        Some(path) => {
            let doc = render_doc(&b, &table, &load_start, &load_end, started.elapsed());
            std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("\nbench: wrote {}", path.display());
        }
        None => eprintln!("\nbench: partial or quick run: docs/PERFORMANCE.md not written"),
    }
    Ok(())
}

fn machine(root: &Path) -> Vec<(&'static str, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("CPUs (`nproc`)", first_line(&mut Command::new("nproc"))),
        ("CPU model", cpu),
        (
            "kernel (`uname -r`)",
            first_line(Command::new("uname").arg("-r")),
        ),
        (
            "date",
            first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        ),
        (
            "fdtrace commit",
            first_line(
                Command::new("git")
                    .args(["describe", "--always", "--dirty"])
                    .current_dir(root),
            ),
        ),
    ]
}

fn fact(b: &Bench, k: &str) -> Option<f64> {
    b.facts.get(k).copied()
}

fn render_doc(b: &Bench, table: &str, load_start: &str, load_end: &str, took: Duration) -> String {
    let mut d = String::new();
    let p = &b.p;
    d.push_str("# fdtrace performance\n\n");
    d.push_str(
        "Generated by `cargo xtask bench` (as root; it builds what it needs and writes this file). \
         Every number below comes from one run of it; re-run it to refresh the file. \
         `cargo xtask bench --quick` and `--only 1,3` give rougher or partial numbers and do not \
         write the file.\n\n",
    );
    d.push_str("## Machine\n\n");
    for (k, v) in machine(&b.root) {
        let _ = writeln!(d, "- {k}: {v}");
    }
    let _ = writeln!(
        d,
        "- load average at start / end (1, 5, 15 min): {} / {}",
        load_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let versions = [
        ("bpftrace", vec!["--version"]),
        ("strace", vec!["-V"]),
        ("nginx", vec!["-v"]),
        ("wrk", vec!["-v"]),
    ];
    let mut tv = Vec::new();
    for (t, args) in versions {
        match b.tool(t) {
            Some(path) => tv.push(first_line(Command::new(path).args(args))),
            None => tv.push(format!("{t}: not installed")),
        }
    }
    let _ = writeln!(d, "- tools: {}", tv.join("; "));
    let _ = writeln!(
        d,
        "- run: {} repetitions; {} pairs per loop run ({} under strace); {} s per wrk run; took {:.0} min\n",
        p.reps,
        p.pairs,
        p.strace_pairs,
        p.wrk_secs,
        took.as_secs_f64() / 60.0
    );

    d.push_str("## Results\n\n");
    d.push_str(table);
    d.push_str(
        "\n\"vs untraced\" is the median over repetitions of the ratio to (and the difference from) \
         the untraced run of the same repetition. Ranges are the smallest and largest run.\n\n",
    );
    d.push_str("### Targets\n\n");
    for r in &b.rows {
        if matches!(r.status, Status::Met | Status::Missed) {
            let _ = writeln!(
                d,
                "- {}: {} — {}: {}",
                if r.status == Status::Met {
                    "met"
                } else {
                    "**missed**"
                },
                r.target,
                r.what,
                if r.vs.is_empty() { &r.result } else { &r.vs }
            );
        }
    }
    d.push('\n');

    d.push_str("## Analysis\n\n");
    d.push_str(&analysis(b));

    d.push_str("\n## Method\n\n");
    d.push_str(METHOD);
    d.push_str("\n## Commands\n\n");
    d.push_str(
        "As run (`$TMP` is the bench's temporary directory, `$PID` the traced process; \
         `target/bench/openclose` is built from `bench/openclose.c` with `cc -O2 -g`):\n\n```sh\n",
    );
    for c in &b.commands {
        d.push_str(c);
        d.push('\n');
    }
    d.push_str("```\n\n");
    if let Some(conf) = &b.nginx_conf {
        d.push_str(
            "The nginx configuration (`$TMP/nginx/nginx.conf`; the port is chosen free at run \
             time):\n\n```nginx\n",
        );
        d.push_str(conf);
        d.push_str("```\n\n");
    }
    if !b.notes.is_empty() {
        d.push_str("## Observations of this run\n\n");
        for n in &b.notes {
            let _ = writeln!(d, "- {n}");
        }
    }
    d
}

const METHOD: &str = "\
- **Alternation and medians.** Each repetition runs every configuration of a case once, in an \
order rotated from one repetition to the next; the table reports medians. Ratios and added \
costs are taken per repetition against the untraced run of the same repetition, so a change \
of the machine's load during the run shifts both sides.
- **The loop** (`bench/openclose.c`) opens and closes `/dev/null` N times and reports the wall \
time of the loop alone (CLOCK_MONOTONIC around it): tracer start-up and report writing are \
not counted. glibc's `open()` is the `openat` syscall, so a pair is two tracepoint hits for \
fdtrace: `sys_exit_openat` (whose program reads the call's arguments from the registers the \
syscall was entered with, left in `pt_regs`) and `sys_enter_close`.
- **fdtrace** starts the loop itself (`fdtrace -- openclose N`) and writes its JSON report to a \
file in `$TMP` (not `-o /dev/null`: fdtrace writes the report through a temporary file \
renamed over the target, which must not be done to a device node).
- **The floor** is `fdtrace/examples/floor.rs tp`: it loads fdtrace's eBPF object with aya, \
as fdtrace loads it, and attaches only its `floor_empty` program (which returns 0 at once, as \
fdtrace's programs return 0) to exactly the tracepoints fdtrace attaches for open, openat and \
close (`sys_exit_openat`, `sys_exit_open`, `sys_enter_close`): the pure cost of having a BPF \
program on those tracepoints (which also puts every syscall of every task on the kernel's \
syscall tracing path). No tracer that uses these tracepoints can cost less.
- **bpftrace with empty blocks** on the same tracepoints is measured too, since earlier \
versions of this benchmark used it as the floor: it is not one (see the analysis).
- **The raw floor** (cases 1 and 2) is `fdtrace/examples/floor.rs raw`: it attaches only the \
object's `floor_raw_syscalls` program, which looks the current process up in the (empty) \
target filter and returns, to the raw `sys_enter` and `sys_exit` tracepoints. fdtrace itself \
does not use these hooks; the row measures what a tracer built on them would pay before doing \
any work.
- **The bpftrace script** does what fdtrace does in the smallest form: remember the user stack \
of each openat result per (tid, fd), forget it at close, only for the traced pid: \
`tracepoint:syscalls:sys_exit_openat /pid == cpid/ { @open[tid, args->ret] = ustack; } \
tracepoint:syscalls:sys_enter_close /pid == cpid/ { delete(@open[tid, args->fd]); }`. It \
attaches the same two tracepoints the loop hits under fdtrace, copies no path and no stack \
bytes (its `ustack` is a frame-pointer walk in the kernel) and sends nothing to user space per \
event.
- **strace** runs fewer pairs (it is two orders of magnitude slower); the result is per pair \
all the same.
- **Untargeted processes** (case 2): fdtrace traces `sleep 1000` with `-p`; the loop runs in \
another process. The harness waits until fdtrace sleeps in `epoll_wait` (its only thread \
follows the ring buffer once everything is attached) before starting the loop. Its floor is \
the loop under `examples/floor tp` with the empty program on every tracepoint fdtrace attaches \
(as for nginx in case 4): the kernel's part of what a process pays for them, which fdtrace's \
filter cannot remove. The four configurations (with the raw floor) alternate.
- **Sustained rate** (case 3): lost events are fdtrace's `lost_events` (failed ring-buffer \
reservations) from its JSON report, for a longer loop at full speed. The user side alone is \
`fdtrace/examples/user_throughput.rs`: synthetic `OpenEvent`/`CloseEvent` records through \
`events::decode` and `process::State::apply`, the open record carrying the registers and a \
real 2 KiB stack copy of an `openclose -w` process blocked in `read()` (so the unwinder walks \
a real C stack with its real `.eh_frame`).
- **nginx** (case 4), the floor: `examples/floor tp` with the empty program on every \
tracepoint fdtrace attaches on this kernel (`fdtrace tracepoints` lists them), started before \
and stopped after each floor run; its runs alternate with the untraced and traced ones. After \
them, one more traced run with `kernel.bpf_stats_enabled=1` reads the run time and count of \
each of fdtrace's programs (as in the loop's diagnostics), per request.
- **nginx** (case 4): one master and one worker, `access_log off`, a 1 KiB static file, \
`wrk -t1 -c16 -H 'Connection: close'` (a new connection per request: an `accept4`, an \
`openat` and two `close`s per request, plus TCP state events). fdtrace traces the **worker** \
(`-p` of the master's only child): the master only supervises. Traced and untraced wrk runs \
alternate against the same nginx; fdtrace attaches before and detaches after each traced run.
- **Peak RSS** (case 5): `openclose -k 1000 N` opens 1000 descriptors and keeps them, then does \
N open/close pairs under `fdtrace -- ...`; the peak is `/usr/bin/time -v`'s maximum resident \
set size (the largest of fdtrace and the tiny loop), cross-checked by polling fdtrace's \
`VmHWM`.
- **Metrics scrapes** (case 7): `fdtrace --metrics 127.0.0.1:$PORT -p` of `openclose -w`; \
from the start of the loop to its end, a `GET /metrics` every 50 ms on a new connection, timed \
from `connect` to the end of the answer (a 200). Once with no other client, once with 200 \
clients that each connect and send half a request head and nothing more (one the endpoint \
closes after its 5 s header timeout is opened again). Lost events are fdtrace's \
`lost_events`.
- **Under load** (case 8): `fdtrace/tests/programs/burst.c` (built with `-O2`) starts its \
threads together once fdtrace traces it (`fdtrace -p`, default settings); each does its \
open/close pairs of `/dev/null` at full speed, then leaks its opens of `/dev/zero` at one line. \
Time per pair is the wall time of all threads over all pairs, measured by the program. Traced \
and untraced runs alternate. The storm: once every thread has leaked, the soft \
`RLIMIT_NOFILE` is lowered to the highest descriptor open plus one and every thread keeps \
opening, each open failing with EMFILE; the rate is the program's failures per second. The \
attach: `openclose -w -k N 1` holds N descriptors; the time runs from starting `fdtrace -p` to \
its \"tracing pid\" line, and the peak RSS is `/usr/bin/time -v`'s, for a 1 s session.
- **Diagnostics** (for the analysis): with `kernel.bpf_stats_enabled=1` (restored \
afterwards), one more fdtrace run of the loop (`fdtrace -p` of `openclose -w`, which waits for \
a line on stdin before and after its loop) reads `run_time_ns`/`run_cnt` of each of fdtrace's \
programs from `/proc/PID/fdinfo` (names through `BPF_OBJ_GET_INFO_BY_FD`), and fdtrace's CPU \
time and voluntary context switches from `/proc/PID/stat` and `/proc/PID/status`, before and \
after the loop. Then five short loops whose records all fit in a quarter of the 16 MiB ring \
buffer (below which a wake-up is asked for only once per 2 MiB) run with fdtrace's process \
stopped (SIGSTOP), so nothing is consumed while they run: the difference to the first run is \
what a consumer following the ring buffer costs the programs. BPF statistics add a little time to \
each program run, so these runs are not used for the table. `fdtrace/examples/startup_memory.rs` \
measures the peak memory of each start-up BTF parse alone in a process.
";

fn analysis(b: &Bench) -> String {
    let mut a = String::new();
    let f = |k: &str| fact(b, k);
    // Case 1.
    if let (Some(u), Some(fd), Some(ratio), Some(add)) = (
        f("c1.untraced_ns"),
        f("c1.fdtrace_ns"),
        f("c1.fdtrace_ratio"),
        f("c1.fdtrace_added_ns"),
    ) {
        let _ = write!(
            a,
            "**Open/close loop.** Untraced, a pair takes {u:.0} ns; under fdtrace {fd:.0} ns: \
             {}, {add:.0} ns added per pair. ",
            loop_ratio(ratio)
        );
        if ratio <= 1.5 {
            a.push_str("The 1.5x target is met. ");
        } else {
            let _ = write!(
                a,
                "The 1.5x target is missed: it allows {:.0} ns added per pair and fdtrace adds \
                 {:.1}x that ({:.0} ns too many). ",
                0.5 * u,
                add / (0.5 * u),
                add - 0.5 * u
            );
        }
        if let Some(floor) = f("c1.floor_added_ns") {
            let _ = write!(
                a,
                "The floor (empty programs on the same tracepoints) adds {floor:.0} ns per pair"
            );
            match f("c1.fdtrace_vs_floor") {
                Some(r) if r <= 2.0 => {
                    let _ = write!(a, "; fdtrace adds {r:.1}x that: the 2x target is met. ");
                }
                Some(r) => {
                    let _ = write!(
                        a,
                        "; fdtrace adds {r:.1}x that: the 2x target is missed by {:.0} ns per pair. ",
                        add - 2.0 * floor
                    );
                }
                None => a.push_str(
                    ", which is within this machine's run-to-run noise: the ratio to it is not \
                     meaningful here. ",
                ),
            }
        }
        if let Some(bt) = f("c1.bpftrace_added_ns") {
            if add < bt {
                let _ = write!(
                    a,
                    "The bpftrace script adds {bt:.0} ns: fdtrace is cheaper ({:.0}% of it). ",
                    100.0 * add / bt
                );
            } else {
                let _ = write!(
                    a,
                    "The bpftrace script adds {bt:.0} ns: fdtrace costs {:.1}x as much, so the \
                     \"lower than bpftrace\" target is missed (by {:.0} ns per pair). The script \
                     does less, though: no path, no 2 KiB stack copy, no record to user space. ",
                    add / bt,
                    add - bt
                );
            }
        }
        if let Some(r) = f("c1.strace_ratio") {
            let _ = write!(a, "strace, for scale: {r:.1}x the untraced loop. ");
        }
        if let (Some(bte), Some(floor)) = (f("c1.bpftrace_empty_added_ns"), f("c1.floor_added_ns"))
        {
            let _ = write!(
                a,
                "bpftrace with empty blocks on the same tracepoints adds {bte:.0} ns per pair, \
                 against {floor:.0} ns for an empty program loaded as fdtrace loads its own: it \
                 is no floor, and earlier versions of this file, which used it as one, made \
                 fdtrace's cost over the floor look smaller than it is. "
            );
        }
        if let (Some(raw), Some(floor)) = (f("c1.raw_floor_added_ns"), f("c1.floor_added_ns")) {
            let own = add - floor;
            let _ = write!(
                a,
                "On the raw `sys_enter`/`sys_exit` tracepoints instead, a program that only \
                 looks the process up in the target filter, run at the entry and exit of every \
                 syscall (four runs per pair), adds {raw:.0} ns per pair, against {floor:.0} ns \
                 for the per-syscall tracepoints' floor: no tracepoint record is built for it. \
                 fdtrace's own share ({own:.0} ns per pair over its floor in this run) on top of \
                 that would be about {:.2}x the untraced loop (an estimate from these two \
                 measurements, not a run): what moving fdtrace to those two hooks (one program \
                 each, dispatching on the syscall number) could be worth here.",
                (u + raw + own) / u
            );
        }
        let trimmed = a.trim_end().len();
        a.truncate(trimmed);
        a.push_str("\n\n");
        if let Some(bpf) = f("diag.bpf_ns_per_pair") {
            let cpu = f("diag.consumer_cpu_ns_per_pair").unwrap_or(f64::NAN);
            let wake = f("diag.consumer_wakeups_per_pair").unwrap_or(f64::NAN);
            let dl = f("diag.loop_ns").unwrap_or(f64::NAN);
            let per_run = |prefix: &str| -> Vec<String> {
                OPEN_CLOSE_PROGS
                    .iter()
                    .filter_map(|(n, why)| {
                        let v = fact(b, &format!("{prefix}.{n}_ns_per_run"))?;
                        Some(format!("`{n}` {v:.0} ns ({why})"))
                    })
                    .collect()
            };
            // The diagnostic run is a run of its own (and BPF statistics slow it a little):
            // its decomposition refers to its own loop time.
            let dadd = dl - u;
            let _ = write!(
                a,
                "**Where the added time goes.** In a diagnostic run with BPF statistics on, the \
                 loop took {dl:.0} ns per pair, {dadd:.0} ns over the untraced median; fdtrace's \
                 programs ran {bpf:.0} ns per pair of it ({:.0}%). Per run: {}. fdtrace's process \
                 woke up {wake:.2} times per pair and used {cpu:.0} ns of CPU per pair ({:.0}% of \
                 a CPU while the loop ran).\n\n",
                100.0 * bpf / dadd,
                per_run("diag").join(", "),
                100.0 * cpu / dl
            );
            if let (Some(sl), Some(sbpf)) = (f("stopped.loop_ns"), f("stopped.bpf_ns_per_pair")) {
                let _ = write!(
                    a,
                    "With fdtrace's process stopped (SIGSTOP) during short loops of {STOPPED_PAIRS} \
                     pairs ({STOPPED_RUNS} runs), whose records all fit in a quarter of the ring buffer, nothing \
                     is read while the loop runs: no consumer touches the ring buffer's pages or \
                     competes for the CPUs, and at most one wake-up is queued per 2 MiB of \
                     records. Then the loop took {sl:.0} ns per pair (median of the runs; {:+.0} ns \
                     against the untraced median) and the programs {sbpf:.0} ns per pair; per run: \
                     {}. ",
                    sl - u,
                    per_run("stopped").join(", ")
                );
                let d = bpf - sbpf;
                if d > 0.0 {
                    let _ = write!(
                        a,
                        "With the consumer following the ring buffer, the programs take {d:.0} ns \
                         more per pair: the consumer reads, on the other CPU, the pages the \
                         programs write, and their cache lines move between the CPUs."
                    );
                } else {
                    let _ = write!(
                        a,
                        "With the consumer following the ring buffer, the programs take {:.0} ns \
                         less per pair: a consumer reading along costs the programs nothing \
                         measurable here (why the short stopped runs cost more is not \
                         explained by this measurement).",
                        -d
                    );
                }
                let open = ["exit_regs_openat", "exit_open"]
                    .iter()
                    .find_map(|n| f(&format!("stopped.{n}_ns_per_run")));
                if let (Some(o), Some(c)) = (open, f("stopped.enter_close_ns_per_run")) {
                    let _ = write!(
                        a,
                        " The open record costs {:.0} ns more than a close record: the path, the \
                         2 KiB stack copy and the registers.",
                        o - c
                    );
                }
                a.push_str("\n\n");
            }
            if let Some(floor) = f("c1.floor_added_ns") {
                let rest = dadd - bpf - floor.max(0.0);
                if rest > 0.0 {
                    let _ = write!(
                        a,
                        "Of the {dadd:.0} ns added per pair in the diagnostic run, the floor (the \
                         syscall-tracepoint path with a program on it, from the table) is \
                         {floor:.0} ns and fdtrace's programs {bpf:.0} ns; the other {rest:.0} ns \
                         are spent outside BPF programs: interrupts and scheduling, and the \
                         loop sharing 2 CPUs with fdtrace's consumer and the rest of the \
                         machine. This remainder is inferred, not \
                         measured piece by piece.\n\n"
                    );
                } else {
                    let _ = write!(
                        a,
                        "In the diagnostic run, the floor (from the table, {floor:.0} ns) and \
                         fdtrace's programs ({bpf:.0} ns) account for all of the {dadd:.0} ns \
                         added per pair (they exceed it by {:.0} ns: run-to-run noise).\n\n",
                        -rest
                    );
                }
            }
        }
        a.push_str(
            "Levers already in fdtrace: the in-kernel target filter first, an array load the \
             JIT inlines (one byte per process id) in front of the hash of targets; tracepoint \
             fields loaded straight from the record, not with a helper call each; records submitted \
             without a wake-up, user space woken only when the unread bytes cross a multiple of \
             2 MiB and otherwise draining every 20 ms (a wake-up, an `irq_work` self-interrupt \
             and then waking the consumer, costs more than a record), and on every record once a \
             quarter of the ring is unread (which slows the traced thread while its consumer is \
             far behind, rather than losing records); open and openat (and accept4 where the \
             kernel's verifier accepts that program: 6.12 and later) \
             read their arguments from the registers at exit instead of remembering them at \
             entry (one tracepoint hit and no hash-map insert, lookup and \
             delete per call), and read the registers in two copies, not one helper call per \
             register; no zeroing left to the byte-at-a-time `memset` the BPF target links; \
             on the user side, the unwinder reads the stack copy in the ring buffer (no 2 KiB \
             copy per open) and the per-event maps hash with foldhash. Copying less stack is a smaller \
             lever than it looks: in alternating runs of this loop under fdtrace and under a \
             build that copied 512 bytes instead of 2 KiB, the medians differed by less than the \
             runs' spread (tens of ns per pair). Levers not tried: \
             (1) skip the path copy for paths already seen (a per-process LRU of path hashes); \
             (2) the raw syscall tracepoints (above); (3) fentry/fexit programs instead of \
             syscall tracepoints (see untargeted processes).\n\n",
        );
    }
    // Case 2.
    if let Some(r) = f("c2.ratio") {
        let pct = (r - 1.0) * 100.0;
        let (lo, hi) = (
            f("c2.ratio_lo").unwrap_or(f64::NAN),
            f("c2.ratio_hi").unwrap_or(f64::NAN),
        );
        let (flo, fhi) = (
            f("c2.floor_ratio_lo").unwrap_or(f64::NAN),
            f("c2.floor_ratio_hi").unwrap_or(f64::NAN),
        );
        let floor = match f("c2.floor_ratio") {
            Some(fr) => format!(
                " The floor, empty programs on every tracepoint fdtrace attaches with no process \
                 traced, makes the same loop {:+.1}% slower: {}.",
                (fr - 1.0) * 100.0,
                if fr >= 1.03 {
                    format!(
                        "the kernel's share alone is over the 3% target, and fdtrace's filter \
                         adds {:+.1} points to it (per-run ratios {:.3}–{:.3} under fdtrace, \
                         {:.3}–{:.3} under the floor: the difference is {} this machine's \
                         run-to-run spread)",
                        (r - fr) * 100.0,
                        lo,
                        hi,
                        flo,
                        fhi,
                        if lo > fhi { "beyond" } else { "within" }
                    )
                } else {
                    format!(
                        "fdtrace's filter adds {:+.1} points to it",
                        (r - fr) * 100.0
                    )
                }
            ),
            None => String::new(),
        };
        let raw = match f("c2.raw_floor_ratio") {
            Some(rr) => format!(
                " A program that only looks the process up in the target filter on the raw \
                 `sys_enter` and `sys_exit` tracepoints, run for every syscall of every process, \
                 costs the loop {:+.1}%: no record is built per hooked syscall, but the \
                 syscall-tracing path stays on for every task.",
                (rr - 1.0) * 100.0
            ),
            None => String::new(),
        };
        let floor = floor + &raw;
        let _ = write!(
            a,
            "**Untargeted processes.** The loop in a process fdtrace does not trace runs \
             {pct:+.1}% against untraced: {}. A process that is not traced still takes the \
             kernel's syscall-tracing path on every syscall (enabling any `syscalls:` tracepoint \
             turns it on for every task), and on `openat` and `close` the kernel fills a \
             tracepoint record and runs fdtrace's program, which returns after one array load \
             the JIT inlines (`TARGET_FLAGS`, a byte per process id).{floor}",
            if r < 1.03 {
                "within the 3% target".to_string()
            } else {
                format!("the 3% target is missed by {:.1} points", pct - 3.0)
            }
        );
        if r >= 1.03 {
            a.push_str(
                " As long as the floor itself is above 3% on this machine, no program on these \
                 tracepoints can meet the target. The lever is a different hook: fentry/fexit \
                 programs (BPF trampolines) on the kernel functions behind the syscalls (for \
                 example `do_sys_openat2` for open and openat) run only when those functions run \
                 and do not put every syscall of every task on the tracing path. This machine's \
                 kernel cannot load them (no `BPF_PROG_TYPE_TRACING` programs, and no kprobes), \
                 so that lever cannot be built or measured here.",
            );
        }
        a.push_str("\n\n");
    }
    // Case 3.
    if let Some(lost) = f("c3.lost_events") {
        let eps = f("c3.traced_events_per_s").unwrap_or(f64::NAN);
        let _ = write!(
            a,
            "**Sustained rate.** At the loop's full single-thread speed under fdtrace \
             ({eps:.0} events/s), {lost:.0} events were lost{}. ",
            if lost == 0.0 {
                ": the target is met"
            } else {
                ": the target (none) is missed"
            }
        );
        if let (Some(user), Some(u)) = (f("c3.user_events_per_s"), f("c3.untraced_events_per_s")) {
            let _ = write!(
                a,
                "The user side alone (decode, unwind, intern the stack, update the model) handles \
                 {user:.0} events/s, {:.1}x what the loop produces untraced ({u:.0} events/s){}",
                user / u,
                if user > u {
                    ": at one producing thread the consumer keeps up even if the kernel side \
                     cost nothing. (The synthetic stream repeats one stack, as the loop does; \
                     every new distinct stack costs more once.)"
                } else {
                    ": the consumer could not keep up with the loop's untraced rate."
                }
            );
        }
        a.push_str("\n\n");
    }
    // Case 4.
    if let (Some(loss), Some(t), Some(u)) =
        (f("c4.loss_pct"), f("c4.traced_rps"), f("c4.untraced_rps"))
    {
        let _ = write!(
            a,
            "**nginx.** {t:.0} requests/s traced against {u:.0} untraced: {loss:.1}% fewer{}. \
             Each request is an `accept4`, an `openat` and two closes in the worker: two open \
             records with their 2 KiB stack copies, two close records, plus TCP state events.",
            if loss < 5.0 {
                ", within the 5% target".to_string()
            } else {
                format!("; the 5% target is missed by {:.1} points", loss - 5.0)
            }
        );
        if let (Some(fl), Some(fr)) = (f("c4.floor_loss_pct"), f("c4.floor_rps")) {
            let mut why = String::new();
            if fl >= 5.0 {
                why.push_str(
                    "As long as the floor alone costs more than 5%, no program on these \
                     tracepoints meets the target here; the lever is the one for untargeted \
                     processes (fentry/fexit). ",
                );
            }
            let _ = write!(
                why,
                "fdtrace's own work (its programs' records and its consumer) accounts for the \
                 other {:.1} points.",
                loss - fl
            );
            let _ = write!(
                a,
                " The floor, empty BPF programs on every tracepoint fdtrace attaches, already \
                 serves {fr:.0} requests/s: {fl:.1}% fewer than untraced. Every syscall of nginx \
                 and of wrk (on the same 2 CPUs) then takes the kernel's syscall-tracing path, \
                 not only those that carry a program. {why}"
            );
        }
        if let (Some(bu), Some(bt), Some(fc)) = (
            f("c4.busy_untraced_pct"),
            f("c4.busy_traced_pct"),
            f("c4.fdtrace_cpu_pct"),
        ) {
            let _ = write!(
                a,
                " Both CPUs were {bu:.0}% busy during untraced runs (wrk, nginx and the rest of \
                 the machine) and {bt:.0}% during traced runs, in which fdtrace's process used \
                 {fc:.0}% of one CPU."
            );
            if let (Some(ns), Some(drps)) = (f("c4.bpf_ns_per_request"), f("c4.diag_rps")) {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let _ = write!(
                    a,
                    " In one more traced run with BPF statistics on ({drps:.0} requests/s), \
                     fdtrace's programs ran {ns:.0} ns per request, {:.1}% of the {cpus} CPUs' time; \
                     the most costly: {}. `sock_state` runs on every TCP state change of every \
                     socket on the machine (wrk's too) and writes a record for each change of a \
                     traced socket.",
                    100.0 * ns * drps / (cpus as f64 * 1e9),
                    b.texts.get("c4.top_progs").map_or("", String::as_str)
                );
            }
            if loss >= 5.0 && bu > 90.0 {
                a.push_str(
                    " With no idle CPU left, the time fdtrace's consumer and its programs take \
                     comes out of wrk's and nginx's; the loop's levers not tried above (repeated \
                     path copies, fentry) apply here too.",
                );
            }
        }
        if let Some(l) = f("c4.lost_events") {
            let _ = write!(a, " Lost events over the traced runs: {l:.0}.");
        }
        a.push_str("\n\n");
    }
    // Case 5.
    if let Some(mib) = f("c5.rss_mib") {
        let _ = write!(
            a,
            "**Memory.** fdtrace's peak RSS was {mib:.1} MiB{}.",
            if mib < 64.0 {
                ", under the 64 MiB target".to_string()
            } else {
                format!(": the 64 MiB target is missed by {:.1} MiB", mib - 64.0)
            }
        );
        if let Some(st) = f("c5.startup_mib") {
            let _ = write!(
                a,
                " {st:.1} MiB of it was already reached when fdtrace began following the ring \
                 buffer (sampled every 5 ms from its start){}",
                if st >= 0.9 * mib {
                    ": the peak comes from start-up, not from the events or the held descriptors."
                } else {
                    "; the rest grew while the events were processed."
                }
            );
        }
        if let Some(r) = f("c5.ring_mib") {
            let _ = write!(
                a,
                " {r:.1} MiB of the RSS is the ring buffer's mapping (`anon_inode:bpf-map` in \
                 /proc/PID/smaps): the kernel maps the buffer's data pages twice in a row, so \
                 that a record can wrap around the end, and RSS counts both views of the same \
                 memory (the default 16 MiB buffer is 16 MiB of kernel memory, counted as \
                 32 MiB). A smaller buffer (`--ring-mb`) shrinks that share by twice its size, \
                 at the price of less room for bursts; the target is not bought that way here."
            );
        }
        if let (Some(bp), Some(ay)) = (f("c5.layout_mib"), f("c5.aya_mib")) {
            let _ = write!(
                a,
                " Start-up reads the kernel's BTF (`/sys/kernel/btf/vmlinux`) once, with \
                 fdtrace's own member reader (`kernel_layout::KernelTypes`, for the socket \
                 offsets): {bp:.1} MiB of peak memory on its own. aya's full parse \
                 (`Btf::from_sys_fs`, {ay:.1} MiB alone) is skipped: fdtrace loads its programs \
                 with `EbpfLoader::btf(None)`, as they carry no CO-RE relocations (each measured \
                 alone in a process by `fdtrace/examples/startup_memory.rs`)."
            );
        }
        a.push_str("\n\n");
    }
    if let Some(b) = f("c6.bytes_per_event") {
        let _ = writeln!(
            a,
            "**Recording.** {b:.2} bytes per event on disk for the open/close loop: records are \
             varint-encoded with timestamps as deltas, each stack is written once, and blocks \
             are zstd-compressed (docs/FORMAT.md)."
        );
    }
    if let (Some(r8), Some(r32)) = (f("c8.burst8.ratio"), f("c8.burst32.ratio")) {
        let _ = writeln!(
            a,
            "\n**Under load.** Bursts from 8 and 32 threads on this machine's CPUs cost {r8:.2}x \
             and {r32:.2}x the untraced time per pair, with {} and {} events lost at most per \
             run. fdtrace's consumer runs at nice -20 (`fdtrace/src/priority.rs`), so that it \
             is scheduled whenever records wait, however many threads the program keeps busy; \
             and once the ring buffer is half full, births are sent without their stacks. A storm of \"too many open files\" lost {} events: \
             every failure is counted in the kernel per process, syscall and errno, and only \
             the first 128 per CPU in each 250 ms are sent with their stacks.",
            f("c8.burst8.lost").unwrap_or(0.0),
            f("c8.burst32.lost").unwrap_or(0.0),
            f("c8.storm.lost").unwrap_or(0.0),
        );
    }
    if let (Some(alone), Some(med), Some(max), Some(lost)) = (
        f("c7.idle0.median_ms"),
        f("c7.idle200.median_ms"),
        f("c7.idle200.max_ms"),
        f("c7.idle200.lost"),
    ) {
        let _ = writeln!(
            a,
            "\n**Metrics.** A scrape took {alone:.2} ms (median) while fdtrace traced the loop \
             with no other client, and {med:.2} ms (median, slowest {max:.1} ms) with {} \
             clients holding unfinished requests, {lost} events lost: the endpoint answers from \
             a snapshot the tracing loop publishes once a second, on a thread of its own, so \
             no client waits on the loop and the loop waits on no client.",
            scrape::IDLE_CLIENTS
        );
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_next_to_the_target_shows_which_side_it_is_on() {
        assert_eq!(loop_ratio(1.5036), "1.504x");
        assert_eq!(loop_ratio(1.4981), "1.498x");
        assert_eq!(loop_ratio(1.86), "1.86x");
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
        assert_eq!(range(&[2.0, 5.0, 1.0]), (1.0, 5.0));
    }

    #[test]
    fn fields_of_program_output() {
        let out = "ready 12\nns_per_pair 812.3\npairs 500000\n";
        assert_eq!(field(out, "ns_per_pair "), Some(812.3));
        assert_eq!(field(out, "pairs "), Some(500000.0));
        assert_eq!(field(out, "missing "), None);
        let wrk = "  29208 requests in 2.10s, 45.12MB read\nRequests/sec:  13910.00\n";
        assert_eq!(field(wrk, "Requests/sec:"), Some(13910.0));
    }

    #[test]
    fn busy_share() {
        assert_eq!(
            busy(Some((10.0, 100.0, 0.0)), Some((60.0, 200.0, 1.0))),
            Some(0.5)
        );
        assert_eq!(busy(None, Some((1.0, 1.0, 1.0))), None);
        assert_eq!(busy(Some((1.0, 1.0, 0.0)), Some((1.0, 1.0, 1.0))), None);
    }

    #[test]
    fn diag_runs_merge() {
        let run = |loop_ns, t| Diag {
            pairs: 10,
            loop_ns,
            progs: vec![("exit_open".into(), 10, t), ("enter_close".into(), 10, 5)],
            cpu_ns: 1.0,
            wakeups: 2.0,
            lost: 0,
        };
        let m = Diag::merge(vec![run(3.0, 100), run(1.0, 300), run(2.0, 200)]).unwrap();
        assert_eq!(m.pairs, 30);
        assert_eq!(m.loop_ns, 2.0);
        assert_eq!(m.progs[0], ("exit_open".to_string(), 30, 600));
        assert_eq!(m.progs[1], ("enter_close".to_string(), 30, 15));
        assert!(Diag::merge(Vec::new()).is_none());
    }

    #[test]
    fn table_rows() {
        let rows = vec![
            Row::new(1, "loop", "10 ns")
                .vs("2.00x")
                .target("≤ 1.50x", false),
            Row::skipped(4, "nginx", "wrk not installed"),
        ];
        let t = table(&rows);
        assert!(t.contains("| 1 | loop | 10 ns | 2.00x | ≤ 1.50x | **missed** |"));
        assert!(t.contains("| 4 | nginx | skipped: wrk not installed |  |  | skipped |"));
    }
}
