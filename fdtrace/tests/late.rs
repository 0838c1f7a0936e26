//! Privileged end-to-end test of arriving late: a process that leaked thousands of descriptors
//! before fdtrace attached, and goes on leaking. The report groups what was already open (exact
//! counts, ages where the kernel keeps them, the site each group looks like), fits on a screen,
//! and the exports leave it out unless asked.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

mod common;
use common::*;

const PIPES: usize = 20;

/// Files and sockets to leak before tracing (a tenth more of each while traced), within what the
/// descriptor limit allows (its hard limit: the program's soft limit is raised to it): 2,000 and
/// 400 here, fewer in a VM whose limit is 1,024 or 4,096.
fn counts() -> (usize, usize) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    let room = (r.rlim_max.min(20_000) as usize).saturating_sub(200);
    ((room * 6 / 11).min(2000), (room * 15 / 110).min(400))
}

fn monotonic_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

#[track_caller]
fn group(j: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    match j["preexisting_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| pred(g))
    {
        Some(g) => g,
        None => panic!("no such group: {:#}", j["preexisting_groups"]),
    }
}

fn site_line(j: &Value, index: &Value) -> (String, u64) {
    let s = &j["sites"][index.as_u64().expect("a likely site") as usize];
    user_line(s).expect("the site's own line")
}

#[test]
fn what_was_open_before_is_grouped_dated_and_traced_to_its_likely_site() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let bin = compile_c("late.c", dir.path(), &["-O0"]);
    let (files, sockets) = counts();
    let mut cmd = Command::new(&bin);
    // SAFETY: getrlimit/setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    let mut prog = Killed(
        cmd.arg(data.path())
            .args([files, PIPES, sockets].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(prog.0.stdout.take().unwrap()).lines();
    let ready = out.next().unwrap().unwrap();
    let mut w = ready.split_whitespace();
    assert_eq!(w.next(), Some("ready"), "{ready}");
    let port: u16 = w.next().unwrap().parse().unwrap();
    let pipes_at: f64 = w.next().unwrap().parse().unwrap();
    // Let the leaks age a little before fdtrace arrives.
    std::thread::sleep(Duration::from_secs(2));
    let file = dir.path().join("late.fdtrace");
    let mut rec = Killed(
        Command::new(fdtrace_bin())
            .args(["record", "-q", "-o"])
            .arg(&file)
            .args(["-p", &prog.0.id().to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(rec.0.stderr.take().unwrap());
    wait_for_tracing(&mut err);
    // Now it leaks more, at the same lines.
    writeln!(prog.0.stdin.as_mut().unwrap(), "go").unwrap();
    assert_eq!(out.next().unwrap().unwrap(), "done");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) of the recorder this test started.
    unsafe { libc::kill(rec.0.id() as i32, libc::SIGINT) };
    assert!(rec.0.wait().unwrap().success());
    let ended_at = monotonic_s();

    let report = |args: &[&str]| {
        let o = Command::new(fdtrace_bin())
            .arg("report")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let j: Value = serde_json::from_str(&report(&["--json"])).unwrap();
    let leak_file = ("late.c".to_string(), line_of("late.c", "LEAK_FILE") as u64);
    let leak_socket = (
        "late.c".to_string(),
        line_of("late.c", "LEAK_SOCKET") as u64,
    );
    // Every pre-existing descriptor is still listed in JSON.
    let pre = j["preexisting"].as_array().unwrap();
    assert!(pre.len() >= files + 2 * PIPES + sockets, "{}", pre.len());
    // Files: one group, by pattern, exact, pointing at the leaking line.
    // (Digits in the temporary directory's name collapse too.)
    let pattern =
        fdtrace::preexisting::path_pattern(&format!("{}/img-0.jpg", data.path().display()));
    assert!(pattern.ends_with("/img-*.jpg"), "{pattern}");
    let fgroup = group(&j, |g| g["pattern"] == pattern);
    assert_eq!(fgroup["count"], files, "{fgroup:#}");
    assert_eq!(fgroup["kind"], "file");
    assert_eq!(fgroup["examples"].as_array().unwrap().len(), 3);
    assert_eq!(fgroup["ages_known"], false, "{fgroup:#}");
    assert_eq!(site_line(&j, &fgroup["likely_site"]), leak_file);
    assert_eq!(fgroup["likely_because"], "same path pattern");
    // Sockets: by peer and state.
    let peer = format!("127.0.0.1:{port}");
    let socks = group(&j, |g| g["peer"] == peer.as_str());
    assert_eq!(socks["count"], sockets, "{socks:#}");
    assert_eq!(socks["state"], "CLOSE_WAIT", "{socks:#}");
    assert_eq!(site_line(&j, &socks["likely_site"]), leak_socket);
    assert_eq!(socks["likely_because"], "same peer and state");
    // Pipes: both ends of each (with the program's stdio pipes, made before them), with their
    // age where the kernel keeps it (6.15+): the newest are the last leaked.
    let pipes = group(&j, |g| g["kind"] == "pipe");
    assert!(
        pipes["count"].as_u64().unwrap() as usize >= 2 * PIPES,
        "{pipes:#}"
    );
    if aya_kernel_at_least(6, 15) {
        assert_eq!(pipes["ages_known"], true, "{pipes:#}");
        let expected = ended_at - pipes_at;
        let newest = pipes["newest_age_s"].as_f64().unwrap();
        assert!(
            (newest - expected).abs() < 1.0,
            "pipes aged {newest}, not {expected}"
        );
    } else {
        assert_eq!(pipes["ages_known"], false, "{pipes:#}");
    }
    assert!(pipes["likely_site"].is_null());
    // The text fits on a screen, with the groups and their likely sites.
    let text = report(&[]);
    assert!(
        text.lines().count() < 60,
        "{} lines:\n{text}",
        text.lines().count()
    );
    assert!(
        text.contains(&format!("{files} files {pattern}; e.g. fd ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{sockets} tcp sockets to {peer} in CLOSE_WAIT")),
        "{text}"
    );
    assert!(
        text.contains("look like the leak opened by leak_file at"),
        "{text}"
    );
    assert!(text.contains("same peer and state;"), "{text}");
    // Every one with --all.
    let all = report(&["--all"]);
    assert!(all.lines().count() > files, "{}", all.lines().count());
    // Exports: the call sites only, unless asked.
    let export = |args: &[&str]| {
        let o = Command::new(fdtrace_bin())
            .arg("export")
            .arg(&file)
            .args(["--format", "folded"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    let folded = export(&[]);
    assert!(!folded.contains("[pre-existing]"), "{folded}");
    assert!(folded.contains("leak_file"), "{folded}");
    let with = export(&["--preexisting"]);
    assert!(
        with.contains(&format!("[pre-existing];{pattern} {files}")),
        "{with}"
    );
    assert!(Path::new(&file).exists());
}

fn aya_kernel_at_least(major: u32, minor: u32) -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r.trim().split(['.', '-']);
    let a: u32 = it.next().unwrap().parse().unwrap();
    let b: u32 = it.next().unwrap().parse().unwrap();
    (a, b) >= (major, minor)
}
