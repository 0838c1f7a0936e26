//! Leak verdicts from the history of each call site's open-descriptor count (pure logic).
//!
//! A site is "leaking" only when its count keeps growing and its descriptors keep aging: the
//! ones opened early are still open. A steady count (a connection pool, log files) is "held".
//! Too little history, or a count that rose and fell, is "unknown".
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::model::{FdTable, Origin, StackId};

/// Samples kept (one a second: an hour); older ones are thinned out, never the newest.
const MAX_SAMPLES: usize = 3600;
/// History needed before judging.
const MIN_WINDOW_S: f64 = 5.0;
const MIN_SAMPLES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Leaking,
    Held,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leaking => "leaking",
            Verdict::Held => "held",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One sample: the open count of each call site and in all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub t_ns: u64,
    pub total: u32,
    pub sites: BTreeMap<StackId, u32>,
}

/// The counts of one process over time.
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// What the history says about one site (or the whole process).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    pub verdict: Verdict,
    /// Net growth, descriptors per minute (least squares over the window); None when there is
    /// too little history.
    pub growth_per_min: Option<f64>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, s: Sample) {
        if self.samples.len() >= MAX_SAMPLES {
            // Thin out the older half: the window keeps its span with fewer points.
            let keep: VecDeque<Sample> = self
                .samples
                .iter()
                .enumerate()
                .filter(|(i, _)| *i >= MAX_SAMPLES / 2 || i % 2 == 0)
                .map(|(_, s)| s.clone())
                .collect();
            self.samples = keep;
        }
        self.samples.push_back(s);
    }

    /// Count the table's descriptors per creating stack at `t_ns`.
    pub fn sample(&mut self, t_ns: u64, table: &FdTable) {
        let mut sites = BTreeMap::new();
        for (_, e) in table.iter() {
            if let Origin::Stack(id) = e.origin {
                *sites.entry(id).or_insert(0u32) += 1;
            }
        }
        self.push(Sample {
            t_ns,
            total: table.len() as u32,
            sites,
        });
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// Trend of one site. `oldest_age_s` is the age of its oldest open descriptor now.
    pub fn site_trend(&self, id: StackId, oldest_age_s: Option<f64>) -> Trend {
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.t_ns as f64 / 1e9, *s.sites.get(&id).unwrap_or(&0) as f64))
            .collect();
        trend(&points, oldest_age_s)
    }

    /// Trend of the process's total count (for the time to exhaustion).
    pub fn total_trend(&self) -> Trend {
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.t_ns as f64 / 1e9, s.total as f64))
            .collect();
        trend(&points, None)
    }
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Judge a series of (seconds, count). `oldest_age_s` (when known) tells whether the early
/// descriptors are still open.
pub fn trend(points: &[(f64, f64)], oldest_age_s: Option<f64>) -> Trend {
    let window = match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    if points.len() < MIN_SAMPLES || window < MIN_WINDOW_S {
        return Trend {
            verdict: Verdict::Unknown,
            growth_per_min: None,
        };
    }
    let per_min = slope(points) * 60.0;
    let first = points[0].1;
    let last = points[points.len() - 1].1;
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    // Steps that did not go down, and how deep the worst fall from a peak was.
    let rising =
        points.windows(2).filter(|w| w[1].1 >= w[0].1).count() as f64 / (points.len() - 1) as f64;
    let mut peak = f64::MIN;
    let mut worst_fall: f64 = 0.0;
    for p in points {
        peak = peak.max(p.1);
        worst_fall = worst_fall.max(peak - p.1);
    }
    let tolerance = (0.1 * max).max(1.0);
    let aging = oldest_age_s.is_none_or(|a| a >= 0.5 * window);
    let verdict = if last - first >= 2.0
        && per_min > 0.0
        && rising >= 0.8
        && worst_fall <= tolerance
        && aging
    {
        Verdict::Leaking
    } else if last > 0.0 && max - min <= tolerance {
        Verdict::Held
    } else {
        Verdict::Unknown
    };
    Trend {
        verdict,
        growth_per_min: Some(per_min),
    }
}

/// Seconds until `count` reaches `limit` at `per_min` growth; None when not growing.
pub fn exhaustion_eta_s(count: usize, limit: Option<u64>, per_min: Option<f64>) -> Option<f64> {
    let (limit, rate) = (limit?, per_min?);
    if rate <= 0.0 {
        return None;
    }
    let left = limit.saturating_sub(count as u64) as f64;
    Some(left / rate * 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(u64) -> u32, secs: u64) -> Vec<(f64, f64)> {
        (0..=secs).map(|t| (t as f64, f(t) as f64)).collect()
    }

    #[test]
    fn a_steady_pool_is_held() {
        let t = trend(&series(|_| 20, 60), Some(60.0));
        assert_eq!(t.verdict, Verdict::Held);
        assert!(t.growth_per_min.unwrap().abs() < 1e-9);
        // A pool that churns by one around its size is still held.
        let t = trend(&series(|s| 20 + (s % 2) as u32, 60), Some(60.0));
        assert_eq!(t.verdict, Verdict::Held);
    }

    #[test]
    fn a_growing_site_is_leaking() {
        let t = trend(&series(|s| 3 * s as u32, 30), Some(30.0));
        assert_eq!(t.verdict, Verdict::Leaking);
        assert!((t.growth_per_min.unwrap() - 180.0).abs() < 1e-6);
        // Growth in steps (a leak per request, requests now and then) is still a leak.
        let t = trend(&series(|s| (s / 5) as u32, 60), Some(60.0));
        assert_eq!(t.verdict, Verdict::Leaking);
    }

    #[test]
    fn a_growing_count_of_young_descriptors_is_not_a_leak() {
        // The count grows, but every descriptor is young: they are being recycled.
        let t = trend(&series(|s| s as u32, 30), Some(1.0));
        assert_ne!(t.verdict, Verdict::Leaking);
    }

    #[test]
    fn a_burst_that_drains_is_neither() {
        let t = trend(
            &series(
                |s| {
                    if s < 10 {
                        5 * s as u32
                    } else {
                        50u32.saturating_sub(5 * (s as u32 - 10)) + 2
                    }
                },
                30,
            ),
            Some(30.0),
        );
        assert_eq!(t.verdict, Verdict::Unknown);
    }

    #[test]
    fn too_little_history_is_unknown() {
        assert_eq!(
            trend(&series(|s| s as u32, 2), None).verdict,
            Verdict::Unknown
        );
        assert_eq!(trend(&[], None).growth_per_min, None);
    }

    #[test]
    fn history_samples_per_site_and_thins_out() {
        use crate::model::{FdKind, OpenFd};
        let mut table = FdTable::new();
        let mut h = History::new();
        for t in 0..10u64 {
            table.open(
                3 + t as i32,
                OpenFd {
                    kind: FdKind::File,
                    target: "/x".into(),
                    opened_ns: Some(t * 1_000_000_000),
                    origin: Origin::Stack(7),
                    cloexec: false,
                    sock: None,
                },
            );
            h.sample(t * 1_000_000_000, &table);
        }
        let tr = h.site_trend(7, Some(9.0));
        assert_eq!(tr.verdict, Verdict::Leaking);
        assert!((tr.growth_per_min.unwrap() - 60.0).abs() < 1e-6);
        assert_eq!(h.site_trend(8, None).verdict, Verdict::Unknown);
        for i in 0..(MAX_SAMPLES as u64 + 10) {
            h.push(Sample {
                t_ns: (10 + i) * 1_000_000_000,
                ..Sample::default()
            });
        }
        assert!(h.len() <= MAX_SAMPLES);
        assert_eq!(
            h.samples().next().unwrap().t_ns,
            0,
            "the window keeps its start"
        );
    }

    #[test]
    fn time_to_exhaustion() {
        assert_eq!(exhaustion_eta_s(1000, Some(1024), Some(12.0)), Some(120.0));
        assert_eq!(exhaustion_eta_s(10, Some(1024), Some(0.0)), None);
        assert_eq!(exhaustion_eta_s(10, None, Some(5.0)), None);
        assert_eq!(exhaustion_eta_s(2000, Some(1024), Some(5.0)), Some(0.0));
    }
}
