//! The commands that read recordings (`fdtrace report`, `export`, `diff`), from their command
//! line to their output: each takes its arguments, asks its analysis (`replay.rs`,
//! `timeline.rs`, `export.rs`, `diff.rs`, which take plain values) and writes the result.
use std::io::{self, IsTerminal as _, Write as _};

use anyhow::{Context as _, Result, bail};

use crate::{
    cli::{DiffArgs, ExportArgs, ReportArgs},
    export::ExportFormat,
    replay::Replay,
    report,
};

/// `fdtrace report FILE`: the report of a recording, built like the live one.
pub fn report(a: &ReportArgs, verbose: bool) -> Result<()> {
    if a.timeline {
        return timeline(a);
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

/// `fdtrace report FILE --timeline [--html OUT.html]`.
fn timeline(a: &ReportArgs) -> Result<()> {
    let t = crate::timeline::build(&a.file, a.at, a.interval)?;
    if let Some(p) = &a.html {
        crate::output::write_atomically(p, crate::timeline::render_html(&t).as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let text = crate::output::render(&t, a.json, |t| {
        crate::timeline::render_text(t, a.interval.is_none())
    })?;
    crate::output::write_result(a.output.as_deref(), &text)
}

/// `fdtrace export FILE --format …`. A reader that stops early (`| head`) ends it quietly.
pub fn export(a: &ExportArgs) -> Result<()> {
    match write_export(a) {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn write_export(a: &ExportArgs) -> Result<()> {
    let to_terminal = a.output.is_none() && io::stdout().is_terminal();
    if to_terminal && matches!(a.format, ExportFormat::Pprof) {
        bail!("a pprof profile is binary: write it to a file with -o OUT");
    }
    let mut out: Box<dyn io::Write> = match &a.output {
        Some(p) => Box::new(io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    };
    crate::export::export(&a.file, a.at, a.min_age, a.preexisting, a.format, &mut out)?;
    out.flush().context("writing the export")
}

/// `fdtrace diff A B`.
pub fn diff(a: &DiffArgs) -> Result<()> {
    let d = crate::diff::diff_files(&a.a, &a.b)?;
    let text = crate::output::render(&d, a.json, crate::diff::render_text)?;
    crate::output::write_result(a.output.as_deref(), &text)
}
