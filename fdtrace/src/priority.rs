//! The consumer of the ring buffer keeps up with the traced threads by being scheduled before
//! them. On a machine whose CPUs the traced program keeps busy (eight threads opening and
//! closing at full speed on two CPUs), the scheduler's fair share gives fdtrace's single
//! consumer thread one ninth of the CPU time (with 32 threads, one thirty-third), while it needs
//! far less per event than the threads take to make one: it falls behind only because it is not
//! run. The highest weight (`nice` -20: 87 times a default thread's) lets it run whenever records
//! wait. It costs nothing while the consumer sleeps in `epoll_wait`, and the consumer's work
//! follows the traced program's events, each of which costs the program more than it costs
//! fdtrace (docs/PERFORMANCE.md). Measured by hand with `fdtrace -p` of
//! `fdtrace/tests/programs/burst.c` (32 threads × 20,000 pairs on 2 CPUs): one of four runs at
//! nice -10 lost 30,103 events, none of three at -20; `cargo xtask bench` (case 8) measures -20.
//!
//! Raising the weight only once the consumer is found behind (a drain that finds a quarter of
//! the ring waiting) was tried and measured: 2 of 4 such 32-thread runs lost 641,021 and 758,478
//! events, since a consumer that is not scheduled cannot find out that it is behind. Nor did the
//! single-threaded open/close loop measure faster with it (5 alternating runs of 200,000 pairs:
//! medians 7,140 ns per pair raised-when-behind, 6,376 always raised, 4,213 untraced).
use tracing::debug;

/// The nice value of the consumer thread.
pub const CONSUMER_NICE: i32 = -20;

/// Raise the calling thread's scheduling weight (Linux applies `setpriority` with
/// `PRIO_PROCESS` and id 0 to the calling thread only). Threads started before keep theirs: the
/// live view's writer and the metrics endpoint must never compete with the consumer.
pub fn raise_consumer() {
    // SAFETY: setpriority on the calling thread; no memory is passed.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CONSUMER_NICE) };
    if r != 0 {
        debug!(
            "could not raise the consumer's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
