//! Node.js (libuv): the JavaScript that made a TCP socket, when the socket itself is created in a
//! later tick.
//!
//! `net.connect()` makes its handle at once (`new TCP()` → `uv_tcp_init`, in the program's own
//! JavaScript), but the kernel socket only when the connect runs (`uv_tcp_connect`, from
//! `process.nextTick` or a DNS callback), with none of the program's frames on the stack. The
//! stack at `uv_tcp_init` is sent keyed by the handle; the connect says which handle the thread
//! is connecting; user space joins them at the socket's birth (`uv_links`).
use aya_ebpf::{
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use fdtrace_common::{UV_HANDLE_HEAD_BYTES, UvHandleEvent, capture, kind, stat, uv};

use crate::{
    filter::traced_mode,
    maps::EVENTS,
    ring::{bump, header, shed_bytes, wakeup_after},
    stacks::{copy_stack, send_deep_chunks},
};

/// `uv_tcp_init(loop, handle)`: the handle (rsi) and the stack of the JavaScript that made it,
/// copied as a birth's is (the process's `capture::chunks` more pieces first).
#[uprobe]
pub fn uv_tcp_init(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(target) = traced_mode((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // Under load, births lose their stacks first (the shed rule); so do handles.
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= shed_bytes() {
        return 0;
    }
    // SAFETY: the context of a uprobe is the user registers at the probed instruction.
    let (ip, sp, bp, handle) = unsafe {
        let r = &*ctx.regs;
        (r.rip, r.rsp, r.rbp, r.rsi)
    };
    if handle == 0 || sp == 0 {
        return 0;
    }
    send_deep_chunks(pid_tgid, capture::chunks(target), sp);
    let Some(mut entry) = EVENTS.reserve::<UvHandleEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::UV_HANDLE, pid_tgid);
        (*ev).role = uv::INIT;
        (*ev).handle = handle;
        (*ev).ip = ip;
        (*ev).sp = sp;
        (*ev).bp = bp;
        (*ev).ret = 0;
        (*ev).stack_len = copy_stack(&mut (*ev).stack, sp);
    }
    entry.submit(wakeup_after::<UvHandleEvent>());
    0
}

/// `uv_tcp_connect(req, handle, addr, cb)`: the handle (rsi), and the return address at the
/// stack pointer, which stays in place while the connect runs (it tail-calls
/// `uv__tcp_connect`, which creates the socket).
#[uprobe]
pub fn uv_tcp_connect(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if traced_mode((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    // SAFETY: as above.
    let (sp, handle) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rsi) };
    // SAFETY: probe_read_user checks the address.
    let ret = unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0);
    if handle == 0 || ret == 0 {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<[u8; UV_HANDLE_HEAD_BYTES]>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr() as *mut UvHandleEvent;
    // SAFETY: the reservation holds every field before `stack`, which is not written.
    unsafe {
        (*ev).hdr = header(kind::UV_HANDLE, pid_tgid);
        (*ev).role = uv::CONNECT;
        (*ev).stack_len = 0;
        (*ev).handle = handle;
        (*ev).ip = 0;
        (*ev).sp = sp;
        (*ev).bp = 0;
        (*ev).ret = ret;
    }
    entry.submit(wakeup_after::<[u8; UV_HANDLE_HEAD_BYTES]>());
    0
}
