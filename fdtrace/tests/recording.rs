//! Privileged end-to-end tests of `fdtrace record` and `fdtrace report FILE`: a recording of a
//! leaking program, reported after the program exited, names the same lines with the same
//! counts as live mode; a recorder killed with SIGKILL leaves a readable file; damaged files
//! give one clear line and exit code 2.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

mod common;
use common::*;

fn report(file: &Path, extra: &[&str]) -> (i32, Value, String) {
    let out = Command::new(fdtrace_bin())
        .arg("report")
        .arg(file)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn record(file: &Path, args: &[&str], cmd: &[&std::ffi::OsStr], data: &Path) -> String {
    let out = Command::new(fdtrace_bin())
        .arg("record")
        .arg("-o")
        .arg(file)
        .args(args)
        .arg("--")
        .args(cmd)
        .env("LEAKY_DIR", data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "record failed: {err}");
    err
}

#[test]
fn a_recording_reports_what_live_mode_reports() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("leaky.fdtrace");
    // The program leaks after 1.5 s, so the recording has a before and an after.
    let err = record(
        &file,
        &["-d", "3.5"],
        &[built().fp.as_os_str(), "40".as_ref(), "1500".as_ref()],
        data.path(),
    );
    assert!(err.contains("fdtrace report"), "{err}");
    assert!(err.contains("recorded 1 process,"), "{err}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The traced program is gone (fdtrace ended it); the report needs nothing of it.
    let (code, r, err) = report(&file, &[]);
    assert_eq!(code, 0, "{err}");
    let pid = r["pid"].as_u64().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_leaky_40(&r);
    assert_eq!(r["recording"]["ended"], "duration reached");
    for k in ["missed_opens", "missed_closes", "cloexec_mismatches"] {
        assert_eq!(r["drift"][k], Value::Array(vec![]), "{r:#}");
    }
    // The same JSON keys as a live report.
    let live = fdtrace(
        &["-d", "2.5", "--"],
        &[built().fp.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_leaky_40(&live.json);
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        // Only a replay has `recording`, only live mode `live_updates_dropped` and
        // `stray_events` (how its live view and its kernel filter fared).
        k.retain(|k| !["recording", "live_updates_dropped", "stray_events"].contains(&k.as_str()));
        k.sort();
        k
    };
    assert_eq!(keys(&r), keys(&live.json));
    assert_eq!(site_counts(&r), site_counts(&live.json));
    // Before the leaks began there was nothing to report; old enough filters the young.
    let (code, early, err) = report(&file, &["--at", "0.5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(early["sites"], Value::Array(vec![]), "{early:#}");
    assert_eq!(early["recording"]["at_s"], 0.5);
    let (_, old, _) = report(&file, &["--min-age", "3600"]);
    assert_eq!(old["sites"], Value::Array(vec![]), "{old:#}");
    // --min-age hides the young from the lists, not from the count or the drift check.
    assert_eq!(old["open_count"], r["open_count"], "{old:#}");
    // (Pre-existing descriptors have no known age: they stay.)
    let unknown_age = old["preexisting"].as_array().unwrap().len();
    assert_eq!(old["shown"]["count"], unknown_age, "{old:#}");
    assert_eq!(old["shown"]["min_age_s"], 3600.0, "{old:#}");
    for k in ["missed_opens", "missed_closes"] {
        assert_eq!(old["drift"][k], Value::Array(vec![]), "{old:#}");
    }
    // A moment after the end is refused in one line.
    let (code, _, err) = report(&file, &["--at", "500"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--at 500: the recording is only 3."), "{err}");
    let out = Command::new(fdtrace_bin())
        .arg("report")
        .arg(&file)
        .args(["--min-age", "3600"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{} descriptors open; shown: the {unknown_age} at least 1h00m old or of unknown age",
            r["open_count"]
        )),
        "{text}"
    );
    // Text works too.
    let out = Command::new(fdtrace_bin())
        .arg("report")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("40 files still open, opened by leak_file"),
        "{text}"
    );
}

#[test]
fn a_killed_recorder_leaves_a_readable_recording() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("killed.fdtrace");
    let mut recorder = Killed(
        Command::new(fdtrace_bin())
            .arg("record")
            .arg("-o")
            .arg(&file)
            .arg("--")
            .arg(&built().fp)
            .args(["40", "0", "0"])
            .env("LEAKY_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // "done" comes from the traced program once it has leaked everything.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(recorder.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "done");
    // Let at least one flush (every second) happen, then kill without warning.
    std::thread::sleep(Duration::from_millis(2500));
    let traced = children_of(recorder.0.id());
    recorder.0.kill().unwrap();
    recorder.0.wait().unwrap();
    for pid in traced {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let (code, r, err) = report(&file, &[]);
    assert_eq!(code, 0, "{err}");
    assert_leaky_40(&r);
    assert!(r["recording"]["ended"].is_null(), "{r:#}");
    // Cut short, and said so: in JSON and at the top of the text.
    let cut = r["recording"]["cut_short"].as_str().unwrap_or_default();
    assert!(cut.contains("has no end"), "{r:#}");
    let out = Command::new(fdtrace_bin())
        .arg("report")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("WARNING: the recording has no end")),
        "{text}"
    );
}

#[test]
fn damaged_recordings_are_one_clear_line_with_exit_code_2() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"this is not a recording at all, just text\n").unwrap();
    let (code, _, err) = report(&garbage, &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("offset"), "{err}");
    // A valid recording cut in its first block: the header survives, the block does not.
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.fdtrace");
    record(
        &file,
        &["-d", "1"],
        &[built().fp.as_os_str(), "40".as_ref()],
        data.path(),
    );
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.fdtrace");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, r, err) = report(&cut, &[]);
    // Either the cut left complete blocks (a report that says it was cut) or none (an error).
    if code == 0 {
        assert!(r["recording"]["cut_short"].is_string(), "{r:#}");
    } else {
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let missing = dir.path().join("missing");
    let (code, _, err) = report(&missing, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
