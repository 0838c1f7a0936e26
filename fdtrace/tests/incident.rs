//! The incident of issue 4, reproduced and traced by pid: a Go service (standard library only,
//! `tests/programs/gosvc`) whose HTTP client has no timeout and never closes response bodies,
//! so its connections to an upstream (a second process) pile up in CLOSE_WAIT once the upstream
//! closes its side, and whose upload handler never closes the files it creates. fdtrace must
//! name the upload line with the exact count, find every upstream connection in CLOSE_WAIT with
//! the upstream's address and the CLOSE_WAIT hint, and never report the correct handler.
//!
//! The sockets: Go's net/http client dials in a goroutine of its own
//! (`net/http.(*Transport).dialConnFor`, started by `queueForDial`), so their creating stacks
//! end in the transport; fdtrace joins the stack of the goroutine that asked for the connection
//! (the handler's `client.Get`, LEAK_PROXY) behind a `[requested by goroutine N]` frame, and the
//! handler's line is the site's line. `tests/go_links.rs` covers the other ways a connection is
//! asked for, and the Go releases.
use std::{path::Path, time::Duration};

use serde_json::Value;

mod common;
use common::*;

/// `uploads` uploads, `proxies` proxied requests and `oks` correct requests, interleaved.
fn load(port: u16, uploads: usize, proxies: usize, oks: usize) {
    for i in 0..uploads.max(proxies).max(oks) {
        if i < uploads {
            http_request(port, "POST", "/upload", &format!("upload {i}\n"));
        }
        if i < proxies {
            let r = http_request(port, "GET", "/proxy", "");
            assert!(r.contains("upstream said 200 OK"), "{r}");
        }
        if i < oks {
            http_request(port, "GET", "/ok", "");
        }
    }
}

/// The socket groups of a site: (count, peer, state, proto, accepted).
fn groups(site: &Value) -> Vec<(u64, String, String, String, bool)> {
    site["sockets"]
        .as_array()
        .unwrap_or_else(|| panic!("no socket groups: {site:#}"))
        .iter()
        .map(|g| {
            (
                g["count"].as_u64().unwrap(),
                g["peer"].as_str().unwrap_or("").to_string(),
                g["state"].as_str().unwrap_or("").to_string(),
                g["proto"].as_str().unwrap().to_string(),
                g["accepted"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn frame_functions(site: &Value) -> Vec<&str> {
    site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("??"))
        .collect()
}

#[test]
fn go_service_leaking_uploads_and_close_wait_sockets() {
    let _serial = serial();
    require_root();
    let build = tempfile::tempdir().unwrap();
    let bin = go_build("gosvc", build.path());
    let data = tempfile::tempdir().unwrap();
    let main_go = "gosvc/main.go";
    let leak_upload = u64::from(line_of(main_go, "LEAK_UPLOAD"));
    let leak_proxy = u64::from(line_of(main_go, "LEAK_PROXY"));
    let ok_file = u64::from(line_of(main_go, "OK_FILE"));

    let (_upstream, up_port) = start_server(&bin, &["-upstream".as_ref()]);
    let up_addr = format!("127.0.0.1:{up_port}");
    let (service, port) = start_server(
        &bin,
        &[
            "-upstream-addr".as_ref(),
            up_addr.as_ref(),
            "-dir".as_ref(),
            data.path().as_os_str(),
        ],
    );
    let pid = service.0.id();

    // The incident, traced from the outside while it happens.
    let json = attach_during(pid, &["--json", "-d", "8"], || {
        load_and_settle(Duration::from_secs(7), || load(port, 25, 30, 20))
    });
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["lost_events"], 0, "{r:#}");
    for k in ["missed_opens", "missed_closes", "cloexec_mismatches"] {
        assert_eq!(r["drift"][k], Value::Array(vec![]), "drift {k}: {r:#}");
    }
    // Every request was seen: 75 accepted connections (all closed again), 25 uploads, 30
    // upstream connections and 20 correct files (closed).
    assert_eq!(r["model"]["opens"], 150, "{r:#}");
    assert_eq!(r["model"]["closes"], 95, "{r:#}");
    assert_eq!(r["failed_opens"], Value::Array(vec![]), "{r:#}");
    // Exactly the two leaks, nothing of the runtime, the server or the correct handler.
    assert_eq!(sites(&r).len(), 2, "{r:#}");

    // The uploads: the exact line, the exact count.
    let uploads = sites(&r)
        .iter()
        .find(|s| user_line(s) == Some(("main.go".into(), leak_upload)))
        .unwrap_or_else(|| panic!("no site at main.go:{leak_upload}: {r:#}"));
    assert_eq!(
        user_frame(uploads),
        Some(("main.go".into(), leak_upload, "main.upload".into()))
    );
    assert_eq!(uploads["count"], 25, "{uploads:#}");
    assert_eq!(uploads["kind"], "file", "{uploads:#}");
    assert_eq!(uploads["method"], "fp", "{uploads:#}");
    assert_eq!(uploads["truncated"], false, "{uploads:#}");
    for f in uploads["fds"].as_array().unwrap() {
        let target = Path::new(f["target"].as_str().unwrap());
        assert_eq!(target.parent(), Some(data.path()), "{f:#}");
        assert!(
            target.to_str().unwrap().ends_with(".bin"),
            "not an upload: {f:#}"
        );
    }

    // The upstream connections: all 30 in CLOSE_WAIT, to the upstream, with the hint.
    let conns = sites(&r)
        .iter()
        .find(|s| s["kind"] == "socket")
        .unwrap_or_else(|| panic!("no socket site: {r:#}"));
    assert_eq!(conns["count"], 30, "{conns:#}");
    assert_eq!(
        groups(conns),
        vec![(
            30,
            up_addr.clone(),
            "CLOSE_WAIT".into(),
            "tcp".into(),
            false
        )],
        "{conns:#}"
    );
    assert!(
        conns["hint"]
            .as_str()
            .is_some_and(|h| h.starts_with("CLOSE_WAIT: the peer closed")),
        "{conns:#}"
    );
    for f in conns["fds"].as_array().unwrap() {
        assert_eq!(f["state"], "CLOSE_WAIT", "{f:#}");
        assert_eq!(f["peer"], up_addr.as_str(), "{f:#}");
        assert!(
            f["local"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{f:#}"
        );
    }
    assert_eq!(
        r["tcp_states"],
        // The service's own listener was open before tracing: described from /proc/PID/net.
        serde_json::json!({"CLOSE_WAIT": 30, "LISTEN": 1}),
        "{r:#}"
    );
    // Created in net/http's dialing goroutine, asked for by the handler's goroutine: the
    // dialer's whole stack, the marker, then the handler's stack down to its goroutine's root.
    assert_eq!(
        user_frame(conns),
        Some(("main.go".into(), leak_proxy, "main.proxy".into())),
        "{conns:#}"
    );
    assert_eq!(conns["method"], "fp", "{conns:#}");
    assert_eq!(conns["truncated"], false, "{conns:#}");
    let funcs = frame_functions(conns);
    let marker = funcs
        .iter()
        .position(|f| f.starts_with("[requested by goroutine "))
        .unwrap_or_else(|| panic!("no requester: {conns:#}"));
    let (dialer, requester) = funcs.split_at(marker);
    assert!(
        dialer.contains(&"net/http.(*Transport).dialConn"),
        "{conns:#}"
    );
    assert_eq!(dialer.last(), Some(&"runtime.goexit"), "{conns:#}");
    assert!(!dialer.iter().any(|f| f.starts_with("main.")), "{conns:#}");
    assert!(requester.contains(&"main.proxy"), "{conns:#}");
    assert_eq!(requester.last(), Some(&"runtime.goexit"), "{conns:#}");

    // The correct handler never appears.
    let lines = lines_in(&r, main_go);
    assert!(!lines.contains(&ok_file), "OK_FILE reported: {r:#}");

    // Attached again later, with the text report: the first round's leaks are pre-existing now,
    // the new ones are grouped as before.
    let text = attach_during(pid, &["-d", "6"], || {
        load_and_settle(Duration::from_secs(5), || load(port, 3, 5, 2))
    });
    let expect = [
        format!(
            // (A verdict may follow on the same line.)
            "3 files still open, opened by main.upload at {}:{leak_upload}",
            source(main_go).display()
        ),
        format!(
            "\n5 sockets still open, opened by main.proxy at {}:{leak_proxy}",
            source(main_go).display()
        ),
        format!("\n    5 tcp sockets to {up_addr} in CLOSE_WAIT, oldest "),
        "\n    hint: CLOSE_WAIT: the peer closed these connections and this process never did"
            .to_string(),
        "net/http.(*Transport).dialConn at ".to_string(),
        // The first round's 30 sockets are pre-existing now, described from /proc/PID/net and
        // grouped, like the new ones, by peer and state.
        "TCP sockets: 35 CLOSE_WAIT, 1 LISTEN\n".to_string(),
        format!("\n  30 tcp sockets to {up_addr} in CLOSE_WAIT; e.g. fd "),
        format!(" -> {up_addr} CLOSE_WAIT\n"),
        format!(
            "      look like the leak opened by main.proxy at {}:{leak_proxy} (same peer and \
             state; 5 more opened there while traced)\n",
            source(main_go).display()
        ),
        "lost events: 0\n".to_string(),
        "no drift\n".to_string(),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "no {e:?} in:\n{text}");
    }
    assert!(!text.contains(&format!("main.go:{ok_file}\n")), "{text}");
    // The service and the upstream are killed by pid as they go out of scope.
    drop(service);
}
