//! Go programs: the goroutine a syscall was made in, and net/http's link between the goroutine
//! that asks for a connection and the goroutine that dials it.
//!
//! Go 1.17+ on amd64 keeps the current goroutine's `runtime.g` in r14 while Go code runs (its
//! register ABI), and the syscall stubs leave it alone. The g's first two words are the bounds of
//! its stack: a thread running C (cgo) holds anything in r14, so the value is believed only when
//! the stack pointer lies within them. The offsets of `goid`, `parentGoid` and `gopc` differ between Go
//! versions; user space puts them in the process's `TARGETS` value (`go::target_value`).
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::bpf_get_stack,
    },
    macros::uprobe,
    programs::ProbeContext,
};
use fdtrace_common::{GO_LINK_HEAD_BYTES, GoLinkEvent, STACK_BYTES, go, kind, stat};

use crate::{
    filter::traced_mode,
    maps::EVENTS,
    ring::{bump, header, wakeup_after},
};

/// The goroutine id, parent goroutine id and `gopc` (each 0 when unknown) of the g at `g`, if
/// `sp` is on its stack; all 0 otherwise. `target` is the process's `TARGETS` value.
#[inline(always)]
pub fn ids(g: u64, sp: u64, target: u32) -> (u64, u64, u64) {
    let goid_words = (target >> go::GOID_SHIFT) & 0xff;
    if goid_words == 0 || g == 0 {
        return (0, 0, 0);
    }
    // SAFETY: probe_read_user checks the address.
    let Ok(bounds) = (unsafe { bpf_probe_read_user(g as *const [u64; 2]) }) else {
        return (0, 0, 0);
    };
    if sp < bounds[0] || sp >= bounds[1] {
        return (0, 0, 0);
    }
    let word = |words: u32| -> u64 {
        if words == 0 {
            return 0;
        }
        // SAFETY: as above.
        unsafe { bpf_probe_read_user((g + u64::from(words) * 8) as *const u64) }.unwrap_or(0)
    };
    (
        word(goid_words),
        word((target >> go::PARENT_SHIFT) & 0xff),
        word(target >> go::GOPC_SHIFT),
    )
}

/// `net/http.(*Transport).queueForDial(w *wantConn)`, entered in the goroutine that asks for a
/// connection (the receiver in rax, `w` in rbx): its goroutine, `w` and its stack.
#[uprobe]
pub fn go_request(ctx: ProbeContext) -> u32 {
    link(&ctx, go::REQUEST)
}

/// `net/http.(*Transport).dialConnFor(w *wantConn)`, entered in the goroutine that dials for
/// `w` (usually one started for this dial alone).
#[uprobe]
pub fn go_dial(ctx: ProbeContext) -> u32 {
    link(&ctx, go::DIAL)
}

#[inline(always)]
fn link(ctx: &ProbeContext, role: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(target) = traced_mode((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // SAFETY: the context of a uprobe is the user registers at the probed instruction.
    let (g, conn, sp) = unsafe { ((*ctx.regs).r14, (*ctx.regs).rbx, (*ctx.regs).rsp) };
    let (goid, _, _) = ids(g, sp, target);
    if goid == 0 || conn == 0 {
        bump(stat::GO_LINK_ERRORS);
        return 0;
    }
    if role == go::DIAL {
        let Some(mut entry) = EVENTS.reserve::<[u8; GO_LINK_HEAD_BYTES]>(0) else {
            bump(stat::LOST_EVENTS);
            return 0;
        };
        let ev = entry.as_mut_ptr() as *mut GoLinkEvent;
        // SAFETY: the reservation holds every field before `stack`, which is not written.
        unsafe {
            (*ev).hdr = header(kind::GO_LINK, pid_tgid);
            (*ev).role = role;
            (*ev).stack_len = 0;
            (*ev).goid = goid;
            (*ev).conn = conn;
            (*ev).ret = 0;
        }
        entry.submit(wakeup_after::<[u8; GO_LINK_HEAD_BYTES]>());
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<GoLinkEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::GO_LINK, pid_tgid);
        (*ev).role = role;
        (*ev).goid = goid;
        (*ev).conn = conn;
        let mut ret = [0u8; 8];
        (*ev).ret = if bpf_probe_read_user_buf(sp as *const u8, &mut ret).is_ok() {
            u64::from_le_bytes(ret)
        } else {
            0
        };
        let n = bpf_get_stack(
            ctx.as_ptr(),
            (*ev).stack.as_mut_ptr() as *mut c_void,
            STACK_BYTES as u32,
            aya_ebpf::bindings::BPF_F_USER_STACK as u64,
        );
        (*ev).stack_len = if n > 0 { n as u32 } else { 0 };
    }
    entry.submit(wakeup_after::<GoLinkEvent>());
    0
}
