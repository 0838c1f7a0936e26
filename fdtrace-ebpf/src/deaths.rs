//! Deaths: `close` and `close_range`, at their entry tracepoints or on the trampolines of their
//! kernel functions (before they run: a descriptor's number is free for reuse once it returns).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, tracepoint},
    programs::{FEntryContext, TracePointContext},
};
use fdtrace_common::{CloseEvent, CloseRangeEvent, kind, stat};

use crate::{
    filter::is_target,
    maps::EVENTS,
    registers::{ARG0, ARG1, ARG2, field, user_regs},
    ring::{bump, header, wakeup_before},
};

#[tracepoint]
pub fn enter_close_range(ctx: TracePointContext) -> u32 {
    close_range(|off| field::<u64>(&ctx, off))
}

#[fentry]
pub fn fentry_close_range(_ctx: FEntryContext) -> u32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let regs = user_regs();
    close_range(|off| regs.arg(Some(off)))
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    close(|off| field::<u64>(&ctx, off))
}

#[fentry]
pub fn fentry_close(_ctx: FEntryContext) -> u32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let regs = user_regs();
    close(|off| regs.arg(Some(off)))
}

/// `read`: the argument at a tracepoint-record offset.
#[inline(always)]
fn close_range(read: impl Fn(usize) -> u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
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
fn close(read: impl Fn(usize) -> u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let ev = CloseEvent {
        hdr: header(kind::CLOSE, pid_tgid),
        fd: read(ARG0) as i32,
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
