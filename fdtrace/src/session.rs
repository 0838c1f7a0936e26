//! A tracing session: attach (or launch), follow the events, stop, report.
use std::{
    ffi::OsString,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::{
    events::{self, Event, Open},
    launch::Launched,
    model::{FdKind, FdTable, O_CLOEXEC, OpenFd, Origin},
    procinfo,
    report::{self, Meta},
    sockets::{self, SocketInfo},
    stacks::StackStore,
    symbolize::Symbols,
    tracer::{self, Tracer},
    unwind::StackUnwinder,
};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub duration: Option<Duration>,
    pub json: bool,
    pub output: Option<PathBuf>,
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
    /// Kernel socket → descriptors that may refer to it (checked on use).
    socks: std::collections::HashMap<u64, Vec<i32>>,
}

impl State {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            table: FdTable::new(),
            stacks: StackStore::new(),
            unwinder: StackUnwinder::new(),
            last_refresh: None,
            last_refresh_changed: true,
            exited_ns: None,
            decode_errors: 0,
            socks: Default::default(),
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
        let mut unwound = self.unwinder.unwind(o.ip, o.sp, o.bp, &o.stack);
        let uncovered = |u: &crate::unwind::Unwound, w: &StackUnwinder| {
            u.frames.iter().any(|f| w.mapping_for(f.lookup).is_none())
        };
        if uncovered(&unwound, &self.unwinder) {
            self.refresh_maps(false);
            unwound = self.unwinder.unwind(o.ip, o.sp, o.bp, &o.stack);
        }
        let id = self.stacks.intern(unwound, self.unwinder.mappings());
        use fdtrace_common::syscall as sc;
        let mut sock = None;
        let (kind, target) = match o.syscall {
            sc::OPENAT | sc::OPEN | sc::CREAT | sc::OPENAT2 => (FdKind::File, o.path),
            sc::SOCKET | sc::ACCEPT | sc::SOCKETPAIR => {
                let mut info = SocketInfo::from_kernel(&o.sock, o.hdr.ts_ns);
                info.accepted = o.syscall == sc::ACCEPT;
                if info.accepted
                    && info.local.is_none()
                    && let Some(l) = self.table.get(o.arg).and_then(|e| e.sock.as_ref())
                {
                    // A unix listener's path is the accepted socket's local address.
                    info.local = l.local.clone();
                }
                sock = Some(info);
                (FdKind::Socket, "socket".into())
            }
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
                    Some(e) => {
                        sock = e.sock.clone();
                        (e.kind, e.target.clone())
                    }
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
            let mut sock = sock.clone();
            if fd == o.fd2
                && let Some(s) = sock.as_mut()
            {
                // The kernel described the first of the pair only.
                s.sk = 0;
            }
            if let Some(sk) = sock.as_ref().map(|s| s.sk).filter(|&sk| sk != 0) {
                self.socks.entry(sk).or_default().push(fd);
            }
            self.table.open(
                fd,
                OpenFd {
                    kind,
                    target: target.clone(),
                    opened_ns: Some(o.hdr.ts_ns),
                    origin: Origin::Stack(id),
                    cloexec,
                    sock,
                },
            );
        }
    }

    /// A successful bind (local address) or connect (peer address).
    fn on_sock_addr(&mut self, fd: i32, op: u32, addr: &[u8]) {
        let Some((family, text)) = sockets::parse_sockaddr(addr) else {
            return;
        };
        let Some(e) = self.table.get_mut(fd) else {
            return;
        };
        let s = e.sock.get_or_insert_with(|| SocketInfo {
            family,
            ..SocketInfo::default()
        });
        if op == fdtrace_common::SOCK_OP_BIND {
            s.local = Some(text);
        } else if family != sockets::AF_UNIX || s.peer.is_none() {
            s.peer = Some(text);
        }
    }

    /// A TCP state change: applies to every descriptor still referring to that socket.
    fn on_sock_state(&mut self, ev: &fdtrace_common::SockStateEvent) {
        let Some(fds) = self.socks.get_mut(&ev.sk) else {
            return;
        };
        let table = &mut self.table;
        fds.retain(|&fd| {
            let Some(s) = table
                .get_mut(fd)
                .and_then(|e| e.sock.as_mut())
                .filter(|s| s.sk == ev.sk)
            else {
                return false;
            };
            s.set_state(
                ev.newstate as u8,
                ev.hdr.ts_ns,
                sockets::inet_endpoint(ev.family, &ev.saddr, ev.sport),
                sockets::inet_endpoint(ev.family, &ev.daddr, ev.dport),
            );
            true
        });
        if fds.is_empty() {
            self.socks.remove(&ev.sk);
        }
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
            }
            Event::SockAddr { fd, op, addr, .. } => self.on_sock_addr(fd, op, &addr),
            Event::SockState(ev) => self.on_sock_state(&ev),
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
    let mut tracer = Tracer::load()?;
    tracer.add_target(pid)?;
    let ring = tracer.take_ring()?;
    let mut state = State::new(pid);
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
    let stop = rt.block_on(follow(&mut state, ring, &mut launched, opts.duration))?;
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
