//! Privileged end-to-end tests of what an on-call engineer looks at first: verdicts and time to
//! exhaustion in the report, the live screen (in tmux), the Prometheus endpoint and `fdtrace top`.
use std::os::unix::process::CommandExt as _;
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

fn drip(dir: &std::path::Path) -> PathBuf {
    compile_c("drip.c", dir, &["-O0"])
}

#[test]
fn verdicts_tell_a_leak_from_a_pool() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = drip(dir.path());
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-q", "-d", "8", "--"],
        &[bin.as_os_str(), data.path().as_os_str(), "100".as_ref()],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = &r.json;
    let pool = site_at(j, "drip.c", line_of("drip.c", "POOL")).expect("pool site");
    let leak = site_at(j, "drip.c", line_of("drip.c", "DRIP")).expect("drip site");
    assert_eq!(pool["count"], 5);
    assert_eq!(pool["verdict"], "held", "{pool:#}");
    assert_eq!(leak["verdict"], "leaking", "{leak:#}");
    // About 10 a second: 600 a minute, give or take the scheduling of a busy machine.
    let g = leak["growth_per_min"].as_f64().unwrap();
    assert!((300.0..=700.0).contains(&g), "growth {g}");
    assert!(site_at(j, "drip.c", line_of("drip.c", "OK_DRIP")).is_none());
    let soft = j["rlimit_nofile"]["soft"].as_u64().expect("limit");
    let eta = j["exhaustion_eta_s"]
        .as_f64()
        .expect("an eta for a growing process");
    let open = j["open_count"].as_f64().unwrap();
    let expected = (soft as f64 - open) / j["growth_per_min"].as_f64().unwrap() * 60.0;
    assert!((eta - expected).abs() < 1.0, "{eta} vs {expected}");
}

#[test]
fn the_live_screen_renders_in_a_terminal() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = drip(dir.path());
    let data = tempfile::tempdir().unwrap();
    let session = format!("fdtrace-live-{}", std::process::id());
    let cmd = format!(
        "{} -d 14 -o {} -- {} {} 100",
        fdtrace_bin().display(),
        dir.path().join("report.txt").display(),
        bin.display(),
        data.path().display()
    );
    let st = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "200",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .expect("tmux");
    assert!(st.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _kill = Kill(session.clone());
    // Verdicts need five seconds of history; fdtrace starts in a second or two.
    std::thread::sleep(Duration::from_secs(10));
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", &session])
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    let drip_line = format!("drip.c:{}", line_of("drip.c", "DRIP"));
    let pool_line = format!("drip.c:{}", line_of("drip.c", "POOL"));
    assert!(screen.contains("open descriptors:"), "{screen}");
    let row = |needle: &str| {
        screen
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row for {needle}: {screen}"))
            .to_string()
    };
    assert!(row(&drip_line).contains("leaking"), "{screen}");
    let pool = row(&pool_line);
    assert!(pool.trim_start().starts_with("5 "), "{pool}");
    assert!(pool.contains("held"), "{screen}");
    assert!(screen.contains("lost events 0"), "{screen}");
}

#[test]
fn the_metrics_endpoint_exports_the_same_counts() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = drip(dir.path());
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut tracer = KilledGroup(
        Command::new(fdtrace_bin())
            .args(["-q", "-d", "8", "--metrics", &format!("127.0.0.1:{port}")])
            .process_group(0)
            .args(["-o"])
            .arg(dir.path().join("r.txt"))
            .arg("--")
            .arg(&bin)
            .arg(data.path())
            .arg("100")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let drip_line = format!("drip.c:{}", line_of("drip.c", "DRIP"));
    // The count of the dripping site, where a scrape shows it.
    let dripped = |body: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with("fdtrace_site_open_descriptors") && l.contains(&drip_line))?
            .rsplit_once(' ')?
            .1
            .parse()
            .ok()
    };
    // Scraped every half second from the start (a loaded machine attaches more slowly) until
    // 20 leaks show, or 7 s have passed (fdtrace stops at 8).
    let t = Instant::now();
    let body = loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            assert!(t.elapsed() < Duration::from_secs(7), "no metrics endpoint");
            continue;
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        if dripped(&resp).is_some_and(|n| n >= 20.0) || t.elapsed() >= Duration::from_secs(7) {
            break resp;
        }
    };
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let value = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {body}"))
            .rsplit_once(' ')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let pool = format!("drip.c:{}", line_of("drip.c", "POOL"));
    let pool_metric = body
        .lines()
        .find(|l| l.starts_with("fdtrace_site_open_descriptors") && l.contains(&pool))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(pool_metric.ends_with(" 5"), "{pool_metric}");
    let n = dripped(&body).unwrap_or_else(|| panic!("no {drip_line}: {body}"));
    assert!(n >= 20.0, "{n} leaks at {drip_line}: {body}");
    assert_eq!(value("fdtrace_lost_events_total"), 0.0);
    assert!(value("fdtrace_rlimit_nofile") > 0.0);
    let _ = tracer.0.wait();
}

#[test]
fn top_lists_the_leaking_process_first() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = drip(dir.path());
    let data = tempfile::tempdir().unwrap();
    // 100 leaks a second: far above anything else on a test machine.
    let leaker = Killed(
        Command::new(&bin)
            .arg(data.path())
            .arg("10")
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(fdtrace_bin())
        .args(["top", "--once", "-i", "2", "-n", "5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().nth(1).unwrap_or_default();
    let pid: u32 = first.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(pid, leaker.0.id(), "{text}");
    assert!(first.contains("drip"), "{text}");
    let _ = Value::Null;
}
