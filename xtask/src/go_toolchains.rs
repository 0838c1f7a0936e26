//! The Go releases the Go tests build their programs with, besides the system's `go` (Debian
//! bookworm's 1.19): 1.21, 1.22 and 1.23 from bookworm-backports and 1.24 from trixie, unpacked
//! under target/go-toolchains (never installed: the system is left as it is).
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::root;

/// The releases, as Debian names their packages (`golang-1.21-go`, `golang-1.21-src`).
pub const RELEASES: &[&str] = &["1.21", "1.22", "1.23", "1.24"];

/// The GOROOT of each release in [`RELEASES`], downloaded the first time.
pub fn ensure() -> Result<Vec<PathBuf>> {
    let dir = root().join("target/go-toolchains");
    let unpacked = dir.join("root");
    let goroot = |v: &str| unpacked.join(format!("usr/lib/go-{v}"));
    let missing: Vec<&str> = RELEASES
        .iter()
        .copied()
        .filter(|v| !goroot(v).join("bin/go").is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: fetching Go {} from Debian", missing.join(", "));
        let apt = dir.join("apt");
        crate::debian::apt_setup(&apt)?;
        let packages: Vec<String> = missing
            .iter()
            .flat_map(|v| [format!("golang-{v}-go"), format!("golang-{v}-src")])
            .collect();
        let names: Vec<&str> = packages.iter().map(String::as_str).collect();
        crate::debian::unpack(&apt, &names, &unpacked)
            .with_context(|| format!("fetching Go {}", missing.join(", ")))?;
    }
    RELEASES
        .iter()
        .map(|v| {
            let r = goroot(v);
            anyhow::ensure!(r.join("bin/go").is_file(), "Go {v}: no {}", r.display());
            Ok(r)
        })
        .collect()
}
