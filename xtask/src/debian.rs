//! Debian packages fetched without touching the system: an apt configuration of its own
//! (Debian's suites that carry what the tests need, kernels and Go toolchains) and packages
//! unpacked where the caller says, never installed.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::run;

/// apt-get or apt-cache with the configuration under `dir`.
pub fn apt(dir: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    for (k, v) in [
        ("Dir::Etc::sourcelist", PathBuf::from("/dev/null")),
        ("Dir::Etc::sourceparts", dir.join("sources")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
        ("Dir::Cache::archives", dir.join("archives")),
    ] {
        c.arg("-o").arg(format!("{k}={}", v.display()));
    }
    c
}

/// Write the configuration under `dir` and read the suites' package lists.
pub fn apt_setup(dir: &Path) -> Result<()> {
    for d in ["sources", "lists/partial", "cache", "archives/partial"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(
        dir.join("sources/debian.sources"),
        "Types: deb\nURIs: http://deb.debian.org/debian\n\
         Suites: bullseye bookworm bookworm-backports trixie\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    run(apt(dir, "apt-get").args(["update", "-q"]))
}

/// Download `packages` and unpack them all into `into` (as `dpkg-deb -x` does: files only, no
/// scripts run).
pub fn unpack(apt_dir: &Path, packages: &[&str], into: &Path) -> Result<()> {
    let dl = apt_dir.join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run(apt(apt_dir, "apt-get")
        .arg("download")
        .args(packages)
        .current_dir(&dl))?;
    std::fs::create_dir_all(into)?;
    for e in std::fs::read_dir(&dl)?.flatten() {
        let deb = e.path();
        if deb.extension().is_some_and(|x| x == "deb") {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(into))
                .with_context(|| format!("unpacking {}", deb.display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(&dl);
    Ok(())
}
