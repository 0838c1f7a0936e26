//! One traced process as user space keeps it: its descriptor table, kept from the kernel's
//! records (births, closes, exec), the stacks of its births and their unwinding, its sockets,
//! its log for a recording, and the reconciliation of the table with /proc.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use fdtrace_common::capture;
use fdtrace_record::Record;
use tracing::{debug, warn};

use crate::{
    clock::monotonic_ns,
    events::{Event, Open, UserStack},
    go_links::GoLinks,
    model::{FdKind, FdTable, O_CLOEXEC, Origin, StackId},
    procinfo,
    sockets::{self, SocketInfo},
    stacks::StackStore,
    unwind::{self, StackUnwinder, Unwound},
    verdict::History,
};

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
            } else if exe
                .and_then(crate::runtime::of_exe)
                .is_some_and(|r| r != crate::runtime::Runtime::Python)
            {
                // The program's frames sit under the runtime's: copy the stack deeper. (Python's
                // are read from the interpreter: the native frames above them fit the copy.)
                capture::deep_copy(capture::MAX_CHUNKS)
            } else {
                capture::STACK_COPY
            }
        }
    }
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
    pub(crate) mode: UnwindMode,
    /// How the kernel captures this process's stacks now (a `capture` constant).
    pub capture: u16,
    /// A new capture the kernel filter must be told about (the process exec'd another program).
    pub capture_change: Option<u16>,
    /// Open counts per call site, sampled every second: the verdicts' evidence.
    pub history: History,
    /// Go: which goroutine asked for the connections being dialed.
    go_links: GoLinks,
    /// Node.js: which JavaScript made the handles being connected.
    uv_links: crate::uv_links::UvLinks,
    /// Language runtimes: the pieces of stack sent before each birth.
    deep: crate::deep_stack::DeepStacks,
    /// Frames named by the language runtime (JIT code, Python).
    pub runtime: crate::runtime_frames::RuntimeFrames,
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
            go_links: GoLinks::default(),
            uv_links: Default::default(),
            deep: Default::default(),
            runtime: crate::runtime_frames::RuntimeFrames::new(pid),
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

    /// Apply a change to the table, as a replay of the recording will (`table_changes`), and
    /// log it when recording.
    pub(crate) fn change(&mut self, r: Record) {
        crate::table_changes::apply(&mut self.table, &r);
        self.log(r);
    }

    pub(crate) fn log(&mut self, r: Record) {
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
            self.log(crate::recorder::sock_record(self.pid, fd, ts_ns, &s));
        }
    }

    /// A birth at `stack`, into the table (and the log), with what the kernel said of its
    /// socket.
    #[allow(clippy::too_many_arguments)]
    fn born(
        &mut self,
        ts_ns: u64,
        tid: u32,
        syscall: u32,
        fd: i32,
        (kind, target): (FdKind, String),
        cloexec: bool,
        stack: StackId,
        sock: Option<SocketInfo>,
    ) {
        self.change(Record::Open {
            ts_ns,
            tgid: self.pid,
            tid,
            fd,
            kind: kind.code(),
            syscall: syscall as u8,
            cloexec,
            stack: Some(stack),
            target,
        });
        if let Some(s) = sock {
            if let Some(e) = self.table.get_mut(fd) {
                e.sock = Some(s);
            }
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
            self.change(Record::Preexisting {
                tgid: self.pid,
                fd: f.fd,
                kind: f.kind.code(),
                cloexec: f.cloexec,
                target: f.target,
                born_ns,
            });
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
        let (maps, jit) = procinfo::exec_maps(self.pid);
        self.unwinder.set_jit(jit);
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
        self.change(Record::FailedOpen {
            ts_ns: o.hdr.ts_ns,
            tgid: self.pid,
            stack: id,
            errno: -o.fd,
            example: what,
        });
    }

    /// Unwind and intern the creating stack of a birth.
    fn stack_of(&mut self, o: &Open) -> StackId {
        if self.unwinder.mapping_for(o.ip).is_none() {
            self.refresh_maps(false);
        }
        let unwound = self.unwind(o);
        let unwound = self.go_links.join(unwound, o.goid, o.parent_goid, o.gopc);
        let unwound = match &o.stack {
            UserStack::Copy(copy) => self.uv_links.join(unwound, o.hdr.tid, o.sp, copy),
            _ => unwound,
        };
        let unwinder = &self.unwinder;
        let (unwound, names) = self
            .runtime
            .name(o.hdr.tid, o.sp, unwound, |a| unwinder.is_jit(a));
        self.stacks
            .intern_named(unwound, self.unwinder.mappings(), names)
    }

    /// Before a report: name the JIT frames of stacks seen before the runtime's perf map
    /// named their code.
    pub fn name_jit_frames(&mut self) {
        self.runtime.name_late(&mut self.stacks);
    }

    /// Unwind the stack of a birth with the method its capture calls for.
    fn unwind(&mut self, o: &Open) -> Unwound {
        if !matches!(o.stack, UserStack::Copy(_)) {
            self.deep.forget(o.hdr.tid);
        }
        match &o.stack {
            UserStack::FramePointers(ips) => {
                if ips.iter().any(|&a| self.unwinder.mapping_for(a).is_none()) {
                    self.refresh_maps(false);
                }
                self.unwinder.unwind_fp(ips)
            }
            UserStack::Copy(bytes) => self.unwind_deep(o.hdr.tid, o.ip, o.sp, o.bp, bytes),
            UserStack::Shed => {
                self.table.stats.stacks_dropped += 1;
                Unwound {
                    frames: Vec::new(),
                    truncated: false,
                    method: unwind::Method::Shed,
                    ..Default::default()
                }
            }
            UserStack::None => {
                // Nothing captured: the instruction pointer alone, cut short.
                let mut u = self.unwind_copy(o.ip, o.sp, o.bp, &[]);
                u.truncated = true;
                if self.capture == capture::FRAME_POINTERS {
                    u.method = unwind::Method::Fp;
                }
                u
            }
        }
    }

    /// Unwind a copied stack, with the pieces beyond its first `STACK_BYTES` sent before it.
    fn unwind_deep(&mut self, tid: u32, ip: u64, sp: u64, bp: u64, copy: &[u8]) -> Unwound {
        match self.deep.join(tid, sp, copy) {
            Some(all) => self.unwind_copy(ip, sp, bp, &all),
            None => self.unwind_copy(ip, sp, bp, copy),
        }
    }

    fn unwind_copy(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Unwound {
        let runtime = &mut self.runtime;
        let mut unwound = self
            .unwinder
            .unwind(ip, sp, bp, stack, &mut |pc| runtime.jit_frame(pc));
        let uncovered = |u: &Unwound, w: &StackUnwinder| {
            // JIT code is in no file: known as such, it needs no re-read.
            u.frames
                .iter()
                .any(|f| w.mapping_for(f.lookup).is_none() && !w.is_jit(f.lookup))
        };
        if uncovered(&unwound, &self.unwinder) {
            self.refresh_maps(false);
            let runtime = &mut self.runtime;
            unwound = self
                .unwinder
                .unwind(ip, sp, bp, stack, &mut |pc| runtime.jit_frame(pc));
        }
        unwound
    }

    /// Node.js: a TCP handle made (its stack unwound as a birth's) or connected (`uv_links`).
    fn on_uv_handle(&mut self, h: crate::events::UvHandle) {
        if h.role == fdtrace_common::uv::CONNECT {
            self.uv_links.on_connect(h.hdr.tid, h.handle, h.sp, h.ret);
            return;
        }
        if self.unwinder.mapping_for(h.ip).is_none() {
            self.refresh_maps(false);
        }
        let made = self.unwind_deep(h.hdr.tid, h.ip, h.sp, h.bp, h.stack);
        self.uv_links.on_init(h.handle, made);
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
                        o.hdr.ts_ns,
                        o.hdr.tid,
                        o.syscall,
                        fd,
                        (
                            kind,
                            link.unwrap_or_else(|| "received with SCM_RIGHTS".into()),
                        ),
                        cloexec,
                        id,
                        None,
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
            if self.table.get(o.fd).is_some() {
                self.change(Record::Close {
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
                o.hdr.ts_ns,
                o.hdr.tid,
                o.syscall,
                fd,
                (kind, target.clone()),
                cloexec,
                id,
                sock,
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
        // `fds` is in descriptor order: a search, not a scan (a process may hold 100,000).
        let in_proc = |fd: i32| fds.binary_search_by_key(&fd, |p| p.fd).ok();
        for (fd, _) in self.table.iter() {
            if in_proc(fd).is_none() {
                now.insert(fd, false);
            }
        }
        for (&fd, &missed_open) in &now {
            if self.suspects.get(&fd) != Some(&missed_open) || self.touched.contains(&fd) {
                continue;
            }
            if missed_open {
                if let Some(p) = in_proc(fd).map(|i| &fds[i]) {
                    warn!(
                        "pid {}: fd {fd} ({}) opened without a traced birth",
                        self.pid, p.target
                    );
                    self.change(Record::Untraced {
                        ts_ns: monotonic_ns(),
                        tgid: self.pid,
                        fd,
                        kind: p.kind.code(),
                        cloexec: p.cloexec,
                        target: p.target.clone(),
                    });
                }
            } else {
                warn!("pid {}: fd {fd} closed without a traced close", self.pid);
                self.change(Record::DriftClose {
                    ts_ns: monotonic_ns(),
                    tgid: self.pid,
                    fd,
                });
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
            Event::GoLink(l) => {
                if l.stack
                    .iter()
                    .any(|&a| self.unwinder.mapping_for(a).is_none())
                {
                    self.refresh_maps(false);
                }
                self.go_links.on_link(l, &self.unwinder);
            }
            Event::UvHandle(h) => self.on_uv_handle(h),
            Event::OpenFailed(o) => self.on_open_failed(o),
            Event::StackChunk {
                hdr,
                sp,
                offset,
                bytes,
            } => self.deep.on_chunk(hdr.tid, sp, offset, bytes),
            Event::PyFrames {
                hdr,
                sp,
                frames,
                truncated,
            } => self
                .runtime
                .python
                .on_frames(hdr.tid, sp, frames, truncated),
            Event::Close { hdr, fd } => {
                self.touched.insert(fd);
                self.change(Record::Close {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    tid: hdr.tid,
                    fd,
                });
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
                self.change(Record::CloseRange {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    first,
                    last,
                    cloexec_only: flags & fdtrace_common::CLOSE_RANGE_CLOEXEC != 0,
                });
            }
            Event::Exec { hdr } => {
                let before = self.table.len();
                self.change(Record::Exec {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                });
                debug!(
                    "exec: {} close-on-exec descriptors closed",
                    before - self.table.len()
                );
                self.runtime.exec();
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
                self.change(Record::SetCloexec {
                    ts_ns: hdr.ts_ns,
                    tgid: self.pid,
                    fd,
                    on,
                });
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

/// A running process, as fdtrace finds it when it attaches: what it holds now (pre-existing),
/// its mappings, limits and container; how its stacks are captured follows its binary.
pub(crate) fn attach_running(pid: u32, mode: UnwindMode, recording: bool) -> Result<State> {
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
    use fdtrace_common::Header;

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
            goid: 0,
            parent_goid: 0,
            gopc: 0,
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
