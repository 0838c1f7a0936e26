//! fdtrace's kernel side: tracepoint programs that observe descriptor births and deaths of the
//! target processes and stream them to user space through one ring buffer.
//!
//! Only processes whose thread-group id is in `TARGETS` pass the first check; every other
//! process pays one array load per traced syscall (`TARGET_FLAGS`).
//!
//! Where things live: `maps` (the state shared by all programs), `filter` (is this process
//! traced), `syscalls` (the table of hooked syscalls: one line per birth syscall), `births`
//! (the record sent at a birth's exit), `deaths`, `processes` (fork, exec, exit), `sockets`,
//! `failures` (EMFILE and the like), `stacks` (the user stack sent with a birth), `registers`,
//! `ring` (records, wake-ups, shedding), the runtimes' uprobes (`goroutine`, `python`,
//! `uv_handles`), and `bench` (programs only the benchmark loads).
#![no_std]
#![no_main]
// `sockets::count_mark`'s atomic add: the BPF target has no atomic read-modify-write in `core`.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
mod bench;
mod births;
mod deaths;
mod failures;
mod filter;
mod goroutine;
mod installs;
mod maps;
mod processes;
mod python;
mod registers;
mod ring;
mod sockets;
mod stacks;
mod syscalls;
mod uv_handles;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
