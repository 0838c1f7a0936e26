//! Privileged end-to-end tests of processes whose binaries the host cannot see at their paths:
//! a process in its own mount and pid namespace (what a container is) with its binary on a
//! tmpfs only that namespace sees, while the host has a different build at the same path; and a
//! process whose binary was deleted after it started (a rolling deploy). fdtrace must read each
//! process's own files: the exact leaking lines, never the host file's.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

/// The pid (as the host sees it) of the child of `parent` named `comm`, once it has exec'd.
fn wait_for_child(parent: u32, comm: &str) -> u32 {
    let t = Instant::now();
    loop {
        for c in children_of(parent) {
            if std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == comm) {
                return c;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no {comm} under {parent}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// leaky, waiting to leak 40 files into `data` (LEAKY_WAIT), as pid 1 of its own mount and pid
/// namespace, its binary on a tmpfs over `app` that only the namespace sees: the unshare
/// process, and leaky's pid as the host sees it.
fn leaky_in_a_namespace(app: &Path, data: &Path) -> (Killed, u32) {
    let script = format!(
        "mount -t tmpfs tmpfs {app} && cp {real} {app}/leaky && exec {app}/leaky 40 0 0",
        app = app.display(),
        real = built().fp.display()
    );
    let ns = Killed(
        Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--propagation", "private"])
            .args(["sh", "-c", &script])
            .env("LEAKY_DIR", data)
            .env("LEAKY_WAIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let pid = wait_for_child(ns.0.id(), "leaky");
    (ns, pid)
}

/// Trace `pid` (a leaky waiting on `stdin` with LEAKY_WAIT) while it leaks; the JSON report.
fn trace_while_leaking(
    pid: u32,
    args: &[&str],
    stdin: &mut impl std::io::Write,
    stdout: impl std::io::Read,
) -> Value {
    let mut argv = vec!["--json", "-d", "3"];
    argv.extend_from_slice(args);
    let json = attach_during(pid, &argv, || {
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    });
    serde_json::from_str(&json).expect("a JSON report")
}

fn assert_no_drift(r: &Value) {
    for k in ["missed_opens", "missed_closes"] {
        assert_eq!(r["drift"][k], Value::Array(vec![]), "{k}: {r:#}");
    }
}

#[test]
fn a_process_in_its_own_mount_namespace_is_read_from_its_own_files() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    // The host's file at the path the container uses: another program altogether.
    let app = tempfile::tempdir().unwrap();
    let decoy_dir = tempfile::tempdir().unwrap();
    let decoy = compile_c("drip.c", decoy_dir.path(), &["-O0"]);
    let inside = app.path().join("leaky");
    std::fs::copy(&decoy, &inside).unwrap();
    // In the namespace, a tmpfs over that directory holds the real leaky.
    let (mut ns, pid) = leaky_in_a_namespace(app.path(), data.path());
    // PID 1 of its namespace ignores SIGTERM: killed by pid when the test ends.
    let _leaky = KilledPid(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "not pid 1 of its own namespace: {status}"
    );
    let mut stdin = ns.0.stdin.take().unwrap();
    let stdout = ns.0.stdout.take().unwrap();
    let r = trace_while_leaking(pid, &[], &mut stdin, stdout);
    assert_leaky_40(&r);
    assert_no_drift(&r);
    // The program's frames name its own binary, at the path it has in its namespace.
    let leak = sites(&r)
        .iter()
        .find(|s| user_line(s) == Some(("leaky.c".into(), line_of("leaky.c", "LEAK_OPEN") as u64)))
        .unwrap();
    let i = leak["user_frame"].as_u64().unwrap() as usize;
    assert_eq!(
        leak["frames"][i]["module"],
        inside.to_str().unwrap(),
        "{leak:#}"
    );
    assert!(
        !r.to_string().contains("drip.c"),
        "the host's file was read: {r:#}"
    );
    // The host's pid and the one the namespace sees, and its cgroup.
    assert_eq!(
        r["container"]["nspid"],
        serde_json::json!([pid, 1]),
        "{:#}",
        r["container"]
    );
    // (Where the kernel shows no cgroup v2 line, as in the VMs of `cargo xtask vmtest`, there
    // is no cgroup to show.)
    let v2 = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("0::"));
    assert_eq!(
        r["container"]["cgroup"].is_string(),
        v2,
        "{:#}",
        r["container"]
    );
}

/// Recorded in the namespace, reported from a copy of the recording after the process and its
/// tmpfs are gone.
#[test]
fn a_recording_of_a_namespaced_process_reports_after_it_is_gone() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    let (mut ns, pid) = leaky_in_a_namespace(app.path(), data.path());
    let leaky = KilledPid(pid);
    let mut stdin = ns.0.stdin.take().unwrap();
    let stdout = ns.0.stdout.take().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("ns.fdtrace");
    let mut rec = Killed(
        Command::new(fdtrace_bin())
            .args(["record", "-q", "-d", "3", "-o"])
            .arg(&file)
            .args(["-p", &pid.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(rec.0.stderr.take().unwrap());
    wait_for_tracing(&mut err);
    stdin.write_all(b"go\n").unwrap();
    let mut done = String::new();
    BufReader::new(stdout).read_line(&mut done).unwrap();
    assert_eq!(done.trim(), "done");
    assert!(rec.0.wait().unwrap().success());
    drop(leaky);
    drop(ns);
    let copy = out.path().join("copy.fdtrace");
    std::fs::copy(&file, &copy).unwrap();
    std::fs::remove_file(&file).unwrap();
    let o = Command::new(fdtrace_bin())
        .arg("report")
        .arg(&copy)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_leaky_40(&r);
}

/// The binary was deleted after the process started: still read, through the mapping.
#[test]
fn a_deleted_binary_is_still_read() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("leaky-deleted");
    std::fs::copy(&built().fp, &bin).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = Killed(
        Command::new(&bin)
            .args(["40", "0", "0"])
            .env("LEAKY_DIR", data.path())
            .env("LEAKY_WAIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::fs::remove_file(&bin).unwrap();
    assert!(!Path::new(&bin).exists());
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let r = trace_while_leaking(pid, &[], &mut stdin, stdout);
    assert_leaky_40(&r);
    assert_no_drift(&r);
}
