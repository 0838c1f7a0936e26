//! Privileged end-to-end tests: the real fdtrace binary, real eBPF programs on this kernel,
//! real C programs that leak at known lines. They need root (CI runs as root) and fail, rather
//! than skip, without it.
use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

#[test]
fn launch_mode_names_the_leaking_lines_with_exact_counts() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-d", "3", "--"],
        &[built().fp.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_leaky_40(&r.json);
    assert_eq!(r.json["target_exited"], false);
    // The launched program was alive at report time: the model equals /proc/PID/fd.
    assert_eq!(
        r.json["drift"]["missed_opens"],
        Value::Array(vec![]),
        "{:#}",
        r.json
    );
    assert_eq!(
        r.json["drift"]["missed_closes"],
        Value::Array(vec![]),
        "{:#}",
        r.json
    );
    // fdtrace ended the child it started.
    let pid = r.json["pid"].as_u64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} still running"
    );
}

#[test]
fn code_without_frame_pointers_is_unwound_with_dwarf() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-d", "3", "--"],
        &[built().nofp.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_leaky_40(&r.json);
}

#[test]
fn a_target_that_exits_is_reported_with_what_it_held() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // A duration far longer than the run: fdtrace must end when the target does, however
    // slowly it starts (tens of seconds in an emulated VM on a loaded host).
    let r = fdtrace(
        &["-d", "900", "--"],
        &[
            built().fp.as_os_str(),
            "40".as_ref(),
            "0".as_ref(),
            "300".as_ref(),
        ],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(450),
        "did not stop at exit: {:?}",
        started.elapsed()
    );
    assert_eq!(r.json["target_exited"], true);
    assert_leaky_40(&r.json);
}

#[test]
fn attach_mode_matches_proc_fd() {
    let _serial = serial();
    require_root();
    let mut proc_fds = BTreeSet::new();
    let mut target = 0;
    let json = trace_leaker_by_pid(&built().fp, 40, &["-d", "4"], |pid| {
        target = pid;
        // Ground truth while both are alive.
        proc_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect();
    });
    assert_leaky_40(&json);
    let mut model: BTreeSet<i64> = BTreeSet::new();
    for s in json["sites"].as_array().unwrap() {
        for f in s["fds"].as_array().unwrap() {
            model.insert(f["fd"].as_i64().unwrap());
        }
    }
    for f in json["preexisting"].as_array().unwrap() {
        model.insert(f["fd"].as_i64().unwrap());
    }
    assert_eq!(model, proc_fds, "{json:#}");
    assert_eq!(json["pid"], target);
}

#[test]
fn no_such_pid_is_one_clear_line() {
    let _serial = serial();
    require_root();
    let out = Command::new(fdtrace_bin())
        .args(["-p", "999999999", "-d", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "fdtrace: no process with pid 999999999");
}

#[test]
fn missing_command_is_one_clear_line() {
    let _serial = serial();
    require_root();
    let out = Command::new(fdtrace_bin())
        .args(["-d", "1", "--", "/nonexistent/prog"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/prog"), "{err}");
}

#[test]
fn not_root_is_one_clear_line() {
    let _serial = serial();
    require_root();
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(fdtrace_bin());
    cmd.args(["-d", "1", "--", "/bin/true"]);
    // SAFETY: setgid/setuid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn tracefs_is_mounted_when_missing() {
    let _serial = serial();
    require_root();
    let tracing = Path::new("/sys/kernel/tracing/events");
    if tracing.exists() {
        // Unmount every stacked tracefs mount there.
        while tracing.exists() {
            let st = Command::new("umount")
                .arg("/sys/kernel/tracing")
                .status()
                .unwrap();
            if !st.success() {
                break;
            }
        }
    }
    assert!(!tracing.exists(), "could not unmount tracefs for the test");
    let r = fdtrace(&["-d", "1", "--", "/bin/true"], &[], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(tracing.exists(), "fdtrace did not mount tracefs");
}

#[test]
fn every_way_of_birth_and_death_matches_proc_exactly() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("births.c", dir.path(), &["-O0"]);
    let r = fdtrace(&["-d", "2", "--"], &[bin.as_os_str()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = &r.json;
    let l = |m: &str| ("births.c".to_string(), line_of("births.c", m) as u64);
    let mut got = site_counts(j);
    got.sort();
    let mut want = vec![
        (l("LEAK_SOCKET"), 3),
        (l("LEAK_PIPE"), 4),
        (l("LEAK_SOCKETPAIR"), 2),
        (l("LEAK_EVENTFD"), 1),
        (l("LEAK_EPOLL"), 1),
        (l("LEAK_DUP"), 1),
        (l("LEAK_FCNTL"), 1),
        (l("LEAK_DUP2"), 1),
        (l("LEAK_LISTEN"), 1),
        (l("LEAK_CLIENT"), 1),
        (l("LEAK_ACCEPT"), 1),
    ];
    want.sort();
    assert_eq!(got, want, "{j:#}");
    // The correct lines (closed, closed by close_range, replaced by dup2) never appear.
    let lines: BTreeSet<u64> = j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["frames"].as_array().unwrap().clone())
        .filter(|f| f["file"].as_str().is_some_and(|x| x.ends_with("births.c")))
        .filter_map(|f| f["line"].as_u64())
        .collect();
    for ok in [
        "OK_SOCKET",
        "OK_PIPE2",
        "OK_BASE",
        "OK_VICTIM",
        "OK_RANGE",
        "OK_RANGE_DUP2",
    ] {
        assert!(!lines.contains(&l(ok).1), "{ok} reported: {j:#}");
    }
    // Kinds and copied targets.
    let kinds: BTreeSet<&str> = j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["epoll", "eventfd", "file", "pipe", "socket"]
            .into_iter()
            .collect()
    );
    assert_eq!(j["drift"]["missed_opens"], Value::Array(vec![]), "{j:#}");
    assert_eq!(j["drift"]["missed_closes"], Value::Array(vec![]), "{j:#}");
    assert_eq!(j["model"]["replaced"], 0);
    assert_eq!(j["lost_events"], 0);
}

#[test]
fn min_age_hides_young_descriptors() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-q", "-d", "2", "--min-age", "3600", "--"],
        &[built().fp.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["sites"], Value::Array(vec![]), "{:#}", r.json);
    // Descriptors of unknown age (open before tracing) are not hidden.
    assert!(!r.json["preexisting"].as_array().unwrap().is_empty());
}

/// The in-kernel filter, read straight from the ring buffer (user space drops the events of
/// processes it does not trace, so only the records show what the kernel let through): while
/// fdtrace's programs trace one shell, another shell's opens never reach the ring buffer, and
/// the traced shell's do, as do those of the child it forks (followed, `-f`).
#[test]
fn the_kernel_filter_passes_the_targets_and_their_children_only() {
    use std::io::Write as _;
    use std::process::Stdio;
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let marker = |who: &str| dir.path().join(who);
    for who in ["traced", "other", "child"] {
        std::fs::write(marker(who), who).unwrap();
    }
    // Each shell waits for a line, then opens its own file 20 times; the traced one also runs
    // `cat` on the child's file (a fork and an exec).
    let script = |who: &str, extra: &str| {
        format!(
            "read _; i=0; while [ $i -lt 20 ]; do exec 3<{}; exec 3<&-; i=$((i+1)); done; {extra}",
            marker(who).display()
        )
    };
    let spawn = |s: String| {
        Killed(
            Command::new("sh")
                .args(["-c", &s])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut traced = spawn(script(
        "traced",
        // `; true`: the shell must fork for cat, not exec it in place as its last command.
        &format!("cat {}; true", marker("child").display()),
    ));
    let mut other = spawn(script("other", ""));
    let mut tracer = fdtrace::tracer::Tracer::load(4 << 20).unwrap();
    tracer.set_follow(true).unwrap();
    tracer
        .add_target(traced.0.id(), fdtrace_common::capture::STACK_COPY)
        .unwrap();
    let mut ring = tracer.take_ring().unwrap();
    for p in [&mut traced, &mut other] {
        writeln!(p.0.stdin.take().unwrap()).unwrap();
    }
    for p in [&mut traced, &mut other] {
        assert!(p.0.wait().unwrap().success());
    }
    let mut opens: std::collections::BTreeMap<String, BTreeSet<u32>> = Default::default();
    let mut count: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(item) = ring.next() {
        if let Ok(fdtrace::events::Event::Open(o)) = fdtrace::events::decode(&item) {
            let who = ["traced", "other", "child"]
                .into_iter()
                .find(|w| Path::new(&o.path) == marker(w));
            if let Some(who) = who {
                opens.entry(who.to_string()).or_default().insert(o.hdr.tgid);
                *count.entry(who.to_string()).or_default() += 1;
            }
        }
    }
    tracer.detach();
    assert_eq!(count.get("traced"), Some(&20), "{count:?}");
    assert_eq!(count.get("other"), None, "{count:?}");
    assert_eq!(count.get("child"), Some(&1), "{count:?}");
    assert_eq!(opens["traced"], BTreeSet::from([traced.0.id()]));
    assert!(!opens["child"].contains(&traced.0.id()), "{opens:?}");
}
