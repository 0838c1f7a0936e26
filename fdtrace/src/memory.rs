//! fdtrace's own memory: what setting up leaves behind.

/// Give the pages the heap freed back to the system. Loading and attaching the programs reads
/// and parses the kernel's BTF (tens of MiB at the peak, all freed before tracing starts), and
/// glibc's allocator keeps freed pages below the top of its heap resident until told otherwise:
/// without this they stay in fdtrace's resident set for the whole session.
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's `malloc_trim` only hands free pages back (0: keep no padding at the
    // heap's top); it may be called at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
