//! CPython: the Python frames of the thread making a birth, read from the interpreter's own
//! frame chain (`_PyRuntime` → interpreter → the thread's state → `_PyInterpreterFrame`s), as
//! py-spy and the OpenTelemetry profiler do. The thread's state is found by its kernel thread id
//! (`native_thread_id`), not through the GIL: a thread releases the GIL around the syscalls
//! that make descriptors. User space puts the version's offsets in `PY_PROCS`; it reads the code
//! objects (names, files, line tables) itself.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use fdtrace_common::{PyFramesEvent, PyLayout, kind, py, stat};

use crate::{
    maps::EVENTS,
    registers::{RET, field, user_regs},
    ring::{bump, header},
    stacks::birth_gets_its_stack,
};

/// Python processes among the targets: where their interpreter keeps its frames.
#[map]
static PY_PROCS: HashMap<u32, PyLayout> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn word(addr: u64) -> u64 {
    if addr < 4096 {
        return 0;
    }
    // SAFETY: probe_read_user checks the address.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn byte(addr: u64) -> u8 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8) }.unwrap_or(0)
}

/// The state of thread `tid` among the interpreter's threads, or 0.
#[inline(always)]
fn thread_state(l: &PyLayout, tid: u32) -> u64 {
    let interp = word(l.interpreters_head);
    if interp == 0 {
        return 0;
    }
    let mut ts = word(interp + l.threads_head as u64);
    for _ in 0..py::MAX_THREADS {
        if ts == 0 {
            return 0;
        }
        if word(ts + l.thread_tid as u64) == tid as u64 {
            return ts;
        }
        ts = word(ts + l.thread_next as u64);
    }
    0
}

/// Attached, like `exit_deep_stack`, to a birth's exit before its birth program: the frames
/// arrive just before the birth they belong to.
#[tracepoint]
pub fn exit_python_frames(ctx: TracePointContext) -> u32 {
    python_frames(field(&ctx, RET))
}

/// The frames, when the birth that ended with `ret` gets its stack.
#[inline(always)]
pub(crate) fn python_frames(ret: i64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a copy of the map's value is taken at once.
    let Some(l) = (unsafe { PY_PROCS.get(&((pid_tgid >> 32) as u32)) }).copied() else {
        return 0;
    };
    if !birth_gets_its_stack(ret) {
        return 0;
    }
    let ts = thread_state(&l, pid_tgid as u32);
    if ts == 0 {
        return 0;
    }
    let mut frame = word(ts + l.thread_frame as u64);
    if l.cframe_frame != py::NO_CFRAME {
        frame = word(frame + l.cframe_frame as u64);
    }
    if frame == 0 {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<PyFramesEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let shim = l.entry_mode == py::ENTRY_SHIM;
    let mut n: u32 = 0;
    // SAFETY: `ev` points to a reserved record of the right size; every field is written
    // (frames past `n` are left as they were and never read). One frame per iteration at the
    // iteration's index, whatever it is (a shim too, marked): a count that differed between
    // paths would multiply the verifier's states past its limit.
    unsafe {
        (*ev).hdr = header(kind::PY_FRAMES, pid_tgid);
        (*ev).sp = user_regs().sp;
        for i in 0..py::MAX_FRAMES {
            if frame == 0 {
                break;
            }
            let mark = byte(frame + l.frame_entry as u64);
            let flag = if shim {
                if mark == py::OWNED_BY_CSTACK {
                    py::SHIM_BIT
                } else {
                    0
                }
            } else if mark != 0 {
                py::ENTRY_BIT
            } else {
                0
            };
            (*ev).frames[i].code = word(frame + l.frame_code as u64) | flag;
            (*ev).frames[i].instr = word(frame + l.frame_instr as u64);
            n = i as u32 + 1;
            frame = word(frame + l.frame_previous as u64);
        }
        (*ev).n = n;
        (*ev).truncated = (frame != 0) as u32;
    }
    if n == 0 {
        entry.discard(0);
        return 0;
    }
    // No wake-up: the birth that follows brings one.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    0
}
