//! Event types shared by the eBPF programs and the user-space side.
//!
//! Every record in the ring buffer starts with a [`Header`]; the decoder reads its `kind` before
//! the body. All fields are fixed-width integers with explicit padding so both sides agree on the
//! layout byte for byte.
#![no_std]

/// Longest path copied from a syscall argument (including the terminating NUL).
pub const MAX_PATH: usize = 256;
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
}

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
}

/// Which syscall created a descriptor (`OpenEvent::syscall`).
pub mod syscall {
    pub const OPENAT: u32 = 1;
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 3;
    pub const OPENAT2: u32 = 4;
    pub const SOCKET: u32 = 10;
    pub const ACCEPT: u32 = 11;
    pub const DUP: u32 = 13;
    /// dup2 and dup3: the new number is closed first if it was open.
    pub const DUP2: u32 = 14;
    /// fcntl F_DUPFD / F_DUPFD_CLOEXEC.
    pub const FCNTL_DUPFD: u32 = 16;
    pub const EVENTFD: u32 = 17;
    pub const EPOLL: u32 = 18;
    /// pipe and pipe2: two descriptors (`fd` and `fd2`).
    pub const PIPE: u32 = 19;
    /// Two descriptors (`fd` and `fd2`).
    pub const SOCKETPAIR: u32 = 20;
    pub const TIMERFD: u32 = 21;
    pub const SIGNALFD: u32 = 22;
    pub const INOTIFY: u32 = 23;
    pub const MEMFD: u32 = 24;
    pub const PIDFD: u32 = 25;

    /// Does this syscall return two descriptors through a user array?
    pub const fn returns_pair(sc: u32) -> bool {
        sc == PIPE || sc == SOCKETPAIR
    }

    /// Does this syscall take a path (or name) argument worth copying?
    pub const fn has_path(sc: u32) -> bool {
        sc == OPENAT || sc == OPEN || sc == CREAT || sc == OPENAT2 || sc == MEMFD
    }
}

/// Indexes into the per-CPU `STATS` array kept by the eBPF side.
pub mod stat {
    /// Ring-buffer reservations that failed: events that were lost.
    pub const LOST_EVENTS: u32 = 0;
    /// Births whose user stack could not be captured (copied or walked).
    pub const STACK_ERRORS: u32 = 1;
    /// Syscall entries that could not be remembered until their exit (pending map full).
    pub const PENDING_ERRORS: u32 = 2;
    pub const COUNT: u32 = 3;
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
    /// The duplicated descriptor for dup/dup2/dup3/fcntl, -1 otherwise.
    pub arg: i32,
    /// User registers at the syscall: instruction, stack and frame pointer.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// NUL-terminated path (truncated to `MAX_PATH - 1` bytes).
    pub path: [u8; MAX_PATH],
    /// The captured user stack (see `stack_kind`).
    pub stack: [u8; STACK_BYTES],
}

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

/// `CLOSE_RANGE_CLOEXEC`: mark close-on-exec instead of closing.
pub const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

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
}

// Layout checks: both sides compile these.
const _: () = assert!(core::mem::size_of::<Header>() == 24);
const _: () = assert!(core::mem::size_of::<CloseEvent>() == 32);
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 24);
const _: () = assert!(core::mem::size_of::<CloseRangeEvent>() == 40);
const _: () = assert!(core::mem::size_of::<OpenEvent>() == 24 + 24 + 24 + MAX_PATH + STACK_BYTES);
