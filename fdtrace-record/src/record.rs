//! The data a recording holds: the [`Header`] and the stream of [`Record`]s.
//!
//! Every type here owns its data and derives serde's `Serialize`/`Deserialize`, so a report can
//! also dump a recording as JSON. The serde derive is *not* the on-disk encoding: that is the
//! explicit, versioned codec described in `docs/FORMAT.md` (implemented in `src/codec.rs`).
//!
//! Timestamps (`ts_ns`) are absolute values of CLOCK_MONOTONIC in nanoseconds, the clock of
//! `bpf_ktime_get_ns()`. [`Header::start_monotonic_ns`] and [`Header::start_unix_ns`] relate them
//! to wall-clock time. Paths and other strings are UTF-8: the recorder converts non-UTF-8 bytes
//! lossily before writing.

pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Information about the whole recording, stored once at the start of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Version of the fdtrace that made the recording (e.g. `"0.1.0"`).
    pub fdtrace_version: String,
    /// Host name of the traced machine.
    pub hostname: String,
    /// Kernel release of the traced machine (`uname -r`).
    pub kernel_release: String,
    /// Wall-clock time when the recording started, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// CLOCK_MONOTONIC (the clock of every record's `ts_ns`) at the instant `start_unix_ns`
    /// was taken: `unix_ns(ts) = start_unix_ns + (ts - start_monotonic_ns)`.
    pub start_monotonic_ns: u64,
    /// The command line of the recorder (`fdtrace record ...`), one argument per element.
    pub recorder_cmdline: Vec<String>,
    /// What was traced, for humans (e.g. `"pid 1234 (imgsrv)"` or `"./server --port 80"`).
    pub target: String,
}

/// One frame of a symbolized stack ([`Record::Symbols`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymFrame {
    /// Absolute address of the frame (the same value as in the [`Record::Stack`]).
    pub addr: u64,
    /// Function name (demangled), when known.
    pub function: Option<String>,
    /// Source file, when known.
    pub file: Option<String>,
    /// Source line, when known.
    pub line: Option<u32>,
    /// The binary or library the address belongs to.
    pub module: Option<String>,
    /// This frame was inlined into the next one (several `SymFrame`s can share one `addr`).
    pub inlined: bool,
}

/// A process's RLIMIT_NOFILE ([`Record::ProcessEnd`]); None for "unlimited".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NofileLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Where a process lives ([`Record::ProcessEnd`]): its cgroup, and the container it names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The cgroup v2 path.
    pub cgroup: Option<String>,
    /// The container id found in that path.
    pub id: Option<String>,
    /// The container runtime the path names (`docker`, `containerd`, …).
    pub runtime: Option<String>,
    /// The Kubernetes pod UID, for a pod's container.
    pub pod_uid: Option<String>,
    /// The process's pid in each pid namespace, the host's first (`NSpid`).
    pub nspid: Vec<u32>,
}

/// One entry of `/proc/PID/fd` ([`Record::ProcFds`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcFd {
    pub fd: i32,
    /// The tracer's kind code, as in [`Record::Open`].
    pub kind: u8,
    pub cloexec: bool,
    /// How long before the record the descriptor was created, where the kernel keeps it.
    pub age_ns: Option<u64>,
    pub target: String,
}

/// One event or fact of a recording.
///
/// The kind-like `u8` fields (`kind`, `syscall`, `method`, `state`) carry the tracer's own codes
/// unchanged; this crate stores them without interpreting them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A process seen during the recording.
    Process {
        tgid: u32,
        /// Parent tgid, when known.
        parent: Option<u32>,
        /// `/proc/PID/comm`.
        comm: String,
        /// `/proc/PID/cmdline`, one argument per element.
        cmdline: Vec<String>,
    },
    /// An executable mapping of a process: what offline symbolization needs.
    Mapping {
        tgid: u32,
        /// First address of the mapping.
        start: u64,
        /// One past the last address.
        end: u64,
        /// File offset that `start` maps.
        offset: u64,
        /// Path of the mapped file.
        path: String,
        /// GNU build id of the file, when it has one.
        build_id: Option<Vec<u8>>,
    },
    /// A user-space stack, referenced by id from [`Record::Open`] and [`Record::Symbols`].
    Stack {
        id: u32,
        /// Absolute instruction addresses, innermost first.
        frames: Vec<u64>,
        /// Unwinding stopped before the outermost frame.
        truncated: bool,
        /// How the stack was unwound (tracer's code).
        method: u8,
    },
    /// The symbols of a stack, resolved when recording ended so reports work without binaries.
    Symbols {
        stack_id: u32,
        frames: Vec<SymFrame>,
    },
    /// A syscall returned a new descriptor.
    Open {
        ts_ns: u64,
        tgid: u32,
        tid: u32,
        fd: i32,
        /// Descriptor kind (file, socket, pipe, ...; tracer's code).
        kind: u8,
        /// The syscall that created it (tracer's code).
        syscall: u8,
        /// Created with close-on-exec.
        cloexec: bool,
        /// The [`Record::Stack`] that created it, when one was captured.
        stack: Option<u32>,
        /// Path or description of what the descriptor refers to (kept inline, without an
        /// allocation, up to 24 bytes: most paths and every fixed description).
        target: CompactString,
    },
    /// A thread entered `close(fd)`.
    Close {
        ts_ns: u64,
        tgid: u32,
        tid: u32,
        fd: i32,
    },
    /// `close_range(first, last, flags)`.
    CloseRange {
        ts_ns: u64,
        tgid: u32,
        first: u32,
        last: u32,
        /// `CLOSE_RANGE_CLOEXEC`: the range was marked close-on-exec instead of closed.
        cloexec_only: bool,
    },
    /// The close-on-exec flag of a descriptor changed.
    SetCloexec {
        ts_ns: u64,
        tgid: u32,
        fd: i32,
        on: bool,
    },
    /// A process or thread was created.
    Fork {
        ts_ns: u64,
        parent: u32,
        child: u32,
        /// The child shares the parent's descriptor table (`CLONE_FILES`).
        shares_table: bool,
    },
    /// The process replaced its image: close-on-exec descriptors are gone.
    Exec { ts_ns: u64, tgid: u32 },
    /// The process exited.
    Exit { ts_ns: u64, tgid: u32 },
    /// What is known of a socket descriptor changed (addresses, TCP state): the whole
    /// description, so a reader needs only the last one.
    SockState {
        ts_ns: u64,
        tgid: u32,
        fd: i32,
        /// TCP state (the kernel's TCP_* numbering), 0 when none.
        state: u8,
        local: Option<String>,
        peer: Option<String>,
        /// AF_*, SOCK_* and IPPROTO_* numbers.
        family: u16,
        sk_type: u16,
        protocol: u16,
        /// Came from accept (the server side of a connection).
        accepted: bool,
        /// When the socket entered `state` (CLOCK_MONOTONIC ns).
        since_ns: Option<u64>,
    },
    /// A fact as JSON. Format 1.0 and 1.1 kept failed births, reconciliations' corrections and
    /// what was known at the end so (see the typed records of 1.2); no longer written.
    Extra {
        ts_ns: u64,
        tgid: u32,
        /// What the JSON describes, e.g. `"failed_open"`.
        name: String,
        json: String,
    },
    /// A birth that failed (EMFILE, ENFILE, …) at a call site. Format 1.2 (in 1.1, an `Extra`
    /// named `failed_open`).
    FailedOpen {
        ts_ns: u64,
        tgid: u32,
        /// The call site: a [`Record::Stack`] id.
        stack: u32,
        /// The positive errno.
        errno: i32,
        /// The path it asked for, or the syscall's name.
        example: String,
    },
    /// The kernel's count so far of one process's failed births of one syscall with one errno
    /// (every failure, attributed to a call site or not). Format 1.2 (1.1: `failure_total`).
    FailureTotal {
        ts_ns: u64,
        tgid: u32,
        syscall: u32,
        errno: i32,
        count: u64,
    },
    /// A descriptor a reconciliation with `/proc/PID/fd` found open that no traced birth made.
    /// Format 1.2 (1.1: `untraced`).
    Untraced {
        ts_ns: u64,
        tgid: u32,
        fd: i32,
        kind: u8,
        cloexec: bool,
        target: String,
    },
    /// A descriptor a reconciliation found closed with no traced close. Format 1.2 (1.1:
    /// `drift_close`).
    DriftClose { ts_ns: u64, tgid: u32, fd: i32 },
    /// What the tracer knew of a process when the recording ended. Format 1.2 (1.1: `meta`).
    ProcessEnd {
        ts_ns: u64,
        tgid: u32,
        /// The traced process that created it, when followed.
        parent: Option<u32>,
        command: Option<String>,
        /// Seconds the tracer ran.
        duration_s: f64,
        /// It exited during the recording.
        target_exited: bool,
        lost_events: u64,
        /// Births whose stack could not be copied.
        stack_errors: u64,
        /// Hooks the kernel lacked.
        missing_tracepoints: Vec<String>,
        /// None when its limits could not be read.
        nofile: Option<NofileLimit>,
        /// None when its cgroup could not be read (boxed: rare and large).
        container: Option<Box<Container>>,
    },
    /// `/proc/PID/fd` when the recording ended: the ground truth of the drift check. Format
    /// 1.2 (1.1: `proc_fds`).
    ProcFds {
        ts_ns: u64,
        tgid: u32,
        fds: Vec<ProcFd>,
    },
    /// A descriptor that was already open when tracing started.
    Preexisting {
        tgid: u32,
        fd: i32,
        kind: u8,
        cloexec: bool,
        target: String,
        /// Monotonic time the descriptor was created, where the kernel keeps it (a pipe's inode
        /// is created with it). Format 1.1; absent in 1.0 files.
        born_ns: Option<u64>,
    },
    /// The kernel dropped `count` events (ring buffer full).
    Lost { ts_ns: u64, count: u64 },
    /// The recording ended normally.
    End {
        ts_ns: u64,
        /// Why (e.g. `"SIGINT"`, `"duration reached"`, `"target exited"`).
        reason: String,
    },
}

impl Record {
    /// The record's timestamp, for the records that have one.
    pub fn ts_ns(&self) -> Option<u64> {
        match *self {
            Record::Open { ts_ns, .. }
            | Record::Close { ts_ns, .. }
            | Record::CloseRange { ts_ns, .. }
            | Record::SetCloexec { ts_ns, .. }
            | Record::Fork { ts_ns, .. }
            | Record::Exec { ts_ns, .. }
            | Record::Exit { ts_ns, .. }
            | Record::SockState { ts_ns, .. }
            | Record::Extra { ts_ns, .. }
            | Record::FailedOpen { ts_ns, .. }
            | Record::FailureTotal { ts_ns, .. }
            | Record::Untraced { ts_ns, .. }
            | Record::DriftClose { ts_ns, .. }
            | Record::ProcessEnd { ts_ns, .. }
            | Record::ProcFds { ts_ns, .. }
            | Record::Lost { ts_ns, .. }
            | Record::End { ts_ns, .. } => Some(ts_ns),
            Record::Process { .. }
            | Record::Mapping { .. }
            | Record::Stack { .. }
            | Record::Symbols { .. }
            | Record::Preexisting { .. } => None,
        }
    }

    /// The variant's name, e.g. `"Open"`.
    pub fn name(&self) -> &'static str {
        match self {
            Record::Process { .. } => "Process",
            Record::Mapping { .. } => "Mapping",
            Record::Stack { .. } => "Stack",
            Record::Symbols { .. } => "Symbols",
            Record::Open { .. } => "Open",
            Record::Close { .. } => "Close",
            Record::CloseRange { .. } => "CloseRange",
            Record::SetCloexec { .. } => "SetCloexec",
            Record::Fork { .. } => "Fork",
            Record::Exec { .. } => "Exec",
            Record::Exit { .. } => "Exit",
            Record::SockState { .. } => "SockState",
            Record::Extra { .. } => "Extra",
            Record::FailedOpen { .. } => "FailedOpen",
            Record::FailureTotal { .. } => "FailureTotal",
            Record::Untraced { .. } => "Untraced",
            Record::DriftClose { .. } => "DriftClose",
            Record::ProcessEnd { .. } => "ProcessEnd",
            Record::ProcFds { .. } => "ProcFds",
            Record::Preexisting { .. } => "Preexisting",
            Record::Lost { .. } => "Lost",
            Record::End { .. } => "End",
        }
    }
}
