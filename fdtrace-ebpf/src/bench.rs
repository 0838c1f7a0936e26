//! Programs only the benchmark loads: the floor cost of an empty program on a hook.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, raw_tracepoint, tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext, TracePointContext},
};

use crate::filter::is_target;

/// Not used by fdtrace: the floor of `cargo xtask bench` (loaded by `fdtrace/examples/floor.rs`
/// on the tracepoints fdtrace attaches): an empty program, returning 0 like fdtrace's own.
#[tracepoint]
pub fn floor_empty(_ctx: TracePointContext) -> u32 {
    0
}

/// Empty trampoline programs for the floor of the trampoline set (`examples/floor.rs hooks`):
/// a trampoline program is loaded for one kernel function, so one copy per function the
/// floor attaches to.
macro_rules! floor_trampolines {
    ($($entry:ident, $exit:ident;)*) => {
        $(
            #[fentry]
            pub fn $entry(_ctx: FEntryContext) -> u32 {
                0
            }

            #[fexit]
            pub fn $exit(_ctx: FExitContext) -> u32 {
                0
            }
        )*
    };
}

floor_trampolines! {
    floor_fentry0, floor_fexit0;
    floor_fentry1, floor_fexit1;
    floor_fentry2, floor_fexit2;
    floor_fentry3, floor_fexit3;
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
