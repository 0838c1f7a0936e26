//! The floors: empty or filter-only programs on fdtrace's tracepoints, which say what the
//! kernel's tracing path costs by itself.
use super::*;

/// What one wrk run measured.
pub(super) struct WrkRun {
    pub(super) rps: f64,
    pub(super) requests: f64,
}

/// Which configuration a case-4 run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    Untraced,
    Traced,
    Floor,
}

impl Bench {
    /// Every tracepoint fdtrace attaches on this kernel, as `CATEGORY:NAME` (from `fdtrace
    /// tracepoints --list`; without `--list` it prints the hooks' table). None when the list
    /// cannot be had.
    pub(super) fn all_tracepoints(&mut self, case: &str) -> Option<Vec<String>> {
        let out = Command::new(&self.fdtrace)
            .args(["tracepoints", "--list"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with("(missing)"))
            .map(str::to_string)
            .collect();
        if !out.status.success() || tps.is_empty() {
            self.notes.push(format!(
                "{case}: no floor: `fdtrace tracepoints` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(tps)
    }

    /// Start examples/floor with its empty program on `tps` and wait until it is attached.
    pub(super) fn start_floor(&mut self, tps: &[String]) -> Result<Proc> {
        let mut cmd = Command::new(&self.floor);
        cmd.arg("tp").args(tps);
        if tps.len() > 3 {
            self.record_line(format!(
                "target/release/examples/floor tp CATEGORY:NAME ... (the {} tracepoints \
                 `fdtrace tracepoints` lists)",
                tps.len()
            ));
        } else {
            self.record(&cmd, &[]);
        }
        start_ready(&mut cmd, "floor")
    }

    /// Start `examples/floor raw` and wait until its program is attached.
    pub(super) fn start_raw_floor(&mut self) -> Result<Proc> {
        let mut cmd = Command::new(&self.floor);
        cmd.arg("raw");
        self.record(&cmd, &[]);
        start_ready(&mut cmd, "floor raw")
    }

    /// wrk against nginx while the floor's empty program is attached to `tps`.
    pub(super) fn wrk_under_floor(&mut self, url: &str, tps: &[String]) -> Result<f64> {
        let mut bt = self.start_floor(tps)?;
        let r = self.wrk(url);
        bt.stop();
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Case 5: fdtrace's peak RSS; case 6: recording size
