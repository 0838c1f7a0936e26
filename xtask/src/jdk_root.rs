//! A second JDK for the Java tests: OpenJDK 21, which Debian ships from trixie on. Its `java`
//! needs trixie's C library (2.38 or newer; bookworm has 2.36), so it runs in a root of its own
//! (`chroot`), unpacked under target/jdk21-root with the few libraries it needs, never
//! installed: the system is left as it is. The tests attach to the JVM there as to a process in
//! a container (its files through `/proc/PID/root`).
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::root;

/// The JDK's home inside the root.
pub const JAVA_HOME: &str = "/usr/lib/jvm/java-21-openjdk-amd64";

const PACKAGES: &[&str] = &[
    "openjdk-21-jre-headless",
    "libc6/trixie",
    "libgcc-s1/trixie",
    "libstdc++6/trixie",
    "zlib1g/trixie",
];

/// The root, unpacked the first time.
pub fn ensure() -> Result<PathBuf> {
    let dir = root().join("target/jdk21");
    let r = dir.join("root");
    let java = r.join(JAVA_HOME.trim_start_matches('/')).join("bin/java");
    if !java.is_file() {
        eprintln!("xtask: fetching OpenJDK 21 and its C library from Debian trixie");
        let _ = std::fs::remove_dir_all(&r);
        let apt = dir.join("apt");
        crate::debian::apt_setup(&apt)?;
        crate::debian::unpack(&apt, PACKAGES, &r).context("fetching OpenJDK 21")?;
        // Debian's merged /usr: the loader is asked for as /lib64/ld-linux-x86-64.so.2.
        for (link, to) in [
            ("lib64", "usr/lib64"),
            ("lib", "usr/lib"),
            ("bin", "usr/bin"),
        ] {
            let at = r.join(link);
            if std::fs::symlink_metadata(&at).is_err() {
                std::os::unix::fs::symlink(to, &at)?;
            }
        }
        // Mount points for the test's /proc and /dev/null, and a /tmp for its classes.
        for d in ["proc", "dev", "tmp"] {
            std::fs::create_dir_all(r.join(d))?;
        }
        std::fs::write(r.join("dev/null"), b"")?;
        anyhow::ensure!(java.is_file(), "OpenJDK 21: no {}", java.display());
    }
    Ok(r)
}
