//! `fdtrace agent`, privileged and end to end: it watches a cgroup in which a supervising shell
//! loop runs a leaking program twice (the second run a restart of the first, with a new pid);
//! each run triggers a recording when its count passes a fraction of its descriptor limit, the
//! recording ends when the run is killed, and both recordings stay readable and name the
//! leaking line; an old recording over the disk budget is deleted to make room.
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

/// `sh -c SCRIPT` moved into `cg`, waiting on its first line of input (`read go`) so that
/// nothing it starts runs outside the cgroup; [`go`] lets it on.
fn shell_in(cg: &mut TestCgroup, script: &str) -> Killed {
    let sh = Killed(
        Command::new("sh")
            .args(["-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cg.enter(sh.0.id());
    sh
}

fn go(sh: &mut Killed) {
    writeln!(sh.0.stdin.take().unwrap(), "go").unwrap();
}

/// `fdtrace agent --log-json --cgroup CG --dir DIR --interval 200ms --trigger-frac 0.2 ARGS…`,
/// and its lines once it said it started.
fn start_agent(
    cg: &TestCgroup,
    dir: &std::path::Path,
    args: &[&str],
) -> (Killed, mpsc::Receiver<Value>) {
    let mut agent = Killed(
        Command::new(fdtrace_bin())
            .arg("agent")
            .arg("--log-json")
            .arg("--cgroup")
            .arg(&cg.dir)
            .arg("--dir")
            .arg(dir)
            .args(["--interval", "200ms", "--trigger-frac", "0.2"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut agent.0);
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["event"], "start", "{first}");
    (agent, rx)
}

#[test]
fn the_agent_records_a_leak_and_keeps_it_across_a_restart() {
    let _serial = serial();
    require_root();
    let build = tempfile::tempdir().unwrap();
    let drip = compile_c("drip.c", build.path(), &["-O0"]);
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An older recording of 2 MiB, finished long ago, over the 1 MiB budget given below: the
    // agent deletes it (and only it) to make room.
    let old = dir.path().join("old-host-19700101T000000Z-p1-old.fdtrace");
    std::fs::write(&old, vec![0u8; 2 << 20]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    let mut cg = TestCgroup::new();
    // The supervisor: two runs of the leaker (50 leaks a second, a limit of 400), each killed
    // after 8 s and started again, then it waits. It starts once it is in the cgroup.
    let mut supervisor = shell_in(
        &mut cg,
        &format!(
            "ulimit -n 400; for run in 1 2; do timeout 8 {} {} 20; done; sleep 600",
            drip.display(),
            data.path().display()
        ),
    );
    let (mut agent, rx) = start_agent(&cg, dir.path(), &["--quiet", "60s", "--max-disk", "1"]);
    go(&mut supervisor);

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

    let deleted: Vec<&Value> = events.iter().filter(|e| e["event"] == "deleted").collect();
    assert_eq!(deleted.len(), 1, "{events:#?}");
    assert_eq!(deleted[0]["file"], old.to_str().unwrap(), "{events:#?}");
    assert!(!old.exists());
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

/// The JSON body of an HTTP response (a small one: Content-Length, or one chunk).
fn json_body(resp: &str) -> Value {
    let body = &resp[resp.find("\r\n\r\n").expect("a response head") + 4..];
    let (a, b) = (body.find('{'), body.rfind('}'));
    match (a, b) {
        (Some(a), Some(b)) => {
            serde_json::from_str(&body[a..=b]).unwrap_or_else(|e| panic!("{e}: {body}"))
        }
        _ => panic!("no JSON in {resp}"),
    }
}

/// The value of each series `query` returns from Prometheus's HTTP API, with its labels.
fn prometheus_query(port: u16, query: &str) -> Vec<(Value, f64)> {
    let r = json_body(&http_request(
        port,
        "GET",
        &format!("/api/v1/query?query={query}"),
        "",
    ));
    assert_eq!(r["status"], "success", "{r}");
    r["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"].clone(),
                s["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect()
}

/// A real Prometheus server (Debian's) scrapes the agent while it records a leak: its HTTP API
/// returns the leaking call site's series, labelled with the leak's line, at the count the
/// recording itself reports, and the process's open count at its limit.
#[test]
fn prometheus_scrapes_the_agent_and_sees_the_leaking_line() {
    let _serial = serial();
    require_root();
    let build = tempfile::tempdir().unwrap();
    let drip = compile_c("drip.c", build.path(), &["-O0"]);
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prom_dir = tempfile::tempdir().unwrap();
    let mut cg = TestCgroup::new();
    // Leaks 50 a second until its limit of 400, then fails every open and keeps running.
    let mut leaker = shell_in(
        &mut cg,
        &format!(
            "ulimit -n 400; exec {} {} 20",
            drip.display(),
            data.path().display()
        ),
    );
    let pid = leaker.0.id();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (mut agent, rx) = start_agent(&cg, dir.path(), &["--quiet", "5m", "--metrics", &metrics]);
    let prom_port = free_port();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: fdtrace\n    static_configs:\n      \
             - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian: prometheus; `cargo xtask test` installs it)"),
    );
    go(&mut leaker);

    // The process at its limit, as Prometheus scraped it.
    let open_q = format!("fdtrace_process_open_fds{{pid=\"{pid}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", prom_port)).is_ok()
            && prometheus_query(prom_port, &open_q)
                .first()
                .is_some_and(|(_, v)| *v == 400.0);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw pid {pid} at 400 descriptors: {:?}",
            std::net::TcpStream::connect(("127.0.0.1", prom_port))
                .is_ok()
                .then(|| prometheus_query(prom_port, &open_q))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recording is read again every 10 s for its sites; then one more scrape.
    std::thread::sleep(Duration::from_secs(13));
    let drip_line = line_of("drip.c", "DRIP");
    let sites = prometheus_query(
        prom_port,
        &format!("fdtrace_site_open_fds{{pid=\"{pid}\"}}"),
    );
    let (labels, value) = sites
        .iter()
        .find(|(m, _)| {
            m["site"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("drip.c:{drip_line}")))
        })
        .unwrap_or_else(|| panic!("no series for drip.c:{drip_line}: {sites:?}"));
    assert_eq!(labels["comm"], "drip", "{labels}");
    assert_eq!(labels["kind"], "file", "{labels}");
    assert!(
        labels["site"].as_str().unwrap().starts_with("main at "),
        "{labels}"
    );
    let traced = prometheus_query(
        prom_port,
        &format!("fdtrace_process_recording{{pid=\"{pid}\"}}"),
    );
    assert_eq!(traced.first().map(|t| t.1), Some(1.0), "{traced:?}");

    // The agent stops; its recording of the process says the same count.
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGINT) };
    assert!(agent.0.wait().unwrap().success());
    let events: Vec<Value> = rx.iter().collect();
    let recorded = events
        .iter()
        .find(|e| e["event"] == "recorded")
        .unwrap_or_else(|| panic!("{events:#?}"));
    let report = report_of_a_copy(std::path::Path::new(recorded["file"].as_str().unwrap()));
    let site = site_at(&report, "drip.c", drip_line).unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(site["count"].as_f64(), Some(*value), "{site:#}");
    assert!(*value >= 100.0, "{value}");
    drop(cg);
}
