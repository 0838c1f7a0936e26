//! The results table: one row per measurement, or a row saying why a case did not run.
use super::*;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Status {
    Met,
    Missed,
    Info,
    Skipped,
    Failed,
}

#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) case: u32,
    pub(super) what: String,
    pub(super) result: String,
    pub(super) vs: String,
    pub(super) target: String,
    pub(super) status: Status,
}

impl Row {
    pub(super) fn new(case: u32, what: impl Into<String>, result: impl Into<String>) -> Self {
        Self {
            case,
            what: what.into(),
            result: result.into(),
            vs: String::new(),
            target: String::new(),
            status: Status::Info,
        }
    }

    pub(super) fn vs(mut self, vs: impl Into<String>) -> Self {
        self.vs = vs.into();
        self
    }

    pub(super) fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.status = if met { Status::Met } else { Status::Missed };
        self
    }

    pub(super) fn skipped(case: u32, what: impl Into<String>, why: impl Into<String>) -> Self {
        let mut r = Self::new(case, what, format!("skipped: {}", why.into()));
        r.status = Status::Skipped;
        r
    }

    pub(super) fn failed(case: u32, what: impl Into<String>, err: &anyhow::Error) -> Self {
        let mut msg = format!("{err:#}").replace('\n', " ").replace('|', "/");
        if msg.len() > 300 {
            let mut cut = 300;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let mut r = Self::new(case, what, format!("failed: {msg}"));
        r.status = Status::Failed;
        r
    }

    pub(super) fn status_text(&self) -> &'static str {
        match self.status {
            Status::Met => "met",
            Status::Missed => "**missed**",
            Status::Info => "",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

pub(super) fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| # | measurement | result | vs untraced | target | status |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.case,
            r.what,
            r.result,
            r.vs,
            r.target,
            r.status_text()
        );
    }
    s
}
