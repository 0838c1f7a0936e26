//! Privileged end-to-end tests of what a new user meets first: paths checked before anything is
//! traced, where the report goes, the exit status, messages without root, and the screens (the
//! live view and `fdtrace top` in a real terminal, tmux, at 80 columns).
use std::{
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(fdtrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err}");
}

/// A session whose results could not be written is refused before the command runs.
#[test]
fn output_paths_are_checked_before_tracing() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let cmd = format!("touch {}", ran.display());
    let t = Instant::now();
    for (args, needle) in [
        (
            vec!["-o", "/nonexistent-dir/r.txt"],
            "no directory /nonexistent-dir",
        ),
        (
            vec!["-o", dir.path().to_str().unwrap()],
            "it is a directory",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["-d", "5", "--", "sh", "-c", &cmd]);
        one_line_error(&run(&a), needle);
    }
    let existing = dir.path().join("old.fdtrace");
    std::fs::write(&existing, b"keep me").unwrap();
    let out = run(&[
        "record",
        "-o",
        existing.to_str().unwrap(),
        "-d",
        "5",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    one_line_error(&out, "does not overwrite");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let out = run(&[
        "record",
        "-o",
        "/nonexistent-dir/x.fdtrace",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    one_line_error(&out, "no directory");
    assert!(
        !ran.exists(),
        "the command ran although its results had nowhere to go"
    );
    // None of them traced for the 5 s asked (a refusal after tracing would take that long).
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// `-p`: the report on stdout, so that `fdtrace --json -p PID | jq` works. `-- CMD`: stdout is
/// the command's, the report on stderr, unless `-o -` asks for stdout.
#[test]
fn the_report_goes_where_a_pipe_expects_it() {
    let _serial = serial();
    require_root();
    let mut target = Killed(
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id().to_string();
    let out = run(&["--json", "-q", "-d", "1", "-p", &pid]);
    assert!(out.status.success(), "{out:?}");
    let j: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(j["pid"].as_u64().unwrap().to_string(), pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("\"pid\""), "{err}");
    let _ = target.0.kill();

    let prog = ["--", "sh", "-c", "echo from-the-program"];
    let mut a = vec!["--json", "-q", "-d", "5"];
    a.extend(prog);
    let out = run(&a);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-program\n");
    let j: Value = serde_json::from_slice(&out.stderr).expect("JSON on stderr");
    assert_eq!(j["command"], "sh");

    let mut a = vec!["--json", "-q", "-d", "5", "-o", "-"];
    a.extend(prog);
    let out = run(&a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (first, rest) = stdout.split_once('\n').unwrap();
    assert_eq!(first, "from-the-program");
    let j: Value = serde_json::from_str(rest).expect("JSON after the program's output");
    assert_eq!(j["command"], "sh");
}

/// As `time` does: the command's exit code, or 128 + the signal that killed it; 0 when
/// fdtrace ended it.
#[test]
fn the_exit_status_of_the_command_is_passed_on() {
    let _serial = serial();
    require_root();
    for (script, code) in [("exit 3", 3), ("kill -9 $$", 128 + 9), ("exit 0", 0)] {
        let out = run(&["-q", "-o", "/dev/null", "--", "sh", "-c", script]);
        assert_eq!(out.status.code(), Some(code), "{script}: {out:?}");
    }
    let out = run(&["-q", "-d", "1", "-o", "/dev/null", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // And the report comes out at once: the kernel's slow detach is not waited for.
    let t = Instant::now();
    let out = run(&["-q", "-d", "1", "-o", "/dev/null", "--", "sleep", "30"]);
    assert!(out.status.success());
    eprintln!("fdtrace -d 1 took {:?}", t.elapsed());
}

/// An endpoint on an address other than loopback says it has no authentication; on loopback it
/// says nothing.
#[test]
fn a_metrics_endpoint_beyond_loopback_is_said_to_be_open() {
    let _serial = serial();
    require_root();
    let open = run(&[
        "-q",
        "-o",
        "/dev/null",
        "--metrics",
        "0.0.0.0:0",
        "--",
        "true",
    ]);
    assert!(open.status.success(), "{open:?}");
    let err = String::from_utf8_lossy(&open.stderr);
    assert!(err.contains("has no authentication"), "{err}");
    let local = run(&[
        "-q",
        "-o",
        "/dev/null",
        "--metrics",
        "127.0.0.1:0",
        "--",
        "true",
    ]);
    assert!(local.status.success(), "{local:?}");
    assert!(!String::from_utf8_lossy(&local.stderr).contains("authentication"));
}

fn as_nobody(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(fdtrace_bin());
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: setgid/setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn without_root_the_user_is_told_what_is_missing() {
    let _serial = serial();
    require_root();
    one_line_error(&as_nobody(&["tracepoints"]), "run it with sudo");
    let out = as_nobody(&["top", "--once", "-i", "0.2"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processes could not be read") && err.contains("sudo"),
        "{err}"
    );
}

/// A tmux session running one command, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(cols: u16, rows: u16, cmd: &str) -> Tmux {
        let name = format!("fdtrace-cli-{}-{}", std::process::id(), rand_suffix());
        let st = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg(cmd)
            .status()
            .expect("tmux");
        assert!(st.success());
        // Keep the pane (and its scrollback) after the command ends.
        let _ = Command::new("tmux")
            .args(["set-option", "-t", &name, "remain-on-exit", "on"])
            .status();
        Tmux(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The whole pane with its scrollback.
    fn history(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-S", "-", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, k: &str) {
        let st = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, k])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait until the pane's command has ended (up to `limit`).
    fn wait_dead(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            let out = Command::new("tmux")
                .args(["display-message", "-p", "-t", &self.0, "#{pane_dead}"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) || t.elapsed() > limit {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// The live view of a pid at 80 columns: every line fits, it is drawn on the alternate screen
/// (the scrollback keeps only the report), and `q` ends the session with the report.
#[test]
fn the_live_view_fits_80_columns_and_q_ends_it() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("drip.c", dir.path(), &["-O0"]);
    let data = tempfile::tempdir().unwrap();
    let mut target = Killed(
        Command::new(&bin)
            .arg(data.path())
            .arg("100")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let tmux = Tmux::start(
        80,
        30,
        &format!("{} -p {}", fdtrace_bin().display(), target.0.id()),
    );
    let screen = tmux.wait_for("call site", Duration::from_secs(20));
    assert!(screen.contains("open descriptors:"), "{screen}");
    // The screen is redrawn, never wrapped: no line of it is longer than the terminal.
    std::thread::sleep(Duration::from_secs(3));
    let screen = tmux.screen();
    let drip = format!("drip.c:{}", line_of("drip.c", "DRIP"));
    assert!(screen.contains(&drip), "{screen}");
    for l in screen.lines() {
        assert!(l.chars().count() <= 80, "{l:?}");
    }
    tmux.keys("q");
    assert!(
        tmux.wait_dead(Duration::from_secs(10)),
        "q did not end fdtrace"
    );
    let all = tmux.history();
    // The report is there, the live frames are not (they were on the alternate screen).
    assert!(all.contains("descriptors open:"), "{all}");
    assert!(all.contains(&drip), "{all}");
    assert!(!all.contains("open descriptors:"), "{all}");
    let _ = target.0.kill();
}

#[test]
fn top_draws_on_the_alternate_screen_and_q_quits() {
    let _serial = serial();
    require_root();
    let tmux = Tmux::start(80, 30, &format!("{} top -i 0.3", fdtrace_bin().display()));
    let screen = tmux.wait_for("GROWTH/MIN", Duration::from_secs(10));
    assert!(screen.contains("q or Ctrl-C to quit"), "{screen}");
    for l in screen.lines() {
        assert!(l.chars().count() <= 80, "{l:?}");
    }
    tmux.keys("q");
    assert!(tmux.wait_dead(Duration::from_secs(5)), "q did not end top");
    assert!(!tmux.history().contains("GROWTH/MIN"));
}

/// A binary profile is not written to a terminal.
#[test]
fn a_pprof_profile_is_not_written_to_a_terminal() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.fdtrace");
    let out = run(&[
        "record",
        "-o",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exec 3</dev/null; exit 0",
    ]);
    assert!(out.status.success(), "{out:?}");
    let done = dir.path().join("done");
    let tmux = Tmux::start(
        100,
        10,
        &format!(
            "{} export {} --format pprof; echo rc=$? > {}; sleep 30",
            fdtrace_bin().display(),
            file.display(),
            done.display()
        ),
    );
    let t = Instant::now();
    while !done.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let screen = tmux.screen();
    assert!(
        screen.contains("write it to a file with -o OUT"),
        "{screen}"
    );
    let mut rc = String::new();
    std::fs::File::open(&done)
        .unwrap()
        .read_to_string(&mut rc)
        .unwrap();
    assert_eq!(rc.trim(), "rc=1");
    // Into a pipe it is written.
    let out = run(&["export", file.to_str().unwrap(), "--format", "pprof"]);
    assert!(out.status.success());
    assert_eq!(&out.stdout[..2], &[0x1f, 0x8b], "gzip");
    assert!(Path::new(&file).exists());
}
