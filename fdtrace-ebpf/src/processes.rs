//! Processes: clone flags, forks (shared or copied tables), exec and exit.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext},
};
use fdtrace_common::{CLONE_FILES, CLONE_THREAD, ForkEvent, ProcEvent, kind, setting, stat};

use crate::{
    filter::{is_target, mark_target, maybe_target, target_mode, traced_mode},
    maps::{CLONE_FLAGS, EVENTS, SETTINGS, TARGETS},
    registers::{ARG0, field, user_regs},
    ring::{bump, header, wakeup_before},
};

/// The flags of a clone, for `sched_fork` (at the clone's entry tracepoint or trampoline).
#[inline(always)]
fn keep_clone_flags(flags: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = CLONE_FLAGS.insert(&pid_tgid, &flags, 0);
}

/// clone3: `struct clone_args` starts with `__u64 flags`.
#[inline(always)]
fn clone3_flags(args: u64) -> u64 {
    unsafe { bpf_probe_read_user(args as *const u64) }.unwrap_or(0)
}

/// Forget the flags once the clone returns.
#[inline(always)]
fn forget_clone_flags() -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if maybe_target((pid_tgid >> 32) as u32) {
        let _ = CLONE_FLAGS.remove(&pid_tgid);
    }
    0
}

#[tracepoint]
pub fn enter_clone(ctx: TracePointContext) -> u32 {
    if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        keep_clone_flags(field(&ctx, ARG0));
    }
    0
}

#[tracepoint]
pub fn enter_clone3(ctx: TracePointContext) -> u32 {
    if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        keep_clone_flags(clone3_flags(field(&ctx, ARG0)));
    }
    0
}

/// Shared by the exits of clone and clone3.
#[tracepoint]
pub fn exit_clone(ctx: TracePointContext) -> u32 {
    let _ = ctx.as_ptr();
    forget_clone_flags()
}

#[fentry]
pub fn fentry_clone(_ctx: FEntryContext) -> u32 {
    if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        keep_clone_flags(user_regs().arg(Some(ARG0)));
    }
    0
}

#[fentry]
pub fn fentry_clone3(_ctx: FEntryContext) -> u32 {
    if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        keep_clone_flags(clone3_flags(user_regs().arg(Some(ARG0))));
    }
    0
}

#[fexit]
pub fn fexit_clone(_ctx: FExitContext) -> u32 {
    forget_clone_flags()
}

#[fexit]
pub fn fexit_clone3(_ctx: FExitContext) -> u32 {
    forget_clone_flags()
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
pub(crate) fn proc_event(kind: u32) -> u32 {
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
