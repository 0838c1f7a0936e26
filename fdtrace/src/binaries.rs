//! The binaries a traced process maps, reached from the process's own view of its files. A path
//! in `/proc/PID/maps` names a file in the process's mount namespace: in a container, the host
//! file at that path (if any) is a different file, and a binary deleted or replaced since it was
//! mapped (a rolling deploy) is no longer at its path at all. Each mapped binary is opened once,
//! through `/proc/PID/map_files/` (the mapped file itself) or else `/proc/PID/root/PATH` when
//! its device and inode match the mapping's, and kept open for the session, so that stacks are
//! unwound and symbolized from the right file even after the process has exited. A binary that
//! cannot be reached so is never read from a host path that merely has the same name.
use std::{
    collections::HashMap,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// A mapping's file as `/proc/PID/maps` describes it.
pub struct Mapped<'a> {
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    pub path: &'a Path,
    /// `makedev(major, minor)` of the maps line.
    pub dev: u64,
    pub inode: u64,
}

/// Files opened so far, by (device, inode) of their mapping: (the file, the path fdtrace reads it
/// through). Kept open for the life of fdtrace.
type Registry = HashMap<(u64, u64), Option<(std::fs::File, PathBuf)>>;

fn registry() -> &'static Mutex<Registry> {
    static R: std::sync::OnceLock<Mutex<Registry>> = std::sync::OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The path fdtrace reads `m`'s file through (`/proc/self/fd/N` of a descriptor it keeps), or
/// None when the process's own file cannot be reached.
pub fn source(m: &Mapped) -> Option<PathBuf> {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    reg.entry((m.dev, m.inode))
        .or_insert_with(|| {
            let f = open(m)?;
            let via = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
            Some((f, via))
        })
        .as_ref()
        .map(|(_, p)| p.clone())
}

/// [`source`] of a line of `/proc/PID/maps` (None for anonymous and special mappings).
pub fn source_of(pid: u32, m: &procfs::process::MemoryMap) -> Option<PathBuf> {
    let procfs::process::MMapPath::Path(path) = &m.pathname else {
        return None;
    };
    source(&Mapped {
        pid,
        start: m.address.0,
        end: m.address.1,
        path,
        dev: makedev(m.dev.0, m.dev.1),
        inode: m.inode,
    })
}

/// Where the first page of `path`'s file (offset 0) is mapped in `maps`.
pub fn first_page(maps: &procfs::process::MemoryMaps, path: &Path) -> Option<u64> {
    maps.iter()
        .find(|x| {
            x.offset == 0 && matches!(&x.pathname, procfs::process::MMapPath::Path(p) if p == path)
        })
        .map(|x| x.address.0)
}

fn open(m: &Mapped) -> Option<std::fs::File> {
    // The mapped file itself, whatever namespace or state its path is in (root only).
    let map_files = format!("/proc/{}/map_files/{:x}-{:x}", m.pid, m.start, m.end);
    if let Ok(f) = std::fs::File::open(&map_files) {
        return Some(f);
    }
    // The same path in the process's root, or on the host, only if it is the same file.
    let rooted = Path::new(&format!("/proc/{}/root", m.pid)).join(m.path.strip_prefix("/").ok()?);
    for p in [rooted.as_path(), m.path] {
        if let Ok(f) = std::fs::File::open(p)
            && let Ok(meta) = f.metadata()
            && same_file(&meta, m.dev, m.inode)
        {
            return Some(f);
        }
    }
    tracing::debug!(
        "{} of pid {}: the process's own file cannot be reached; its frames stay unsymbolized",
        m.path.display(),
        m.pid
    );
    None
}

fn same_file(meta: &std::fs::Metadata, dev: u64, inode: u64) -> bool {
    meta.ino() == inode && meta.dev() == dev
}

/// `makedev` of a maps line's `major:minor`.
pub fn makedev(major: i32, minor: i32) -> u64 {
    libc::makedev(major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own executable: reached through map_files (as root) or its path, and read
    /// through a descriptor that stays valid.
    #[test]
    fn a_mapped_binary_is_opened_once_and_read_through_a_kept_descriptor() {
        let pid = std::process::id();
        let maps = procfs::process::Process::new(pid as i32)
            .unwrap()
            .maps()
            .unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let m = maps
            .iter()
            .find(|m| matches!(&m.pathname, procfs::process::MMapPath::Path(p) if *p == exe))
            .expect("the executable is mapped");
        let mapped = Mapped {
            pid,
            start: m.address.0,
            end: m.address.1,
            path: &exe,
            dev: makedev(m.dev.0, m.dev.1),
            inode: m.inode,
        };
        let via = source(&mapped).expect("reachable");
        assert!(via.starts_with("/proc/self/fd/"), "{}", via.display());
        assert_eq!(std::fs::read(&via).unwrap(), std::fs::read(&exe).unwrap());
        assert_eq!(source(&mapped), Some(via));
        // A mapping whose device and inode match no file at its path is never read from there.
        let wrong = Mapped {
            pid: u32::MAX,
            inode: m.inode + 1,
            ..mapped
        };
        assert_eq!(source(&wrong), None);
    }
}
