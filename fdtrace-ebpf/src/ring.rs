//! The ring buffer: record headers, wake-up policy, the shed threshold, and per-CPU counters.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use fdtrace_common::Header;

use crate::maps::{EVENTS, STATS};

#[inline(always)]
pub(crate) fn bump(index: u32) {
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
pub(crate) const WAKEUP_SHIFT: u32 = 21;

/// Once 1 << this many bytes (a quarter of the ring buffer, set by user space before loading)
/// are unread, user space has fallen far behind (it stalled reading /proc, say): every record then
/// asks for a wake-up. That costs the traced thread the wake-up's interrupt per record, which
/// slows it exactly while the ring fills up, so a stall of the consumer is ridden out instead of
/// losing records.
#[unsafe(no_mangle)]
pub(crate) static BEHIND_SHIFT: u32 = 22;

/// Unread bytes from which births are sent without their stacks: half the ring buffer (set by
/// user space before loading).
#[unsafe(no_mangle)]
pub(crate) static SHED_BYTES: u64 = 8 << 20;

#[inline(always)]
pub(crate) fn shed_bytes() -> u64 {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&SHED_BYTES) }
}

/// The ring buffer's share of a record of `T`: an 8-byte header, rounded up to 8 bytes.
#[inline(always)]
pub(crate) fn ring_bytes<T>() -> u64 {
    (core::mem::size_of::<T>() as u64 + 8 + 7) & !7
}

/// Wake-up flag for a record of `T` about to be written with `output` (not yet counted).
#[inline(always)]
pub(crate) fn wakeup_before<T>() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    crossing(avail, avail + ring_bytes::<T>())
}

/// Wake-up flag for a reserved record of `T` (already counted as unread).
#[inline(always)]
pub(crate) fn wakeup_after<T>() -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    crossing(avail.saturating_sub(ring_bytes::<T>()), avail)
}

/// One test at the end of every program: each branch there multiplies the states the 5.10
/// verifier walks (it refused `exit_open` at its 1M-instruction limit with three).
#[inline(always)]
pub(crate) fn crossing(before: u64, after: u64) -> u64 {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    let behind = unsafe { core::ptr::read_volatile(&BEHIND_SHIFT) };
    let crossed = (before >> WAKEUP_SHIFT) ^ (after >> WAKEUP_SHIFT);
    if crossed | after.wrapping_shr(behind) != 0 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub(crate) fn header(kind: u32, pid_tgid: u64) -> Header {
    Header {
        kind,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}
