//! What `/proc` says about a process: its descriptors (the ground truth), its command and its
//! executable mappings (needed to unwind and symbolize its stacks).
use std::path::PathBuf;

use crate::model::{FdKind, O_CLOEXEC};

/// One descriptor as `/proc/PID/fd` and `/proc/PID/fdinfo` show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcFd {
    pub fd: i32,
    pub target: String,
    pub kind: FdKind,
    pub cloexec: bool,
    /// How long ago the descriptor was created, for the kinds whose inode is created with it
    /// (pipes: the inode's change time is its birth); None for the others.
    pub age_ns: Option<u64>,
}

/// An executable, file-backed mapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The file as the process names it (in its own mount namespace).
    pub path: PathBuf,
    /// Where fdtrace reads that file (see `binaries`); None when the process's own file could
    /// not be reached, and then it is not read at all.
    pub source: Option<PathBuf>,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

pub fn exists(pid: u32) -> bool {
    // A zombie has no memory any more: treat it as gone.
    match procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) {
        Ok(stat) => stat.state != 'Z' && stat.state != 'X',
        Err(_) => false,
    }
}

pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Parse the `flags:` line of an fdinfo file (octal).
pub fn fdinfo_flags(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// The descriptors the process holds now, in descriptor order. Descriptors that vanish while
/// being read are skipped.
///
/// Each descriptor costs three short system calls here (`readlinkat` and `openat`/`read` of its
/// fdinfo, relative to the open `fd` and `fdinfo` directories, so the kernel does not walk
/// `/proc/PID/…` again for each), not the six of `read_link` and `read_to_string` by path:
/// attaching to a process that holds 100,000 descriptors reads them all once.
pub fn fds(pid: u32) -> std::io::Result<Vec<ProcFd>> {
    use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
    let fd_dir_path = format!("/proc/{pid}/fd");
    let fd_dir = std::fs::File::open(&fd_dir_path)?;
    let info_dir = std::fs::File::open(format!("/proc/{pid}/fdinfo")).ok();
    let mut link_buf = vec![0u8; 4096];
    let mut info_buf = [0u8; 1024];
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&fd_dir_path)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(fd) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cname) = std::ffi::CString::new(name.as_bytes()) else {
            continue;
        };
        // SAFETY: a valid directory descriptor, a NUL-terminated name and a buffer of the
        // given length.
        let n = unsafe {
            libc::readlinkat(
                fd_dir.as_raw_fd(),
                cname.as_ptr(),
                link_buf.as_mut_ptr().cast(),
                link_buf.len(),
            )
        };
        if n < 0 {
            continue;
        }
        let target = String::from_utf8_lossy(&link_buf[..n as usize]).into_owned();
        let flags = info_dir
            .as_ref()
            .and_then(|d| read_at(d.as_raw_fd(), &cname, &mut info_buf))
            .and_then(fdinfo_flags)
            .unwrap_or(0);
        let kind = FdKind::from_link(&target);
        out.push(ProcFd {
            fd,
            kind,
            age_ns: if kind == FdKind::Pipe && pipe_times_are_births() {
                birth_age_ns(&entry.path())
            } else {
                None
            },
            target,
            cloexec: flags & O_CLOEXEC != 0,
        });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// The start of the file `name` in the directory `dir` (one `read`: enough for an fdinfo's
/// first lines, where `flags` is), as text.
fn read_at<'a>(dir: i32, name: &std::ffi::CStr, buf: &'a mut [u8]) -> Option<&'a str> {
    // SAFETY: a directory descriptor and a NUL-terminated name; the descriptor opened here is
    // closed below.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is writable for its length; `fd` is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()
}

/// Anonymous pipes keep their inode times from their creation on Linux 6.15 and newer (commit
/// "pipe: don't update {a,c,m}time for anonymous pipes"); older kernels update them on every
/// read and write, so the times there tell the last use, not the birth.
fn pipe_times_are_births() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 15, 0))
    })
}

/// Time since the change time of the inode `path` (a `/proc/PID/fd/N` link) refers to.
fn birth_age_ns(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    let ctime_ns = u64::try_from(m.ctime()).ok()? * 1_000_000_000 + m.ctime_nsec() as u64;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    (ctime_ns > 0).then(|| now_ns.saturating_sub(ctime_ns))
}

/// The executable file-backed mappings of the process.
pub fn exec_mappings(pid: u32) -> Vec<Mapping> {
    exec_maps(pid).0
}

/// The executable mappings of a process: those of files (as [`exec_mappings`]), and the
/// anonymous ones (JIT-compiled code) as (start, end), from one read of its maps.
pub fn exec_maps(pid: u32) -> (Vec<Mapping>, Vec<(u64, u64)>) {
    use procfs::process::{MMPermissions, MMapPath};
    let Ok(maps) = procfs::process::Process::new(pid as i32).and_then(|p| p.maps()) else {
        return Default::default();
    };
    let mut files = Vec::new();
    let mut jit = Vec::new();
    for m in maps
        .into_iter()
        .filter(|m| m.perms.contains(MMPermissions::EXECUTE))
    {
        match &m.pathname {
            MMapPath::Path(path) => files.push(Mapping {
                start: m.address.0,
                end: m.address.1,
                offset: m.offset,
                source: crate::binaries::source_of(pid, &m),
                path: path.clone(),
            }),
            MMapPath::Anonymous => jit.push((m.address.0, m.address.1)),
            _ => {}
        }
    }
    (files, jit)
}

/// The process's id in its own pid namespace (the last of `NSpid`), None when unreadable.
pub fn nspid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The command line of a process, one argument per element (empty when unreadable).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where `/proc/PID/fd/FD` points now (None when it is gone).
pub fn fd_link(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The flags of a descriptor (`O_CLOEXEC` for close-on-exec among them), from its fdinfo.
pub fn fd_flags(pid: u32, fd: i32) -> Option<u32> {
    fdinfo_flags(&std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?)
}

/// The thread-group id of a task (a thread's process), from /proc.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft and hard RLIMIT_NOFILE of a process (None for "unlimited").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NofileLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Parse the "Max open files" line of /proc/PID/limits.
pub fn parse_nofile_limit(limits: &str) -> Option<NofileLimit> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| -> Option<Option<u64>> {
        match v? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some(NofileLimit {
        soft: parse(nums.next())?,
        hard: parse(nums.next())?,
    })
}

pub fn nofile_limit(pid: u32) -> Option<NofileLimit> {
    parse_nofile_limit(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_flags() {
        let s = "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t7\n";
        assert_eq!(fdinfo_flags(s), Some(0o2100002));
        assert_eq!(fdinfo_flags("pos: 0\n"), None);
    }

    #[test]
    fn reads_own_descriptors() {
        let me = std::process::id();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let fds = fds(me).unwrap();
        let got = fds.iter().find(|p| p.fd == fd).expect("own fd listed");
        assert!(got.target.ends_with("/status"), "{got:?}");
        // std opens files with O_CLOEXEC.
        assert!(got.cloexec);
        assert!(exists(me));
        assert!(!exec_mappings(me).is_empty());
    }

    #[test]
    fn nofile_limit_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95426                95426                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(
            parse_nofile_limit(text),
            Some(NofileLimit {
                soft: Some(1024),
                hard: Some(524288)
            })
        );
        let text = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_nofile_limit(text),
            Some(NofileLimit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(parse_nofile_limit("nothing"), None);
        assert!(nofile_limit(std::process::id()).is_some());
    }
}
