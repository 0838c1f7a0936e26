//! What a trace is asked to do: its target and options, as the command line (`cli.rs`) gives
//! them to a run (`run.rs`).
use std::{ffi::OsString, path::PathBuf, time::Duration};

use anyhow::Result;

use crate::{cgroup::Cgroup, process::UnwindMode};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
    /// Every process of a cgroup v2 and the cgroups below it, present and future.
    Cgroup(CgroupArg),
}

/// How the cgroup to trace was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupArg {
    /// `--cgroup PATH`.
    Path(PathBuf),
    /// `--container ID`: a prefix of a container id found in the cgroup tree.
    Container(String),
}

impl CgroupArg {
    pub fn resolve(&self) -> Result<Cgroup> {
        match self {
            CgroupArg::Path(p) => Cgroup::resolve(p),
            CgroupArg::Container(id) => Cgroup::of_container(id),
        }
    }
}

/// The options of a trace.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub duration: Option<Duration>,
    pub json: bool,
    pub output: Option<PathBuf>,
    /// Trace children too (`-f`).
    pub follow: bool,
    /// Size of the kernel's event ring buffer, in MiB (a power of two).
    pub ring_mb: u32,
    /// Record the session to this file (`fdtrace record`).
    pub record: Option<PathBuf>,
    /// How often the live view is refreshed (a screen on a terminal, else one line).
    pub interval: Duration,
    /// No live view.
    pub quiet: bool,
    /// Report only descriptors at least this many seconds old.
    pub min_age: Option<f64>,
    /// Text report: every pre-existing descriptor, not only their groups.
    pub all: bool,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<std::net::SocketAddr>,
    pub unwind: UnwindMode,
    /// Go programs: probe net/http to join a dialed socket's stack to its requester's.
    pub go_links: bool,
    /// Which kernel hooks observe the syscalls.
    pub hooks: crate::hooks::HookSet,
}
