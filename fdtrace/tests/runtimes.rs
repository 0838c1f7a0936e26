//! Language runtimes: the program's own functions named in their language (Node.js from the
//! perf map `node --perf-basic-prof` writes), never the runtime's native code.
mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

/// (user frame's function, file basename) → count, over every site.
fn by_user_function(r: &Value) -> std::collections::BTreeMap<(String, String), u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in sites(r) {
        let key = match s["user_frame"].as_u64() {
            Some(i) => {
                let f = &s["frames"][i as usize];
                (
                    f["function"].as_str().unwrap_or("?").to_string(),
                    f["file"]
                        .as_str()
                        .and_then(|p| p.rsplit('/').next())
                        .unwrap_or("?")
                        .to_string(),
                )
            }
            None => ("(none)".to_string(), String::new()),
        };
        *m.entry(key).or_default() += s["count"].as_u64().unwrap();
    }
    m
}

/// Start `node ARGS leak.js N`, attach by pid, let it leak, and return the JSON report.
fn trace_node(node_args: &[&str], n: u32) -> Value {
    let mut child = Killed(
        Command::new("node")
            .args(node_args)
            .arg(source("leak.js"))
            .arg(n.to_string())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (Debian package nodejs; cargo xtask test installs it)"),
    );
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let json = attach_during(pid, &["--json", "-d", "8"], || {
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    });
    // The perf map node wrote, removed with the process.
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    drop(child);
    serde_json::from_str(&json).expect("JSON report")
}

#[test]
fn node_leak_named_at_its_javascript_function() {
    let _g = serial();
    require_root();
    // The second flag gives interpreted functions code of their own: named in the map too.
    let r = trace_node(
        &["--perf-basic-prof", "--interpreted-frames-native-stack"],
        60,
    );
    let counts = by_user_function(&r);
    eprintln!("{counts:?}");
    assert_eq!(
        counts.get(&("openJournal".to_string(), "leak.js".to_string())),
        Some(&60),
        "every leaked file at openJournal: {counts:?}"
    );
    assert_eq!(
        counts.values().sum::<u64>(),
        60,
        "nothing else leaked (readConfig closes its files): {counts:?}"
    );
    for s in sites(&r) {
        let i = s["user_frame"].as_u64().unwrap() as usize;
        for f in &s["frames"].as_array().unwrap()[..i] {
            // Below the program's frame: libc, libuv, V8, Node's C++ and its own JavaScript.
            assert!(
                f["module"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("/node") || m.contains("libc") || m == "[jit]"),
                "a frame below the user frame that is not the runtime's: {f}"
            );
        }
    }
    assert!(r["runtime_hint"].is_null());
    assert!(r["drift"]["missed_opens"].as_array().unwrap().is_empty());
    assert!(r["drift"]["missed_closes"].as_array().unwrap().is_empty());
}

#[test]
fn node_without_a_perf_map_says_how_to_get_names() {
    let _g = serial();
    require_root();
    let r = trace_node(&[], 30);
    let counts = by_user_function(&r);
    assert_eq!(
        counts.get(&("(none)".to_string(), String::new())),
        Some(&30),
        "libuv, V8 and Node's C++ are never the program's frame: {counts:?}"
    );
    assert!(
        r["runtime_hint"]
            .as_str()
            .is_some_and(|h| h.contains("--perf-basic-prof")),
        "{}",
        r["runtime_hint"]
    );
}
