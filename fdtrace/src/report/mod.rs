//! The report: still-open descriptors grouped by the call site that created them. This file
//! is its shape (the JSON schema, with serde); `build.rs` makes it from a descriptor table,
//! live or replayed; `text.rs` renders it for people.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::TableStats;

mod build;
mod text;

pub use build::build;
pub use text::{fmt_age, render_text, render_text_all};

/// The report of the whole session: the root process's, with the others' in `processes`.
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

impl Report {
    /// One report of every process (`reports`, each built by [`build`]): `root`'s, with the
    /// others as its `processes`; None without `root`.
    pub fn of_root(mut reports: Vec<Report>, root: u32) -> Option<Report> {
        let i = reports.iter().position(|r| r.meta.pid == root)?;
        let mut report = reports.remove(i);
        report.processes = reports;
        Some(report)
    }
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
    pub verdict: crate::verdict::Verdict,
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

/// (protocol, peer, local, state)
type GroupKey = (String, Option<String>, Option<String>, Option<&'static str>);

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
