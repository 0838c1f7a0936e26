//! Real servers no one here wrote, traced by pid under load: nginx (Debian's package) under wrk
//! with `Connection: close`, and redis-server under redis-benchmark reconnecting for every
//! request. After the load, no descriptor may be attributed to a call site (no false leak), no
//! event may be lost and the model must equal /proc/PID/fd.
use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Trace `pid` for `secs` seconds while `load` runs (started once fdtrace is attached).
fn trace_under_load(pid: u32, secs: &str, load: impl FnOnce()) -> Value {
    serde_json::from_str(&attach_during(pid, &["--json", "-d", secs], load)).unwrap()
}

fn assert_no_false_leak(r: &Value, what: &str) {
    assert_eq!(r["lost_events"], 0, "{what}: {r:#}");
    assert_eq!(
        r["sites"],
        Value::Array(vec![]),
        "{what}: false leaks: {r:#}"
    );
    for k in ["missed_opens", "missed_closes", "cloexec_mismatches"] {
        assert_eq!(
            r["drift"][k],
            Value::Array(vec![]),
            "{what}: drift {k}: {r:#}"
        );
    }
    assert_eq!(r["model"]["drift_opens"], 0, "{what}: {r:#}");
    assert_eq!(r["model"]["drift_closes"], 0, "{what}: {r:#}");
    assert_eq!(r["model"]["replaced"], 0, "{what}: {r:#}");
}

fn require(tool: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "{tool} is not installed (.ci/run installs it)"
    );
}

#[test]
fn nginx_under_wrk_has_no_false_leak() {
    let _serial = serial();
    require_root();
    require("nginx");
    require("wrk");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::write(d.join("www/index.html"), "hello from nginx\n".repeat(50)).unwrap();
    let port = free_port();
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; \
         uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let master = Killed(
        Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let workers = children_of(master.0.id());
    assert_eq!(workers.len(), 1, "one nginx worker expected: {workers:?}");
    let worker = workers[0];
    // Killed by pid (before the master) however the test ends.
    let worker_guard = KilledPid(worker);
    let url = format!("http://127.0.0.1:{port}/index.html");
    let r = trace_under_load(worker, "7", || {
        let out = Command::new("wrk")
            .args(["-t1", "-c16", "-d4s", "-H", "Connection: close", &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "wrk failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Requests/sec"), "{text}");
    });
    // The load happened and was seen: an accepted socket and an opened file per request.
    let opens = r["model"]["opens"].as_u64().unwrap();
    assert!(opens > 1000, "only {opens} births seen: {r:#}");
    assert_no_false_leak(&r, "nginx");
    drop(worker_guard);
    drop(master);
}

#[test]
fn redis_under_benchmark_has_no_false_leak() {
    let _serial = serial();
    require_root();
    require("redis-server");
    require("redis-benchmark");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let pid = server.0.id();
    let r = trace_under_load(pid, "8", || {
        // -k 0: a new connection for every request.
        let st = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-k",
                "0",
                "-n",
                "4000",
                "-c",
                "8",
                "-q",
            ])
            .args(["-t", "ping,set,get"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "redis-benchmark failed");
    });
    let opens = r["model"]["opens"].as_u64().unwrap();
    assert!(opens > 1000, "only {opens} births seen: {r:#}");
    assert_no_false_leak(&r, "redis");
    drop(server);
}
