//! Failed births ("too many open files"): exact counts per process, syscall and errno, and the
//! sampled few sent with their stacks.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use fdtrace_common::{FAIL_SAMPLE_WINDOW_NS, FAIL_SAMPLES_PER_WINDOW, FailKey};

use crate::maps::{FAIL_WINDOW, FAILURES};

pub(crate) const EMFILE: i64 = 24;

pub(crate) const ENFILE: i64 = 23;

/// Count a failed birth (per CPU: no other writer of this slot).
#[inline(always)]
pub(crate) fn count_failure(tgid: u32, syscall: u32, errno: u32) {
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
pub(crate) fn sample_failure() -> bool {
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
