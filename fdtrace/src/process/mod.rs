//! One traced process as user space keeps it: its descriptor table, kept from the kernel's
//! records (births, closes, exec: this file), the stacks of its births (`stacks.rs`), its
//! sockets (`socket_state.rs`), descriptors passed over sockets (`scm_rights.rs`), its log for
//! a recording, and the reconciliation of the table with /proc (`reconcile.rs`).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use compact_str::{CompactString, format_compact};
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

mod reconcile;
mod scm_rights;
mod socket_state;
mod stacks;

use scm_rights::{recvmmsg_fds, scm_rights_fds};
use socket_state::SOCKS_PRUNE_MIN;

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
    /// Kernel socket → descriptors that may refer to it (checked on use; nearly always one, held
    /// without an allocation of its own).
    socks: foldhash::HashMap<u64, smallvec::SmallVec<[i32; 2]>>,
    /// `socks` is pruned of the sockets no descriptor refers to any more when it grows past
    /// this (see `index_socket`).
    socks_prune_at: usize,
    /// Differences with /proc seen at the last reconciliation (fd → missed open?).
    suspects: foldhash::HashMap<i32, bool>,
    /// Descriptor numbers an event opened or closed since the last reconciliation: a
    /// difference on such a number is the model and /proc seen at different moments of a busy
    /// number (a loop that opens and closes it), not a missed event.
    touched: crate::fd_slots::FdSlots<()>,
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
    /// The stack id each kept walk of the unwinder became (by the walk's number), for births
    /// whose stack is that walk alone (`stacks::plain_copy`): given again without unwinding
    /// or interning.
    walk_stacks: foldhash::HashMap<u64, StackId>,
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
            socks_prune_at: SOCKS_PRUNE_MIN,
            suspects: Default::default(),
            touched: Default::default(),
            go_links: GoLinks::default(),
            uv_links: Default::default(),
            deep: Default::default(),
            runtime: crate::runtime_frames::RuntimeFrames::new(pid),
            walk_stacks: Default::default(),
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
        if self.log.is_some() {
            crate::table_changes::apply(&mut self.table, &r);
            self.log(r);
        } else {
            crate::table_changes::apply_spent(&mut self.table, r);
        }
    }

    /// The process exited at `ts_ns` (monotonic): its unwinder's binaries and tables go (see
    /// `StackUnwinder::release`); what the report needs stays.
    pub(crate) fn exited(&mut self, ts_ns: u64) {
        self.exited_ns = Some(ts_ns);
        self.unwinder.release();
        // Walks the released unwinder kept, and a birth after all reads the mappings at once.
        self.walk_stacks = Default::default();
        self.last_refresh = None;
        self.last_refresh_changed = true;
    }

    pub(crate) fn log(&mut self, r: Record) {
        if let Some(l) = self.log.as_mut() {
            l.push(r);
        }
    }

    /// A birth at `stack`, into the table (and the log), with what the kernel said of its
    /// socket (followed by its `sk` from then on).
    #[allow(clippy::too_many_arguments)]
    fn born(
        &mut self,
        ts_ns: u64,
        tid: u32,
        syscall: u32,
        fd: i32,
        (kind, target): (FdKind, CompactString),
        cloexec: bool,
        stack: StackId,
        sock: Option<Box<SocketInfo>>,
    ) {
        if let Some(sk) = sock.as_ref().map(|s| s.sk).filter(|&sk| sk != 0) {
            self.index_socket(sk, fd);
        }
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

    /// A birth that failed with EMFILE/ENFILE: counted per call site.
    fn on_open_failed(&mut self, o: Open) {
        let id = self.stack_of(&o);
        let what = if o.path.is_empty() {
            crate::model::syscall_name(o.syscall).to_string()
        } else {
            o.path.to_string()
        };
        self.change(Record::FailedOpen {
            ts_ns: o.hdr.ts_ns,
            tgid: self.pid,
            stack: id,
            errno: -o.fd,
            example: what,
        });
    }

    fn on_open(&mut self, o: Open) {
        self.touched.insert(o.fd, ());
        if o.fd2 >= 0 {
            self.touched.insert(o.fd2, ());
        }
        let id = self.stack_of(&o);
        use fdtrace_common::syscall as sc;
        let mut sock = None;
        let (kind, target): (FdKind, CompactString) = match o.syscall {
            sc::OPENAT | sc::OPEN | sc::CREAT | sc::OPENAT2 => (FdKind::File, o.path),
            s if sc::makes_sockets(s) => {
                let mut info = SocketInfo::from_kernel(&o.sock, o.hdr.ts_ns);
                info.accepted = o.syscall == sc::ACCEPT;
                if info.accepted
                    && info.local.is_none()
                    && let Some(l) = self.table.get(o.arg).and_then(|e| e.sock.as_ref())
                {
                    // A unix listener's path is the accepted socket's local address.
                    info.local = l.local.clone();
                }
                sock = Some(Box::new(info));
                (FdKind::Socket, "socket".into())
            }
            sc::PIPE => (FdKind::Pipe, "pipe".into()),
            sc::EVENTFD => (FdKind::Eventfd, "eventfd".into()),
            sc::EPOLL => (FdKind::Epoll, "epoll".into()),
            sc::TIMERFD => (FdKind::Timerfd, "timerfd".into()),
            sc::SIGNALFD => (FdKind::Signalfd, "signalfd".into()),
            sc::INOTIFY => (FdKind::Inotify, "inotify".into()),
            sc::MEMFD => (FdKind::Memfd, format_compact!("memfd:{}", o.path)),
            sc::PIDFD => (FdKind::Pidfd, "pidfd".into()),
            sc::OPEN_BY_HANDLE => (
                FdKind::File,
                procinfo::fd_link(self.pid, o.fd)
                    .map_or_else(|| "open_by_handle_at".into(), Into::into),
            ),
            sc::FANOTIFY => (FdKind::Other, "fanotify".into()),
            sc::MEMFD_SECRET => (FdKind::Memfd, "secretmem".into()),
            sc::USERFAULTFD => (FdKind::Other, "userfaultfd".into()),
            sc::PERF_EVENT => (FdKind::Other, "perf_event".into()),
            sc::BPF => (FdKind::Bpf, "bpf".into()),
            sc::IO_URING => (FdKind::IoUring, "io_uring".into()),
            sc::MQ_OPEN => (
                FdKind::File,
                format_compact!("mqueue:/{}", o.path.trim_start_matches('/')),
            ),
            sc::MOUNT_API => (FdKind::Other, "fs context".into()),
            sc::OPEN_TREE_PATH => (FdKind::Other, format_compact!("mount tree {}", o.path)),
            sc::LANDLOCK => (FdKind::Other, "landlock ruleset".into()),
            sc::PIDFD_GETFD => match procinfo::fd_link(self.pid, o.fd) {
                Some(link) => (FdKind::from_link(&link), link.into()),
                None => (FdKind::Other, "pidfd_getfd".into()),
            },
            // Installed outside the hooked syscalls: what it is, from /proc while it is open.
            sc::INSTALLED => match procinfo::fd_link(self.pid, o.fd) {
                Some(link) => (FdKind::from_link(&link), link.into()),
                None => (FdKind::Other, installed_by(o.arg).into()),
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
                            link.map_or_else(|| "received with SCM_RIGHTS".into(), Into::into),
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
                    None => (FdKind::Other, format_compact!("dup of fd {}", o.arg)),
                }
            }
            _ => (FdKind::Other, CompactString::default()),
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
        let cloexec = if o.syscall == sc::INSTALLED {
            // Set by whatever installed it: what /proc says, with the link above.
            procinfo::fd_flags(self.pid, o.fd).is_some_and(|f| f & O_CLOEXEC != 0)
        } else {
            o.flags & O_CLOEXEC != 0
        };
        // The second of a pair (pipe, socketpair) copies what the first moves: the kernel
        // described the first's socket only.
        let second = (o.fd2 >= 0).then(|| {
            let mut sock = sock.clone();
            if let Some(s) = sock.as_mut() {
                s.sk = 0;
            }
            (sock, target.clone())
        });
        let (ts_ns, tid) = (o.hdr.ts_ns, o.hdr.tid);
        if o.fd >= 0 {
            self.born(
                ts_ns,
                tid,
                o.syscall,
                o.fd,
                (kind, target),
                cloexec,
                id,
                sock,
            );
        }
        if let Some((sock, target)) = second {
            self.born(
                ts_ns,
                tid,
                o.syscall,
                o.fd2,
                (kind, target),
                cloexec,
                id,
                sock,
            );
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
                self.touched.insert(fd, ());
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
                    self.exited(hdr.ts_ns);
                    return true;
                }
            }
        }
        false
    }
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

/// What installed a descriptor outside the hooked syscalls, by the syscall it ran in (`arg` of
/// an `INSTALLED` birth).
fn installed_by(nr: i32) -> String {
    use fdtrace_common::syscall::{INSTALLED_BY_WORKER, NR_IO_URING_ENTER};
    match nr {
        INSTALLED_BY_WORKER => "installed by an io_uring worker".into(),
        NR_IO_URING_ENTER => "installed by io_uring_enter".into(),
        nr => format!("installed by syscall {nr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdtrace_common::Header;

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

    /// An accepted TCP connection at `fd`, kernel socket `sk`.
    fn accepted_tcp(pid: u32, fd: i32, sk: u64) -> Event<'static> {
        let Event::Open(mut o) = open_event(pid, fd) else {
            unreachable!()
        };
        o.syscall = fdtrace_common::syscall::ACCEPT;
        o.path = CompactString::default();
        o.sock = fdtrace_common::SockInfo {
            sk,
            family: 2,
            state: 1,
            sk_type: 1,
            protocol: 6,
            ..Default::default()
        };
        Event::Open(o)
    }

    /// The kernel sends no state change for a socket its last close released: the socket
    /// index does not keep such sockets (a server's every connection) for good, and a socket
    /// still open keeps its entry through the prunings.
    #[test]
    fn closed_sockets_leave_the_socket_index() {
        let pid = 4242;
        let mut st = State::new(pid, UnwindMode::Fp, capture::FRAME_POINTERS);
        let accepted = |fd: i32, sk: u64| accepted_tcp(pid, fd, sk);
        let kept = 0xffff_8880_0000_0000;
        st.apply(accepted(3, kept));
        for i in 0..10_000u64 {
            st.apply(accepted(4, kept + 0x1000 * (i + 1)));
            st.apply(close_event(pid, 4));
            assert!(
                st.socks.len() <= 2 * SOCKS_PRUNE_MIN,
                "{i}: {}",
                st.socks.len()
            );
        }
        assert_eq!(st.socks.get(&kept).map(|fds| fds.to_vec()), Some(vec![3]));
        // CLOSE_WAIT (8) reaches the socket still open.
        st.apply(Event::SockState(fdtrace_common::SockStateEvent {
            hdr: Header {
                kind: fdtrace_common::kind::SOCK_STATE,
                tgid: pid,
                tid: pid,
                ..Header::default()
            },
            sk: kept,
            oldstate: 1,
            newstate: 8,
            family: 2,
            protocol: 6,
            ..Default::default()
        }));
        let e = st.table.get(3).unwrap();
        assert_eq!(e.sock.as_ref().and_then(|s| s.state), Some(8));
    }

    /// The kernel reuses a freed `struct sock`'s address for a later socket (a server's next
    /// connection, often at the same descriptor number): the index keeps one entry for it, the
    /// descriptor that refers to it now, however many connections came before.
    #[test]
    fn a_reused_socket_address_is_indexed_once() {
        let pid = 4243;
        let mut st = State::new(pid, UnwindMode::Fp, capture::FRAME_POINTERS);
        let accepted = |fd: i32, sk: u64| accepted_tcp(pid, fd, sk);
        let sk = 0xffff_8880_0001_0000;
        for i in 0..1000 {
            // Alternately at fd 4 and fd 5: the old entry is stale either way.
            let fd = 4 + (i % 2);
            st.apply(accepted(fd, sk));
            assert_eq!(st.socks.get(&sk).map(|fds| fds.to_vec()), Some(vec![fd]));
            st.apply(close_event(pid, fd));
        }
        // A descriptor duplicated from an open socket refers to the same one: both stay.
        st.apply(accepted(6, sk));
        let Event::Open(mut dup) = open_event(pid, 7) else {
            unreachable!()
        };
        dup.syscall = fdtrace_common::syscall::DUP;
        dup.arg = 6;
        dup.path = CompactString::default();
        st.apply(Event::Open(dup));
        assert_eq!(st.socks.get(&sk).map(|fds| fds.to_vec()), Some(vec![6, 7]));
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
}
