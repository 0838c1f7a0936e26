//! `fdtrace record` and `fdtrace report FILE`.
use std::io::Write as _;

use anyhow::{Context as _, Result, bail};

use crate::{
    cli::{ReportArgs, TraceArgs},
    replay::{Damaged, Replay},
    report,
};

/// `fdtrace record (-p PID | -- CMD) -o FILE`.
pub fn record(t: &TraceArgs) -> Result<i32> {
    let Some(path) = t.output.clone() else {
        bail!("fdtrace record needs the recording file: -o FILE");
    };
    let mut opts = t.options().map_err(anyhow::Error::msg)?;
    opts.output = None;
    opts.record = Some(path);
    crate::run::run(opts)
}

/// `fdtrace report FILE`: the report of a recording, built like the live one.
pub fn report(a: &ReportArgs, verbose: bool) -> Result<()> {
    if a.timeline {
        return crate::timeline::run(a);
    }
    let mut replay = Replay::read(&a.file, a.at, |_, _| {})?;
    let Some(mut r) = replay.report(a.min_age) else {
        let why = replay
            .tail_note
            .clone()
            .unwrap_or_else(|| "it holds no process".into());
        return Err(Damaged(format!("{}: nothing to report: {why}", a.file.display())).into());
    };
    r.recording = Some(report::RecordingInfo {
        file: a.file.display().to_string(),
        hostname: replay.header.hostname.clone(),
        kernel_release: replay.header.kernel_release.clone(),
        start_unix_s: replay.header.start_unix_ns as f64 / 1e9,
        ended: replay.end.clone(),
        cut_short: replay.tail_note.clone(),
        at_s: a.at,
    });
    let text = if a.json {
        let mut s = serde_json::to_string_pretty(&r)?;
        s.push('\n');
        s
    } else {
        report::render_text_all(&r, a.all || verbose)
    };
    match &a.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
