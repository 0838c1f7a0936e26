//! `cargo xtask vmtest [--kernel 5.10|6.1|6.12|all]`: fdtrace's privileged integration tests on
//! other kernels. Each kernel comes from Debian's archive (the `cloud-amd64` flavour has BTF and
//! tracepoints), cached under target/vmtest/, and is booted under QEMU (software emulation) with
//! an initramfs holding busybox, fdtrace, the test binaries, the test programs (built on the host,
//! since the VM has no compiler) and the shared libraries they need.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{output, path_with_tools, root, run};

/// The kernel series, the Debian suites that carry them, and whether fdtrace supports them.
/// Unsupported kernels are checked for fdtrace's one-line refusal instead of the suite.
const KERNELS: &[(&str, bool)] = &[("5.10", true), ("6.1", true), ("6.12", true)];

/// The hook sets each kernel's suites run with, by default (`--hooks` overrides). 6.1 and 6.12
/// take a trampoline for every syscall, so `trampolines` (which fails where one is refused)
/// checks them all; 5.10's BTF lacks `__x64_sys_perf_event_open`, whose tracepoints `auto`
/// keeps beside the trampolines of the 45 others it has.
fn default_sets(series: &str) -> Vec<String> {
    let first = if series == "5.10" {
        "auto"
    } else {
        "trampolines"
    };
    vec![first.to_string(), "tracepoints".to_string()]
}

/// The integration test binaries run in the VM. Not run: `servers` (nginx, wrk, redis), `live`
/// and `cli` (tmux), whose tools the VM does not have, and `outputs` (metrics clients and a
/// stalled stderr: fdtrace's own user-space behaviour, which no kernel changes).
const SUITES: &[&str] = &[
    "trace",
    "hooks",
    "model",
    "sockets",
    "recording",
    "unwind",
    "incident",
    "go_links",
    "late",
    "containers",
    "load",
];

/// Tests not run in the VM, and why (suite, test, reason).
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "go_links",
        "go_1_21",
        "the VMs run one Go release, the system's (the host runs them all)",
    ),
    (
        "go_links",
        "go_1_22",
        "the VMs run one Go release, the system's (the host runs them all)",
    ),
    (
        "go_links",
        "go_1_23",
        "the VMs run one Go release, the system's (the host runs them all)",
    ),
    (
        "go_links",
        "go_1_24",
        "the VMs run one Go release, the system's (the host runs them all)",
    ),
    (
        "go_links",
        "go_system_release_stripped",
        "the VMs run one build of the Go program, unstripped (the host runs both)",
    ),
    (
        "load",
        "a_burst_from_8_threads_loses_no_descriptor",
        "the VM emulates its CPUs on one host thread: a burst of hundreds of thousands of \
         opens takes minutes there (run on the host)",
    ),
    (
        "load",
        "a_burst_from_32_threads_loses_no_descriptor",
        "the VM emulates its CPUs on one host thread: a burst of hundreds of thousands of \
         opens takes minutes there (run on the host)",
    ),
];

mod cpio;
mod programs;

use cpio::walk;
pub(crate) use cpio::{Cpio, libraries};
use programs::{PROGRAMS, key};

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Kernel series to boot: 5.10 (bullseye), 6.1 (bookworm), 6.12 (trixie) or all.
    #[arg(long, default_value = "all", value_parser = ["5.10", "6.1", "6.12", "all"])]
    kernel: String,
    /// Run only these test binaries (default: all of them), e.g. `--suites trace,model`.
    #[arg(long, value_delimiter = ',', value_name = "SUITES")]
    suites: Vec<String>,
    /// Minutes after which a VM that has not finished is stopped (and its kernel failed).
    /// (Both hook sets take about 20 minutes on 6.1 under emulation.)
    #[arg(long, default_value_t = 45)]
    timeout_min: u64,
    /// The hook sets each suite runs with (`FDTRACE_HOOKS`): `trampolines` (fentry/fexit on
    /// the syscalls' kernel functions; fdtrace fails where one is refused, so no test passes on
    /// a silent fallback), `tracepoints`, or `auto` [default: trampolines,tracepoints; 5.10:
    /// auto,tracepoints].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "SETS",
        value_parser = ["trampolines", "tracepoints", "auto"]
    )]
    hooks: Vec<String>,
}

pub(crate) fn vmdir() -> PathBuf {
    root().join("target/vmtest")
}

/// apt-get with an apt configuration of its own under target/vmtest/apt.
fn apt(tool: &str) -> Command {
    crate::debian::apt(&vmdir().join("apt"), tool)
}

fn apt_setup() -> Result<()> {
    crate::debian::apt_setup(&vmdir().join("apt"))
}

/// Numbers in a package name, for ordering versions: 6.12.117+deb13 > 6.12.95+deb12.
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The kernel image of a series: cached in target/vmtest/kernels/SERIES/, otherwise the newest
/// `linux-image-SERIES.*-cloud-amd64` package, downloaded and unpacked.
pub(crate) fn kernel(series: &str, apt_ready: &mut bool) -> Result<PathBuf> {
    let dir = vmdir().join("kernels").join(series);
    if let Ok(rd) = std::fs::read_dir(&dir)
        && let Some(p) = rd.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
    {
        return Ok(p);
    }
    if !*apt_ready {
        apt_setup()?;
        *apt_ready = true;
    }
    let pattern = format!("^linux-image-{}\\.", series.replace('.', "\\."));
    let found = output(apt("apt-cache").args(["search", "--names-only", &pattern]))?;
    let pkg = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.ends_with("-cloud-amd64"))
        .max_by_key(|n| numbers(n))
        .with_context(|| format!("no linux-image-{series}.*-cloud-amd64 package in Debian"))?
        .to_string();
    let dl = vmdir().join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run(apt("apt-get").args(["download", &pkg]).current_dir(&dl))?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let x = dl.join("x");
    std::fs::create_dir_all(&x)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let image = std::fs::read_dir(x.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{pkg} has no boot/vmlinuz-*"))?;
    std::fs::create_dir_all(&dir)?;
    let dst = dir.join(image.file_name().context("name")?);
    std::fs::copy(&image, &dst)?;
    let _ = std::fs::remove_dir_all(&dl);
    eprintln!("xtask: kernel {series}: {pkg} cached at {}", dst.display());
    Ok(dst)
}

/// The test binaries of SUITES, built by `cargo test --release --no-run`.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = output(
        Command::new("cargo")
            .args([
                "test",
                "--release",
                "-p",
                "fdtrace",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(root())
            .env("PATH", path_with_tools())
            .stderr(Stdio::inherit()),
    )?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if v["target"]["kind"][0] == "test" && SUITES.contains(&name) {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    for s in SUITES {
        if !bins.iter().any(|(n, _)| n == s) {
            bail!("cargo built no test binary `{s}`");
        }
    }
    Ok(bins)
}

/// The test programs, built on the host into target/vmtest/programs/KEY/OUT.
fn build_programs() -> Result<PathBuf> {
    let dir = vmdir().join("programs");
    let _ = std::fs::remove_dir_all(&dir);
    let src = root().join("fdtrace/tests/programs");
    let gocache = vmdir().join("go");
    for p in PROGRAMS {
        let d = dir.join(key(p.tool, p.args));
        std::fs::create_dir_all(&d)?;
        let mut c = Command::new(p.tool);
        if p.tool == "cc" {
            // As the tests' compile_c: flags (and libraries) after the source.
            c.arg("-o")
                .arg(d.join(p.out))
                .arg(src.join(p.src))
                .args(p.args);
        } else {
            c.args(p.args)
                .arg("-o")
                .arg(d.join(p.out))
                .arg(src.join(p.src));
        }
        if p.tool == "go" {
            // As the tests' go_build: no modules, no network, the local toolchain.
            c.env("GOCACHE", gocache.join("cache"))
                .env("GOPATH", gocache.join("path"))
                .env("GOFLAGS", "")
                .env("GOENV", "off")
                .env("GO111MODULE", "off")
                .env("GOTOOLCHAIN", "local")
                .env("GOTELEMETRY", "off")
                .env("GOPROXY", "off");
        }
        run(&mut c)?;
    }
    Ok(dir)
}

/// The name of a suite's run with a hook set: `trace@trampolines`.
fn run_name(suite: &str, set: &str) -> String {
    format!("{suite}@{set}")
}

fn init_script(suites: &[&str], sets: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tracefs tracefs /sys/kernel/tracing\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         ip link set lo up\n\
         export FDTRACE_MEASUREMENTS=/tmp/measurements\n\
         echo \"@@vmtest kernel $(uname -r)\"\n\
         echo \"@@vmtest uptime $(cut -d' ' -f1 /proc/uptime)\"\n\
         echo '@@vmtest begin probe'\n\
         /bin/fdtrace -d 1 -q -o /tmp/probe.txt -- /bin/true 2>/tmp/probe.err\n\
         rc=$?\n\
         cat /tmp/probe.err\n\
         echo \"@@vmtest end probe $rc\"\n\
         echo \"@@vmtest uptime $(cut -d' ' -f1 /proc/uptime)\"\n\
         echo '@@vmtest begin hooks'\n\
         /bin/fdtrace hooks 2>&1\n\
         echo \"@@vmtest end hooks $?\"\n",
    );
    if suites.is_empty() {
        // An unsupported kernel: the probe's refusal is the test.
        s.push_str("echo '@@vmtest done'\npoweroff -f\n");
        return s;
    }
    for set in sets {
        for t in suites {
            let skips: String = SKIPPED
                .iter()
                .filter(|(s, _, _)| s == t)
                .map(|(_, name, _)| format!(" --skip {name}"))
                .collect();
            let run = run_name(t, set);
            s.push_str(&format!(
                "echo '@@vmtest begin {run}'\n\
                 FDTRACE_HOOKS={set} FDTRACE_BIN=/bin/fdtrace FDTRACE_PROGRAMS_DIR=/programs /tests/{t} --test-threads=1{skips}\n\
                 echo \"@@vmtest end {run} $?\"\n"
            ));
        }
    }
    // What the tests measured (figures, not asserted): quoted in the summary.
    s.push_str("[ -f /tmp/measurements ] && sed 's/^/@@vmtest measured /' /tmp/measurements\n");
    s.push_str("echo '@@vmtest done'\npoweroff -f\n");
    s
}

fn initramfs(
    path: &Path,
    fdtrace: &Path,
    tests: &[(String, PathBuf)],
    programs: &Path,
    suites: &[&str],
    sets: &[String],
) -> Result<()> {
    let supported = !suites.is_empty();
    let mut c = Cpio::skeleton()?;
    c.bytes(
        Path::new("/init"),
        0o755,
        init_script(suites, sets).as_bytes(),
    );
    let mut elves = vec![fdtrace.to_path_buf()];
    c.file(Path::new("/bin/fdtrace"), fdtrace)?;
    if supported {
        for (name, exe) in tests {
            c.file(&Path::new("/tests").join(name), exe)?;
            elves.push(exe.clone());
        }
        for p in PROGRAMS {
            let rel = Path::new(&key(p.tool, p.args)).join(p.out);
            let host = programs.join(&rel);
            c.file(&Path::new("/programs").join(&rel), &host)?;
            elves.push(host);
        }
        // The tests read their programs' sources (marker lines) at the host's path.
        let src = root().join("fdtrace/tests/programs");
        for e in walk(&src)? {
            c.file(&e, &e)?;
        }
    }
    let libs: BTreeSet<PathBuf> = elves.iter().flat_map(|e| libraries(e)).collect();
    for l in libs {
        c.file(&l, &l)?;
    }
    std::fs::write(path, c.finish())?;
    Ok(())
}

#[derive(Default)]
pub(crate) struct Outcome {
    /// The kernel series, at the start of each line told on stderr (kernels boot side by side).
    label: String,
    pub(crate) release: String,
    probe: Vec<String>,
    probe_rc: Option<i32>,
    /// (suite, test, result): ok, FAILED, ignored.
    tests: Vec<(String, String, String)>,
    /// Suites whose binary exited non-zero (or never ended).
    bad_suites: Vec<String>,
    pub(crate) done: bool,
    pub(crate) secs: f64,
    /// How long `fdtrace -d 1 -- /bin/true` took in the VM (loading and attaching).
    probe_secs: f64,
    /// Figures the tests wrote to FDTRACE_MEASUREMENTS (and `cargo xtask bench --vm`'s).
    pub(crate) measured: Vec<String>,
    /// What `fdtrace hooks` chose on this kernel: trampolines and tracepoints counted, and its
    /// last line.
    pub(crate) hooks_summary: Option<String>,
    pub(crate) hooks_lines: Vec<String>,
}

/// How the emulator keeps the guest's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The host's: tests, whose timeouts are real seconds.
    Host,
    /// QEMU's `-icount shift=N`: the guest's clock advances 2^N ns per instruction the vCPUs
    /// execute, whatever the host's load (benches: a run's time is the instructions it took).
    Instructions(u8),
}

/// The emulated CPU of the VMs whose clock counts instructions.
pub(crate) const CPU_COUNTING_INSTRUCTIONS: &str = "max,-erms,-fsrm";

/// Boot `image` with `initrd`, stream its console to `log`, and parse the markers.
pub(crate) fn boot(
    label: &str,
    image: &Path,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    clock: Clock,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    let (cpus, cpu) = match clock {
        Clock::Host => ("2", "max"),
        Clock::Instructions(shift) => {
            // sleep=off: an idle guest's clock jumps to its next timer instead of waiting for
            // the host's. One vCPU: the emulator runs vCPUs in turn on the one clock anyway, and
            // 6.1 hangs bringing up a second one under -icount.
            qemu.args(["-icount", &format!("shift={shift},sleep=off")]);
            // QEMU's `max` CPU has ERMS, with which the kernel copies large buffers with
            // `rep movsb`: the emulator counts each iteration of a `rep` as an instruction, so a
            // 2 KiB copy would count 2048 where a real CPU takes tens of cycles. Without ERMS
            // (and FSRM) the kernel's copies move 8 bytes per counted instruction (`rep movsq`
            // or unrolled moves, as the kernel picks).
            ("1", CPU_COUNTING_INSTRUCTIONS)
        }
    };
    let mut child = qemu
        // Single-threaded TCG: with one host thread per vCPU (the default), 6.12 sometimes
        // oopses with "int3" in syscall_trace_enter while tracepoints are being enabled (2 of
        // 25 boots here): text patching raced by another vCPU under emulation. 0 of 30 boots
        // with thread=single. The machine has no usable KVM.
        .args([
            "-accel",
            "tcg,thread=single",
            "-m",
            "2048",
            "-smp",
            cpus,
            "-cpu",
            cpu,
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(image)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let label_ = label.to_string();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            eprintln!("xtask: {label_}: the VM did not finish in {timeout:?}; stopping it");
            // SAFETY: signals the qemu process this function started (and has not reaped).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let mut logf = std::fs::File::create(log)?;
    let mut o = Outcome {
        label: label.to_string(),
        ..Default::default()
    };
    let mut suite = String::new();
    // A test whose result has not been printed yet: programs a test starts may write to the
    // console between the name and the result.
    let mut pending: Option<String> = None;
    let mut uptimes = Vec::new();
    let reader = BufReader::new(child.stdout.take().context("qemu stdout")?);
    for line in reader.split(b'\n') {
        let line = String::from_utf8_lossy(&line?).replace('\r', "");
        writeln!(logf, "{line}")?;
        let l = line.trim();
        let marker = l.find("@@vmtest ").map(|i| &l[i + "@@vmtest ".len()..]);
        if let Some(r) = marker.and_then(|m| m.strip_prefix("kernel ")) {
            o.release = r.to_string();
            eprintln!(
                "xtask: {label}:   booted {r} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
        } else if let Some(u) = marker.and_then(|m| m.strip_prefix("uptime ")) {
            uptimes.push(u.parse::<f64>().unwrap_or(0.0));
            if let [a, b] = uptimes[..] {
                o.probe_secs = b - a;
            }
        } else if let Some(m) = marker.and_then(|m| m.strip_prefix("measured ")) {
            o.measured.push(m.to_string());
        } else if let Some(s) = marker.and_then(|m| m.strip_prefix("begin ")) {
            suite = s.to_string();
            pending = None;
        } else if let Some(rest) = marker.and_then(|m| m.strip_prefix("end ")) {
            let (s, rc) = rest.split_once(' ').unwrap_or((rest, ""));
            let rc: i32 = rc.parse().unwrap_or(-1);
            if s == "probe" {
                o.probe_rc = Some(rc);
            } else if rc != 0 {
                o.bad_suites.push(s.to_string());
            }
            suite.clear();
        } else if marker == Some("done") {
            o.done = true;
        } else if suite == "probe" {
            o.probe.push(l.to_string());
        } else if suite == "hooks" {
            eprintln!("xtask: {label}:   hooks: {l}");
            o.hooks_lines.push(l.to_string());
        } else if let Some(rest) = l.strip_prefix("test ")
            && let Some((name, result)) = rest.split_once(" ... ")
        {
            pending = Some(name.to_string());
            result_of(&mut o, &suite, &mut pending, result);
        } else if pending.is_some() {
            result_of(&mut o, &suite, &mut pending, l);
        }
    }
    let _ = child.wait();
    let _ = tx.send(());
    let count = |prefix: &str| {
        o.hooks_lines
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(prefix))
            .count()
    };
    if !o.hooks_lines.is_empty() {
        o.hooks_summary = Some(format!(
            "{} events on trampolines, {} on tracepoints",
            o.hooks_lines
                .iter()
                .filter(|l| l
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|h| h.starts_with("fentry") || h.starts_with("fexit")))
                .count(),
            count("tracepoint")
        ));
    }
    let _ = watchdog.join();
    o.secs = started.elapsed().as_secs_f64();
    Ok(o)
}

/// Record the pending test's result if `text` ends with one.
fn result_of(o: &mut Outcome, suite: &str, pending: &mut Option<String>, text: &str) {
    let Some(result) = ["ok", "FAILED", "ignored"].into_iter().find(|r| {
        text == *r || text.ends_with(&format!(" {r}")) || text.ends_with(&format!("m{r}"))
    }) else {
        return;
    };
    let name = pending.take().unwrap_or_default();
    eprintln!("xtask: {}:   {suite}::{name} ... {result}", o.label);
    o.tests.push((suite.to_string(), name, result.to_string()));
}

pub fn vmtest(opts: Opts) -> Result<()> {
    let t0 = Instant::now();
    crate::deps::ensure(crate::deps::NEEDS, crate::deps::For::Vmtest)?;
    let kernels: Vec<(&str, bool)> = KERNELS
        .iter()
        .copied()
        .filter(|(k, _)| opts.kernel == "all" || opts.kernel == *k)
        .collect();
    let suites: Vec<&str> = if opts.suites.is_empty() {
        SUITES.to_vec()
    } else {
        let mut v = Vec::new();
        for s in &opts.suites {
            let Some(known) = SUITES.iter().find(|k| *k == s) else {
                bail!("unknown suite {s}: the VMs run {}", SUITES.join(","));
            };
            v.push(*known);
        }
        v
    };
    let mut apt_ready = false;
    let images = kernels
        .iter()
        .map(|(k, _)| kernel(k, &mut apt_ready))
        .collect::<Result<Vec<_>>>()?;
    crate::build()?;
    let tests = test_binaries()?;
    let programs = build_programs()?;
    let fdtrace = root().join("target/release/fdtrace");
    eprintln!("xtask: prepared in {:.0}s", t0.elapsed().as_secs_f64());
    // The kernels boot side by side, as many at once as the host has CPUs (each VM emulates
    // its CPUs on one host thread); their results are told in kernel order.
    let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<KernelRun>>> =
        std::sync::Mutex::new(kernels.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..slots.min(kernels.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&(series, supported)) = kernels.get(i) else {
                        break;
                    };
                    let r = run_kernel(
                        series, supported, &images[i], &fdtrace, &tests, &programs, &suites, &opts,
                    );
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let mut summary = Vec::new();
    let mut failed = false;
    for r in results.into_inner().unwrap().into_iter().flatten() {
        let (ok, lines) = r?;
        failed |= !ok;
        summary.extend(lines);
    }
    eprintln!(
        "\nxtask: vmtest summary ({:.0}s in all)",
        t0.elapsed().as_secs_f64()
    );
    for s in &summary {
        eprintln!("  {s}");
    }
    if failed {
        bail!("vmtest: at least one kernel failed");
    }
    Ok(())
}

/// A kernel's run: whether it passed, and its summary lines.
type KernelRun = Result<(bool, Vec<String>)>;

/// Boot one kernel with the suites and judge its run: whether it passed, and its summary lines.
#[allow(clippy::too_many_arguments)]
fn run_kernel(
    series: &str,
    supported: bool,
    image: &Path,
    fdtrace: &Path,
    tests: &[(String, PathBuf)],
    programs: &Path,
    suites: &[&str],
    opts: &Opts,
) -> KernelRun {
    let mut summary = Vec::new();
    eprintln!("\nxtask: kernel {series}: booting {}", image.display());
    let initrd = vmdir().join(format!("initramfs-{series}.cpio"));
    // Unsupported kernels only get the probe, which must refuse.
    let run: &[&str] = if supported { suites } else { &[] };
    let sets = if opts.hooks.is_empty() {
        default_sets(series)
    } else {
        opts.hooks.clone()
    };
    initramfs(&initrd, fdtrace, tests, programs, run, &sets)?;
    let log = vmdir().join(format!("console-{series}.log"));
    let o = boot(
        series,
        image,
        &initrd,
        &log,
        Duration::from_secs(opts.timeout_min * 60),
        Clock::Host,
    )?;
    let (ok, line) = judge(run, &sets, supported, &o);
    summary.push(format!(
        "{series:>5} {:<28} {} in {:.0}s (fdtrace -d 1 -- true: {:.1}s): {line} (console: {})",
        o.release,
        if ok { "PASS" } else { "FAIL" },
        o.secs,
        o.probe_secs,
        log.display()
    ));
    eprintln!("xtask: {}", summary.last().unwrap());
    for m in &o.measured {
        summary.push(format!("{series:>5}   measured under emulation: {m}"));
        eprintln!("xtask: {}", summary.last().unwrap());
    }
    if !ok {
        // The console log is not kept by CI: show its end here.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("xtask: the last lines of {}:", log.display());
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("    {l}");
        }
    }
    Ok((ok, summary))
}

fn judge(suites: &[&str], sets: &[String], supported: bool, o: &Outcome) -> (bool, String) {
    if !o.done {
        return (false, "the VM stopped before the end".into());
    }
    if !supported {
        // fdtrace must refuse in one clear line that names the lowest supported kernel.
        let ok = o.probe_rc == Some(1) && o.probe.len() == 1 && o.probe[0].contains("5.15");
        let what = o.probe.join(" | ");
        return (
            ok,
            if ok {
                format!("unsupported, refused as expected: {what}")
            } else {
                format!(
                    "expected a one-line refusal naming 5.15, got rc {:?}: {what}",
                    o.probe_rc
                )
            },
        );
    }
    let count = |r: &str| o.tests.iter().filter(|t| t.2 == r).count();
    let (pass, fail, skip) = (count("ok"), count("FAILED"), count("ignored"));
    let mut ok = o.probe_rc == Some(0) && fail == 0 && o.bad_suites.is_empty() && pass > 0;
    let mut line = format!(
        "{pass} passed, {fail} failed, {skip} ignored, {} not run in VMs ({})",
        SKIPPED.iter().filter(|t| suites.contains(&t.0)).count() * sets.len(),
        sets.join(" and ")
    );
    if let Some(h) = &o.hooks_summary {
        line.push_str(&format!("; fdtrace hooks: {h}"));
    }
    if o.probe_rc != Some(0) {
        line.push_str(&format!("; probe failed: {}", o.probe.join(" | ")));
    }
    for t in o.tests.iter().filter(|t| t.2 == "FAILED") {
        line.push_str(&format!("; FAILED {}::{}", t.0, t.1));
    }
    if !o.bad_suites.is_empty() {
        line.push_str(&format!(
            "; suites exited non-zero: {}",
            o.bad_suites.join(",")
        ));
    }
    let missing: Vec<String> = sets
        .iter()
        .flat_map(|set| suites.iter().map(move |s| run_name(s, set)))
        .filter(|s| !o.tests.iter().any(|t| t.0 == *s))
        .collect();
    if !missing.is_empty() {
        ok = false;
        line.push_str(&format!("; no results from {}", missing.join(",")));
    }
    (ok, line)
}
