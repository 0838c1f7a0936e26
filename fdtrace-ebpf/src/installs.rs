//! Descriptors installed outside the syscalls fdtrace hooks: io_uring's operations (in the
//! submitting thread, or in the worker threads io_uring starts in the process), an ioctl's,
//! clone's pidfd. On the trampoline of `fd_install(fd, file)`, which nearly every new descriptor
//! passes through, before it runs: both arguments are known then, and an fentry trampoline costs
//! every caller less than an fexit one, which calls the function itself. The births of the
//! hooked syscalls, recorded by their own programs, are skipped (`HOOKED_SYSCALLS`). Trampolines
//! only: a kernel without them keeps finding these descriptors as drift.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::fentry, programs::FEntryContext};
use fdtrace_common::{capture, syscall};

use crate::{
    births::{Regs, emit_birth},
    filter::{cgroup_filter, maybe_target, target_mode},
    maps::{HOOKED_SYSCALLS, Pending},
    registers::{Position, UserRegs, opaque_zero, position, user_regs_at},
};

#[fentry]
pub fn fentry_fd_install(ctx: FEntryContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !maybe_target(tgid) && !cgroup_filter() {
        return 0;
    }
    // Where the thread is first (one copy of four words): most births of a traced process are
    // its hooked syscalls' own, skipped here without reading the rest of its registers, nor
    // looking the process up in `TARGETS`.
    let at = position();
    let Some(nr) = outside(&at) else {
        return 0;
    };
    let Some(mode) = target_mode(tgid) else {
        return 0;
    };
    let worker = nr == syscall::INSTALLED_BY_WORKER as i64;
    // `fd_install(unsigned int fd, struct file *file)`.
    let fd: u32 = ctx.arg(0);
    let pending = Pending {
        path: 0,
        flags: 0,
        syscall: syscall::INSTALLED,
        arg: nr as i32,
    };
    // A worker has no user stack: its frame pointer is a stale copy of the thread that started
    // it, so no stack is taken (a copy from a zero stack pointer takes nothing).
    let (target, regs) = if worker {
        let z = opaque_zero();
        let none = UserRegs {
            ip: z,
            sp: z,
            bp: z,
            di: z,
            si: z,
            dx: z,
            base: at.base,
        };
        (capture::STACK_COPY as u32, none)
    } else {
        (mode, user_regs_at(at.base))
    };
    emit_birth::<false, _>(
        &ctx,
        fd as i64,
        syscall::INSTALLED,
        pid_tgid,
        Some(target),
        pending,
        Regs::Known(regs),
    )
}

/// Where the current thread is, for the programs on the functions every birth or death goes
/// through: the number of the syscall it runs, or [`syscall::INSTALLED_BY_WORKER`] in one of
/// io_uring's io-wq and SQPOLL threads (which never entered from user space: `copy_thread`
/// clears ip and sp of the threads it starts for the kernel); None in a syscall whose own
/// programs record its births and deaths (`HOOKED_SYSCALLS`).
#[inline(always)]
pub(crate) fn outside_hooked_syscalls() -> Option<i64> {
    outside(&position())
}

#[inline(always)]
fn outside(at: &Position) -> Option<i64> {
    if at.base != 0 && at.ip == 0 && at.sp == 0 {
        return Some(syscall::INSTALLED_BY_WORKER as i64);
    }
    let nr = at.nr;
    if (0..syscall::SYSCALL_NRS as i64).contains(&nr)
        && HOOKED_SYSCALLS.get(nr as u32).is_some_and(|&h| h != 0)
    {
        return None;
    }
    Some(nr)
}
