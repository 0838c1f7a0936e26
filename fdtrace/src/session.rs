//! A tracing session: attach (or launch), follow the events, stop, report.
use std::{
    ffi::OsString,
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use fdtrace_common::{FailKey, Header, capture};
use fdtrace_record::Record;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::{
    cgroup::Cgroup,
    events::{self, Event, Open, UserStack},
    launch::Launched,
    live_writer::LiveWriter,
    metrics_server::{self, Published},
    model::{FdKind, FdTable, O_CLOEXEC, OpenFd, Origin, StackId},
    procinfo,
    procinfo::ProcFd,
    recording::Recorder,
    report::{self, Meta},
    sockets::{self, SocketInfo},
    stacks::StackStore,
    symbolize::Symbols,
    tracer::{self, Tracer},
    unwind::{self, StackUnwinder, Unwound},
    verdict::History,
};

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
    /// The traced process that created this one (followed children).
    pub parent: Option<u32>,
    pub comm: Option<String>,
    pub table: FdTable,
    pub stacks: StackStore,
    unwinder: StackUnwinder,
    last_refresh: Option<Instant>,
    /// Whether the last refresh found different mappings (the process is still loading).
    last_refresh_changed: bool,
    pub exited_ns: Option<u64>,
    /// RLIMIT_NOFILE, read at attach and at each reconciliation.
    pub rlimit: Option<procinfo::NofileLimit>,
    /// Its container, as read at attach (see `container`).
    pub container: Option<crate::container::Container>,
    /// When recording: the changes to the model, in order, with this process's stack ids.
    pub log: Option<Vec<Record>>,
    /// Kernel socket → descriptors that may refer to it (checked on use).
    socks: foldhash::HashMap<u64, Vec<i32>>,
    /// Differences with /proc seen at the last reconciliation (fd → missed open?).
    suspects: foldhash::HashMap<i32, bool>,
    /// Descriptor numbers an event opened or closed since the last reconciliation: a
    /// difference on such a number is the model and /proc seen at different moments of a busy
    /// number (a loop that opens and closes it), not a missed event.
    touched: foldhash::HashSet<i32>,
    mode: UnwindMode,
    /// How the kernel captures this process's stacks now (a `capture` constant).
    pub capture: u16,
    /// A new capture the kernel filter must be told about (the process exec'd another program).
    pub capture_change: Option<u16>,
    /// Open counts per call site, sampled every second: the verdicts' evidence.
    pub history: History,
}

impl State {
    pub fn new(pid: u32, mode: UnwindMode, capture: u16) -> Self {
        Self {
            pid,
            mode,
            capture,
            capture_change: None,
            history: History::new(),
            parent: None,
            comm: None,
            table: FdTable::new(),
            stacks: StackStore::new(),
            unwinder: StackUnwinder::new(),
            last_refresh: None,
            last_refresh_changed: true,
            exited_ns: None,
            rlimit: None,
            container: None,
            log: None,
            socks: Default::default(),
            suspects: Default::default(),
            touched: Default::default(),
        }
    }

    /// The state of a child created by fork: the same descriptors, with their origins, and the
    /// same memory image until it execs.
    pub fn fork_child(&self, child: u32) -> State {
        let mut c = State::new(child, self.mode, self.capture);
        c.parent = Some(self.pid);
        c.comm = self.comm.clone();
        c.table = self.table.inherited();
        c.stacks = self.stacks.clone();
        c.unwinder.set_mappings(self.unwinder.mappings().to_vec());
        c.socks = self.socks.clone();
        c.log = self.log.as_ref().map(|_| Vec::new());
        c
    }

    fn log(&mut self, r: Record) {
        if let Some(l) = self.log.as_mut() {
            l.push(r);
        }
    }

    /// Log what is known of socket `fd` now.
    fn log_socket(&mut self, fd: i32, ts_ns: u64) {
        if self.log.is_none() {
            return;
        }
        if let Some(s) = self.table.get(fd).and_then(|e| e.sock.clone()) {
            self.log(crate::recording::sock_record(self.pid, fd, ts_ns, &s));
        }
    }

    /// Add a birth to the table (and the log).
    fn born(&mut self, tid: u32, syscall: u32, fd: i32, entry: OpenFd) {
        let ts_ns = entry.opened_ns.unwrap_or(0);
        if self.log.is_some() {
            self.log(Record::Open {
                ts_ns,
                tgid: self.pid,
                tid,
                fd,
                kind: entry.kind.code(),
                syscall: syscall as u8,
                cloexec: entry.cloexec,
                stack: match entry.origin {
                    Origin::Stack(id) => Some(id),
                    _ => None,
                },
                target: entry.target.clone(),
            });
        }
        let has_sock = entry.sock.is_some();
        self.table.open(fd, entry);
        if has_sock {
            self.log_socket(fd, ts_ns);
        }
    }

    /// Read the descriptors open now as pre-existing, and, with `maps`, the mappings (not for a
    /// launched command that has not exec'd yet: its mappings are fdtrace's own, and its exec
    /// reads them anew).
    pub fn baseline(&mut self, maps: bool) -> Result<()> {
        let fds =
            procinfo::fds(self.pid).with_context(|| format!("reading /proc/{}/fd", self.pid))?;
        for f in fds {
            let born_ns = f.age_ns.map(|age| monotonic_ns().saturating_sub(age));
            self.log(Record::Preexisting {
                tgid: self.pid,
                fd: f.fd,
                kind: f.kind.code(),
                cloexec: f.cloexec,
                target: f.target.clone(),
                born_ns,
            });
            self.table
                .preexisting(f.fd, f.kind, f.target, f.cloexec, born_ns);
        }
        self.describe_preexisting_sockets(true);
        if maps {
            self.refresh_maps(true);
        }
        self.rlimit = procinfo::nofile_limit(self.pid);
        self.container = crate::container::of(self.pid);
        Ok(())
    }

    /// Sockets open before tracing began: addresses and TCP state from /proc/PID/net, read at
    /// attach (`all`) and again at each reconciliation for the TCP sockets whose state may
    /// still change (their state changes are not traced). A listening socket stays listening,
    /// and reading /proc/PID/net/tcp costs the consumer dearly on a busy server (it lists every
    /// TIME_WAIT connection): a server whose only pre-existing socket listens never reads it
    /// again.
    fn describe_preexisting_sockets(&mut self, all: bool) {
        let pre: Vec<(i32, u64)> = self
            .table
            .iter()
            .filter(|(_, e)| e.origin == Origin::Preexisting && e.kind == FdKind::Socket)
            .filter(|(_, e)| all || e.sock.as_ref().is_some_and(sockets::state_may_change))
            .filter_map(|(fd, e)| Some((fd, sockets::socket_inode(&e.target)?)))
            .collect();
        if pre.is_empty() {
            return;
        }
        let known = sockets::proc_net_sockets(self.pid);
        for (fd, inode) in pre {
            if let (Some(e), Some(s)) = (self.table.get_mut(fd), known.get(&inode))
                && e.sock.as_ref() != Some(s)
            {
                e.sock = Some(s.clone());
                self.log_socket(fd, monotonic_ns());
            }
        }
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

    /// A birth that failed with EMFILE/ENFILE: counted per call site.
    fn on_open_failed(&mut self, o: Open) {
        let id = self.stack_of(&o);
        let what = if o.path.is_empty() {
            crate::model::syscall_name(o.syscall).to_string()
        } else {
            o.path.clone()
        };
        if self.log.is_some() {
            let json = serde_json::json!({"stack": id, "errno": -o.fd, "example": what});
            self.log(Record::Extra {
                ts_ns: o.hdr.ts_ns,
                tgid: self.pid,
                name: "failed_open".into(),
                json: json.to_string(),
            });
        }
        self.table.failed(id, -o.fd, o.hdr.ts_ns, what);
    }

    /// Unwind and intern the creating stack of a birth.
    fn stack_of(&mut self, o: &Open) -> StackId {
        if self.unwinder.mapping_for(o.ip).is_none() {
            self.refresh_maps(false);
        }
        let unwound = self.unwind(o);
        self.stacks.intern(unwound, self.unwinder.mappings())
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
            UserStack::Shed => {
                self.table.stats.stacks_dropped += 1;
                Unwound {
                    frames: Vec::new(),
                    truncated: false,
                    method: unwind::Method::Shed,
                }
            }
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

    fn on_open(&mut self, o: Open) {
        self.touched.insert(o.fd);
        if o.fd2 >= 0 {
            self.touched.insert(o.fd2);
        }
        let id = self.stack_of(&o);
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
            sc::OPEN_BY_HANDLE => (
                FdKind::File,
                procinfo::fd_link(self.pid, o.fd).unwrap_or_else(|| "open_by_handle_at".into()),
            ),
            sc::FANOTIFY => (FdKind::Other, "fanotify".into()),
            sc::MEMFD_SECRET => (FdKind::Memfd, "secretmem".into()),
            sc::USERFAULTFD => (FdKind::Other, "userfaultfd".into()),
            sc::PERF_EVENT => (FdKind::Other, "perf_event".into()),
            sc::BPF => (FdKind::Bpf, "bpf".into()),
            sc::IO_URING => (FdKind::IoUring, "io_uring".into()),
            sc::MQ_OPEN => (
                FdKind::File,
                format!("mqueue:/{}", o.path.trim_start_matches('/')),
            ),
            sc::MOUNT_API => (FdKind::Other, "fs context".into()),
            sc::OPEN_TREE_PATH => (FdKind::Other, format!("mount tree {}", o.path)),
            sc::LANDLOCK => (FdKind::Other, "landlock ruleset".into()),
            sc::PIDFD_GETFD => match procinfo::fd_link(self.pid, o.fd) {
                Some(link) => (FdKind::from_link(&link), link),
                None => (FdKind::Other, "pidfd_getfd".into()),
            },
            sc::RECVMSG | sc::RECVMMSG => {
                // Descriptors received with SCM_RIGHTS: one birth each, at this recvmsg.
                let cloexec = o.flags & O_CLOEXEC != 0;
                let fds = if o.syscall == sc::RECVMSG {
                    scm_rights_fds(&o.control)
                } else {
                    recvmmsg_fds(&o.control)
                };
                for fd in fds {
                    let link = procinfo::fd_link(self.pid, fd);
                    let kind = link
                        .as_deref()
                        .map(FdKind::from_link)
                        .unwrap_or(FdKind::Other);
                    self.born(
                        o.hdr.tid,
                        o.syscall,
                        fd,
                        OpenFd {
                            kind,
                            target: link.unwrap_or_else(|| "received with SCM_RIGHTS".into()),
                            opened_ns: Some(o.hdr.ts_ns),
                            origin: Origin::Stack(id),
                            cloexec,
                            sock: None,
                        },
                    );
                }
                return;
            }
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
            if self.table.close_if_open(o.fd).is_some() {
                self.log(Record::Close {
                    ts_ns: o.hdr.ts_ns,
                    tgid: self.pid,
                    tid: o.hdr.tid,
                    fd: o.fd,
                });
            }
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
            self.born(
                o.hdr.tid,
                o.syscall,
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

    /// Compare the model with /proc/PID/fd. A difference seen at two checks in a row is not an
    /// event in flight: it is drift, counted and corrected (the model takes the kernel's word).
    pub fn reconcile(&mut self) {
        let Ok(fds) = procinfo::fds(self.pid) else {
            return;
        };
        self.rlimit = procinfo::nofile_limit(self.pid).or(self.rlimit);
        self.describe_preexisting_sockets(false);
        let mut now: foldhash::HashMap<i32, bool> = Default::default();
        for p in &fds {
            if self.table.get(p.fd).is_none() {
                now.insert(p.fd, true);
            }
        }
        for (fd, _) in self.table.iter() {
            if !fds.iter().any(|p| p.fd == fd) {
                now.insert(fd, false);
            }
        }
        for (&fd, &missed_open) in &now {
            if self.suspects.get(&fd) != Some(&missed_open) || self.touched.contains(&fd) {
                continue;
            }
            if missed_open {
                if let Some(p) = fds.iter().find(|p| p.fd == fd) {
                    warn!(
                        "pid {}: fd {fd} ({}) opened without a traced birth",
                        self.pid, p.target
                    );
                    let json = serde_json::json!({"fd": fd, "kind": p.kind, "target": p.target, "cloexec": p.cloexec});
                    self.log(Record::Extra {
                        ts_ns: monotonic_ns(),
                        tgid: self.pid,
                        name: "untraced".into(),
                        json: json.to_string(),
                    });
                    self.table.untraced(fd, p.kind, p.target.clone(), p.cloexec);
                }
            } else {
                warn!("pid {}: fd {fd} closed without a traced close", self.pid);
                self.log(Record::Extra {
                    ts_ns: monotonic_ns(),
                    tgid: self.pid,
                    name: "drift_close".into(),
                    json: serde_json::json!({ "fd": fd }).to_string(),
                });
                self.table.drift_close(fd);
            }
        }
        now.retain(|fd, missed_open| {
            // Corrected entries are no longer suspects.
            self.table.get(*fd).is_some() != *missed_open
        });
        self.suspects = now;
        self.touched.clear();
    }

    /// A successful bind (local address) or connect (peer address).
    fn on_sock_addr(&mut self, ts_ns: u64, fd: i32, op: u32, addr: &[u8]) {
        self.update_sock_addr(fd, op, addr);
        self.log_socket(fd, ts_ns);
    }

    fn update_sock_addr(&mut self, fd: i32, op: u32, addr: &[u8]) {
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
        } else if self.log.is_some() {
            for fd in fds.clone() {
                self.log_socket(fd, ev.hdr.ts_ns);
            }
        }
    }

    /// Apply one event. Returns true when the target process has exited.
    pub fn apply(&mut self, ev: Event) -> bool {
        match ev {
            Event::Open(o) => self.on_open(o),
            Event::OpenFailed(o) => self.on_open_failed(o),
            Event::Close { hdr, fd } => {
                self.log(Record::Close {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    tid: hdr.tid,
                    fd,
                });
                self.touched.insert(fd);
                self.table.close(fd);
            }
            Event::CloseRange {
                hdr,
                first,
                last,
                flags,
            } => {
                if flags & !close_range_flags() != 0 {
                    // The kernel refused the call (EINVAL): nothing was closed or marked.
                    debug!("close_range with flags {flags:#x} this kernel rejects: no effect");
                    return false;
                }
                self.log(Record::CloseRange {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    first,
                    last,
                    cloexec_only: flags & fdtrace_common::CLOSE_RANGE_CLOEXEC != 0,
                });
                self.table.close_range(
                    first,
                    last,
                    flags & fdtrace_common::CLOSE_RANGE_CLOEXEC != 0,
                );
            }
            Event::Exec { hdr } => {
                self.log(Record::Exec {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                });
                let n = self.table.exec();
                debug!("exec: {n} close-on-exec descriptors closed");
                self.refresh_maps(true);
                if self.mode == UnwindMode::Auto {
                    // The process's own executable, whatever namespace its path is in.
                    let exe = PathBuf::from(format!("/proc/{}/exe", self.pid));
                    let c = capture_for(self.mode, Some(&exe));
                    if c != self.capture {
                        self.capture = c;
                        self.capture_change = Some(c);
                    }
                }
            }
            Event::SockAddr { hdr, fd, op, addr } => self.on_sock_addr(hdr.ts_ns, fd, op, &addr),
            Event::Cloexec { hdr, fd, on } => {
                self.log(Record::SetCloexec {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    fd,
                    on,
                });
                self.table.set_cloexec(fd, on);
            }
            // Handled by the session, which knows every process.
            Event::Fork { .. } | Event::Join { .. } => {}
            Event::SockState(ev) => self.on_sock_state(&ev),
            Event::Exit { hdr } => {
                if hdr.tid == hdr.tgid {
                    self.log(Record::Exit {
                        ts_ns: hdr.ts_ns,
                        tgid: self.pid,
                    });
                    self.exited_ns = Some(hdr.ts_ns);
                    return true;
                }
            }
        }
        false
    }
}

/// Descriptor numbers in the per-message chunks of a recvmmsg birth (see
/// `fdtrace_common::syscall::RECVMMSG`).
pub fn recvmmsg_fds(chunks: &[u8]) -> Vec<i32> {
    use fdtrace_common::syscall::{RECVMMSG_CHUNK, RECVMMSG_MSGS};
    let mut fds = Vec::new();
    for c in chunks.chunks_exact(RECVMMSG_CHUNK).take(RECVMMSG_MSGS) {
        let len = u64::from_ne_bytes(c[..8].try_into().unwrap()) as usize;
        let data = &c[8..];
        fds.extend(scm_rights_fds(&data[..len.min(data.len())]));
    }
    fds
}

/// Descriptor numbers in SCM_RIGHTS control messages (`struct cmsghdr` list, 8-byte aligned).
pub fn scm_rights_fds(control: &[u8]) -> Vec<i32> {
    const HDR: usize = 16;
    let mut fds = Vec::new();
    let mut off = 0;
    while off + HDR <= control.len() {
        let len = u64::from_ne_bytes(control[off..off + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().unwrap());
        let typ = i32::from_ne_bytes(control[off + 12..off + 16].try_into().unwrap());
        if len < HDR {
            break;
        }
        let end = off.saturating_add(len).min(control.len());
        if level == libc::SOL_SOCKET && typ == libc::SCM_RIGHTS {
            fds.extend(
                control[off + HDR..end]
                    .chunks_exact(4)
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap())),
            );
        }
        // A length past the buffer ends the list (and never loops: it always advances).
        match len
            .checked_next_multiple_of(8)
            .and_then(|l| off.checked_add(l))
        {
            Some(next) if next > off => off = next,
            _ => break,
        }
    }
    fds
}

/// Every traced process of a session: the target and, with `-f`, its descendants; or every
/// process of a cgroup.
pub struct Session {
    /// The target process; with a cgroup, the first process found in it (None until then).
    pub root: Option<u32>,
    pub follow: bool,
    /// The cgroup traced (`--cgroup`, `--container`): its processes come and go, and the
    /// session ends when it is removed, not when a process exits.
    pub cgroup: Option<Cgroup>,
    /// How the stacks of processes that join the cgroup are unwound.
    pub unwind: UnwindMode,
    /// Records from processes not traced (the kernel filter lets none through; counted to
    /// show it).
    pub stray_events: u64,
    /// By pid, exited ones included (they keep what they held at exit).
    pub procs: std::collections::BTreeMap<u32, State>,
    /// Children created with CLONE_FILES share their parent's table: pid -> the owner's pid.
    alias: foldhash::HashMap<u32, u32>,
    pub decode_errors: u64,
    /// Processes that exited, to be removed from the kernel filter.
    pub gone: Vec<u32>,
    /// `fdtrace record`: where the changes to the model go.
    pub recorder: Option<Recorder>,
}

impl Session {
    pub fn new(root: State, follow: bool) -> Self {
        let mut s = Self::of_cgroup(None, root.mode);
        s.follow = follow;
        s.add_process(root);
        s
    }

    /// A session without processes yet: those of `cgroup` are added as they are found.
    pub fn of_cgroup(cgroup: Option<Cgroup>, unwind: UnwindMode) -> Self {
        Self {
            root: None,
            follow: true,
            cgroup,
            unwind,
            stray_events: 0,
            procs: Default::default(),
            alias: Default::default(),
            decode_errors: 0,
            gone: Vec::new(),
            recorder: None,
        }
    }

    /// A process traced on its own account (not as a traced process's child): the target, or a
    /// process of the cgroup. Written to the recording, if any.
    pub fn add_process(&mut self, p: State) {
        let pid = p.pid;
        self.root.get_or_insert(pid);
        let comm = p.comm.clone().unwrap_or_default();
        self.procs.insert(pid, p);
        if let Some(rec) = self.recorder.as_mut() {
            rec.write(&Record::Process {
                tgid: pid,
                parent: None,
                comm,
                cmdline: procinfo::cmdline(pid),
            });
            self.flush_log(pid);
        }
    }

    /// Record into `recorder` from now on, starting with what is known of each process.
    pub fn start_recording(&mut self, mut recorder: Recorder) {
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for &pid in &pids {
            let p = &self.procs[&pid];
            recorder.write(&Record::Process {
                tgid: pid,
                parent: p.parent,
                comm: p.comm.clone().unwrap_or_default(),
                cmdline: procinfo::cmdline(pid),
            });
        }
        self.recorder = Some(recorder);
        for pid in pids {
            self.flush_log(pid);
        }
    }

    /// A process of the traced cgroup that the kernel traces from now on: read what it holds
    /// now, as when attaching to a pid.
    fn on_join(&mut self, pid: u32) {
        if self.procs.get(&pid).is_some_and(|p| p.exited_ns.is_none())
            || self.alias.contains_key(&pid)
        {
            return;
        }
        match attach_running(pid, self.unwind, self.recorder.is_some()) {
            Ok(mut p) => {
                debug!(
                    "pid {pid} ({}) joined the cgroup",
                    p.comm.as_deref().unwrap_or("?")
                );
                // The kernel copies its stacks until told otherwise.
                if p.capture != capture::STACK_COPY {
                    p.capture_change = Some(p.capture);
                }
                self.add_process(p);
            }
            Err(e) => {
                debug!("pid {pid} joined the cgroup but could not be read: {e:#}");
                self.gone.push(pid);
            }
        }
    }

    /// Move a process's logged changes into the recording, numbering its stacks.
    /// The kernel's counts of failed births, into each process's table (and its recording
    /// when they changed).
    fn take_failure_counts(&mut self, counts: &[(FailKey, u64)]) {
        let now = monotonic_ns();
        for (k, n) in counts {
            if let Some(p) = self.procs.get_mut(&k.tgid)
                && p.table.set_failure_total(k.syscall, k.errno as i32, *n)
            {
                let json = serde_json::json!({"syscall": k.syscall, "errno": k.errno, "count": n});
                p.log(Record::Extra {
                    ts_ns: now,
                    tgid: k.tgid,
                    name: "failure_total".into(),
                    json: json.to_string(),
                });
            }
        }
    }

    fn flush_log(&mut self, pid: u32) {
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let Some(log) = p.log.as_mut() else {
            return;
        };
        if log.is_empty() {
            return;
        }
        let entries = std::mem::take(log);
        for mut r in entries {
            match &mut r {
                Record::Open {
                    stack: Some(id), ..
                } => *id = rec.stack_id(pid, *id, &p.stacks),
                Record::Extra { name, json, .. } if name == "failed_open" => {
                    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json)
                        && let Some(local) = v["stack"].as_u64()
                    {
                        v["stack"] = rec.stack_id(pid, local as StackId, &p.stacks).into();
                        *json = v.to_string();
                    }
                }
                _ => {}
            }
            rec.write(&r);
        }
    }

    /// End of a recording: what each process held and what /proc said, the symbols of every
    /// stack, the counters.
    pub fn finish_recording(
        &mut self,
        reports: &[(u32, Meta, Option<Vec<ProcFd>>)],
        lost: u64,
        reason: &str,
    ) -> Result<Option<(u64, std::path::PathBuf)>> {
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            self.flush_log(pid);
        }
        let Some(mut rec) = self.recorder.take() else {
            return Ok(None);
        };
        let now = monotonic_ns();
        for (pid, meta, proc_fds) in reports {
            rec.write(&Record::Extra {
                ts_ns: now,
                tgid: *pid,
                name: "meta".into(),
                json: serde_json::to_string(meta)?,
            });
            if let Some(fds) = proc_fds {
                rec.write(&Record::Extra {
                    ts_ns: now,
                    tgid: *pid,
                    name: "proc_fds".into(),
                    json: serde_json::to_string(fds)?,
                });
            }
        }
        let symbols = Symbols::new();
        for (id, &(pid, local)) in rec.stacks().to_vec().iter().enumerate() {
            let frames = self
                .procs
                .get_mut(&pid)
                .map(|p| p.stacks.frames(local, &symbols))
                .unwrap_or_default();
            rec.write(&Record::Symbols {
                stack_id: id as u32,
                frames: crate::recording::sym_frames(&frames),
            });
        }
        rec.write(&Record::Lost {
            ts_ns: now,
            count: lost,
        });
        rec.write(&Record::End {
            ts_ns: now,
            reason: reason.to_string(),
        });
        let bytes = rec.finish()?;
        Ok(Some((bytes, rec.path.clone())))
    }

    /// The target process (None for a cgroup that has held no process yet).
    pub fn root(&self) -> Option<&State> {
        self.procs.get(&self.root?)
    }

    fn owner(&self, tgid: u32) -> u32 {
        self.alias.get(&tgid).copied().unwrap_or(tgid)
    }

    /// Has every traced process exited?
    pub fn all_exited(&self) -> bool {
        self.procs.values().all(|p| p.exited_ns.is_some())
    }

    fn on_fork(&mut self, parent: u32, child: u32, flags: u64) {
        let owner = self.owner(parent);
        if flags & fdtrace_common::CLONE_FILES != 0 {
            self.alias.insert(child, owner);
            return;
        }
        if !self.follow || self.procs.contains_key(&child) {
            return;
        }
        // Kernel-created threads (io_uring workers) arrive without clone flags.
        if procinfo::tgid_of(child).is_some_and(|t| t != child) {
            return;
        }
        if let Some(p) = self.procs.get(&owner) {
            let c = p.fork_child(child);
            let comm = c.comm.clone().unwrap_or_default();
            self.procs.insert(child, c);
            if let Some(rec) = self.recorder.as_mut() {
                rec.write(&Record::Fork {
                    ts_ns: monotonic_ns(),
                    parent: owner,
                    child,
                    shares_table: false,
                });
                rec.write(&Record::Process {
                    tgid: child,
                    parent: Some(owner),
                    comm,
                    cmdline: Vec::new(),
                });
            }
        }
    }

    fn on_exec(&mut self, hdr: Header) {
        let pid = hdr.tgid;
        if let Some(owner) = self.alias.remove(&pid) {
            // exec unshares a shared table: the process goes on with a copy of it.
            if self.follow
                && let Some(p) = self.procs.get(&owner)
            {
                let mut c = p.fork_child(pid);
                c.parent = Some(owner);
                self.procs.insert(pid, c);
            } else {
                self.gone.push(pid);
                return;
            }
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.apply(Event::Exec { hdr });
            p.comm = procinfo::comm(pid).or(p.comm.take());
            let (parent, comm) = (p.parent, p.comm.clone().unwrap_or_default());
            self.flush_log(pid);
            if let Some(rec) = self.recorder.as_mut() {
                rec.write(&Record::Process {
                    tgid: pid,
                    parent,
                    comm,
                    cmdline: procinfo::cmdline(pid),
                });
            }
        }
    }

    /// Apply one event to the process it belongs to.
    pub fn apply(&mut self, ev: Event) {
        match ev {
            Event::Fork { hdr, child, flags } => self.on_fork(hdr.tgid, child, flags),
            Event::Exec { hdr } => self.on_exec(hdr),
            Event::Join { hdr } => self.on_join(hdr.tgid),
            Event::Exit { hdr } if hdr.tid == hdr.tgid && self.alias.contains_key(&hdr.tgid) => {
                self.alias.remove(&hdr.tgid);
                self.gone.push(hdr.tgid);
            }
            Event::SockState(st) => {
                // Any process that inherited the socket sees the change.
                let pids: Vec<u32> = self.procs.keys().copied().collect();
                for pid in pids {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.apply(Event::SockState(st));
                    }
                    self.flush_log(pid);
                }
            }
            ev => {
                let hdr = *ev.header();
                let key = self.owner(hdr.tgid);
                match self.procs.get_mut(&key) {
                    Some(p) => {
                        let exited = p.apply(ev);
                        if exited && (Some(key) != self.root || self.cgroup.is_some()) {
                            self.gone.push(key);
                        }
                    }
                    None => self.stray_events += 1,
                }
                self.flush_log(key);
            }
        }
    }

    /// Drain every record waiting in the ring buffer.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            // The record stays reserved while it is applied: the event borrows its stack copy.
            match events::decode(&item) {
                Ok(ev) => self.apply(ev),
                Err(e) => {
                    if self.decode_errors == 0 {
                        warn!("undecodable event: {e}");
                    }
                    self.decode_errors += 1;
                }
            }
            drop(item);
        }
    }

    /// Let the kernel forget the processes that exited, and tell it how to capture the stacks
    /// of processes that exec'd another program.
    pub fn untarget_gone(&mut self, tracer: &mut Tracer) {
        for pid in self.gone.drain(..) {
            tracer.remove_target(pid);
        }
        for p in self.procs.values_mut() {
            if let Some(c) = p.capture_change.take()
                && p.exited_ns.is_none()
            {
                debug!("pid {} exec'd: stacks now captured as {c}", p.pid);
                if let Err(e) = tracer.add_target(p.pid, c) {
                    warn!("could not change how stacks are captured: {e:#}");
                }
            }
        }
    }

    /// The session is over: the root exited and, when following, every descendant too.
    pub fn finished(&self) -> bool {
        if self.cgroup.is_some() {
            // Processes come and go: the cgroup's removal ends it (checked by the caller).
            return false;
        }
        let root_gone = self.root().is_none_or(|r| r.exited_ns.is_some());
        root_gone && (!self.follow || self.all_exited())
    }
}

enum Stop {
    Duration,
    Signal,
    TargetExited,
    CgroupRemoved,
}

/// A live snapshot of each traced process still running (the root first).
fn live_statuses(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    top: usize,
) -> Vec<crate::live::LiveStatus> {
    let root = session.root;
    let lost = tracer.lost_events();
    let mut out = Vec::new();
    for p in session.procs.values_mut() {
        if p.exited_ns.is_some() && Some(p.pid) != root {
            continue;
        }
        let st = crate::live::status(
            p.pid,
            p.comm.as_deref().unwrap_or("?"),
            started.elapsed().as_secs_f64(),
            &p.table,
            &p.history,
            &mut p.stacks,
            symbols,
            monotonic_ns(),
            p.rlimit.and_then(|l| l.soft),
            lost,
            top,
        );
        if Some(p.pid) == root {
            out.insert(0, st);
        } else {
            out.push(st);
        }
    }
    out
}

/// The live view of the root process, handed to the live view's writer.
fn show_live(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    out: &mut LiveWriter,
) {
    let Some(st) = live_statuses(session, tracer, symbols, started, 8)
        .into_iter()
        .next()
    else {
        return;
    };
    out.send(if out.screen() {
        format!(
            "{}{}",
            crate::live_writer::CLEAR,
            crate::live::render_screen(&st, crate::terminal::width(2).unwrap_or(80))
        )
    } else {
        format!("{}\n", crate::live::render_line(&st))
    });
}

/// The metrics the endpoint serves until the next call.
fn publish_metrics(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    to: &Published,
) {
    let st = live_statuses(session, tracer, symbols, started, 20);
    to.set(crate::metrics::render(&st, tracer.lost_events()));
}

/// Where a session shows what it sees while it runs: the live view and the metrics endpoint.
struct Outputs {
    live: Option<LiveWriter>,
    /// `q` on the terminal stops the session (when tracing a pid: a launched command keeps
    /// the keyboard).
    quit: Option<crate::terminal::QuitKey>,
    /// No live view (the writer still carries the start-up line).
    quiet: bool,
    metrics: Option<Published>,
}

/// The signals that end a session with its report.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    session: &mut Session,
    tracer: &mut Tracer,
    ring: RingBuf<MapData>,
    launched: &mut Option<Launched>,
    opts: &Options,
    symbols: &Symbols,
    out: &mut Outputs,
    signals: Signals,
) -> Result<Stop> {
    let duration = opts.duration;
    let started = Instant::now();
    let mut live = tokio::time::interval(opts.interval);
    live.tick().await;
    if let Some(m) = &out.metrics {
        publish_metrics(session, tracer, symbols, started, m);
    }
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(std::io::Error::from)
        .context("watching the ring buffer")?;
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // The kernel wakes us only when much is waiting; otherwise we look every few milliseconds.
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u64 = 0;
    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                session.drain(guard.get_inner_mut());
                guard.clear_ready();
                session.untarget_gone(tracer);
                if session.finished() {
                    break Stop::TargetExited;
                }
            }
            _ = poll.tick() => {
                session.drain(ring.get_mut());
                session.untarget_gone(tracer);
                if session.finished() {
                    break Stop::TargetExited;
                }
            }
            _ = sigterm.recv() => break Stop::Signal,
            _ = sigint.recv() => break Stop::Signal,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::Duration;
            }
            _ = live.tick(), if !out.quiet => {
                if let Some(w) = out.live.as_mut() {
                    show_live(session, tracer, symbols, started, w);
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                if out.quit.as_ref().is_some_and(|q| q.pressed()) {
                    break Stop::Signal;
                }
                // A recording is written in complete blocks every second, so a killed recorder
                // leaves a readable file.
                if ticks.is_multiple_of(4) {
                    session.take_failure_counts(&tracer.failure_counts());
                    if let Some(rec) = session.recorder.as_mut() {
                        rec.flush();
                    }
                    if let Some(m) = &out.metrics {
                        publish_metrics(session, tracer, symbols, started, m);
                    }
                    let now = monotonic_ns();
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() {
                            p.history.sample(now, &p.table);
                        }
                    }
                }
                if let Some(c) = &session.cgroup {
                    // Cgroups made below it since (a pod's new container) are traced too.
                    let ids = c.ids();
                    if let Err(e) = tracer.set_cgroups(&ids) {
                        warn!("could not update the cgroup filter: {e:#}");
                    }
                    if ids.is_empty() {
                        // The container is gone: every process in it has exited.
                        session.drain(ring.get_mut());
                        for p in session.procs.values_mut() {
                            p.exited_ns.get_or_insert_with(monotonic_ns);
                        }
                        break Stop::CgroupRemoved;
                    }
                } else if let Some(root) = session.root {
                    let root_gone = match launched {
                        Some(l) => l.exited(),
                        None => !procinfo::exists(root),
                    };
                    if root_gone && session.procs[&root].exited_ns.is_none() {
                        // The exit event was lost or the process vanished: stop following it.
                        session.drain(ring.get_mut());
                        if let Some(p) = session.procs.get_mut(&root) {
                            p.exited_ns.get_or_insert_with(monotonic_ns);
                        }
                    }
                }
                if session.follow {
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() && !procinfo::exists(p.pid) {
                            p.exited_ns = Some(monotonic_ns());
                        }
                    }
                }
                if session.finished() {
                    break Stop::TargetExited;
                }
                // Every two seconds, check the model against the kernel's tables.
                if ticks.is_multiple_of(8) {
                    session.drain(ring.get_mut());
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() {
                            p.reconcile();
                        }
                    }
                    let pids: Vec<u32> = session.procs.keys().copied().collect();
                    for pid in pids {
                        session.flush_log(pid);
                    }
                }
            }
        }
    };
    // Everything the kernel produced before we stopped is applied.
    session.drain(ring.get_mut());
    session.take_failure_counts(&tracer.failure_counts());
    Ok(stop)
}

/// Run a whole session and write its report.
/// Returns the exit status for fdtrace: the launched command's when it ended on its own (its
/// exit code, or 128 + the signal that killed it), 0 otherwise.
pub fn run(opts: Options) -> Result<i32> {
    tracer::check_privileges()?;
    if let Target::Pid(pid) = opts.target
        && !procinfo::exists(pid)
    {
        bail!("no process with pid {pid}");
    }
    // Where the results go is checked before anything is traced: a session is never lost to a
    // path that cannot be written.
    if let Some(path) = &opts.record {
        crate::output::check_new_file(path)?;
    }
    if let Some(path) = opts
        .output
        .as_deref()
        .filter(|p| !crate::output::is_stdout(p))
    {
        crate::output::check_writable(path)?;
    }
    let cgroup = match &opts.target {
        Target::Cgroup(arg) => Some(arg.resolve()?),
        _ => None,
    };
    // Fork before any thread exists; the child waits for us before it execs.
    let mut launched = match &opts.target {
        Target::Command(argv) => Some(Launched::fork(argv)?),
        _ => None,
    };
    // Bound before tracing starts, so that a taken or bad address fails first.
    let metrics_listener = opts.metrics.map(metrics_server::bind).transpose()?;
    let mut tracer = Tracer::load_for(opts.ring_mb << 20, cgroup.is_some())?;
    tracer.set_follow(opts.follow || cgroup.is_some())?;
    if let Some(c) = &cgroup {
        tracer.set_cgroups(&c.ids())?;
    }
    let ring = tracer.take_ring()?;
    let recording = opts.record.is_some();
    let mut session = match (&opts.target, &launched, &cgroup) {
        (Target::Pid(pid), _, _) => {
            let pid = *pid;
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            tracer.add_target(pid, capture_for(opts.unwind, Some(&exe)))?;
            Session::new(attach_running(pid, opts.unwind, recording)?, opts.follow)
        }
        (_, Some(l), _) => {
            let capture = capture_for(opts.unwind, Some(&l.program));
            tracer.add_target(l.pid, capture)?;
            let mut state = State::new(l.pid, opts.unwind, capture);
            state.comm = PathBuf::from(&l.program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            if recording {
                state.log = Some(Vec::new());
            }
            // Its mappings are fdtrace's own until it execs, which reads them anew.
            state.baseline(false)?;
            Session::new(state, opts.follow)
        }
        (_, None, Some(c)) => {
            // The kernel adopts the cgroup's processes as they make syscalls; these are the ones
            // there now, read as when attaching to a pid (a process the kernel adopted first is
            // read once: its JOIN record finds it known).
            let mut session = Session::of_cgroup(Some(c.clone()), opts.unwind);
            for pid in c.processes() {
                if pid == std::process::id() {
                    continue;
                }
                let exe = PathBuf::from(format!("/proc/{pid}/exe"));
                tracer.add_target(pid, capture_for(opts.unwind, Some(&exe)))?;
                match attach_running(pid, opts.unwind, recording) {
                    Ok(p) => session.add_process(p),
                    // Gone meanwhile.
                    Err(e) => debug!("pid {pid} of the cgroup: {e:#}"),
                }
            }
            session
        }
        _ => unreachable!("a target"),
    };
    if let Some(root) = session.root() {
        debug!(
            "unwinding pid {}: {}",
            root.pid,
            if root.capture == capture::FRAME_POINTERS {
                "frame pointers"
            } else {
                "DWARF CFI over a stack copy"
            }
        );
    }
    let what = match (&opts.target, &cgroup, session.root()) {
        (_, Some(c), _) => c.describe(),
        (Target::Pid(p), _, Some(r)) => format!("pid {p} ({})", r.comm.as_deref().unwrap_or("?")),
        (Target::Command(argv), _, _) => argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if let Some(path) = &opts.record {
        session.start_recording(Recorder::create(path, what.clone())?);
    }
    // From here on, stderr is written only through the live view's writer, which never waits
    // for a reader: the kernel is producing events.
    // Ctrl-C and SIGTERM are caught before "tracing" is said: a signal sent as soon as it shows
    // ends the session with its report, never the process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = {
        let _in_runtime = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        }
    };
    let interactive = !opts.quiet && std::io::stderr().is_terminal();
    let mut out = Outputs {
        live: Some(LiveWriter::start(std::io::stderr(), interactive)),
        quiet: opts.quiet,
        quit: match opts.target {
            Target::Pid(_) | Target::Cgroup(_) if interactive => crate::terminal::QuitKey::listen(),
            _ => None,
        },
        metrics: match metrics_listener {
            Some(l) => {
                let p = Published::default();
                metrics_server::start(l, p.clone())?;
                Some(p)
            }
            None => None,
        },
    };
    if let Some(w) = out.live.as_mut()
        && !w.screen()
    {
        match (&opts.target, &cgroup) {
            (Target::Pid(_), _) => w.send(format!(
                "fdtrace: tracing {what}{}; Ctrl-C to stop and report\n",
                if opts.follow { " and its children" } else { "" }
            )),
            (_, Some(_)) => w.send(format!(
                "fdtrace: tracing {what}: {} process{} now, and every one that enters it; Ctrl-C to stop and report\n",
                session.procs.len(),
                if session.procs.len() == 1 { "" } else { "es" },
            )),
            _ => {}
        }
    }
    let started = Instant::now();
    if let Some(l) = launched.as_mut() {
        l.release()?;
    }
    crate::priority::raise_consumer();
    let symbols = Symbols::new();
    let stop = rt.block_on(follow(
        &mut session,
        &mut tracer,
        ring,
        &mut launched,
        &opts,
        &symbols,
        &mut out,
        signals,
    ));
    // The terminal's screen is restored before anything else is written.
    let live_dropped = out
        .live
        .take()
        .map(|w| w.finish(Duration::from_millis(200)));
    let stop = stop?;
    debug!(
        "stopped after {:?} ({})",
        started.elapsed(),
        match stop {
            Stop::Duration => "duration",
            Stop::Signal => "signal",
            Stop::TargetExited => "target exited",
            Stop::CgroupRemoved => "cgroup removed",
        }
    );
    if tracer.pending_errors() > 0 {
        warn!(
            "{} syscalls could not be followed from entry to exit",
            tracer.pending_errors()
        );
    }
    let duration_s = started.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    let mut ends = Vec::new();
    for p in session.procs.values_mut() {
        let exited = p.exited_ns.is_some() || !procinfo::exists(p.pid);
        let now_ns = p.exited_ns.unwrap_or_else(monotonic_ns);
        // Ground truth, while the process still lives.
        let proc_fds = if exited {
            None
        } else {
            procinfo::fds(p.pid).ok()
        };
        let meta = Meta {
            pid: p.pid,
            parent: p.parent,
            command: p.comm.clone(),
            duration_s,
            target_exited: exited,
            lost_events: tracer.lost_events(),
            stack_errors: tracer.stack_errors(),
            missing_tracepoints: tracer.missing.clone(),
            rlimit_nofile: procinfo::nofile_limit(p.pid).or(p.rlimit),
            container: crate::container::of(p.pid).or_else(|| p.container.clone()),
        };
        ends.push((p.pid, meta.clone(), proc_fds.clone()));
        reports.push(report::build(
            meta,
            &p.table,
            opts.min_age,
            &mut p.stacks,
            &symbols,
            now_ns,
            proc_fds.as_deref(),
            Some(&p.history),
        ));
    }
    if let Some(l) = launched.as_mut() {
        l.terminate();
    }
    let reason = match stop {
        Stop::Duration => "duration reached",
        Stop::Signal => "interrupted",
        Stop::TargetExited => "target exited",
        Stop::CgroupRemoved => "cgroup removed",
    };
    if let Some((bytes, path)) = session.finish_recording(&ends, tracer.lost_events(), reason)? {
        let events: u64 = session
            .procs
            .values()
            .map(|p| p.table.stats.opens + p.table.stats.closes)
            .sum();
        crate::output::say(&format!(
            "fdtrace: recorded {} process{}, {events} births and closes, {bytes} bytes, to {}; read it with `fdtrace report {}`",
            session.procs.len(),
            if session.procs.len() == 1 { "" } else { "es" },
            path.display(),
            path.display()
        ));
        tracer.release_in_background();
        return Ok(exit_code(&launched));
    }
    let Some(root_index) = reports
        .iter()
        .position(|r| Some(r.meta.pid) == session.root)
    else {
        bail!("{what} held no process while it was traced: nothing to report");
    };
    let mut report = reports.remove(root_index);
    report.processes = reports;
    report.live_updates_dropped = live_dropped;
    report.stray_events = Some(session.stray_events);
    let text = if opts.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        report::render_text_all(&report, opts.all)
    };
    // The report goes to -o FILE, to stdout with `-o -` or when tracing a pid (so that it can
    // be piped), and to stderr when a launched command keeps stdout for itself.
    match (&opts.output, &opts.target) {
        (Some(path), _) if !crate::output::is_stdout(path) => {
            crate::output::write_atomically(path, text.as_bytes())
                .with_context(|| format!("writing the report to {}", path.display()))?
        }
        (Some(_), _) | (None, Target::Pid(_) | Target::Cgroup(_)) => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the report to stdout")?,
        (None, Target::Command(_)) => std::io::stderr()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the report to stderr")?,
    }
    tracer.release_in_background();
    Ok(exit_code(&launched))
}

/// A running process, as fdtrace finds it when it attaches: what it holds now (pre-existing),
/// its mappings, limits and container; how its stacks are captured follows its binary.
fn attach_running(pid: u32, mode: UnwindMode, recording: bool) -> Result<State> {
    // Read through /proc/PID/exe: the process's own file, in a container or deleted too.
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let mut state = State::new(pid, mode, capture_for(mode, Some(&exe)));
    state.comm = procinfo::comm(pid);
    if recording {
        state.log = Some(Vec::new());
    }
    state.baseline(true)?;
    Ok(state)
}

fn exit_code(launched: &Option<Launched>) -> i32 {
    launched.as_ref().and_then(|l| l.exit_code()).unwrap_or(0)
}

/// The `close_range` flags this kernel accepts: `CLOSE_RANGE_UNSHARE` since 5.9,
/// `CLOSE_RANGE_CLOEXEC` since 5.11. A call with any other bit fails with EINVAL.
fn close_range_flags() -> u32 {
    static FLAGS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *FLAGS.get_or_init(|| {
        let v = aya::util::KernelVersion::current().unwrap_or(aya::util::KernelVersion::new(
            u8::MAX,
            0,
            0,
        ));
        close_range_flags_of(v >= aya::util::KernelVersion::new(5, 11, 0))
    })
}

fn close_range_flags_of(has_cloexec: bool) -> u32 {
    let mut f = fdtrace_common::CLOSE_RANGE_UNSHARE;
    if has_cloexec {
        f |= fdtrace_common::CLOSE_RANGE_CLOEXEC;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control buffer with one SCM_RIGHTS message carrying `fds`.
    fn cmsg(fds: &[i32]) -> Vec<u8> {
        let len = 16 + 4 * fds.len();
        let mut b = (len as u64).to_ne_bytes().to_vec();
        b.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        b.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        for fd in fds {
            b.extend_from_slice(&fd.to_ne_bytes());
        }
        b.resize(len.div_ceil(8) * 8, 0);
        b
    }

    /// An open event of `fd` in process `pid`, with no stack.
    fn open_event(pid: u32, fd: i32) -> Event<'static> {
        Event::Open(Open {
            hdr: Header {
                kind: fdtrace_common::kind::OPEN,
                tgid: pid,
                tid: pid,
                ..Header::default()
            },
            fd,
            fd2: -1,
            arg: -1,
            flags: 0,
            syscall: fdtrace_common::syscall::OPENAT,
            path: "/dev/null".into(),
            ip: 0,
            sp: 0,
            bp: 0,
            sock: Default::default(),
            control: Vec::new(),
            stack: UserStack::None,
        })
    }

    fn close_event(pid: u32, fd: i32) -> Event<'static> {
        Event::Close {
            hdr: Header {
                kind: fdtrace_common::kind::CLOSE,
                tgid: pid,
                tid: pid,
                ..Header::default()
            },
            fd,
        }
    }

    /// Reconciliation against this test process's own /proc/self/fd: a descriptor born
    /// without an event is drift after two rounds; a number that events keep opening and
    /// closing (a busy loop caught open by /proc at both rounds) is not.
    #[test]
    fn reconciliation_tells_a_missed_open_from_a_busy_number() {
        let pid = std::process::id();
        let mut st = State::new(pid, UnwindMode::Fp, capture::FRAME_POINTERS);
        st.baseline(false).unwrap();
        // Numbers far above what this process uses, which no other test's open can take.
        let high = |min: i32| {
            let f = std::fs::File::open("/dev/null").unwrap();
            // SAFETY: duplicating a descriptor we own; the copy is closed below.
            let fd =
                unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_DUPFD, min) };
            assert!(fd >= min);
            fd
        };
        // Opened behind the model's back (no event): a missed open.
        let missed_fd = high(700);
        // Open in /proc at both rounds, but opened and closed by events in between.
        let busy_fd = high(800);
        // (Other tests of this process open files too: only these two numbers are checked.)
        st.reconcile();
        assert!(st.table.get(missed_fd).is_none());
        st.apply(open_event(pid, busy_fd));
        st.apply(close_event(pid, busy_fd));
        st.reconcile();
        assert!(
            st.table.get(missed_fd).is_some(),
            "the missed open is corrected"
        );
        assert!(
            st.table.get(busy_fd).is_none(),
            "the busy number is not drift"
        );
        // Untouched since, a real difference on that number is found at the next round.
        st.reconcile();
        assert!(st.table.get(busy_fd).is_some());
        // SAFETY: closing the two copies made above.
        unsafe {
            libc::close(missed_fd);
            libc::close(busy_fd);
        }
    }

    #[test]
    fn close_range_flags_follow_the_kernel() {
        use fdtrace_common::{CLOSE_RANGE_CLOEXEC as C, CLOSE_RANGE_UNSHARE as U};
        // 5.10: CLOSE_RANGE_CLOEXEC is an unknown flag, the call fails and marks nothing.
        assert_ne!(C & !close_range_flags_of(false), 0);
        assert_eq!(U & !close_range_flags_of(false), 0);
        assert_eq!((C | U) & !close_range_flags_of(true), 0);
        assert_ne!(8 & !close_range_flags_of(true), 0);
    }

    #[test]
    fn scm_rights_descriptors_are_found() {
        assert_eq!(scm_rights_fds(&cmsg(&[5, 9])), vec![5, 9]);
        // Another control message first (SCM_CREDENTIALS, level SOL_SOCKET type 2).
        let mut creds = 28u64.to_ne_bytes().to_vec();
        creds.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        creds.extend_from_slice(&2i32.to_ne_bytes());
        creds.resize(32, 0);
        creds.extend(cmsg(&[7]));
        assert_eq!(scm_rights_fds(&creds), vec![7]);
        // Cut or bogus buffers never panic.
        assert_eq!(scm_rights_fds(&cmsg(&[5])[..10]), Vec::<i32>::new());
        assert_eq!(scm_rights_fds(&[0xff; 40]), Vec::<i32>::new());
    }

    #[test]
    fn recvmmsg_chunks_are_read_per_message() {
        use fdtrace_common::syscall::RECVMMSG_CHUNK;
        let mut chunks = vec![0u8; 4 * RECVMMSG_CHUNK];
        for (i, fds) in [&[3, 4][..], &[][..], &[8][..]].iter().enumerate() {
            if fds.is_empty() {
                continue;
            }
            let c = cmsg(fds);
            let at = i * RECVMMSG_CHUNK;
            chunks[at..at + 8].copy_from_slice(&(c.len() as u64).to_ne_bytes());
            chunks[at + 8..at + 8 + c.len()].copy_from_slice(&c);
        }
        assert_eq!(recvmmsg_fds(&chunks), vec![3, 4, 8]);
        assert_eq!(recvmmsg_fds(&[0u8; 10]), Vec::<i32>::new());
    }
}
