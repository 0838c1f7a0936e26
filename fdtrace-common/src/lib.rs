//! Event types shared by the eBPF programs and the user-space side.
//!
//! Every record in the ring buffer starts with a [`Header`]; the decoder reads its `kind` before
//! the body. All fields are fixed-width integers with explicit padding so both sides agree on the
//! layout byte for byte.
#![no_std]

/// Longest path copied from a syscall argument (including the terminating NUL).
pub const MAX_PATH: usize = 256;
/// The kernel's largest possible process id on 64-bit (`PID_MAX_LIMIT`, 4M).
pub const PID_MAX_LIMIT: u32 = 4_194_304;
/// Process ids per entry of the kernel's `TARGET_FLAGS` array: one byte each.
pub const TARGET_FLAGS_PER_ENTRY: usize = 64;
/// Size of `OpenEvent::stack`. With [`capture::STACK_COPY`] it holds the user stack copied from the
/// user stack pointer upwards at each descriptor birth, so user space can unwind with DWARF CFI
/// even through code built without frame pointers; with [`capture::FRAME_POINTERS`] it holds the
/// kernel's frame-pointer walk (up to `STACK_BYTES / 8` addresses).
pub const STACK_BYTES: usize = 2048;

/// How the user stack of a birth is captured: the value of the eBPF `TARGETS` map for each traced
/// process (set by user space per process), echoed in `OpenEvent::stack_kind`.
pub mod capture {
    /// Nothing was captured (`OpenEvent::stack_kind` only).
    pub const NONE: u16 = 0;
    /// `stack` is a copy of the user stack memory from `sp` upwards (`stack_len` bytes).
    pub const STACK_COPY: u16 = 1;
    /// `stack` holds the kernel's frame-pointer walk (`bpf_get_stack` with `BPF_F_USER_STACK`):
    /// `stack_len / 8` little-endian u64 addresses, the instruction pointer first, then return
    /// addresses, innermost first. For programs that keep frame pointers (Go): the walk is not
    /// limited by the size of a stack copy.
    pub const FRAME_POINTERS: u16 = 2;
    /// No stack: the ring buffer was half full when the birth happened, so the record was sent
    /// without its `stack` field ([`crate::OPEN_HEAD_BYTES`] bytes long): under load, the
    /// birth itself must arrive, and its stack is the detail that gives way.
    pub const SHED: u16 = 3;

    /// In a `TARGETS` value with [`STACK_COPY`]: how many [`CHUNK_BYTES`] pieces of the stack
    /// beyond the first `STACK_BYTES` to send before a birth, as [`crate::StackChunkEvent`]s
    /// (bits 4-7; 0: none). For language runtimes, whose own frames sit deeper in the stack
    /// than a C program's (JavaScript under V8's C++, Java under the JVM's).
    pub const DEEP_SHIFT: u32 = 4;
    /// The largest number of chunks a `TARGETS` value may ask for.
    pub const MAX_CHUNKS: u32 = 7;
    /// Bytes of stack in one [`crate::StackChunkEvent`].
    pub const CHUNK_BYTES: usize = 4096;

    /// The capture value of a process whose stack is copied with `chunks` more pieces.
    pub const fn deep_copy(chunks: u32) -> u16 {
        let n = if chunks > MAX_CHUNKS {
            MAX_CHUNKS
        } else {
            chunks
        };
        STACK_COPY | (n << DEEP_SHIFT) as u16
    }

    /// The chunks a `TARGETS` value (or capture value) asks for (0 unless it copies stacks).
    pub const fn chunks(value: u32) -> u32 {
        if value & ((1 << DEEP_SHIFT) - 1) != STACK_COPY as u32 {
            return 0;
        }
        let n = (value >> DEEP_SHIFT) & 0xf;
        if n > MAX_CHUNKS { MAX_CHUNKS } else { n }
    }
}

/// The bytes of an [`OpenEvent`] before its `stack`: the whole of a record sent without a stack
/// ([`capture::SHED`]).
pub const OPEN_HEAD_BYTES: usize = core::mem::size_of::<OpenEvent>() - STACK_BYTES;

/// Record kinds (`Header::kind`).
pub mod kind {
    /// A new descriptor ([`crate::OpenEvent`]).
    pub const OPEN: u32 = 1;
    /// A descriptor is being closed ([`crate::CloseEvent`]).
    pub const CLOSE: u32 = 2;
    /// The process replaced its image: close-on-exec descriptors are gone ([`crate::ProcEvent`]).
    pub const EXEC: u32 = 3;
    /// A thread of the process exited ([`crate::ProcEvent`]).
    pub const EXIT: u32 = 4;
    /// `close_range(first, last, flags)` was entered ([`crate::CloseRangeEvent`]).
    pub const CLOSE_RANGE: u32 = 5;
    /// `bind` or `connect` succeeded (or a non-blocking connect began): [`crate::SockAddrEvent`].
    pub const SOCK_ADDR: u32 = 6;
    /// A traced TCP socket changed state (`sock:inet_sock_set_state`): [`crate::SockStateEvent`].
    pub const SOCK_STATE: u32 = 7;
    /// A traced process created a process (not a thread): [`crate::ForkEvent`].
    pub const FORK: u32 = 8;
    /// `fcntl(F_SETFD)` or `ioctl(FIOCLEX/FIONCLEX)` changed a close-on-exec flag:
    /// [`crate::CloexecEvent`].
    pub const CLOEXEC: u32 = 9;
    /// A birth failed with EMFILE or ENFILE ("too many open files"): an [`crate::OpenEvent`]
    /// whose `fd` is the negative errno.
    pub const OPEN_FAILED: u32 = 10;
    /// A process of the traced cgroup (`--cgroup`, `--container`) that was not traced made a
    /// traced syscall: the kernel traces it from now on ([`crate::ProcEvent`]).
    pub const JOIN: u32 = 11;
    /// A Go program asked for a connection, or started dialing one ([`crate::GoLinkEvent`]).
    pub const GO_LINK: u32 = 12;
    /// A piece of the user stack beyond the birth record's own copy, sent just before the
    /// birth by the same thread ([`crate::StackChunkEvent`]).
    pub const STACK_CHUNK: u32 = 13;
    /// CPython: the Python frames of the thread making a birth, read from the interpreter's
    /// frame chain, sent just before the birth by the same thread ([`crate::PyFramesEvent`]).
    pub const PY_FRAMES: u32 = 14;
    /// libuv (Node.js): a TCP handle was created, or a connect on one began
    /// ([`crate::UvHandleEvent`]).
    pub const UV_HANDLE: u32 = 15;
}

/// libuv, as Node.js uses it: a TCP socket is created by the connect (`uv_tcp_connect`, run in
/// a later tick of the event loop than the JavaScript that asked for it), but its handle by
/// `uv_tcp_init`, called from the JavaScript that made the `net.Socket`.
pub mod uv {
    /// [`crate::UvHandleEvent::role`]: `uv_tcp_init(loop, handle)` was entered; the record has
    /// the caller's registers and stack (more of it in [`crate::StackChunkEvent`]s sent first,
    /// as for a birth).
    pub const INIT: u32 = 0;
    /// `uv_tcp_connect(req, handle, addr, cb)` was entered (sent without its stack): the socket
    /// a birth on this thread makes before that call returns is the handle's.
    pub const CONNECT: u32 = 1;
}

/// Go programs: which goroutine a birth happened in, and which goroutine asked for a
/// connection that another goroutine dials (net/http).
pub mod go {
    /// In a `TARGETS` value: the capture mode (a [`crate::capture`] constant).
    pub const MODE_MASK: u32 = 0xff;
    /// In a `TARGETS` value: the offset of `runtime.g.goid`, in 8-byte words (0: not a Go
    /// program, or its layout is unknown).
    pub const GOID_SHIFT: u32 = 8;
    /// In a `TARGETS` value: the offset of `runtime.g.parentGoid` (Go 1.21+), in 8-byte words
    /// (0: none).
    pub const PARENT_SHIFT: u32 = 16;
    /// In a `TARGETS` value: the offset of `runtime.g.gopc` (the address of the `go` statement
    /// that started the goroutine), in 8-byte words (0: unknown).
    pub const GOPC_SHIFT: u32 = 24;

    /// The `TARGETS` value of a process: its capture mode and its `runtime.g` layout (byte
    /// offsets, 8-aligned, below 2,048; others are dropped).
    pub const fn target_value(capture: u16, goid_off: u32, parent_off: u32, gopc_off: u32) -> u32 {
        let goid = words(goid_off);
        let (parent, gopc) = if goid == 0 {
            (0, 0)
        } else {
            (words(parent_off), words(gopc_off))
        };
        (capture as u32 & MODE_MASK)
            | goid << GOID_SHIFT
            | parent << PARENT_SHIFT
            | gopc << GOPC_SHIFT
    }

    const fn words(off: u32) -> u32 {
        if off.is_multiple_of(8) && off < 2048 {
            off / 8
        } else {
            0
        }
    }

    /// [`crate::GoLinkEvent::role`]: `net/http.(*Transport).queueForDial` was entered: the
    /// goroutine asks for a connection (`conn` = its `*wantConn`); the record has its stack.
    pub const REQUEST: u32 = 0;
    /// `net/http.(*Transport).dialConnFor` was entered: this goroutine dials for `conn`
    /// (sent without its stack).
    pub const DIAL: u32 = 1;
}

/// Indexes into the `SETTINGS` array of the eBPF side.
pub mod setting {
    /// Non-zero: children of traced processes are traced too (`-f`).
    pub const FOLLOW: u32 = 0;
    /// Offset of `child_pid` in a `sched:sched_process_fork` record, from tracefs: 44 while
    /// the comm fields are arrays (6.1, 6.12), 20 since they are `__data_loc` strings.
    /// 0: not set, 20 assumed.
    pub const FORK_CHILD_PID: u32 = 1;
    pub const COUNT: u32 = 4;
}

/// `clone` flags that matter to the descriptor model.
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_THREAD: u64 = 0x10000;

/// Which syscall created a descriptor (`OpenEvent::syscall`).
///
/// Adding a birth syscall: its row in [`syscall::BIRTHS`] here (code, name, tracepoints), and
/// its entry program (`enter_<tracepoint>`) in fdtrace-ebpf's `syscalls.rs`.
pub mod syscall {
    /// A syscall that creates descriptors (or, [`SET_CLOEXEC`], changes their close-on-exec
    /// flag): its code in events and recordings, its name in reports, and the `syscalls:`
    /// tracepoints that see it, each with whether every supported kernel has it (program
    /// `enter_<name>` on `sys_enter_<name>`, the birth's exit program on `sys_exit_<name>`).
    pub struct Birth {
        pub code: u32,
        pub name: &'static str,
        pub tracepoints: &'static [(&'static str, bool)],
        /// A language runtime's stack at this birth is copied in full (files, sockets, pipes,
        /// duplicates).
        pub deep: bool,
    }

    macro_rules! births {
        ($($(#[$doc:meta])* $code:ident = $value:literal, $name:literal, [$(($tp:literal, $required:literal)),*], $deep:literal;)*) => {
            $($(#[$doc])* pub const $code: u32 = $value;)*
            /// Every birth syscall, in the order their programs are attached.
            pub const BIRTHS: &[Birth] = &[$(Birth {
                code: $code,
                name: $name,
                tracepoints: &[$(($tp, $required)),*],
                deep: $deep,
            }),*];
        };
    }

    births! {
        OPENAT = 1, "openat", [("openat", true)], true;
        OPEN = 2, "open", [("open", false)], true;
        CREAT = 3, "creat", [("creat", false)], true;
        OPENAT2 = 4, "openat2", [("openat2", false)], true;
        SOCKET = 10, "socket", [("socket", true)], true;
        ACCEPT = 11, "accept", [("accept", false), ("accept4", true)], true;
        DUP = 13, "dup", [("dup", true)], true;
        /// dup2 and dup3: the new number is closed first if it was open.
        DUP2 = 14, "dup2", [("dup2", false), ("dup3", true)], true;
        /// fcntl F_DUPFD / F_DUPFD_CLOEXEC (its program also sees F_SETFD: [`SET_CLOEXEC`]).
        FCNTL_DUPFD = 16, "fcntl(F_DUPFD)", [("fcntl", true)], false;
        EVENTFD = 17, "eventfd", [("eventfd", false), ("eventfd2", true)], false;
        EPOLL = 18, "epoll_create", [("epoll_create", false), ("epoll_create1", true)], false;
        /// pipe and pipe2: two descriptors (`fd` and `fd2`).
        PIPE = 19, "pipe", [("pipe", false), ("pipe2", true)], true;
        /// Two descriptors (`fd` and `fd2`).
        SOCKETPAIR = 20, "socketpair", [("socketpair", true)], true;
        TIMERFD = 21, "timerfd_create", [("timerfd_create", false)], false;
        SIGNALFD = 22, "signalfd", [("signalfd", false), ("signalfd4", false)], false;
        INOTIFY = 23, "inotify_init", [("inotify_init", false), ("inotify_init1", false)], false;
        MEMFD = 24, "memfd_create", [("memfd_create", false)], false;
        PIDFD = 25, "pidfd_open", [("pidfd_open", false)], false;
        OPEN_BY_HANDLE = 26, "open_by_handle_at", [("open_by_handle_at", false)], false;
        FANOTIFY = 27, "fanotify_init", [("fanotify_init", false)], false;
        MEMFD_SECRET = 28, "memfd_secret", [("memfd_secret", false)], false;
        USERFAULTFD = 29, "userfaultfd", [("userfaultfd", false)], false;
        PERF_EVENT = 30, "perf_event_open", [("perf_event_open", false)], false;
        /// bpf() commands that return a descriptor.
        BPF = 31, "bpf", [("bpf", false)], false;
        /// pidfd_getfd: a copy of another process's descriptor.
        PIDFD_GETFD = 32, "pidfd_getfd", [("pidfd_getfd", false)], false;
        IO_URING = 33, "io_uring_setup", [("io_uring_setup", false)], false;
        MQ_OPEN = 34, "mq_open", [("mq_open", false)], false;
        /// fsopen and fsmount.
        MOUNT_API = 35, "fsopen/fsmount", [("fsopen", false), ("fsmount", false)], false;
        /// open_tree and fspick: a path argument (a mount-API birth whose path is copied).
        OPEN_TREE_PATH = 38, "open_tree/fspick", [("fspick", false), ("open_tree", false)], false;
        LANDLOCK = 36, "landlock_create_ruleset", [("landlock_create_ruleset", false)], false;
        /// Descriptors received with SCM_RIGHTS (recvmsg): the control message is in `path`,
        /// its length in `arg`.
        RECVMSG = 37, "recvmsg", [("recvmsg", true)], false;
        /// SCM_RIGHTS descriptors of the first [`RECVMMSG_MSGS`] messages of a recvmmsg batch:
        /// `path` holds one [`RECVMMSG_CHUNK`]-byte chunk per message (a u64 control length,
        /// then the start of the control data); `arg` is the number of messages received.
        RECVMMSG = 39, "recvmmsg", [("recvmmsg", false)], false;
        /// Not a birth: fcntl(F_SETFD) / ioctl(FIOCLEX, FIONCLEX), turned into a
        /// `CloexecEvent`.
        SET_CLOEXEC = 40, "fcntl(F_SETFD)/ioctl(FIOCLEX)", [("ioctl", true)], false;
        /// A descriptor installed outside the hooked syscalls (io_uring's operations, an
        /// ioctl's, clone's pidfd), seen on `fd_install`'s trampoline: `arg` is the syscall's
        /// number, or [`INSTALLED_BY_WORKER`] in a kernel worker thread of the process
        /// (io_uring's io-wq and SQPOLL threads). No tracepoint: trampolines only.
        INSTALLED = 41, "fd_install", [], false;
    }

    /// The name of a syscall code in reports.
    pub fn name(code: u32) -> Option<&'static str> {
        BIRTHS.iter().find(|b| b.code == code).map(|b| b.name)
    }

    /// `arg` of an [`INSTALLED`] birth in a thread that never entered from user space (the
    /// worker threads io_uring starts in the process).
    pub const INSTALLED_BY_WORKER: i32 = -1;

    /// The x86_64 number of io_uring_enter, whose submissions install descriptors inline.
    pub const NR_IO_URING_ENTER: i32 = 426;

    /// Syscall numbers `HOOKED_SYSCALLS` covers (x86_64's are below 512).
    pub const SYSCALL_NRS: u32 = 512;

    /// Messages of a recvmmsg batch examined.
    pub const RECVMMSG_MSGS: usize = 4;
    pub const RECVMMSG_CHUNK: usize = 64;

    /// Does this syscall return two descriptors through a user array?
    pub const fn returns_pair(sc: u32) -> bool {
        sc == PIPE || sc == SOCKETPAIR
    }

    /// Does this syscall make sockets (whose `struct sock` the birth record describes)?
    pub const fn makes_sockets(sc: u32) -> bool {
        sc == SOCKET || sc == ACCEPT || sc == SOCKETPAIR
    }

    /// Does this syscall take a path (or name) argument worth copying?
    pub const fn has_path(sc: u32) -> bool {
        sc == OPENAT
            || sc == OPEN
            || sc == CREAT
            || sc == OPENAT2
            || sc == MEMFD
            || sc == MQ_OPEN
            || sc == OPEN_TREE_PATH
    }
}

/// Key of the kernel's exact count of failed births (the `FAILURES` per-CPU hash): every
/// "too many open files" is counted there, while only the first
/// [`FAIL_SAMPLES_PER_WINDOW`] failures per CPU in each [`FAIL_SAMPLE_WINDOW_NS`] are sent as
/// records with their stacks. A storm of failures (a process at its limit, retrying) thus
/// costs the ring buffer a bounded rate and never crowds out births and deaths.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailKey {
    pub tgid: u32,
    /// The [`syscall`] of the failed birth.
    pub syscall: u32,
    /// Positive errno (EMFILE, ENFILE).
    pub errno: u32,
    pub _pad: u32,
}

/// Length of a window of failure samples.
pub const FAIL_SAMPLE_WINDOW_NS: u64 = 250_000_000;
/// Failures sent with a stack per CPU and window; the others are only counted.
pub const FAIL_SAMPLES_PER_WINDOW: u64 = 128;

/// Indexes into the per-CPU `STATS` array kept by the eBPF side.
pub mod stat {
    /// Ring-buffer reservations that failed: events that were lost.
    pub const LOST_EVENTS: u32 = 0;
    /// Births whose user stack could not be captured (copied or walked).
    pub const STACK_ERRORS: u32 = 1;
    /// Syscall entries that could not be remembered until their exit (pending map full).
    pub const PENDING_ERRORS: u32 = 2;
    /// Sockets whose kernel object could not be found from their descriptor.
    pub const SOCK_ERRORS: u32 = 3;
    /// Births sent without their stack because the ring buffer was half full.
    pub const STACKS_SHED: u32 = 4;
    /// A Go link probe fired where the goroutine could not be read (r14 not a g whose stack
    /// holds the stack pointer) or without a `*wantConn`.
    pub const GO_LINK_ERRORS: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    /// Thread group id (the process id user space sees).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
}

/// A syscall returned a new descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub hdr: Header,
    pub fd: i32,
    /// Second descriptor of pipe/socketpair, -1 otherwise.
    pub fd2: i32,
    /// Open flags (O_*); `O_CLOEXEC` is set when the syscall's own cloexec flag was given.
    pub flags: u32,
    pub syscall: u32,
    /// Number of valid bytes in `stack` (0 when the capture failed).
    pub stack_len: u16,
    /// What `stack` holds: a [`capture`] constant.
    pub stack_kind: u16,
    /// The duplicated descriptor for dup/dup2/dup3/fcntl, the listening one for accept, -1
    /// otherwise.
    pub arg: i32,
    /// User registers at the syscall: instruction, stack and frame pointer.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Go programs whose `runtime.g` layout user space gave ([`go`]): the id of the goroutine
    /// that made the syscall and of the goroutine that started it (Go 1.21+), 0 when unknown.
    pub goid: u64,
    pub parent_goid: u64,
    /// Go programs: where the goroutine was started (`runtime.g.gopc`: the return address of
    /// the `go` statement's call into the runtime), 0 when unknown.
    pub gopc: u64,
    /// The kernel socket behind `fd`, for socket births (`sock.sk == 0` otherwise).
    pub sock: SockInfo,
    /// NUL-terminated path (truncated to `MAX_PATH - 1` bytes).
    pub path: [u8; MAX_PATH],
    /// The captured user stack (see `stack_kind`).
    pub stack: [u8; STACK_BYTES],
}

/// A kernel socket as read from its `struct sock` at the moment a descriptor for it was born.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// Address of the `struct sock`: the key of `sock:inet_sock_set_state` events.
    pub sk: u64,
    /// AF_* family.
    pub family: u16,
    /// SOCK_* type.
    pub sk_type: u16,
    /// IPPROTO_* protocol.
    pub protocol: u16,
    /// TCP state (TCP_* numbering of the kernel), 0 when unknown.
    pub state: u16,
    /// Local and peer ports, host byte order.
    pub lport: u16,
    pub rport: u16,
    pub _pad: u32,
    /// Local and peer addresses: 4 bytes for AF_INET, 16 for AF_INET6, network byte order.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// Longest socket address copied from `bind`/`connect` (`sizeof(struct sockaddr_un)` is 110).
pub const MAX_SOCKADDR: usize = 112;

/// `bind(fd, addr)` or `connect(fd, addr)` succeeded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrEvent {
    pub hdr: Header,
    pub fd: i32,
    /// [`SOCK_OP_BIND`] or [`SOCK_OP_CONNECT`].
    pub op: u32,
    /// Syscall result (0, or -EINPROGRESS for a non-blocking connect).
    pub ret: i32,
    /// Valid bytes in `addr`.
    pub len: u32,
    pub addr: [u8; MAX_SOCKADDR],
}

pub const SOCK_OP_BIND: u32 = 1;
pub const SOCK_OP_CONNECT: u32 = 2;

/// A traced socket changed TCP state. `hdr.tgid` is the process that created the descriptor
/// (the transition itself often runs in softirq under another process).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStateEvent {
    pub hdr: Header,
    pub sk: u64,
    pub oldstate: u32,
    pub newstate: u32,
    pub family: u16,
    pub protocol: u16,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Offsets of the kernel structures the eBPF side walks to find a descriptor's socket, read
/// from the running kernel's BTF by user space and stored in the `LAYOUT` map. An offset of
/// [`NO_OFFSET`] means the member was not found; `valid == 0` disables the walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    /// `task_struct.stack`, and where the user `pt_regs` sit above it: the way to the user
    /// registers on kernels without `bpf_task_pt_regs` (before 5.15).
    pub task_stack: u32,
    pub regs_in_stack: u32,
    /// `sock.sk_socket`: NULL once no file refers to the socket (orphaned by its last close).
    pub sk_socket: u32,
    /// `socket.file`, and the file's reference count (`file.f_count` before 6.13, `file.f_ref`
    /// since; which one in `file_refs`): a state change while its count says the file is being
    /// released is its last close's, of a socket no descriptor refers to.
    pub socket_file: u32,
    pub file_count: u32,
    /// How `file_count` reads (`file_refs::*`).
    pub file_refs: u32,
    /// Which groups of the members above sit side by side in this kernel (`adjacent::*`): each
    /// such group is read in one copy instead of one per member.
    pub adjacent: u32,
}

/// Groups of [`KernelLayout`] members that one read can take at once, where they sit so.
pub mod adjacent {
    /// `sock_common`'s head: `skc_daddr` at 0, `skc_rcv_saddr` 4, `skc_dport` 12, `skc_num` 14,
    /// `skc_family` 16, `skc_state` 18.
    pub const SOCK_HEAD: u32 = 1;
    /// `fdtable.max_fds` at 0 and `fdtable.fd` at 8.
    pub const FDTABLE: u32 = 2;
    /// `sock.sk_protocol` right after `sock.sk_type` (two u16).
    pub const TYPE_PROTOCOL: u32 = 4;
    /// `skc_v6_rcv_saddr` right after `skc_v6_daddr` (16 bytes each).
    pub const V6_ADDRS: u32 = 8;
    /// `sock.sk_type` right after `sock.sk_protocol` (as 6.18 has them).
    pub const PROTOCOL_TYPE: u32 = 16;
}

pub const NO_OFFSET: u32 = u32::MAX;

/// What [`KernelLayout::file_count`] is: how to tell that a file is being released.
pub mod file_refs {
    /// Not known on this kernel: never taken for released.
    pub const UNKNOWN: u32 = 0;
    /// `atomic_long_t f_count` (before 6.13): released at 0.
    pub const COUNT: u32 = 1;
    /// `file_ref_t f_ref` (6.13 and later): released from `FILE_REF_RELEASED` up (the count
    /// is parked at `FILE_REF_DEAD` while `__fput` runs).
    pub const REF: u32 = 2;
    /// `FILE_REF_RELEASED` of include/linux/file_ref.h.
    pub const REF_RELEASED: u64 = 0xC000_0000_0000_0000;
}

/// The kernel's table in front of its set of target sockets has 1 << this many slots
/// (fdtrace-ebpf's `SOCK_MARKS`).
pub const SOCK_MARK_BITS: u32 = 16;

/// A thread entered `close(fd)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    pub hdr: Header,
    pub fd: i32,
    pub _pad: u32,
}

/// `close_range(first, last, flags)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseRangeEvent {
    pub hdr: Header,
    pub first: u32,
    pub last: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// A process created another (fork, vfork, clone without CLONE_THREAD).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    pub hdr: Header,
    /// Process id of the child.
    pub child: u32,
    pub _pad: u32,
    /// The clone flags (0 for fork).
    pub flags: u64,
}

/// The close-on-exec flag of `fd` was set (`on == 1`) or cleared, successfully.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloexecEvent {
    pub hdr: Header,
    pub fd: i32,
    pub on: u32,
}

/// `CLOSE_RANGE_UNSHARE` (5.9): unshare the table first.
pub const CLOSE_RANGE_UNSHARE: u32 = 1 << 1;
/// `CLOSE_RANGE_CLOEXEC` (5.11): mark close-on-exec instead of closing.
pub const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// A Go goroutine asked for a connection or started dialing one (`kind::GO_LINK`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoLinkEvent {
    pub hdr: Header,
    /// [`go::REQUEST`] or [`go::DIAL`].
    pub role: u32,
    /// Number of valid bytes in `stack`: the kernel's frame-pointer walk (REQUEST only).
    pub stack_len: u32,
    /// The goroutine (`runtime.g.goid`).
    pub goid: u64,
    /// The `*wantConn` that links the requester and the dialer.
    pub conn: u64,
    /// The word at the stack pointer at function entry: the return address into the caller,
    /// which a frame-pointer walk from a function's first instruction skips.
    pub ret: u64,
    pub stack: [u8; STACK_BYTES],
}

/// The bytes of a [`GoLinkEvent`] before its `stack`: the whole of a DIAL record.
pub const GO_LINK_HEAD_BYTES: usize = core::mem::size_of::<GoLinkEvent>() - STACK_BYTES;

/// libuv's TCP handles (`kind::UV_HANDLE`, see [`uv`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UvHandleEvent {
    pub hdr: Header,
    /// [`uv::INIT`] or [`uv::CONNECT`].
    pub role: u32,
    /// Number of valid bytes in `stack` (INIT only).
    pub stack_len: u32,
    /// The `uv_tcp_t *`.
    pub handle: u64,
    /// User registers at the function's entry: instruction, stack and frame pointer.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The word at `sp`: the return address into the caller (CONNECT: the call a birth must
    /// still be inside of to be this connect's).
    pub ret: u64,
    pub stack: [u8; STACK_BYTES],
}

/// The bytes of a [`UvHandleEvent`] before its `stack`: the whole of a CONNECT record.
pub const UV_HANDLE_HEAD_BYTES: usize = core::mem::size_of::<UvHandleEvent>() - STACK_BYTES;

/// A piece of a thread's user stack at a birth, beyond the `STACK_BYTES` the birth record holds
/// (`kind::STACK_CHUNK`). Sent just before the birth record, by the same program run order:
/// `offset` bytes above `sp`, `len` valid bytes in `bytes`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackChunkEvent {
    pub hdr: Header,
    pub sp: u64,
    pub offset: u32,
    pub len: u32,
    pub bytes: [u8; capture::CHUNK_BYTES],
}

/// CPython: where a process's interpreter keeps its frame chain, as user space found it for
/// the process's Python version (the `PY_PROCS` map, by thread-group id). Offsets in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyLayout {
    /// Address of `_PyRuntime.interpreters.head` (a `PyInterpreterState *`).
    pub interpreters_head: u64,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u32,
    /// `PyThreadState.next`.
    pub thread_next: u32,
    /// `PyThreadState.native_thread_id` (the kernel's thread id).
    pub thread_tid: u32,
    /// `PyThreadState.cframe` (3.11, 3.12) or `.current_frame` (3.13+).
    pub thread_frame: u32,
    /// `_PyCFrame.current_frame` when `thread_frame` leads to a `_PyCFrame`; `py::NO_CFRAME`
    /// when it is the frame itself.
    pub cframe_frame: u32,
    /// `_PyInterpreterFrame.f_code` / `.f_executable`.
    pub frame_code: u32,
    /// `_PyInterpreterFrame.previous`.
    pub frame_previous: u32,
    /// `_PyInterpreterFrame.prev_instr` / `.instr_ptr`.
    pub frame_instr: u32,
    /// `_PyInterpreterFrame.is_entry` (3.11) or `.owner` (3.12+), one byte.
    pub frame_entry: u32,
    /// How `frame_entry` marks the first frame of a C call of the evaluation loop
    /// (`py::ENTRY_FLAG`, `py::ENTRY_SHIM`).
    pub entry_mode: u32,
}

/// CPython frame chains (`kind::PY_FRAMES`).
pub mod py {
    /// Python frames read at one birth, at most (innermost first).
    pub const MAX_FRAMES: usize = 64;
    /// Thread states searched for the birth's thread, at most.
    pub const MAX_THREADS: u32 = 128;
    /// `PyLayout::cframe_frame` when the thread state points at the frame itself.
    pub const NO_CFRAME: u32 = u32::MAX;
    /// 3.11: a frame whose `is_entry` byte is set was the first of its evaluation-loop call.
    pub const ENTRY_FLAG: u32 = 0;
    /// 3.12+: the evaluation loop pushes a shim frame (`owner` = `FRAME_OWNED_BY_CSTACK`) under
    /// the first frame of each call; the shim is sent with `SHIM_BIT`.
    pub const ENTRY_SHIM: u32 = 1;
    /// `FRAME_OWNED_BY_CSTACK` (3.12+).
    pub const OWNED_BY_CSTACK: u8 = 3;
    /// Set in a frame's `code` word (code objects are 8-byte aligned): this frame is the outermost
    /// of its evaluation-loop call (the frames before it run in one C frame of the loop).
    pub const ENTRY_BIT: u64 = 1;
    /// Set in a frame's `code` word: not a frame of the program but the shim under the first
    /// frame of an evaluation-loop call (3.12+): the frame before it is the outermost of its call.
    pub const SHIM_BIT: u64 = 2;
}

/// One Python frame: its code object and the instruction it is at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrame {
    /// `PyCodeObject *`, with `py::ENTRY_BIT` or `py::SHIM_BIT`.
    pub code: u64,
    /// `_Py_CODEUNIT *`: the last instruction begun (3.11, 3.12) or the current one (3.13+).
    pub instr: u64,
}

/// The Python frames of a thread at a birth (`kind::PY_FRAMES`), innermost first (shims
/// included, marked), sent just before the birth record; `sp` ties them to it. `truncated`: the
/// chain went on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyFramesEvent {
    pub hdr: Header,
    pub sp: u64,
    pub n: u32,
    pub truncated: u32,
    pub frames: [PyFrame; py::MAX_FRAMES],
}

/// Exec or thread exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub hdr: Header,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: fixed-width integers and byte arrays, no padding holes.
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::OpenEvent {}
    unsafe impl aya::Pod for super::CloseEvent {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::CloseRangeEvent {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::SockAddrEvent {}
    unsafe impl aya::Pod for super::SockStateEvent {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::ForkEvent {}
    unsafe impl aya::Pod for super::CloexecEvent {}
    unsafe impl aya::Pod for super::FailKey {}
    unsafe impl aya::Pod for super::GoLinkEvent {}
    unsafe impl aya::Pod for super::StackChunkEvent {}
    unsafe impl aya::Pod for super::UvHandleEvent {}
    unsafe impl aya::Pod for super::PyLayout {}
    unsafe impl aya::Pod for super::PyFrame {}
    unsafe impl aya::Pod for super::PyFramesEvent {}
}

// Layout checks: both sides compile these.
const _: () = assert!(core::mem::size_of::<Header>() == 24);
const _: () = assert!(core::mem::size_of::<CloseEvent>() == 32);
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 24);
const _: () = assert!(core::mem::size_of::<CloseRangeEvent>() == 40);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 56);
const _: () = assert!(core::mem::size_of::<SockAddrEvent>() == 24 + 16 + MAX_SOCKADDR);
const _: () = assert!(core::mem::size_of::<SockStateEvent>() == 24 + 24 + 32);
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 96);
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 40);
const _: () = assert!(core::mem::size_of::<CloexecEvent>() == 32);
const _: () = assert!(core::mem::size_of::<FailKey>() == 16);
const _: () =
    assert!(core::mem::size_of::<OpenEvent>() == 24 + 24 + 48 + 56 + MAX_PATH + STACK_BYTES);
const _: () = assert!(GO_LINK_HEAD_BYTES == 24 + 8 + 24);
const _: () = assert!(UV_HANDLE_HEAD_BYTES == 24 + 8 + 40);
const _: () = assert!(core::mem::size_of::<StackChunkEvent>() == 24 + 16 + capture::CHUNK_BYTES);
const _: () = assert!(core::mem::size_of::<PyLayout>() == 8 + 10 * 4);
const _: () = assert!(core::mem::size_of::<PyFramesEvent>() == 24 + 16 + 16 * py::MAX_FRAMES);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeSet;

    /// Each code, name and tracepoint once: a birth's code names one syscall (or family) in
    /// reports, and a tracepoint has one entry program.
    #[test]
    fn the_birth_table_names_each_code_and_tracepoint_once() {
        let b = super::syscall::BIRTHS;
        let codes: BTreeSet<u32> = b.iter().map(|b| b.code).collect();
        let names: BTreeSet<&str> = b.iter().map(|b| b.name).collect();
        let tps: std::vec::Vec<&str> = b
            .iter()
            .flat_map(|b| b.tracepoints.iter().map(|t| t.0))
            .collect();
        assert_eq!(codes.len(), b.len());
        assert_eq!(names.len(), b.len());
        assert_eq!(tps.iter().collect::<BTreeSet<_>>().len(), tps.len());
        // Every birth has its tracepoints but fd_install's, which trampolines alone see.
        assert!(
            b.iter()
                .all(|b| !b.tracepoints.is_empty() || b.code == super::syscall::INSTALLED)
        );
        assert_eq!(super::syscall::name(super::syscall::DUP2), Some("dup2"));
        assert_eq!(super::syscall::name(0), None);
    }
}
