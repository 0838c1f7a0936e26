//! Privileged end-to-end tests with a real container runtime: runc, from Debian's package, runs
//! images made here from the test programs and the libraries they load (no registry): a glibc
//! image, an Alpine-style musl image and a static Go image. fdtrace traces them by the pid the
//! host sees (`-p`), and whole, by container id (`--container`) and by cgroup (`--cgroup`).
//!
//! The containers are laid out in the cgroup tree as Docker lays out its own with the cgroupfs
//! driver (`/docker/<64 hex digits>`; Docker runs its containers with runc so), under a random
//! id.
use std::{
    io::{BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

mod common;
use common::*;

/// A container run by `runc run` in the foreground (its standard input and output are the
/// container process's), killed and deleted when dropped.
struct Container {
    name: String,
    /// The 64 hex digits of its cgroup's name.
    id: String,
    run: Killed,
    /// The container's first process, as the host sees it.
    pid: u32,
    _bundle: tempfile::TempDir,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

impl Container {
    fn cgroup(&self) -> String {
        format!("/docker/{}", self.id)
    }

    /// Run `argv` in the container as a second process (`runc exec`, in the foreground): the
    /// runc process, and the pid the host sees of the program.
    fn exec(&self, argv: &[&str]) -> (Killed, u32) {
        let before = cgroup_procs(&self.cgroup());
        let run = Killed(
            Command::new("runc")
                .args(["exec", &self.name])
                .args(argv)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("runc"),
        );
        let comm = Path::new(argv[0]).file_name().unwrap().to_string_lossy();
        let t = Instant::now();
        loop {
            if let Some(pid) = cgroup_procs(&self.cgroup())
                .into_iter()
                .filter(|p| !before.contains(p))
                .find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| comm.starts_with(c.trim()))
                })
            {
                return (run, pid);
            }
            assert!(t.elapsed() < Duration::from_secs(10), "runc exec {argv:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The processes of the cgroup at `path` (as /proc/PID/cgroup names it).
fn cgroup_procs(path: &str) -> Vec<u32> {
    let mount = fdtrace::cgroup::mount_point().unwrap();
    std::fs::read_to_string(
        mount
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs"),
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.parse().ok())
    .collect()
}

/// 64 hex digits no other test run uses.
fn random_id() -> String {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copy `from` to `root/at`.
fn put(root: &Path, from: &Path, at: &Path) {
    let dest = root.join(at.strip_prefix("/").unwrap_or(at));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// The program interpreter an ELF file asks for, if any.
fn interpreter(bin: &Path) -> Option<PathBuf> {
    let out = Command::new("readelf")
        .arg("-lW")
        .arg(bin)
        .output()
        .expect("readelf (binutils)");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (_, rest) = l.split_once("Requesting program interpreter: ")?;
        Some(PathBuf::from(rest.trim_end_matches(']')))
    })
}

/// An image in `root`: `bin` at `at`, with the interpreter and the libraries it loads, each at
/// its path (musl's interpreter is its C library; glibc's libraries are listed by ldd).
fn image(root: &Path, bin: &Path, at: &Path) {
    put(root, bin, at);
    let Some(interp) = interpreter(bin) else {
        return;
    };
    put(root, &interp.canonicalize().unwrap(), &interp);
    if interp.to_string_lossy().contains("musl") {
        return;
    }
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((_, rest)) = l.split_once("=> ")
            && let Some(lib) = rest.split_whitespace().next()
            && lib.starts_with('/')
        {
            put(
                root,
                &Path::new(lib).canonicalize().unwrap(),
                Path::new(lib),
            );
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
}

/// How a container is made.
struct Spec<'a> {
    /// Its program (already in `rootfs`) and arguments.
    argv: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    /// Share the host's network namespace (its loopback is up).
    host_network: bool,
}

/// Run `spec` with runc over the image in `rootfs` (moved into the bundle).
fn run(rootfs: tempfile::TempDir, spec: Spec) -> Container {
    let bundle = tempfile::tempdir().unwrap();
    std::fs::rename(rootfs.path(), bundle.path().join("rootfs")).unwrap_or_else(|_| {
        // Another file system: copy.
        let st = Command::new("cp")
            .arg("-a")
            .arg(rootfs.path())
            .arg(bundle.path().join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success());
    });
    let st = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle.path())
        .status()
        .expect("runc (Debian: apt-get install runc)");
    assert!(st.success(), "runc spec");
    let path = bundle.path().join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let id = random_id();
    c["process"]["args"] = json!(spec.argv);
    c["process"]["terminal"] = json!(false);
    let mut env = vec!["PATH=/usr/bin:/bin".to_string()];
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    c["process"]["env"] = json!(env);
    c["root"]["readonly"] = json!(false);
    c["linux"]["cgroupsPath"] = json!(format!("/docker/{id}"));
    if spec.host_network {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    let name = format!("fdtrace-test-{}", &id[..12]);
    let run = Killed(
        Command::new("runc")
            .args(["run", "--bundle"])
            .arg(bundle.path())
            .arg(&name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("runc"),
    );
    let t = Instant::now();
    let pid = loop {
        let out = Command::new("runc")
            .args(["state", &name])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        if let Ok(s) = serde_json::from_slice::<Value>(&out.stdout)
            && s["status"] == "running"
        {
            break s["pid"].as_u64().unwrap() as u32;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "runc run {name}");
        std::thread::sleep(Duration::from_millis(20));
    };
    Container {
        name,
        id,
        run,
        pid,
        _bundle: bundle,
    }
}

/// A leaking program `bin` in a container, at `at` inside it, waiting (LEAKY_WAIT) to leak 40
/// files into its /tmp.
fn leaker_in_a_container(bin: &Path, at: &Path, host_network: bool) -> Container {
    let root = tempfile::tempdir().unwrap();
    image(root.path(), bin, at);
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    run(
        root,
        Spec {
            argv: &[at.to_str().unwrap(), "40", "0", "0"],
            env: &[("LEAKY_DIR", "/tmp"), ("LEAKY_WAIT", "1")],
            host_network,
        },
    )
}

/// `fdtrace --json -d 3 ARGS -p PID` of the container's first process while it leaks.
fn trace_by_pid(c: &mut Container, args: &[&str]) -> Value {
    let mut argv = vec!["--json", "-d", "3"];
    argv.extend_from_slice(args);
    let pid = c.pid;
    let json = attach_during(pid, &argv, || go_and_wait(&mut c.run));
    serde_json::from_str(&json).expect("a JSON report")
}

fn assert_no_drift(r: &Value) {
    for k in ["missed_opens", "missed_closes"] {
        assert_eq!(r["drift"][k], json!([]), "{k}: {r:#}");
    }
}

/// The report names the container: its id, Docker's layout, pid 1 of its namespace.
fn assert_in_container(r: &Value, c: &Container) {
    let k = &r["container"];
    assert_eq!(k["id"], c.id.as_str(), "{k:#}");
    assert_eq!(k["runtime"], "docker", "{k:#}");
    assert_eq!(k["cgroup"], c.cgroup(), "{k:#}");
    assert_eq!(k["nspid"], json!([c.pid, 1]), "{k:#}");
}

/// The module of the user frame of the site at `file:line`.
fn module_of(r: &Value, file: &str, line: u64) -> String {
    let s = sites(r)
        .iter()
        .find(|s| user_line(s) == Some((file.into(), line)))
        .unwrap_or_else(|| panic!("no site at {file}:{line}: {r:#}"));
    let i = s["user_frame"].as_u64().unwrap() as usize;
    s["frames"][i]["module"].as_str().unwrap().to_string()
}

/// `bin` (a build of leaky.c) at `at` in a container, traced by host pid: the exact leaks at
/// their lines in the container's file, no drift, the container named.
fn leaky_in_a_container_is_exact(bin: &Path, at: &Path) -> Value {
    let mut c = leaker_in_a_container(bin, at, false);
    let r = trace_by_pid(&mut c, &[]);
    assert_leaky_40(&r);
    assert_no_drift(&r);
    assert_in_container(&r, &c);
    let leak = line_of("leaky.c", "LEAK_OPEN") as u64;
    assert_eq!(module_of(&r, "leaky.c", leak), at.to_str().unwrap());
    r
}

/// A glibc image; the host has another program at the path the container's binary has.
#[test]
fn a_glibc_container_is_traced_by_host_pid() {
    let _serial = serial();
    require_root();
    let decoy_dir = tempfile::tempdir().unwrap();
    let decoy = compile_c("drip.c", decoy_dir.path(), &["-O0"]);
    let at = decoy_dir.path().join("app");
    std::fs::copy(&decoy, &at).unwrap();
    let r = leaky_in_a_container_is_exact(&built().fp, &at);
    assert!(!r.to_string().contains("drip.c"), "the host's file: {r:#}");
}

/// leaky.c built against musl with `flags`.
fn musl_leaky(dir: &Path, flags: &[&str]) -> PathBuf {
    let bin = dir.join("leaky-musl");
    let st = Command::new("musl-gcc")
        .args(["-g", "-O0"])
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(source("leaky.c"))
        .status()
        .expect("musl-gcc (Debian: apt-get install musl-tools)");
    assert!(st.success());
    bin
}

/// An Alpine-style image: the program linked against musl, whose C library is its interpreter.
/// musl has neither unwind tables nor frame pointers: its frames are crossed by scanning.
#[test]
fn a_musl_container_is_traced_by_host_pid() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = musl_leaky(dir.path(), &[]);
    assert!(interpreter(&bin).is_some_and(|i| i.to_string_lossy().contains("musl")));
    leaky_in_a_container_is_exact(&bin, Path::new("/app/leaky"));
}

/// A static musl binary alone in its image (as Rust's musl targets build them): the C library's
/// functions are in the program's own file, named but without lines.
#[test]
fn a_static_musl_container_is_traced_by_host_pid() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = musl_leaky(dir.path(), &["-static"]);
    assert!(interpreter(&bin).is_none(), "a static binary");
    leaky_in_a_container_is_exact(&bin, Path::new("/leaky"));
}

/// A static Go binary alone in its image (it dials its own listener: host network).
#[test]
fn a_go_container_is_traced_by_host_pid() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // Without cgo, as images `FROM scratch` have it.
    let bin = go_build_with("goleak", dir.path(), &[("CGO_ENABLED", "0")]);
    assert!(interpreter(&bin).is_none(), "a static binary");
    let mut c = leaker_in_a_container(&bin, Path::new("/goleak"), true);
    let r = trace_by_pid(&mut c, &[]);
    assert_goleak_40(&r, "fp");
    assert_no_drift(&r);
    assert_in_container(&r, &c);
}

/// Recorded by host pid, reported from a copy of the recording once the container is gone.
#[test]
fn a_recording_of_a_container_reports_after_it_is_gone() {
    let _serial = serial();
    require_root();
    let mut c = leaker_in_a_container(&built().nofp, Path::new("/srv/leaky"), false);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("c.fdtrace");
    let mut rec = Killed(
        Command::new(fdtrace_bin())
            .args(["record", "-q", "-d", "3", "-o"])
            .arg(&file)
            .args(["-p", &c.pid.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_tracing(&mut BufReader::new(rec.0.stderr.take().unwrap()));
    go_and_wait(&mut c.run);
    assert!(rec.0.wait().unwrap().success());
    drop(c);
    let r = report_of_a_copy(&file);
    assert_leaky_40(&r);
    assert_eq!(
        module_of(&r, "leaky.c", line_of("leaky.c", "LEAK_OPEN") as u64),
        "/srv/leaky"
    );
}

/// Two processes in the container, the first leaking (there when tracing starts), the second
/// correct (started with `runc exec` once it has); the same leaking program runs on the host
/// meanwhile. `fdtrace ARGS` (a `--container` or `--cgroup` target) reports both container
/// processes, each exactly, and nothing of the host's: the kernel sent nothing about it.
fn trace_a_whole_container(target: impl Fn(&Container) -> Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let churn = compile_c("churn.c", dir.path(), &["-O0"]);
    let root = tempfile::tempdir().unwrap();
    image(root.path(), &built().fp, Path::new("/app/leaky"));
    image(root.path(), &churn, Path::new("/app/churn"));
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    let mut c = run(
        root,
        Spec {
            argv: &["/app/leaky", "40", "0", "0"],
            env: &[("LEAKY_DIR", "/tmp"), ("LEAKY_WAIT", "1")],
            host_network: false,
        },
    );
    let data = tempfile::tempdir().unwrap();
    let mut outsider = waiting_leaker(&built().fp, 40, data.path());
    let port = free_port();
    let mut argv: Vec<String> = ["--json", "-d", "5", "--metrics"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(format!("127.0.0.1:{port}"));
    argv.extend(target(&c));
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("r.json");
    let mut tracer = Killed(
        Command::new(fdtrace_bin())
            .args(&argv)
            .arg("-o")
            .arg(&report)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let said = wait_for_tracing(&mut BufReader::new(tracer.0.stderr.take().unwrap()));
    assert!(
        said.starts_with("fdtrace: tracing cgroup /docker/")
            && said.contains(&format!("(docker container {})", &c.id[..12]))
            && said.contains(": 1 process now"),
        "{said}"
    );
    // The second process enters the container's cgroup while it is traced.
    let (_exec, churn_pid) = c.exec(&["/app/churn", "0", "3000", "0", "1500"]);
    go_and_wait(&mut c.run);
    go_and_wait(&mut outsider);
    // Both container processes are in the metrics while the session runs.
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = http_get(port, "/metrics");
    for pid in [c.pid, churn_pid] {
        assert!(
            metrics.contains(&format!("pid=\"{pid}\"")),
            "pid {pid} not in the metrics: {metrics}"
        );
    }
    assert!(tracer.0.wait().unwrap().success());
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_leaker_and_worker(&r, c.pid, churn_pid);
    for p in processes(&r) {
        assert_eq!(p.1["container"]["id"], c.id.as_str(), "{:#}", p.1);
    }
    drop(outsider);
}

/// A minimal HTTP GET on loopback: the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn a_whole_container_is_traced_by_its_id() {
    let _serial = serial();
    require_root();
    trace_a_whole_container(|c| vec!["--container".into(), c.id[..10].to_string()]);
}

#[test]
fn a_whole_container_is_traced_by_its_cgroup() {
    let _serial = serial();
    require_root();
    // The cgroup's directory on the host.
    trace_a_whole_container(|c| {
        let mount = fdtrace::cgroup::mount_point().unwrap();
        vec![
            "--cgroup".into(),
            mount
                .join(c.cgroup().trim_start_matches('/'))
                .to_string_lossy()
                .into_owned(),
        ]
    });
}

/// `fdtrace record --cgroup` with the path /proc/PID/cgroup shows, until the container is
/// removed (which ends the session); the report of a copy has the container's processes, with
/// what they held when they were killed.
#[test]
fn a_whole_container_is_recorded_until_it_is_removed() {
    let _serial = serial();
    require_root();
    let mut c = leaker_in_a_container(&built().fp, Path::new("/app/leaky"), false);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("c.fdtrace");
    let mut rec = Killed(
        Command::new(fdtrace_bin())
            .args(["record", "-q", "-o"])
            .arg(&file)
            .args(["--cgroup", &c.cgroup()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_tracing(&mut BufReader::new(rec.0.stderr.take().unwrap()));
    go_and_wait(&mut c.run);
    let pid = c.pid;
    drop(c);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = rec.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the session did not end when its cgroup was removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success());
    let r = report_of_a_copy(&file);
    assert_eq!(r["pid"], pid, "{r:#}");
    assert_eq!(r["target_exited"], true, "{r:#}");
    assert_eq!(
        r["recording"]["ended"], "cgroup removed",
        "{:#}",
        r["recording"]
    );
    assert_leaky_40(&r);
}
