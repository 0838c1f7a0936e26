//! The calling thread's registers and the top of its stack, captured as the eBPF side
//! captures a traced thread's at a syscall.

/// The registers at a point inside this function and up to `STACK_BYTES` of the stack above
/// it (read through `/proc/self/mem`, so a copy stops where the stack ends), as the eBPF side
/// captures them at a syscall: for the unit tests and `examples/user_throughput`.
#[inline(never)]
pub fn capture_here() -> (u64, u64, u64, Vec<u8>) {
    use std::os::unix::fs::FileExt as _;
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers, touches no memory.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let mut stack = vec![0u8; fdtrace_common::STACK_BYTES];
    let mut done = 0;
    if let Ok(mem) = std::fs::File::open("/proc/self/mem") {
        while done < stack.len() {
            match mem.read_at(&mut stack[done..], sp + done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
    }
    stack.truncate(done);
    (ip, sp, bp, stack)
}
