//! The target filter, the first check of every program: traced processes, and adoption by cgroup.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id};
use fdtrace_common::{ProcEvent, TARGET_FLAGS_PER_ENTRY, capture, kind, stat};

use crate::{
    maps::{CGROUPS, EVENTS, TARGET_FLAGS, TARGETS},
    ring::{bump, header, wakeup_before},
};

/// False only for processes that are not traced: the cheap first half of `is_target`.
#[inline(always)]
pub(crate) fn maybe_target(tgid: u32) -> bool {
    match TARGET_FLAGS.get(tgid / TARGET_FLAGS_PER_ENTRY as u32) {
        Some(flags) => flags[(tgid % TARGET_FLAGS_PER_ENTRY as u32) as usize] != 0,
        None => true,
    }
}

/// How a traced process's stacks are captured (`capture::*`); None for other processes.
#[inline(always)]
pub(crate) fn traced_mode(tgid: u32) -> Option<u32> {
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
pub(crate) fn target_mode(tgid: u32) -> Option<u32> {
    if let Some(mode) = traced_mode(tgid) {
        return Some(mode);
    }
    if !cgroup_filter() {
        return None;
    }
    adopt(tgid)
}

/// Whether a cgroup is the target (`CGROUP_FILTER`): processes not flagged may be adopted.
#[inline(always)]
pub(crate) fn cgroup_filter() -> bool {
    // SAFETY: a constant of the loader (read-only data): 0, the verifier drops what follows.
    let on = unsafe { core::ptr::read_volatile(&CGROUP_FILTER) };
    on != 0
}

#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    target_mode(tgid).is_some()
}

/// Non-zero: a cgroup is the target (`--cgroup`, `--container`), and `CGROUPS` holds its id and
/// those of the cgroups below it. Set by the loader. Every process not traced pays one helper
/// call and one lookup per hooked syscall while it is set.
#[unsafe(no_mangle)]
pub(crate) static CGROUP_FILTER: u8 = 0;

/// fdtrace's own process, never adopted (it may run inside the cgroup it traces).
#[unsafe(no_mangle)]
pub(crate) static OWN_TGID: u32 = 0;

/// Trace `tgid` (the current process) if it is in the traced cgroup or below it, and tell user
/// space with a `JOIN` record.
#[inline(never)]
pub(crate) fn adopt(tgid: u32) -> Option<u32> {
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
pub(crate) fn mark_target(tgid: u32) {
    if let Some(flags) = TARGET_FLAGS.get_ptr_mut(tgid / TARGET_FLAGS_PER_ENTRY as u32) {
        // SAFETY: a byte of an array slot; other writers store other bytes, or the same 1.
        unsafe { (*flags)[(tgid % TARGET_FLAGS_PER_ENTRY as u32) as usize] = 1 };
    }
}
