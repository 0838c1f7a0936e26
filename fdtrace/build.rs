//! Builds the eBPF object (fdtrace-ebpf) with the nightly toolchain and bpf-linker, as
//! aya-template does, so a plain `cargo build` always embeds a fresh object; and the pprof
//! messages from pprof's own `proto/profile.proto` (prost-build, the file parsed by protox: no
//! `protoc` needed).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // `cargo xtask setup` installs bpf-linker under `<workspace>/.tools/bin`; make it visible
    // to the nested eBPF build without asking the user to change PATH.
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let tools_bin = manifest_dir
        .parent()
        .context("workspace root")?
        .join(".tools/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin];
    paths.extend(std::env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PATH", std::env::join_paths(paths)?) };

    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "fdtrace-ebpf")
        .ok_or_else(|| anyhow!("fdtrace-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("fdtrace-ebpf manifest has no parent")?;
    // The eBPF object also depends on the shared event types.
    println!(
        "cargo:rerun-if-changed={}",
        root_dir.join("../fdtrace-common/src")
    );
    build_ebpf(ebpf.name.as_str(), root_dir.as_str())?;
    build_pprof(&manifest_dir.join("proto"))
}

/// `perftools.profiles.rs` in OUT_DIR from `proto/profile.proto` (github.com/google/pprof,
/// as Debian's golang-github-google-pprof-dev ships it).
fn build_pprof(dir: &std::path::Path) -> anyhow::Result<()> {
    let proto = dir.join("profile.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let files = protox::compile([&proto], [dir])
        .map_err(|e| anyhow!("parsing {}: {e}", proto.display()))?;
    prost_build::Config::new()
        .compile_fds(files)
        .with_context(|| format!("generating the messages of {}", proto.display()))
}

/// Build the eBPF crate's binaries with the nightly toolchain (`-Z build-std=core`, BTF), as
/// aya-build does, and copy them into OUT_DIR. The nested cargo's progress is kept out of the
/// build's output: only its compiler warnings are shown (as cargo warnings), and all of its
/// output when it fails.
fn build_ebpf(name: &str, root_dir: &str) -> anyhow::Result<()> {
    use std::{io::Read as _, process::Stdio};
    println!("cargo:rerun-if-changed={root_dir}");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let target = match std::env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = std::process::Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", name])
        .args([
            "--bins",
            "--message-format=json",
            "--release",
            "--target",
            target,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The nightly's own rustc, not the one running this build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {cmd:?} (is rustup installed?)"))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let progress = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut executables = Vec::new();
    let stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    for message in cargo_metadata::Message::parse_stream(stdout) {
        match message? {
            cargo_metadata::Message::CompilerArtifact(a) => {
                if let Some(exe) = a.executable {
                    executables.push((a.target.name, exe.into_std_path_buf()));
                }
            }
            cargo_metadata::Message::CompilerMessage(m) => {
                for line in m.message.rendered.unwrap_or_default().lines() {
                    println!("cargo:warning={line}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    let progress = progress.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("building the eBPF programs failed ({status}):\n{progress}");
    }
    for (name, exe) in executables {
        let dst = out_dir.join(name);
        std::fs::copy(&exe, &dst)
            .with_context(|| format!("copying {} to {}", exe.display(), dst.display()))?;
    }
    Ok(())
}
