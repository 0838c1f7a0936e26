//! `fdtrace agent`: already there when a leak starts. It polls every watched process's
//! descriptor count from /proc (as `fdtrace top` does; nothing is attached, so no process pays
//! anything while nothing grows), and when a process's count passes a fraction of its limit or
//! grows steadily toward it (`trigger`), records it in full with `fdtrace record` into the
//! agent's directory, until the count stops growing, the process exits or a duration passes.
//! Recordings are kept within a disk budget (`retention`) and outlive the process and its
//! restarts. Each trigger and its outcome is one log line on stderr (JSON with --log-json).
use std::{
    collections::{HashMap, HashSet},
    io::BufRead as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    agent_metrics::{self, Health, ProcessRow, Recorded, SiteRow},
    cgroup::Cgroup,
    metrics_server::Published,
    procinfo,
    replay::Replay,
    retention,
    trigger::{Policy, Reason, Watch},
};

/// How often the recordings being written are read again for the metrics' call sites.
const SITES_EVERY: Duration = Duration::from_secs(10);

/// How long a recorder asked to stop (SIGINT) may take to write its recording.
const STOP_WAIT: Duration = Duration::from_secs(60);
/// Lines of a recorder's stderr kept to say why it failed.
const KEPT_LINES: usize = 5;

/// A process as the agent knows it: its pid and start time (clock ticks after boot), so a
/// reused pid is another process.
type Key = (u32, u64);

/// One `fdtrace record` the agent started.
struct Recorder {
    child: Child,
    path: PathBuf,
    comm: String,
    started: Instant,
    /// Asked to stop (SIGINT), and why.
    stopped: Option<Stop>,
    stderr: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The process's count stopped growing.
    Quiet,
    /// The agent itself is stopping.
    Agent,
}

/// Where the agent writes its lines.
/// The `tracing` target of the agent's lines: each trigger and its outcome, one line each
/// (`event` says which; `--log-json` makes every line a JSON object with its fields).
pub const LOG_TARGET: &str = "fdtrace_agent";

/// The start time of a process in clock ticks after boot (`/proc/PID/stat`, field 22).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The Unix time a process started at, from its start ticks and the boot time.
fn start_unix(ticks: u64) -> u64 {
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    btime + ticks / hz
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Open descriptors of `pid` (None: gone, or not readable).
fn open_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Every pid in /proc.
fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// What the agent watches, when it records and how much it keeps (`fdtrace agent`'s options).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Watch only the processes of these cgroups and those below them; empty: every process.
    pub cgroups: Vec<PathBuf>,
    /// Where recordings are written.
    pub dir: PathBuf,
    /// The recordings in `dir` are kept within this many MiB, the oldest finished deleted first.
    pub max_disk_mib: f64,
    /// Record a process once its open descriptors reach this fraction of its soft limit.
    pub trigger_frac: f64,
    /// Record a process whose count grows steadily and would reach its limit within this time.
    pub trigger_eta: Duration,
    /// How often the descriptor counts are polled.
    pub interval: Duration,
    /// A recording stops after this long.
    pub max_duration: Duration,
    /// A recording stops once its process's count has not grown for this long.
    pub quiet: Duration,
    /// At most this many processes recorded at once.
    pub max_traced: usize,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn run(a: &AgentOptions) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the agent needs root: it reads every process's descriptors and records with eBPF \
             (run it with sudo, or as the systemd unit in deploy/)"
        );
    }
    let cgroups = a
        .cgroups
        .iter()
        .map(|c| Cgroup::resolve(c))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create the directory {}", a.dir.display()))?;
    crate::output::check_writable(&a.dir.join("agent-check.fdtrace"))?;
    let exe = std::env::current_exe().context("finding fdtrace's own executable")?;
    let published = match a.metrics {
        Some(addr) => {
            let listener = crate::metrics_server::bind(addr)?;
            let p = Published::default();
            crate::metrics_server::start(listener, p.clone())?;
            Some(p)
        }
        None => None,
    };
    let policy = Policy {
        fraction: Some(a.trigger_frac),
        eta: Some(a.trigger_eta),
    };
    let budget = (a.max_disk_mib * 1024.0 * 1024.0) as u64;
    let scope = if cgroups.is_empty() {
        "every process".to_string()
    } else {
        cgroups
            .iter()
            .map(|c| c.describe())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let used = retention::used(&a.dir)?;
    tracing::info!(
        target: LOG_TARGET,
        event = "start",
        scope = %scope,
        dir = %a.dir.display(),
        max_disk_bytes = budget,
        trigger_frac = a.trigger_frac,
        trigger_eta_s = a.trigger_eta.as_secs_f64(),
        "watching {scope} every {}; recording a process at {:.0}% of its descriptor limit, \
         or growing steadily to reach it within {}; recordings in {} (at most {}, {} now)",
        crate::report::fmt_age(a.interval.as_secs_f64()),
        a.trigger_frac * 100.0,
        crate::report::fmt_age(a.trigger_eta.as_secs_f64()),
        a.dir.display(),
        mib(budget),
        mib(used),
    );
    crate::terminal::catch_interrupts();
    let mut agent = Agent {
        a,
        policy,
        budget,
        cgroups,
        exe,
        host: hostname(),
        t0: Instant::now(),
        watches: HashMap::new(),
        recorders: HashMap::new(),
        full_said: false,
        published,
        health: Health::default(),
        seen: HashMap::new(),
        recorded: HashMap::new(),
    };
    while !crate::terminal::interrupted() {
        agent.tick()?;
        let start = Instant::now();
        while start.elapsed() < a.interval && !crate::terminal::interrupted() {
            std::thread::sleep(Duration::from_millis(50).min(a.interval));
        }
    }
    agent.stop_all();
    tracing::info!(target: LOG_TARGET, event = "stop", "stopped");
    Ok(())
}

struct Agent<'a> {
    a: &'a AgentOptions,
    policy: Policy,
    budget: u64,
    cgroups: Vec<Cgroup>,
    exe: PathBuf,
    host: String,
    t0: Instant,
    watches: HashMap<Key, Watch>,
    recorders: HashMap<Key, Recorder>,
    /// "Too many at once" was said since the last recorder ended.
    full_said: bool,
    /// The metrics endpoint's text, when there is one.
    published: Option<Published>,
    health: Health,
    /// Each watched process's command, container (read once), latest count and limit.
    seen: HashMap<Key, Seen>,
    /// What each recording (being written, or of a process still alive) says, and when it
    /// was last read.
    recorded: HashMap<Key, (Recorded, Option<Instant>)>,
}

struct Seen {
    comm: String,
    container: String,
    open: usize,
    limit: Option<u64>,
}

impl Agent<'_> {
    fn pids(&self) -> Vec<u32> {
        if self.cgroups.is_empty() {
            all_pids()
        } else {
            let mut v: Vec<u32> = self.cgroups.iter().flat_map(|c| c.processes()).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
    }

    fn tick(&mut self) -> Result<()> {
        let poll_started = Instant::now();
        let now = self.t0.elapsed().as_secs_f64();
        let me = std::process::id();
        let ours: HashSet<u32> = self.recorders.values().map(|r| r.child.id()).collect();
        let mut seen = HashSet::new();
        for pid in self.pids() {
            if pid == me || ours.contains(&pid) {
                continue;
            }
            let (Some(ticks), Some(open)) = (start_ticks(pid), open_count(pid)) else {
                continue;
            };
            let key = (pid, ticks);
            seen.insert(key);
            let limit = procinfo::nofile_limit(pid).and_then(|l| l.soft);
            let info = self.seen.entry(key).or_insert_with(|| Seen {
                comm: procinfo::comm(pid).unwrap_or_default(),
                container: crate::container::of(pid)
                    .and_then(|c| c.id)
                    .map(|id| id.chars().take(12).collect())
                    .unwrap_or_default(),
                open,
                limit,
            });
            info.open = open;
            info.limit = limit;
            // An exec changes the command, not the process.
            if let Some(comm) = procinfo::comm(pid) {
                info.comm = comm;
            }
            let w = self.watches.entry(key).or_default();
            w.push(now, open);
            if self.recorders.contains_key(&key) {
                continue;
            }
            let Some(reason) = w.check(&self.policy, limit) else {
                continue;
            };
            if self.recorders.len() >= self.a.max_traced {
                if !self.full_said {
                    self.full_said = true;
                    tracing::warn!(
                        target: LOG_TARGET,
                        event = "busy",
                        pid,
                        reason = reason.name(),
                        "pid {pid} ({}) would be traced ({}), but {} processes are being \
                         traced already (--max-traced)",
                        procinfo::comm(pid).unwrap_or_default(),
                        reason.describe(),
                        self.recorders.len()
                    );
                }
                continue;
            }
            self.start(key, reason, now)?;
        }
        let live = |k: &Key| seen.contains(k) || self.recorders.contains_key(k);
        self.watches.retain(|k, _| live(k));
        self.seen.retain(|k, _| live(k));
        self.recorded.retain(|k, _| live(k));
        self.reap(now)?;
        self.health.polls += 1;
        self.health.last_poll_seconds = poll_started.elapsed().as_secs_f64();
        self.health.watched = seen.len();
        self.publish();
        Ok(())
    }

    /// The metrics of this moment, when they are served.
    fn publish(&mut self) {
        let Some(published) = self.published.clone() else {
            return;
        };
        // The recordings being written, read again now and then for their sites.
        let due: Vec<(Key, PathBuf)> = self
            .recorders
            .iter()
            .filter(|(k, _)| {
                self.recorded
                    .get(k)
                    .and_then(|(_, at)| *at)
                    .is_none_or(|at| at.elapsed() >= SITES_EVERY)
            })
            .map(|(k, r)| (*k, r.path.clone()))
            .collect();
        for (key, path) in due {
            self.read_sites(key, &path);
        }
        self.health.recording = self.recorders.len();
        self.health.disk_bytes = retention::used(&self.a.dir).unwrap_or(0);
        let rows: Vec<ProcessRow> = self
            .seen
            .iter()
            .map(|(k, s)| ProcessRow {
                pid: k.0,
                comm: s.comm.clone(),
                container: s.container.clone(),
                open: s.open,
                limit: s.limit,
                growth_per_min: self.watches.get(k).and_then(|w| w.steady_growth_per_min()),
                traced: self.recorders.contains_key(k),
            })
            .collect();
        let recorded: Vec<(u32, String, Recorded)> = self
            .recorded
            .iter()
            .map(|(k, (r, _))| {
                let comm = self.seen.get(k).map(|s| s.comm.clone()).unwrap_or_default();
                (k.0, comm, r.clone())
            })
            .collect();
        published.set_openmetrics(agent_metrics::encode(&self.health, &rows, &recorded));
    }

    /// What the recording at `path` says so far (it may still be written: its unfinished end
    /// is left out).
    fn read_sites(&mut self, key: Key, path: &std::path::Path) {
        let comm = self
            .seen
            .get(&key)
            .map(|s| s.comm.clone())
            .unwrap_or_default();
        let report = Replay::read(path, None, |_, _| {})
            .ok()
            .and_then(|mut r| r.report(None));
        let entry = self
            .recorded
            .entry(key)
            .or_insert_with(|| (Recorded::default(), None));
        entry.1 = Some(Instant::now());
        if let Some(r) = report {
            entry.0 = Recorded {
                sites: r
                    .sites
                    .iter()
                    .map(|s| SiteRow {
                        pid: key.0,
                        comm: comm.clone(),
                        site: agent_metrics::site_label(s),
                        kind: s.kind.to_string(),
                        verdict: s.verdict.as_str().to_string(),
                        count: s.count as u64,
                    })
                    .collect(),
                lost_events: r.meta.lost_events,
            };
        }
    }

    fn start(&mut self, key: Key, reason: Reason, now: f64) -> Result<()> {
        let (pid, ticks) = key;
        let comm = procinfo::comm(pid).unwrap_or_else(|| "unknown".into());
        let container = crate::container::of(pid)
            .and_then(|c| c.id)
            .map(|id| id.chars().take(12).collect::<String>());
        let path = retention::recording_path(
            &self.a.dir,
            &self.host,
            start_unix(ticks),
            pid,
            &comm,
            container.as_deref(),
        );
        let mut cmd = Command::new(&self.exe);
        cmd.args(["record", "-q", "-p", &pid.to_string(), "-d"])
            .arg(format!("{}", self.a.max_duration.as_secs_f64()))
            .arg("-o")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group: a Ctrl-C at the agent's terminal reaches the agent, which
        // stops each recorder in turn.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept = stderr.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if k.len() == KEPT_LINES {
                        k.remove(0);
                    }
                    k.push(line);
                }
            });
        }
        if let Some(w) = self.watches.get_mut(&key) {
            w.traced(now);
        }
        match reason {
            Reason::Fraction { .. } => self.health.triggers_fraction += 1,
            Reason::Eta { .. } => self.health.triggers_eta += 1,
        }
        tracing::info!(
            target: LOG_TARGET,
            event = "tracing",
            pid,
            comm = %comm,
            container = container.as_deref(),
            reason = reason.name(),
            detail = %reason.describe(),
            file = %path.display(),
            "tracing pid {pid} ({comm}): {}; recording to {}",
            reason.describe(),
            path.display()
        );
        self.recorders.insert(
            key,
            Recorder {
                child,
                path,
                comm,
                started: Instant::now(),
                stopped: None,
                stderr,
            },
        );
        Ok(())
    }

    /// Recorders that ended, and those to stop because their process stopped growing.
    fn reap(&mut self, now: f64) -> Result<()> {
        let mut ended = Vec::new();
        for (key, r) in &mut self.recorders {
            match r.child.try_wait() {
                Ok(Some(status)) => ended.push((*key, status.success())),
                Ok(None) => {
                    let quiet = self
                        .watches
                        .get(key)
                        .is_some_and(|w| w.stopped_growing(now, self.a.quiet));
                    if quiet && r.stopped.is_none() {
                        r.stopped = Some(Stop::Quiet);
                        signal(&r.child, libc::SIGINT);
                    }
                }
                Err(e) => return Err(e).context("waiting for a recorder"),
            }
        }
        for (key, ok) in ended {
            let r = self.recorders.remove(&key).expect("an ended recorder");
            self.ended(key, r, ok);
        }
        Ok(())
    }

    fn ended(&mut self, key: Key, r: Recorder, ok: bool) {
        let (pid, ticks) = key;
        if ok {
            self.health.recorded += 1;
        } else {
            self.health.failed += 1;
        }
        if self.published.is_some() {
            // The finished recording's sites stay in the metrics while the process lives.
            self.read_sites(key, &r.path);
        }
        let alive = start_ticks(pid) == Some(ticks);
        if let Some(w) = self.watches.get_mut(&key) {
            w.released();
        }
        self.full_said = false;
        let bytes = std::fs::metadata(&r.path).map(|m| m.len()).unwrap_or(0);
        let why = if r.stopped == Some(Stop::Quiet) {
            format!(
                "its count stopped growing for {}",
                crate::report::fmt_age(self.a.quiet.as_secs_f64())
            )
        } else if r.stopped == Some(Stop::Agent) {
            "the agent stopped".into()
        } else if !alive {
            "it exited".into()
        } else {
            format!(
                "{} passed",
                crate::report::fmt_age(self.a.max_duration.as_secs_f64())
            )
        };
        let secs = r.started.elapsed().as_secs_f64();
        if ok {
            tracing::info!(
                target: LOG_TARGET,
                event = "recorded",
                pid,
                comm = %r.comm,
                file = %r.path.display(),
                bytes,
                seconds = secs,
                until = %why,
                "recorded pid {pid} ({}) for {}, until {why}: {} ({}); `fdtrace report {}`",
                r.comm,
                crate::report::fmt_age(secs),
                r.path.display(),
                mib(bytes),
                r.path.display()
            );
        } else {
            let said = r
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join(" | ");
            tracing::error!(
                target: LOG_TARGET,
                event = "failed",
                pid,
                comm = %r.comm,
                file = %r.path.display(),
                bytes,
                error = %said,
                "recording pid {pid} ({}) failed after {}: {said}{}",
                r.comm,
                crate::report::fmt_age(secs),
                if bytes > 0 {
                    format!(" (what it wrote is in {})", r.path.display())
                } else {
                    String::new()
                }
            );
            if bytes == 0 {
                let _ = std::fs::remove_file(&r.path);
            }
        }
        self.enforce_budget();
    }

    fn enforce_budget(&mut self) {
        let open: HashSet<PathBuf> = self.recorders.values().map(|r| r.path.clone()).collect();
        match retention::enforce(&self.a.dir, self.budget, &open) {
            Ok(deleted) => {
                for p in deleted {
                    self.health.deleted += 1;
                    tracing::info!(
                        target: LOG_TARGET,
                        event = "deleted",
                        file = %p.display(),
                        "deleted {} (the oldest recording; the directory is over {})",
                        p.display(),
                        mib(self.budget)
                    );
                }
            }
            Err(e) => tracing::error!(
                target: LOG_TARGET,
                event = "error",
                error = %format!("{e:#}"),
                "keeping {} within its budget: {e:#}",
                self.a.dir.display()
            ),
        }
    }

    /// Ask every recorder to stop and wait for their recordings.
    fn stop_all(&mut self) {
        for r in self.recorders.values_mut() {
            if r.stopped.is_none() {
                r.stopped = Some(Stop::Agent);
                signal(&r.child, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        while !self.recorders.is_empty() && Instant::now() < deadline {
            let now = self.t0.elapsed().as_secs_f64();
            if let Err(e) = self.reap(now) {
                tracing::error!(
                    target: LOG_TARGET,
                    event = "error",
                    error = %format!("{e:#}"),
                    "{e:#}"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, mut r) in self.recorders.drain() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signals a child this process started and has not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}
