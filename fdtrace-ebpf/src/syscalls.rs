//! The table of hooked syscalls: which tracepoint records what at entry, and which exit sends a
//! birth; the syscalls that need a program of their own.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use fdtrace_common::syscall;

use crate::{
    births::{Args, NONE, emit_birth, emit_open, pending_from, remember},
    filter::target_mode,
    registers::{ARG0, ARG1, ARG2, ARG3, ARG4, field, user_regs},
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
            let pid_tgid = bpf_get_current_pid_tgid();
            // SAFETY: read-only lookup of a plain value.
            let Some(target) = target_mode((pid_tgid >> 32) as u32) else {
                return 0;
            };
            let regs = user_regs();
            let pending = pending_from($args, |off| regs.arg(off));
            emit_birth::<false>(&ctx, pid_tgid, Some(target), pending, Some(regs))
        }
    };
}

/// One entry program per syscall, naming where its arguments are.
macro_rules! enter {
    ($name:ident, $args:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            remember(&ctx, $args)
        }
    };
}

enter!(
    enter_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

exit_regs!(
    exit_regs_openat,
    Args {
        sc: syscall::OPENAT,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

enter!(
    enter_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

exit_regs!(
    exit_regs_open,
    Args {
        sc: syscall::OPEN,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_creat,
    Args {
        sc: syscall::CREAT,
        path: Some(ARG0),
        fixed: O_CREAT | O_WRONLY | O_TRUNC,
        ..NONE
    }
);

enter!(
    enter_openat2,
    Args {
        sc: syscall::OPENAT2,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

enter!(
    enter_socket,
    Args {
        sc: syscall::SOCKET,
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_accept,
    Args {
        sc: syscall::ACCEPT,
        arg: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);

exit_regs!(
    exit_regs_accept4,
    Args {
        sc: syscall::ACCEPT,
        flags: Some(ARG3),
        arg: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_dup,
    Args {
        sc: syscall::DUP,
        arg: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_dup2,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_dup3,
    Args {
        sc: syscall::DUP2,
        arg: Some(ARG0),
        flags: Some(ARG2),
        ..NONE
    }
);

enter!(
    enter_eventfd,
    Args {
        sc: syscall::EVENTFD,
        ..NONE
    }
);

enter!(
    enter_eventfd2,
    Args {
        sc: syscall::EVENTFD,
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_epoll_create,
    Args {
        sc: syscall::EPOLL,
        ..NONE
    }
);

enter!(
    enter_epoll_create1,
    Args {
        sc: syscall::EPOLL,
        flags: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_pipe,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_pipe2,
    Args {
        sc: syscall::PIPE,
        path: Some(ARG0),
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_socketpair,
    Args {
        sc: syscall::SOCKETPAIR,
        path: Some(ARG3),
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_timerfd_create,
    Args {
        sc: syscall::TIMERFD,
        flags: Some(ARG1),
        ..NONE
    }
);

enter!(
    enter_inotify_init,
    Args {
        sc: syscall::INOTIFY,
        ..NONE
    }
);

enter!(
    enter_inotify_init1,
    Args {
        sc: syscall::INOTIFY,
        flags: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_memfd_create,
    Args {
        sc: syscall::MEMFD,
        path: Some(ARG0),
        flags: Some(ARG1),
        cloexec_bit: MFD_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_pidfd_open,
    Args {
        sc: syscall::PIDFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_open_by_handle_at,
    Args {
        sc: syscall::OPEN_BY_HANDLE,
        flags: Some(ARG2),
        ..NONE
    }
);

enter!(
    enter_fanotify_init,
    Args {
        sc: syscall::FANOTIFY,
        flags: Some(ARG0),
        cloexec_bit: 1,
        ..NONE
    }
);

enter!(
    enter_memfd_secret,
    Args {
        sc: syscall::MEMFD_SECRET,
        flags: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_userfaultfd,
    Args {
        sc: syscall::USERFAULTFD,
        flags: Some(ARG0),
        ..NONE
    }
);

enter!(
    enter_perf_event_open,
    Args {
        sc: syscall::PERF_EVENT,
        flags: Some(ARG4),
        cloexec_bit: 8,
        ..NONE
    }
);

enter!(
    enter_pidfd_getfd,
    Args {
        sc: syscall::PIDFD_GETFD,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_io_uring_setup,
    Args {
        sc: syscall::IO_URING,
        fixed: O_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_mq_open,
    Args {
        sc: syscall::MQ_OPEN,
        path: Some(ARG0),
        fixed: O_CLOEXEC,
        ..NONE
    }
);

enter!(
    enter_fsopen,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);

enter!(
    enter_fsmount,
    Args {
        sc: syscall::MOUNT_API,
        flags: Some(ARG1),
        cloexec_bit: 1,
        ..NONE
    }
);

enter!(
    enter_fspick,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: 1,
        ..NONE
    }
);

enter!(
    enter_open_tree,
    Args {
        sc: syscall::OPEN_TREE_PATH,
        path: Some(ARG1),
        flags: Some(ARG2),
        ..NONE
    }
);

enter!(
    enter_recvmsg,
    Args {
        sc: syscall::RECVMSG,
        path: Some(ARG1),
        flags: Some(ARG2),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    }
);

// The first RECVMMSG_MSGS messages of a batch are examined.
enter!(
    enter_recvmmsg,
    Args {
        sc: syscall::RECVMMSG,
        path: Some(ARG1),
        flags: Some(ARG3),
        cloexec_bit: MSG_CMSG_CLOEXEC,
        ..NONE
    }
);

/// landlock_create_ruleset returns the ABI version, not a descriptor, with flag VERSION (1).
#[tracepoint]
pub fn enter_landlock_create_ruleset(ctx: TracePointContext) -> u32 {
    let flags: u64 = field(&ctx, ARG2);
    if flags & 1 != 0 {
        return 0;
    }
    remember(
        &ctx,
        Args {
            sc: syscall::LANDLOCK,
            fixed: O_CLOEXEC,
            ..NONE
        },
    )
}

/// bpf(): only the commands that return a new descriptor.
#[tracepoint]
pub fn enter_bpf(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG0);
    // MAP_CREATE, PROG_LOAD, OBJ_GET, PROG/MAP_GET_FD_BY_ID, RAW_TRACEPOINT_OPEN, BTF_LOAD,
    // BTF_GET_FD_BY_ID, LINK_CREATE, LINK_GET_FD_BY_ID, ENABLE_STATS, ITER_CREATE,
    // TOKEN_CREATE.
    let returns_fd = matches!(
        cmd,
        0 | 5 | 7 | 13 | 14 | 17 | 18 | 19 | 28 | 30 | 32 | 33 | 36
    );
    if !returns_fd {
        return 0;
    }
    remember(
        &ctx,
        Args {
            sc: syscall::BPF,
            fixed: O_CLOEXEC,
            ..NONE
        },
    )
}

/// ioctl FIOCLEX / FIONCLEX set and clear close-on-exec.
#[tracepoint]
pub fn enter_ioctl(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG1);
    let on = match cmd as u32 {
        FIOCLEX => 1,
        FIONCLEX => 0,
        _ => return 0,
    };
    remember(
        &ctx,
        Args {
            sc: syscall::SET_CLOEXEC,
            arg: Some(ARG0),
            fixed: on,
            ..NONE
        },
    )
}

/// signalfd/signalfd4 create a descriptor only when `ufd` is -1 (else they update it).
#[inline(always)]
pub(crate) fn signalfd(ctx: &TracePointContext, flags: Option<usize>) -> u32 {
    let ufd: u64 = field(&ctx, ARG0);
    if ufd as i32 != -1 {
        return 0;
    }
    remember(
        ctx,
        Args {
            sc: syscall::SIGNALFD,
            flags,
            ..NONE
        },
    )
}

#[tracepoint]
pub fn enter_signalfd(ctx: TracePointContext) -> u32 {
    signalfd(&ctx, None)
}

#[tracepoint]
pub fn enter_signalfd4(ctx: TracePointContext) -> u32 {
    signalfd(&ctx, Some(ARG3))
}

/// fcntl creates a descriptor only for F_DUPFD and F_DUPFD_CLOEXEC.
#[tracepoint]
pub fn enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd: u64 = field(&ctx, ARG1);
    let fixed = match cmd {
        F_DUPFD => 0,
        F_DUPFD_CLOEXEC => O_CLOEXEC,
        F_SETFD => {
            let arg: u64 = field(&ctx, ARG2);
            return remember(
                &ctx,
                Args {
                    sc: syscall::SET_CLOEXEC,
                    arg: Some(ARG0),
                    fixed: arg & FD_CLOEXEC,
                    ..NONE
                },
            );
        }
        _ => return 0,
    };
    remember(
        &ctx,
        Args {
            sc: syscall::FCNTL_DUPFD,
            arg: Some(ARG0),
            fixed,
            ..NONE
        },
    )
}

/// Shared by the exits of every open-like syscall.
#[tracepoint]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    emit_open::<false>(&ctx)
}

/// The exit of recvmmsg.
#[tracepoint]
pub fn exit_recvmmsg(ctx: TracePointContext) -> u32 {
    emit_open::<true>(&ctx)
}
