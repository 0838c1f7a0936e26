//! The maps shared by the programs: targets, pending syscall arguments, the ring buffer, counters
//! and the kernel layout.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use fdtrace_common::{FailKey, KernelLayout, PID_MAX_LIMIT, TARGET_FLAGS_PER_ENTRY, setting, stat};

use crate::registers::UserRegs;

/// Thread-group ids being traced; the value says how to capture their stacks (`capture::*`).
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// One byte per thread-group id that is or was in `TARGETS` (entry `tgid / 64`, byte
/// `tgid % 64`): the first check of every program. The JIT inlines an array lookup, where a miss
/// in `TARGETS` is a helper call and a hash (60-100 ns per traced syscall of every untargeted
/// process in the nginx run). Flags are only ever set, each by a store of its own byte (no
/// read-modify-write to race with): by user space before it puts the process in `TARGETS`,
/// and by `sched_fork`. A stale flag costs its process the hash lookup, never an event. User space
/// sizes the map for the kernel's `pid_max`; ids beyond it go to the hash lookup.
#[map]
pub(crate) static TARGET_FLAGS: Array<[u8; TARGET_FLAGS_PER_ENTRY]> =
    Array::with_max_entries(PID_MAX_LIMIT / TARGET_FLAGS_PER_ENTRY as u32, 0);

/// Arguments of an open-like syscall, remembered from entry until exit, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) path: u64,
    pub(crate) flags: u64,
    pub(crate) syscall: u32,
    pub(crate) arg: i32,
}

#[map]
pub(crate) static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

/// What a birth's trampoline program hands to the record's program it tail-calls
/// (`fexit_birth`): the arguments and the user registers it read, and whose they are.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct HandOver {
    pub(crate) pid_tgid: u64,
    pub(crate) pending: Pending,
    pub(crate) regs: UserRegs,
}

/// One `HandOver` per CPU: a tail call runs on the CPU of its caller, at once, so no hash
/// insert, lookup and delete per birth (the tracepoint set's `PENDING` must survive the
/// syscall between its entry and exit). A program of another thread can only come in between
/// where the kernel preempts a running BPF program (`preempt=full`); the record's program
/// then finds another thread's id and counts the birth as lost, never as another's.
#[map]
pub(crate) static HAND_OVER: PerCpuArray<HandOver> = PerCpuArray::with_max_entries(1, 0);

/// Entry 0: `fexit_birth`, which the births' trampoline programs tail-call to send the record
/// (user space loads it and puts it here). One copy of that code for the verifier to walk,
/// instead of one per syscall: under emulation that was a minute of start-up.
#[map]
pub(crate) static BIRTH_EXIT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `BIRTH_EXIT` for the functions of a second prototype: a program may only tail-call one
/// attached to a function of the same prototype (the kernel compares them since the fix of
/// CVE-2024-50063, backported to 6.1), and the syscall functions come in two that differ only
/// in their argument's name (`regs` in most files, `__unused` in net/socket.c and others). User
/// space loads `fexit2_<name>` instead of `fexit_<name>` for those, and `fexit_birth2` here.
#[map]
pub(crate) static BIRTH_EXIT2: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// 1 for the number of each syscall whose births fdtrace's syscall hooks record (set by user
/// space): `fd_install`'s program skips the descriptors those install.
#[map]
pub(crate) static HOOKED_SYSCALLS: Array<u8> =
    Array::with_max_entries(fdtrace_common::syscall::SYSCALL_NRS, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Every failed birth ("too many open files"), counted per process, syscall and errno: exact
/// totals, whichever of them are sent as records (`sample_failure`).
#[map]
pub(crate) static FAILURES: PerCpuHashMap<FailKey, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Start of this CPU's current window of failure samples, and how many were sent in it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SampleWindow {
    pub(crate) start_ns: u64,
    pub(crate) sent: u64,
}

#[map]
pub(crate) static FAIL_WINDOW: PerCpuArray<SampleWindow> = PerCpuArray::with_max_entries(1, 0);

/// Offsets of kernel structures, filled by user space from BTF before attaching.
#[map]
pub(crate) static LAYOUT: Array<KernelLayout> = Array::with_max_entries(1, 0);

/// Kernel sockets (`struct sock *`) owned by a traced process, with the owner's tgid: the
/// filter of TCP state events, which often run in softirq under an unrelated process.
#[map]
pub(crate) static SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(131072, 0);

/// `SOCK_MARKS` has 1 << this many slots (`fdtrace_common::SOCK_MARK_BITS`).
pub(crate) const SOCK_MARK_BITS: u32 = fdtrace_common::SOCK_MARK_BITS;

/// How many of them are used, as the shift that leaves a hash that many bits: `64 -
/// SOCK_MARK_BITS` but where a test asks for fewer slots (set by user space before loading;
/// sockets sharing a slot is what the counts must get right).
#[unsafe(no_mangle)]
pub(crate) static SOCK_MARK_SHIFT: u32 = 64 - SOCK_MARK_BITS;

/// In front of `SOCKS`: per slot (a hash of the `struct sock *`), how many sockets in `SOCKS`
/// may hash there. A TCP state change of a socket whose slot is 0 is not a target's, found with
/// one array load the JIT inlines, not a hash lookup: every state change of every other
/// socket on the system pays only that. A slot is counted up before its socket enters `SOCKS`
/// and down only after a removal from `SOCKS` succeeded, so it never reads 0 while one of its
/// sockets is there; what the LRU evicts or an insert overwrites stays counted (a lookup for
/// nothing, never a missed change).
#[map]
pub(crate) static SOCK_MARKS: Array<u64> = Array::with_max_entries(1 << SOCK_MARK_BITS, 0);

/// `bind`/`connect` arguments remembered from entry until exit, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AddrPending {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) fd: i32,
    pub(crate) op: u32,
    pub(crate) _pad: u32,
}

/// Settings from user space (`setting::*`).
#[map]
pub(crate) static SETTINGS: Array<u32> = Array::with_max_entries(setting::COUNT, 0);

/// Flags of a clone/clone3 in progress, per thread, read when the child appears.
#[map]
pub(crate) static CLONE_FLAGS: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

#[map]
pub(crate) static ADDR_PENDING: HashMap<u64, AddrPending> = HashMap::with_max_entries(4096, 0);

/// The cgroup v2 ids of the traced cgroup and of the cgroups below it (kept by user space: the
/// helper that reads a task's ancestors is not allowed to tracepoint programs before 6.x).
#[map]
pub(crate) static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
