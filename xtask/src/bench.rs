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
mod analysis;
mod callgrind;
mod cgroup;
mod doc;
mod facts;
mod floors;
mod godial;
mod load;
mod measure;
mod memory;
mod nginx;
mod open_close;
mod procs;
mod reports;
mod runtimes;
mod scrape;
mod sustained;
mod table;
mod untargeted;
mod vm;
mod vm_progs;
mod vm_script;

use analysis::*;
use doc::*;
use facts::{DiagRun, Fact, Stat, Text, Untargeted};
use floors::*;
use measure::*;
use open_close::*;
use procs::*;
use reports::*;
use table::*;

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
    /// Instead: the hook sets side by side in a VM of this kernel (6.1 or 6.12 take
    /// trampolines; 5.10 too), ratios only; its section of docs/PERFORMANCE.md is replaced
    /// (unless --quick, or --output says where).
    #[arg(long, value_name = "KERNEL", value_parser = ["5.10", "6.1", "6.12"])]
    vm: Option<String>,
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
    /// Pairs of the loop whose records fdtrace consumes under callgrind (case 3).
    callgrind_pairs: u64,
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
            callgrind_pairs: if q { 10_000 } else { 40_000 },
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
    facts: BTreeMap<Fact, f64>,
    /// Measured text the analysis quotes (program costs, say).
    texts: BTreeMap<Text, String>,
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

    fn set(&mut self, key: Fact, value: f64) {
        self.facts.insert(key, value);
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
        self.attach_cmd(cmd, what, subst, Duration::from_secs(60))
    }

    /// Start an fdtrace command (fdtrace itself, or a tool that runs it) and wait up to
    /// `timeout` until it follows the ring buffer.
    fn attach_cmd(
        &mut self,
        mut cmd: Command,
        what: &str,
        subst: &[(String, &str)],
        timeout: Duration,
    ) -> Result<Proc> {
        self.record(&cmd, subst);
        let mut p = Proc::start(&mut cmd, what, false)?;
        let deadline = Instant::now() + timeout;
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
                bail!("{what} did not attach within {timeout:?} (wchan {wchan})");
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
    if let Some(series) = &opts.vm {
        let write = match &opts.output {
            Some(o) => Some(o.clone()),
            None if !opts.quick => Some(root.join("docs/PERFORMANCE.md")),
            None => None,
        };
        let pairs = if opts.quick { 20_000 } else { 100_000 };
        return vm::run(series, p.reps, pairs, write);
    }
    install_signal_handlers();
    super::build()?;
    build_examples(&["user_throughput", "startup_memory", "floor"])?;
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
            // The VM runs' sections (`--vm`) stay.
            let doc = render_doc(&b, &table, &load_start, &load_end, started.elapsed())
                + &vm::sections_of(&path);
            std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("\nbench: wrote {}", path.display());
        }
        None => eprintln!("\nbench: partial or quick run: docs/PERFORMANCE.md not written"),
    }
    Ok(())
}

/// Build fdtrace's examples the bench runs (release, into target/release/examples/).
fn build_examples(names: &[&str]) -> Result<()> {
    let mut c = Command::new("cargo");
    c.args(["build", "--release", "-p", "fdtrace"]);
    for n in names {
        c.args(["--example", n]);
    }
    super::run(
        c.current_dir(super::root())
            .env("PATH", super::path_with_tools()),
    )
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
