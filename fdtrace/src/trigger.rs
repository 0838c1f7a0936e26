//! When `fdtrace agent` starts tracing a process, and when it stops (pure logic): from the
//! history of the process's open-descriptor count, polled from /proc, and its `RLIMIT_NOFILE`.
//!
//! A process triggers when its count passes a fraction of its soft limit, or when the count
//! grows steadily (it rose over the window, and in most of its steps) at a pace that reaches
//! the limit sooner than a threshold. A traced process is let go once its count has not risen
//! above its highest value for a while, and triggers again only above that value.
use std::{collections::VecDeque, time::Duration};

/// Samples kept per process: the window growth is measured over.
const WINDOW: usize = 30;
/// Samples needed before a growth is believed.
const MIN_SAMPLES: usize = 5;
/// Of the steps in the window, the share that must not go down for growth to be "steady".
const STEADY_SHARE: f64 = 0.75;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Trigger at this fraction of the soft limit (None: never on the count alone).
    pub fraction: Option<f64>,
    /// Trigger when steady growth reaches the soft limit within this time (None: never).
    pub eta: Option<Duration>,
}

/// Why a process is to be traced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reason {
    /// `open` passed `fraction` of `limit`.
    Fraction { open: usize, limit: u64 },
    /// Steady growth of `per_min` would reach `limit` in `eta`.
    Eta {
        open: usize,
        limit: u64,
        per_min: f64,
        eta: Duration,
    },
}

impl Reason {
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Fraction { .. } => "fraction",
            Reason::Eta { .. } => "eta",
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            Reason::Fraction { open, limit } => format!(
                "{open} of its {limit} descriptors open ({:.0}%)",
                open as f64 * 100.0 / limit as f64
            ),
            Reason::Eta {
                open,
                limit,
                per_min,
                eta,
            } => format!(
                "{open} of its {limit} descriptors open, growing {per_min:.1}/min: the limit in {}",
                crate::report::fmt_age(eta.as_secs_f64())
            ),
        }
    }
}

/// The polled counts of one process.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// (seconds, open descriptors), oldest first.
    samples: VecDeque<(f64, usize)>,
    /// While traced: the highest count, and when it was first reached.
    peak: Option<(usize, f64)>,
    /// After a recording: the highest count it saw; the process triggers again only above it.
    rearm_above: Option<usize>,
}

impl Watch {
    pub fn push(&mut self, t: f64, open: usize) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((t, open));
        if let Some((top, _)) = self.peak
            && open > top
        {
            self.peak = Some((open, t));
        }
    }

    pub fn last(&self) -> Option<usize> {
        self.samples.back().map(|s| s.1)
    }

    /// Net growth in descriptors per minute (least squares over the window), when the window
    /// holds enough samples and the growth is steady: up over the window, and down in at most a
    /// quarter of its steps.
    pub fn steady_growth_per_min(&self) -> Option<f64> {
        let n = self.samples.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let (first, last) = (self.samples[0], self.samples[n - 1]);
        if last.1 <= first.1 || last.0 <= first.0 {
            return None;
        }
        let not_down = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter(|(a, b)| b.1 >= a.1)
            .count();
        if (not_down as f64) < STEADY_SHARE * (n - 1) as f64 {
            return None;
        }
        let mean_t = self.samples.iter().map(|s| s.0).sum::<f64>() / n as f64;
        let mean_c = self.samples.iter().map(|s| s.1 as f64).sum::<f64>() / n as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for &(t, c) in &self.samples {
            num += (t - mean_t) * (c as f64 - mean_c);
            den += (t - mean_t) * (t - mean_t);
        }
        (den > 0.0 && num > 0.0).then(|| num / den * 60.0)
    }

    /// Whether the process is to be traced now, and why.
    pub fn check(&self, policy: &Policy, limit: Option<u64>) -> Option<Reason> {
        let open = self.last()?;
        if self.rearm_above.is_some_and(|top| open <= top) {
            return None;
        }
        let limit = limit.filter(|&l| l > 0)?;
        if let Some(f) = policy.fraction
            && open as f64 >= f * limit as f64
        {
            return Some(Reason::Fraction { open, limit });
        }
        let threshold = policy.eta?;
        let per_min = self.steady_growth_per_min()?;
        let left = limit.saturating_sub(open as u64) as f64;
        let eta = Duration::from_secs_f64(left / per_min * 60.0);
        (eta <= threshold).then_some(Reason::Eta {
            open,
            limit,
            per_min,
            eta,
        })
    }

    /// Tracing began at `t`: from now on the highest count is followed.
    pub fn traced(&mut self, t: f64) {
        self.peak = Some((self.last().unwrap_or(0), t));
    }

    /// Tracing ended: the process triggers again only once its count passes the highest the
    /// recording saw.
    pub fn released(&mut self) {
        if let Some((top, _)) = self.peak.take() {
            self.rearm_above = Some(top.max(self.rearm_above.unwrap_or(0)));
        }
    }

    /// While traced: the count has not gone above its highest for `quiet` at `now`.
    pub fn stopped_growing(&self, now: f64, quiet: Duration) -> bool {
        self.peak
            .is_some_and(|(_, since)| now - since >= quiet.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(counts: &[usize]) -> Watch {
        let mut w = Watch::default();
        for (i, &c) in counts.iter().enumerate() {
            w.push(i as f64, c);
        }
        w
    }

    const BOTH: Policy = Policy {
        fraction: Some(0.5),
        eta: Some(Duration::from_secs(1800)),
    };

    #[test]
    fn half_the_limit_triggers() {
        let w = watch(&[10, 10, 600]);
        assert_eq!(
            w.check(&BOTH, Some(1024)),
            Some(Reason::Fraction {
                open: 600,
                limit: 1024
            })
        );
        assert_eq!(w.check(&BOTH, Some(2048)), None);
        // No limit known (or unlimited): nothing to measure against.
        assert_eq!(w.check(&BOTH, None), None);
        assert_eq!(w.check(&BOTH, Some(0)), None);
        let off = Policy {
            fraction: None,
            ..BOTH
        };
        assert_eq!(w.check(&off, Some(1024)), None);
    }

    #[test]
    fn steady_growth_triggers_by_its_eta() {
        // One a second: 60 a minute; 1000 left of 1100 is 1000 s away.
        let w = watch(&[100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]);
        let g = w.steady_growth_per_min().unwrap();
        assert!((g - 60.0).abs() < 1e-9, "{g}");
        let soon = Policy {
            fraction: None,
            eta: Some(Duration::from_secs(1800)),
        };
        match w.check(&soon, Some(1100)) {
            Some(Reason::Eta { open, eta, .. }) => {
                assert_eq!(open, 110);
                assert!((eta.as_secs_f64() - 990.0).abs() < 1e-6, "{eta:?}");
            }
            other => panic!("{other:?}"),
        }
        let later = Policy {
            fraction: None,
            eta: Some(Duration::from_secs(600)),
        };
        assert_eq!(w.check(&later, Some(1100)), None);
    }

    #[test]
    fn pools_and_short_histories_do_not_trigger() {
        let soon = Policy {
            fraction: None,
            eta: Some(Duration::from_secs(1_000_000)),
        };
        // Too few samples.
        assert_eq!(watch(&[1, 2, 3, 4]).check(&soon, Some(100)), None);
        // Steady: a pool.
        assert_eq!(watch(&[50; 10]).check(&soon, Some(100)), None);
        // Up and down: requests come and go.
        let saw = watch(&[10, 40, 12, 45, 11, 44, 13, 47, 12, 48]);
        assert_eq!(saw.steady_growth_per_min(), None);
        assert_eq!(saw.check(&soon, Some(100)), None);
        // Down over the window.
        assert_eq!(
            watch(&[60, 59, 58, 57, 56, 55]).check(&soon, Some(100)),
            None
        );
    }

    #[test]
    fn the_window_forgets() {
        let mut w = watch(&[100; WINDOW]);
        for i in 0..WINDOW {
            w.push((WINDOW + i) as f64, 100 + i);
        }
        // Only the rising part is left.
        assert!(w.steady_growth_per_min().is_some());
        assert_eq!(w.samples.len(), WINDOW);
    }

    #[test]
    fn a_traced_process_is_let_go_once_it_stops_growing() {
        let quiet = Duration::from_secs(10);
        let mut w = watch(&[10, 20]);
        assert!(!w.stopped_growing(100.0, quiet));
        w.traced(1.0);
        w.push(2.0, 30);
        w.push(5.0, 40);
        assert!(!w.stopped_growing(14.0, quiet));
        w.push(14.0, 40);
        w.push(15.0, 35);
        assert!(w.stopped_growing(15.0, quiet));
        w.push(16.0, 41);
        assert!(!w.stopped_growing(25.0, quiet));
        assert!(w.stopped_growing(26.0, quiet));
        w.released();
        assert!(!w.stopped_growing(100.0, quiet));
    }

    #[test]
    fn after_a_recording_only_a_new_high_triggers_again() {
        let half = Policy {
            fraction: Some(0.5),
            eta: None,
        };
        let mut w = watch(&[600]);
        assert!(w.check(&half, Some(1024)).is_some());
        w.traced(1.0);
        w.push(2.0, 700);
        w.released();
        // Still over half its limit, but no higher than the recording saw: not again.
        w.push(3.0, 700);
        assert_eq!(w.check(&half, Some(1024)), None);
        w.push(4.0, 650);
        assert_eq!(w.check(&half, Some(1024)), None);
        w.push(5.0, 701);
        assert!(w.check(&half, Some(1024)).is_some());
    }
}
