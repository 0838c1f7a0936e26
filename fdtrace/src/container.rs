//! Which container a process belongs to, from /proc: the pid it has in its own pid namespace
//! (`NSpid`), its cgroup (v2) path and, where the path holds one, the container id, its runtime
//! and the Kubernetes pod UID.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The process's cgroup v2 path (`/system.slice/docker-3f2a….scope`).
    pub cgroup: Option<String>,
    /// The container id found in that path (64 hex digits).
    pub id: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman`, as the path names it.
    pub runtime: Option<String>,
    /// The Kubernetes pod UID, for a pod's container.
    pub pod_uid: Option<String>,
    /// The process's pid in each pid namespace, the host's first, its own last (`NSpid`).
    pub nspid: Vec<u32>,
}

impl Container {
    /// Anything that shows the process is not a plain host process: another pid namespace or
    /// a container id.
    pub fn is_contained(&self) -> bool {
        self.nspid.len() > 1 || self.id.is_some()
    }

    /// One line for the text report, e.g. `docker container 3f2a9c1b7d0e, pid 1 in its
    /// namespace; cgroup /system.slice/docker-3f2a….scope`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = &self.id {
            let short: String = id.chars().take(12).collect();
            parts.push(format!(
                "{} container {short}",
                self.runtime.as_deref().unwrap_or("a")
            ));
        }
        if let Some(p) = &self.pod_uid {
            parts.push(format!("pod {p}"));
        }
        if self.nspid.len() > 1 {
            parts.push(format!(
                "pid {} in its namespace",
                self.nspid.last().copied().unwrap_or(0)
            ));
        }
        let mut s = parts.join(", ");
        if let Some(c) = &self.cgroup {
            s.push_str(&format!("; cgroup {c}"));
        }
        s
    }
}

/// The container of `pid` (None when /proc cannot be read).
pub fn of(pid: u32) -> Option<Container> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    Some(parse(&status, &cgroup))
}

/// From the text of `/proc/PID/status` and `/proc/PID/cgroup`.
pub fn parse(status: &str, cgroup: &str) -> Container {
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // cgroup v2: the one line `0::/path`.
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string);
    let (id, runtime) = path.as_deref().map(container_id).unwrap_or((None, None));
    Container {
        pod_uid: path.as_deref().and_then(pod_uid),
        cgroup: path,
        id,
        runtime,
        nspid,
    }
}

/// The container id a cgroup directory's name holds (`docker-<id>.scope`, `cri-containerd-<id>`,
/// `<id>`…), with the prefix before it.
pub fn id_in_name(part: &str) -> Option<(&str, &str)> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    let (prefix, id) = match name.rfind(['-', ':']) {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((prefix, id))
}

/// The last path component holding 64 hex digits, and the runtime its prefix names.
fn container_id(path: &str) -> (Option<String>, Option<String>) {
    for part in path.rsplit('/') {
        if let Some((prefix, id)) = id_in_name(part) {
            let runtime = match prefix {
                "docker" => Some("docker"),
                "cri-containerd" | "containerd" => Some("containerd"),
                "crio" => Some("cri-o"),
                "libpod" => Some("podman"),
                // cgroupfs driver: /docker/<id>, /kubepods/…/pod<uid>/<id>.
                "" if path.contains("/docker/") => Some("docker"),
                _ => None,
            };
            return (Some(id.to_string()), runtime.map(str::to_string));
        }
    }
    (None, None)
}

/// `pod<uid>` in a kubepods path (systemd's `_` for `-` undone).
fn pod_uid(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(|part| {
        let name = part.strip_suffix(".slice").unwrap_or(part);
        // cgroupfs: `pod<uid>`; systemd: `kubepods-burstable-pod<uid with _>`.
        let uid = match name.strip_prefix("pod") {
            Some(uid) => uid,
            None => name.split('-').find_map(|t| t.strip_prefix("pod"))?,
        };
        (uid.len() >= 32).then(|| uid.replace('_', "-"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";

    #[test]
    fn runtimes_and_pods_are_read_from_the_cgroup_path() {
        let cases = [
            (
                format!("0::/system.slice/docker-{ID}.scope"),
                "docker",
                None,
            ),
            (format!("0::/docker/{ID}"), "docker", None),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container"),
                "podman",
                None,
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"),
            ),
            (
                format!("0::/kubepods/besteffort/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/{ID}"),
                "",
                Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-{ID}.scope"
                ),
                "cri-o",
                Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"),
            ),
        ];
        for (cgroup, runtime, pod) in cases {
            let c = parse("NSpid:\t4242\t1\n", &cgroup);
            assert_eq!(c.id.as_deref(), Some(ID), "{cgroup}");
            assert_eq!(c.runtime.as_deref().unwrap_or(""), runtime, "{cgroup}");
            assert_eq!(c.pod_uid.as_deref(), pod, "{cgroup}");
            assert_eq!(c.nspid, vec![4242, 1]);
            assert!(c.is_contained());
        }
        let host = parse(
            "NSpid:\t77\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
        );
        assert_eq!(host.id, None);
        assert!(!host.is_contained());
        assert_eq!(
            host.cgroup.as_deref(),
            Some("/user.slice/user-0.slice/session-1.scope")
        );
        let d = parse(
            "NSpid:\t4242\t1\n",
            &format!("0::/system.slice/docker-{ID}.scope"),
        )
        .describe();
        assert_eq!(
            d,
            format!(
                "docker container 3f2a9c1b7d0e, pid 1 in its namespace; cgroup /system.slice/docker-{ID}.scope"
            )
        );
    }

    #[test]
    fn this_process_is_read() {
        let c = of(std::process::id()).unwrap();
        assert_eq!(c.nspid.first().copied(), Some(std::process::id()));
    }
}
