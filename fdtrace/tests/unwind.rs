//! Privileged end-to-end tests of stack unwinding (`--unwind auto|fp|dwarf`): a Rust release
//! build without frame pointers (DWARF CFI over the stack copy) and a Go program (the kernel's
//! frame-pointer walk). Real fdtrace binary, real eBPF programs, programs that leak at marked
//! lines. They need root, `rustc` and `go` (Debian: golang-go), and fail, rather than skip,
//! without them.
use std::{path::PathBuf, process::Command, sync::OnceLock};

use serde_json::Value;

mod common;
use common::{
    assert_goleak_40, fdtrace, fdtrace_text, go_build, lines_in, prebuilt, require_root, serial,
    sites, source, trace_leaker_by_pid, user_frame,
};

/// Line of the marker comment in a test program.
fn line_of(file: &str, marker: &str) -> u64 {
    common::line_of(file, marker).into()
}

struct Built {
    dir: tempfile::TempDir,
    rust: PathBuf,
    go: PathBuf,
}

static BUILT: OnceLock<Built> = OnceLock::new();

/// Statics are never dropped: remove the build directory when the test binary exits.
extern "C" fn remove_built() {
    if let Some(b) = BUILT.get() {
        let _ = std::fs::remove_dir_all(b.dir.path());
    }
}

/// The test programs, built once into a temporary directory (removed at exit, with the
/// caches the Go build used).
fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: registers a plain function that only removes files.
        unsafe { libc::atexit(remove_built) };
        // A release build without frame pointers: only DWARF CFI finds the callers.
        let flags = ["-C", "opt-level=2", "-C", "force-frame-pointers=no", "-g"];
        let rust = prebuilt("rustc", &flags, "rustleak").unwrap_or_else(|| {
            let rust = dir.path().join("rustleak");
            let st = Command::new("rustc")
                .args(flags)
                .arg("-o")
                .arg(&rust)
                .arg(source("rustleak.rs"))
                .status()
                .expect("rustc");
            assert!(st.success(), "rustc failed");
            rust
        });
        // Go, with its caches and settings confined to the temporary directory.
        let go = go_build("goleak", dir.path());
        Built { dir, rust, go }
    })
}

/// Sites whose user frame is in `file`: ((line, function), count), sorted.
fn counts_in(r: &Value, file: &str) -> Vec<((u64, String), u64)> {
    let mut v: Vec<_> = sites(r)
        .iter()
        .filter_map(|s| {
            let (f, line, func) = user_frame(s)?;
            (f == file).then(|| ((line, func), s["count"].as_u64().unwrap()))
        })
        .collect();
    v.sort();
    v
}

fn assert_no_drift(r: &Value) {
    assert_eq!(r["lost_events"], 0, "{r:#}");
    assert_eq!(r["drift"]["missed_opens"], Value::Array(vec![]), "{r:#}");
    assert_eq!(r["drift"]["missed_closes"], Value::Array(vec![]), "{r:#}");
}

/// The exact leaks of `rustleak 40`, unwound with DWARF CFI.
fn assert_rustleak_40(r: &Value) {
    let leak = line_of("rustleak.rs", "LEAK_RUST");
    assert_eq!(
        counts_in(r, "rustleak.rs"),
        vec![((leak, "rustleak::leak_file".to_string()), 40)],
        "{r:#}"
    );
    let ok = line_of("rustleak.rs", "OK_RUST");
    assert!(
        !lines_in(r, "rustleak.rs").contains(&ok),
        "correct line {ok} reported: {r:#}"
    );
    for s in sites(r) {
        assert_eq!(s["method"], "dwarf", "{s:#}");
        assert_eq!(s["kind"], "file", "{s:#}");
    }
    // The std frames between open() and the program are library frames, and the unwinding went
    // on past the leaking function to its caller.
    let site = &sites(r)[0];
    let frames = site["frames"].as_array().unwrap();
    let i = site["user_frame"].as_u64().unwrap() as usize;
    assert!(
        frames[..i].iter().any(|f| f["function"]
            .as_str()
            .is_some_and(|x| x.contains("std::fs::File::create"))),
        "{site:#}"
    );
    assert!(
        frames[i + 1..]
            .iter()
            .any(|f| f["function"] == "rustleak::main"),
        "{site:#}"
    );
}

#[test]
fn rust_release_build_without_frame_pointers_names_the_leaking_line() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-d", "3", "--"],
        &[built().rust.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_rustleak_40(&r.json);
    assert_no_drift(&r.json);
}

/// Start a program that waits 1.5 s, leaks, prints "done" and waits to be killed; trace it by
/// pid with `args`; return the report once the program said "done".
#[test]
fn rust_program_traced_by_pid() {
    let _serial = serial();
    require_root();
    let json = trace_leaker_by_pid(&built().rust, 40, &["-d", "4"], |_| {});
    assert_rustleak_40(&json);
    assert_no_drift(&json);
}

#[test]
fn go_program_is_unwound_with_frame_pointers() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["-d", "3", "--"],
        &[built().go.as_os_str(), "40".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_goleak_40(&r.json, "fp");
    assert_no_drift(&r.json);
    // net.Dial's frames take more than the 2 KiB stack copy; the frame-pointer walk reaches the
    // caller anyway.
    let dial = line_of("goleak/main.go", "LEAK_GO_DIAL");
    assert!(
        counts_in(&r.json, "main.go").contains(&((dial, "main.leakDial".to_string()), 1)),
        "{:#}",
        r.json
    );
    assert!(
        sites(&r.json).iter().all(|s| s["truncated"] == false),
        "{:#}",
        r.json
    );
}

#[test]
fn go_program_traced_by_pid_is_recognized_as_go() {
    let _serial = serial();
    require_root();
    let json = trace_leaker_by_pid(&built().go, 40, &["-d", "4"], |_| {});
    assert_goleak_40(&json, "fp");
    assert_no_drift(&json);
}

#[test]
fn go_program_with_dwarf_unwinding_and_a_stack_cut_short() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let args = ["--unwind", "dwarf", "-d", "3", "--"];
    let extra = [built().go.as_os_str(), "40".as_ref()];
    let env = [("LEAKY_DIR", data.path())];
    let r = fdtrace(&args, &extra, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Go's own (compressed) .debug_frame serves as CFI; the file leaks fit in the stack copy.
    assert_goleak_40(&r.json, "dwarf");
    assert_no_drift(&r.json);
    // net.Dial does not fit in the 2 KiB copy: that stack is marked as cut short.
    let dial = line_of("goleak/main.go", "LEAK_GO_DIAL");
    assert!(
        !lines_in(&r.json, "goleak/main.go").contains(&dial),
        "{:#}",
        r.json
    );
    assert!(
        sites(&r.json)
            .iter()
            .any(|s| s["truncated"] == true && s["user_frame"].is_null()),
        "{:#}",
        r.json
    );
    // The text report says how each stack was unwound and which was cut short.
    let data2 = tempfile::tempdir().unwrap();
    let text = fdtrace_text(&args, &extra, &[("LEAKY_DIR", data2.path())]);
    assert!(text.contains("unwound with DWARF CFI (dwarf)"), "{text}");
    assert!(!text.contains("(fp)"), "{text}");
    assert!(text.contains("(stack cut short)"), "{text}");
    let text = fdtrace_text(&["-d", "2", "--"], &extra, &[("LEAKY_DIR", data2.path())]);
    assert!(text.contains("unwound with frame pointers (fp)"), "{text}");
    assert!(!text.contains("(stack cut short)"), "{text}");
}

#[test]
fn forced_frame_pointers_on_a_rust_program_say_so() {
    let _serial = serial();
    require_root();
    let data = tempfile::tempdir().unwrap();
    let r = fdtrace(
        &["--unwind", "fp", "-d", "2", "--"],
        &[built().rust.as_os_str(), "4".as_ref()],
        &[("LEAKY_DIR", data.path())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // glibc's open() uses rbp as a general register: a frame-pointer walk through it cannot be
    // trusted, but every site says which method produced it.
    assert!(!sites(&r.json).is_empty(), "{:#}", r.json);
    for s in sites(&r.json) {
        assert_eq!(s["method"], "fp", "{s:#}");
    }
    assert_no_drift(&r.json);
}
