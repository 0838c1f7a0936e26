//! Language runtimes: the program's own functions named in their language (Python from the
//! interpreter's frames, with lines; Java from the perf map fdtrace asks the JVM for (compiled
//! methods) and from the JVM's own structures (interpreted ones, with lines); Node.js
//! from the perf map `node --perf-basic-prof` writes), never the runtime's native code.
mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

/// Start `cmd` (a program that prints "ready", waits for a line, leaks, prints "done" and waits
/// again), attach to it by pid for `secs` seconds while it leaks, end it, and return the JSON
/// report. The perf map a runtime wrote is removed with it.
fn trace_ready(cmd: Command, secs: u32) -> Value {
    trace_ready_map(cmd, secs).0
}

/// [`trace_ready`], and whether the program had written a perf map (`/tmp/perf-PID.map`).
fn trace_ready_map(cmd: Command, secs: u32) -> (Value, bool) {
    trace_ready_in(cmd, secs, std::path::Path::new("/tmp"))
}

/// [`trace_ready_map`] for a program whose `/tmp` is `tmp` (in a root of its own).
fn trace_ready_in(mut cmd: Command, secs: u32, tmp: &std::path::Path) -> (Value, bool) {
    let program = format!("{:?}", cmd.get_program());
    let mut child = Killed(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")),
    );
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let json = attach_during(pid, &["--json", "-d", &secs.to_string()], || {
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    });
    let map = std::fs::remove_file(tmp.join(format!("perf-{pid}.map"))).is_ok();
    drop(child);
    (serde_json::from_str(&json).expect("JSON report"), map)
}

/// A listener on loopback that accepts every connection and keeps it open until dropped (so a
/// client's socket stays open only as long as the client keeps it).
struct Holder {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Holder {
    fn new() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            held.len()
        });
        Holder {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start `node ARGS leak.js N PORT` (its sockets connect to a listener of the test's), attach
/// by pid, let it leak, and return the JSON report. The log V8 writes with `--perf-basic-prof`
/// (`isolate-*-PID-v8.log`, in node's working directory) is removed.
fn trace_node(node_args: &[&str], n: u32) -> Value {
    let holder = Holder::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("node");
    cmd.args(node_args)
        .arg(source("leak.js"))
        .arg(n.to_string())
        .arg(holder.port.to_string())
        .current_dir(dir.path());
    let r = trace_ready(cmd, 8);
    drop(holder);
    r
}

/// Frames below a Node.js site's user frame: libc, libuv, V8, Node's C++ and its own JavaScript,
/// or the marker of a socket joined to the JavaScript that asked for it.
fn assert_runtime_frames_below_the_user_frame(r: &Value) {
    for s in sites(r) {
        let i = s["user_frame"].as_u64().unwrap() as usize;
        for f in &s["frames"].as_array().unwrap()[..i] {
            let runtime = f["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("/node") || m.contains("libc") || m == "[jit]");
            let marker = f["module"].is_null() && f["function"] == "[socket requested by]";
            assert!(
                runtime || marker,
                "a frame below the user frame that is not the runtime's: {f}"
            );
        }
    }
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
    let counts = by_user_line(&r);
    eprintln!("{counts:?}");
    assert_eq!(
        counts.get(&("openJournal".to_string(), "leak.js".to_string(), 0)),
        Some(&60),
        "every leaked file at openJournal: {counts:?}"
    );
    // Each socket is created a tick after `net.connect` returned, with none of the program's
    // frames on the stack: named by the JavaScript that made its handle.
    assert_eq!(
        counts.get(&("subscribe".to_string(), "leak.js".to_string(), 0)),
        Some(&60),
        "every leaked socket at subscribe: {counts:?}"
    );
    assert_eq!(
        counts.values().sum::<u64>(),
        120,
        "nothing else leaked (readConfig closes its files, ping its sockets): {counts:?}"
    );
    for s in sites(&r) {
        let i = s["user_frame"].as_u64().unwrap() as usize;
        let joined = s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["function"] == "[socket requested by]");
        let is_socket = s["frames"][i]["function"] == "subscribe";
        assert_eq!(
            joined.is_some_and(|j| j < i),
            is_socket,
            "only sockets are joined, below their user frame: {}",
            site_summary(&r)
        );
    }
    assert_runtime_frames_below_the_user_frame(&r);
    assert!(r["runtime_hint"].is_null());
    assert!(r["drift"]["missed_opens"].as_array().unwrap().is_empty());
    assert!(r["drift"]["missed_closes"].as_array().unwrap().is_empty());
}

#[test]
fn node_without_a_perf_map_says_how_to_get_names() {
    let _g = serial();
    require_root();
    let r = trace_node(&[], 30);
    let counts = by_user_line(&r);
    let none: u64 = counts
        .iter()
        .filter(|(k, _)| k.0.starts_with("(none"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        none, 60,
        "libuv, V8, Node's C++ and a joined socket's marker are never the program's frame: {counts:?}"
    );
    assert!(
        r["runtime_hint"]
            .as_str()
            .is_some_and(|h| h.contains("--perf-basic-prof")),
        "{}",
        r["runtime_hint"]
    );
}

/// Each site's count and frames (function, line, module), for a failure's message.
fn site_summary(r: &Value) -> String {
    let mut out = String::new();
    for s in sites(r) {
        out += &format!("\n{} at {}:", s["count"], s["user_frame"]);
        for f in s["frames"].as_array().unwrap() {
            let inlined = if f["inlined"] == true {
                " (inlined)"
            } else {
                ""
            };
            out += &format!(
                "\n    {} {} {}{inlined}",
                f["function"], f["line"], f["module"]
            );
        }
    }
    out
}

/// (user frame's function, file basename, line or 0) → count, over every site ("?": no file).
fn by_user_line(r: &Value) -> std::collections::BTreeMap<(String, String, u64), u64> {
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
                    f["line"].as_u64().unwrap_or(0),
                )
            }
            // How its stack was had: "shed" for a birth sent without its stack.
            None => (
                format!("(none: {})", s["method"].as_str().unwrap_or("?")),
                String::new(),
                0,
            ),
        };
        *m.entry(key).or_default() += s["count"].as_u64().unwrap();
    }
    m
}

/// The count at `function` on the line of program `file` marked with `marker`.
fn count_at(
    counts: &std::collections::BTreeMap<(String, String, u64), u64>,
    function: &str,
    file: &str,
    marker: &str,
) -> Option<u64> {
    let key = (
        function.to_string(),
        file.to_string(),
        line_in(file, marker),
    );
    counts.get(&key).copied()
}

/// The line of program `file` marked with `marker`.
fn line_in(file: &str, marker: &str) -> u64 {
    let text = std::fs::read_to_string(source(file)).unwrap();
    text.lines().position(|l| l.contains(marker)).unwrap() as u64 + 1
}

/// Start `PYTHON leak.py N`, attach by pid, let it leak, and return the JSON report.
fn trace_python(python: &std::path::Path, n: u32) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(source("leak.py")).arg(n.to_string());
    trace_ready(cmd, 6)
}

/// The leaks of `leak.py` under `python`: each at its Python line, nothing else.
fn python_leaks_named_at_their_lines(python: &std::path::Path) {
    let n = 40;
    let r = trace_python(python, n);
    let counts = by_user_line(&r);
    eprintln!("{}: {counts:?}", python.display());
    let at = |function: &str, marker: &str| count_at(&counts, function, "leak.py", marker);
    assert_eq!(
        at("Journal.open", "LEAK: file"),
        Some(n as u64),
        "{counts:?}"
    );
    assert_eq!(at("dial", "LEAK: socket"), Some(n as u64), "{counts:?}");
    // In a thread of its own: its frames are found by its thread id.
    assert_eq!(
        at("make_pipe", "LEAK: pipe"),
        Some(2 * n as u64),
        "{counts:?}"
    );
    assert_eq!(
        counts.len(),
        3,
        "nothing else leaked (read_config and the server close theirs): {counts:?}"
    );
    assert_eq!(
        sites(&r).len(),
        3,
        "one site per Python line, however CPython's C code reached the syscall"
    );
    for s in sites(&r) {
        let i = s["user_frame"].as_u64().unwrap() as usize;
        for f in &s["frames"].as_array().unwrap()[..i] {
            // Below the program's frame: libc, CPython's C code, the standard library's Python
            // and native modules (`lib-dynload`).
            let m = f["module"].as_str().unwrap_or("");
            assert!(
                m == "python"
                    || m.contains("libc")
                    || m.contains("/lib/python3.")
                    || m.rsplit('/')
                        .next()
                        .is_some_and(|b| b.starts_with("python3") || b.starts_with("libpython")),
                "a frame below the user frame that is not the runtime's: {f}"
            );
            if m == "python" {
                assert!(
                    f["file"]
                        .as_str()
                        .is_some_and(|p| p.contains("/lib/python3"))
                );
            }
        }
    }
    assert!(r["runtime_hint"].is_null(), "{}", r["runtime_hint"]);
    assert!(r["drift"]["missed_opens"].as_array().unwrap().is_empty());
    assert!(r["drift"]["missed_closes"].as_array().unwrap().is_empty());
}

#[test]
fn python_3_11_leaks_named_at_their_lines() {
    let _g = serial();
    require_root();
    // Debian bookworm's python3 (cargo xtask test installs it).
    python_leaks_named_at_their_lines(std::path::Path::new("/usr/bin/python3.11"));
}

/// A pyenv build of CPython `version` (this machine's image has 3.12 and 3.13; Debian
/// bookworm packages only 3.11).
fn pyenv_python(version: &str) -> std::path::PathBuf {
    let roots = [
        std::env::var("PYENV_ROOT").ok(),
        std::env::var("HOME").ok().map(|h| format!("{h}/.pyenv")),
        Some("/root/.pyenv".to_string()),
    ];
    for root in roots.into_iter().flatten() {
        let Ok(dir) = std::fs::read_dir(format!("{root}/versions")) else {
            continue;
        };
        let mut found: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{version}.")))
            })
            .map(|p| p.join(format!("bin/python{version}")))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return p;
        }
    }
    panic!("CPython {version} is not installed (pyenv install {version})");
}

#[test]
fn python_3_12_leaks_named_at_their_lines() {
    let _g = serial();
    require_root();
    python_leaks_named_at_their_lines(&pyenv_python("3.12"));
}

#[test]
fn python_3_13_leaks_named_at_their_lines() {
    let _g = serial();
    require_root();
    python_leaks_named_at_their_lines(&pyenv_python("3.13"));
}

/// `Leak.java` compiled into a temporary directory.
/// `Leak.java` compiled (by the machine's JDK 17, whose class files JDK 21 runs too) into a new
/// directory under `within`.
fn java_classes(within: &std::path::Path) -> tempfile::TempDir {
    let classes = tempfile::tempdir_in(within).unwrap();
    let st = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg(source("Leak.java"))
        .status()
        .expect("javac (Debian package openjdk-17-jdk-headless; cargo xtask test installs it)");
    assert!(st.success());
    classes
}

/// The JVM a test runs `Leak` in.
enum Jvm {
    /// The machine's `java` (Debian bookworm's OpenJDK 17).
    Host,
    /// OpenJDK 21 from Debian trixie, in the root `cargo xtask test` unpacks
    /// (`FDTRACE_JDK21_ROOT`; its `JAVA_HOME` inside is `FDTRACE_JDK21_HOME`), run with
    /// `chroot` in a mount namespace of its own (its /proc and /dev/null mounted there).
    Root,
}

/// Compile and start `java FLAGS Leak N` in `jvm`, attach by pid, let it leak, and return the
/// JSON report and whether the JVM wrote a perf map (removed with it).
fn trace_java(jvm: &Jvm, flags: &[&str], n: u32) -> (Value, bool) {
    match jvm {
        Jvm::Host => {
            let classes = java_classes(&std::env::temp_dir());
            let mut cmd = Command::new("java");
            cmd.args(flags)
                .arg("-cp")
                .arg(classes.path())
                .arg("Leak")
                .arg(n.to_string());
            trace_ready_map(cmd, 8)
        }
        Jvm::Root => {
            let var = |name: &str| {
                std::env::var_os(name).unwrap_or_else(|| {
                    panic!("{name} is not set: run the tests with `cargo xtask test`, which unpacks OpenJDK 21")
                })
            };
            let root = std::path::PathBuf::from(var("FDTRACE_JDK21_ROOT"));
            let home = std::path::PathBuf::from(var("FDTRACE_JDK21_HOME"));
            let tmp = root.join("tmp");
            let classes = java_classes(&tmp);
            let inside = std::path::Path::new("/tmp").join(classes.path().file_name().unwrap());
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    r#"root=$1; java=$2; shift 2
                    mount -t proc proc "$root/proc" && mount --bind /dev/null "$root/dev/null" &&
                    exec chroot "$root" "$java" "$@""#,
                )
                .arg("sh")
                .arg(&root)
                .arg(home.join("bin/java"))
                .args(flags)
                .arg("-cp")
                .arg(&inside)
                .arg("Leak")
                .arg(n.to_string());
            trace_ready_in(cmd, 8, &tmp)
        }
    }
}

/// The leaks of `Leak.java` under `java FLAGS`: each at its Java method and line, one site
/// each, `Leak.main` above at the line of the call, the JDK's and the JVM's code below; the
/// JVM never asked for anything (no perf map written).
fn java_leaks_at_their_lines(flags: &[&str]) -> Value {
    java_leaks_at_their_lines_in(&Jvm::Host, flags)
}

/// [`java_leaks_at_their_lines`] in `jvm`.
fn java_leaks_at_their_lines_in(jvm: &Jvm, flags: &[&str]) -> Value {
    let n = 30;
    let (r, perf_map) = trace_java(jvm, flags, n);
    let counts = by_user_line(&r);
    eprintln!("{flags:?}: {counts:?}");
    let at = |function: &str, marker: &str| count_at(&counts, function, "Leak.java", marker);
    assert_eq!(
        at("Leak.openJournal", "LEAK: file"),
        Some(n as u64),
        "{counts:?}"
    );
    assert_eq!(
        at("Leak.dial", "LEAK: socket"),
        Some(n as u64),
        "{counts:?}"
    );
    assert_eq!(
        counts.len(),
        2,
        "nothing else leaked (readConfig and the server thread close theirs): {counts:?}"
    );
    assert_eq!(
        sites(&r).len(),
        2,
        "one site per Java line, whichever tier ran it: {}",
        site_summary(&r)
    );
    for s in sites(&r) {
        let i = s["user_frame"].as_u64().unwrap() as usize;
        let frames = s["frames"].as_array().unwrap();
        let caller = &frames[i + 1];
        assert_eq!(caller["function"], "Leak.main", "{caller}");
        assert_eq!(caller["module"], "java", "{caller}");
        let call = if frames[i]["function"] == "Leak.dial" {
            "kept.add(dial"
        } else {
            "kept.add(openJournal"
        };
        assert_eq!(
            caller["line"].as_u64(),
            Some(line_in("Leak.java", call)),
            "{caller}"
        );
        for f in &frames[..i] {
            // Below the program's method: libc, the JVM's and the JDK's native code, the
            // JDK's own Java methods (inlined ones too), each with its line but for native
            // methods.
            let m = f["module"].as_str().unwrap_or("");
            let function = f["function"].as_str().unwrap_or("");
            if m == "java" {
                assert!(
                    ["java.", "sun.", "jdk."]
                        .iter()
                        .any(|p| function.starts_with(p)),
                    "{f}"
                );
                assert!(
                    f["line"].as_u64().is_some() || function.ends_with("0"),
                    "a JDK frame without its line: {f}"
                );
            } else {
                assert!(
                    m.contains("libc") || m.contains("/usr/lib/jvm/"),
                    "a frame below the user frame that is not the runtime's: {f}"
                );
            }
        }
    }
    // Frames read from the JVM: its attach mechanism was not used.
    assert!(!perf_map, "the JVM was asked for its perf map");
    assert!(r["runtime_hint"].is_null(), "{}", r["runtime_hint"]);
    assert!(r["drift"]["missed_opens"].as_array().unwrap().is_empty());
    assert!(r["drift"]["missed_closes"].as_array().unwrap().is_empty());
    r
}

#[test]
fn java_compiled_methods_named_at_their_lines() {
    let _g = serial();
    require_root();
    // No flag: compiled frames are walked by the sizes the JVM gives, whatever its code does
    // with the frame-pointer register. The leaking methods are compiled (called 20,000 times
    // first), and the JIT inlined the JDK's constructors into them.
    let r = java_leaks_at_their_lines(&[]);
    assert_inlined_java_frames(&r);
}

/// Compiled code: some site has, below its user frame, a Java frame the JIT inlined into its
/// caller (a frame of its own, marked so).
fn assert_inlined_java_frames(r: &Value) {
    assert!(
        sites(r).iter().any(|s| {
            let i = s["user_frame"].as_u64().unwrap() as usize;
            s["frames"].as_array().unwrap()[..i]
                .iter()
                .any(|f| f["inlined"] == true && f["module"] == "java")
        }),
        "compiled frames with the methods the JIT inlined: {}",
        site_summary(r)
    );
}

#[test]
fn java_with_frame_pointers_named_at_their_lines() {
    let _g = serial();
    require_root();
    java_leaks_at_their_lines(&["-XX:+PreserveFramePointer"]);
}

#[test]
fn java_interpreted_methods_named_at_their_lines() {
    let _g = serial();
    require_root();
    // Interpreted only: every frame is the interpreter's.
    java_leaks_at_their_lines(&["-Xint"]);
}

#[test]
fn java_21_in_a_root_of_its_own_named_at_its_lines() {
    let _g = serial();
    require_root();
    // JDK 21 writes the JIT's debug information and line tables with another integer coding
    // (UNSIGNED5), keeps a method's flags elsewhere, and runs here with another C library,
    // seen through /proc/PID/root as a container's would be.
    let r = java_leaks_at_their_lines_in(&Jvm::Root, &[]);
    assert_inlined_java_frames(&r);
}

#[test]
fn java_launched_by_fdtrace_named_at_its_lines() {
    let _g = serial();
    require_root();
    // `fdtrace -- java …`: the JVM is read when its first Java frame is seen, never asked
    // for anything, and nothing is said about it.
    let classes = java_classes(&std::env::temp_dir());
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(fdtrace_bin())
        .args(["--json", "-o"])
        .arg(out.path())
        .args(["--", "java", "-cp"])
        .arg(classes.path())
        .args(["Leak", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Leak reads a line to leak, then one to exit.
    child.stdin.take().unwrap().write_all(b"go\nend\n").unwrap();
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    let counts = by_user_line(&r);
    let at = |function: &str, marker: &str| count_at(&counts, function, "Leak.java", marker);
    // The target exited: what it held then, its leaks.
    assert_eq!(at("Leak.openJournal", "LEAK: file"), Some(10), "{counts:?}");
    assert_eq!(at("Leak.dial", "LEAK: socket"), Some(10), "{counts:?}");
}
