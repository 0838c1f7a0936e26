//! Births: the arguments remembered at entry and the record (path, flags, socket, stack) sent at
//! exit.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_AVAIL_DATA,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
    programs::TracePointContext,
};
use fdtrace_common::{
    CloexecEvent, MAX_PATH, OPEN_HEAD_BYTES, OpenEvent, SockInfo, capture, go, kind, stat, syscall,
};

use crate::{
    failures::{EMFILE, ENFILE, count_failure, sample_failure},
    filter::{is_target, maybe_target},
    goroutine,
    maps::{EVENTS, HAND_OVER, PENDING, Pending, TARGETS},
    registers::{PT_REGS_R14, UserRegs, copy_words, field, opaque_zero, read_kernel, user_regs},
    ring::{bump, header, shed_bytes, wakeup_after, wakeup_before},
    sockets::{AF_INET, AF_INET6, IPPROTO_TCP, own_socket, sock_info},
    stacks::{copy_stack, walk_frame_pointers},
    syscalls::O_CLOEXEC,
};

/// Where a syscall's interesting arguments are in its tracepoint record.
#[derive(Clone, Copy)]
pub(crate) struct Args {
    pub(crate) sc: u32,
    /// Path, name or result-array pointer.
    pub(crate) path: Option<usize>,
    /// Flags argument.
    pub(crate) flags: Option<usize>,
    /// Bits of `flags` that mean close-on-exec (translated to O_CLOEXEC).
    pub(crate) cloexec_bit: u64,
    /// Flags that always apply.
    pub(crate) fixed: u64,
    /// Duplicated descriptor.
    pub(crate) arg: Option<usize>,
}

pub(crate) const NONE: Args = Args {
    sc: 0,
    path: None,
    flags: None,
    cloexec_bit: O_CLOEXEC,
    fixed: 0,
    arg: None,
};

/// What the exit program needs to know of a call, from its arguments (`read` gives the argument
/// at a tracepoint-record offset).
#[inline(always)]
pub(crate) fn pending_from(a: Args, read: impl Fn(Option<usize>) -> u64) -> Pending {
    let path = read(a.path);
    // `fixed` is a constant: kept opaque, the zeros of `Pending` are not merged into a call to
    // the byte-at-a-time `memset` this target links.
    let mut flags = a.fixed | opaque_zero();
    if a.sc == syscall::OPENAT2 {
        // `struct open_how` starts with `__u64 flags`.
        let how = read(a.flags);
        flags |= unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
    } else if a.flags.is_some() {
        let f = read(a.flags);
        if a.cloexec_bit == O_CLOEXEC {
            flags |= f;
        } else if f & a.cloexec_bit != 0 {
            flags |= O_CLOEXEC;
        }
    }
    Pending {
        path,
        flags,
        syscall: a.sc,
        arg: if a.arg.is_some() {
            read(a.arg) as i32
        } else {
            -1
        },
    }
}

#[inline(always)]
pub(crate) fn remember(ctx: &TracePointContext, a: Args) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint formats of these syscalls.
    let p = pending_from(a, |off| match off {
        Some(o) => field::<u64>(ctx, o),
        None => opaque_zero(),
    });
    keep_pending(pid_tgid, &p);
    0
}

/// What a birth's exit reads back (`emit_open`), by thread.
#[inline(always)]
pub(crate) fn keep_pending(pid_tgid: u64, p: &Pending) {
    if PENDING.insert(&pid_tgid, p, 0).is_err() {
        bump(stat::PENDING_ERRORS);
    }
}

/// One chunk per message of a recvmmsg batch: its control length, then the start of its control
/// data (zeros for messages not received or without control data).
#[inline(always)]
pub(crate) fn recvmmsg_controls(dst: *mut u8, mmsg: u64, received: i64) {
    const CHUNK: usize = syscall::RECVMMSG_CHUNK;
    let words = dst as *mut u64;
    // SAFETY: `dst` points to MAX_PATH (256) bytes of a reserved record; every write below
    // stays within them (4 chunks of 64 bytes).
    unsafe {
        for w in 0..MAX_PATH / 8 {
            words.add(w).write_unaligned(0);
        }
    }
    macro_rules! chunk {
        ($i:expr) => {
            if ($i as i64) < received {
                let hdr = mmsg + ($i as u64) * 64;
                // SAFETY: user memory is read with probe_read_user; see above for `dst`.
                unsafe {
                    let control = bpf_probe_read_user((hdr + 32) as *const u64).unwrap_or(0);
                    let len = bpf_probe_read_user((hdr + 40) as *const u64).unwrap_or(0);
                    if control != 0 && len >= 16 {
                        words.add($i * CHUNK / 8).write_unaligned(len);
                        let d = dst.add($i * CHUNK + 8) as *mut c_void;
                        if probe_read_user_raw(d, (CHUNK - 8) as u32, control as *const c_void) != 0
                        {
                            let _ = probe_read_user_raw(d, 24, control as *const c_void);
                        }
                    }
                }
            }
        };
    }
    chunk!(0usize);
    chunk!(1usize);
    chunk!(2usize);
    chunk!(3usize);
}

/// `MMSG`: the recvmmsg variant (its own program, so each stays within the BPF stack limit,
/// and whose syscall is a constant: the other syscalls' branches are dropped from it).
#[inline(always)]
pub(crate) fn emit_open<const MMSG: bool, C: EbpfContext>(ctx: &C, ret: i64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain value copied out before removal.
    let pending = match unsafe { PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = PENDING.remove(&pid_tgid);
    // The target's entry and the registers are looked up late, where the record is written:
    // values held across the branches above multiply the states the 5.10 verifier walks (it
    // refused this program at its 1M-instruction limit with them looked up here).
    let sc = if MMSG {
        syscall::RECVMMSG
    } else {
        pending.syscall
    };
    emit_birth::<MMSG, C>(ctx, ret, sc, pid_tgid, None, pending, Regs::Read)
}

/// Where `emit_birth` gets the user registers, read where the record is written.
#[derive(Clone, Copy)]
pub(crate) enum Regs {
    /// Read by the caller already (the exits that read the arguments from the registers).
    Known(UserRegs),
    /// Read from the task now.
    Read,
    /// Read by the trampoline program that tail-called this one (`HAND_OVER`).
    HandedOver,
}

impl Regs {
    #[inline(always)]
    fn get(self) -> UserRegs {
        match self {
            Regs::Known(r) => r,
            Regs::Read => user_regs(),
            Regs::HandedOver => {
                let me = bpf_get_current_pid_tgid();
                match HAND_OVER.get_ptr(0) {
                    // SAFETY: a per-CPU value of this program's CPU, read and copied out.
                    Some(h) if unsafe { (*h).pid_tgid } == me => {
                        let mut r = UserRegs::default();
                        copy_words(unsafe { &(*h).regs }, &mut r);
                        r
                    }
                    // Overwritten since it was checked (a preempted program): read them again.
                    _ => user_regs(),
                }
            }
        }
    }
}

/// Hand a trampoline's birth to the record's program it tail-calls next (see `HAND_OVER`).
#[inline(always)]
pub(crate) fn hand_over(pid_tgid: u64, pending: &Pending, regs: &UserRegs) {
    if let Some(h) = HAND_OVER.get_ptr_mut(0) {
        // SAFETY: this CPU's value, written whole before the tail call reads it.
        unsafe {
            (*h).pid_tgid = pid_tgid;
            copy_words(pending, &mut (*h).pending);
            copy_words(regs, &mut (*h).regs);
        }
    }
}

/// The record of a birth on a trampoline, from what its program handed over (`hand_over`).
#[inline(always)]
pub(crate) fn emit_handed_over<C: EbpfContext>(ctx: &C, ret: i64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(h) = HAND_OVER.get_ptr(0) else {
        return 0;
    };
    let mut pending = Pending {
        path: 0,
        flags: 0,
        syscall: 0,
        arg: 0,
    };
    // SAFETY: this CPU's value, copied out.
    unsafe {
        if (*h).pid_tgid != pid_tgid {
            // Another thread's birth overwrote it in between (a preempted program).
            bump(stat::LOST_EVENTS);
            return 0;
        }
        copy_words(&(*h).pending, &mut pending);
    }
    emit_birth::<false, C>(
        ctx,
        ret,
        pending.syscall,
        pid_tgid,
        // Looked up again where the record is written: a value read from `HAND_OVER` here
        // is more than 6.1's verifier takes in this program (it refused it).
        None,
        pending,
        Regs::HandedOver,
    )
}

/// Every field of a birth record but its stack.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn fill_head<const MMSG: bool>(
    ev: *mut OpenEvent,
    sc: u32,
    pid_tgid: u64,
    failed: bool,
    fd: i32,
    fd2: i32,
    pending: &Pending,
    control: u64,
    control_len: u64,
    ret: i64,
    sock: &SockInfo,
    regs: &UserRegs,
) {
    // SAFETY: `ev` points to a reserved record holding at least the fields before `stack`.
    unsafe {
        (*ev).hdr = header(
            if failed {
                kind::OPEN_FAILED
            } else {
                kind::OPEN
            },
            pid_tgid,
        );
        (*ev).fd = fd;
        (*ev).fd2 = fd2;
        (*ev).arg = if sc == syscall::RECVMSG {
            control_len as i32
        } else if sc == syscall::RECVMMSG {
            ret as i32
        } else {
            pending.arg
        };
        (*ev).flags = pending.flags as u32;
        (*ev).syscall = sc;
        (*ev).ip = regs.ip;
        (*ev).sp = regs.sp;
        (*ev).bp = regs.bp;
        copy_words(sock, &mut (*ev).sock);
        if sc == syscall::RECVMSG {
            // The control messages, raw: user space finds the SCM_RIGHTS descriptors.
            let dst = (*ev).path.as_mut_ptr() as *mut c_void;
            if probe_read_user_raw(dst, MAX_PATH as u32, control as *const c_void) != 0
                && probe_read_user_raw(dst, 64, control as *const c_void) != 0
                && probe_read_user_raw(dst, 24, control as *const c_void) != 0
            {
                (*ev).arg = 0;
            }
        } else if MMSG {
            recvmmsg_controls((*ev).path.as_mut_ptr(), pending.path, ret);
        } else if !syscall::has_path(sc)
            || bpf_probe_read_user_str_bytes(pending.path as *const u8, &mut (*ev).path).is_err()
        {
            (*ev).path[0] = 0;
        }
    }
}

/// The record of a syscall that may have created descriptors, at its exit (`ret`: what it
/// returned), from a tracepoint or a trampoline (`ctx`). `sc`: the syscall (`pending.syscall`,
/// or a constant where the program serves one syscall).
#[inline(always)]
pub(crate) fn emit_birth<const MMSG: bool, C: EbpfContext>(
    ctx: &C,
    ret: i64,
    sc: u32,
    pid_tgid: u64,
    target: Option<u32>,
    pending: Pending,
    regs: Regs,
) -> u32 {
    // "Too many open files" is the failure worth a stack: the leak's symptom.
    let failed = (ret == -EMFILE || ret == -ENFILE)
        && sc != syscall::SET_CLOEXEC
        && sc != syscall::RECVMSG
        && sc != syscall::RECVMMSG;
    if ret < 0 && !failed {
        return 0;
    }
    if failed {
        count_failure((pid_tgid >> 32) as u32, sc, (-ret) as u32);
        if !sample_failure() {
            return 0;
        }
    }
    if sc == syscall::SET_CLOEXEC {
        let ev = CloexecEvent {
            hdr: header(kind::CLOEXEC, pid_tgid),
            fd: pending.arg,
            on: pending.flags as u32,
        };
        if EVENTS
            .output::<CloexecEvent>(&ev, wakeup_before::<CloexecEvent>())
            .is_err()
        {
            bump(stat::LOST_EVENTS);
        }
        return 0;
    }
    // recvmsg: a birth only when the control data the kernel wrote back is not empty.
    let mut control: u64 = 0;
    let mut control_len: u64 = 0;
    if sc == syscall::RECVMSG {
        // struct msghdr: msg_control at 32, msg_controllen at 40 (updated by the kernel).
        control = unsafe { bpf_probe_read_user((pending.path + 32) as *const u64) }.unwrap_or(0);
        control_len =
            unsafe { bpf_probe_read_user((pending.path + 40) as *const u64) }.unwrap_or(0);
        if control == 0 || control_len < 16 {
            return 0;
        }
    }
    // recvmmsg: struct mmsghdr (64 bytes) starts with its msghdr; a birth when any of the first
    // messages brought control data.
    if MMSG != (sc == syscall::RECVMMSG) {
        return 0;
    }
    if MMSG {
        let mut any = false;
        for i in 0..syscall::RECVMMSG_MSGS as u64 {
            if (i as i64) < ret {
                let len =
                    unsafe { bpf_probe_read_user((pending.path + i * 64 + 40) as *const u64) }
                        .unwrap_or(0);
                any |= len >= 16;
            }
        }
        if !any {
            return 0;
        }
    }
    let (fd, fd2) = if failed {
        (ret as i32, -1)
    } else if sc == syscall::RECVMSG || sc == syscall::RECVMMSG {
        (-1, -1)
    } else if syscall::returns_pair(sc) {
        // SAFETY: the kernel just wrote two ints to this user array.
        let pair: [i32; 2] =
            unsafe { bpf_probe_read_user(pending.path as *const [i32; 2]) }.unwrap_or([-1, -1]);
        (pair[0], pair[1])
    } else {
        (ret as i32, -1)
    };
    let sock = if syscall::makes_sockets(sc) && !failed && !MMSG {
        match sock_info(fd) {
            Some(info) => {
                if (info.family == AF_INET || info.family == AF_INET6)
                    && info.protocol == IPPROTO_TCP
                {
                    own_socket(info.sk, (pid_tgid >> 32) as u32);
                }
                info
            }
            None => {
                bump(stat::SOCK_ERRORS);
                SockInfo::default()
            }
        }
    } else {
        SockInfo::default()
    };
    // Under load, the stack is the detail that gives way, never the birth: once the ring
    // buffer is half full, a birth is sent without its stack (a sixth of the bytes, and
    // nothing for user space to unwind), so births and deaths keep arriving while the consumer
    // catches up. Failures are already limited to a bounded rate (`sample_failure`).
    if !failed && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= shed_bytes() {
        let Some(mut entry) = EVENTS.reserve::<[u8; OPEN_HEAD_BYTES]>(0) else {
            bump(stat::LOST_EVENTS);
            return 0;
        };
        let ev = entry.as_mut_ptr() as *mut OpenEvent;
        let regs = regs.get();
        // SAFETY: the reservation holds every field before `stack`, which is not written.
        unsafe {
            fill_head::<MMSG>(
                ev,
                sc,
                pid_tgid,
                failed,
                fd,
                fd2,
                &pending,
                control,
                control_len,
                ret,
                &sock,
                &regs,
            );
            (*ev).stack_len = 0;
            (*ev).stack_kind = capture::SHED;
            (*ev).goid = 0;
            (*ev).parent_goid = 0;
            (*ev).gopc = 0;
        }
        bump(stat::STACKS_SHED);
        entry.submit(wakeup_after::<[u8; OPEN_HEAD_BYTES]>());
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let regs = regs.get();
    let sp = regs.sp;
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        fill_head::<MMSG>(
            ev,
            sc,
            pid_tgid,
            failed,
            fd,
            fd2,
            &pending,
            control,
            control_len,
            ret,
            &sock,
            &regs,
        );
        // How this process's stacks are captured (set per target by user space).
        let target = match target {
            Some(t) => t,
            None => TARGETS
                .get(&((pid_tgid >> 32) as u32))
                .copied()
                .unwrap_or(capture::STACK_COPY as u32),
        };
        let how = if target & go::MODE_MASK == capture::FRAME_POINTERS as u32 {
            capture::FRAME_POINTERS
        } else {
            capture::STACK_COPY
        };
        let n = if how == capture::FRAME_POINTERS {
            walk_frame_pointers(ctx, &mut (*ev).stack)
        } else if sp != 0 {
            copy_stack(&mut (*ev).stack, sp)
        } else {
            0
        };
        // An io_uring worker's birth has no user stack to take (ip 0, see `installs.rs`).
        if n == 0 && !(sc == syscall::INSTALLED && regs.ip == 0) {
            bump(stat::STACK_ERRORS);
        }
        (*ev).stack_len = n as u16;
        (*ev).stack_kind = if n == 0 { capture::NONE } else { how };
        // Go programs: the goroutine, from the g register (r14) the syscall was made with.
        let (goid, parent, gopc) = if target >> go::GOID_SHIFT != 0 && regs.base != 0 {
            let g = read_kernel::<u64>(regs.base + PT_REGS_R14 as u64 * 8).unwrap_or(0);
            goroutine::ids(g, sp, target)
        } else {
            (0, 0, 0)
        };
        (*ev).goid = goid;
        (*ev).parent_goid = parent;
        (*ev).gopc = gopc;
    }
    entry.submit(wakeup_after::<OpenEvent>());
    0
}
