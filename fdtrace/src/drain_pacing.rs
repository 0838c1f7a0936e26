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
//! quarter of it is unread and every record would ask for a wake-up. A ring buffer smaller than
//! the default (`FULL_SLOW_BYTES`) also has a shorter longest period, in proportion (a burst
//! after a quiet spell fills a quarter of it sooner), and never less than `FAST`.

use std::time::{Duration, Instant};

/// The shortest period: what fdtrace used at every rate before.
pub const FAST: Duration = Duration::from_millis(20);

/// The longest period: with nothing or little arriving.
pub const SLOW: Duration = Duration::from_millis(100);

/// A period should bring at most 1/SHARE of the ring buffer at the last period's rate.
pub const SHARE: u64 = 16;

/// The ring buffer size (the default, 16 MiB) from which the longest period is `SLOW`.
pub const FULL_SLOW_BYTES: u64 = 16 << 20;

/// The drain timer's period, from the bytes drained since the last timer drain.
#[derive(Debug)]
pub struct DrainPacing {
    budget: u64,
    longest: Duration,
    since: Instant,
    bytes: u64,
}

impl DrainPacing {
    /// For a ring buffer of `ring_bytes`, starting now.
    pub fn new(ring_bytes: u64, now: Instant) -> Self {
        let share = ring_bytes.min(FULL_SLOW_BYTES) as f64 / FULL_SLOW_BYTES as f64;
        DrainPacing {
            budget: (ring_bytes / SHARE).max(1),
            longest: SLOW.mul_f64(share).max(FAST),
            since: now,
            bytes: 0,
        }
    }

    /// The period while nothing arrives: `SLOW`, or shorter for a small ring buffer.
    pub fn longest(&self) -> Duration {
        self.longest
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
            return self.longest;
        }
        // The time in which the budget fills at this rate: budget / (bytes / elapsed).
        let fill = elapsed.as_secs_f64() * self.budget as f64 / bytes as f64;
        Duration::from_secs_f64(fill.clamp(FAST.as_secs_f64(), self.longest.as_secs_f64()))
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
        // 64 MiB ring (4 MiB budget), 10 MiB/s: the budget fills in 400 ms, so the longest.
        assert_eq!(after(64 * MIB, MIB, SLOW), SLOW);
        // The default ring (1 MiB budget) at 16 MiB/s: it fills in 62.5 ms.
        let p = after(16 * MIB, 16 * MIB / 10, SLOW);
        assert_eq!(p.as_micros(), 62_500, "{p:?}");
        // At 100 MB/s (woken at every 2 MiB anyway): the shortest.
        assert_eq!(after(16 * MIB, 10_000_000, SLOW), FAST);
    }

    #[test]
    fn a_small_ring_buffer_is_drained_more_often() {
        let t0 = Instant::now();
        assert_eq!(DrainPacing::new(16 * MIB, t0).longest(), SLOW);
        assert_eq!(DrainPacing::new(256 * MIB, t0).longest(), SLOW);
        assert_eq!(DrainPacing::new(8 * MIB, t0).longest(), SLOW / 2);
        // As often as before the timer was paced, never more.
        assert_eq!(DrainPacing::new(MIB, t0).longest(), FAST);
        assert_eq!(after(MIB, 0, SLOW), FAST);
        // 4 MiB ring (256 KiB budget) at 4 MB/s: 64 ms, capped at its longest, 25 ms.
        assert_eq!(after(4 * MIB, 400_000, SLOW), SLOW / 4);
    }

    #[test]
    fn each_period_counts_only_what_arrived_since_the_last() {
        let t0 = Instant::now();
        let mut p = DrainPacing::new(16 * MIB, t0);
        // Twice the 1 MiB budget in 100 ms: 50 ms.
        p.drained(MIB);
        p.drained(MIB);
        let first = p.next_period(t0 + SLOW);
        assert_eq!(first.as_millis(), 50, "{first:?}");
        // Nothing since: back to the longest.
        assert_eq!(p.next_period(t0 + SLOW + FAST), SLOW);
    }
}
