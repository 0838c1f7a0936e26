//! fdtrace's own memory: what setting up leaves behind.

/// Give the pages the heap freed back to the system. Loading and attaching the programs reads
/// and parses the kernel's BTF (tens of MiB at the peak, all freed before tracing starts), and
/// glibc's allocator keeps freed pages below the top of its heap resident until told otherwise:
/// without this they stay in fdtrace's resident set for the whole session.
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: no arguments but the padding to keep; callable at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
