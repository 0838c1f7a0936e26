//! `fdtrace hooks`: one hook per event, the set asked for, and the trampolines taken wherever the
//! kernel takes them (the suites themselves run with either set: `FDTRACE_HOOKS`, see
//! `cargo xtask vmtest`).
use std::process::Command;

mod common;
use common::*;

/// `fdtrace hooks --hooks SET`: (exit status, the table's rows as (event, hook), stdout, stderr).
fn hooks(set: &str) -> (bool, Vec<(String, String)>, String, String) {
    let out = Command::new(fdtrace_bin())
        .args(["hooks", "--hooks", set])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rows = text
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().unwrap().to_string(),
                w.next().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (
        out.status.success(),
        rows,
        text,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A syscall's event is named by the syscall alone; the others by their tracepoint.
fn is_syscall(event: &str) -> bool {
    !event.contains(':')
}

#[test]
fn each_event_has_one_hook_from_the_set_asked_for() {
    let _serial = serial();
    require_root();
    let (ok, rows, text, err) = hooks("tracepoints");
    assert!(ok, "{err}");
    for event in ["openat", "socket", "accept4", "close", "connect", "clone"] {
        assert_eq!(rows.iter().filter(|r| r.0 == event).count(), 1, "{text}");
    }
    // The births and deaths outside the hooked syscalls: trampolines only.
    for event in ["fd_install", "io_uring_close"] {
        let row = rows.iter().find(|r| r.0 == event);
        assert_eq!(row.map(|r| r.1.as_str()), Some("none"), "{text}");
    }
    let syscalls = rows.iter().filter(|r| is_syscall(&r.0)).count();
    for (event, hook) in &rows {
        assert!(hook == "tracepoint" || hook == "none", "{event}: {text}");
    }
    let on_tracepoints = rows
        .iter()
        .filter(|r| is_syscall(&r.0) && r.1 == "tracepoint")
        .count();
    assert!(
        text.contains(&format!(
            "\n{on_tracepoints} syscalls are observed on their tracepoints"
        )),
        "{syscalls} {text}"
    );

    let (ok, auto, text, err) = hooks("auto");
    assert!(ok, "{err}");
    assert_eq!(
        auto.iter().map(|r| &r.0).collect::<Vec<_>>(),
        rows.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let trampolines = auto
        .iter()
        .filter(|r| r.1.starts_with("fentry") || r.1.starts_with("fexit"))
        .count();
    // Only syscalls take trampolines; the other events keep their tracepoints, TCP states
    // their raw one where the kernel's BTF is read (with the tracepoints' set: their record).
    for (event, hook) in &auto {
        if event == "sock:inet_sock_set_state" {
            let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
            assert_eq!(hook, if btf { "raw" } else { "tracepoint" }, "{text}");
        } else if !is_syscall(event) {
            assert_eq!(hook, "tracepoint", "{text}");
        }
    }
    let fallbacks = auto
        .iter()
        .filter(|r| is_syscall(&r.0) && r.1 == "tracepoint")
        .count();
    let (ok, forced, text_forced, err) = hooks("trampolines");
    if fallbacks == 0 {
        // Every syscall on a trampoline: no syscall tracepoint, and the forced set is the same.
        assert!(
            trampolines > 0 && text.contains("no syscall tracepoint is attached"),
            "{text}"
        );
        assert!(ok, "{err}");
        assert_eq!(forced, auto, "{text_forced}");
        // And the functions every birth and death goes through.
        let hook = |event: &str| auto.iter().find(|r| r.0 == event).map(|r| r.1.clone());
        assert_eq!(hook("fd_install").as_deref(), Some("fentry"), "{text}");
        assert_eq!(hook("io_uring_close").as_deref(), Some("fentry"), "{text}");
    } else {
        // This kernel refuses some (this development machine's 6.18 has no trampolines at all):
        // asking for trampolines only is one clear line (beside the warnings about syscalls
        // this kernel lacks, as in any trace).
        assert!(!ok, "{text_forced}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("fdtrace:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].starts_with("fdtrace: --hooks trampolines:"),
            "{err}"
        );
        assert!(
            err.lines()
                .all(|l| l.starts_with("fdtrace:") || l.contains("WARN")),
            "{err}"
        );
        eprintln!("{fallbacks} syscalls fall back to tracepoints here: {text}");
    }
}

#[test]
fn the_old_name_lists_the_tracepoints() {
    let _serial = serial();
    require_root();
    let out = Command::new(fdtrace_bin())
        .args(["tracepoints", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for tp in ["syscalls:sys_enter_close", "sched:sched_process_exit"] {
        assert!(text.lines().any(|l| l == tp), "{text}");
    }
}
