//! The VMs' initramfs: a `newc` cpio archive, and the files that go into it (a binary's shared
//! libraries, a directory's files).
use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::output;

/// A `newc` cpio archive, the initramfs format.
pub(crate) struct Cpio {
    out: Vec<u8>,
    ino: u32,
    seen: BTreeSet<PathBuf>,
}

impl Cpio {
    /// An archive with the directories a VM's userland needs and busybox in /bin.
    pub(crate) fn skeleton() -> Result<Self> {
        let mut c = Cpio::new();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/root",
        ] {
            c.dir(Path::new(d));
        }
        c.file(Path::new("/bin/busybox"), Path::new("/bin/busybox"))?;
        Ok(c)
    }

    pub(crate) fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
            seen: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// The directory and its parents, once each.
    pub(crate) fn dir(&mut self, path: &Path) {
        if path == Path::new("/") || path.as_os_str().is_empty() || self.seen.contains(path) {
            return;
        }
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        self.seen.insert(path.to_path_buf());
        self.entry(&path.to_string_lossy(), 0o040755, &[]);
    }

    pub(crate) fn bytes(&mut self, path: &Path, mode: u32, data: &[u8]) {
        if !self.seen.insert(path.to_path_buf()) {
            return;
        }
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        self.entry(&path.to_string_lossy(), 0o100000 | mode, data);
    }

    /// The host file `src` (symlinks followed) at `dst`, with its permissions.
    pub(crate) fn file(&mut self, dst: &Path, src: &Path) -> Result<()> {
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        let mode = std::fs::metadata(src)?.permissions().mode() & 0o7777;
        self.bytes(dst, mode, &data);
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Shared libraries (and the dynamic loader) a binary needs, from `ldd`.
pub(crate) fn libraries(bin: &Path) -> Vec<PathBuf> {
    let Ok(out) = output(Command::new("ldd").arg(bin)) else {
        return Vec::new(); // static
    };
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let p = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// Every file under `dir`.
pub(super) fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
