//! What the tests, the bench and the VM tests need from the machine, and the Debian package of
//! each: one list, checked by `cargo xtask setup`, installed by `test`, `bench` and `vmtest` when
//! run as root, and named in one line with the command that installs it otherwise.
use std::{path::Path, process::Command};

use anyhow::{Result, bail};

/// Who needs a tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum For {
    /// `cargo xtask test` (and the VM tests, which build the same programs on the host).
    Test,
    /// `cargo xtask bench`.
    Bench,
    /// `cargo xtask vmtest`.
    Vmtest,
}

/// How to tell that a need is met.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// A program on the PATH (or in /usr/sbin, /sbin).
    Program(&'static str),
    /// A file (a header).
    File(&'static str),
    /// An installed Debian package (for what has no program or file of its own to look for).
    Package(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub probe: Probe,
    /// The Debian package that meets it.
    pub package: &'static str,
    pub why: &'static str,
    pub users: &'static [For],
}

const T: &[For] = &[For::Test, For::Vmtest];
const TB: &[For] = &[For::Test, For::Bench, For::Vmtest];

pub const NEEDS: &[Need] = &[
    Need {
        probe: Probe::Program("cc"),
        package: "gcc",
        why: "builds the C test programs",
        users: TB,
    },
    Need {
        probe: Probe::File("/usr/include/stdio.h"),
        package: "libc6-dev",
        why: "C library headers",
        users: TB,
    },
    Need {
        probe: Probe::File("/usr/include/liburing.h"),
        package: "liburing-dev",
        why: "the io_uring test program",
        users: T,
    },
    Need {
        probe: Probe::Program("runc"),
        package: "runc",
        why: "a real container runtime for the container tests",
        users: &[For::Test],
    },
    Need {
        probe: Probe::Program("musl-gcc"),
        package: "musl-tools",
        why: "Alpine-style (musl) test programs",
        users: &[For::Test],
    },
    Need {
        probe: Probe::Program("go"),
        package: "golang-go",
        why: "the Go test programs",
        users: T,
    },
    Need {
        probe: Probe::Program("nginx"),
        package: "nginx-light",
        why: "a real server under load",
        users: TB,
    },
    Need {
        probe: Probe::Program("wrk"),
        package: "wrk",
        why: "HTTP load for nginx",
        users: TB,
    },
    Need {
        probe: Probe::Program("node"),
        package: "nodejs",
        why: "a real JavaScript runtime for the runtime tests",
        users: &[For::Test],
    },
    Need {
        probe: Probe::File("/usr/bin/python3.11"),
        package: "python3.11",
        why: "a real CPython (Debian's 3.11) for the runtime tests",
        users: &[For::Test, For::Bench],
    },
    Need {
        probe: Probe::Program("javac"),
        package: "openjdk-17-jdk-headless",
        why: "a real JVM (and javac) for the runtime tests",
        users: &[For::Test, For::Bench],
    },
    Need {
        probe: Probe::Program("prometheus"),
        package: "prometheus",
        why: "a real Prometheus server scrapes the agent",
        users: &[For::Test],
    },
    Need {
        probe: Probe::Program("redis-server"),
        package: "redis-server",
        why: "a real server under load",
        users: T,
    },
    Need {
        probe: Probe::Program("redis-benchmark"),
        package: "redis-tools",
        why: "load for redis",
        users: T,
    },
    Need {
        probe: Probe::Program("tmux"),
        package: "tmux",
        why: "the live view in a real terminal",
        users: T,
    },
    Need {
        probe: Probe::Program("bpftrace"),
        package: "bpftrace",
        why: "the peer the bench compares with",
        users: &[For::Bench],
    },
    Need {
        probe: Probe::Program("strace"),
        package: "strace",
        why: "the peer the bench compares with",
        users: &[For::Bench],
    },
    Need {
        probe: Probe::File("/usr/bin/time"),
        package: "time",
        why: "peak memory of a run",
        users: &[For::Bench],
    },
    Need {
        probe: Probe::Program("callgrind_control"),
        package: "valgrind",
        why: "the consumer's instructions per event (callgrind)",
        users: &[For::Bench],
    },
    Need {
        probe: Probe::Program("qemu-system-x86_64"),
        package: "qemu-system-x86",
        why: "boots the other kernels",
        users: &[For::Vmtest],
    },
    Need {
        probe: Probe::Package("busybox-static"),
        package: "busybox-static",
        why: "the VMs' userland",
        users: &[For::Vmtest],
    },
];

pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

impl Need {
    pub fn met(&self) -> bool {
        match self.probe {
            Probe::Program(p) => find_program(p).is_some(),
            Probe::File(f) => Path::new(f).exists(),
            Probe::Package(p) => Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.probe {
            Probe::Program(n) | Probe::File(n) | Probe::Package(n) => n,
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The one line for needs that are missing and will not be installed here.
pub fn missing_line(missing: &[&Need]) -> String {
    let mut pkgs: Vec<&str> = missing.iter().map(|n| n.package).collect();
    pkgs.dedup();
    format!(
        "missing: {}; install with: sudo apt-get install {}",
        missing
            .iter()
            .map(|n| format!("{} ({})", n.name(), n.why))
            .collect::<Vec<_>>()
            .join(", "),
        pkgs.join(" ")
    )
}

/// Meet every need of `user` in `needs`: install the missing ones from Debian's packages when
/// root, or stop with one line naming them and the command that installs them.
pub fn ensure(needs: &[Need], user: For) -> Result<()> {
    let missing = |needs: &[Need]| -> Vec<Need> {
        needs
            .iter()
            .filter(|n| n.users.contains(&user) && !n.met())
            .copied()
            .collect()
    };
    let first = missing(needs);
    if first.is_empty() {
        return Ok(());
    }
    let refs: Vec<&Need> = first.iter().collect();
    if !is_root() || find_program("apt-get").is_none() {
        bail!("{}", missing_line(&refs));
    }
    let mut pkgs: Vec<&str> = first.iter().map(|n| n.package).collect();
    pkgs.sort();
    pkgs.dedup();
    eprintln!("xtask: installing {}", pkgs.join(" "));
    let installed = super::apt_install(&pkgs);
    let still = missing(needs);
    if !still.is_empty() {
        let refs: Vec<&Need> = still.iter().collect();
        match installed {
            Err(e) => bail!("{} ({e:#})", missing_line(&refs)),
            Ok(()) => bail!("{}", missing_line(&refs)),
        }
    }
    Ok(())
}

/// `cargo xtask setup`: every need, met or not, and who needs it.
pub fn report() {
    for n in NEEDS {
        let users: Vec<&str> = n
            .users
            .iter()
            .map(|u| match u {
                For::Test => "test",
                For::Bench => "bench",
                For::Vmtest => "vmtest",
            })
            .collect();
        eprintln!(
            "xtask: {} {} ({}; for {}; Debian: {})",
            if n.met() { "ok:     " } else { "missing:" },
            n.name(),
            n.why,
            users.join(", "),
            n.package
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: Need = Need {
        probe: Probe::Program("hello"),
        package: "hello",
        why: "a package this machine does not have",
        users: &[For::Test],
    };

    #[test]
    fn a_missing_need_is_named_with_its_install_command() {
        let go = NEEDS.iter().find(|n| n.package == "golang-go").unwrap();
        let l = missing_line(&[&HELLO, go]);
        assert_eq!(
            l,
            "missing: hello (a package this machine does not have), go (the Go test programs); \
             install with: sudo apt-get install hello golang-go"
        );
        assert!(!l.contains('\n'));
    }

    #[test]
    fn needs_of_others_are_not_checked() {
        let other = Need {
            probe: Probe::Program("no-such-program-fdtrace"),
            package: "no-such-package-fdtrace",
            why: "nothing",
            users: &[For::Bench],
        };
        ensure(&[other], For::Test).unwrap();
    }

    /// As root with apt-get: a package the machine does not have is installed (and removed
    /// again); one that no archive has fails with one line naming it. Otherwise the missing
    /// need is refused with the install command.
    #[test]
    fn the_installer_installs_what_is_missing_or_says_how() {
        let had_hello = HELLO.met();
        if !is_root() || find_program("apt-get").is_none() {
            let e = ensure(&[HELLO], For::Test);
            if !had_hello {
                let e = e.unwrap_err().to_string();
                assert!(e.contains("sudo apt-get install hello"), "{e}");
            }
            return;
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap()
        };
        if had_hello {
            assert!(
                apt(&[
                    "-o",
                    "DPkg::Lock::Timeout=600",
                    "remove",
                    "-y",
                    "-q",
                    "hello"
                ])
                .status
                .success()
            );
        }
        assert!(!HELLO.met());
        let installed = ensure(&[HELLO], For::Test);
        let now = HELLO.met();
        if !had_hello {
            apt(&[
                "-o",
                "DPkg::Lock::Timeout=600",
                "remove",
                "-y",
                "-q",
                "hello",
            ]);
        }
        installed.unwrap();
        assert!(now, "hello was installed");
        let bogus = Need {
            probe: Probe::Program("no-such-program-fdtrace"),
            package: "no-such-package-fdtrace",
            why: "a package no archive has",
            users: &[For::Test],
        };
        let e = ensure(&[bogus], For::Test).unwrap_err().to_string();
        assert!(
            e.starts_with("missing: no-such-program-fdtrace (a package no archive has)"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
