//! Command-line interface.
use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::Parser;

use crate::session::{Options, Target, UnwindMode};

/// Find the exact line of code that leaks file descriptors, live, with eBPF.
///
/// Traces a running process (-p PID) or starts one (-- CMD ARGS...), matches every descriptor
/// it opens to its close, and reports the descriptors still open grouped by the call site that
/// created them.
#[derive(Debug, Parser)]
#[command(name = "fdtrace", version, arg_required_else_help = true)]
pub struct Cli {
    /// Trace this running process (all its threads).
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Stop after SECS seconds (default: at Ctrl-C, SIGTERM or when the target exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Write the report to FILE (default: stderr, so a launched program keeps its stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// How to unwind the stacks that create descriptors: `dwarf` (CFI over a copy of the top of
    /// the stack; works without frame pointers), `fp` (the kernel walks the frame pointers; not
    /// limited by the copy) or `auto`: `fp` for Go programs, `dwarf` for the others.
    #[arg(long, value_enum, default_value_t = UnwindMode::Auto, value_name = "METHOD")]
    pub unwind: UnwindMode,

    /// More diagnostics on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Start this command and trace it from its first instruction.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Cli {
    /// The session options, or a message saying what is missing.
    pub fn options(&self) -> Result<Options, String> {
        let target = match (self.pid, self.command.is_empty()) {
            (Some(pid), true) => Target::Pid(pid),
            (None, false) => Target::Command(self.command.clone()),
            (None, true) => {
                return Err("nothing to trace: give -p PID or -- CMD [ARGS...]".into());
            }
            (Some(_), false) => return Err("give either -p PID or -- CMD, not both".into()),
        };
        Ok(Options {
            target,
            duration: self.duration,
            json: self.json,
            output: self.output.clone(),
            unwind: self.unwind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fdtrace").chain(args.iter().copied()))
    }

    #[test]
    fn pid_mode() {
        let c = parse(&["-p", "42", "-d", "2.5", "--json", "-o", "r.json"]).unwrap();
        let o = c.options().unwrap();
        assert_eq!(o.target, Target::Pid(42));
        assert_eq!(o.duration, Some(Duration::from_millis(2500)));
        assert!(o.json);
        assert_eq!(o.output, Some(PathBuf::from("r.json")));
        assert_eq!(o.unwind, UnwindMode::Auto);
    }

    #[test]
    fn unwind_methods() {
        for (arg, mode) in [
            ("auto", UnwindMode::Auto),
            ("fp", UnwindMode::Fp),
            ("dwarf", UnwindMode::Dwarf),
        ] {
            let o = parse(&["--unwind", arg, "-p", "1"])
                .unwrap()
                .options()
                .unwrap();
            assert_eq!(o.unwind, mode);
        }
        assert!(parse(&["--unwind", "lbr", "-p", "1"]).is_err());
    }

    #[test]
    fn command_mode_keeps_its_arguments() {
        let c = parse(&["-d", "5", "--", "./prog", "-x", "--json"]).unwrap();
        let o = c.options().unwrap();
        assert_eq!(
            o.target,
            Target::Command(vec!["./prog".into(), "-x".into(), "--json".into()])
        );
        assert!(!o.json);
    }

    #[test]
    fn bad_input() {
        assert!(parse(&["-p", "abc"]).is_err());
        assert!(parse(&["-d", "-1", "-p", "1"]).is_err());
        assert!(parse(&["-d", "x", "-p", "1"]).is_err());
        assert!(parse(&["-p", "1", "--", "ls"]).is_err());
        assert!(parse(&["--json"]).unwrap().options().is_err());
    }
}
