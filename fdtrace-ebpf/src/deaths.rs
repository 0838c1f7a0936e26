//! Deaths: `close` and `close_range`, at their entry tracepoints or on the trampolines of their
//! kernel functions (before they run: a descriptor's number is free for reuse once it returns);
//! and, on trampolines only, the descriptors closed outside those syscalls (io_uring's
//! `IORING_OP_CLOSE`), on the kernel function that takes a descriptor out of the table. Where
//! close itself calls that function, its one trampoline records close's deaths too (user space
//! then leaves close out of `HOOKED_SYSCALLS` and `__x64_sys_close` without a trampoline).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, tracepoint},
    programs::{FEntryContext, TracePointContext},
};
use fdtrace_common::{CloseEvent, CloseRangeEvent, kind, stat};

use crate::{
    filter::is_target,
    installs::outside_hooked_syscalls,
    maps::EVENTS,
    registers::{ARG0, ARG1, ARG2, PT_REGS_DI, PT_REGS_DX, PT_REGS_SI, field},
    ring::{bump, header, wakeup_before},
};

/// 6.12 and later: `file_close_fd_locked(struct files_struct *files, unsigned int fd)`, which
/// close, close_range and io_uring's close call.
#[fentry]
pub fn fentry_close_locked(ctx: FEntryContext) -> u32 {
    closed_elsewhere(ctx.arg::<u64>(1))
}

/// 5.10 to 6.1: `__close_fd_get_file(unsigned int fd, ...)`, which io_uring's close calls (close
/// and close_range take the descriptor out of the table without it).
#[fentry]
pub fn fentry_close_get_file(ctx: FEntryContext) -> u32 {
    closed_elsewhere(ctx.arg::<u64>(0))
}

/// A descriptor taken out of the table outside the hooked syscalls (the close syscalls' own
/// programs record theirs: `HOOKED_SYSCALLS` marks them for this program too).
#[inline(always)]
fn closed_elsewhere(fd: u64) -> u32 {
    let Some(pid_tgid) = target() else {
        return 0;
    };
    if outside_hooked_syscalls().is_none() {
        return 0;
    }
    close(pid_tgid, fd)
}

#[tracepoint]
pub fn enter_close_range(ctx: TracePointContext) -> u32 {
    let Some(pid_tgid) = target() else {
        return 0;
    };
    close_range(pid_tgid, |off| field::<u64>(&ctx, off))
}

/// `__x64_sys_close_range(const struct pt_regs *regs)`: the arguments from the registers it is
/// given, rdx to rdi in one copy.
#[fentry]
pub fn fentry_close_range(ctx: FEntryContext) -> u32 {
    let Some(pid_tgid) = target() else {
        return 0;
    };
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: loads at constant offsets of the `struct pt_regs` argument: the verifier knows
    // its type (BTF) and guards each load as a probe read, without a helper call.
    let word = |i: usize| unsafe { core::ptr::read_volatile(regs.add(i)) };
    close_range(pid_tgid, |off| match off {
        ARG0 => word(PT_REGS_DI),
        ARG1 => word(PT_REGS_SI),
        _ => word(PT_REGS_DX),
    })
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let Some(pid_tgid) = target() else {
        return 0;
    };
    close(pid_tgid, field::<u64>(&ctx, ARG0))
}

/// `__x64_sys_close(const struct pt_regs *regs)`: the descriptor is one word of the registers it
/// is given.
#[fentry]
pub fn fentry_close(ctx: FEntryContext) -> u32 {
    let Some(pid_tgid) = target() else {
        return 0;
    };
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: as in `fentry_close_range`.
    close(pid_tgid, unsafe {
        core::ptr::read_volatile(regs.add(PT_REGS_DI))
    })
}

/// The current thread's pid_tgid when its process is a target (every program's first check).
#[inline(always)]
fn target() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    is_target((pid_tgid >> 32) as u32).then_some(pid_tgid)
}

/// `read`: the argument at a tracepoint-record offset.
#[inline(always)]
fn close_range(pid_tgid: u64, read: impl Fn(usize) -> u64) -> u32 {
    let ev = CloseRangeEvent {
        hdr: header(kind::CLOSE_RANGE, pid_tgid),
        first: read(ARG0) as u32,
        last: read(ARG1) as u32,
        flags: read(ARG2) as u32,
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

#[inline(always)]
fn close(pid_tgid: u64, fd: u64) -> u32 {
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
