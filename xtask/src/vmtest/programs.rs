//! The test programs the VM suites run, built on the host the way the tests build them.

/// How the tests build their programs (fdtrace/tests/common/mod.rs `compile_c`, `built()`,
/// `go_build`, and tests/unwind.rs): built here the same way, found in the VM by
/// `FDTRACE_PROGRAMS_DIR/KEY/OUT` where KEY names the tool and its arguments
/// (`common::prebuilt`); a test whose flags change finds nothing and fails loudly.
pub(super) struct Prog {
    pub(super) tool: &'static str,
    pub(super) args: &'static [&'static str],
    pub(super) src: &'static str,
    pub(super) out: &'static str,
}

pub(super) const PROGRAMS: &[Prog] = &[
    Prog {
        tool: "cc",
        args: &["-g", "-O0", "-fno-omit-frame-pointer"],
        src: "leaky.c",
        out: "leaky",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O2", "-fomit-frame-pointer"],
        src: "leaky.c",
        out: "leaky-nofp",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "births.c",
        out: "births",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O1", "-pthread"],
        src: "fdmix.c",
        out: "fdmix",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "emfile.c",
        out: "emfile",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "sockets.c",
        out: "sockets",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "tcpchurn.c",
        out: "tcpchurn",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "late.c",
        out: "late",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "churn.c",
        out: "churn",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "drip.c",
        out: "drip",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0", "-pthread"],
        src: "burst.c",
        out: "burst",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "hold.c",
        out: "hold",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0", "-luring"],
        src: "uring.c",
        out: "uring",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0", "-lrt"],
        src: "rare.c",
        out: "rare",
    },
    Prog {
        tool: "cc",
        args: &["-g", "-O0"],
        src: "installed.c",
        out: "installed",
    },
    Prog {
        tool: "rustc",
        args: &["-C", "opt-level=2", "-C", "force-frame-pointers=no", "-g"],
        src: "rustleak.rs",
        out: "rustleak",
    },
    Prog {
        tool: "go",
        args: &["build"],
        src: "goleak/main.go",
        out: "goleak",
    },
    Prog {
        tool: "go",
        args: &["build"],
        src: "gosvc/main.go",
        out: "gosvc",
    },
    Prog {
        tool: "go",
        args: &["build"],
        src: "gohttp/main.go",
        out: "gohttp",
    },
];

/// Same as `common::prebuilt_key` in the tests.
pub(super) fn key(tool: &str, args: &[&str]) -> String {
    std::iter::once(tool)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join("_")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::PROGRAMS;

    /// Every C program the tests compile is prebuilt for the VMs (which have no compiler).
    #[test]
    fn every_c_program_of_the_tests_is_prebuilt() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fdtrace/tests");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for part in text.split("compile_c(\"").skip(1) {
                let name = part.split('"').next().unwrap();
                seen += 1;
                assert!(
                    PROGRAMS.iter().any(|p| p.tool == "cc" && p.src == name),
                    "{name} (compiled in {}) is not in PROGRAMS",
                    entry.path().display()
                );
            }
        }
        assert!(seen > 10, "{seen}");
    }
}
