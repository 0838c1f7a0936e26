//! A cgroup v2 as the target (`--cgroup PATH`, `--container ID`): where the cgroup v2 hierarchy
//! is mounted, the ids of the cgroup and of those below it (what the kernel filter compares
//! with `bpf_get_current_cgroup_id`), the processes in it, and finding a container's cgroup by a
//! prefix of its id.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// The magic number of a cgroup v2 file system (`statfs`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How deep `find_container` looks below the root (Kubernetes' cgroupfs layout is 4 deep).
const SEARCH_DEPTH: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Its directory on this host (`/sys/fs/cgroup/system.slice/docker-3f2a….scope`).
    pub dir: PathBuf,
    /// Its path in the hierarchy, as `/proc/PID/cgroup` shows it (`/system.slice/docker-….scope`).
    pub path: String,
    /// Its id: the inode number of its directory, which the kernel's helpers return.
    pub id: u64,
}

impl Cgroup {
    /// The cgroup v2 at `arg`: a directory under the cgroup v2 mount, or a path in the
    /// hierarchy as `/proc/PID/cgroup` shows it (`/docker/3f2a…`).
    pub fn resolve(arg: &Path) -> Result<Cgroup> {
        let mount = mount_point()?;
        let dir = if arg.starts_with(&mount) {
            arg.to_path_buf()
        } else {
            // A path in the hierarchy; or else a directory elsewhere, which is refused below.
            let in_hierarchy = mount.join(arg.strip_prefix("/").unwrap_or(arg));
            if in_hierarchy.is_dir() || !arg.is_dir() {
                in_hierarchy
            } else {
                arg.to_path_buf()
            }
        };
        if !dir.is_dir() {
            bail!(
                "no cgroup {}: {} is not a directory (give a directory under {}, or a path as \
                 /proc/PID/cgroup shows it after `0::`)",
                arg.display(),
                dir.display(),
                mount.display()
            );
        }
        Self::at(&mount, &dir)
    }

    fn at(mount: &Path, dir: &Path) -> Result<Cgroup> {
        let dir = dir.canonicalize()?;
        if !is_cgroup2(&dir) {
            bail!(
                "{} is not a cgroup v2 directory (the cgroup v2 hierarchy is at {})",
                dir.display(),
                mount.display()
            );
        }
        let rel = dir.strip_prefix(mount).unwrap_or(&dir);
        if rel.components().count() == 0 {
            bail!(
                "{} is the root cgroup, which holds every process of the host: give a \
                 container's cgroup, or trace a process with -p PID",
                dir.display()
            );
        }
        let id = std::fs::metadata(&dir)?.ino();
        Ok(Cgroup {
            path: format!("/{}", rel.display()),
            dir,
            id,
        })
    }

    /// The cgroup of the container whose id starts with `prefix`.
    pub fn of_container(prefix: &str) -> Result<Cgroup> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!(
                "--container {prefix}: a container id is up to 64 hexadecimal digits, as \
                 `docker ps`, `crictl ps` or `podman ps` show it"
            );
        }
        let mount = mount_point()?;
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        containers_under(&mount, 0, &mut found);
        found.retain(|(id, _)| id.starts_with(&prefix));
        // The same id at several depths (a runtime's nested cgroups): the outermost.
        found.sort_by_key(|(id, dir)| (id.clone(), dir.components().count()));
        found.dedup_by(|b, a| a.0 == b.0);
        match found.as_slice() {
            [] => bail!(
                "no container id starts with {prefix} in the cgroup v2 hierarchy at {} (`docker \
                 ps --no-trunc`, `crictl ps` or `podman ps` list them; with --cgroup PATH any \
                 cgroup can be traced)",
                mount.display()
            ),
            [(_, dir)] => Self::at(&mount, dir),
            many => bail!(
                "--container {prefix} matches {} containers ({}): give more of the id",
                many.len(),
                many.iter()
                    .map(|(id, _)| &id[..12])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Is the cgroup still there (the same one: its directory has the same id)?
    pub fn exists(&self) -> bool {
        std::fs::metadata(&self.dir).is_ok_and(|m| m.ino() == self.id)
    }

    /// The ids of the cgroup and of every cgroup below it (none once it is removed).
    pub fn ids(&self) -> std::collections::BTreeSet<u64> {
        let mut ids = std::collections::BTreeSet::new();
        if self.exists() {
            ids.insert(self.id);
            ids_under(&self.dir, &mut ids);
        }
        ids
    }

    /// Every process in the cgroup and the cgroups below it, in pid order.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        processes_under(&self.dir, &mut pids);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// What it is, for people: `cgroup /docker/3f2a… (docker container 3f2a9c1b7d0e)`.
    pub fn describe(&self) -> String {
        let c = crate::container::parse("", &format!("0::{}", self.path));
        match (&c.id, &c.pod_uid) {
            (Some(_), _) | (None, Some(_)) => format!("cgroup {} ({})", self.path, {
                let d = c.describe();
                d.split(';').next().unwrap_or_default().to_string()
            }),
            (None, None) => format!("cgroup {}", self.path),
        }
    }
}

fn processes_under(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                processes_under(&e.path(), pids);
            }
        }
    }
}

fn ids_under(dir: &Path, ids: &mut std::collections::BTreeSet<u64>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir())
                && let Ok(m) = e.metadata()
            {
                ids.insert(m.ino());
                ids_under(&e.path(), ids);
            }
        }
    }
}

fn containers_under(dir: &Path, depth: usize, found: &mut Vec<(String, PathBuf)>) {
    if depth > SEARCH_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name();
        if let Some((_, id)) = crate::container::id_in_name(&name.to_string_lossy()) {
            found.push((id.to_ascii_lowercase(), e.path()));
        }
        containers_under(&e.path(), depth + 1, found);
    }
}

fn is_cgroup2(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed struct for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host).
pub fn mount_point() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    match cgroup2_mount(&text) {
        Some(p) => Ok(p),
        None => bail!(
            "this host has no cgroup v2 hierarchy (cgroup v1 only): --cgroup and --container \
             need cgroup v2; trace the container's processes with -p PID -f instead"
        ),
    }
}

/// The mount point of the first cgroup2 file system in the text of `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "\
24 29 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID: &str = "\
33 24 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
35 33 0:30 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
";
    const V1: &str = "\
33 24 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 33 0:30 / /sys/fs/cgroup/cpu\\040set rw,nosuid - cgroup cgroup rw,cpu
";

    #[test]
    fn the_cgroup2_mount_is_found_on_v2_and_hybrid_hosts_only() {
        assert_eq!(cgroup2_mount(V2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount(V1), None);
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
    }

    #[test]
    fn a_container_is_described_by_its_path() {
        let id = "3f2a9c1b7d0e".repeat(6);
        let id = &id[..64];
        let c = Cgroup {
            dir: PathBuf::new(),
            path: format!("/system.slice/docker-{id}.scope"),
            id: 7,
        };
        assert_eq!(
            c.describe(),
            format!("cgroup /system.slice/docker-{id}.scope (docker container 3f2a9c1b7d0e)")
        );
        let plain = Cgroup {
            path: "/batch/job-7".into(),
            ..c
        };
        assert_eq!(plain.describe(), "cgroup /batch/job-7");
    }
}
