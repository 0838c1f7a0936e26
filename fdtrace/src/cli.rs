//! Command-line interface.
use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    agent::AgentOptions,
    export::ExportFormat,
    hooks::HookSet,
    options::{CgroupArg, Options, Target},
    process::UnwindMode,
};

/// Find the exact line of code that leaks file descriptors, live, with eBPF.
///
/// Traces a running process (-p PID) or starts one (-- CMD ARGS...), matches every descriptor
/// it opens to its close, and reports the descriptors still open grouped by the call site that
/// created them. `fdtrace record` saves a session to a file; `fdtrace report FILE` analyzes it
/// later, anywhere.
#[derive(Debug, Parser)]
#[command(
    name = "fdtrace",
    version,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// More diagnostics on stderr (-v, -vv; -vvv adds one line per unwound stack).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Trace like `fdtrace -p PID` / `fdtrace -- CMD`, writing everything needed to rebuild the
    /// report (including symbols) into the recording given with -o.
    Record(TraceArgs),
    /// The report of a recording, as live mode would have shown it (same text, same JSON), or
    /// with --timeline how its open descriptors grew.
    Report(ReportArgs),
    /// A recording for other tools: the descriptors still open by creating stack as a pprof
    /// profile, folded stacks or a flame graph (SVG), or every record as JSON lines.
    Export(ExportArgs),
    /// Which call sites grew between two recordings (A, then B).
    Diff(DiffArgs),
    /// Every process by open descriptors and growth (from /proc), to find the leaking one.
    Top(TopArgs),
    /// Stay running, watch every process's descriptor count (from /proc: nothing attached), and
    /// record a process in full when its count nears its limit, into recordings kept within a
    /// disk budget that outlive the process and its restarts.
    Agent(AgentArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write every page (fdtrace.1 and one per
    /// subcommand, fdtrace-record.1 …) into DIR.
    Manpage {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Which hook observes each event on this kernel, and why: a trampoline on the syscall's
    /// kernel function (fentry/fexit) or its tracepoints (loads and attaches the programs, then
    /// detaches them). With --list, the tracepoints fdtrace attaches with `--hooks tracepoints`
    /// (category:name, one per line; those this kernel lacks marked "(missing)").
    #[command(alias = "tracepoints")]
    Hooks {
        /// Only list the tracepoints, one per line (what `fdtrace tracepoints` printed).
        #[arg(long)]
        list: bool,
        /// The set to show (default: as `--hooks` of the trace commands, `FDTRACE_HOOKS`).
        #[arg(long, value_enum, value_name = "SET", env = "FDTRACE_HOOKS", default_value_t = HookSet::Auto)]
        hooks: HookSet,
    },
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Show the N processes growing fastest (then largest).
    #[arg(short = 'n', long, default_value_t = 15)]
    pub count: usize,

    /// Measure growth over SECS seconds.
    #[arg(short, long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub interval: Duration,

    /// One table, then exit (the default when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Watch only the processes of this cgroup v2 and those below it (a directory under the
    /// cgroup v2 mount, or a path as /proc/PID/cgroup shows it); repeat for more. Default: every
    /// process.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,

    /// Where recordings are written, named by host, process start time, pid, command and
    /// container.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/fdtrace")]
    pub dir: PathBuf,

    /// Keep the recordings in DIR within this many MiB: the oldest finished ones are deleted
    /// first; one being written never is.
    #[arg(long, value_name = "MIB", default_value = "1024", value_parser = parse_positive)]
    pub max_disk: f64,

    /// Record a process once its open descriptors reach this fraction of its soft
    /// RLIMIT_NOFILE.
    #[arg(long, value_name = "FRACTION", default_value = "0.5", value_parser = parse_fraction)]
    pub trigger_frac: f64,

    /// Record a process whose count grows steadily and would reach its limit within this time
    /// (e.g. 30m, 2h, 90s).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub trigger_eta: Duration,

    /// Poll the descriptor counts this often.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop a recording after this long (the process may trigger again, into a new one).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub max_duration: Duration,

    /// Stop a recording once the process's count has not grown for this long.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub quiet: Duration,

    /// Record at most this many processes at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_traced: usize,

    /// Log each trigger and outcome as one JSON object per line.
    #[arg(long)]
    pub log_json: bool,

    /// Serve Prometheus metrics (OpenMetrics) at http://ADDR/metrics: every watched process's
    /// count, limit, growth and time to exhaustion, the call sites of recorded processes with
    /// their verdicts, and the agent's own health.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

impl From<&AgentArgs> for AgentOptions {
    fn from(a: &AgentArgs) -> Self {
        AgentOptions {
            cgroups: a.cgroup.clone(),
            dir: a.dir.clone(),
            max_disk_mib: a.max_disk,
            trigger_frac: a.trigger_frac,
            trigger_eta: a.trigger_eta,
            interval: a.interval,
            max_duration: a.max_duration,
            quiet: a.quiet,
            max_traced: a.max_traced,
            metrics: a.metrics,
        }
    }
}

/// `90`, `90s`, `30m`, `2h`, `1.5h`: a positive duration (plain numbers are seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s
        .trim()
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphabetic())
    {
        Some((i, _)) => (&s.trim()[..i], &s.trim()[i..]),
        None => (s.trim(), "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("`{s}`: the unit must be ms, s, m, h or d")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 30m, 2h)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("`{s}` is not a fraction above 0 and at most 1")),
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The recording (from `fdtrace record`).
    pub file: PathBuf,

    /// What to write.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: ExportFormat,

    /// Write to OUT (default: stdout).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// The state SECS seconds after the recording began, instead of at its end (jsonl: the
    /// records up to then).
    #[arg(long, value_name = "SECS", value_parser = parse_secs_f64)]
    pub at: Option<f64>,

    /// Only descriptors at least SECS seconds old (not for jsonl).
    #[arg(long, value_name = "SECS", value_parser = parse_secs_f64)]
    pub min_age: Option<f64>,

    /// Also the descriptors open before tracing began, under `[pre-existing]` by their group
    /// (left out by default, so that the call sites stay visible; not for jsonl).
    #[arg(long)]
    pub preexisting: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier recording.
    pub a: PathBuf,

    /// The later recording.
    pub b: PathBuf,

    /// Print the comparison as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Write to OUT (default: stdout).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording (from `fdtrace record`).
    pub file: PathBuf,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Write the report to OUT (default: stdout).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// The state SECS seconds after the recording began, instead of at its end.
    #[arg(long, value_name = "SECS", value_parser = parse_secs_f64)]
    pub at: Option<f64>,

    /// Only descriptors at least SECS seconds old (hides the ones still in use).
    #[arg(long, value_name = "SECS", value_parser = parse_secs_f64)]
    pub min_age: Option<f64>,

    /// List every pre-existing descriptor in the text report, not only their groups (also -v).
    #[arg(long)]
    pub all: bool,

    /// How the number of open descriptors grew: a table of samples at regular intervals, in
    /// total and for the 5 call sites holding the most at the end.
    #[arg(long, conflicts_with = "min_age")]
    pub timeline: bool,

    /// With --timeline: also write the chart to OUT.html (one self-contained file).
    #[arg(long, value_name = "OUT.html", requires = "timeline")]
    pub html: Option<PathBuf>,

    /// With --timeline: sample every SECS seconds (default: a few hundred samples over the
    /// recording, about 20 of them in the table).
    #[arg(long, value_name = "SECS", requires = "timeline", value_parser = parse_secs)]
    pub interval: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace this running process (all its threads).
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Trace every process of this cgroup v2 and the cgroups below it, those there now and
    /// those that enter it, each with its own table (a directory under the cgroup v2 mount, or
    /// the path /proc/PID/cgroup shows after `0::`). Filtered in the kernel.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pid", "command", "container"])]
    pub cgroup: Option<PathBuf>,

    /// Trace every process of the container whose id starts with ID (docker, containerd/CRI,
    /// podman: as `docker ps` or `crictl ps` shows it), as --cgroup does with its cgroup.
    #[arg(long, value_name = "ID", conflicts_with_all = ["pid", "command"])]
    pub container: Option<String>,

    /// Stop after SECS seconds (default: at Ctrl-C, SIGTERM or when the target exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Write the report to FILE (default: stderr, so a launched program keeps its stdout). For
    /// `fdtrace record`: the recording to create.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also trace the children the target creates, and theirs, each with its own table; the
    /// report has one section per process.
    #[arg(short, long)]
    pub follow: bool,

    /// Size of the kernel's event ring buffer in MiB (a power of two). Raise it when the report
    /// shows lost events.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = parse_ring_mb)]
    pub ring_mb: u32,

    /// How to unwind the stacks that create descriptors: `dwarf` (CFI over a copy of the top of
    /// the stack; works without frame pointers), `fp` (the kernel walks the frame pointers; not
    /// limited by the copy) or `auto`: `fp` for Go programs, `dwarf` for the others.
    #[arg(long, value_enum, default_value_t = UnwindMode::Auto, value_name = "METHOD")]
    pub unwind: UnwindMode,

    /// Go programs: do not probe net/http for the goroutine that asked for each connection (the
    /// sockets it dials are then named by the dialing goroutine's frames only).
    #[arg(long)]
    pub no_go_links: bool,

    /// Which kernel hooks observe the syscalls: `auto` (trampolines on the syscalls' kernel
    /// functions where this kernel takes them, which cost only their callers; the syscall
    /// tracepoints elsewhere, which put every syscall of every process on the kernel's tracing
    /// path), `tracepoints`, or `trampolines` (fail where the kernel refuses one).
    /// `fdtrace hooks` shows the choice on this kernel.
    #[arg(long, value_enum, default_value_t = HookSet::Auto, value_name = "SET", env = "FDTRACE_HOOKS")]
    pub hooks: HookSet,

    /// Refresh the live view every SECS seconds (a screen on a terminal, one line per interval
    /// on stderr otherwise).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub interval: Duration,

    /// No live view: only the report at the end.
    #[arg(short, long)]
    pub quiet: bool,

    /// Report only descriptors at least SECS seconds old (hides the ones still in use).
    #[arg(long, value_name = "SECS", value_parser = parse_secs_f64)]
    pub min_age: Option<f64>,

    /// List every pre-existing descriptor in the text report, not only their groups (also -v).
    #[arg(long)]
    pub all: bool,

    /// Serve Prometheus metrics (open descriptors by kind and TCP state, top call sites with
    /// their growth and verdict, time to exhaustion, lost events) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Start this command and trace it from its first instruction.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn parse_secs_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("expected a number of seconds >= 0, got {s}"));
    }
    Ok(v)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_ring_mb(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of MiB"))?;
    if !v.is_power_of_two() || v > 2048 {
        return Err(format!(
            "the ring buffer size must be a power of two up to 2048 MiB, got {s}"
        ));
    }
    Ok(v)
}

impl TraceArgs {
    /// `fdtrace record`'s options: a trace whose `-o FILE` is the recording.
    pub fn record_options(&self) -> Result<Options, String> {
        let Some(path) = self.output.clone() else {
            return Err("fdtrace record needs the recording file: -o FILE".into());
        };
        let mut opts = self.options()?;
        opts.output = None;
        opts.record = Some(path);
        Ok(opts)
    }

    /// The session options, or a message saying what is missing.
    pub fn options(&self) -> Result<Options, String> {
        let target = match (
            self.pid,
            self.command.is_empty(),
            &self.cgroup,
            &self.container,
        ) {
            (None, true, Some(path), None) => Target::Cgroup(CgroupArg::Path(path.clone())),
            (None, true, None, Some(id)) => Target::Cgroup(CgroupArg::Container(id.clone())),
            (Some(pid), true, None, None) => Target::Pid(pid),
            (None, false, None, None) => Target::Command(self.command.clone()),
            (None, true, None, None) => {
                return Err(
                    "nothing to trace: give -p PID, --cgroup PATH, --container ID or -- CMD \
                     [ARGS...]"
                        .into(),
                );
            }
            _ => {
                return Err(
                    "give one of -p PID, --cgroup PATH, --container ID or -- CMD, not several"
                        .into(),
                );
            }
        };
        Ok(Options {
            target,
            duration: self.duration,
            json: self.json,
            output: self.output.clone(),
            follow: self.follow,
            ring_mb: self.ring_mb,
            record: None,
            interval: self.interval,
            quiet: self.quiet,
            min_age: self.min_age,
            all: self.all,
            metrics: self.metrics,
            unwind: self.unwind,
            go_links: !self.no_go_links,
            hooks: self.hooks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fdtrace").chain(args.iter().copied()))
    }

    #[test]
    fn agent_durations_and_fractions() {
        let c = parse(&[
            "agent",
            "--trigger-eta",
            "30m",
            "--interval",
            "500ms",
            "--max-duration",
            "1.5h",
            "--quiet",
            "90",
            "--trigger-frac",
            "0.25",
            "--cgroup",
            "/a",
            "--cgroup",
            "/b",
        ])
        .unwrap();
        let Some(Cmd::Agent(a)) = c.cmd else {
            panic!("not the agent")
        };
        assert_eq!(a.trigger_eta, Duration::from_secs(1800));
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.max_duration, Duration::from_secs(5400));
        assert_eq!(a.quiet, Duration::from_secs(90));
        assert_eq!(a.trigger_frac, 0.25);
        assert_eq!(a.cgroup.len(), 2);
        assert_eq!(a.dir, PathBuf::from("/var/lib/fdtrace"));
        assert_eq!(a.max_disk, 1024.0);
        for bad in [
            &["agent", "--trigger-eta", "soon"][..],
            &["agent", "--trigger-eta", "10y"],
            &["agent", "--trigger-eta", "-5m"],
            &["agent", "--trigger-frac", "1.5"],
            &["agent", "--trigger-frac", "0"],
            &["agent", "--max-disk", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pid_mode() {
        let c = parse(&["-p", "42", "-d", "2.5", "--json", "-o", "r.json"]).unwrap();
        let o = c.trace.options().unwrap();
        assert_eq!(o.target, Target::Pid(42));
        assert_eq!(o.duration, Some(Duration::from_millis(2500)));
        assert!(o.json);
        assert_eq!(o.output, Some(PathBuf::from("r.json")));
        assert_eq!(o.unwind, UnwindMode::Auto);
    }

    #[test]
    fn unwind_methods() {
        for (arg, mode) in [
            ("auto", UnwindMode::Auto),
            ("fp", UnwindMode::Fp),
            ("dwarf", UnwindMode::Dwarf),
        ] {
            let o = parse(&["--unwind", arg, "-p", "1"])
                .unwrap()
                .trace
                .options()
                .unwrap();
            assert_eq!(o.unwind, mode);
        }
        assert!(parse(&["--unwind", "lbr", "-p", "1"]).is_err());
    }

    #[test]
    fn command_mode_keeps_its_arguments() {
        let c = parse(&["-d", "5", "-f", "--", "./prog", "-x", "--json"]).unwrap();
        let o = c.trace.options().unwrap();
        assert!(o.follow);
        assert_eq!(
            o.target,
            Target::Command(vec!["./prog".into(), "-x".into(), "--json".into()])
        );
        assert!(!o.json);
    }

    #[test]
    fn bad_input() {
        assert!(parse(&["-p", "abc"]).is_err());
        assert!(parse(&["-d", "-1", "-p", "1"]).is_err());
        assert!(parse(&["-d", "x", "-p", "1"]).is_err());
        assert!(parse(&["-p", "1", "--", "ls"]).is_err());
        assert!(parse(&["--json"]).unwrap().trace.options().is_err());
        assert!(parse(&["-p", "1", "--ring-mb", "3"]).is_err());
        assert!(parse(&["-p", "1", "--ring-mb", "4096"]).is_err());
        assert_eq!(
            parse(&["-p", "1", "--ring-mb", "64"])
                .unwrap()
                .trace
                .ring_mb,
            64
        );
    }

    #[test]
    fn subcommands() {
        let c = parse(&["record", "-p", "7", "-o", "x.rec", "-f"]).unwrap();
        let Some(Cmd::Record(t)) = c.cmd else {
            panic!("not record")
        };
        assert_eq!(t.options().unwrap().target, Target::Pid(7));
        assert!(t.follow);
        let c = parse(&[
            "report",
            "x.rec",
            "--json",
            "--at",
            "2.5",
            "--min-age",
            "10",
        ])
        .unwrap();
        let Some(Cmd::Report(r)) = c.cmd else {
            panic!("not report")
        };
        assert_eq!((r.at, r.min_age, r.json), (Some(2.5), Some(10.0), true));
        assert!(parse(&["report"]).is_err());
        let c = parse(&[
            "report",
            "x.rec",
            "--timeline",
            "--html",
            "t.html",
            "--interval",
            "0.5",
        ])
        .unwrap();
        let Some(Cmd::Report(r)) = c.cmd else {
            panic!("not report")
        };
        assert!(r.timeline);
        assert_eq!(r.html, Some(PathBuf::from("t.html")));
        assert_eq!(r.interval, Some(Duration::from_millis(500)));
        assert!(parse(&["report", "x", "--html", "t.html"]).is_err());
        assert!(parse(&["report", "x", "--interval", "1"]).is_err());
        assert!(parse(&["report", "x", "--timeline", "--interval", "0"]).is_err());
        assert!(parse(&["report", "x", "--timeline", "--min-age", "1"]).is_err());
        let c = parse(&["export", "x.rec", "--format", "pprof", "-o", "p.pb.gz"]).unwrap();
        let Some(Cmd::Export(e)) = c.cmd else {
            panic!("not export")
        };
        assert_eq!(e.format, ExportFormat::Pprof);
        assert_eq!(e.output, Some(PathBuf::from("p.pb.gz")));
        for (name, f) in [
            ("folded", ExportFormat::Folded),
            ("jsonl", ExportFormat::Jsonl),
            ("svg", ExportFormat::Svg),
        ] {
            let Some(Cmd::Export(e)) = parse(&["export", "x", "--format", name]).unwrap().cmd
            else {
                panic!("not export")
            };
            assert_eq!(e.format, f);
        }
        assert!(parse(&["export", "x"]).is_err());
        assert!(parse(&["export", "x", "--format", "png"]).is_err());
        let c = parse(&["diff", "a.rec", "b.rec", "--json"]).unwrap();
        let Some(Cmd::Diff(d)) = c.cmd else {
            panic!("not diff")
        };
        assert_eq!(
            (d.a, d.b, d.json),
            (PathBuf::from("a.rec"), PathBuf::from("b.rec"), true)
        );
        assert!(parse(&["diff", "a.rec"]).is_err());
        assert!(parse(&["report", "x", "--at", "-1"]).is_err());
        // A command named like a subcommand is still a command after `--`.
        let c = parse(&["--", "report"]).unwrap();
        assert!(c.cmd.is_none());
        assert_eq!(c.trace.command, vec![OsString::from("report")]);
    }
}
