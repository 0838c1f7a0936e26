//! The table of hooked birth syscalls: what each records of its arguments, on its tracepoints
//! and on its kernel function's trampoline.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, tracepoint},
    programs::{FExitContext, TracePointContext},
};
use fdtrace_common::{stat, syscall};

use crate::{
    births::{
        Args, NONE, Regs, emit_birth, emit_handed_over, emit_open, hand_over, keep_pending,
        pending_from, remember,
    },
    filter::{is_target, target_mode},
    maps::{BIRTH_EXIT, BIRTH_EXIT2},
    registers::{ARG0, ARG1, ARG2, ARG3, ARG4, RET, field, opaque_zero, user_regs},
    ring::bump,
};

pub(crate) const O_WRONLY: u64 = 0o1;

pub(crate) const O_CREAT: u64 = 0o100;

pub(crate) const O_TRUNC: u64 = 0o1000;

pub(crate) const O_CLOEXEC: u64 = 0o2_000_000;

pub(crate) const MFD_CLOEXEC: u64 = 1;

pub(crate) const F_DUPFD: u64 = 0;

pub(crate) const F_DUPFD_CLOEXEC: u64 = 1030;

pub(crate) const F_SETFD: u64 = 2;

pub(crate) const FD_CLOEXEC: u64 = 1;

pub(crate) const FIONCLEX: u32 = 0x5450;

pub(crate) const FIOCLEX: u32 = 0x5451;

pub(crate) const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;

/// An exit program for a frequent syscall that needs no entry program: it reads the arguments
/// from the registers the syscall was entered with, which saves a tracepoint hit and a hash-map
/// insert, lookup and delete per call. User space attaches these on 5.15 and newer. The socket
/// births (`sock_info` after the early register reads) are too much for 6.1's verifier (it stops
/// at its 1M-instruction limit): user space falls back to `enter_accept4` and `exit_open`
/// where the kernel refuses `exit_regs_accept4`.
macro_rules! exit_regs {
    ($name:ident, $args:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            exit_regs_body!(ctx, field(&ctx, RET), $args)
        }
    };
    // With a twin on the trampoline of `__x64_sys_<name>` (one argument: the return value is the
    // second word), which sends the record itself: no hand-over and tail call to `fexit_birth`,
    // no second lookup of the target (a fifth of the record's time on 6.1), for one more copy
    // of the record's code for the verifier. User space falls back to `fexit_<name>` where the
    // kernel refuses it.
    ($name:ident, $fexit:ident, $args:expr) => {
        exit_regs!($name, $args);

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            exit_regs_body!(ctx, ctx.arg::<i64>(1), $args)
        }
    };
}

macro_rules! exit_regs_body {
    ($ctx:ident, $ret:expr, $args:expr) => {{
        let pid_tgid = bpf_get_current_pid_tgid();
        let Some(target) = target_mode((pid_tgid >> 32) as u32) else {
            return 0;
        };
        let regs = user_regs();
        let pending = pending_from($args, |off| regs.arg(off));
        emit_birth::<false, _>(
            &$ctx,
            $ret,
            pending.syscall,
            pid_tgid,
            Some(target),
            pending,
            Regs::Known(regs),
        )
    }};
}

/// The body of a birth's trampoline program: the arguments from the registers, handed with the
/// registers to the program that sends the record (`fexit_birth`, through a tail call by `$exit`,
/// see `BIRTH_EXIT`: one copy of the record code for the verifier, not one per syscall; values
/// held from the register reads across it are what 6.1's refuses in `exit_regs_accept4`).
/// recvmmsg's record is a variant of its own, sent here through `PENDING`.
macro_rules! birth_trampoline {
    ($ctx:ident, $exit:ident, $mmsg:literal, |$read:ident| $args:expr) => {{
        let pid_tgid = bpf_get_current_pid_tgid();
        if !is_target((pid_tgid >> 32) as u32) {
            return 0;
        }
        let regs = user_regs();
        let $read = |off: usize| regs.arg(Some(off));
        let a = match $args {
            Some(a) => a,
            None => return 0,
        };
        let pending = pending_from(a, |off| match off {
            Some(_) => regs.arg(off),
            None => opaque_zero(),
        });
        if $mmsg {
            keep_pending(pid_tgid, &pending);
            // `__x64_sys_<name>(const struct pt_regs *)`: the return value follows the
            // argument.
            return emit_open::<true, _>(&$ctx, $ctx.arg::<i64>(1));
        }
        hand_over(pid_tgid, &pending, &regs);
        // SAFETY: the context is this program's own, passed on unchanged.
        let _ = unsafe { $exit.tail_call(&$ctx, 0) };
        // Only when the record's program is not in the map.
        bump(stat::LOST_EVENTS);
        0
    }};
}

/// One birth syscall, from the arguments it is called with, on either hook (user space picks
/// one per syscall, see fdtrace's `hooks.rs`): `enter_<name>` on its entry tracepoint (the exit
/// tracepoint's `exit_open` sends the record), and `fexit_<name>` or `fexit2_<name>`, on the
/// trampoline of the kernel function `__x64_sys_<name>` after it returns, which send it at once
/// (two copies: see `BIRTH_EXIT2`). `$args` reads
/// an argument at its tracepoint-record offset with `$read` and gives the birth's `Args`, or
/// None when this call creates no descriptor. `$mmsg`: the recvmmsg variant of the record.
macro_rules! birth {
    ($enter:ident, $fexit:ident, $fexit2:ident, $mmsg:literal, |$read:ident| $args:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let $read = |off: usize| field::<u64>(&ctx, off);
            match $args {
                Some(a) => remember(&ctx, a),
                None => 0,
            }
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            birth_trampoline!(ctx, BIRTH_EXIT, $mmsg, |$read| $args)
        }

        #[fexit]
        pub fn $fexit2(ctx: FExitContext) -> u32 {
            birth_trampoline!(ctx, BIRTH_EXIT2, $mmsg, |$read| $args)
        }
    };
    ($enter:ident, $fexit:ident, $fexit2:ident, $args:expr) => {
        birth!($enter, $fexit, $fexit2, false, |_read| Some($args));
    };
}

birth!(
    enter_openat,
    fexit_openat,
    fexit2_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

exit_regs!(
    exit_regs_openat,
    fexit_r_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

birth!(
    enter_open,
    fexit_open,
    fexit2_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

exit_regs!(
    exit_regs_open,
    fexit_r_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_creat,
    fexit_creat,
    fexit2_creat,
    Args {
        sc: syscall::CREAT,
        path: Some(ARG0),
        fixed: O_CREAT | O_WRONLY | O_TRUNC,
        ..NONE
    }
);

birth!(
    enter_openat2,
    fexit_openat2,
    fexit2_openat2,
    Args {
        sc: syscall::OPENAT2,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

birth!(
    enter_socket,
    fexit_socket,
    fexit2_socket,
    Args {
        sc: syscall::SOCKET,
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_accept,
    fexit_accept,
    fexit2_accept,
    Args {
        sc: syscall::ACCEPT,
        arg: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_accept4,
    fexit_accept4,
    fexit2_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);

exit_regs!(
    exit_regs_accept4,
    fexit_r_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_dup,
    fexit_dup,
    fexit2_dup,
    Args {
        sc: syscall::DUP,
        arg: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_dup2,
    fexit_dup2,
    fexit2_dup2,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_dup3,
    fexit_dup3,
    fexit2_dup3,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        flags: Some(ARG2),
        ..NONE
    }
);

birth!(
    enter_eventfd,
    fexit_eventfd,
    fexit2_eventfd,
    Args {
        sc: syscall::EVENTFD,
        ..NONE
    }
);

birth!(
    enter_eventfd2,
    fexit_eventfd2,
    fexit2_eventfd2,
    Args {
        sc: syscall::EVENTFD,
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_epoll_create,
    fexit_epoll_create,
    fexit2_epoll_create,
    Args {
        sc: syscall::EPOLL,
        ..NONE
    }
);

birth!(
    enter_epoll_create1,
    fexit_epoll_create1,
    fexit2_epoll_create1,
    Args {
        sc: syscall::EPOLL,
        flags: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_pipe,
    fexit_pipe,
    fexit2_pipe,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_pipe2,
    fexit_pipe2,
    fexit2_pipe2,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_socketpair,
    fexit_socketpair,
    fexit2_socketpair,
    Args {
        sc: syscall::SOCKETPAIR,
        path: Some(ARG3),
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_timerfd_create,
    fexit_timerfd_create,
    fexit2_timerfd_create,
    Args {
        sc: syscall::TIMERFD,
        flags: Some(ARG1),
        ..NONE
    }
);

birth!(
    enter_inotify_init,
    fexit_inotify_init,
    fexit2_inotify_init,
    Args {
        sc: syscall::INOTIFY,
        ..NONE
    }
);

birth!(
    enter_inotify_init1,
    fexit_inotify_init1,
    fexit2_inotify_init1,
    Args {
        sc: syscall::INOTIFY,
        flags: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_memfd_create,
    fexit_memfd_create,
    fexit2_memfd_create,
    Args {
        sc: syscall::MEMFD,
        path: Some(ARG0),
        flags: Some(ARG1),
        cloexec_bit: MFD_CLOEXEC,
        ..NONE
    }
);

birth!(
    enter_pidfd_open,
    fexit_pidfd_open,
    fexit2_pidfd_open,
    Args {
        sc: syscall::PIDFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

birth!(
    enter_open_by_handle_at,
    fexit_open_by_handle_at,
    fexit2_open_by_handle_at,
    Args {
        sc: syscall::OPEN_BY_HANDLE,
        flags: Some(ARG2),
        ..NONE
    }
);

birth!(
    enter_fanotify_init,
    fexit_fanotify_init,
    fexit2_fanotify_init,
    Args {
        sc: syscall::FANOTIFY,
        flags: Some(ARG0),
        cloexec_bit: 1,
        ..NONE
    }
);

birth!(
    enter_memfd_secret,
    fexit_memfd_secret,
    fexit2_memfd_secret,
    Args {
        sc: syscall::MEMFD_SECRET,
        flags: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_userfaultfd,
    fexit_userfaultfd,
    fexit2_userfaultfd,
    Args {
        sc: syscall::USERFAULTFD,
        flags: Some(ARG0),
        ..NONE
    }
);

birth!(
    enter_perf_event_open,
    fexit_perf_event_open,
    fexit2_perf_event_open,
    Args {
        sc: syscall::PERF_EVENT,
        flags: Some(ARG4),
        cloexec_bit: 8,
        ..NONE
    }
);

birth!(
    enter_pidfd_getfd,
    fexit_pidfd_getfd,
    fexit2_pidfd_getfd,
    Args {
        sc: syscall::PIDFD_GETFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

birth!(
    enter_io_uring_setup,
    fexit_io_uring_setup,
    fexit2_io_uring_setup,
    Args {
        sc: syscall::IO_URING,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

birth!(
    enter_mq_open,
    fexit_mq_open,
    fexit2_mq_open,
    Args {
        sc: syscall::MQ_OPEN,
        path: Some(ARG0),
        fixed: O_CLOEXEC,
        ..NONE
    }
);

birth!(
    enter_fsopen,
    fexit_fsopen,
    fexit2_fsopen,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);

birth!(
    enter_fsmount,
    fexit_fsmount,
    fexit2_fsmount,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);

birth!(
    enter_fspick,
    fexit_fspick,
    fexit2_fspick,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: 1,
        ..NONE
    }
);

birth!(
    enter_open_tree,
    fexit_open_tree,
    fexit2_open_tree,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

birth!(
    enter_recvmsg,
    fexit_recvmsg,
    fexit2_recvmsg,
    Args {
        sc: syscall::RECVMSG,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    }
);

// The first RECVMMSG_MSGS messages of a batch are examined.
birth!(
    enter_recvmmsg,
    fexit_recvmmsg,
    fexit2_recvmmsg,
    true,
    |_read| Some(Args {
        sc: syscall::RECVMMSG,
        path: Some(ARG1),
        flags: Some(ARG3),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    })
);

birth!(
    enter_landlock_create_ruleset,
    fexit_landlock_create_ruleset,
    fexit2_landlock_create_ruleset,
    false,
    |read| {
        // With flag VERSION (1) it returns the ABI version, not a descriptor.
        if read(ARG2) & 1 != 0 {
            None
        } else {
            Some(Args {
                sc: syscall::LANDLOCK,
                fixed: O_CLOEXEC,
                ..NONE
            })
        }
    }
);

// bpf(): only the commands that return a new descriptor: MAP_CREATE, PROG_LOAD, OBJ_GET,
// PROG/MAP_GET_FD_BY_ID, RAW_TRACEPOINT_OPEN, BTF_LOAD, BTF_GET_FD_BY_ID, LINK_CREATE,
// LINK_GET_FD_BY_ID, ENABLE_STATS, ITER_CREATE, TOKEN_CREATE.
birth!(enter_bpf, fexit_bpf, fexit2_bpf, false, |read| {
    if matches!(
        read(ARG0),
        0 | 5 | 7 | 13 | 14 | 17 | 18 | 19 | 28 | 30 | 32 | 33 | 36
    ) {
        Some(Args {
            sc: syscall::BPF,
            fixed: O_CLOEXEC,
            ..NONE
        })
    } else {
        None
    }
});

// ioctl FIOCLEX / FIONCLEX set and clear close-on-exec.
birth!(enter_ioctl, fexit_ioctl, fexit2_ioctl, false, |read| {
    match read(ARG1) as u32 {
        FIOCLEX => Some(1),
        FIONCLEX => Some(0),
        _ => None,
    }
    .map(|on| Args {
        sc: syscall::SET_CLOEXEC,
        arg: Some(ARG0),
        fixed: on,
        ..NONE
    })
});

// signalfd/signalfd4 create a descriptor only when `ufd` is -1 (else they update it).
birth!(
    enter_signalfd,
    fexit_signalfd,
    fexit2_signalfd,
    false,
    |read| {
        (read(ARG0) as i32 == -1).then_some(Args {
            sc: syscall::SIGNALFD,
            ..NONE
        })
    }
);

birth!(
    enter_signalfd4,
    fexit_signalfd4,
    fexit2_signalfd4,
    false,
    |read| {
        (read(ARG0) as i32 == -1).then_some(Args {
            sc: syscall::SIGNALFD,
            flags: Some(ARG3),
            ..NONE
        })
    }
);

// fcntl creates a descriptor only for F_DUPFD and F_DUPFD_CLOEXEC; F_SETFD sets close-on-exec.
birth!(enter_fcntl, fexit_fcntl, fexit2_fcntl, false, |read| {
    match read(ARG1) {
        F_DUPFD | F_DUPFD_CLOEXEC => Some(Args {
            sc: syscall::FCNTL_DUPFD,
            arg: Some(ARG0),
            fixed: if read(ARG1) == F_DUPFD { 0 } else { O_CLOEXEC },
            ..NONE
        }),
        F_SETFD => Some(Args {
            sc: syscall::SET_CLOEXEC,
            arg: Some(ARG0),
            fixed: read(ARG2) & FD_CLOEXEC,
            ..NONE
        }),
        _ => None,
    }
});

/// The record of every birth on a trampoline but recvmmsg's, tail-called by its `fexit_<name>`
/// (through `BIRTH_EXIT`) with the context of `__x64_sys_<name>`: every such function takes
/// one argument, so the return value is the second word.
#[fexit]
pub fn fexit_birth(ctx: FExitContext) -> u32 {
    emit_handed_over(&ctx, ctx.arg::<i64>(1))
}

/// `fexit_birth` for the functions of the other prototype (see `BIRTH_EXIT2`).
#[fexit]
pub fn fexit_birth2(ctx: FExitContext) -> u32 {
    emit_handed_over(&ctx, ctx.arg::<i64>(1))
}

/// Shared by the exits of every open-like syscall.
#[tracepoint]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    emit_open::<false, _>(&ctx, field(&ctx, RET))
}

/// The exit of recvmmsg.
#[tracepoint]
pub fn exit_recvmmsg(ctx: TracePointContext) -> u32 {
    emit_open::<true, _>(&ctx, field(&ctx, RET))
}
