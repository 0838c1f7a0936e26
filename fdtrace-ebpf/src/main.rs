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
            bpf_get_current_task_btf, bpf_probe_read_user as probe_read_user_raw, bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use fdtrace_common::{CloseEvent, Header, OpenEvent, ProcEvent, STACK_BYTES, kind, stat, syscall};

/// Thread-group ids being traced (value unused).
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Arguments of an open-like syscall, remembered from entry until exit, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    path: u64,
    flags: u64,
    syscall: u32,
    _pad: u32,
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
const RET: usize = 16;

// x86_64 `struct pt_regs` word indexes.
const PT_REGS_BP: usize = 4;
const PT_REGS_IP: usize = 16;
const PT_REGS_SP: usize = 19;

const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

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

#[inline(always)]
fn remember(ctx: &TracePointContext, path_off: usize, flags: Option<usize>, sc: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint formats of these syscalls.
    let path: u64 = unsafe { ctx.read_at(path_off) }.unwrap_or(0);
    let flags: u64 = match (sc, flags) {
        (syscall::CREAT, _) => O_CREAT | O_WRONLY | O_TRUNC,
        (syscall::OPENAT2, Some(off)) => {
            // `struct open_how` starts with `__u64 flags`.
            let how: u64 = unsafe { ctx.read_at(off) }.unwrap_or(0);
            unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0)
        }
        (_, Some(off)) => unsafe { ctx.read_at(off) }.unwrap_or(0),
        (_, None) => 0,
    };
    let p = Pending {
        path,
        flags,
        syscall: sc,
        _pad: 0,
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
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let (ip, sp, bp) = user_regs();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::OPEN, pid_tgid);
        (*ev).fd = ret as i32;
        (*ev).flags = pending.flags as u32;
        (*ev).syscall = pending.syscall;
        (*ev).ip = ip;
        (*ev).sp = sp;
        (*ev).bp = bp;
        if bpf_probe_read_user_str_bytes(pending.path as *const u8, &mut (*ev).path).is_err() {
            (*ev).path[0] = 0;
        }
        let n = if sp != 0 {
            copy_stack(&mut (*ev).stack, sp)
        } else {
            0
        };
        if n == 0 {
            bump(stat::STACK_ERRORS);
        }
        (*ev).stack_len = n;
    }
    entry.submit(0);
    0
}

#[tracepoint]
pub fn enter_openat(ctx: TracePointContext) -> u32 {
    remember(&ctx, ARG1, Some(ARG2), syscall::OPENAT)
}

#[tracepoint]
pub fn enter_open(ctx: TracePointContext) -> u32 {
    remember(&ctx, ARG0, Some(ARG1), syscall::OPEN)
}

#[tracepoint]
pub fn enter_creat(ctx: TracePointContext) -> u32 {
    remember(&ctx, ARG0, None, syscall::CREAT)
}

#[tracepoint]
pub fn enter_openat2(ctx: TracePointContext) -> u32 {
    remember(&ctx, ARG1, Some(ARG2), syscall::OPENAT2)
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
