//! Reading what a syscall was called with: tracepoint record fields and the user registers
//! (`pt_regs`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::task_struct,
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    programs::TracePointContext,
};

use crate::maps::LAYOUT;

// Offsets in the syscall tracepoint records (see events/syscalls/*/format).
pub(crate) const ARG0: usize = 16;

pub(crate) const ARG1: usize = 24;

pub(crate) const ARG2: usize = 32;

pub(crate) const ARG3: usize = 40;

pub(crate) const RET: usize = 16;

// x86_64 `struct pt_regs` word indexes.
pub(crate) const PT_REGS_R14: usize = 1;

pub(crate) const PT_REGS_BP: usize = 4;

pub(crate) const PT_REGS_IP: usize = 16;

pub(crate) const PT_REGS_SP: usize = 19;

pub(crate) const PT_REGS_R10: usize = 7;

pub(crate) const PT_REGS_R8: usize = 9;

pub(crate) const PT_REGS_DX: usize = 12;

pub(crate) const PT_REGS_SI: usize = 13;

pub(crate) const PT_REGS_DI: usize = 14;

pub(crate) const PT_REGS_ORIG_AX: usize = 15;

pub(crate) const ARG4: usize = 48;

/// The field of the tracepoint record at `off`, loaded directly. The verifier allows aligned
/// loads of up to 8 bytes at constant offsets of a tracepoint's context; `read_at` calls
/// `bpf_probe_read_kernel` instead, a helper call per field (ten per TCP state record).
/// `off` must be a constant once inlined: a computed offset is refused at load time.
#[inline(always)]
pub(crate) fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    const { assert!(core::mem::size_of::<T>() <= 8) };
    // SAFETY: the offsets come from the tracepoint formats; the record is readable.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// 1 when the kernel has `bpf_get_current_task_btf` (5.11) and `bpf_task_pt_regs` (5.15). Set
/// by user space before loading; it lives in the frozen `.rodata`, so the verifier knows its
/// value and never visits the other branch: older kernels, which reject those helpers, load
/// the programs because the calls are dead code to them.
#[unsafe(no_mangle)]
pub(crate) static HAVE_TASK_PT_REGS: u8 = 1;

/// The user registers a syscall was entered with: where it was called from, and its first four
/// arguments.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) bp: u64,
    pub(crate) di: u64,
    pub(crate) si: u64,
    pub(crate) dx: u64,
    /// Address of the task's `pt_regs` (for r10, read only when needed); 0 when unknown.
    pub(crate) base: u64,
}

/// The words of `pt_regs` read in one copy: `dx` (word 12) to `sp` (word 19). `bp` is read on
/// its own: a copy from word 4 would not fit the BPF stack of every program.
pub(crate) const PT_REGS_FIRST: usize = PT_REGS_DX;

pub(crate) const PT_REGS_WORDS: usize = PT_REGS_SP - PT_REGS_FIRST + 1;

impl UserRegs {
    /// The syscall argument at a tracepoint-record offset (`ARG0`..`ARG4`). x86_64 passes the
    /// first five in rdi, rsi, rdx, r10 and r8, and the kernel leaves them in `pt_regs` until
    /// the syscall returns.
    #[inline(always)]
    pub(crate) fn arg(&self, off: Option<usize>) -> u64 {
        match off {
            Some(ARG0) => self.di,
            Some(ARG1) => self.si,
            Some(ARG2) => self.dx,
            Some(ARG3) if self.base != 0 => {
                read_kernel::<u64>(self.base + PT_REGS_R10 as u64 * 8).unwrap_or(0)
            }
            Some(ARG4) if self.base != 0 => {
                read_kernel::<u64>(self.base + PT_REGS_R8 as u64 * 8).unwrap_or(0)
            }
            _ => 0,
        }
    }
}

/// The end of x86_64's user addresses: an ip at or above it is not a user-space one (or the
/// registers were not where they were looked for).
const USER_END: u64 = 0x0000_8000_0000_0000;

/// The current thread's user registers; zeros when unknown.
#[inline(always)]
pub(crate) fn user_regs() -> UserRegs {
    if have_task_pt_regs() {
        let r = task_regs();
        // SAFETY: loads at constant offsets of the `struct pt_regs` the helper returned: the
        // verifier knows its type (BTF) and makes each one a load guarded as a probe read is,
        // without a helper call.
        let word = |i: usize| unsafe { core::ptr::read_volatile(r.add(i)) };
        let ip = word(PT_REGS_IP);
        if ip >= USER_END {
            return UserRegs::default();
        }
        return UserRegs {
            ip,
            sp: word(PT_REGS_SP),
            bp: word(PT_REGS_BP),
            di: word(PT_REGS_DI),
            si: word(PT_REGS_SI),
            dx: word(PT_REGS_DX),
            base: r as u64,
        };
    }
    user_regs_at(regs_base())
}

#[inline(always)]
fn have_task_pt_regs() -> bool {
    // SAFETY: a volatile read of a constant the loader may have rewritten.
    unsafe { core::ptr::read_volatile(&HAVE_TASK_PT_REGS) != 0 }
}

/// Offsets of `task_struct.mm` and of `mm_struct.start_stack`, from the kernel's BTF (0: unknown).
/// Set by user space before loading, in the frozen `.rodata`: the verifier knows them, so the
/// loads in `main_stack_end` are at constant offsets of the BTF pointers it checks them against.
#[unsafe(no_mangle)]
pub(crate) static TASK_MM: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static MM_START_STACK: u32 = 0;

/// Where a copy of the current process's main stack may run to: the end of the page of its
/// first stack pointer (`mm->start_stack`, where exec put argc; every frame of the program is
/// below it, and its page is present); 0 when unknown (before 5.15, a kernel thread, offsets not
/// found). Above it, exec's arrays, then a random gap of up to 8 KiB whose whole pages are never
/// touched (not present), then the argument and environment strings and the mapping's end: a
/// copy of the user stack that runs into an absent page or past the end fails, which costs a
/// fault and the helper's clearing of the whole destination before a smaller copy is tried
/// (`copy_stack`): about as much as the copy itself, in about one process in six.
#[inline(always)]
pub(crate) fn main_stack_end() -> u64 {
    if !have_task_pt_regs() {
        return 0;
    }
    // SAFETY: volatile reads of constants the loader may have rewritten.
    let (mm_off, end_off) = unsafe {
        (
            core::ptr::read_volatile(&TASK_MM),
            core::ptr::read_volatile(&MM_START_STACK),
        )
    };
    if mm_off == 0 || end_off == 0 {
        return 0;
    }
    // SAFETY: loads at constant offsets of BTF pointers (`task->mm`, `mm->start_stack`), guarded
    // by the verifier as probe reads are (a kernel thread's NULL `mm` reads as 0).
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let mm = core::ptr::read_volatile(task.add(mm_off as usize) as *const *const u8);
        if mm.is_null() {
            return 0;
        }
        let start = core::ptr::read_volatile(mm.add(end_off as usize) as *const u64);
        if start == 0 {
            return 0;
        }
        (start + 4096) & !4095
    }
}

/// The current thread's `pt_regs`, as the pointer `bpf_task_pt_regs` returns (5.15 and later:
/// call only where `have_task_pt_regs()`).
#[inline(always)]
fn task_regs() -> *const u64 {
    // SAFETY: helpers of tracing programs since 5.15.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf() as *mut task_struct) as *const u64 }
}

/// Address of the current thread's user registers (`pt_regs`); 0 when unknown.
#[inline(always)]
pub(crate) fn regs_base() -> u64 {
    if have_task_pt_regs() {
        task_regs() as u64
    } else {
        // Before 5.15: x86_64's task_pt_regs(), task->stack + THREAD_SIZE - sizeof(pt_regs).
        let Some(l) = LAYOUT.get(0) else {
            return 0;
        };
        if l.valid == 0
            || l.task_stack == fdtrace_common::NO_OFFSET
            || l.regs_in_stack == fdtrace_common::NO_OFFSET
        {
            return 0;
        }
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        match read_kernel::<u64>(task + l.task_stack as u64) {
            Some(stack) if stack != 0 => stack + l.regs_in_stack as u64,
            _ => 0,
        }
    }
}

/// Where a thread is, from its `pt_regs`: the syscall it runs and its user ip and stack
/// pointer, read in one copy (`orig_ax` to `sp`).
#[derive(Clone, Copy)]
pub(crate) struct Position {
    /// Address of the `pt_regs`; 0 when unknown (then `nr` is -1, `ip` and `sp` 0).
    pub(crate) base: u64,
    /// `orig_ax`: the syscall's number.
    pub(crate) nr: i64,
    pub(crate) ip: u64,
    pub(crate) sp: u64,
}

/// The current thread's [`Position`].
#[inline(always)]
pub(crate) fn position() -> Position {
    if have_task_pt_regs() {
        let r = task_regs();
        // SAFETY: as in `user_regs`: loads the verifier guards, at constant offsets.
        let word = |i: usize| unsafe { core::ptr::read_volatile(r.add(i)) };
        return Position {
            base: r as u64,
            nr: word(PT_REGS_ORIG_AX) as i64,
            ip: word(PT_REGS_IP),
            sp: word(PT_REGS_SP),
        };
    }
    let base = regs_base();
    let w = if base == 0 {
        None
    } else {
        read_kernel::<[u64; PT_REGS_SP - PT_REGS_ORIG_AX + 1]>(base + PT_REGS_ORIG_AX as u64 * 8)
    };
    match w {
        Some(w) => Position {
            base,
            nr: w[0] as i64,
            ip: w[PT_REGS_IP - PT_REGS_ORIG_AX],
            sp: w[PT_REGS_SP - PT_REGS_ORIG_AX],
        },
        None => Position {
            base: 0,
            nr: -1,
            ip: 0,
            sp: 0,
        },
    }
}

/// The user registers at `regs` (a `pt_regs` address, 0 when unknown); zeros when unknown.
#[inline(always)]
pub(crate) fn user_regs_at(regs: u64) -> UserRegs {
    if regs == 0 {
        return UserRegs::default();
    }
    // One copy of the words needed (each probe_read is a helper call with its own checks).
    let Some(w) = read_kernel::<[u64; PT_REGS_WORDS]>(regs + PT_REGS_FIRST as u64 * 8) else {
        return UserRegs::default();
    };
    let word = |i: usize| w[i - PT_REGS_FIRST];
    let ip = word(PT_REGS_IP);
    // A user-space ip, or the registers were not where we looked.
    if ip >= USER_END {
        return UserRegs::default();
    }
    UserRegs {
        ip,
        sp: word(PT_REGS_SP),
        bp: read_kernel::<u64>(regs + PT_REGS_BP as u64 * 8).unwrap_or(0),
        di: word(PT_REGS_DI),
        si: word(PT_REGS_SI),
        dx: word(PT_REGS_DX),
        base: regs,
    }
}

/// 0, as a value the compiler cannot see (see `copy_words`).
#[inline(always)]
pub(crate) fn opaque_zero() -> u64 {
    let zero = 0u64;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&zero) }
}

/// `*dst = *src` word by word. A plain assignment of a zeroed value (or of odd-sized parts)
/// becomes a call to `memset`/`memcpy`, which the BPF target links as byte-at-a-time loops:
/// 56 iterations for a `SockInfo`, run on every birth and walked by the verifier.
#[inline(always)]
pub(crate) fn copy_words<T: Copy>(src: &T, dst: &mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0 && core::mem::align_of::<T>() >= 8) };
    let s = src as *const T as *const u64;
    let d = dst as *mut T as *mut u64;
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: both point to a whole, aligned `T`; volatile keeps each word a store of its own.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

#[inline(always)]
pub(crate) fn read_kernel<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}
