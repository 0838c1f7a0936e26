//! `cargo xtask setup|build|demo|test|bench|vmtest`: everything needed on a fresh machine, from the
//! project's own files.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod debian;
mod deps;
mod go_toolchains;
mod install;
mod jdk_root;
mod vmtest;

const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(name = "xtask")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly rust-src, bpf-linker) and check the machine.
    Setup,
    /// Setup, then build everything in release mode (target/release/fdtrace).
    Build,
    /// Build, then trace the bundled demo program and show the leaks fdtrace finds.
    Demo,
    /// Build, then install fdtrace into PREFIX/bin, with its man pages and shell completions
    /// where the system looks for them (root for the default prefix).
    Install {
        /// Where to install (PREFIX/bin/fdtrace, PREFIX/share/man/man1, …).
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Build, then run every test: unit tests and the privileged integration tests.
    Test,
    /// Build, then measure fdtrace's overhead against baselines (root; see docs/PERFORMANCE.md).
    Bench(bench::Opts),
    /// Build, then run the privileged integration tests on other kernels under QEMU.
    Vmtest(vmtest::Opts),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Install Debian packages (root).
/// Waits up to 10 minutes for another apt or dpkg to finish.
fn apt_install(pkgs: &[&str]) -> Result<()> {
    const WAIT: &str = "DPkg::Lock::Timeout=600";
    run(Command::new("apt-get").args(["-o", WAIT, "update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["-o", WAIT, "install", "-y", "-q", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tools_dir() -> PathBuf {
    root().join(".tools")
}

fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![tools_dir().join("bin")];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("PATH")
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("the nightly toolchain is needed to build the eBPF programs")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: nightly rust-src: present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker built against the LLVM the nightly toolchain ships (no prebuilt binary needed).
fn ensure_bpf_linker() -> Result<()> {
    let bin = tools_dir().join("bin/bpf-linker");
    if bin.exists()
        && let Ok(v) = output(Command::new(&bin).arg("--version"))
        && v.contains(BPF_LINKER_VERSION)
    {
        eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION}: present");
        return Ok(());
    }
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` names no LLVM version")?
        .to_string();
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    let prefix = tools_dir().join("llvm");
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    for name in [
        std::ffi::OsString::from("libLLVM.so"),
        lib.file_name().context("lib name")?.to_os_string(),
    ] {
        let link = plib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
            "--root",
        ])
        .arg(tools_dir())
        .env("LLVM_PREFIX", &prefix)
        // With its bin directory on the PATH, cargo gives no advice to add it.
        .env("PATH", path_with_tools()))
}

fn check_machine() {
    let root_user = output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0");
    let checks = [
        (
            root_user,
            "running as root (fdtrace needs root to load eBPF programs; run it with sudo)",
        ),
        (
            Path::new("/sys/kernel/btf/vmlinux").exists(),
            "kernel BTF at /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF=y)",
        ),
        (
            Path::new("/sys/kernel/tracing/events").exists(),
            "tracefs mounted at /sys/kernel/tracing (fdtrace mounts it itself when run as root)",
        ),
    ];
    for (ok, what) in checks {
        eprintln!("xtask: {} {what}", if ok { "ok:     " } else { "missing:" });
    }
    deps::report();
}

fn setup() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    check_machine();
    Ok(())
}

fn build() -> Result<()> {
    setup()?;
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "fdtrace"])
        .current_dir(root())
        .env("PATH", path_with_tools()))
}

fn demo() -> Result<()> {
    build()?;
    let out = root().join("target/demo");
    std::fs::create_dir_all(&out)?;
    let bin = out.join("imgsrv");
    run(Command::new("cc")
        .args(["-g", "-O0", "-o"])
        .arg(&bin)
        .arg(root().join("demo/imgsrv.c")))?;
    let data = out.join("data");
    std::fs::create_dir_all(&data)?;
    eprintln!(
        "\nxtask: tracing the demo: `fdtrace -d 4 -- {}` (a tiny image service that leaks)\n",
        bin.display()
    );
    let fdtrace = root().join("target/release/fdtrace");
    let mut cmd = if output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0") {
        Command::new(&fdtrace)
    } else {
        eprintln!("xtask: not root; running fdtrace through sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&fdtrace);
        sudo
    };
    cmd.args(["-d", "4", "--"]).arg(&bin).arg(&data);
    run(&mut cmd)
}

fn test() -> Result<()> {
    // Everything the tests need, before anything is built.
    deps::ensure(deps::NEEDS, deps::For::Test)?;
    let go_roots = go_toolchains::ensure()?;
    let jdk21 = jdk_root::ensure()?;
    build()?;
    run(Command::new("cargo")
        .args([
            "test",
            "--workspace",
            "--exclude",
            "fdtrace-ebpf",
            "--release",
        ])
        .args(["--", "--test-threads=1"])
        .current_dir(root())
        .env("PATH", path_with_tools())
        .env(
            "FDTRACE_BIN",
            root().join("target/release/fdtrace").as_os_str(),
        )
        .env("FDTRACE_GO_ROOTS", std::env::join_paths(go_roots)?)
        .env("FDTRACE_JDK21_ROOT", &jdk21)
        .env("FDTRACE_JDK21_HOME", jdk_root::JAVA_HOME))
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Setup => setup(),
        Cmd::Build => build(),
        Cmd::Demo => demo(),
        Cmd::Install { prefix } => {
            build()?;
            install::install(&root().join("target/release/fdtrace"), &prefix)
        }
        Cmd::Test => test(),
        Cmd::Bench(opts) => bench::bench(opts),
        Cmd::Vmtest(opts) => vmtest::vmtest(opts),
    }
}
