//! Builds the eBPF object (fdtrace-ebpf) with the nightly toolchain and bpf-linker, as
//! aya-template does, so a plain `cargo build` always embeds a fresh object.
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
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
