//! Privileged end-to-end tests of `fdtrace export`, `fdtrace report --timeline` and
//! `fdtrace diff` on recordings of leaky.c.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

mod common;
use common::*;

fn record(file: &Path, args: &[&str], leaky_args: &[&str], data: &Path) {
    let out = Command::new(fdtrace_bin())
        .arg("record")
        .arg("-o")
        .arg(file)
        .args(args)
        .arg("--")
        .arg(&built().fp)
        .args(leaky_args)
        .env("LEAKY_DIR", data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(args: &[&OsStr]) -> Output {
    let out = Command::new(fdtrace_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fdtrace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn export(file: &Path, format: &str, out: &Path) {
    run(&[
        "export".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
}

/// A recording of `leaky 40`, made once per test binary.
fn leaky_40() -> &'static Path {
    static REC: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &REC.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let file = dir.path().join("leaky40.fdtrace");
        record(&file, &["-d", "2"], &["40"], data.path());
        (dir, file)
    })
    .1
}

fn is_well_formed_xml(text: &str) -> Result<usize, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0i64;
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("at {}: {e}", reader.buffer_position())),
        }
        if depth < 0 {
            return Err("more end tags than start tags".into());
        }
    }
    if depth != 0 {
        return Err(format!("{depth} elements not closed"));
    }
    Ok(elements)
}

#[test]
fn pprof_profile_opens_in_go_tool_pprof() {
    let _serial = serial();
    require_root();
    let file = leaky_40();
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("leaky.pb.gz");
    export(file, "pprof", &prof);
    let bytes = std::fs::read(&prof).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&prof)
        .env("HOME", home.path())
        .env("GOCACHE", home.path().join("cache"))
        .env("PPROF_TMPDIR", home.path())
        .env_remove("PPROF_BINARY_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("go (Debian: golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(text.contains("Type: descriptors"), "{text}\n{err}");
    // 50 descriptors open at the end of the traced ones: 40 from leak_file, 10 from
    // leak_stream; the 3 standard streams were open before.
    let line = text
        .lines()
        .find(|l| l.trim_end().ends_with(" leak_file"))
        .unwrap_or_else(|| panic!("no leak_file in:\n{text}\n{err}"));
    let cum: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cum[3], "40", "cumulative count of leak_file: {line}");
    assert!(text.contains(" leak_stream"), "{text}");
    assert!(
        !text.contains("OK_OPEN") && !text.contains("read_correctly"),
        "{text}"
    );
    // -traces shows the labels.
    let out = Command::new("go")
        .args(["tool", "pprof", "-traces"])
        .arg(&prof)
        .env("HOME", home.path())
        .env("GOCACHE", home.path().join("cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let traces = String::from_utf8_lossy(&out.stdout);
    let labels: Vec<Vec<&str>> = traces
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(labels.contains(&vec!["kind:", "file"]), "{traces}");
    assert!(text.starts_with("File: leaky"), "{text}");
}

#[test]
fn folded_stacks_and_flame_graph() {
    let _serial = serial();
    require_root();
    let file = leaky_40();
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("leaky.folded");
    export(file, "folded", &folded);
    let text = std::fs::read_to_string(&folded).unwrap();
    let leak = line_of("leaky.c", "LEAK_OPEN");
    let want = format!("leak_file leaky.c:{leak};");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&want)).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].ends_with(" 40"), "{text}");
    // Root first: main before leak_file, the libc open last.
    let frames: Vec<&str> = lines[0].rsplit_once(' ').unwrap().0.split(';').collect();
    let at = |name: &str| frames.iter().position(|f| f.starts_with(name));
    assert!(
        at("main ").unwrap() < at("leak_file ").unwrap(),
        "{frames:?}"
    );
    assert!(frames.last().unwrap().contains("open"), "{frames:?}");
    for l in text.lines() {
        let (_, n) = l.rsplit_once(' ').unwrap();
        n.parse::<u64>().unwrap_or_else(|_| panic!("count of {l}"));
    }
    let fleak = line_of("leaky.c", "LEAK_FOPEN");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("leak_stream leaky.c:{fleak};")) && l.ends_with(" 10")),
        "{text}"
    );

    let svg = dir.path().join("leaky.svg");
    export(file, "svg", &svg);
    let svg = std::fs::read_to_string(&svg).unwrap();
    let elements = is_well_formed_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(elements > 10, "{svg}");
    assert!(svg.contains("<svg"));
    assert!(svg.contains("leak_file"), "{svg}");
}

#[test]
fn jsonl_has_the_header_and_every_record() {
    let _serial = serial();
    require_root();
    let file = leaky_40();
    let out = run(&[
        "export".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objects[0]["type"], "Header", "{}", objects[0]);
    assert!(objects[0]["start_monotonic_ns"].is_u64());
    let count = |t: &str| objects.iter().filter(|o| o["type"] == t).count();
    // 40 + 10 leaked, 40 + 40 opened and closed correctly.
    assert!(count("Open") >= 130, "{} opens", count("Open"));
    assert!(count("Close") >= 80, "{} closes", count("Close"));
    assert_eq!(count("Header"), 1);
    assert_eq!(count("End"), 1);
    assert!(count("Stack") >= 2 && count("Symbols") >= 2);
    let open = objects.iter().find(|o| o["type"] == "Open").unwrap();
    for k in ["ts_ns", "tgid", "fd", "target", "stack"] {
        assert!(open.get(k).is_some(), "{open}");
    }
}

#[test]
fn timeline_shows_a_leak_growing() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.fdtrace");
    // 40 rounds 40 ms apart after 300 ms: the leaks grow for 1.6 s.
    record(&file, &["-d", "3"], &["40", "300", "0", "40"], data.path());
    let out = run(&[
        "report".as_ref(),
        file.as_os_str(),
        "--timeline".as_ref(),
        "--json".as_ref(),
    ]);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: Vec<u64> = t["total"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(total.first(), Some(&0), "{t:#}");
    assert_eq!(total.last(), Some(&50), "{t:#}");
    let sites = t["sites"].as_array().unwrap();
    let counts = |s: &Value| -> Vec<u64> {
        s["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    // The leaking sites only go up (the total may catch a correct open before its close).
    for s in sites {
        let c = counts(s);
        assert_eq!(c.len(), total.len());
        assert!(c.windows(2).all(|w| w[0] <= w[1]), "{c:?}");
    }
    // Gradual: many different values on the way.
    let mut distinct = counts(&sites[0]);
    distinct.dedup();
    assert!(distinct.len() >= 10, "{distinct:?}");
    assert_eq!(sites.len(), 2, "{t:#}");
    assert_eq!(sites[0]["function"], "leak_file");
    assert_eq!(sites[0]["line"], line_of("leaky.c", "LEAK_OPEN"));
    assert_eq!(sites[0]["counts"].as_array().unwrap().last().unwrap(), 40);
    assert_eq!(sites[1]["function"], "leak_stream");
    assert_eq!(sites[1]["counts"].as_array().unwrap().last().unwrap(), 10);
    let times = t["times_s"].as_array().unwrap();
    assert_eq!(times.len(), total.len());
    assert!(times.last().unwrap().as_f64().unwrap() > 1.9, "{t:#}");

    // The table, and the chart.
    let html = dir.path().join("timeline.html");
    let out = run(&[
        "report".as_ref(),
        file.as_os_str(),
        "--timeline".as_ref(),
        "--html".as_ref(),
        html.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let leak = line_of("leaky.c", "LEAK_OPEN");
    assert!(
        text.contains(&format!("#1 leak_file leaky.c:{leak}: 0 -> 40, only grew")),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 4 && w[0].ends_with('s') && w[0].parse::<f64>().is_err())
        .collect();
    assert!(rows.len() >= 10, "{text}");
    assert_eq!(rows[0][1..], ["0", "0", "0"], "{text}");
    assert_eq!(rows.last().unwrap()[1..], ["50", "40", "10"], "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg") && page.contains("</svg>"));
    assert!(page.contains("<polyline"));
    assert!(page.contains(&format!("leak_file leaky.c:{leak}")));
    let lower = page.to_lowercase();
    for bad in [
        "src=\"http://",
        "src=\"https://",
        "src='http",
        "href=\"http",
        "<link",
        "<script",
        "@import",
    ] {
        assert!(!lower.contains(bad), "{bad} in the page");
    }
    // The SVG part is well-formed XML.
    let svg = &page[page.find("<svg").unwrap()..page.find("</svg>").unwrap() + 6];
    is_well_formed_xml(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
}

#[test]
fn diff_names_the_site_that_grew() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.fdtrace");
    record(&a, &["-d", "1.5"], &["10"], data.path());
    let b = leaky_40();
    let out = run(&[
        "diff".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--json".as_ref(),
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sites = d["sites"].as_array().unwrap();
    let leak = line_of("leaky.c", "LEAK_OPEN");
    assert_eq!(sites[0]["function"], "leak_file", "{d:#}");
    assert_eq!(sites[0]["line"], leak);
    assert_eq!(
        (
            &sites[0]["count_a"],
            &sites[0]["count_b"],
            &sites[0]["delta"]
        ),
        (&Value::from(10), &Value::from(40), &Value::from(30)),
        "{d:#}"
    );
    // leak_stream: every 4th round, 3 then 10.
    assert_eq!(sites[1]["function"], "leak_stream", "{d:#}");
    assert_eq!(sites[1]["delta"], 7);
    assert_eq!(
        (&d["total_a"], &d["total_b"]),
        (&Value::from(13), &Value::from(50))
    );
    let out = run(&["diff".as_ref(), a.as_os_str(), b.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text
        .lines()
        .find(|l| l.contains("leak_file"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        first.split_whitespace().take(3).collect::<Vec<_>>(),
        ["10", "40", "+30"],
        "{text}"
    );
    assert!(first.contains(&format!("leaky.c:{leak}")), "{text}");
    // The other way round, the site shrank.
    let out = run(&[
        "diff".as_ref(),
        b.as_os_str(),
        a.as_os_str(),
        "--json".as_ref(),
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = d["sites"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["function"], &last["delta"]),
        (&Value::from("leak_file"), &Value::from(-30))
    );
}
