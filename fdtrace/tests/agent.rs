//! `fdtrace agent`, privileged and end to end: it watches a cgroup in which a supervising shell
//! loop runs a leaking program twice (the second run a restart of the first, with a new pid);
//! each run triggers a recording when its count passes a fraction of its descriptor limit, the
//! recording ends when the run is killed, and both recordings stay readable and name the
//! leaking line.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

/// The agent's JSON lines, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_agent_records_a_leak_and_keeps_it_across_a_restart() {
    let _serial = serial();
    require_root();
    let build = tempfile::tempdir().unwrap();
    let drip = compile_c("drip.c", build.path(), &["-O0"]);
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cg = TestCgroup::new();
    // The supervisor: two runs of the leaker (50 leaks a second, a limit of 400), each killed
    // after 8 s and started again, then it waits. It starts once it is in the cgroup.
    let script = format!(
        "read go; ulimit -n 400; for run in 1 2; do timeout 8 {} {} 20; done; sleep 600",
        drip.display(),
        data.path().display()
    );
    let mut supervisor = Killed(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cg.enter(supervisor.0.id());
    let mut agent = Killed(
        Command::new(fdtrace_bin())
            .arg("agent")
            .arg("--cgroup")
            .arg(&cg.dir)
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--interval",
                "200ms",
                "--trigger-frac",
                "0.2",
                "--quiet",
                "60s",
                "--log-json",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut agent.0);
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["event"], "start", "{first}");
    writeln!(supervisor.0.stdin.take().unwrap(), "go").unwrap();

    // Two recordings, one per run: each begun by the trigger, ended by the run's end.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events
        .iter()
        .filter(|e: &&Value| e["event"] == "recorded")
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no two recordings in 60 s: {events:#?}"));
        assert_ne!(e["event"], "failed", "{e}");
        events.push(e);
    }
    // Stopped by SIGINT, it says so and exits 0.
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGINT) };
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "{status}");
    events.extend(rx.iter());
    assert_eq!(events.last().unwrap()["event"], "stop", "{events:#?}");

    let tracing: Vec<&Value> = events.iter().filter(|e| e["event"] == "tracing").collect();
    let recorded: Vec<&Value> = events.iter().filter(|e| e["event"] == "recorded").collect();
    assert_eq!(tracing.len(), 2, "{events:#?}");
    assert_eq!(recorded.len(), 2, "{events:#?}");
    assert_ne!(recorded[0]["pid"], recorded[1]["pid"], "{events:#?}");
    let drip_line = line_of("drip.c", "DRIP");
    for (t, r) in tracing.iter().zip(&recorded) {
        assert_eq!(t["comm"], "drip", "{t}");
        // Growing 50 a second toward 400, it may show its pace before its size.
        assert!(t["reason"] == "fraction" || t["reason"] == "eta", "{t}");
        assert_eq!(t["file"], r["file"], "{events:#?}");
        assert_eq!(r["until"], "it exited", "{r}");
        let file = std::path::PathBuf::from(r["file"].as_str().unwrap());
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.contains(&format!("-p{}-drip", r["pid"])) && name.ends_with(".fdtrace"),
            "{name}"
        );
        // Readable after its process is gone, and naming the leak's line.
        let report = report_of_a_copy(&file);
        let site = site_at(&report, "drip.c", drip_line)
            .unwrap_or_else(|| panic!("{name}: no site at drip.c:{drip_line}: {report:#}"));
        assert!(site["count"].as_u64().unwrap() >= 50, "{name}: {site:#}");
        assert!(
            !lines_in(&report, "drip.c").contains(&u64::from(line_of("drip.c", "OK_DRIP"))),
            "{name}: {report:#}"
        );
    }
    drop(cg);
}

#[test]
fn the_agent_refuses_bad_arguments_in_one_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, says) in [
        (
            vec!["--dir", d, "--cgroup", "/no-such-cgroup-fdtrace"],
            "fdtrace: no cgroup /no-such-cgroup-fdtrace",
        ),
        (
            vec!["--dir", "/proc/self/status/x"],
            "fdtrace: cannot create the directory /proc/self/status/x",
        ),
        (vec!["--dir", d, "--trigger-frac", "2"], "not a fraction"),
    ] {
        let out = Command::new(fdtrace_bin())
            .arg("agent")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        if !args.contains(&"--trigger-frac") {
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
}
