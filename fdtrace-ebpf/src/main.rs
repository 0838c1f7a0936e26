//! fdtrace's kernel side: tracepoint programs that observe descriptor births and deaths of the
//! target processes and stream them to user space through one ring buffer.
//!
//! Only processes whose thread-group id is in `TARGETS` pass the first check; every other
//! process pays one hash lookup per traced syscall.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
        generated::{
            bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_user as probe_read_user_raw,
            bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use fdtrace_common::{
    CloseEvent, CloseRangeEvent, Header, OpenEvent, ProcEvent, STACK_BYTES, capture, kind, stat,
    syscall,
};

/// Thread-group ids being traced; the value says how to capture their stacks (`capture::*`).
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

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

// Offsets in the syscall tracepoint records (see events/syscalls/*/format).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;
const RET: usize = 16;

// x86_64 `struct pt_regs` word indexes.
const PT_REGS_BP: usize = 4;
const PT_REGS_IP: usize = 16;
const PT_REGS_SP: usize = 19;

const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_CLOEXEC: u64 = 0o2_000_000;
const MFD_CLOEXEC: u64 = 1;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

#[inline(always)]
fn bump(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    // SAFETY: read-only lookup of a plain value.
    unsafe { TARGETS.get(&tgid).is_some() }
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

#[inline(always)]
fn remember(ctx: &TracePointContext, a: Args) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint formats of these syscalls.
    let read = |off: Option<usize>| -> u64 {
        match off {
            Some(o) => unsafe { ctx.read_at::<u64>(o) }.unwrap_or(0),
            None => 0,
        }
    };
    let path = read(a.path);
    let mut flags = a.fixed;
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
    let p = Pending {
        path,
        flags,
        syscall: a.sc,
        arg: if a.arg.is_some() {
            read(a.arg) as i32
        } else {
            -1
        },
    };
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

// The generated binding is declared with a `task_struct` argument.
use aya_ebpf::bindings::task_struct;
#[inline(always)]
fn user_regs() -> (u64, u64, u64) {
    // SAFETY: helpers available to tracing programs since 5.15; the pointer is read with
    // probe_read_kernel only.
    unsafe {
        let task = bpf_get_current_task_btf() as *mut task_struct;
        let regs = bpf_task_pt_regs(task) as *const u64;
        if regs.is_null() {
            return (0, 0, 0);
        }
        let ip = bpf_probe_read_kernel(regs.add(PT_REGS_IP)).unwrap_or(0);
        let sp = bpf_probe_read_kernel(regs.add(PT_REGS_SP)).unwrap_or(0);
        let bp = bpf_probe_read_kernel(regs.add(PT_REGS_BP)).unwrap_or(0);
        (ip, sp, bp)
    }
}

#[inline(always)]
fn emit_open(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before removal.
    let pending = match unsafe { PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = PENDING.remove(&pid_tgid);
    let ret: i64 = unsafe { ctx.read_at(RET) }.unwrap_or(-1);
    if ret < 0 {
        return 0;
    }
    let (fd, fd2) = if syscall::returns_pair(pending.syscall) {
        // SAFETY: the kernel just wrote two ints to this user array.
        let pair: [i32; 2] =
            unsafe { bpf_probe_read_user(pending.path as *const [i32; 2]) }.unwrap_or([-1, -1]);
        (pair[0], pair[1])
    } else {
        (ret as i32, -1)
    };
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let (ip, sp, bp) = user_regs();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::OPEN, pid_tgid);
        (*ev).fd = fd;
        (*ev).fd2 = fd2;
        (*ev).arg = pending.arg;
        (*ev).flags = pending.flags as u32;
        (*ev).syscall = pending.syscall;
        (*ev).ip = ip;
        (*ev).sp = sp;
        (*ev).bp = bp;
        if !syscall::has_path(pending.syscall)
            || bpf_probe_read_user_str_bytes(pending.path as *const u8, &mut (*ev).path).is_err()
        {
            (*ev).path[0] = 0;
        }
        // How this process's stacks are captured (set per target by user space).
        let how = match TARGETS.get(&((pid_tgid >> 32) as u32)) {
            Some(v) if *v == capture::FRAME_POINTERS as u32 => capture::FRAME_POINTERS,
            _ => capture::STACK_COPY,
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
    }
    entry.submit(0);
    0
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
enter!(
    enter_open,
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
        ..NONE
    }
);
enter!(
    enter_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
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

/// signalfd/signalfd4 create a descriptor only when `ufd` is -1 (else they update it).
#[inline(always)]
fn signalfd(ctx: &TracePointContext, flags: Option<usize>) -> u32 {
    let ufd: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(0);
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
    let cmd: u64 = unsafe { ctx.read_at(ARG1) }.unwrap_or(u64::MAX);
    let fixed = match cmd {
        F_DUPFD => 0,
        F_DUPFD_CLOEXEC => O_CLOEXEC,
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
        first: unsafe { ctx.read_at::<u64>(ARG0) }.unwrap_or(0) as u32,
        last: unsafe { ctx.read_at::<u64>(ARG1) }.unwrap_or(0) as u32,
        flags: unsafe { ctx.read_at::<u64>(ARG2) }.unwrap_or(0) as u32,
        _pad: 0,
    };
    if EVENTS.output::<CloseRangeEvent>(&ev, 0).is_err() {
        bump(stat::LOST_EVENTS);
    }
    0
}

/// Shared by the exits of every open-like syscall.
#[tracepoint]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    emit_open(&ctx)
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(u64::MAX);
    let ev = CloseEvent {
        hdr: header(kind::CLOSE, pid_tgid),
        fd: fd as i32,
        _pad: 0,
    };
    if EVENTS.output::<CloseEvent>(&ev, 0).is_err() {
        bump(stat::LOST_EVENTS);
    }
    0
}

#[inline(always)]
fn proc_event(kind: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let ev = ProcEvent {
        hdr: header(kind, pid_tgid),
    };
    if EVENTS.output::<ProcEvent>(&ev, 0).is_err() {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
