//! Privileged end-to-end tests of processes whose binaries the host cannot see at their paths:
//! a process in its own mount and pid namespace (what a container is) with its binary on a
//! tmpfs only that namespace sees, while the host has a different build at the same path; and a
//! process whose binary was deleted after it started (a rolling deploy). fdtrace must read each
//! process's own files: the exact leaking lines, never the host file's.
use std::{
    io::BufReader,
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
    let json = attach_during(pid, &argv, || go_and_wait_for(stdin, stdout));
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
    go_and_wait_for(&mut stdin, stdout);
    assert!(rec.0.wait().unwrap().success());
    drop(leaky);
    drop(ns);
    assert_leaky_40(&report_of_a_copy(&file));
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

/// `--cgroup`: a leaking process in the cgroup when tracing starts, a correct one moved in while
/// it runs (the kernel adopts it at its next syscall), the same leaking program outside: both of
/// the cgroup's processes exactly, and not a record about the other.
#[test]
fn a_cgroup_is_traced_with_the_processes_that_enter_it() {
    let _serial = serial();
    require_root();
    let mut cg = TestCgroup::new();
    let data = tempfile::tempdir().unwrap();
    let mut leaker = waiting_leaker(&built().fp, 40, data.path());
    cg.enter(leaker.0.id());
    let other = tempfile::tempdir().unwrap();
    let mut outsider = waiting_leaker(&built().fp, 40, other.path());
    let dir = tempfile::tempdir().unwrap();
    let churn = compile_c("churn.c", dir.path(), &["-O0"]);
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("r.json");
    let mut tracer = Killed(
        Command::new(fdtrace_bin())
            .args(["--json", "-d", "6", "-o"])
            .arg(&report)
            .arg("--cgroup")
            .arg(&cg.dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let said = wait_for_tracing(&mut BufReader::new(tracer.0.stderr.take().unwrap()));
    assert!(
        said.starts_with("fdtrace: tracing cgroup /fdtrace-test-")
            && said.contains(": 1 process now"),
        "{said}"
    );
    // Started outside, moved in while traced: it waits a second before its 3,000 opens and
    // closes, and by then it is in the cgroup.
    let worker = Killed(
        Command::new(&churn)
            .args(["1000", "3000", "0", "1500"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cg.enter(worker.0.id());
    go_and_wait(&mut leaker);
    go_and_wait(&mut outsider);
    assert!(tracer.0.wait().unwrap().success());
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_leaker_and_worker(&r, leaker.0.id(), worker.0.id());
    drop(worker);
    drop(leaker);
}

/// Bad targets: a one-line error that says what to do, exit 1, nothing traced.
#[test]
fn bad_cgroup_and_container_targets_are_refused() {
    let _serial = serial();
    require_root();
    let mount = fdtrace::cgroup::mount_point().expect("a cgroup v2 hierarchy");
    // Two containers whose ids share a prefix, as a runtime would lay out their cgroups.
    let cg = TestCgroup::new();
    let ids = [
        format!("feedc0de{}", "1".repeat(56)),
        format!("feedc0de{}", "2".repeat(56)),
    ];
    let dirs: Vec<_> = ids
        .iter()
        .map(|id| cg.dir.join(format!("docker-{id}.scope")))
        .collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let not_cgroup = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--cgroup".into(),
                "/sys/fs/cgroup/no-such-cgroup-here".into(),
            ],
            "no cgroup /sys/fs/cgroup/no-such-cgroup-here",
        ),
        (
            vec![
                "--cgroup".into(),
                not_cgroup.path().to_string_lossy().into_owned(),
            ],
            "is not a cgroup v2 directory",
        ),
        (
            vec!["--cgroup".into(), mount.to_string_lossy().into_owned()],
            "is the root cgroup",
        ),
        (
            vec!["--container".into(), "0123456789abcdef0".into()],
            "no container id starts with 0123456789abcdef0",
        ),
        (
            vec!["--container".into(), "feedc0de".into()],
            "feedc0de matches 2 containers (feedc0de1111, feedc0de2222): give more of the id",
        ),
        (
            vec!["--container".into(), "not-hex".into()],
            "a container id is up to 64 hexadecimal digits",
        ),
        (
            vec!["--cgroup".into(), "/x".into(), "-p".into(), "1".into()],
            "cannot be used with",
        ),
    ];
    for (args, says) in cases {
        let o = Command::new(fdtrace_bin())
            .args(["-d", "1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if !says.contains("cannot be used") {
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
    // A unique prefix is found, and its cgroup is named.
    let o = Command::new(fdtrace_bin())
        .args(["-d", "0.2", "--container", "feedc0de1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || err.contains("held no process"),
        "{err}"
    );
    assert!(err.contains(&format!("docker-{}.scope", ids[0])), "{err}");
    for d in &dirs {
        std::fs::remove_dir(d).unwrap();
    }
}
