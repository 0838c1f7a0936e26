//! The report: still-open descriptors grouped by the call site that created them.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use serde::Serialize;

use crate::{
    model::{FdKind, FdTable, OpenFd, Origin, StackId, TableStats},
    procinfo::ProcFd,
    stacks::StackStore,
    symbolize::{Frame, Symbols},
    verdict::{self, History, Trend, Verdict},
};

pub use crate::user_frame::{
    go_package, goroots, is_go_std_package, is_library_frame, is_library_frame_in,
    is_rust_std_file, user_frame,
};

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub meta: Meta,
    /// Descriptors open at the end of the session.
    pub open_count: usize,
    /// With `--min-age`: how many of them are old enough to be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shown: Option<Shown>,
    /// Call sites with still-open descriptors, largest count first.
    pub sites: Vec<Site>,
    /// Descriptors open before tracing began (no known origin), every one.
    pub preexisting: Vec<FdEntry>,
    /// The same, grouped by kind and target pattern (sockets by protocol, peer and state),
    /// largest first, each with the site that looks like its origin, when one does.
    pub preexisting_groups: Vec<crate::preexisting::Group>,
    /// Descriptors found in /proc during the session that no traced syscall created (drift the
    /// model corrected; see `model.drift_opens`).
    pub untraced: Vec<FdEntry>,
    /// Differences between the model and /proc/PID/fd at report time (null when the process
    /// was gone and could not be checked).
    pub drift: Option<Drift>,
    pub model: TableStats,
    /// Growth of the process's open count, per minute (null with too little history).
    pub growth_per_min: Option<f64>,
    /// Seconds until the open count reaches the soft RLIMIT_NOFILE at that growth (null when
    /// not growing or unlimited).
    pub exhaustion_eta_s: Option<f64>,
    /// Births that failed with EMFILE/ENFILE ("too many open files"), by call site: those sent
    /// with their stacks.
    pub failed_opens: Vec<FailedSite>,
    /// Every failed birth per errno, as the kernel counted them; `with_stack` of them are in
    /// `failed_opens` (under a storm of failures only a bounded rate is sent with stacks).
    pub failure_totals: Vec<FailureTotal>,
    /// The process's TCP sockets by state (`ESTABLISHED`, `CLOSE_WAIT`, …).
    pub tcp_states: BTreeMap<&'static str, usize>,
    /// With `-f`: one report per traced descendant, exited ones included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Report>,
    /// Reports of recordings: where and when it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingInfo>,
    /// Live mode: updates of the live view never written because stderr was not being read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_updates_dropped: Option<u64>,
    /// Live mode: records the kernel sent about processes that were not traced (0: its filter
    /// let nothing else through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stray_events: Option<u64>,
    /// A language runtime whose program frames could not be named: how to have them named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_hint: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Shown {
    pub min_age_s: f64,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct RecordingInfo {
    pub file: String,
    pub hostname: String,
    pub kernel_release: String,
    /// Wall-clock start, seconds since the Unix epoch.
    pub start_unix_s: f64,
    /// Why the recording ended (None: it was cut short).
    pub ended: Option<String>,
    /// Where the file was cut, when the recorder was killed or the disk filled.
    pub cut_short: Option<String>,
    /// The report shows the state at this many seconds into the recording.
    pub at_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Site {
    pub count: usize,
    pub kind: &'static str,
    /// One target of this site's descriptors (a path, for files).
    pub example: String,
    /// Index in `frames` of the first frame in the program's own code (not libc, not a
    /// language runtime or standard library).
    pub user_frame: Option<usize>,
    /// The stack walk ended before reaching the stack's root.
    pub truncated: bool,
    /// From the site's history: "leaking" (its count keeps growing and its descriptors keep
    /// aging), "held" (a steady count: a pool, log files) or "unknown" (too little history, or
    /// a count that rose and fell).
    pub verdict: &'static str,
    /// Net growth of the site's open count, per minute (null with too little history).
    pub growth_per_min: Option<f64>,
    /// How the stack was unwound: `dwarf` (CFI over the copied top of the stack) or `fp` (the
    /// kernel's frame-pointer walk).
    pub method: &'static str,
    pub oldest_age_s: Option<f64>,
    pub newest_age_s: Option<f64>,
    /// Innermost first.
    pub frames: Vec<JsonFrame>,
    /// This site's sockets grouped by (peer, state), largest group first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketGroup>,
    /// What the descriptors' state suggests (e.g. the CLOSE_WAIT leak signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub fds: Vec<FdEntry>,
}

#[derive(Debug, Serialize)]
pub struct FailedSite {
    pub count: u64,
    /// "EMFILE" (the process's limit) or "ENFILE" (the system's).
    pub errno: &'static str,
    /// What was being opened.
    pub example: String,
    pub user_frame: Option<usize>,
    pub first_age_s: Option<f64>,
    pub last_age_s: Option<f64>,
    pub frames: Vec<JsonFrame>,
}

#[derive(Debug, Serialize)]
pub struct FailureTotal {
    /// "EMFILE" or "ENFILE".
    pub errno: &'static str,
    /// All of them: the kernel's count (or those seen, for recordings that have none).
    pub count: u64,
    /// Those sent with a stack, counted at their call sites in `failed_opens`.
    pub with_stack: u64,
    /// The count per syscall (`openat`, `accept`, …), where the kernel counted them.
    pub by_syscall: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct SocketGroup {
    pub count: usize,
    /// `tcp`, `udp6`, `unix-stream`, …
    pub proto: String,
    /// The peer (`host:port`; only the host for accepted connections).
    pub peer: Option<String>,
    /// Local address, for listening, unconnected and accepted sockets.
    pub local: Option<String>,
    /// Accepted connections (the server side).
    pub accepted: bool,
    pub state: Option<&'static str>,
    /// How long the longest-waiting socket of the group has been in `state`.
    pub oldest_state_age_s: Option<f64>,
}

/// Shown for call sites whose sockets sit in CLOSE_WAIT.
pub const CLOSE_WAIT_HINT: &str = "CLOSE_WAIT: the peer closed these connections and this process never did, the classic socket leak; usual causes: HTTP response bodies never closed, clients without timeouts, connections not returned to their pool";

#[derive(Debug, Serialize)]
pub struct JsonFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub addr: String,
    pub module: Option<String>,
    pub inlined: bool,
}

#[derive(Debug, Serialize)]
pub struct FdEntry {
    pub fd: i32,
    pub kind: &'static str,
    pub target: String,
    pub age_s: Option<f64>,
    /// TCP state of a socket (`CLOSE_WAIT`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Peer and local address of a socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Time since the socket entered `state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_age_s: Option<f64>,
    /// Closed by a successful exec.
    pub cloexec: bool,
}

impl FdEntry {
    pub fn new(fd: i32, e: &OpenFd, now_ns: u64) -> Self {
        let sock = e.sock.as_ref();
        Self {
            fd,
            kind: e.kind.as_str(),
            target: sock
                .map(|s| s.describe())
                .unwrap_or_else(|| e.target.clone()),
            age_s: age(now_ns, e.opened_ns),
            state: sock.and_then(|s| s.state_name()),
            peer: sock.and_then(|s| s.peer.clone()),
            local: sock.and_then(|s| s.local.clone()),
            state_age_s: sock.and_then(|s| age(now_ns, s.state_since_ns)),
            cloexec: e.cloexec,
        }
    }

    /// A descriptor only /proc knows of.
    fn from_proc(p: &ProcFd) -> Self {
        Self {
            fd: p.fd,
            kind: p.kind.as_str(),
            target: p.target.clone(),
            age_s: None,
            state: None,
            peer: None,
            local: None,
            state_age_s: None,
            cloexec: p.cloexec,
        }
    }
}

/// (protocol, peer, local, state)
type GroupKey = (String, Option<String>, Option<String>, Option<&'static str>);

/// Group a site's sockets by (protocol, peer, state).
fn socket_groups(fds: &[(i32, &OpenFd)], now_ns: u64) -> Vec<SocketGroup> {
    let mut groups: HashMap<GroupKey, SocketGroup> = HashMap::new();
    for (_, e) in fds {
        let Some(s) = &e.sock else { continue };
        // Client sockets are told apart by their peer; accepted ones by where they were accepted
        // and the peer host; the others by their local address.
        let (peer, local) = if s.accepted {
            (s.peer_host(), s.local.clone())
        } else if s.peer.is_some() {
            (s.peer.clone(), None)
        } else {
            (None, s.local.clone())
        };
        let key = (s.proto_name(), peer.clone(), local.clone(), s.state_name());
        let g = groups.entry(key).or_insert_with(|| SocketGroup {
            count: 0,
            proto: s.proto_name(),
            peer,
            local,
            accepted: s.accepted,
            state: s.state_name(),
            oldest_state_age_s: None,
        });
        g.count += 1;
        let a = age(now_ns, s.state_since_ns.or(e.opened_ns));
        g.oldest_state_age_s = match (g.oldest_state_age_s, a) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
    }
    let mut v: Vec<SocketGroup> = groups.into_values().collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.peer.cmp(&b.peer))
            .then_with(|| a.state.cmp(&b.state))
    });
    v
}

#[derive(Debug, Default, Serialize)]
pub struct Drift {
    /// In /proc but not in the model.
    pub missed_opens: Vec<FdEntry>,
    /// In the model but not in /proc.
    pub missed_closes: Vec<FdEntry>,
    /// Open in both, but the model's close-on-exec flag differs from the kernel's.
    pub cloexec_mismatches: Vec<FdEntry>,
}

impl Drift {
    pub fn is_zero(&self) -> bool {
        self.missed_opens.is_empty()
            && self.missed_closes.is_empty()
            && self.cloexec_mismatches.is_empty()
    }
}

fn json_frames(frames: Vec<Frame>) -> Vec<JsonFrame> {
    frames
        .into_iter()
        .map(|f| JsonFrame {
            function: f.function,
            file: f.file,
            line: f.line,
            addr: format!("{:#x}", f.addr),
            module: f.module,
            inlined: f.inlined,
        })
        .collect()
}

fn age(now_ns: u64, opened: Option<u64>) -> Option<f64> {
    opened.map(|t| now_ns.saturating_sub(t) as f64 / 1e9)
}

/// What the session knows about itself, apart from the descriptors.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Meta {
    pub pid: u32,
    /// The traced process that created this one (`-f`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    pub command: Option<String>,
    pub duration_s: f64,
    /// The target exited during the session; the report shows what it held when it exited.
    pub target_exited: bool,
    /// Events the kernel could not hand over (ring buffer full). Non-zero makes counts unsure.
    pub lost_events: u64,
    /// Births whose user stack could not be copied.
    pub stack_errors: u64,
    /// Tracepoints this kernel lacks (those syscalls were not observed).
    pub missing_tracepoints: Vec<String>,
    /// RLIMIT_NOFILE of the process (from /proc/PID/limits) when it was last seen.
    pub rlimit_nofile: Option<crate::procinfo::NofileLimit>,
    /// Its pid namespace pids (`nspid`), cgroup, and container id, runtime and pod UID where the
    /// cgroup path holds them (null when /proc could not be read; absent in older recordings).
    #[serde(default)]
    pub container: Option<crate::container::Container>,
}

/// Build the report from the model as of `now_ns` (monotonic).
/// With `min_age_s` (`--min-age`), the lists (sites, pre-existing, untraced) hold only
/// descriptors at least that old; the counts, the drift check and the time to exhaustion are
/// always of every open descriptor.
#[allow(clippy::too_many_arguments)]
pub fn build(
    meta: Meta,
    table: &FdTable,
    min_age_s: Option<f64>,
    stacks: &mut StackStore,
    symbols: &Symbols,
    now_ns: u64,
    proc_fds: Option<&[ProcFd]>,
    history: Option<&History>,
) -> Report {
    let aged;
    let view = match min_age_s {
        Some(min) => {
            let mut t = table.clone();
            t.retain_older(now_ns, min);
            aged = t;
            &aged
        }
        None => table,
    };
    // Births without a stack (shed under load) share one stack: their site is split by kind.
    type SiteKey = (StackId, Option<FdKind>);
    let mut by_stack: HashMap<SiteKey, Vec<(i32, &crate::model::OpenFd)>> = HashMap::new();
    let shed = |id: StackId| {
        stacks
            .get(id)
            .is_some_and(|s| s.raw.method == crate::unwind::Method::Shed)
    };
    let mut preexisting = Vec::new();
    let mut untraced = Vec::new();
    for (fd, e) in view.iter() {
        match e.origin {
            Origin::Preexisting => preexisting.push(FdEntry::new(fd, e, now_ns)),
            Origin::Untraced => untraced.push(FdEntry::new(fd, e, now_ns)),
            Origin::Stack(id) => by_stack
                .entry((id, shed(id).then_some(e.kind)))
                .or_default()
                .push((fd, e)),
        }
    }
    let mut sites: Vec<Site> = by_stack
        .into_iter()
        .map(|((id, _), fds)| {
            let frames = stacks.frames(id, symbols);
            let truncated = stacks.get(id).map(|s| s.raw.truncated).unwrap_or(true);
            let method = stacks
                .get(id)
                .map(|s| s.raw.method)
                .unwrap_or_default()
                .as_str();
            let user_frame = user_frame(&frames).filter(|_| method != "shed");
            let mut kinds: HashMap<FdKind, usize> = HashMap::new();
            for (_, e) in &fds {
                *kinds.entry(e.kind).or_default() += 1;
            }
            let kind = kinds
                .into_iter()
                .max_by_key(|(k, n)| (*n, std::cmp::Reverse(*k)))
                .map(|(k, _)| k.as_str())
                .unwrap_or("other");
            let oldest = fds
                .iter()
                .filter_map(|(_, e)| age(now_ns, e.opened_ns))
                .reduce(f64::max);
            let trend = history.map(|h| h.site_trend(id, oldest)).unwrap_or(Trend {
                verdict: Verdict::Unknown,
                growth_per_min: None,
            });
            let sockets = socket_groups(&fds, now_ns);
            let hint = sockets
                .iter()
                .any(|g| g.state == Some("CLOSE_WAIT"))
                .then(|| CLOSE_WAIT_HINT.to_string());
            let ages: Vec<f64> = fds
                .iter()
                .filter_map(|(_, e)| age(now_ns, e.opened_ns))
                .collect();
            Site {
                count: fds.len(),
                kind,
                example: fds
                    .last()
                    .map(|(fd, e)| FdEntry::new(*fd, e, now_ns).target)
                    .unwrap_or_default(),
                user_frame,
                truncated,
                method,
                verdict: trend.verdict.as_str(),
                growth_per_min: trend.growth_per_min,
                oldest_age_s: ages.iter().copied().reduce(f64::max),
                newest_age_s: ages.iter().copied().reduce(f64::min),
                frames: json_frames(frames),
                sockets,
                hint,
                fds: fds
                    .iter()
                    .map(|(fd, e)| FdEntry::new(*fd, e, now_ns))
                    .collect(),
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            a.fds
                .first()
                .map(|f| f.fd)
                .cmp(&b.fds.first().map(|f| f.fd))
        })
    });
    let drift = proc_fds.map(|pfds| {
        let mut d = Drift::default();
        for p in pfds {
            match table.get(p.fd) {
                None => d.missed_opens.push(FdEntry::from_proc(p)),
                Some(e) if e.cloexec != p.cloexec => {
                    d.cloexec_mismatches.push(FdEntry::new(p.fd, e, now_ns))
                }
                Some(_) => {}
            }
        }
        // A set of /proc's numbers: a process may hold 100,000 descriptors.
        let in_proc: std::collections::HashSet<i32> = pfds.iter().map(|p| p.fd).collect();
        for (fd, e) in table.iter() {
            if !in_proc.contains(&fd) {
                d.missed_closes.push(FdEntry::new(fd, e, now_ns));
            }
        }
        d
    });
    let mut failed_opens: Vec<FailedSite> = table
        .failures
        .iter()
        .map(|(&id, f)| {
            let frames = stacks.frames(id, symbols);
            FailedSite {
                count: f.count,
                errno: crate::model::failure_name(f.errno),
                example: f.example.clone(),
                user_frame: user_frame(&frames),
                first_age_s: age(now_ns, Some(f.first_ns)),
                last_age_s: age(now_ns, Some(f.last_ns)),
                frames: json_frames(frames),
            }
        })
        .collect();
    failed_opens.sort_by_key(|f| std::cmp::Reverse(f.count));
    let failure_totals = crate::model::COUNTED_FAILURES
        .into_iter()
        .filter_map(|(errno, name)| {
            let (count, with_stack) = table.failure_count(errno);
            let mut by_syscall = BTreeMap::new();
            for (&(sc, e), &n) in &table.failure_totals {
                if e == errno {
                    *by_syscall
                        .entry(crate::model::syscall_name(sc))
                        .or_default() += n;
                }
            }
            (count > 0).then_some(FailureTotal {
                errno: name,
                count,
                with_stack,
                by_syscall,
            })
        })
        .collect();
    let mut tcp_states = BTreeMap::new();
    for (_, e) in table.iter() {
        if let Some(st) = e.sock.as_ref().and_then(|s| s.state_name()) {
            *tcp_states.entry(st).or_default() += 1;
        }
    }
    let growth_per_min = history.and_then(|h| h.total_trend().growth_per_min);
    let exhaustion_eta_s = verdict::exhaustion_eta_s(
        table.len(),
        meta.rlimit_nofile.and_then(|l| l.soft),
        growth_per_min,
    );
    let runtime_hint = runtime_hint(&sites);
    Report {
        runtime_hint,
        growth_per_min,
        exhaustion_eta_s,
        preexisting_groups: crate::preexisting::group(&preexisting, &sites),
        meta,
        open_count: table.len(),
        shown: min_age_s.map(|min_age_s| Shown {
            min_age_s,
            count: view.len(),
        }),
        sites,
        preexisting,
        untraced,
        drift,
        model: table.stats,
        failed_opens,
        failure_totals,
        tcp_states,
        processes: Vec::new(),
        recording: None,
        live_updates_dropped: None,
        stray_events: None,
    }
}

/// A site in a language runtime's native code (`node`, `java`, `python3.11`) without one of the
/// program's frames, whose stack holds code the runtime did not name: how to have it named.
/// Node: unnamed JIT code or V8's interpreter trampoline (a socket the event loop accepted has
/// no JavaScript on its stack, and no hint); Python: no Python frame read; Java: any such site
/// (its stack was cut at compiled code without frame pointers, or its methods were interpreted).
fn runtime_hint(sites: &[Site]) -> Option<&'static str> {
    use crate::runtime::{JIT_MODULE, Runtime, of_module};
    sites
        .iter()
        .filter(|s| s.user_frame.is_none())
        .find_map(|s| {
            let runtime = s
                .frames
                .iter()
                .find_map(|f| of_module(f.module.as_deref()?))?;
            let unnamed_js = s.frames.iter().any(|f| {
                f.module.as_deref() != Some(JIT_MODULE)
                    && (f.function.is_none() && f.module.is_none()
                        || f.function
                            .as_deref()
                            .is_some_and(|n| n.contains("InterpreterEntryTrampoline")))
            });
            let named_by =
                |module: &str| s.frames.iter().any(|f| f.module.as_deref() == Some(module));
            let python_named = named_by(crate::python_code::PY_MODULE);
            match runtime {
                Runtime::Node => unnamed_js.then_some(runtime),
                Runtime::Python => (!python_named).then_some(runtime),
                // Java frames not read from the JVM: only the perf map names them, and without
                // frame pointers the stack ends at the first compiled frame. (Named frames and
                // no program frame: the JDK's own code opened it.)
                Runtime::Java => (!named_by(crate::runtime::JAVA_MODULE)).then_some(runtime),
            }
        })
        .map(|r| r.naming_hint())
}

fn short_path(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

pub fn fmt_age(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// A symbolized frame as the text report prints it.
pub fn frame_text_of(f: &Frame) -> String {
    frame_text(&JsonFrame {
        function: f.function.clone(),
        file: f.file.clone(),
        line: f.line,
        addr: format!("{:#x}", f.addr),
        module: f.module.clone(),
        inlined: f.inlined,
    })
}

fn frame_text(f: &JsonFrame) -> String {
    let func = f.function.as_deref().unwrap_or("??");
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{func} at {}:{line}", file),
        (Some(file), None) => format!("{func} at {file}"),
        _ => match &f.module {
            Some(m) => format!("{func} ({})", short_path(m)),
            // A marker frame (`[stack dropped under load]`): no code behind it.
            None if f.addr == "0x0" => func.to_string(),
            None => format!("{func} [{}]", f.addr),
        },
    }
}

/// "37 tcp sockets to 127.0.0.1:8081 in CLOSE_WAIT, oldest 5m12s".
fn socket_group_text(g: &SocketGroup) -> String {
    let noun = if g.count == 1 { "socket" } else { "sockets" };
    let mut t = format!("{} {} {noun}", g.count, g.proto);
    match (g.state, &g.peer, &g.local) {
        (Some("LISTEN"), _, Some(l)) => t += &format!(" listening on {l}"),
        (_, p, Some(l)) if g.accepted => {
            t += &format!(" accepted on {l}");
            if let Some(p) = p {
                t += &format!(" from {p}");
            }
        }
        (_, Some(p), _) => t += &format!(" to {p}"),
        (_, None, Some(l)) => t += &format!(" on {l}"),
        _ => {}
    }
    if let Some(st) = g.state
        && st != "LISTEN"
    {
        t += &format!(" in {st}");
    }
    if let Some(a) = g.oldest_state_age_s {
        t += &format!(", oldest {}", fmt_age(a));
    }
    t
}

/// Who opened a site's descriptors: its first frame of the program's own code; a complete stack
/// without one (Go's net/http dials in a goroutine of its own) is said to be library code, only
/// a stack cut short or missing is unknown.
fn site_origin_text(site: &Site) -> String {
    if site.method == crate::unwind::Method::Shed.as_str() {
        return format!(
            "{} (fdtrace's ring buffer was half full: the births arrived, their stacks did not)",
            crate::stacks::STACK_DROPPED
        );
    }
    match site.user_frame.and_then(|i| site.frames.get(i)) {
        Some(f) => frame_text(f),
        None if !site.truncated && !site.frames.is_empty() => {
            "library code only (no frame of the program's own code)".into()
        }
        None => "an unknown call site".into(),
    }
}

/// The report for people.
pub fn render_text(r: &Report) -> String {
    render_text_all(r, false)
}

/// [`render_text`]; `all`: every pre-existing descriptor too, not only their groups.
pub fn render_text_all(r: &Report, all: bool) -> String {
    let mut s = String::new();
    if let Some(rec) = &r.recording {
        let _ = writeln!(
            s,
            "recording {} (host {}, kernel {}){}",
            rec.file,
            rec.hostname,
            rec.kernel_release,
            match rec.at_s {
                Some(at) => format!(", as of {at:.1}s into it"),
                None => String::new(),
            }
        );
        if let Some(cut) = &rec.cut_short {
            let _ = writeln!(s, "WARNING: {cut}; everything before it is reported");
        }
    }
    let name = r.meta.command.as_deref().unwrap_or("?");
    let leaked: usize = r.sites.iter().map(|x| x.count).sum();
    let contained = r
        .meta
        .container
        .as_ref()
        .filter(|c| c.is_contained())
        .map(|c| format!("\nin {}", c.describe()))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "fdtrace: pid {} ({name}), traced for {:.1}s{}{contained}",
        r.meta.pid,
        r.meta.duration_s,
        if r.meta.target_exited && r.meta.parent.is_some() {
            "; exited: this is what it held at exit"
        } else if r.meta.target_exited {
            "; the process exited: this is what it held at exit"
        } else {
            ""
        }
    );
    if let Some(sh) = &r.shown {
        let _ = writeln!(
            s,
            "{} descriptors open; shown: the {} at least {} old or of unknown age (--min-age)",
            r.open_count,
            sh.count,
            fmt_age(sh.min_age_s)
        );
    }
    let _ = writeln!(
        s,
        "{} descriptors {}: {} opened while traced, from {} call site{}; {} pre-existing",
        r.shown.as_ref().map_or(r.open_count, |sh| sh.count),
        if r.shown.is_some() { "shown" } else { "open" },
        leaked,
        r.sites.len(),
        if r.sites.len() == 1 { "" } else { "s" },
        r.preexisting.len()
    );
    let _ = writeln!(
        s,
        "lost events: {}{}",
        r.meta.lost_events,
        if r.meta.lost_events > 0 {
            " (WARNING: counts below may be wrong)"
        } else {
            ""
        }
    );
    if r.model.stacks_dropped > 0 {
        let _ = writeln!(
            s,
            "stacks dropped under load: {} births arrived without their stacks (fdtrace's ring \
             buffer was half full); their descriptors still open are under \"{}\"",
            r.model.stacks_dropped,
            crate::stacks::STACK_DROPPED
        );
    }
    if let Some(n) = r.live_updates_dropped.filter(|&n| n > 0) {
        let _ = writeln!(
            s,
            "live view: {n} updates dropped (stderr was not being read; tracing went on)"
        );
    }
    if let Some(hint) = r.runtime_hint {
        let _ = writeln!(s, "{hint}");
    }
    if r.meta.stack_errors > 0 {
        let _ = writeln!(
            s,
            "stacks that could not be captured: {}",
            r.meta.stack_errors
        );
    }
    if let (Some(eta), Some(limit)) = (
        r.exhaustion_eta_s,
        r.meta.rlimit_nofile.and_then(|l| l.soft),
    ) {
        let _ = writeln!(
            s,
            "at this rate ({:+.1}/min) pid {} hits its limit of {limit} open files in about {}",
            r.growth_per_min.unwrap_or(0.0),
            r.meta.pid,
            fmt_age(eta)
        );
    }
    if !r.tcp_states.is_empty() {
        let by_state: Vec<String> = r
            .tcp_states
            .iter()
            .map(|(st, n)| format!("{n} {st}"))
            .collect();
        let _ = writeln!(s, "TCP sockets: {}", by_state.join(", "));
    }
    if let Some(d) = &r.drift {
        if d.is_zero() {
            let _ = writeln!(s, "checked against /proc/{}/fd: no drift", r.meta.pid);
        } else {
            let _ = writeln!(
                s,
                "drift against /proc/{}/fd: {} descriptors the model missed, {} closes it missed, {} close-on-exec flags it got wrong",
                r.meta.pid,
                d.missed_opens.len(),
                d.missed_closes.len(),
                d.cloexec_mismatches.len()
            );
        }
    }
    for t in &r.failure_totals {
        if t.count > t.with_stack {
            let per: Vec<String> = t
                .by_syscall
                .iter()
                .map(|(sc, n)| format!("{n} {sc}"))
                .collect();
            let _ = writeln!(
                s,
                "\n{} births failed with {} (too many open files) in all, counted in the kernel{}; \
                 the call sites below are from the {} sent with their stacks (at most {} per CPU \
                 every {} ms)",
                t.count,
                t.errno,
                if per.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", per.join(", "))
                },
                t.with_stack,
                fdtrace_common::FAIL_SAMPLES_PER_WINDOW,
                fdtrace_common::FAIL_SAMPLE_WINDOW_NS / 1_000_000
            );
        }
    }
    for f in &r.failed_opens {
        let at = f
            .user_frame
            .and_then(|i| f.frames.get(i))
            .map(frame_text)
            .unwrap_or_else(|| "an unknown call site".into());
        let limit = match r.meta.rlimit_nofile.and_then(|l| l.soft) {
            Some(soft) if f.errno == "EMFILE" => {
                format!(" (limit {soft} open files, {} open now)", r.open_count)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "\n{} {} failed with {} (too many open files){limit}, at {at}; last {} ago",
            f.count,
            if f.count == 1 { "birth" } else { "births" },
            f.errno,
            f.last_age_s.map(fmt_age).unwrap_or_default()
        );
        for (i, fr) in f.frames.iter().enumerate() {
            let mark = if Some(i) == f.user_frame { "->" } else { "  " };
            let _ = writeln!(s, "  {mark} #{i:<2} {}", frame_text(fr));
        }
    }
    for site in &r.sites {
        let _ = writeln!(s);
        let at = site_origin_text(site);
        let ages = match (site.newest_age_s, site.oldest_age_s) {
            (Some(a), Some(b)) if site.count > 1 => format!("ages {}..{}", fmt_age(a), fmt_age(b)),
            (Some(a), _) => format!("age {}", fmt_age(a)),
            _ => String::new(),
        };
        let trend = match (site.verdict, site.growth_per_min) {
            ("leaking", Some(g)) => format!(": LEAKING, {g:+.1}/min"),
            ("held", _) => ": held (steady)".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{} {} still open, opened by {at}{trend}",
            site.count,
            if site.count == 1 {
                site.kind.to_string()
            } else {
                format!("{}s", site.kind)
            }
        );
        let _ = writeln!(
            s,
            "    {ages}; e.g. {}; {}",
            site.example,
            match site.method {
                "fp" => "unwound with frame pointers (fp)",
                "shed" => "no stack (shed)",
                _ => "unwound with DWARF CFI (dwarf)",
            }
        );
        for g in &site.sockets {
            let _ = writeln!(s, "    {}", socket_group_text(g));
        }
        if let Some(h) = &site.hint {
            let _ = writeln!(s, "    hint: {h}");
        }
        let shed = site.method == crate::unwind::Method::Shed.as_str();
        for (i, f) in site.frames.iter().enumerate().filter(|_| !shed) {
            let mark = if Some(i) == site.user_frame {
                "->"
            } else {
                "  "
            };
            let _ = writeln!(s, "  {mark} #{i:<2} {}", frame_text(f));
        }
        if site.truncated {
            let _ = writeln!(s, "     (stack cut short)");
        }
    }
    if r.model.drift_opens + r.model.drift_closes > 0 {
        let _ = writeln!(
            s,
            "\ncorrected during the session (checked against /proc): {} descriptors opened without a traced birth, {} closed without a traced close",
            r.model.drift_opens, r.model.drift_closes
        );
        for p in &r.untraced {
            let _ = writeln!(s, "  fd {:<4} {:<8} {}", p.fd, p.kind, p.target);
        }
    }
    crate::preexisting::render(
        &mut s,
        &r.preexisting_groups,
        &r.preexisting,
        &r.sites,
        site_origin_text,
        all,
    );
    for child in &r.processes {
        let _ = match child.meta.parent {
            Some(parent) => writeln!(
                s,
                "\n==== child pid {} (of pid {parent}) ====",
                child.meta.pid
            ),
            // Another process of the traced cgroup.
            None => writeln!(s, "\n==== pid {} ====", child.meta.pid),
        };
        s += &render_text_all(child, all);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, file: Option<&str>, module: &str) -> Frame {
        Frame {
            function: function.map(String::from),
            file: file.map(String::from),
            line: file.map(|_| 10),
            addr: 0x1000,
            module: Some(module.to_string()),
            inlined: false,
        }
    }

    const GOROOT: &str = "/usr/lib/go-1.19";

    fn go(function: &str, file: &str) -> Frame {
        frame(Some(function), Some(file), "/tmp/goleak")
    }

    #[test]
    fn go_package_of_symbols() {
        assert_eq!(go_package("main.leakCreate"), Some("main"));
        assert_eq!(go_package("main.main.func1"), Some("main"));
        assert_eq!(go_package("os.OpenFile"), Some("os"));
        assert_eq!(go_package("net/http.(*Server).Serve"), Some("net/http"));
        assert_eq!(
            go_package("runtime/internal/syscall.Syscall6"),
            Some("runtime/internal/syscall")
        );
        assert_eq!(
            go_package("github.com/lib/pq.(*conn).Close"),
            Some("github.com/lib/pq")
        );
        assert_eq!(
            go_package("myapp/internal/db.Open"),
            Some("myapp/internal/db")
        );
        assert_eq!(
            go_package("sync/atomic.(*Pointer[net/http.conn]).Load"),
            Some("sync/atomic")
        );
        assert_eq!(go_package("main.Map[go.shape.string_0]"), Some("main"));
        // C and Rust names are not Go symbols.
        assert_eq!(go_package("__libc_open64"), None);
        assert_eq!(go_package("std::fs::File::open"), None);
        assert_eq!(go_package("<std::fs::File>::open"), None);
    }

    #[test]
    fn go_standard_library_and_runtime_are_library_frames() {
        for (func, file) in [
            (
                "runtime/internal/syscall.Syscall6",
                "src/runtime/internal/syscall/asm_linux_amd64.s",
            ),
            ("syscall.Syscall6", "src/syscall/syscall_linux.go"),
            ("syscall.openat", "src/syscall/zsyscall_linux_amd64.go"),
            ("os.openFileNolog", "src/os/file_unix.go"),
            ("os.OpenFile", "src/os/file.go"),
            ("os.Create", "src/os/file.go"),
            ("internal/poll.(*FD).Init", "src/internal/poll/fd_unix.go"),
            ("sync.(*Once).doSlow", "src/sync/once.go"),
            ("net.(*sysDialer).dialSingle", "src/net/dial.go"),
            ("net/http.(*conn).serve", "src/net/http/server.go"),
            ("crypto/tls.(*Conn).Handshake", "src/crypto/tls/conn.go"),
            ("bufio.(*Reader).Read", "src/bufio/bufio.go"),
            ("io.ReadAll", "src/io/io.go"),
            ("runtime.goexit", "src/runtime/asm_amd64.s"),
            (
                "vendor/golang.org/x/net/dns/dnsmessage.(*Parser).Start",
                "src/vendor/golang.org/x/net/dns/dnsmessage/message.go",
            ),
        ] {
            let f = go(func, &format!("{GOROOT}/{file}"));
            assert!(is_library_frame(&f), "{func} by its name");
            assert!(
                is_library_frame_in(&f, &[GOROOT.into()]),
                "{func} in GOROOT"
            );
        }
        // Built with -trimpath: only the names tell.
        assert!(is_library_frame(&go("os.Open", "os/file.go")));
        // A GOROOT file of a package this list does not know is still library.
        let new_pkg = go("newstdpkg.F", &format!("{GOROOT}/src/newstdpkg/f.go"));
        assert!(!is_library_frame(&new_pkg));
        assert!(is_library_frame_in(&new_pkg, &[GOROOT.into()]));
        // Compiler-generated helpers.
        assert!(is_library_frame(&go("type:.eq.os.File", "<autogenerated>")));
        assert!(is_library_frame(&go("type..eq.os.File", "<autogenerated>")));
        assert!(is_library_frame(&go(
            "net/http.(*onceCloseListener).Accept",
            "./<autogenerated>"
        )));
    }

    #[test]
    fn go_user_code_is_not_library() {
        let roots = [GOROOT.to_string()];
        for (func, file) in [
            (
                "main.leakCreate",
                "/work/fdtrace/tests/programs/goleak/main.go",
            ),
            ("main.main.func1", "/home/u/srv/main.go"),
            (
                "github.com/lib/pq.(*conn).query",
                "/root/go/pkg/mod/github.com/lib/pq@v1.10.9/conn.go",
            ),
            ("myapp/internal/db.Open", "/src/myapp/internal/db/db.go"),
        ] {
            let f = go(func, file);
            assert!(!is_library_frame(&f), "{func}");
            assert!(!is_library_frame_in(&f, &roots), "{func}");
        }
    }

    #[test]
    fn goroots_come_from_the_runtime_frames() {
        let frames = [
            go("os.OpenFile", "/usr/lib/go-1.19/src/os/file.go"),
            go("main.leakOpen", "/w/goleak/main.go"),
            go("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go"),
            go("runtime.goexit", "/usr/lib/go-1.19/src/runtime/asm_amd64.s"),
            go("os.Open", "/usr/local/go/src/os/file.go"),
        ];
        assert_eq!(goroots(&frames), vec!["/usr/lib/go-1.19", "/usr/local/go"]);
        assert_eq!(user_frame(&frames), Some(1));
    }

    #[test]
    fn go_user_frame_of_a_whole_stack() {
        let frames = [
            go(
                "runtime/internal/syscall.Syscall6",
                "/usr/lib/go-1.19/src/runtime/internal/syscall/asm_linux_amd64.s",
            ),
            go(
                "syscall.Syscall6",
                "/usr/lib/go-1.19/src/syscall/syscall_linux.go",
            ),
            go("os.Create", "/usr/lib/go-1.19/src/os/file.go"),
            go("main.leakCreate", "/w/goleak/main.go"),
            go("main.main", "/w/goleak/main.go"),
            go("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go"),
        ];
        assert_eq!(user_frame(&frames), Some(3));
        // The runtime's own descriptors (netpoll's epoll) have the caller's frame as user frame.
        let frames = [
            go(
                "runtime.epollcreate1",
                "/usr/lib/go-1.19/src/runtime/sys_linux_amd64.s",
            ),
            go("sync.(*Once).doSlow", "/usr/lib/go-1.19/src/sync/once.go"),
            go(
                "internal/poll.(*FD).Init",
                "/usr/lib/go-1.19/src/internal/poll/fd_unix.go",
            ),
            go("os.newFile", "/usr/lib/go-1.19/src/os/file_unix.go"),
            go("main.leakCreate", "/w/goleak/main.go"),
        ];
        assert_eq!(user_frame(&frames), Some(4));
    }

    #[test]
    fn a_static_binary_s_own_line_comes_before_its_c_library() {
        // musl linked in: its functions are named, without lines.
        let frames = [
            frame(Some("__syscall_cp_c"), None, "/app/leak"),
            frame(Some("open64"), None, "/app/leak"),
            frame(Some("main"), Some("/src/leak.c"), "/app/leak"),
            frame(Some("libc_start_main_stage2"), None, "/app/leak"),
        ];
        assert_eq!(user_frame(&frames), Some(2));
        // Without lines anywhere (a stripped program), the first of its own frames.
        let stripped = [
            frame(Some("open"), None, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame(Some("load_config"), None, "/app/server"),
            frame(Some("main"), None, "/app/server"),
        ];
        assert_eq!(user_frame(&stripped), Some(1));
    }

    #[test]
    fn origin_of_a_site_without_a_user_frame() {
        let jf = |function: &str| JsonFrame {
            function: Some(function.into()),
            file: Some(format!("/usr/lib/go-1.19/src/{function}.go")),
            line: Some(7),
            addr: "0x1000".into(),
            module: Some("/tmp/gosvc".into()),
            inlined: false,
        };
        let mut site = Site {
            count: 30,
            kind: "socket",
            example: String::new(),
            user_frame: None,
            truncated: false,
            method: "fp",
            verdict: "unknown",
            growth_per_min: None,
            oldest_age_s: None,
            newest_age_s: None,
            frames: vec![jf("net/http.(*Transport).dialConn"), jf("runtime.goexit")],
            sockets: Vec::new(),
            hint: None,
            fds: Vec::new(),
        };
        // net/http's own dialing goroutine: the whole stack, none of it the program's.
        assert_eq!(
            site_origin_text(&site),
            "library code only (no frame of the program's own code)"
        );
        site.truncated = true;
        assert_eq!(site_origin_text(&site), "an unknown call site");
        site.truncated = false;
        site.frames.clear();
        assert_eq!(site_origin_text(&site), "an unknown call site");
        site.frames = vec![jf("main.upload")];
        site.user_frame = Some(0);
        assert_eq!(
            site_origin_text(&site),
            "main.upload at /usr/lib/go-1.19/src/main.upload.go:7"
        );
    }

    const RUSTC: &str = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860";

    fn rust(function: &str, file: &str) -> Frame {
        frame(Some(function), Some(file), "/tmp/rustleak")
    }

    #[test]
    fn rust_std_core_alloc_are_library_frames() {
        for (func, file) in [
            ("<std::sys::fs::unix::File>::open_c", format!("{RUSTC}/library/std/src/sys/fs/unix.rs")),
            (
                "std::sys::helpers::small_c_string::run_with_cstr_stack::<std::sys::fs::unix::File>",
                format!("{RUSTC}/library/std/src/sys/helpers/small_c_string.rs"),
            ),
            ("std::fs::File::create", format!("{RUSTC}/library/std/src/fs.rs")),
            ("core::ops::function::FnOnce::call_once", format!("{RUSTC}/library/core/src/ops/function.rs")),
            ("<alloc::vec::Vec<u8>>::push", format!("{RUSTC}/library/alloc/src/vec/mod.rs")),
            // Not remapped: the toolchain's rust-src, or paths relative to the Rust tree.
            (
                "std::fs::File::open",
                "/root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/fs.rs".into(),
            ),
            ("std::fs::File::open", "library/std/src/fs.rs".into()),
        ] {
            assert!(is_library_frame(&rust(func, &file)), "{func} at {file}");
        }
        // Without line information, by the symbol.
        for func in [
            "std::fs::OpenOptions::_open",
            "<std::fs::OpenOptions>::_open",
            "<&dyn core::ops::function::Fn<(), Output = i32> as core::ops::function::FnOnce<()>>::call_once",
            "<alloc::boxed::Box<dyn FnOnce()>>::call_once",
        ] {
            assert!(
                is_library_frame(&frame(Some(func), None, "/tmp/x")),
                "{func}"
            );
        }
    }

    #[test]
    fn rust_user_code_and_dependencies_are_not_library() {
        for (func, file) in [
            (
                "rustleak::leak_file",
                "/work/fdtrace/tests/programs/rustleak.rs",
            ),
            (
                "rustleak::main::{closure#0}",
                "/work/fdtrace/tests/programs/rustleak.rs",
            ),
            ("<myapp::Store>::open", "/home/u/myapp/src/store.rs"),
            // A crate of the program's own named `library`.
            ("library::load", "library/src/lib.rs"),
            (
                "tokio::fs::File::open",
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.40.0/src/fs/file.rs",
            ),
        ] {
            assert!(!is_library_frame(&rust(func, file)), "{func} at {file}");
        }
        // The inlined std frame inside the user's function is library; the user's is not.
        let frames = [
            frame(
                Some("__libc_open64"),
                Some("./io/../sysdeps/unix/sysv/linux/open64.c"),
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            rust(
                "std::fs::File::create",
                &format!("{RUSTC}/library/std/src/fs.rs"),
            ),
            rust("rustleak::leak_file", "/w/rustleak.rs"),
        ];
        assert_eq!(user_frame(&frames), Some(2));
    }

    #[test]
    fn system_libraries_and_unknown_frames() {
        let libc = frame(
            Some("__libc_open64"),
            Some("./io/../sysdeps/unix/sysv/linux/open64.c"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        );
        assert!(is_library_frame(&libc));
        assert!(is_library_frame(&frame(None, None, "/tmp/prog")));
        // A program installed under /usr/lib is not a library.
        let postgres = frame(
            Some("BasicOpenFile"),
            Some("fd.c"),
            "/usr/lib/postgresql/15/bin/postgres",
        );
        assert!(!is_library_frame(&postgres));
        // C functions split by the compiler keep their name's program.
        let c = frame(Some("save_image.part.0"), Some("/w/imgsrv.c"), "/w/imgsrv");
        assert!(!is_library_frame(&c));
        let c = frame(Some("sort.part.0"), Some("/w/sort.c"), "/w/sorter");
        assert!(!is_library_frame(&c));
    }
}
