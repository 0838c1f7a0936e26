//! Deaths: `close` and `close_range`.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use fdtrace_common::{CloseEvent, CloseRangeEvent, kind, stat};

use crate::{
    filter::is_target,
    maps::EVENTS,
    registers::{ARG0, ARG1, ARG2, field},
    ring::{bump, header, wakeup_before},
};

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
