//! A tracing session: attach (or launch), follow the events, stop, report.
use std::{
    ffi::OsString,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use fdtrace_common::capture;

use crate::{
    events::{self, Event, Open, UserStack},
    launch::Launched,
    model::{FdKind, FdTable, O_CLOEXEC, OpenFd, Origin},
    procinfo,
    report::{self, Meta},
    stacks::StackStore,
    symbolize::Symbols,
    tracer::{self, Tracer},
    unwind::{self, StackUnwinder, Unwound},
};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
}

/// How the stacks of the traced process are captured and unwound (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers for Go programs, DWARF CFI for the others.
    #[default]
    Auto,
    /// The kernel's frame-pointer walk.
    Fp,
    /// DWARF CFI over a copy of the top of the stack.
    Dwarf,
}

/// What the kernel captures at each birth of a process running `exe` (a `capture` constant).
pub fn capture_for(mode: UnwindMode, exe: Option<&Path>) -> u16 {
    match mode {
        UnwindMode::Fp => capture::FRAME_POINTERS,
        UnwindMode::Dwarf => capture::STACK_COPY,
        UnwindMode::Auto => {
            if exe.is_some_and(unwind::is_go_binary) {
                capture::FRAME_POINTERS
            } else {
                capture::STACK_COPY
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub duration: Option<Duration>,
    pub json: bool,
    pub output: Option<PathBuf>,
    pub unwind: UnwindMode,
}

/// Monotonic clock in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The user-side state of one traced process.
pub struct State {
    pub pid: u32,
    pub table: FdTable,
    pub stacks: StackStore,
    unwinder: StackUnwinder,
    last_refresh: Option<Instant>,
    /// Whether the last refresh found different mappings (the process is still loading).
    last_refresh_changed: bool,
    pub exited_ns: Option<u64>,
    pub decode_errors: u64,
    mode: UnwindMode,
    /// How the kernel captures this process's stacks now (a `capture` constant).
    pub capture: u16,
    /// A new capture the kernel filter must be told about (the process exec'd another program).
    pub capture_change: Option<u16>,
}

impl State {
    pub fn new(pid: u32, mode: UnwindMode, capture: u16) -> Self {
        Self {
            pid,
            mode,
            capture,
            capture_change: None,
            table: FdTable::new(),
            stacks: StackStore::new(),
            unwinder: StackUnwinder::new(),
            last_refresh: None,
            last_refresh_changed: true,
            exited_ns: None,
            decode_errors: 0,
        }
    }

    /// Read the descriptors open now as pre-existing, and the mappings.
    pub fn baseline(&mut self) -> Result<()> {
        let fds =
            procinfo::fds(self.pid).with_context(|| format!("reading /proc/{}/fd", self.pid))?;
        for f in fds {
            self.table.preexisting(f.fd, f.kind, f.target, f.cloexec);
        }
        self.refresh_maps(true);
        Ok(())
    }

    /// Re-read the mappings when an address is not covered. Rate-limited only while re-reading
    /// finds nothing new (an address in anonymous code, say), so a process that is still loading
    /// its libraries is followed closely.
    fn refresh_maps(&mut self, force: bool) {
        if !force
            && !self.last_refresh_changed
            && self
                .last_refresh
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let maps = procinfo::exec_mappings(self.pid);
        self.last_refresh_changed = !maps.is_empty() && maps != self.unwinder.mappings();
        if self.last_refresh_changed {
            self.unwinder.set_mappings(maps);
        }
    }

    fn on_open(&mut self, o: Open) {
        if self.unwinder.mapping_for(o.ip).is_none() {
            self.refresh_maps(false);
        }
        let unwound = self.unwind(&o);
        let id = self.stacks.intern(unwound, self.unwinder.mappings());
        use fdtrace_common::syscall as sc;
        let (kind, target) = match o.syscall {
            sc::OPENAT | sc::OPEN | sc::CREAT | sc::OPENAT2 => (FdKind::File, o.path),
            sc::SOCKET | sc::ACCEPT | sc::SOCKETPAIR => (FdKind::Socket, "socket".into()),
            sc::PIPE => (FdKind::Pipe, "pipe".into()),
            sc::EVENTFD => (FdKind::Eventfd, "eventfd".into()),
            sc::EPOLL => (FdKind::Epoll, "epoll".into()),
            sc::TIMERFD => (FdKind::Timerfd, "timerfd".into()),
            sc::SIGNALFD => (FdKind::Signalfd, "signalfd".into()),
            sc::INOTIFY => (FdKind::Inotify, "inotify".into()),
            sc::MEMFD => (FdKind::Memfd, format!("memfd:{}", o.path)),
            sc::PIDFD => (FdKind::Pidfd, "pidfd".into()),
            sc::DUP | sc::DUP2 | sc::FCNTL_DUPFD => {
                if o.syscall == sc::DUP2 && o.arg == o.fd {
                    // dup2(fd, fd) changes nothing.
                    return;
                }
                match self.table.get(o.arg) {
                    Some(e) => (e.kind, e.target.clone()),
                    None => (FdKind::Other, format!("dup of fd {}", o.arg)),
                }
            }
            _ => (FdKind::Other, String::new()),
        };
        if o.syscall == sc::DUP2 {
            // dup2/dup3 onto an open number closes it first.
            self.table.close_if_open(o.fd);
        }
        let cloexec = o.flags & O_CLOEXEC != 0;
        for fd in [o.fd, o.fd2] {
            if fd < 0 {
                continue;
            }
            self.table.open(
                fd,
                OpenFd {
                    kind,
                    target: target.clone(),
                    opened_ns: Some(o.hdr.ts_ns),
                    origin: Origin::Stack(id),
                    cloexec,
                },
            );
        }
    }

    /// Unwind the stack of a birth with the method its capture calls for.
    fn unwind(&mut self, o: &Open) -> Unwound {
        match &o.stack {
            UserStack::FramePointers(ips) => {
                if ips.iter().any(|&a| self.unwinder.mapping_for(a).is_none()) {
                    self.refresh_maps(false);
                }
                self.unwinder.unwind_fp(ips)
            }
            UserStack::Copy(bytes) => self.unwind_copy(o, bytes),
            UserStack::None => {
                // Nothing captured: the instruction pointer alone, cut short.
                let mut u = self.unwind_copy(o, &[]);
                u.truncated = true;
                if self.capture == capture::FRAME_POINTERS {
                    u.method = unwind::Method::Fp;
                }
                u
            }
        }
    }

    fn unwind_copy(&mut self, o: &Open, stack: &[u8]) -> Unwound {
        let mut unwound = self.unwinder.unwind(o.ip, o.sp, o.bp, stack);
        let uncovered = |u: &Unwound, w: &StackUnwinder| {
            u.frames.iter().any(|f| w.mapping_for(f.lookup).is_none())
        };
        if uncovered(&unwound, &self.unwinder) {
            self.refresh_maps(false);
            unwound = self.unwinder.unwind(o.ip, o.sp, o.bp, stack);
        }
        unwound
    }

    /// Apply one event. Returns true when the target process has exited.
    pub fn apply(&mut self, ev: Event) -> bool {
        match ev {
            Event::Open(o) => self.on_open(o),
            Event::Close { fd, .. } => {
                self.table.close(fd);
            }
            Event::CloseRange {
                first, last, flags, ..
            } => {
                self.table.close_range(
                    first,
                    last,
                    flags & fdtrace_common::CLOSE_RANGE_CLOEXEC != 0,
                );
            }
            Event::Exec { .. } => {
                let n = self.table.exec();
                debug!("exec: {n} close-on-exec descriptors closed");
                self.refresh_maps(true);
                if self.mode == UnwindMode::Auto {
                    let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok();
                    let c = capture_for(self.mode, exe.as_deref());
                    if c != self.capture {
                        self.capture = c;
                        self.capture_change = Some(c);
                    }
                }
            }
            Event::Exit { hdr } => {
                if hdr.tid == hdr.tgid {
                    self.exited_ns = Some(hdr.ts_ns);
                    return true;
                }
            }
        }
        false
    }

    /// Drain every record waiting in the ring buffer.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        let mut exited = false;
        while let Some(item) = ring.next() {
            let ev = events::decode(&item);
            drop(item);
            match ev {
                Ok(ev) => exited |= self.apply(ev),
                Err(e) => {
                    if self.decode_errors == 0 {
                        warn!("undecodable event: {e}");
                    }
                    self.decode_errors += 1;
                }
            }
        }
        exited
    }
}

enum Stop {
    Duration,
    Signal,
    TargetExited,
}

async fn follow(
    state: &mut State,
    tracer: &mut Tracer,
    ring: RingBuf<MapData>,
    launched: &mut Option<Launched>,
    duration: Option<Duration>,
) -> Result<Stop> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(std::io::Error::from)
        .context("watching the ring buffer")?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let exited = state.drain(guard.get_inner_mut());
                guard.clear_ready();
                if let Some(c) = state.capture_change.take() {
                    debug!("the target exec'd: stacks now captured as {c}");
                    if let Err(e) = tracer.add_target(state.pid, c) {
                        warn!("could not change how stacks are captured: {e:#}");
                    }
                }
                if exited {
                    break Stop::TargetExited;
                }
            }
            _ = sigterm.recv() => break Stop::Signal,
            _ = sigint.recv() => break Stop::Signal,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::Duration;
            }
            _ = tick.tick() => {
                let gone = match launched {
                    Some(l) => l.exited(),
                    None => !procinfo::exists(state.pid),
                };
                if gone {
                    break Stop::TargetExited;
                }
            }
        }
    };
    // Everything the kernel produced before we stopped is applied.
    state.drain(ring.get_mut());
    Ok(stop)
}

/// Run a whole session and write its report.
pub fn run(opts: Options) -> Result<()> {
    tracer::check_privileges()?;
    if let Target::Pid(pid) = opts.target
        && !procinfo::exists(pid)
    {
        bail!("no process with pid {pid}");
    }
    // Fork before any thread exists; the child waits for us before it execs.
    let mut launched = match &opts.target {
        Target::Command(argv) => Some(Launched::fork(argv)?),
        Target::Pid(_) => None,
    };
    let pid = match (&opts.target, &launched) {
        (Target::Pid(p), _) => *p,
        (_, Some(l)) => l.pid,
        _ => unreachable!(),
    };
    // The program whose stacks we will see: the command about to be exec'd, or the running one.
    let exe = match &launched {
        Some(l) => Some(l.program.clone()),
        None => std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
    };
    let capture = capture_for(opts.unwind, exe.as_deref());
    debug!(
        "unwinding {}: {}",
        exe.as_deref().unwrap_or(Path::new("?")).display(),
        if capture == capture::FRAME_POINTERS {
            "frame pointers"
        } else {
            "DWARF CFI over a stack copy"
        }
    );
    let mut tracer = Tracer::load()?;
    tracer.add_target(pid, capture)?;
    let ring = tracer.take_ring()?;
    let mut state = State::new(pid, opts.unwind, capture);
    state.baseline()?;
    let command_name = match &opts.target {
        Target::Command(argv) => argv.first().map(|a| {
            PathBuf::from(a)
                .file_name()
                .unwrap_or(a)
                .to_string_lossy()
                .into_owned()
        }),
        Target::Pid(p) => procinfo::comm(*p),
    };
    let started = Instant::now();
    if let Some(l) = launched.as_mut() {
        l.release()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = rt.block_on(follow(
        &mut state,
        &mut tracer,
        ring,
        &mut launched,
        opts.duration,
    ))?;
    let exited = matches!(stop, Stop::TargetExited) || state.exited_ns.is_some();
    debug!(
        "stopped after {:?} ({})",
        started.elapsed(),
        match stop {
            Stop::Duration => "duration",
            Stop::Signal => "signal",
            Stop::TargetExited => "target exited",
        }
    );
    let now_ns = state.exited_ns.unwrap_or_else(monotonic_ns);
    // Ground truth, while the process still lives.
    let proc_fds = if exited {
        None
    } else {
        procinfo::fds(pid).ok()
    };
    let symbols = Symbols::new();
    let meta = Meta {
        pid,
        command: command_name,
        duration_s: started.elapsed().as_secs_f64(),
        target_exited: exited,
        lost_events: tracer.lost_events(),
        stack_errors: tracer.stack_errors(),
        missing_tracepoints: tracer.missing.clone(),
    };
    if tracer.pending_errors() > 0 {
        warn!(
            "{} syscalls could not be followed from entry to exit",
            tracer.pending_errors()
        );
    }
    let report = report::build(
        meta,
        &state.table,
        &mut state.stacks,
        &symbols,
        now_ns,
        proc_fds.as_deref(),
    );
    if let Some(l) = launched.as_mut() {
        l.terminate();
    }
    let text = if opts.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        report::render_text(&report)
    };
    match &opts.output {
        Some(path) => write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?,
        None => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

/// Write through a temporary file so a full disk never leaves a half report behind.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("fdtrace-tmp");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(res?)
}
