//! fdtrace's kernel side: tracepoint programs that observe descriptor births and deaths of the
//! target processes and stream them to user space through one ring buffer.
//!
//! Only processes whose thread-group id is in `TARGETS` pass the first check; every other
//! process pays one array load per traced syscall (`TARGET_FLAGS`).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task_btf, bpf_get_stack,
            bpf_probe_read_user as probe_read_user_raw, bpf_task_pt_regs,
        },
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use fdtrace_common::{
    CLONE_FILES, CLONE_THREAD, CloexecEvent, CloseEvent, CloseRangeEvent, FAIL_SAMPLE_WINDOW_NS,
    FAIL_SAMPLES_PER_WINDOW, FailKey, ForkEvent, Header, KernelLayout, MAX_PATH, MAX_SOCKADDR,
    OPEN_HEAD_BYTES, OpenEvent, PID_MAX_LIMIT, ProcEvent, STACK_BYTES, SockAddrEvent, SockInfo,
    SockStateEvent, StackChunkEvent, TARGET_FLAGS_PER_ENTRY, capture, go, kind, setting, stat,
    syscall,
};

mod goroutine;
mod python;
mod uv_handles;

/// Thread-group ids being traced; the value says how to capture their stacks (`capture::*`).
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// One byte per thread-group id that is or was in `TARGETS` (entry `tgid / 64`, byte
/// `tgid % 64`): the first check of every program. The JIT inlines an array lookup, where a miss
/// in `TARGETS` is a helper call and a hash (60-100 ns per traced syscall of every untargeted
/// process in the nginx run). Flags are only ever set, each by a store of its own byte (no
/// read-modify-write to race with): by user space before it puts the process in `TARGETS`,
/// and by `sched_fork`. A stale flag costs its process the hash lookup, never an event. User space
/// sizes the map for the kernel's `pid_max`; ids beyond it go to the hash lookup.
#[map]
static TARGET_FLAGS: Array<[u8; TARGET_FLAGS_PER_ENTRY]> =
    Array::with_max_entries(PID_MAX_LIMIT / TARGET_FLAGS_PER_ENTRY as u32, 0);

/// Arguments of an open-like syscall, remembered from entry until exit, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    path: u64,
    flags: u64,
    syscall: u32,
    arg: i32,
}

#[map]
static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Every failed birth ("too many open files"), counted per process, syscall and errno: exact
/// totals, whichever of them are sent as records (`sample_failure`).
#[map]
static FAILURES: PerCpuHashMap<FailKey, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Start of this CPU's current window of failure samples, and how many were sent in it.
#[repr(C)]
#[derive(Clone, Copy)]
struct SampleWindow {
    start_ns: u64,
    sent: u64,
}

#[map]
static FAIL_WINDOW: PerCpuArray<SampleWindow> = PerCpuArray::with_max_entries(1, 0);

/// Offsets of kernel structures, filled by user space from BTF before attaching.
#[map]
static LAYOUT: Array<KernelLayout> = Array::with_max_entries(1, 0);

/// Kernel sockets (`struct sock *`) owned by a traced process, with the owner's tgid: the
/// filter of TCP state events, which often run in softirq under an unrelated process.
#[map]
static SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(131072, 0);

/// `bind`/`connect` arguments remembered from entry until exit, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct AddrPending {
    addr: u64,
    len: u32,
    fd: i32,
    op: u32,
    _pad: u32,
}

/// Settings from user space (`setting::*`).
#[map]
static SETTINGS: Array<u32> = Array::with_max_entries(setting::COUNT, 0);

/// Flags of a clone/clone3 in progress, per thread, read when the child appears.
#[map]
static CLONE_FLAGS: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

#[map]
static ADDR_PENDING: HashMap<u64, AddrPending> = HashMap::with_max_entries(4096, 0);

// Offsets in the syscall tracepoint records (see events/syscalls/*/format).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;
const RET: usize = 16;

// x86_64 `struct pt_regs` word indexes.
const PT_REGS_R14: usize = 1;
const PT_REGS_BP: usize = 4;
const PT_REGS_IP: usize = 16;
const PT_REGS_SP: usize = 19;
const PT_REGS_R10: usize = 7;
const PT_REGS_DX: usize = 12;
const PT_REGS_SI: usize = 13;
const PT_REGS_DI: usize = 14;

const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_CLOEXEC: u64 = 0o2_000_000;
const MFD_CLOEXEC: u64 = 1;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;
const F_SETFD: u64 = 2;
const FD_CLOEXEC: u64 = 1;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;
const ARG4: usize = 48;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const TCP_CLOSE: u32 = 7;
const EINPROGRESS: i64 = 115;
const EMFILE: i64 = 24;
const ENFILE: i64 = 23;

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// User space is woken when a record carries the unread bytes in the ring buffer across a
/// multiple of 1 << this (2 MiB). Other records are submitted without a wake-up and user
/// space drains the ring on a short timer: a wake-up (an `irq_work` self-interrupt, then
/// waking the consumer) costs more than the record itself (measured in docs/PERFORMANCE.md),
/// and crossing a multiple wakes it at most once per 2 MiB while it keeps up. 2 MiB is half
/// of the quarter of the default ring at which every record asks for a wake-up (`BEHIND_SHIFT`):
/// a consumer woken at 2 MiB has the time of another 2 MiB of records to catch up.
const WAKEUP_SHIFT: u32 = 21;

/// Once 1 << this many bytes (a quarter of the ring buffer, set by user space before loading)
/// are unread, user space has fallen far behind (it stalled reading /proc, say): every record then
/// asks for a wake-up. That costs the traced thread the wake-up's interrupt per record, which
/// slows it exactly while the ring fills up, so a stall of the consumer is ridden out instead of
/// losing records.
#[unsafe(no_mangle)]
static BEHIND_SHIFT: u32 = 22;

/// Unread bytes from which births are sent without their stacks: half the ring buffer (set by
/// user space before loading).
#[unsafe(no_mangle)]
static SHED_BYTES: u64 = 8 << 20;

#[inline(always)]
fn shed_bytes() -> u64 {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&SHED_BYTES) }
}

/// The ring buffer's share of a record of `T`: an 8-byte header, rounded up to 8 bytes.
#[inline(always)]
fn ring_bytes<T>() -> u64 {
    (core::mem::size_of::<T>() as u64 + 8 + 7) & !7
}

/// Wake-up flag for a record of `T` about to be written with `output` (not yet counted).
#[inline(always)]
fn wakeup_before<T>() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    crossing(avail, avail + ring_bytes::<T>())
}

/// Wake-up flag for a reserved record of `T` (already counted as unread).
#[inline(always)]
fn wakeup_after<T>() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    crossing(avail.saturating_sub(ring_bytes::<T>()), avail)
}

/// One test at the end of every program: each branch there multiplies the states the 5.10
/// verifier walks (it refused `exit_open` at its 1M-instruction limit with three).
#[inline(always)]
fn crossing(before: u64, after: u64) -> u64 {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    let behind = unsafe { core::ptr::read_volatile(&BEHIND_SHIFT) };
    let crossed = (before >> WAKEUP_SHIFT) ^ (after >> WAKEUP_SHIFT);
    if crossed | after.wrapping_shr(behind) != 0 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Count a failed birth (per CPU: no other writer of this slot).
#[inline(always)]
fn count_failure(tgid: u32, syscall: u32, errno: u32) {
    let key = FailKey {
        tgid,
        syscall,
        errno,
        _pad: 0,
    };
    match FAILURES.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of the entry.
        Some(p) => unsafe { *p += 1 },
        // A new entry zeroes the other CPUs' slots; one inserted meanwhile by another CPU is
        // updated in this CPU's slot only.
        None => {
            let _ = FAILURES.insert(&key, &1, 0);
        }
    }
}

/// Whether this failure is sent with its stack: the first `FAIL_SAMPLES_PER_WINDOW` of each
/// window on this CPU are.
#[inline(always)]
fn sample_failure() -> bool {
    let Some(w) = FAIL_WINDOW.get_ptr_mut(0) else {
        return true;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot; programs do not nest on a CPU for syscall tracepoints.
    unsafe {
        if now.wrapping_sub((*w).start_ns) >= FAIL_SAMPLE_WINDOW_NS {
            (*w).start_ns = now;
            (*w).sent = 0;
        }
        if (*w).sent >= FAIL_SAMPLES_PER_WINDOW {
            return false;
        }
        (*w).sent += 1;
    }
    true
}

/// False only for processes that are not traced: the cheap first half of `is_target`.
#[inline(always)]
fn maybe_target(tgid: u32) -> bool {
    match TARGET_FLAGS.get(tgid / TARGET_FLAGS_PER_ENTRY as u32) {
        Some(flags) => flags[(tgid % TARGET_FLAGS_PER_ENTRY as u32) as usize] != 0,
        None => true,
    }
}

/// How a traced process's stacks are captured (`capture::*`); None for other processes.
#[inline(always)]
fn traced_mode(tgid: u32) -> Option<u32> {
    if !maybe_target(tgid) {
        return None;
    }
    // SAFETY: read-only lookup of a plain value.
    unsafe { TARGETS.get(&tgid) }.copied()
}

/// `traced_mode`, and with a cgroup as the target, a process of that cgroup (or below it) not
/// traced yet becomes a target here (`adopt`): the processes that entered the cgroup since
/// tracing began, however they came (`docker exec`, a write to `cgroup.procs`).
#[inline(always)]
fn target_mode(tgid: u32) -> Option<u32> {
    if let Some(mode) = traced_mode(tgid) {
        return Some(mode);
    }
    // SAFETY: a constant of the loader (read-only data): 0, the verifier drops what follows.
    if unsafe { core::ptr::read_volatile(&CGROUP_FILTER) } == 0 {
        return None;
    }
    adopt(tgid)
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    target_mode(tgid).is_some()
}

/// Non-zero: a cgroup is the target (`--cgroup`, `--container`), and `CGROUPS` holds its id and
/// those of the cgroups below it. Set by the loader. Every process not traced pays one helper
/// call and one lookup per hooked syscall while it is set.
#[unsafe(no_mangle)]
static CGROUP_FILTER: u8 = 0;
/// fdtrace's own process, never adopted (it may run inside the cgroup it traces).
#[unsafe(no_mangle)]
static OWN_TGID: u32 = 0;

/// The cgroup v2 ids of the traced cgroup and of the cgroups below it (kept by user space: the
/// helper that reads a task's ancestors is not allowed to tracepoint programs before 6.x).
#[map]
static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// Trace `tgid` (the current process) if it is in the traced cgroup or below it, and tell user
/// space with a `JOIN` record.
#[inline(never)]
fn adopt(tgid: u32) -> Option<u32> {
    // SAFETY: a constant of the loader.
    if tgid == unsafe { core::ptr::read_volatile(&OWN_TGID) } {
        return None;
    }
    // SAFETY: helper without arguments; read-only lookup of a plain value.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup of a plain value.
    if unsafe { CGROUPS.get(&cgroup) }.is_none() {
        return None;
    }
    // Until user space has read its binary, its stacks are copied (DWARF unwinding); user space
    // switches Go programs to frame pointers when it sees the record.
    let mode = capture::STACK_COPY as u32;
    mark_target(tgid);
    // Several threads may get here at once: the one that inserts tells user space.
    if TARGETS
        .insert(&tgid, &mode, aya_ebpf::bindings::BPF_NOEXIST as u64)
        .is_ok()
    {
        let ev = ProcEvent {
            hdr: header(kind::JOIN, bpf_get_current_pid_tgid()),
        };
        if EVENTS
            .output::<ProcEvent>(&ev, wakeup_before::<ProcEvent>())
            .is_err()
        {
            bump(stat::LOST_EVENTS);
        }
    }
    Some(mode)
}

/// Set the flag of `tgid` in `TARGET_FLAGS`.
#[inline(always)]
fn mark_target(tgid: u32) {
    if let Some(flags) = TARGET_FLAGS.get_ptr_mut(tgid / TARGET_FLAGS_PER_ENTRY as u32) {
        // SAFETY: a byte of an array slot; other writers store other bytes, or the same 1.
        unsafe { (*flags)[(tgid % TARGET_FLAGS_PER_ENTRY as u32) as usize] = 1 };
    }
}

/// The field of the tracepoint record at `off`, loaded directly. The verifier allows aligned
/// loads of up to 8 bytes at constant offsets of a tracepoint's context; `read_at` calls
/// `bpf_probe_read_kernel` instead, a helper call per field (ten per TCP state record).
/// `off` must be a constant once inlined: a computed offset is refused at load time.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    const { assert!(core::mem::size_of::<T>() <= 8) };
    // SAFETY: the offsets come from the tracepoint formats; the record is readable.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

#[inline(always)]
fn header(kind: u32, pid_tgid: u64) -> Header {
    Header {
        kind,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Where a syscall's interesting arguments are in its tracepoint record.
#[derive(Clone, Copy)]
struct Args {
    sc: u32,
    /// Path, name or result-array pointer.
    path: Option<usize>,
    /// Flags argument.
    flags: Option<usize>,
    /// Bits of `flags` that mean close-on-exec (translated to O_CLOEXEC).
    cloexec_bit: u64,
    /// Flags that always apply.
    fixed: u64,
    /// Duplicated descriptor.
    arg: Option<usize>,
}

const NONE: Args = Args {
    sc: 0,
    path: None,
    flags: None,
    cloexec_bit: O_CLOEXEC,
    fixed: 0,
    arg: None,
};

/// What the exit program needs to know of a call, from its arguments (`read` gives the argument
/// at a tracepoint-record offset).
#[inline(always)]
fn pending_from(a: Args, read: impl Fn(Option<usize>) -> u64) -> Pending {
    let path = read(a.path);
    // `fixed` is a constant: kept opaque, the zeros of `Pending` are not merged into a call to
    // the byte-at-a-time `memset` this target links.
    let mut flags = a.fixed | opaque_zero();
    if a.sc == syscall::OPENAT2 {
        // `struct open_how` starts with `__u64 flags`.
        let how = read(a.flags);
        flags |= unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
    } else if a.flags.is_some() {
        let f = read(a.flags);
        if a.cloexec_bit == O_CLOEXEC {
            flags |= f;
        } else if f & a.cloexec_bit != 0 {
            flags |= O_CLOEXEC;
        }
    }
    Pending {
        path,
        flags,
        syscall: a.sc,
        arg: if a.arg.is_some() {
            read(a.arg) as i32
        } else {
            -1
        },
    }
}

#[inline(always)]
fn remember(ctx: &TracePointContext, a: Args) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint formats of these syscalls.
    let p = pending_from(a, |off| match off {
        Some(o) => field::<u64>(ctx, o),
        None => opaque_zero(),
    });
    if PENDING.insert(&pid_tgid, &p, 0).is_err() {
        bump(stat::PENDING_ERRORS);
    }
    0
}

/// Copy the top of the user stack into `dst`, trying smaller sizes near the stack's end.
#[inline(always)]
fn copy_stack(dst: &mut [u8; STACK_BYTES], sp: u64) -> u32 {
    let src = sp as *const c_void;
    let d = dst.as_mut_ptr() as *mut c_void;
    // SAFETY: each read writes at most STACK_BYTES into `dst`.
    unsafe {
        if probe_read_user_raw(d, STACK_BYTES as u32, src) == 0 {
            return STACK_BYTES as u32;
        }
        if probe_read_user_raw(d, (STACK_BYTES / 2) as u32, src) == 0 {
            return (STACK_BYTES / 2) as u32;
        }
        if probe_read_user_raw(d, (STACK_BYTES / 4) as u32, src) == 0 {
            return (STACK_BYTES / 4) as u32;
        }
        if probe_read_user_raw(d, (STACK_BYTES / 8) as u32, src) == 0 {
            return (STACK_BYTES / 8) as u32;
        }
    }
    0
}

/// The kernel's frame-pointer walk of the user stack into `dst`: u64 addresses, innermost first.
/// Returns the number of bytes written (0 on failure).
#[inline(always)]
fn walk_frame_pointers(ctx: &TracePointContext, dst: &mut [u8; STACK_BYTES]) -> u32 {
    // SAFETY: the helper writes at most STACK_BYTES into `dst`.
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            dst.as_mut_ptr() as *mut c_void,
            STACK_BYTES as u32,
            aya_ebpf::bindings::BPF_F_USER_STACK as u64,
        )
    };
    if n > 0 { n as u32 } else { 0 }
}

/// For the programs that run before a birth's own (`exit_deep_stack`, `exit_python_frames`):
/// will the birth at this exit be sent with its stack? Not when the syscall failed (but with
/// EMFILE/ENFILE, which is counted at its stack), nor under load (the shed rule).
#[inline(always)]
fn birth_gets_its_stack(ctx: &TracePointContext) -> bool {
    let ret: i64 = field(ctx, RET);
    if ret < 0 && ret != -EMFILE && ret != -ENFILE {
        return false;
    }
    EVENTS.query(BPF_RB_AVAIL_DATA as u64) < shed_bytes()
}

/// Language runtimes (`capture::chunks` of the target's value): the stack beyond the birth
/// record's own copy, in `capture::CHUNK_BYTES` pieces sent before the birth. Attached to a
/// birth's exit tracepoint before its birth program, so it runs first there (a tracepoint runs
/// its programs in the order they were attached) and user space finds the pieces waiting when
/// the birth arrives. A program of its own: the birth programs are at the 5.10 verifier's limits.
#[tracepoint]
pub fn exit_deep_stack(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(target) = traced_mode((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let chunks = capture::chunks(target);
    if chunks == 0 {
        return 0;
    }
    if !birth_gets_its_stack(&ctx) {
        return 0;
    }
    let sp = user_regs().sp;
    if sp == 0 {
        return 0;
    }
    send_deep_chunks(pid_tgid, chunks, sp);
    0
}

/// The stack above `sp` beyond the first `STACK_BYTES`: `chunks` records of
/// `capture::CHUNK_BYTES` (fewer where the stack ends), sent without a wake-up (the record
/// they precede brings one).
#[inline(always)]
fn send_deep_chunks(pid_tgid: u64, chunks: u32, sp: u64) {
    for i in 0..capture::MAX_CHUNKS {
        if i >= chunks {
            break;
        }
        let Some(mut entry) = EVENTS.reserve::<StackChunkEvent>(0) else {
            bump(stat::LOST_EVENTS);
            break;
        };
        let ev = entry.as_mut_ptr();
        let offset = STACK_BYTES as u32 + i * capture::CHUNK_BYTES as u32;
        // SAFETY: `ev` points to a reserved record of the right size; every field is written.
        let n = unsafe {
            (*ev).hdr = header(kind::STACK_CHUNK, pid_tgid);
            (*ev).sp = sp;
            (*ev).offset = offset;
            let n = copy_chunk(&mut (*ev).bytes, sp + offset as u64);
            (*ev).len = n;
            n
        };
        if n == 0 {
            entry.discard(0);
            break;
        }
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        if n < capture::CHUNK_BYTES as u32 {
            break;
        }
    }
}

/// Copy a piece of the user stack into `dst`, trying smaller sizes near the stack's end.
#[inline(always)]
fn copy_chunk(dst: &mut [u8; capture::CHUNK_BYTES], from: u64) -> u32 {
    let src = from as *const c_void;
    let d = dst.as_mut_ptr() as *mut c_void;
    const N: usize = capture::CHUNK_BYTES;
    // SAFETY: each read writes at most CHUNK_BYTES into `dst`.
    unsafe {
        if probe_read_user_raw(d, N as u32, src) == 0 {
            return N as u32;
        }
        if probe_read_user_raw(d, (N / 2) as u32, src) == 0 {
            return (N / 2) as u32;
        }
        if probe_read_user_raw(d, (N / 4) as u32, src) == 0 {
            return (N / 4) as u32;
        }
    }
    0
}

// The generated binding is declared with a `task_struct` argument.
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, task_struct};

/// 1 when the kernel has `bpf_get_current_task_btf` (5.11) and `bpf_task_pt_regs` (5.15). Set
/// by user space before loading; it lives in the frozen `.rodata`, so the verifier knows its
/// value and never visits the other branch: older kernels, which reject those helpers, load
/// the programs because the calls are dead code to them.
#[unsafe(no_mangle)]
static HAVE_TASK_PT_REGS: u8 = 1;

/// The user registers a syscall was entered with: where it was called from, and its first four
/// arguments.
#[derive(Clone, Copy, Default)]
struct UserRegs {
    ip: u64,
    sp: u64,
    bp: u64,
    di: u64,
    si: u64,
    dx: u64,
    /// Address of the task's `pt_regs` (for r10, read only when needed); 0 when unknown.
    base: u64,
}

/// The words of `pt_regs` read in one copy: `dx` (word 12) to `sp` (word 19). `bp` is read on
/// its own: a copy from word 4 would not fit the BPF stack of every program.
const PT_REGS_FIRST: usize = PT_REGS_DX;
const PT_REGS_WORDS: usize = PT_REGS_SP - PT_REGS_FIRST + 1;

impl UserRegs {
    /// The syscall argument at a tracepoint-record offset (`ARG0`..`ARG3`). x86_64 passes the
    /// first four in rdi, rsi, rdx and r10, and the kernel leaves them in `pt_regs` until the
    /// syscall returns.
    #[inline(always)]
    fn arg(&self, off: Option<usize>) -> u64 {
        match off {
            Some(ARG0) => self.di,
            Some(ARG1) => self.si,
            Some(ARG2) => self.dx,
            Some(ARG3) if self.base != 0 => {
                read_kernel::<u64>(self.base + PT_REGS_R10 as u64 * 8).unwrap_or(0)
            }
            _ => 0,
        }
    }
}

/// The current thread's user registers; zeros when unknown.
#[inline(always)]
fn user_regs() -> UserRegs {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    let have_helper = unsafe { core::ptr::read_volatile(&HAVE_TASK_PT_REGS) } != 0;
    let regs = if have_helper {
        // SAFETY: helpers available to tracing programs since 5.15; the pointer is read with
        // probe_read_kernel only.
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf() as *mut task_struct) as u64 }
    } else {
        // Before 5.15: x86_64's task_pt_regs(), task->stack + THREAD_SIZE - sizeof(pt_regs).
        let Some(l) = LAYOUT.get(0) else {
            return UserRegs::default();
        };
        if l.valid == 0
            || l.task_stack == fdtrace_common::NO_OFFSET
            || l.regs_in_stack == fdtrace_common::NO_OFFSET
        {
            return UserRegs::default();
        }
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        match read_kernel::<u64>(task + l.task_stack as u64) {
            Some(stack) if stack != 0 => stack + l.regs_in_stack as u64,
            _ => 0,
        }
    };
    if regs == 0 {
        return UserRegs::default();
    }
    // One copy of the words needed (each probe_read is a helper call with its own checks).
    let Some(w) = read_kernel::<[u64; PT_REGS_WORDS]>(regs + PT_REGS_FIRST as u64 * 8) else {
        return UserRegs::default();
    };
    let word = |i: usize| w[i - PT_REGS_FIRST];
    let ip = word(PT_REGS_IP);
    // A user-space ip, or the registers were not where we looked.
    if ip >= 0x0000_8000_0000_0000 {
        return UserRegs::default();
    }
    UserRegs {
        ip,
        sp: word(PT_REGS_SP),
        bp: read_kernel::<u64>(regs + PT_REGS_BP as u64 * 8).unwrap_or(0),
        di: word(PT_REGS_DI),
        si: word(PT_REGS_SI),
        dx: word(PT_REGS_DX),
        base: regs,
    }
}

/// 0, as a value the compiler cannot see (see `copy_words`).
#[inline(always)]
fn opaque_zero() -> u64 {
    let zero = 0u64;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&zero) }
}

/// `*dst = *src` word by word. A plain assignment of a zeroed value (or of odd-sized parts)
/// becomes a call to `memset`/`memcpy`, which the BPF target links as byte-at-a-time loops:
/// 56 iterations for a `SockInfo`, run on every birth and walked by the verifier.
#[inline(always)]
fn copy_words<T: Copy>(src: &T, dst: &mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0 && core::mem::align_of::<T>() >= 8) };
    let s = src as *const T as *const u64;
    let d = dst as *mut T as *mut u64;
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: both point to a whole, aligned `T`; volatile keeps each word a store of its own.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

#[inline(always)]
fn read_kernel<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// Find the `struct sock` behind descriptor `fd` of the current task and read what it says
/// about itself: task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
#[inline(always)]
fn sock_info(fd: i32) -> Option<SockInfo> {
    let l = LAYOUT.get(0)?;
    if l.valid == 0 || fd < 0 {
        return None;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_kernel(task + l.task_files as u64)?;
    let fdt: u64 = read_kernel(files + l.files_fdt as u64)?;
    let max_fds: u32 = read_kernel(fdt + l.fdt_max_fds as u64)?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array: u64 = read_kernel(fdt + l.fdt_fd as u64)?;
    let file: u64 = read_kernel(array + (fd as u64) * 8)?;
    let socket: u64 = read_kernel(file + l.file_private_data as u64)?;
    let sk: u64 = read_kernel(socket + l.socket_sk as u64)?;
    if sk == 0 {
        return None;
    }
    let mut info = SockInfo {
        sk,
        family: read_kernel(sk + l.skc_family as u64).unwrap_or(0),
        state: read_kernel::<u8>(sk + l.skc_state as u64).unwrap_or(0) as u16,
        lport: read_kernel(sk + l.skc_num as u64).unwrap_or(0),
        rport: u16::from_be(read_kernel(sk + l.skc_dport as u64).unwrap_or(0)),
        ..SockInfo::default()
    };
    if l.sk_type != fdtrace_common::NO_OFFSET {
        info.sk_type = read_kernel(sk + l.sk_type as u64).unwrap_or(0);
    }
    if l.sk_protocol != fdtrace_common::NO_OFFSET {
        info.protocol = read_kernel(sk + l.sk_protocol as u64).unwrap_or(0);
    }
    if info.family == AF_INET {
        let d: [u8; 4] = read_kernel(sk + l.skc_daddr as u64).unwrap_or([0; 4]);
        let s: [u8; 4] = read_kernel(sk + l.skc_rcv_saddr as u64).unwrap_or([0; 4]);
        info.raddr[..4].copy_from_slice(&d);
        info.laddr[..4].copy_from_slice(&s);
    } else if info.family == AF_INET6 && l.skc_v6_daddr != fdtrace_common::NO_OFFSET {
        info.raddr = read_kernel(sk + l.skc_v6_daddr as u64).unwrap_or([0; 16]);
        info.laddr = read_kernel(sk + l.skc_v6_rcv_saddr as u64).unwrap_or([0; 16]);
    }
    Some(info)
}

/// One chunk per message of a recvmmsg batch: its control length, then the start of its control
/// data (zeros for messages not received or without control data).
#[inline(always)]
fn recvmmsg_controls(dst: *mut u8, mmsg: u64, received: i64) {
    const CHUNK: usize = syscall::RECVMMSG_CHUNK;
    let words = dst as *mut u64;
    // SAFETY: `dst` points to MAX_PATH (256) bytes of a reserved record; every write below
    // stays within them (4 chunks of 64 bytes).
    unsafe {
        for w in 0..MAX_PATH / 8 {
            words.add(w).write_unaligned(0);
        }
    }
    macro_rules! chunk {
        ($i:expr) => {
            if ($i as i64) < received {
                let hdr = mmsg + ($i as u64) * 64;
                // SAFETY: user memory is read with probe_read_user; see above for `dst`.
                unsafe {
                    let control = bpf_probe_read_user((hdr + 32) as *const u64).unwrap_or(0);
                    let len = bpf_probe_read_user((hdr + 40) as *const u64).unwrap_or(0);
                    if control != 0 && len >= 16 {
                        words.add($i * CHUNK / 8).write_unaligned(len);
                        let d = dst.add($i * CHUNK + 8) as *mut c_void;
                        if probe_read_user_raw(d, (CHUNK - 8) as u32, control as *const c_void) != 0
                        {
                            let _ = probe_read_user_raw(d, 24, control as *const c_void);
                        }
                    }
                }
            }
        };
    }
    chunk!(0usize);
    chunk!(1usize);
    chunk!(2usize);
    chunk!(3usize);
}

/// `MMSG`: the recvmmsg variant (its own program, so each stays within the BPF stack limit).
#[inline(always)]
fn emit_open<const MMSG: bool>(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain value copied out before removal.
    let pending = match unsafe { PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = PENDING.remove(&pid_tgid);
    // The target's entry and the registers are looked up late, where the record is written:
    // values held across the branches above multiply the states the 5.10 verifier walks (it
    // refused this program at its 1M-instruction limit with them looked up here).
    emit_birth::<MMSG>(ctx, pid_tgid, None, pending, None)
}

/// Every field of a birth record but its stack.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fill_head<const MMSG: bool>(
    ev: *mut OpenEvent,
    pid_tgid: u64,
    failed: bool,
    fd: i32,
    fd2: i32,
    pending: &Pending,
    control: u64,
    control_len: u64,
    ret: i64,
    sock: &SockInfo,
    regs: &UserRegs,
) {
    // SAFETY: `ev` points to a reserved record holding at least the fields before `stack`.
    unsafe {
        (*ev).hdr = header(
            if failed {
                kind::OPEN_FAILED
            } else {
                kind::OPEN
            },
            pid_tgid,
        );
        (*ev).fd = fd;
        (*ev).fd2 = fd2;
        (*ev).arg = if pending.syscall == syscall::RECVMSG {
            control_len as i32
        } else if pending.syscall == syscall::RECVMMSG {
            ret as i32
        } else {
            pending.arg
        };
        (*ev).flags = pending.flags as u32;
        (*ev).syscall = pending.syscall;
        (*ev).ip = regs.ip;
        (*ev).sp = regs.sp;
        (*ev).bp = regs.bp;
        copy_words(sock, &mut (*ev).sock);
        if pending.syscall == syscall::RECVMSG {
            // The control messages, raw: user space finds the SCM_RIGHTS descriptors.
            let dst = (*ev).path.as_mut_ptr() as *mut c_void;
            if probe_read_user_raw(dst, MAX_PATH as u32, control as *const c_void) != 0
                && probe_read_user_raw(dst, 64, control as *const c_void) != 0
                && probe_read_user_raw(dst, 24, control as *const c_void) != 0
            {
                (*ev).arg = 0;
            }
        } else if MMSG {
            recvmmsg_controls((*ev).path.as_mut_ptr(), pending.path, ret);
        } else if !syscall::has_path(pending.syscall)
            || bpf_probe_read_user_str_bytes(pending.path as *const u8, &mut (*ev).path).is_err()
        {
            (*ev).path[0] = 0;
        }
    }
}

/// The record of a syscall that may have created descriptors, at its exit.
#[inline(always)]
fn emit_birth<const MMSG: bool>(
    ctx: &TracePointContext,
    pid_tgid: u64,
    target: Option<u32>,
    pending: Pending,
    regs: Option<UserRegs>,
) -> u32 {
    let ret: i64 = field(ctx, RET);
    // "Too many open files" is the failure worth a stack: the leak's symptom.
    let failed = (ret == -EMFILE || ret == -ENFILE)
        && pending.syscall != syscall::SET_CLOEXEC
        && pending.syscall != syscall::RECVMSG
        && pending.syscall != syscall::RECVMMSG;
    if ret < 0 && !failed {
        return 0;
    }
    if failed {
        count_failure((pid_tgid >> 32) as u32, pending.syscall, (-ret) as u32);
        if !sample_failure() {
            return 0;
        }
    }
    if pending.syscall == syscall::SET_CLOEXEC {
        let ev = CloexecEvent {
            hdr: header(kind::CLOEXEC, pid_tgid),
            fd: pending.arg,
            on: pending.flags as u32,
        };
        if EVENTS
            .output::<CloexecEvent>(&ev, wakeup_before::<CloexecEvent>())
            .is_err()
        {
            bump(stat::LOST_EVENTS);
        }
        return 0;
    }
    // recvmsg: a birth only when the control data the kernel wrote back is not empty.
    let mut control: u64 = 0;
    let mut control_len: u64 = 0;
    if pending.syscall == syscall::RECVMSG {
        // struct msghdr: msg_control at 32, msg_controllen at 40 (updated by the kernel).
        control = unsafe { bpf_probe_read_user((pending.path + 32) as *const u64) }.unwrap_or(0);
        control_len =
            unsafe { bpf_probe_read_user((pending.path + 40) as *const u64) }.unwrap_or(0);
        if control == 0 || control_len < 16 {
            return 0;
        }
    }
    // recvmmsg: struct mmsghdr (64 bytes) starts with its msghdr; a birth when any of the first
    // messages brought control data.
    if MMSG != (pending.syscall == syscall::RECVMMSG) {
        return 0;
    }
    if MMSG {
        let mut any = false;
        for i in 0..syscall::RECVMMSG_MSGS as u64 {
            if (i as i64) < ret {
                let len =
                    unsafe { bpf_probe_read_user((pending.path + i * 64 + 40) as *const u64) }
                        .unwrap_or(0);
                any |= len >= 16;
            }
        }
        if !any {
            return 0;
        }
    }
    let (fd, fd2) = if failed {
        (ret as i32, -1)
    } else if pending.syscall == syscall::RECVMSG || pending.syscall == syscall::RECVMMSG {
        (-1, -1)
    } else if syscall::returns_pair(pending.syscall) {
        // SAFETY: the kernel just wrote two ints to this user array.
        let pair: [i32; 2] =
            unsafe { bpf_probe_read_user(pending.path as *const [i32; 2]) }.unwrap_or([-1, -1]);
        (pair[0], pair[1])
    } else {
        (ret as i32, -1)
    };
    let is_socket = pending.syscall == syscall::SOCKET
        || pending.syscall == syscall::ACCEPT
        || pending.syscall == syscall::SOCKETPAIR;
    let sock = if is_socket && !failed && !MMSG {
        match sock_info(fd) {
            Some(info) => {
                if info.family == AF_INET || info.family == AF_INET6 {
                    // Failure only means the state events of this socket are not seen.
                    let _ = SOCKS.insert(&info.sk, &((pid_tgid >> 32) as u32), 0);
                }
                info
            }
            None => {
                bump(stat::SOCK_ERRORS);
                SockInfo::default()
            }
        }
    } else {
        SockInfo::default()
    };
    // Under load, the stack is the detail that gives way, never the birth: once the ring
    // buffer is half full, a birth is sent without its stack (a sixth of the bytes, and
    // nothing for user space to unwind), so births and deaths keep arriving while the consumer
    // catches up. Failures are already limited to a bounded rate (`sample_failure`).
    if !failed && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= shed_bytes() {
        let Some(mut entry) = EVENTS.reserve::<[u8; OPEN_HEAD_BYTES]>(0) else {
            bump(stat::LOST_EVENTS);
            return 0;
        };
        let ev = entry.as_mut_ptr() as *mut OpenEvent;
        let regs = match regs {
            Some(r) => r,
            None => user_regs(),
        };
        // SAFETY: the reservation holds every field before `stack`, which is not written.
        unsafe {
            fill_head::<MMSG>(
                ev,
                pid_tgid,
                failed,
                fd,
                fd2,
                &pending,
                control,
                control_len,
                ret,
                &sock,
                &regs,
            );
            (*ev).stack_len = 0;
            (*ev).stack_kind = capture::SHED;
            (*ev).goid = 0;
            (*ev).parent_goid = 0;
            (*ev).gopc = 0;
        }
        bump(stat::STACKS_SHED);
        entry.submit(wakeup_after::<[u8; OPEN_HEAD_BYTES]>());
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let regs = match regs {
        Some(r) => r,
        None => user_regs(),
    };
    let sp = regs.sp;
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        fill_head::<MMSG>(
            ev,
            pid_tgid,
            failed,
            fd,
            fd2,
            &pending,
            control,
            control_len,
            ret,
            &sock,
            &regs,
        );
        // How this process's stacks are captured (set per target by user space).
        let target = match target {
            Some(t) => t,
            None => TARGETS
                .get(&((pid_tgid >> 32) as u32))
                .copied()
                .unwrap_or(capture::STACK_COPY as u32),
        };
        let how = if target & go::MODE_MASK == capture::FRAME_POINTERS as u32 {
            capture::FRAME_POINTERS
        } else {
            capture::STACK_COPY
        };
        let n = if how == capture::FRAME_POINTERS {
            walk_frame_pointers(ctx, &mut (*ev).stack)
        } else if sp != 0 {
            copy_stack(&mut (*ev).stack, sp)
        } else {
            0
        };
        if n == 0 {
            bump(stat::STACK_ERRORS);
        }
        (*ev).stack_len = n as u16;
        (*ev).stack_kind = if n == 0 { capture::NONE } else { how };
        // Go programs: the goroutine, from the g register (r14) the syscall was made with.
        let (goid, parent, gopc) = if target >> go::GOID_SHIFT != 0 && regs.base != 0 {
            let g = read_kernel::<u64>(regs.base + PT_REGS_R14 as u64 * 8).unwrap_or(0);
            goroutine::ids(g, sp, target)
        } else {
            (0, 0, 0)
        };
        (*ev).goid = goid;
        (*ev).parent_goid = parent;
        (*ev).gopc = gopc;
    }
    entry.submit(wakeup_after::<OpenEvent>());
    0
}

/// An exit program for a frequent syscall that needs no entry program: it reads the arguments
/// from the registers the syscall was entered with, which saves a tracepoint hit and a hash-map
/// insert, lookup and delete per call. User space attaches these on 5.15 and newer. The socket
/// births (`sock_info` after the early register reads) are too much for 6.1's verifier (it stops
/// at its 1M-instruction limit): user space falls back to `enter_accept4` and `exit_open`
/// where the kernel refuses `exit_regs_accept4`.
macro_rules! exit_regs {
    ($name:ident, $args:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let pid_tgid = bpf_get_current_pid_tgid();
            // SAFETY: read-only lookup of a plain value.
            let Some(target) = target_mode((pid_tgid >> 32) as u32) else {
                return 0;
            };
            let regs = user_regs();
            let pending = pending_from($args, |off| regs.arg(off));
            emit_birth::<false>(&ctx, pid_tgid, Some(target), pending, Some(regs))
        }
    };
}

/// One entry program per syscall, naming where its arguments are.
macro_rules! enter {
    ($name:ident, $args:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            remember(&ctx, $args)
        }
    };
}

enter!(
    enter_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);
exit_regs!(
    exit_regs_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);
enter!(
    enter_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);
exit_regs!(
    exit_regs_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_creat,
    Args {
        sc: syscall::CREAT,
        path: Some(ARG0),
        fixed: O_CREAT | O_WRONLY | O_TRUNC,
        ..NONE
    }
);
enter!(
    enter_openat2,
    Args {
        sc: syscall::OPENAT2,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);
enter!(
    enter_socket,
    Args {
        sc: syscall::SOCKET,
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_accept,
    Args {
        sc: syscall::ACCEPT,
        arg: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);
exit_regs!(
    exit_regs_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_dup,
    Args {
        sc: syscall::DUP,
        arg: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_dup2,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_dup3,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        flags: Some(ARG2),
        ..NONE
    }
);
enter!(
    enter_eventfd,
    Args {
        sc: syscall::EVENTFD,
        ..NONE
    }
);
enter!(
    enter_eventfd2,
    Args {
        sc: syscall::EVENTFD,
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_epoll_create,
    Args {
        sc: syscall::EPOLL,
        ..NONE
    }
);
enter!(
    enter_epoll_create1,
    Args {
        sc: syscall::EPOLL,
        flags: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_pipe,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_pipe2,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_socketpair,
    Args {
        sc: syscall::SOCKETPAIR,
        path: Some(ARG3),
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_timerfd_create,
    Args {
        sc: syscall::TIMERFD,
        flags: Some(ARG1),
        ..NONE
    }
);
enter!(
    enter_inotify_init,
    Args {
        sc: syscall::INOTIFY,
        ..NONE
    }
);
enter!(
    enter_inotify_init1,
    Args {
        sc: syscall::INOTIFY,
        flags: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_memfd_create,
    Args {
        sc: syscall::MEMFD,
        path: Some(ARG0),
        flags: Some(ARG1),
        cloexec_bit: MFD_CLOEXEC,
        ..NONE
    }
);
enter!(
    enter_pidfd_open,
    Args {
        sc: syscall::PIDFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_open_by_handle_at,
    Args {
        sc: syscall::OPEN_BY_HANDLE,
        flags: Some(ARG2),
        ..NONE
    }
);
enter!(
    enter_fanotify_init,
    Args {
        sc: syscall::FANOTIFY,
        flags: Some(ARG0),
        cloexec_bit: 1,
        ..NONE
    }
);
enter!(
    enter_memfd_secret,
    Args {
        sc: syscall::MEMFD_SECRET,
        flags: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_userfaultfd,
    Args {
        sc: syscall::USERFAULTFD,
        flags: Some(ARG0),
        ..NONE
    }
);
enter!(
    enter_perf_event_open,
    Args {
        sc: syscall::PERF_EVENT,
        flags: Some(ARG4),
        cloexec_bit: 8,
        ..NONE
    }
);
enter!(
    enter_pidfd_getfd,
    Args {
        sc: syscall::PIDFD_GETFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);
enter!(
    enter_io_uring_setup,
    Args {
        sc: syscall::IO_URING,
        fixed: O_CLOEXEC,
        ..NONE
    }
);
enter!(
    enter_mq_open,
    Args {
        sc: syscall::MQ_OPEN,
        path: Some(ARG0),
        fixed: O_CLOEXEC,
        ..NONE
    }
);
enter!(
    enter_fsopen,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);
enter!(
    enter_fsmount,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);
enter!(
    enter_fspick,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: 1,
        ..NONE
    }
);
enter!(
    enter_open_tree,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);
enter!(
    enter_recvmsg,
    Args {
        sc: syscall::RECVMSG,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    }
);
// The first RECVMMSG_MSGS messages of a batch are examined.
enter!(
    enter_recvmmsg,
    Args {
        sc: syscall::RECVMMSG,
        path: Some(ARG1),
        flags: Some(ARG3),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    }
);

/// landlock_create_ruleset returns the ABI version, not a descriptor, with flag VERSION (1).
#[tracepoint]
pub fn enter_landlock_create_ruleset(ctx: TracePointContext) -> u32 {
    let flags: u64 = field(&ctx, ARG2);
    if flags & 1 != 0 {
        return 0;
    }
    remember(
        &ctx,
        Args {
            sc: syscall::LANDLOCK,
            fixed: O_CLOEXEC,
            ..NONE
        },
    )
}

/// bpf(): only the commands that return a new descriptor.
#[tracepoint]
pub fn enter_bpf(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG0);
    // MAP_CREATE, PROG_LOAD, OBJ_GET, PROG/MAP_GET_FD_BY_ID, RAW_TRACEPOINT_OPEN, BTF_LOAD,
    // BTF_GET_FD_BY_ID, LINK_CREATE, LINK_GET_FD_BY_ID, ENABLE_STATS, ITER_CREATE,
    // TOKEN_CREATE.
    let returns_fd = matches!(
        cmd,
        0 | 5 | 7 | 13 | 14 | 17 | 18 | 19 | 28 | 30 | 32 | 33 | 36
    );
    if !returns_fd {
        return 0;
    }
    remember(
        &ctx,
        Args {
            sc: syscall::BPF,
            fixed: O_CLOEXEC,
            ..NONE
        },
    )
}

/// ioctl FIOCLEX / FIONCLEX set and clear close-on-exec.
#[tracepoint]
pub fn enter_ioctl(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG1);
    let on = match cmd as u32 {
        FIOCLEX => 1,
        FIONCLEX => 0,
        _ => return 0,
    };
    remember(
        &ctx,
        Args {
            sc: syscall::SET_CLOEXEC,
            arg: Some(ARG0),
            fixed: on,
            ..NONE
        },
    )
}

/// signalfd/signalfd4 create a descriptor only when `ufd` is -1 (else they update it).
#[inline(always)]
fn signalfd(ctx: &TracePointContext, flags: Option<usize>) -> u32 {
    let ufd: u64 = field(&ctx, ARG0);
    if ufd as i32 != -1 {
        return 0;
    }
    remember(
        ctx,
        Args {
            sc: syscall::SIGNALFD,
            flags,
            ..NONE
        },
    )
}

#[tracepoint]
pub fn enter_signalfd(ctx: TracePointContext) -> u32 {
    signalfd(&ctx, None)
}

#[tracepoint]
pub fn enter_signalfd4(ctx: TracePointContext) -> u32 {
    signalfd(&ctx, Some(ARG3))
}

/// fcntl creates a descriptor only for F_DUPFD and F_DUPFD_CLOEXEC.
#[tracepoint]
pub fn enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG1);
    let fixed = match cmd {
        F_DUPFD => 0,
        F_DUPFD_CLOEXEC => O_CLOEXEC,
        F_SETFD => {
            let arg: u64 = field(&ctx, ARG2);
            return remember(
                &ctx,
                Args {
                    sc: syscall::SET_CLOEXEC,
                    arg: Some(ARG0),
                    fixed: arg & FD_CLOEXEC,
                    ..NONE
                },
            );
        }
        _ => return 0,
    };
    remember(
        &ctx,
        Args {
            sc: syscall::FCNTL_DUPFD,
            arg: Some(ARG0),
            fixed,
            ..NONE
        },
    )
}

#[tracepoint]
pub fn enter_close_range(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let ev = CloseRangeEvent {
        hdr: header(kind::CLOSE_RANGE, pid_tgid),
        first: field::<u64>(&ctx, ARG0) as u32,
        last: field::<u64>(&ctx, ARG1) as u32,
        flags: field::<u64>(&ctx, ARG2) as u32,
        _pad: 0,
    };
    if EVENTS
        .output::<CloseRangeEvent>(&ev, wakeup_before::<CloseRangeEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    0
}

/// Shared by the exits of every open-like syscall.
#[tracepoint]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    emit_open::<false>(&ctx)
}

/// The exit of recvmmsg.
#[tracepoint]
pub fn exit_recvmmsg(ctx: TracePointContext) -> u32 {
    emit_open::<true>(&ctx)
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fd: u64 = field(&ctx, ARG0);
    let ev = CloseEvent {
        hdr: header(kind::CLOSE, pid_tgid),
        fd: fd as i32,
        _pad: 0,
    };
    if EVENTS
        .output::<CloseEvent>(&ev, wakeup_before::<CloseEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    0
}

#[inline(always)]
fn sockaddr_enter(ctx: &TracePointContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // Offsets from the formats of sys_enter_bind/sys_enter_connect.
    let p = AddrPending {
        fd: field::<u64>(ctx, ARG0) as i32,
        addr: field(ctx, ARG1),
        len: field::<u64>(ctx, ARG2) as u32,
        op,
        _pad: 0,
    };
    if ADDR_PENDING.insert(&pid_tgid, &p, 0).is_err() {
        bump(stat::PENDING_ERRORS);
    }
    0
}

#[tracepoint]
pub fn enter_bind(ctx: TracePointContext) -> u32 {
    sockaddr_enter(&ctx, fdtrace_common::SOCK_OP_BIND)
}

#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    sockaddr_enter(&ctx, fdtrace_common::SOCK_OP_CONNECT)
}

/// Shared by the exits of bind and connect: report the address of a successful call (a
/// non-blocking connect that is under way counts).
#[tracepoint]
pub fn exit_sockaddr(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain value copied out before removal.
    let p = match unsafe { ADDR_PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = ADDR_PENDING.remove(&pid_tgid);
    let ret: i64 = field(&ctx, RET);
    if ret < 0 && ret != -EINPROGRESS {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<SockAddrEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::SOCK_ADDR, pid_tgid);
        (*ev).fd = p.fd;
        (*ev).op = p.op;
        (*ev).ret = ret as i32;
        let len = if p.len as usize > MAX_SOCKADDR {
            MAX_SOCKADDR as u32
        } else {
            p.len
        };
        let dst = (*ev).addr.as_mut_ptr() as *mut c_void;
        let src = p.addr as *const c_void;
        // The address may sit near the end of a mapping: try the full size, then the sizes of
        // sockaddr_in6 and sockaddr_in.
        (*ev).len = if probe_read_user_raw(dst, MAX_SOCKADDR as u32, src) == 0 {
            len
        } else if probe_read_user_raw(dst, 28, src) == 0 {
            if len > 28 { 28 } else { len }
        } else if probe_read_user_raw(dst, 16, src) == 0 {
            if len > 16 { 16 } else { len }
        } else {
            0
        };
    }
    entry.submit(wakeup_after::<SockAddrEvent>());
    0
}

/// `sock:inet_sock_set_state`: a TCP state change of any socket on the system; only sockets in
/// `SOCKS` (created or accepted by a target) pass.
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from events/sock/inet_sock_set_state/format.
    let sk: u64 = field(&ctx, 8);
    // SAFETY: plain value.
    let owner = match unsafe { SOCKS.get(&sk) } {
        Some(o) => *o,
        None => return 0,
    };
    let protocol: u16 = field(&ctx, 30);
    if protocol != IPPROTO_TCP {
        return 0;
    }
    // No file refers to the socket any more: its last close orphaned it, after the FIN_WAIT1
    // or LAST_ACK that close set. What it goes through next (FIN_WAIT2, CLOSE) concerns no
    // descriptor: forget it instead of writing records user space would drop.
    if let Some(l) = LAYOUT.get(0)
        && l.valid != 0
        && l.sk_socket != fdtrace_common::NO_OFFSET
        && read_kernel::<u64>(sk + l.sk_socket as u64) == Some(0)
    {
        let _ = SOCKS.remove(&sk);
        return 0;
    }
    let newstate: i32 = field(&ctx, 20);
    let mut hdr = header(kind::SOCK_STATE, bpf_get_current_pid_tgid());
    hdr.tgid = owner;
    let family: u16 = field(&ctx, 28);
    // The addresses as two words each, written whole (zeroing parts of byte arrays becomes
    // byte-at-a-time `memset` loops on this target).
    let (saddr, daddr): ([u64; 2], [u64; 2]) = if family == AF_INET6 {
        (
            [field(&ctx, 40), field(&ctx, 48)],
            [field(&ctx, 56), field(&ctx, 64)],
        )
    } else {
        // Little-endian: the 4 address bytes in memory order are the low 32 bits.
        let s: u32 = field(&ctx, 32);
        let d: u32 = field(&ctx, 36);
        ([s as u64, 0], [d as u64, 0])
    };
    let ev = SockStateEvent {
        hdr,
        sk,
        oldstate: field::<i32>(&ctx, 16) as u32,
        newstate: newstate as u32,
        family,
        protocol,
        sport: field(&ctx, 24),
        dport: field(&ctx, 26),
        // SAFETY: two u64 are 16 bytes, any bit pattern is a valid byte array.
        saddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(saddr) },
        daddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(daddr) },
    };
    if EVENTS
        .output::<SockStateEvent>(&ev, wakeup_before::<SockStateEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    if newstate as u32 == TCP_CLOSE {
        let _ = SOCKS.remove(&sk);
    }
    0
}

#[tracepoint]
pub fn enter_clone(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let flags: u64 = field(&ctx, ARG0);
    let _ = CLONE_FLAGS.insert(&pid_tgid, &flags, 0);
    0
}

#[tracepoint]
pub fn enter_clone3(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // `struct clone_args` starts with `__u64 flags`.
    let args: u64 = field(&ctx, ARG0);
    let flags = unsafe { bpf_probe_read_user(args as *const u64) }.unwrap_or(0);
    let _ = CLONE_FLAGS.insert(&pid_tgid, &flags, 0);
    0
}

/// Shared by the exits of clone and clone3.
#[tracepoint]
pub fn exit_clone(ctx: TracePointContext) -> u32 {
    let _ = ctx.as_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    if maybe_target((pid_tgid >> 32) as u32) {
        let _ = CLONE_FLAGS.remove(&pid_tgid);
    }
    0
}

/// `sched:sched_process_fork` runs in the parent before the child can run: a followed child is
/// a target from its first instruction. Threads (CLONE_THREAD) are not new processes.
#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mode) = target_mode((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // SAFETY: plain value.
    let flags = unsafe { CLONE_FLAGS.get(&pid_tgid) }.copied().unwrap_or(0);
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let off = match SETTINGS.get(setting::FORK_CHILD_PID).copied().unwrap_or(0) {
        0 => 20,
        n => n as usize,
    };
    // A computed offset: read with the helper (the verifier refuses it as a direct load).
    let child: i32 = unsafe { ctx.read_at(off) }.unwrap_or(0);
    if child <= 0 {
        return 0;
    }
    let follow = SETTINGS.get(setting::FOLLOW).copied().unwrap_or(0) != 0;
    // A child sharing the descriptor table changes the parent's: it is always traced.
    if follow || flags & CLONE_FILES != 0 {
        // The child runs the same program: its stacks are captured the same way.
        mark_target(child as u32);
        let _ = TARGETS.insert(&(child as u32), &mode, 0);
    }
    let ev = ForkEvent {
        hdr: header(kind::FORK, pid_tgid),
        child: child as u32,
        _pad: 0,
        flags,
    };
    if EVENTS
        .output::<ForkEvent>(&ev, wakeup_before::<ForkEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    0
}

#[inline(always)]
fn proc_event(kind: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A process of the traced cgroup is adopted by its syscalls, not by its exit.
    let traced = if kind == kind::EXIT {
        traced_mode((pid_tgid >> 32) as u32).is_some()
    } else {
        is_target((pid_tgid >> 32) as u32)
    };
    if !traced {
        return 0;
    }
    let ev = ProcEvent {
        hdr: header(kind, pid_tgid),
    };
    if EVENTS
        .output::<ProcEvent>(&ev, wakeup_before::<ProcEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    0
}

#[tracepoint]
pub fn sched_exec(ctx: TracePointContext) -> u32 {
    let _ = ctx.as_ptr();
    proc_event(kind::EXEC)
}

#[tracepoint]
pub fn sched_exit(ctx: TracePointContext) -> u32 {
    let _ = ctx.as_ptr();
    proc_event(kind::EXIT)
}

/// Not used by fdtrace: the floor of `cargo xtask bench` (loaded by `fdtrace/examples/floor.rs`
/// on the tracepoints fdtrace attaches): an empty program, returning 0 like fdtrace's own.
#[tracepoint]
pub fn floor_empty(_ctx: TracePointContext) -> u32 {
    0
}

/// Not used by fdtrace: a measurement for `cargo xtask bench` (loaded by
/// `fdtrace/examples/floor.rs`). Attached to the raw `sys_enter` and `sys_exit` tracepoints,
/// it does what a tracer built on them would do first for every syscall of every process: the
/// target lookup. Set against the floor of the per-syscall tracepoints, it measures what moving
/// fdtrace to these two hooks would save (no record built per hooked syscall; but a program run
/// on every syscall).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_raw_syscalls(_ctx: RawTracePointContext) -> i32 {
    // The kernel ignores a raw tracepoint program's result: returning the lookup's keeps it.
    i32::from(is_target((bpf_get_current_pid_tgid() >> 32) as u32))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
