//! How often the ring buffer is drained when the kernel does not wake fdtrace.
//!
//! The kernel programs submit records without a wake-up; one is asked for only when the unread
//! bytes cross a multiple of 2 MiB, or on every record once a quarter of the ring buffer is
//! unread (`fdtrace-ebpf/src/ring.rs`). Between those, fdtrace drains the ring on a timer. Each
//! timer wake-up costs the machine a context switch and the tracer's loop, whether or not there
//! is anything to read: 50 a second at a fixed 20 ms, on a machine where fdtrace traces a
//! process that does nothing. So the period follows the rate at which records arrive: long
//! (`SLOW`) while a period's records fill a small part of the ring buffer (`SHARE`), shorter as
//! the rate rises, down to `FAST`, so that a small ring buffer (`--ring-mb`) is drained before a
//! quarter of it is unread and every record would ask for a wake-up.

use std::time::{Duration, Instant};

/// The shortest period: what fdtrace used at every rate before.
pub const FAST: Duration = Duration::from_millis(20);

/// The longest period: with nothing or little arriving.
pub const SLOW: Duration = Duration::from_millis(100);

/// A period should bring at most 1/SHARE of the ring buffer at the last period's rate.
pub const SHARE: u64 = 16;

/// The drain timer's period, from the bytes drained since the last timer drain.
#[derive(Debug)]
pub struct DrainPacing {
    budget: u64,
    since: Instant,
    bytes: u64,
}

impl DrainPacing {
    /// For a ring buffer of `ring_bytes`, starting now at the longest period.
    pub fn new(ring_bytes: u64, now: Instant) -> Self {
        DrainPacing {
            budget: (ring_bytes / SHARE).max(1),
            since: now,
            bytes: 0,
        }
    }

    /// Count `bytes` drained (by the timer or after a wake-up).
    pub fn drained(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// The timer fired and the ring was drained: the period until the next drain, from the rate
    /// since the last time it fired (`now`).
    pub fn next_period(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.since);
        let bytes = std::mem::take(&mut self.bytes);
        self.since = now;
        if bytes == 0 {
            return SLOW;
        }
        // The time in which the budget fills at this rate: budget / (bytes / elapsed).
        let fill = elapsed.as_secs_f64() * self.budget as f64 / bytes as f64;
        Duration::from_secs_f64(fill.clamp(FAST.as_secs_f64(), SLOW.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The period after `bytes` drained over `elapsed`, for a ring of `ring`.
    fn after(ring: u64, bytes: u64, elapsed: Duration) -> Duration {
        let t0 = Instant::now();
        let mut p = DrainPacing::new(ring, t0);
        p.drained(bytes);
        p.next_period(t0 + elapsed)
    }

    #[test]
    fn idle_or_slow_is_drained_at_the_longest_period() {
        assert_eq!(after(16 * MIB, 0, SLOW), SLOW);
        // nginx in a VM: some 4 MB/s into the default 16 MiB ring (1 MiB budget).
        assert_eq!(after(16 * MIB, 400_000, SLOW), SLOW);
    }

    #[test]
    fn the_period_shortens_as_the_rate_rises_down_to_the_shortest() {
        // 1 MiB ring (64 KiB budget), 1 MiB/s: the budget fills in 62.5 ms.
        let p = after(MIB, MIB / 10, SLOW);
        assert!(
            p > Duration::from_millis(62) && p < Duration::from_millis(63),
            "{p:?}"
        );
        // 1 MiB ring at 4 MB/s: 16 ms, so the shortest.
        assert_eq!(after(MIB, 400_000, SLOW), FAST);
        // The default ring at 100 MB/s (woken at every 2 MiB anyway).
        assert_eq!(after(16 * MIB, 10_000_000, SLOW), FAST);
    }

    #[test]
    fn each_period_counts_only_what_arrived_since_the_last() {
        let t0 = Instant::now();
        let mut p = DrainPacing::new(MIB, t0);
        // Twice the 64 KiB budget in 100 ms: 50 ms.
        p.drained(MIB / 16);
        p.drained(MIB / 16);
        let first = p.next_period(t0 + SLOW);
        assert_eq!(first.as_millis(), 50, "{first:?}");
        // Nothing since: back to the longest.
        assert_eq!(p.next_period(t0 + SLOW + FAST), SLOW);
    }
}
