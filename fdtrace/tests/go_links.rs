//! Go: a socket net/http dials in a goroutine of its own is named at the line of the goroutine
//! that asked for it (issue 19), with each Go release the tests have: the system's `go`
//! (Debian bookworm: 1.19) and the releases `cargo xtask test` fetches from Debian into
//! FDTRACE_GO_ROOTS (1.21 to 1.24). The program (`tests/programs/gohttp`) leaks connections
//! in each way the issue lists: `client.Get` and `client.Do` from handlers, `http.Get` inlined
//! into a handler, a worker goroutine, a `MaxConnsPerHost` queue whose dial another goroutine
//! starts, and a keep-alive connection reused by a second request (it keeps its first
//! requester); a `database/sql` pool that dials in a goroutine of its own (named by the `go`
//! statement that started it, in `sql.OpenDB`); and a file. Its correct handler, the connection it closes, and the second
//! request on a reused connection must never be named.
use std::{path::PathBuf, time::Duration};

use serde_json::Value;

mod common;
use common::*;

const MAIN_GO: &str = "gohttp/main.go";

/// The GOROOT of Go `release` from FDTRACE_GO_ROOTS (set by `cargo xtask test`).
fn goroot(release: &str) -> PathBuf {
    let roots = std::env::var_os("FDTRACE_GO_ROOTS").unwrap_or_else(|| {
        panic!("FDTRACE_GO_ROOTS is not set: run the tests with `cargo xtask test`, which fetches Go {release}")
    });
    std::env::split_paths(&roots)
        .find(|p| p.ends_with(format!("go-{release}")))
        .unwrap_or_else(|| panic!("Go {release} is not in FDTRACE_GO_ROOTS ({roots:?})"))
}

/// The frames' functions of a site, split at the `[requested by goroutine N]` marker.
fn split_at_marker(site: &Value) -> (Vec<String>, Vec<String>) {
    let funcs: Vec<String> = site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("??").to_string())
        .collect();
    let marker = funcs
        .iter()
        .position(|f| f.starts_with("[requested by goroutine ") && f.ends_with(']'))
        .unwrap_or_else(|| panic!("no requester in {site:#}"));
    let mut dialer = funcs;
    let requester = dialer.split_off(marker + 1);
    dialer.pop();
    (dialer, requester)
}

/// The function of the `go` statement that started a site's goroutine: the frame after its
/// `[created by goroutine N]` marker (`[created by a goroutine]` before Go 1.21, which has no
/// parent goroutine ids), the last one. Checks the marker's form for `release`.
fn creator(site: &Value, release: Option<&str>) -> String {
    let frames = site["frames"].as_array().unwrap();
    let marker = frames
        .iter()
        .position(|f| {
            f["function"]
                .as_str()
                .is_some_and(|f| f.starts_with("[created by "))
        })
        .unwrap_or_else(|| panic!("no creator in {site:#}"));
    assert_eq!(marker + 2, frames.len(), "{site:#}");
    let text = frames[marker]["function"].as_str().unwrap();
    if release.is_some() {
        // 1.21+: the parent's id, a handler's goroutine or the one that opened the pool.
        let id = text
            .strip_prefix("[created by goroutine ")
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(id.parse::<u64>().unwrap() > 0, "{text}");
    } else {
        assert_eq!(text, "[created by a goroutine]");
    }
    frames[marker + 1]["function"].as_str().unwrap().to_string()
}

/// Build gohttp with Go `release` (None: the system's `go`), stripped (`-ldflags=-s`: no symbol
/// table, no DWARF) or not, run its upstream and the service, load the service while fdtrace
/// traces it by pid, and check every site.
fn check_release(release: Option<&str>, stripped: bool) {
    let _serial = serial();
    require_root();
    let build = tempfile::tempdir().unwrap();
    let root = release.map(goroot);
    let mut env = Vec::new();
    if let Some(r) = &root {
        env.push(("GOROOT", r.to_str().unwrap()));
    }
    if stripped {
        env.push(("GOFLAGS", "-ldflags=-s"));
    }
    let bin = if env.is_empty() {
        go_build("gohttp", build.path())
    } else {
        go_build_with("gohttp", build.path(), &env)
    };
    check_layout(&bin, release, stripped);
    let line = |marker: &str| u64::from(line_of(MAIN_GO, marker));
    let (_upstream, up_port) = start_server(&bin, &["-upstream".as_ref()]);
    let up_addr = format!("127.0.0.1:{up_port}");
    let (service, port) = start_server(&bin, &["-upstream-addr".as_ref(), up_addr.as_ref()]);
    let pid = service.0.id();
    // (path, requests)
    let load = [
        ("/get", 4),
        ("/do", 3),
        ("/inlined", 2),
        ("/worker", 3),
        ("/limited", 2),
        ("/reuse", 2),
        ("/file", 2),
        ("/pool", 3),
        ("/ok", 3),
    ];
    let json = attach_during(pid, &["--json", "-d", "10"], || {
        load_and_settle(Duration::from_secs(9), || {
            for (path, n) in load {
                for _ in 0..n {
                    let r = http_request(port, "GET", path, "");
                    assert!(
                        r.contains("upstream said 200 OK") || r.contains("opened"),
                        "{path}: {r}"
                    );
                }
            }
        })
    });
    let r: Value = serde_json::from_str(&json).unwrap();
    let what = format!(
        "Go {}{}",
        release.unwrap_or("of the system"),
        if stripped { ", stripped" } else { "" }
    );
    assert_eq!(r["lost_events"], 0, "{what}: {r:#}");

    // (marker, count, function, state of its sockets or None for files)
    let expect = [
        ("LEAK_GET", 4, "main.get", Some("CLOSE_WAIT")),
        ("LEAK_DO", 3, "main.do", Some("CLOSE_WAIT")),
        ("LEAK_INLINED", 2, "main.inlined", Some("CLOSE_WAIT")),
        ("LEAK_WORKER", 3, "main.fetch", Some("CLOSE_WAIT")),
        ("LEAK_LIMITED", 2, "main.limited", Some("CLOSE_WAIT")),
        // Reused by KEEP_AGAIN, but dialed for KEEP_FIRST; the upstream keeps it open.
        ("KEEP_FIRST", 2, "main.reuse", Some("ESTABLISHED")),
        ("LEAK_FILE", 2, "main.file", None),
        // Dialed by the pool's own goroutine (the first, dialed in the handler, was closed):
        // the driver's line, and the pool's creator.
        ("POOL_DIAL", 3, "main.netDriver.Open", Some("ESTABLISHED")),
    ];
    for (marker, count, function, state) in expect {
        let l = line(marker);
        let site = site_at(&r, "main.go", l as u32)
            .unwrap_or_else(|| panic!("{what}: no site at main.go:{l} ({marker}): {r:#}"));
        assert_eq!(
            user_frame(site),
            Some(("main.go".into(), l, function.into())),
            "{what}, {marker}: {site:#}"
        );
        assert_eq!(site["count"], count, "{what}, {marker}: {site:#}");
        match state {
            Some(state) => {
                assert_eq!(site["kind"], "socket", "{what}, {marker}: {site:#}");
                for f in site["fds"].as_array().unwrap() {
                    assert_eq!(f["state"], state, "{what}, {marker}: {f:#}");
                    assert_eq!(f["peer"], up_addr.as_str(), "{what}, {marker}: {f:#}");
                }
                if marker == "POOL_DIAL" {
                    assert_eq!(
                        creator(site, release),
                        "database/sql.OpenDB",
                        "{what}: {site:#}"
                    );
                    continue;
                }
                // The dialing goroutine's frames (net/http's, none of the program), then the
                // frames of the goroutine that asked.
                let (dialer, requester) = split_at_marker(site);
                assert!(
                    dialer.iter().any(|f| f == "net/http.(*Transport).dialConn"),
                    "{what}, {marker}: {site:#}"
                );
                assert!(
                    !dialer.iter().any(|f| f.starts_with("main.")),
                    "{what}, {marker}: {site:#}"
                );
                assert!(
                    requester
                        .iter()
                        .any(|f| f == "net/http.(*Transport).queueForDial"),
                    "{what}, {marker}: {site:#}"
                );
                assert!(
                    requester.iter().any(|f| f == function),
                    "{what}, {marker}: {site:#}"
                );
            }
            None => {
                assert_eq!(site["kind"], "file", "{what}, {marker}: {site:#}");
                // A handler's goroutine: started by the server.
                assert_eq!(
                    creator(site, release),
                    "net/http.(*Server).Serve",
                    "{what}: {site:#}"
                );
            }
        }
    }
    // Those, and nothing else: not the correct handler, not the connection the holder closed,
    // not the request that only reused a connection.
    assert_eq!(sites(&r).len(), expect.len(), "{what}: {r:#}");
    let lines = lines_in(&r, MAIN_GO);
    for marker in ["OK_GET", "HOLDER", "KEEP_AGAIN"] {
        assert!(
            !lines.contains(&line(marker)),
            "{what}: {marker} named: {r:#}"
        );
    }
    if release.is_none() && !stripped {
        check_recording(pid, port, line("LEAK_GET"));
    }
    drop(service);
}

/// A recording of two more leaking `client.Get`s, exported and reported elsewhere: the joined
/// stack survives the file (its marker frame is an address of its own there).
fn check_recording(pid: u32, port: u16, leak_get: u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("go.fdtrace");
    attach_during_to(pid, &["record", "-d", "5"], &file, || {
        load_and_settle(Duration::from_secs(4), || {
            for _ in 0..2 {
                http_request(port, "GET", "/get", "");
            }
        })
    });
    let folded = dir.path().join("go.folded");
    let out = std::process::Command::new(fdtrace_bin())
        .arg("export")
        .arg(&file)
        .args(["--format", "folded", "-o"])
        .arg(&folded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(";[requested by goroutine ") && l.contains("main.get")),
        "{text}"
    );
    let r = report_of_a_copy(&file);
    let site = site_at(&r, "main.go", leak_get as u32)
        .unwrap_or_else(|| panic!("recording: no site at main.go:{leak_get}: {r:#}"));
    assert_eq!(site["count"], 2, "recording: {site:#}");
    split_at_marker(site);
}

/// What fdtrace reads of the binary: the release, the `runtime.g` layout of its DWARF equal to
/// the table's for that release (the table serves binaries without DWARF), and both probe points
/// (from `.gopclntab` when stripped).
fn check_layout(bin: &std::path::Path, release: Option<&str>, stripped: bool) {
    use fdtrace::go_runtime::{dwarf_layout_of, inspect, layout_of_version, parse_version};
    let go = inspect(bin).expect("a Go binary");
    if let Some(r) = release {
        assert_eq!(go.version, parse_version(&format!("go{r}")), "{go:?}");
    }
    let v = go.version.expect("the release in .go.buildinfo");
    assert!(go.request.is_some() && go.dial.is_some(), "{go:?}");
    assert_eq!(go.layout, layout_of_version(v), "Go {v:?}");
    if stripped {
        assert_eq!(dwarf_layout_of(bin), None, "stripped, yet DWARF");
    } else {
        let dwarf = dwarf_layout_of(bin).expect("runtime.g in the DWARF");
        assert_eq!(
            Some(dwarf),
            layout_of_version(v),
            "Go {v:?}: the table is wrong"
        );
    }
}

#[test]
fn go_system_release() {
    check_release(None, false);
}

#[test]
fn go_system_release_stripped() {
    check_release(None, true);
}

#[test]
fn go_1_21() {
    check_release(Some("1.21"), false);
}

#[test]
fn go_1_22() {
    check_release(Some("1.22"), false);
}

#[test]
fn go_1_23() {
    check_release(Some("1.23"), false);
}

#[test]
fn go_1_24() {
    check_release(Some("1.24"), false);
}

#[test]
fn go_1_24_stripped() {
    check_release(Some("1.24"), true);
}
