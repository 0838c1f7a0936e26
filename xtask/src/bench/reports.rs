//! What a case reads of fdtrace's JSON report.
use super::*;

pub(super) fn read_report(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub(super) fn lost_events(report: &serde_json::Value) -> u64 {
    report["lost_events"].as_u64().unwrap_or(u64::MAX)
}

pub(super) fn model_opens(report: &serde_json::Value) -> u64 {
    report["model"]["opens"].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Case 1: the open/close loop under each configuration
