//! `fdtrace report FILE`: the report of a recording.

use anyhow::Result;

use crate::{cli::ReportArgs, replay::Replay, report};

/// `fdtrace report FILE`: the report of a recording, built like the live one.
pub fn report(a: &ReportArgs, verbose: bool) -> Result<()> {
    if a.timeline {
        return crate::timeline::run(a);
    }
    let mut replay = Replay::read(&a.file, a.at, |_, _| {})?;
    let Some(mut r) = replay.report(a.min_age) else {
        return Err(replay.holds_nothing(&a.file, "report"));
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
    let text = crate::output::render(&r, a.json, |r| report::render_text_all(r, a.all || verbose))?;
    crate::output::write_result(a.output.as_deref(), &text)
}
