//! Sockets: addresses of `bind`/`connect`, the socket behind a descriptor, and TCP state changes.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
    macros::{fexit, raw_tracepoint, tracepoint},
    programs::{FExitContext, RawTracePointContext, TracePointContext},
};
use fdtrace_common::{
    KernelLayout, MAX_SOCKADDR, SockAddrEvent, SockInfo, SockStateEvent, adjacent, file_refs, kind,
    stat,
};

use crate::{
    filter::{is_target, maybe_target},
    maps::{ADDR_PENDING, AddrPending, EVENTS, LAYOUT, SOCK_MARK_SHIFT, SOCK_MARKS, SOCKS},
    registers::{ARG0, ARG1, ARG2, RET, field, read_kernel, user_regs},
    ring::{bump, header, wakeup_after, wakeup_before},
};

pub(crate) const AF_INET: u16 = 2;

pub(crate) const AF_INET6: u16 = 10;

pub(crate) const IPPROTO_TCP: u16 = 6;

pub(crate) const TCP_CLOSE: u32 = 7;

pub(crate) const EINPROGRESS: i64 = 115;

/// Find the `struct sock` behind descriptor `fd` of the current task and read what it says
/// about itself: task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
#[inline(always)]
pub(crate) fn sock_info(fd: i32) -> Option<SockInfo> {
    let l = LAYOUT.get(0)?;
    if l.valid == 0 || fd < 0 {
        return None;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_kernel(task + l.task_files as u64)?;
    let fdt: u64 = read_kernel(files + l.files_fdt as u64)?;
    let (max_fds, array) = if l.adjacent & adjacent::FDTABLE != 0 {
        let [max_fds, array]: [u64; 2] = read_kernel(fdt)?;
        (max_fds as u32, array)
    } else {
        (
            read_kernel::<u32>(fdt + l.fdt_max_fds as u64)?,
            read_kernel::<u64>(fdt + l.fdt_fd as u64)?,
        )
    };
    if fd as u32 >= max_fds {
        return None;
    }
    let file: u64 = read_kernel(array + (fd as u64) * 8)?;
    let socket: u64 = read_kernel(file + l.file_private_data as u64)?;
    let sk: u64 = read_kernel(socket + l.socket_sk as u64)?;
    if sk == 0 {
        return None;
    }
    let head = sock_head(sk, l);
    let (sk_type, protocol) = type_and_protocol(sk, l);
    let mut info = SockInfo {
        sk,
        family: head.family,
        state: head.state as u16,
        lport: head.num,
        rport: head.dport,
        sk_type,
        protocol,
        ..SockInfo::default()
    };
    if info.family == AF_INET {
        info.raddr[..4].copy_from_slice(&head.daddr.to_ne_bytes());
        info.laddr[..4].copy_from_slice(&head.rcv_saddr.to_ne_bytes());
    } else if info.family == AF_INET6 {
        let [d0, d1, s0, s1] = v6_addrs(sk, l);
        // SAFETY: two u64 are 16 bytes, any bit pattern is a valid byte array.
        info.raddr = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([d0, d1]) };
        info.laddr = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([s0, s1]) };
    }
    Some(info)
}

/// What `sock_common`'s head says of a socket (the IPv4 addresses as their bytes in memory
/// order, the remote port in host order).
struct SockHead {
    daddr: u32,
    rcv_saddr: u32,
    dport: u16,
    num: u16,
    family: u16,
    state: u8,
}

/// The head of `sk`'s `sock_common`: one read where it is laid out as usual
/// (`adjacent::SOCK_HEAD`), one per member otherwise. Unreadable members are 0.
#[inline(always)]
fn sock_head(sk: u64, l: &KernelLayout) -> SockHead {
    if l.adjacent & adjacent::SOCK_HEAD != 0 {
        // Little-endian words: daddr, rcv_saddr, hash, dport | num << 16, family | state << 16.
        let w: [u32; 5] = read_kernel(sk).unwrap_or([0; 5]);
        SockHead {
            daddr: w[0],
            rcv_saddr: w[1],
            dport: u16::from_be(w[3] as u16),
            num: (w[3] >> 16) as u16,
            family: w[4] as u16,
            state: (w[4] >> 16) as u8,
        }
    } else {
        SockHead {
            daddr: read_kernel(sk + l.skc_daddr as u64).unwrap_or(0),
            rcv_saddr: read_kernel(sk + l.skc_rcv_saddr as u64).unwrap_or(0),
            dport: u16::from_be(read_kernel(sk + l.skc_dport as u64).unwrap_or(0)),
            num: read_kernel(sk + l.skc_num as u64).unwrap_or(0),
            family: read_kernel(sk + l.skc_family as u64).unwrap_or(0),
            state: read_kernel(sk + l.skc_state as u64).unwrap_or(0),
        }
    }
}

/// `sk_type` and `sk_protocol` of `sk` (0 where this kernel has no such member or it is
/// unreadable): one read where they sit together (`adjacent::TYPE_PROTOCOL`, `PROTOCOL_TYPE`).
#[inline(always)]
fn type_and_protocol(sk: u64, l: &KernelLayout) -> (u16, u16) {
    if l.adjacent & adjacent::TYPE_PROTOCOL != 0 {
        let [t, p]: [u16; 2] = read_kernel(sk + l.sk_type as u64).unwrap_or([0; 2]);
        return (t, p);
    }
    if l.adjacent & adjacent::PROTOCOL_TYPE != 0 {
        let [p, t]: [u16; 2] = read_kernel(sk + l.sk_protocol as u64).unwrap_or([0; 2]);
        return (t, p);
    }
    let mut out = (0, 0);
    if l.sk_type != fdtrace_common::NO_OFFSET {
        out.0 = read_kernel(sk + l.sk_type as u64).unwrap_or(0);
    }
    if l.sk_protocol != fdtrace_common::NO_OFFSET {
        out.1 = read_kernel(sk + l.sk_protocol as u64).unwrap_or(0);
    }
    out
}

/// The IPv6 remote and local addresses of `sk`, two words each (zeros where this kernel has
/// none or they are unreadable): one read where they sit together (`adjacent::V6_ADDRS`).
#[inline(always)]
fn v6_addrs(sk: u64, l: &KernelLayout) -> [u64; 4] {
    if l.skc_v6_daddr == fdtrace_common::NO_OFFSET {
        return [0; 4];
    }
    if l.adjacent & adjacent::V6_ADDRS != 0 {
        return read_kernel(sk + l.skc_v6_daddr as u64).unwrap_or([0; 4]);
    }
    let [d0, d1]: [u64; 2] = read_kernel(sk + l.skc_v6_daddr as u64).unwrap_or([0; 2]);
    let [s0, s1]: [u64; 2] = read_kernel(sk + l.skc_v6_rcv_saddr as u64).unwrap_or([0; 2]);
    [d0, d1, s0, s1]
}

/// What bind or connect was called with (`read`: the argument at a tracepoint-record offset).
#[inline(always)]
fn sockaddr_args(read: impl Fn(usize) -> u64, op: u32) -> AddrPending {
    AddrPending {
        fd: read(ARG0) as i32,
        addr: read(ARG1),
        len: read(ARG2) as u32,
        op,
        _pad: 0,
    }
}

#[inline(always)]
pub(crate) fn sockaddr_enter(ctx: &TracePointContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // Offsets from the formats of sys_enter_bind/sys_enter_connect.
    let p = sockaddr_args(|off| field::<u64>(ctx, off), op);
    if ADDR_PENDING.insert(&pid_tgid, &p, 0).is_err() {
        bump(stat::PENDING_ERRORS);
    }
    0
}

#[tracepoint]
pub fn enter_bind(ctx: TracePointContext) -> u32 {
    sockaddr_enter(&ctx, fdtrace_common::SOCK_OP_BIND)
}

#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    sockaddr_enter(&ctx, fdtrace_common::SOCK_OP_CONNECT)
}

/// Shared by the exits of bind and connect.
#[tracepoint]
pub fn exit_sockaddr(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain value copied out before removal.
    let p = match unsafe { ADDR_PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return 0,
    };
    let _ = ADDR_PENDING.remove(&pid_tgid);
    send_sockaddr(pid_tgid, &p, field(&ctx, RET))
}

/// bind and connect on the trampolines of `__x64_sys_bind`/`__x64_sys_connect`, after they
/// return: arguments and result at once.
#[inline(always)]
fn sockaddr_exit(ctx: &FExitContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs = user_regs();
    let p = sockaddr_args(|off| regs.arg(Some(off)), op);
    send_sockaddr(pid_tgid, &p, ctx.arg::<i64>(1))
}

#[fexit]
pub fn fexit_bind(ctx: FExitContext) -> u32 {
    sockaddr_exit(&ctx, fdtrace_common::SOCK_OP_BIND)
}

#[fexit]
pub fn fexit_connect(ctx: FExitContext) -> u32 {
    sockaddr_exit(&ctx, fdtrace_common::SOCK_OP_CONNECT)
}

/// The address of a successful bind or connect (a non-blocking connect that is under way
/// counts).
#[inline(always)]
fn send_sockaddr(pid_tgid: u64, p: &AddrPending, ret: i64) -> u32 {
    if ret < 0 && ret != -EINPROGRESS {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<SockAddrEvent>(0) else {
        bump(stat::LOST_EVENTS);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        (*ev).hdr = header(kind::SOCK_ADDR, pid_tgid);
        (*ev).fd = p.fd;
        (*ev).op = p.op;
        (*ev).ret = ret as i32;
        let len = if p.len as usize > MAX_SOCKADDR {
            MAX_SOCKADDR as u32
        } else {
            p.len
        };
        let dst = (*ev).addr.as_mut_ptr() as *mut c_void;
        let src = p.addr as *const c_void;
        // The address may sit near the end of a mapping: try the full size, then the sizes of
        // sockaddr_in6 and sockaddr_in.
        (*ev).len = if probe_read_user_raw(dst, MAX_SOCKADDR as u32, src) == 0 {
            len
        } else if probe_read_user_raw(dst, 28, src) == 0 {
            if len > 28 { 28 } else { len }
        } else if probe_read_user_raw(dst, 16, src) == 0 {
            if len > 16 { 16 } else { len }
        } else {
            0
        };
    }
    entry.submit(wakeup_after::<SockAddrEvent>());
    0
}

/// `sock:inet_sock_set_state`: a TCP state change of any socket on the system; only sockets in
/// `SOCKS` (created or accepted by a target) pass. The fallback of `raw_sock_state`.
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from events/sock/inet_sock_set_state/format.
    let sk: u64 = field(&ctx, 8);
    state_change(sk, |_| {
        let protocol: u16 = field(&ctx, 30);
        let family: u16 = field(&ctx, 28);
        // The addresses as two words each, written whole (zeroing parts of byte arrays becomes
        // byte-at-a-time `memset` loops on this target).
        let (saddr, daddr): ([u64; 2], [u64; 2]) = if family == AF_INET6 {
            (
                [field(&ctx, 40), field(&ctx, 48)],
                [field(&ctx, 56), field(&ctx, 64)],
            )
        } else {
            // Little-endian: the 4 address bytes in memory order are the low 32 bits.
            let s: u32 = field(&ctx, 32);
            let d: u32 = field(&ctx, 36);
            ([s as u64, 0], [d as u64, 0])
        };
        StateChange {
            oldstate: field::<i32>(&ctx, 16) as u32,
            newstate: field::<i32>(&ctx, 20) as u32,
            family,
            protocol,
            sport: field(&ctx, 24),
            dport: field(&ctx, 26),
            saddr,
            daddr,
        }
    })
}

/// The same state changes on the raw tracepoint, where the kernel's tracing layout allows it:
/// its arguments (`sk`, `oldstate`, `newstate`) as they are, so that the kernel builds no
/// record of each change of every socket on the system before the `SOCK_MARKS` check (on loopback,
/// every connection's two sockets change state five times each; only the target's matter).
/// What the record held is read from the socket, for the sockets that pass.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn raw_sock_state(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    state_change(sk, |l| {
        let head = sock_head(sk, l);
        let (saddr, daddr): ([u64; 2], [u64; 2]) = if head.family == AF_INET6 {
            let [d0, d1, s0, s1] = v6_addrs(sk, l);
            ([s0, s1], [d0, d1])
        } else {
            ([head.rcv_saddr as u64, 0], [head.daddr as u64, 0])
        };
        StateChange {
            oldstate: ctx.arg::<u64>(1) as u32,
            newstate: ctx.arg::<u64>(2) as u32,
            family: head.family,
            protocol: type_and_protocol(sk, l).1,
            sport: head.num,
            dport: head.dport,
            saddr,
            daddr,
        }
    }) as i32
}

/// What a TCP state change says of its socket (addresses as two words each).
struct StateChange {
    oldstate: u32,
    newstate: u32,
    family: u16,
    protocol: u16,
    sport: u16,
    dport: u16,
    saddr: [u64; 2],
    daddr: [u64; 2],
}

/// `sk`'s slot in `SOCK_MARKS` (Fibonacci hashing: the top bits of the product).
#[inline(always)]
fn mark_slot(sk: u64) -> u32 {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    let shift = unsafe { core::ptr::read_volatile(&SOCK_MARK_SHIFT) } & 63;
    (sk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as u32
}

/// Add `delta` (1, or -1 as `u64::MAX`) to `sk`'s slot in `SOCK_MARKS`: one atomic add whose
/// result is not fetched (`BPF_XADD`, which every supported kernel's verifier takes; `core` has
/// no atomic read-modify-write for this target, hence the instruction written out).
#[inline(always)]
fn count_mark(sk: u64, delta: u64) {
    if let Some(p) = SOCK_MARKS.get_ptr_mut(mark_slot(sk)) {
        // SAFETY: `p` is a map value of 8 bytes, 8-byte aligned; it is only ever changed by
        // this atomic add (and read plainly by `state_change`).
        #[cfg(target_arch = "bpf")]
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({p} + 0) += {d}",
                p = in(reg) p,
                d = in(reg) delta,
                options(nostack),
            );
        }
        #[cfg(not(target_arch = "bpf"))]
        let _ = (p, delta);
    }
}

/// A target's new TCP socket (`tgid` owns it): its state changes are recorded from now on.
#[inline(always)]
pub(crate) fn own_socket(sk: u64, tgid: u32) {
    count_mark(sk, 1);
    // Failure only means the state events of this socket are not seen (and its slot stays
    // counted: a lookup for nothing).
    let _ = SOCKS.insert(&sk, &tgid, 0);
}

/// The socket concerns no target's descriptor any more: forget it.
#[inline(always)]
fn forget_socket(sk: u64) {
    if SOCKS.remove(&sk).is_ok() {
        count_mark(sk, u64::MAX);
    }
}

/// Is the file of `socket` (a `struct socket *`) being released: its last reference dropped,
/// `__fput` running (a TCP socket's close sets FIN_WAIT1, LAST_ACK or CLOSE from there)? No
/// where this kernel's layout does not say how to tell.
#[inline(always)]
fn file_released(socket: u64, l: &KernelLayout) -> bool {
    if l.file_refs == file_refs::UNKNOWN || l.socket_file == fdtrace_common::NO_OFFSET {
        return false;
    }
    let Some(file) = read_kernel::<u64>(socket + l.socket_file as u64) else {
        return false;
    };
    if file == 0 {
        // `__sock_release` clears it after the protocol's release.
        return true;
    }
    match read_kernel::<u64>(file + l.file_count as u64) {
        Some(n) if l.file_refs == file_refs::COUNT => n == 0,
        Some(n) => n >= file_refs::REF_RELEASED,
        None => false,
    }
}

/// A state change of socket `sk`: recorded if a target owns it, with what `change` reads.
#[inline(always)]
fn state_change(sk: u64, change: impl FnOnce(&KernelLayout) -> StateChange) -> u32 {
    match SOCK_MARKS.get(mark_slot(sk)) {
        Some(n) if *n != 0 => {}
        _ => return 0,
    }
    // SAFETY: plain value.
    let owner = match unsafe { SOCKS.get(&sk) } {
        Some(o) => *o,
        None => return 0,
    };
    let Some(l) = LAYOUT.get(0) else {
        return 0;
    };
    // No descriptor refers to the socket any more: forget it instead of writing records user
    // space would drop (before reading the rest). Either its last close orphaned it, after the
    // FIN_WAIT1 or LAST_ACK that close set: what it goes through next (FIN_WAIT2, CLOSE), half
    // of a closed connection's changes; or this is that close's own change, made while its
    // file is released (`__fput`, after the descriptor's close was recorded).
    if l.valid != 0 && l.sk_socket != fdtrace_common::NO_OFFSET {
        let socket = read_kernel::<u64>(sk + l.sk_socket as u64);
        if socket == Some(0) || socket.is_some_and(|s| file_released(s, l)) {
            forget_socket(sk);
            return 0;
        }
    }
    let c = change(l);
    if c.protocol != IPPROTO_TCP {
        return 0;
    }
    let mut hdr = header(kind::SOCK_STATE, bpf_get_current_pid_tgid());
    hdr.tgid = owner;
    let ev = SockStateEvent {
        hdr,
        sk,
        oldstate: c.oldstate,
        newstate: c.newstate,
        family: c.family,
        protocol: c.protocol,
        sport: c.sport,
        dport: c.dport,
        // SAFETY: two u64 are 16 bytes, any bit pattern is a valid byte array.
        saddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(c.saddr) },
        daddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(c.daddr) },
    };
    if EVENTS
        .output::<SockStateEvent>(&ev, wakeup_before::<SockStateEvent>())
        .is_err()
    {
        bump(stat::LOST_EVENTS);
    }
    if c.newstate == TCP_CLOSE {
        forget_socket(sk);
    }
    0
}
