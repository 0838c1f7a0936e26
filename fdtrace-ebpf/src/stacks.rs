//! User stacks: the copy sent with a birth, frame-pointer walks, and the deeper chunks of runtimes.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_stack, bpf_probe_read_user as probe_read_user_raw},
    },
    macros::{fexit, tracepoint},
    programs::{FExitContext, TracePointContext},
};
use fdtrace_common::{STACK_BYTES, StackChunkEvent, capture, kind, stat};

use crate::{
    failures::{EMFILE, ENFILE},
    filter::traced_mode,
    maps::EVENTS,
    registers::{RET, field, main_stack_end, user_regs},
    ring::{bump, header, shed_bytes},
};

/// Copy the top of the user stack into `dst`, trying smaller sizes near the stack's end: on the
/// main stack, those that would run past the page of its first stack pointer (`main_stack_end`)
/// are not tried at all (a fault, and the destination cleared, each time); elsewhere (other
/// threads' stacks), a failed copy is what says the end is near.
#[inline(always)]
pub(crate) fn copy_stack(dst: &mut [u8; STACK_BYTES], sp: u64) -> u32 {
    let src = sp as *const c_void;
    let d = dst.as_mut_ptr() as *mut c_void;
    let end = main_stack_end();
    // What may be copied of the main stack above `sp`; everything where `sp` is not on it.
    let room = if end > sp { end - sp } else { u64::MAX };
    // SAFETY: each read writes at most STACK_BYTES into `dst`.
    unsafe {
        if room >= STACK_BYTES as u64 && probe_read_user_raw(d, STACK_BYTES as u32, src) == 0 {
            return STACK_BYTES as u32;
        }
        if room >= (STACK_BYTES / 2) as u64
            && probe_read_user_raw(d, (STACK_BYTES / 2) as u32, src) == 0
        {
            return (STACK_BYTES / 2) as u32;
        }
        if room >= (STACK_BYTES / 4) as u64
            && probe_read_user_raw(d, (STACK_BYTES / 4) as u32, src) == 0
        {
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
pub(crate) fn walk_frame_pointers<C: EbpfContext>(ctx: &C, dst: &mut [u8; STACK_BYTES]) -> u32 {
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

/// For the programs that run before a birth's own (`exit_deep_stack`, `exit_python_frames`):
/// will the birth at this exit be sent with its stack? Not when the syscall failed (but with
/// EMFILE/ENFILE, which is counted at its stack), nor under load (the shed rule).
#[inline(always)]
pub(crate) fn birth_gets_its_stack(ret: i64) -> bool {
    if ret < 0 && ret != -EMFILE && ret != -ENFILE {
        return false;
    }
    EVENTS.query(BPF_RB_AVAIL_DATA as u64) < shed_bytes()
}

/// Language runtimes (`capture::chunks` of the target's value): the stack beyond the birth
/// record's own copy, in `capture::CHUNK_BYTES` pieces sent before the birth. Attached to a
/// birth's exit tracepoint before its birth program, so it runs first there (a tracepoint runs
/// its programs in the order they were attached) and user space finds the pieces waiting when
/// the birth arrives. A program of its own: the birth programs are at the 5.10 verifier's limits.
#[tracepoint]
pub fn exit_deep_stack(ctx: TracePointContext) -> u32 {
    deep_stack(field(&ctx, RET))
}

/// `exit_deep_stack` and `exit_python_frames` on the trampoline of a deep birth's kernel
/// function, one pair per function (a tracing program is loaded for one function). Attached
/// after the birth's own `fexit_<name>`, they run before it: a trampoline runs its programs
/// newest first (`hlist_add_head` in the kernel's `bpf_trampoline_link_prog`).
macro_rules! deep_trampolines {
    ($($deep:ident, $python:ident;)*) => {$(
        #[fexit]
        pub fn $deep(ctx: FExitContext) -> u32 {
            deep_stack(ctx.arg::<i64>(1))
        }

        #[fexit]
        pub fn $python(ctx: FExitContext) -> u32 {
            crate::python::python_frames(ctx.arg::<i64>(1))
        }
    )*};
}

deep_trampolines! {
    fexit_deep_openat, fexit_python_openat;
    fexit_deep_open, fexit_python_open;
    fexit_deep_creat, fexit_python_creat;
    fexit_deep_openat2, fexit_python_openat2;
    fexit_deep_socket, fexit_python_socket;
    fexit_deep_accept, fexit_python_accept;
    fexit_deep_accept4, fexit_python_accept4;
    fexit_deep_dup, fexit_python_dup;
    fexit_deep_dup2, fexit_python_dup2;
    fexit_deep_dup3, fexit_python_dup3;
    fexit_deep_pipe, fexit_python_pipe;
    fexit_deep_pipe2, fexit_python_pipe2;
    fexit_deep_socketpair, fexit_python_socketpair;
}

#[inline(always)]
fn deep_stack(ret: i64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(target) = traced_mode((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let chunks = capture::chunks(target);
    if chunks == 0 {
        return 0;
    }
    if !birth_gets_its_stack(ret) {
        return 0;
    }
    let sp = user_regs().sp;
    if sp == 0 {
        return 0;
    }
    send_deep_chunks(pid_tgid, chunks, sp);
    0
}

/// The stack above `sp` beyond the first `STACK_BYTES`: `chunks` records of
/// `capture::CHUNK_BYTES` (fewer where the stack ends), sent without a wake-up (the record
/// they precede brings one).
#[inline(always)]
pub(crate) fn send_deep_chunks(pid_tgid: u64, chunks: u32, sp: u64) {
    for i in 0..capture::MAX_CHUNKS {
        if i >= chunks {
            break;
        }
        let Some(mut entry) = EVENTS.reserve::<StackChunkEvent>(0) else {
            bump(stat::LOST_EVENTS);
            break;
        };
        let ev = entry.as_mut_ptr();
        let offset = STACK_BYTES as u32 + i * capture::CHUNK_BYTES as u32;
        // SAFETY: `ev` points to a reserved record of the right size; every field is written.
        let n = unsafe {
            (*ev).hdr = header(kind::STACK_CHUNK, pid_tgid);
            (*ev).sp = sp;
            (*ev).offset = offset;
            let n = copy_chunk(&mut (*ev).bytes, sp + offset as u64);
            (*ev).len = n;
            n
        };
        if n == 0 {
            entry.discard(0);
            break;
        }
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        if n < capture::CHUNK_BYTES as u32 {
            break;
        }
    }
}

/// Copy a piece of the user stack into `dst`, trying smaller sizes near the stack's end.
#[inline(always)]
pub(crate) fn copy_chunk(dst: &mut [u8; capture::CHUNK_BYTES], from: u64) -> u32 {
    let src = from as *const c_void;
    let d = dst.as_mut_ptr() as *mut c_void;
    const N: usize = capture::CHUNK_BYTES;
    // SAFETY: each read writes at most CHUNK_BYTES into `dst`.
    unsafe {
        if probe_read_user_raw(d, N as u32, src) == 0 {
            return N as u32;
        }
        if probe_read_user_raw(d, (N / 2) as u32, src) == 0 {
            return (N / 2) as u32;
        }
        if probe_read_user_raw(d, (N / 4) as u32, src) == 0 {
            return (N / 4) as u32;
        }
    }
    0
}
