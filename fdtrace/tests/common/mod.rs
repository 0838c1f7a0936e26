//! Helpers shared by the privileged end-to-end tests.
#![allow(dead_code)]
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn fdtrace_bin() -> PathBuf {
    std::env::var_os("FDTRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fdtrace")))
}

/// The tests share the kernel (and one unmounts tracefs): they run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the privileged tests need root: run `cargo xtask test` as root"
    );
}

pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
}

/// Line of the marker comment in a test program.
pub fn line_of(file: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(source(file)).unwrap();
    let hits: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&format!("/* {marker} */")))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {marker} in {file}");
    hits[0]
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Read fdtrace's stderr until it says it is tracing (panics if it ends first): that line
/// (warnings, such as a tracepoint this kernel lacks, may come first).
pub fn wait_for_tracing(stderr: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    while !line.starts_with("fdtrace: tracing ") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "fdtrace ended");
    }
    line
}

pub struct Run {
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A figure a test measured but does not assert (time under emulation, memory): printed, and
/// appended to the file FDTRACE_MEASUREMENTS names, if any (`cargo xtask vmtest` quotes it).
pub fn measured(line: &str) {
    println!("measured: {line}");
    if let Some(path) = std::env::var_os("FDTRACE_MEASUREMENTS") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("FDTRACE_MEASUREMENTS is writable");
        writeln!(f, "{line}").expect("FDTRACE_MEASUREMENTS is writable");
    }
}

pub fn fdtrace(args: &[&str], extra: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Run {
    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("r.json");
    let mut cmd = Command::new(fdtrace_bin());
    cmd.arg("--json")
        .arg("-o")
        .arg(&report)
        .args(args)
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let json = std::fs::read_to_string(&report)
        .ok()
        .map(|s| serde_json::from_str(&s).expect("valid JSON report"))
        .unwrap_or(Value::Null);
    Run {
        json,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// The text report of a run (`fdtrace -o FILE ARGS EXTRA`), which must succeed.
pub fn fdtrace_text(args: &[&str], extra: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("r.txt");
    let mut cmd = Command::new(fdtrace_bin());
    cmd.arg("-o").arg(&report).args(args).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&report).unwrap()
}

/// Trace the running process `pid` with `fdtrace ARGS -o FILE -p PID` (ARGS should end the
/// session, e.g. with `-d`); once fdtrace says it is tracing, run `load`; wait for fdtrace to
/// finish and return the report it wrote (text, or JSON with `--json`).
pub fn attach_during(pid: u32, args: &[&str], load: impl FnOnce()) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("report");
    attach_during_to(pid, args, &report, load);
    std::fs::read_to_string(&report).unwrap()
}

/// `attach_during`, with fdtrace's output (`-o`) at `report`.
pub fn attach_during_to(pid: u32, args: &[&str], report: &Path, load: impl FnOnce()) {
    let mut tracer = Killed(
        Command::new(fdtrace_bin())
            .args(args)
            .arg("-o")
            .arg(report)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(tracer.0.stderr.take().unwrap());
    // Warnings (a tracepoint this kernel lacks) may come first.
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("fdtrace did not attach: {said}");
        }
        said.push_str(&line);
        if line.starts_with("fdtrace: tracing ") {
            break;
        }
    }
    load();
    let st = tracer.0.wait().unwrap();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(st.success(), "fdtrace failed: {rest}");
}

/// Trace one of the leaking programs (leaky, rustleak, goleak: `N 0 0` with LEAKY_WAIT) by pid
/// with `fdtrace --json ARGS -p PID`: the program waits for a line on stdin, sent once fdtrace
/// says it is tracing (however long attaching takes); once it has printed "done",
/// `while_traced(pid)` runs with both still alive. Returns the JSON report.
pub fn trace_leaker_by_pid(
    bin: &Path,
    n: u32,
    args: &[&str],
    while_traced: impl FnOnce(u32),
) -> Value {
    let data = tempfile::tempdir().unwrap();
    let mut child = waiting_leaker(bin, n, data.path());
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    let json = attach_during(pid, &argv, || {
        go_and_wait_for(&mut stdin, stdout);
        while_traced(pid);
    });
    serde_json::from_str(&json).expect("valid JSON report")
}

/// (file basename, line, function) of a site's user frame.
pub fn user_frame(site: &Value) -> Option<(String, u64, String)> {
    let i = site["user_frame"].as_u64()? as usize;
    let f = &site["frames"][i];
    Some((
        Path::new(f["file"].as_str()?)
            .file_name()?
            .to_string_lossy()
            .into_owned(),
        f["line"].as_u64()?,
        f["function"].as_str()?.to_string(),
    ))
}

/// (file basename, line) of a site's user frame.
pub fn user_line(site: &Value) -> Option<(String, u64)> {
    user_frame(site).map(|(file, line, _)| (file, line))
}

pub fn sites(r: &Value) -> &Vec<Value> {
    r["sites"].as_array().expect("sites")
}

pub fn site_counts(r: &Value) -> Vec<((String, u64), u64)> {
    r["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| {
            (
                user_line(s).unwrap_or_else(|| panic!("site without a user frame: {s:#}")),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Stop a traced session with SIGINT (it writes its report) and wait for fdtrace's exit status;
/// panics when it has not stopped within 60 s (a stalled loop fails, never hangs).
pub fn stop_with_sigint(tracer: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) of the fdtrace this test started.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = tracer.try_wait().unwrap() {
            return st;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "fdtrace did not stop within 60 s of SIGINT: its loop is stalled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child spawned in a process group of its own (`process_group(0)`), killed with every
/// process of that group when dropped: an `fdtrace -- PROGRAM` ended by a failed assertion
/// leaves no orphaned PROGRAM behind.
pub struct KilledGroup(pub Child);
impl Drop for KilledGroup {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the group our child leads (its number stays taken while any
        // process of the group lives).
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that is not our child (an nginx worker, say), killed by pid when dropped, so that a
/// failed assertion does not leave it running.
pub struct KilledPid(pub u32);
impl Drop for KilledPid {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of a pid this test started (through its parent).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// With FDTRACE_PROGRAMS_DIR set (`cargo xtask vmtest`: its VMs have no compiler), the test
/// program OUT built by TOOL with ARGS is not built but taken from `DIR/KEY/OUT`, where KEY
/// names the tool and its arguments (xtask/src/vmtest.rs builds them so); a program missing
/// there fails the test.
pub fn prebuilt(tool: &str, args: &[&str], out: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FDTRACE_PROGRAMS_DIR")?;
    let key = std::iter::once(tool)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join("_")
        .replace('/', "_");
    let p = PathBuf::from(dir).join(key).join(out);
    assert!(p.exists(), "no prebuilt test program {}", p.display());
    Some(p)
}

/// Compile a C test program from tests/programs into `dir`.
/// (Flags come after the source, so libraries like `-luring` link.)
pub fn compile_c(name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let stem = name.trim_end_matches(".c");
    let args: Vec<&str> = std::iter::once("-g").chain(flags.iter().copied()).collect();
    if let Some(p) = prebuilt("cc", &args, stem) {
        return p;
    }
    let out = dir.join(stem);
    let st = Command::new("cc")
        .arg("-g")
        .arg("-o")
        .arg(&out)
        .arg(source(name))
        .args(flags)
        .status()
        .expect("a C compiler (cc)");
    assert!(st.success(), "compiling {name}");
    out
}

/// Build the Go program `tests/programs/NAME/main.go` into `DIR/NAME`, with Go's caches and
/// settings confined to `DIR` (removed with it).
pub fn go_build(name: &str, dir: &Path) -> PathBuf {
    if let Some(p) = prebuilt("go", &["build"], name) {
        return p;
    }
    go_build_with(name, dir, &[])
}

/// `go_build` with more settings for Go (`CGO_ENABLED=0`), never prebuilt.
pub fn go_build_with(name: &str, dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    let out = dir.join(name);
    let gotmp = dir.join("go");
    // A release of its own: GOROOT=DIR in `env` runs DIR/bin/go.
    let go = env
        .iter()
        .find(|(k, _)| *k == "GOROOT")
        .map(|(_, r)| Path::new(r).join("bin/go"))
        .unwrap_or_else(|| PathBuf::from("go"));
    let st = Command::new(&go)
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(source(&format!("{name}/main.go")))
        .env("GOCACHE", gotmp.join("cache"))
        .env("GOPATH", gotmp.join("path"))
        .env("GOMODCACHE", gotmp.join("mod"))
        .env("GOTMPDIR", dir)
        .env("GOFLAGS", "")
        .env("GOENV", "off")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GOPROXY", "off")
        .envs(env.iter().copied())
        .status()
        .expect("go (Debian: apt-get install golang-go) is needed for the Go tests");
    assert!(st.success(), "go build of {name} failed");
    out
}

/// The site whose user frame is at `line` of `file`.
pub fn site_at<'a>(r: &'a Value, file: &str, line: u32) -> Option<&'a Value> {
    r["sites"]
        .as_array()?
        .iter()
        .find(|s| user_line(s) == Some((file.to_string(), line as u64)))
}

pub struct Built {
    _dir: tempfile::TempDir,
    /// -O0 with frame pointers.
    pub fp: PathBuf,
    /// -O2 without frame pointers: only DWARF unwinding finds the callers.
    pub nofp: PathBuf,
}

static BUILT: OnceLock<Built> = OnceLock::new();

/// Statics are never dropped: remove the build directory when the test binary exits.
extern "C" fn remove_built() {
    if let Some(b) = BUILT.get() {
        let _ = std::fs::remove_dir_all(b._dir.path());
    }
}

/// leaky.c built twice (with and without frame pointers), once per test binary.
pub fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: registers a plain function that only removes files.
        unsafe { libc::atexit(remove_built) };
        let mut fp = dir.path().join("leaky");
        let mut nofp = dir.path().join("leaky-nofp");
        for (out, flags) in [
            (&mut fp, &["-g", "-O0", "-fno-omit-frame-pointer"][..]),
            (&mut nofp, &["-g", "-O2", "-fomit-frame-pointer"][..]),
        ] {
            if let Some(p) = prebuilt("cc", flags, &out.file_name().unwrap().to_string_lossy()) {
                *out = p;
                continue;
            }
            let st = Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(out)
                .arg(source("leaky.c"))
                .status()
                .expect("a C compiler (cc)");
            assert!(st.success());
        }
        Built {
            _dir: dir,
            fp,
            nofp,
        }
    })
}

/// Every line of `file` in any frame of any site.
pub fn lines_in(r: &Value, file: &str) -> BTreeSet<u64> {
    sites(r)
        .iter()
        .flat_map(|s| s["frames"].as_array().unwrap().clone())
        .filter(|f| f["file"].as_str().is_some_and(|x| x.ends_with(file)))
        .filter_map(|f| f["line"].as_u64())
        .collect()
}

pub fn all_lines(r: &Value) -> BTreeSet<u64> {
    lines_in(r, "leaky.c")
}

/// The exact leaks of `leaky 40`: 40 open() at LEAK_OPEN, 10 fopen() at LEAK_FOPEN, nothing
/// from the correct lines.
pub fn assert_leaky_40(r: &Value) {
    let leak = line_of("leaky.c", "LEAK_OPEN") as u64;
    let fleak = line_of("leaky.c", "LEAK_FOPEN") as u64;
    assert_eq!(
        site_counts(r),
        vec![
            (("leaky.c".to_string(), leak), 40),
            (("leaky.c".to_string(), fleak), 10)
        ],
        "report: {r:#}"
    );
    let lines = all_lines(r);
    for ok in ["OK_OPEN", "OK_FOPEN"] {
        let l = line_of("leaky.c", ok) as u64;
        assert!(
            !lines.contains(&l),
            "correct line {l} ({ok}) reported: {r:#}"
        );
    }
    assert_eq!(r["lost_events"], 0, "{r:#}");
    for s in r["sites"].as_array().unwrap() {
        assert_eq!(s["kind"], "file");
        assert_eq!(
            s["fds"].as_array().unwrap().len() as u64,
            s["count"].as_u64().unwrap()
        );
        assert!(r["preexisting"].as_array().is_some());
    }
}

/// Pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The fields after the command name, which may hold spaces: state, ppid, …
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1) == Some(&pid.to_string()) {
            out.push(p);
        }
    }
    out
}

/// The exact leaks of `goleak 40`: 40 os.Create, 10 os.Open, one net.Dial; never the correct
/// lines. The runtime's own descriptors (netpoll's epoll and pipe, created on the first file
/// open, and the listener) are not leaks of these lines and are not counted here.
pub fn assert_goleak_40(r: &Value, method: &str) {
    let l = |m: &str| line_of("goleak/main.go", m) as u64;
    let file_sites: Vec<&Value> = sites(r).iter().filter(|s| s["kind"] == "file").collect();
    let mut files: Vec<_> = file_sites
        .iter()
        .map(|s| {
            let (file, line, func) =
                user_frame(s).unwrap_or_else(|| panic!("no user frame: {s:#}"));
            ((file, line, func), s["count"].as_u64().unwrap())
        })
        .collect();
    files.sort();
    let at = |m: &str, func: &str| ("main.go".to_string(), l(m), func.to_string());
    assert_eq!(
        files,
        vec![
            (at("LEAK_GO_CREATE", "main.leakCreate"), 40),
            (at("LEAK_GO_OPEN", "main.leakOpen"), 10),
        ],
        "{r:#}"
    );
    assert_eq!(file_sites.len(), 2, "{r:#}");
    let lines = lines_in(r, "goleak/main.go");
    for ok in ["OK_GO_CREATE", "OK_GO_OPEN", "OK_GO_DIAL"] {
        assert!(!lines.contains(&l(ok)), "{ok} reported: {r:#}");
    }
    for s in sites(r) {
        assert_eq!(s["method"], method, "{s:#}");
    }
    for s in file_sites {
        assert_eq!(s["truncated"], false, "{s:#}");
        // Down to the goroutine's root.
        let last = s["frames"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["function"], "runtime.goexit", "{s:#}");
    }
}

/// The processes of a report, by pid.
pub fn processes(r: &Value) -> Vec<(u64, &Value)> {
    let mut v: Vec<(u64, &Value)> = std::iter::once(r)
        .chain(r["processes"].as_array().into_iter().flatten())
        .map(|p| (p["pid"].as_u64().unwrap(), p))
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

/// The report of a whole cgroup (`--cgroup`, `--container`) that held `leaker` (a `leaky 40`)
/// and `worker` (`churn 0 3000 0 …`, which leaks nothing), and nothing else: each exactly, and
/// no record about any other process.
pub fn assert_leaker_and_worker(r: &Value, leaker: u32, worker: u32) {
    let procs = processes(r);
    let pids: Vec<u64> = procs.iter().map(|p| p.0).collect();
    let mut want = vec![leaker as u64, worker as u64];
    want.sort();
    assert_eq!(pids, want, "{r:#}");
    assert_eq!(r["stray_events"], 0, "records about other processes: {r:#}");
    let of = |pid: u32| procs.iter().find(|p| p.0 == pid as u64).unwrap().1;
    assert_leaky_40(of(leaker));
    let w = of(worker);
    assert_eq!(
        w["sites"],
        serde_json::json!([]),
        "the correct process: {w:#}"
    );
    // Traced from when it entered: its 3,000 opens and closes of /dev/null were all seen.
    assert!(
        w["model"]["opens"].as_u64().unwrap() >= 3000
            && w["model"]["closes"].as_u64().unwrap() >= 3000,
        "{:#}",
        w["model"]
    );
    for (_, p) in &procs {
        for k in ["missed_opens", "missed_closes"] {
            assert_eq!(p["drift"][k], serde_json::json!([]), "{k}: {p:#}");
        }
    }
}

/// One of the leaking programs (leaky, rustleak, goleak), waiting (LEAKY_WAIT) to leak `n`
/// rounds into `data`.
pub fn waiting_leaker(bin: &Path, n: u32, data: &Path) -> Killed {
    Killed(
        Command::new(bin)
            .args([n.to_string().as_str(), "0", "0"])
            .env("LEAKY_DIR", data)
            .env("LEAKY_WAIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Tell a waiting leaker (its stdin and stdout) to go on, and wait for its "done".
pub fn go_and_wait_for(stdin: &mut impl std::io::Write, stdout: impl std::io::Read) {
    stdin.write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
}

/// `go_and_wait_for` of a leaker this test started.
pub fn go_and_wait(p: &mut Killed) {
    go_and_wait_for(p.0.stdin.as_mut().unwrap(), p.0.stdout.as_mut().unwrap());
}

/// The JSON report of a copy of the recording `file` (the original removed first, as if the
/// copy were on another machine).
pub fn report_of_a_copy(file: &Path) -> Value {
    let copy = file.with_extension("copy");
    std::fs::copy(file, &copy).unwrap();
    std::fs::remove_file(file).unwrap();
    let o = Command::new(fdtrace_bin())
        .arg("report")
        .arg(&copy)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(&copy);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Start `bin ARGS`, which prints "port N" once it serves; the process and its port.
pub fn start_server(bin: &Path, args: &[&std::ffi::OsStr]) -> (Killed, u16) {
    let mut child = Killed(
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("port ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} did not say its port: {line:?}", bin.display()));
    (child, port)
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`); the whole response,
/// which must be a 200.
pub fn http_request(port: u16, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 "), "{method} {path}: {resp}");
    resp
}

/// Run `load` and let the service finish closing: Go's server closes a connection 0.5 s after
/// its last response (it waits for the client's FIN to avoid a reset). Fails, rather than give
/// a report of an unfinished load, when all this took more than `budget` of fdtrace's `-d`.
pub fn load_and_settle(budget: Duration, load: impl FnOnce()) {
    let t = Instant::now();
    load();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        t.elapsed() < budget,
        "the load took {:?}: too slow for the session's duration",
        t.elapsed()
    );
}

/// A cgroup v2 made for a test, removed (with every process in it killed) when dropped.
pub struct TestCgroup {
    pub dir: PathBuf,
}

impl TestCgroup {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mount = fdtrace::cgroup::mount_point().expect("a cgroup v2 hierarchy");
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = mount.join(format!("fdtrace-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TestCgroup { dir }
    }

    /// Move `pid` into the cgroup (the processes it starts later are born in it).
    pub fn enter(&mut self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// The processes in it.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let t = std::time::Instant::now();
        loop {
            for p in self.pids() {
                // SAFETY: kill(2) of a process this test started (or one it started).
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok()
                || t.elapsed() > std::time::Duration::from_secs(5)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
