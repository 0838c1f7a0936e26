//! `cargo xtask bench --vm KERNEL`: what each hook set costs, measured inside a QEMU VM of one of
//! the kernels `cargo xtask vmtest` boots (Debian's 6.1 and 6.12 take trampolines; this host's
//! kernel cannot load them). The open/close loop runs untraced, beside an fdtrace that traces
//! another process (`sleep`), and traced; nginx serves wrk untraced, beside an fdtrace that traces
//! a `sleep`, and with its worker traced
//! (when both are installed on the host: their Debian binaries and libraries are copied into the
//! VM). Each with the syscall tracepoints and with the trampolines in the same boot, rotated from
//! one repetition to the next. The guest's clock counts the instructions the vCPU executes
//! (`-icount`): a time is an instruction count, not what a real CPU would take (no caches, no
//! branch predictors), so only ratios to the untraced runs of the same boot are reported.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::vm_script::{RUN_CASE, RUN_NGINX};
use crate::vmtest::{CPU_COUNTING_INSTRUCTIONS, Clock, Cpio, boot, kernel, libraries, vmdir};

/// The guest's clock advances 2^ICOUNT_SHIFT ns per instruction executed (`-icount`): 8 ns. The
/// figure only scales the guest's times (its timers and sleeps included), not the ratios.
const ICOUNT_SHIFT: u8 = 3;

/// The configurations of one repetition, in the order of the first.
const CASES: [&str; 12] = [
    "untraced",
    "floor tracepoints",
    "floor trampolines",
    "untargeted tracepoints",
    "untargeted trampolines",
    "traced tracepoints",
    "traced trampolines",
    "stopped tracepoints",
    "stopped trampolines",
    "reads",
    "reads_untargeted tracepoints",
    "reads_untargeted trampolines",
];

/// Pairs of the loops run while fdtrace's process is stopped: their records must fit in a
/// quarter of its ring buffer (`STOPPED_RING_MB`; about 2.2 KiB per pair), past which every
/// record would wake the consumer.
pub(super) const STOPPED_PAIRS: u64 = 4000;

const STOPPED_RING_MB: u32 = 64;

/// The hook sets whose programs' run times are read once more, after the loop's repetitions.
const PROGS_SETS: [&str; 2] = ["tracepoints", "trampolines"];

/// nginx's configurations, run after the loop's (`nginx -`: untraced; `nginx_untargeted`: fdtrace
/// traces a `sleep` meanwhile; `nginx_stopped`: traced, fdtrace's process stopped during the run).
const NGINX_CASES: [&str; 7] = [
    "nginx -",
    "nginx_untargeted tracepoints",
    "nginx_untargeted trampolines",
    "nginx tracepoints",
    "nginx trampolines",
    "nginx_stopped tracepoints",
    "nginx_stopped trampolines",
];

/// The ring buffer of the nginx runs with fdtrace's process stopped: a run's records (about
/// 5 KiB per request, some 8000 requests) must fit in a quarter of it, past which every record
/// would wake the consumer.
const NGINX_STOPPED_RING_MB: u32 = 256;

/// Guest seconds each run waits before it starts measuring: the kernel's deferred work after
/// the previous configuration's tracer detached, or this one's attached (RCU callbacks, freed
/// trampolines), runs then. Under `-icount` it would otherwise be counted in the run: the one
/// vCPU's instructions are the clock.
const SETTLE_SECS: u32 = 20;

/// Seconds per wrk run.
const WRK_SECS: u32 = 10;

/// The port nginx listens on in the VM (on its loopback only).
const NGINX_PORT: u16 = 8080;

fn init_script(reps: usize, pairs: u64, nginx: bool) -> String {
    let mut s = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp PAIRS={pairs} SETTLE={SETTLE_SECS}\n\
         export STOPPED_PAIRS={STOPPED_PAIRS} STOPPED_RING_MB={STOPPED_RING_MB} NGINX_STOPPED_RING_MB={NGINX_STOPPED_RING_MB}\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tracefs tracefs /sys/kernel/tracing\n\
         echo \"@@vmtest kernel $(uname -r)\"\n\
         echo \"the emulated CPU's copy flags: [ $(grep -m1 '^flags' /proc/cpuinfo | \
         tr ' ' '\\n' | grep -x -e erms -e fsrm -e rep_good | tr '\\n' ' ')]\"\n\
         echo '@@vmtest begin hooks'\n\
         /bin/fdtrace hooks 2>&1\n\
         echo \"@@vmtest end hooks $?\"\n\
         {RUN_CASE}\n{RUN_NGINX}\n"
    );
    for set in PROGS_SETS {
        s.push_str(&format!(
            "FLOOR_{set}=$(floor_hooks {set})\necho \"@@vmtest measured floorhooks {set} $FLOOR_{set}\"\n"
        ));
    }
    for rep in 0..reps {
        for k in 0..CASES.len() {
            let case = CASES[(rep + k) % CASES.len()];
            let (what, set) = case.split_once(' ').unwrap_or((case, "-"));
            s.push_str(&format!("case_run {} {what} {set}\n", rep + 1));
        }
    }
    for set in PROGS_SETS {
        s.push_str(&format!("progs_run {set}\n"));
    }
    if nginx {
        s.push_str(&format!(
            "URL=http://127.0.0.1:{NGINX_PORT}/index.html WRK_SECS={WRK_SECS}\nif nginx_start; then\n"
        ));
        for rep in 0..reps {
            for k in 0..NGINX_CASES.len() {
                let (what, set) = NGINX_CASES[(rep + k) % NGINX_CASES.len()]
                    .split_once(' ')
                    .unwrap_or(("nginx", "-"));
                s.push_str(&match what {
                    "nginx_stopped" => format!("  nginx_stopped {} {set} 0\n", rep + 1),
                    "nginx_untargeted" => format!("  nginx_untargeted {} {set}\n", rep + 1),
                    _ => format!("  nginx_run {} {set}\n", rep + 1),
                });
            }
        }
        for set in PROGS_SETS {
            s.push_str(&format!("  echo 1 > /proc/sys/kernel/bpf_stats_enabled\n  nginx_stopped 0 {set} 1\n  echo 0 > /proc/sys/kernel/bpf_stats_enabled\n"));
        }
        s.push_str("  kill $NGINX; wait $NGINX\nfi\n");
    }
    s.push_str("echo '@@vmtest done'\npoweroff -f\n");
    s
}

/// One configuration's runs: the median of its per-repetition ratios to the baseline run of the
/// same repetition (so a change of the emulator's speed during the boot shifts both sides),
/// their range, and how many runs gave a figure or failed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratios {
    median: f64,
    lo: f64,
    hi: f64,
    runs: usize,
    failed: usize,
}

/// The baseline of a configuration: the untraced loop (of opens and closes, or of reads), or
/// untraced nginx.
fn baseline(case: &str) -> &'static str {
    if case.starts_with("nginx") {
        "nginx"
    } else if case.starts_with("reads") {
        "reads"
    } else {
        "untraced"
    }
}

/// The events each traced configuration lost, summed over its runs; None where a report did
/// not say (`lost REP WHAT SET N` lines).
fn lost(measured: &[String]) -> BTreeMap<String, Option<u64>> {
    let mut out: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for m in measured {
        let f: Vec<&str> = m.split_whitespace().collect();
        let ["lost", _rep, what, set, n] = f[..] else {
            continue;
        };
        let e = out.entry(format!("{what} {set}")).or_insert(Some(0));
        *e = e.zip(n.parse::<u64>().ok()).map(|(a, b)| a + b);
    }
    out
}

/// Each configuration's ratios, from the `measured` lines (`bench REP WHAT SET FIGURE`; a set
/// of `-` is the configuration `WHAT` alone).
fn ratios(measured: &[String]) -> BTreeMap<String, Ratios> {
    let mut by_case: BTreeMap<String, (BTreeMap<&str, f64>, usize)> = BTreeMap::new();
    for m in measured {
        let f: Vec<&str> = m.split_whitespace().collect();
        let ["bench", rep, what, set, figure] = f[..] else {
            continue;
        };
        let case = if set == "-" {
            what.to_string()
        } else {
            format!("{what} {set}")
        };
        let e = by_case.entry(case).or_default();
        match figure.parse::<f64>() {
            Ok(v) => {
                e.0.insert(rep, v);
            }
            Err(_) => e.1 += 1,
        }
    }
    let mut out = BTreeMap::new();
    for (case, (runs, failed)) in &by_case {
        let base = by_case.get(baseline(case)).map(|b| &b.0);
        let mut r: Vec<f64> = runs
            .iter()
            .filter_map(|(rep, v)| Some(v / base?.get(rep)?))
            .collect();
        r.sort_by(f64::total_cmp);
        let (median, lo, hi) = match r.len() {
            0 => (f64::NAN, f64::NAN, f64::NAN),
            n if n % 2 == 1 => (r[n / 2], r[0], r[n - 1]),
            n => ((r[n / 2 - 1] + r[n / 2]) / 2.0, r[0], r[n - 1]),
        };
        out.insert(
            case.clone(),
            Ratios {
                median,
                lo,
                hi,
                runs: runs.len(),
                failed: *failed,
            },
        );
    }
    out
}

fn section(
    series: &str,
    release: &str,
    hooks: &[String],
    reps: usize,
    pairs: u64,
    measured: &[String],
) -> String {
    let m = &ratios(measured);
    let progs = &super::vm_progs::prog_section(
        &super::vm_progs::prog_runs(measured),
        super::vm_progs::untraced_ns(measured),
    );
    let lost = &lost(measured);
    // The hooks each floor attached (`floorhooks SET SPEC...`).
    let floor_hooks: BTreeMap<&str, String> = measured
        .iter()
        .filter_map(|m| {
            let rest = m.strip_prefix("floorhooks ")?;
            let (set, specs) = rest.split_once(' ').unwrap_or((rest, ""));
            let specs: Vec<String> = specs
                .split_whitespace()
                .map(|h| format!("`{}`", h.replacen(':', " ", 1)))
                .collect();
            Some((set, specs.join(", ")))
        })
        .collect();
    let mut s = format!(
        "<!-- vm-bench {series} -->\n### Hook sets side by side on {release} (QEMU, `cargo xtask bench --vm {series}`)\n\n\
         The open/close loop ({pairs} pairs, {reps} repetitions, the configurations' order rotated) \
         in one boot: the median of each repetition's ratio to the untraced loop of the same \
         repetition, and their range. The guest's clock counts instructions (QEMU `-icount \
         shift={ICOUNT_SHIFT},sleep=off`), so the host's load does not move it: a time is the \
         instructions executed meanwhile, without the caches' and branch predictors' share of a \
         real CPU's time. The emulated CPU (`-cpu {CPU_COUNTING_INSTRUCTIONS}`) lacks ERMS and \
         FSRM, so the kernel copies large buffers 8 bytes per counted instruction (`rep movsq` \
         or unrolled moves) rather than with `rep movsb`: the emulator counts each iteration of \
         a `rep` as an instruction, so a 2 KiB stack copy would count 2048 of them where a real \
         CPU takes tens of cycles. The VM has one vCPU (the emulator would run two in turn on the one clock \
         anyway), so a traced run's time also holds fdtrace's own user-space work, which real \
         CPUs run beside the program; with fdtrace's process stopped, the kernel side alone is \
         measured. Each run \
         first waits {SETTLE_SECS} guest seconds, for the kernel's deferred work after the \
         previous configuration's tracer detached and this one's attached.\n\n\
         | configuration | time per pair, ratio to untraced | range | runs (failed) |\n|---|---|---|---|\n"
    );
    for case in CASES {
        let Some(r) = m.get(case) else {
            continue;
        };
        let label = match case {
            "untraced" => "untraced".to_string(),
            "reads" => "read loop (two one-byte `read`s of /dev/zero per pair), untraced: the \
                        baseline of the two rows below"
                .to_string(),
            c => {
                let (what, set) = c.split_once(' ').unwrap_or((c, ""));
                match what {
                    "floor" => format!(
                        "the floor: an empty program on each hook the pair meets under fdtrace's \
                         {set} ({}), no fdtrace",
                        floor_hooks
                            .get(set)
                            .filter(|h| !h.is_empty())
                            .map_or("hooks not found", String::as_str)
                    ),
                    "untargeted" => format!("not the target (fdtrace traces a `sleep`), {set}"),
                    "reads_untargeted" => {
                        format!("read loop, not the target (syscalls fdtrace does not hook), {set}")
                    }
                    "stopped" => format!(
                        "traced, fdtrace's process stopped during the loop (the kernel side \
                         alone; {STOPPED_PAIRS} pairs, {STOPPED_RING_MB} MiB ring), {set}"
                    ),
                    _ => format!("traced by fdtrace, {set}"),
                }
            }
        };
        s.push_str(&format!(
            "| {label} | {:.2}x | {:.2}–{:.2} | {} ({}) |\n",
            r.median, r.lo, r.hi, r.runs, r.failed
        ));
    }
    s.push_str(progs);
    if m.contains_key("nginx") {
        s.push_str(&format!(
            "\nnginx serving a 1 KiB file to `wrk -t1 -c16 -H 'Connection: close'` ({WRK_SECS} s runs, \
             {reps} repetitions, rotated), fdtrace `-p` of the worker (or of a `sleep`, where nginx \
             is not the target): requests per second, the median of each repetition's ratio to \
             the untraced run of the same repetition.\n\n\
             | configuration | requests/s, ratio to untraced | range | runs (failed) |\n|---|---|---|---|\n"
        ));
        for case in NGINX_CASES {
            let key = case.trim_end_matches(" -");
            let Some(r) = m.get(key) else {
                continue;
            };
            let label = match case.split_once(' ') {
                Some((_, "-")) | None => "untraced".to_string(),
                Some(("nginx_stopped", set)) => format!(
                    "worker traced, fdtrace's process stopped during the run (the kernel side \
                     alone; {NGINX_STOPPED_RING_MB} MiB ring), {set}"
                ),
                Some(("nginx_untargeted", set)) => format!(
                    "not the target (fdtrace traces a `sleep`; nginx is a bystander), {set}"
                ),
                Some((_, set)) => format!("worker traced by fdtrace, {set}"),
            };
            let fewer = if key == "nginx" {
                String::new()
            } else {
                format!(" ({:.1}% fewer requests)", (1.0 - r.median) * 100.0)
            };
            s.push_str(&format!(
                "| {label} | {:.2}x{fewer} | {:.2}–{:.2} | {} ({}) |\n",
                r.median, r.lo, r.hi, r.runs, r.failed
            ));
        }
        s.push_str(&super::vm_progs::nginx_prog_section(
            &super::vm_progs::nginx_prog_runs(measured),
            super::vm_progs::median_figure(measured, "nginx"),
            WRK_SECS,
        ));
    }
    if !lost.is_empty() {
        let said: Vec<String> = lost
            .iter()
            .map(|(case, n)| {
                let n = n.map_or("not reported".to_string(), |n| n.to_string());
                format!("{case}: {n}")
            })
            .collect();
        s.push_str(&format!(
            "\nEvents fdtrace lost, over each traced configuration's runs (from its reports): {}.\n",
            said.join("; ")
        ));
    }
    let on = |what: &str| {
        hooks
            .iter()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|h| h.starts_with(what))
            })
            .count()
    };
    s.push_str(&format!(
        "\n`fdtrace hooks` there (auto): {} events on trampolines, {} on tracepoints.\n<!-- vm-bench {series} end -->\n",
        on("fentry") + on("fexit"),
        on("tracepoint")
    ));
    s
}

/// Put `section` into docs/PERFORMANCE.md in place of the last run's on this kernel (or at the
/// end).
pub(super) fn write_section(doc: &Path, series: &str, section: &str) -> Result<()> {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let begin = format!("<!-- vm-bench {series} -->");
    let end = format!("<!-- vm-bench {series} end -->\n");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{section}", text.trim_end_matches('\n')),
    };
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))
}

/// The VM sections of an existing docs/PERFORMANCE.md, for a host run to carry over.
pub(super) fn sections_of(doc: &Path) -> String {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(b) = rest.find("<!-- vm-bench ") {
        let Some(e) = rest[b..].find(" end -->\n") else {
            break;
        };
        out.push('\n');
        out.push_str(&rest[b..b + e + " end -->\n".len()]);
        rest = &rest[b + e..];
    }
    out
}

pub(super) fn run(series: &str, reps: usize, pairs: u64, write: Option<PathBuf>) -> Result<()> {
    let root = crate::root();
    let mut apt_ready = false;
    let image = kernel(series, &mut apt_ready)?;
    crate::build()?;
    // One per kernel: benches of two kernels may run side by side.
    let openclose = vmdir().join(format!("bench-openclose-{series}"));
    crate::run(
        Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&openclose)
            .arg(root.join("bench/openclose.c")),
    )?;
    // The per-program statistics' reader (the VM has no bpftool), and the floors' loader.
    super::build_examples(&["prog_stats", "floor"])?;
    let prog_stats = root.join("target/release/examples/prog_stats");
    let floor = root.join("target/release/examples/floor");
    let fdtrace = root.join("target/release/fdtrace");
    let mut c = Cpio::skeleton()?;
    c.dir(Path::new("/bench"));
    c.file(Path::new("/bin/fdtrace"), &fdtrace)?;
    c.file(Path::new("/bench/openclose"), &openclose)?;
    c.file(Path::new("/bench/prog_stats"), &prog_stats)?;
    c.file(Path::new("/bench/floor"), &floor)?;
    let mut bins = vec![
        fdtrace.clone(),
        openclose.clone(),
        prog_stats.clone(),
        floor.clone(),
    ];
    // nginx and wrk, where the host has them (Debian: nginx-light, wrk).
    let web = match (
        crate::deps::find_program("nginx"),
        crate::deps::find_program("wrk"),
    ) {
        (Some(nginx), Some(wrk)) => {
            c.file(Path::new("/usr/sbin/nginx"), &nginx)?;
            c.file(Path::new("/usr/bin/wrk"), &wrk)?;
            c.bytes(
                Path::new("/nginx/nginx.conf"),
                0o644,
                super::nginx::nginx_conf(Path::new("/nginx"), NGINX_PORT, Some("root root"))
                    .as_bytes(),
            );
            c.bytes(
                Path::new("/nginx/www/index.html"),
                0o644,
                super::nginx::index_body().as_bytes(),
            );
            c.bytes(
                Path::new("/etc/passwd"),
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\n",
            );
            c.bytes(Path::new("/etc/group"), 0o644, b"root:x:0:\n");
            bins.extend([nginx, wrk]);
            true
        }
        _ => {
            eprintln!("xtask: bench in a VM: nginx or wrk not installed, so no nginx runs");
            false
        }
    };
    let libs: BTreeSet<PathBuf> = bins.iter().flat_map(|b| libraries(b)).collect();
    for l in libs {
        c.file(&l, &l)?;
    }
    c.bytes(
        Path::new("/init"),
        0o755,
        init_script(reps, pairs, web).as_bytes(),
    );
    let initrd = vmdir().join(format!("initramfs-bench-{series}.cpio"));
    std::fs::write(&initrd, c.finish())?;
    let log = vmdir().join(format!("console-bench-{series}.log"));
    eprintln!("xtask: bench in a VM: kernel {series}, {reps} repetitions of {pairs} pairs");
    let o = boot(
        series,
        &image,
        &initrd,
        &log,
        Duration::from_secs(60 * 60),
        Clock::Instructions(ICOUNT_SHIFT),
    )?;
    if !o.done {
        bail!("the VM stopped before the end (console: {})", log.display());
    }
    let text = section(series, &o.release, &o.hooks_lines, reps, pairs, &o.measured);
    println!("\n{text}");
    if let Some(doc) = write {
        write_section(&doc, series, &text)?;
        eprintln!("bench: wrote the {series} section of {}", doc.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_per_repetition_and_failures_counted() {
        let lines: Vec<String> = [
            "bench 1 untraced - 100.0",
            "bench 2 untraced - 200.0",
            "bench 3 untraced - 110.0",
            "bench 1 traced trampolines 150.0",
            "bench 2 traced trampolines 240.0",
            "bench 3 traced trampolines failed",
            "bench 4 traced trampolines 100.0",
            "kernel figure 3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = ratios(&lines);
        let u = m["untraced"];
        assert_eq!(
            (u.median, u.lo, u.hi, u.runs, u.failed),
            (1.0, 1.0, 1.0, 3, 0)
        );
        // Repetition 4 has no untraced run: counted as a run, not in the ratios.
        let t = m["traced trampolines"];
        assert_eq!(
            (t.median, t.lo, t.hi, t.runs, t.failed),
            (1.35, 1.2, 1.5, 3, 1)
        );
        assert_eq!(m.len(), 2);
    }

    /// The 6.1 section of one repetition of 1000 pairs, from its `@@vmtest measured` lines.
    fn one_rep_section(lines: &[String], lost_lines: &[String]) -> String {
        section("6.1", "6.1.0", &[], 1, 1000, &[lines, lost_lines].concat())
    }

    #[test]
    fn every_configuration_runs_once_per_repetition_and_is_named() {
        let script = init_script(CASES.len(), 1000, false);
        let runs: Vec<&str> = script
            .lines()
            .filter_map(|l| l.strip_prefix("case_run "))
            .collect();
        assert_eq!(runs.len(), CASES.len() * CASES.len());
        for (rep, chunk) in runs.chunks(CASES.len()).enumerate() {
            let mut seen: Vec<String> = chunk
                .iter()
                .map(|r| {
                    let (n, case) = r.split_once(' ').unwrap();
                    assert_eq!(n, (rep + 1).to_string());
                    case.trim_end_matches(" -").to_string()
                })
                .collect();
            // Rotated: repetition r starts with configuration r.
            assert_eq!(seen[0], CASES[rep]);
            seen.sort();
            let mut all: Vec<&str> = CASES.to_vec();
            all.sort();
            assert_eq!(seen, all);
        }
        let lines: Vec<String> = CASES
            .iter()
            .map(|c| {
                let (what, set) = c.split_once(' ').unwrap_or((c, "-"));
                format!("bench 1 {what} {set} 100.0")
            })
            .collect();
        let floors =
            ["floorhooks trampolines fexit:__x64_sys_openat fentry:fd_install".to_string()];
        let text = one_rep_section(&lines, &floors);
        let rows = text.lines().filter(|l| l.contains("| 1.00x |")).count();
        assert_eq!(rows, CASES.len(), "{text}");
        assert!(
            text.contains("fdtrace's trampolines (`fexit __x64_sys_openat`, `fentry fd_install`), no fdtrace | 1.00x")
                && text.contains("fdtrace's tracepoints (hooks not found), no fdtrace"),
            "{text}"
        );
        assert!(
            text.contains("fdtrace's process stopped during the loop"),
            "{text}"
        );
    }

    #[test]
    fn nginx_runs_rotate_and_their_ratios_are_requests() {
        let script = init_script(3, 1000, true);
        let runs: Vec<&str> = script
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nginx_"))
            .filter(|l| {
                l.starts_with("run ") || l.starts_with("stopped ") || l.starts_with("untargeted ")
            })
            .collect();
        assert_eq!(
            runs,
            [
                "run 1 -",
                "untargeted 1 tracepoints",
                "untargeted 1 trampolines",
                "run 1 tracepoints",
                "run 1 trampolines",
                "stopped 1 tracepoints 0",
                "stopped 1 trampolines 0",
                "untargeted 2 tracepoints",
                "untargeted 2 trampolines",
                "run 2 tracepoints",
                "run 2 trampolines",
                "stopped 2 tracepoints 0",
                "stopped 2 trampolines 0",
                "run 2 -",
                "untargeted 3 trampolines",
                "run 3 tracepoints",
                "run 3 trampolines",
                "stopped 3 tracepoints 0",
                "stopped 3 trampolines 0",
                "run 3 -",
                "untargeted 3 tracepoints",
                // One more per set, with the programs' statistics.
                "stopped 0 tracepoints 1",
                "stopped 0 trampolines 1",
            ]
        );
        assert!(!init_script(3, 1000, false).contains("nginx_start\n"));
        let lines: Vec<String> = [
            "bench 1 untraced - 100.0",
            "bench 1 nginx - 200.0",
            "bench 1 nginx tracepoints 150.0",
            "bench 1 nginx trampolines 190.0",
            "bench 1 nginx_stopped trampolines 196.0",
            "bench 1 nginx_untargeted trampolines 198.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lost_lines: Vec<String> = [
            "lost 1 nginx tracepoints 0",
            "lost 2 nginx tracepoints 3",
            "lost 1 nginx trampolines unknown",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let text = one_rep_section(&lines, &lost_lines);
        assert!(
            text.contains("nginx tracepoints: 3; nginx trampolines: not reported."),
            "{text}"
        );
        assert!(
            text.contains(
                "| worker traced by fdtrace, tracepoints | 0.75x (25.0% fewer requests) | 0.75–0.75 | 1 (0) |"
            ) && text.contains(
                "| worker traced by fdtrace, trampolines | 0.95x (5.0% fewer requests) | 0.95–0.95 | 1 (0) |"
            ) && text.contains("| untraced | 1.00x | 1.00–1.00 | 1 (0) |")
                && text.contains(
                    "(the kernel side alone; 256 MiB ring), trampolines | 0.98x (2.0% fewer requests) |"
                )
                && text.contains(
                    "| not the target (fdtrace traces a `sleep`; nginx is a bystander), trampolines | 0.99x (1.0% fewer requests) |"
                ),
            "{text}"
        );
    }

    #[test]
    fn a_section_replaces_the_last_one_of_its_kernel() {
        let doc = std::env::temp_dir().join(format!("fdtrace-vm-bench-{}.md", std::process::id()));
        std::fs::write(&doc, "# Perf\n\ntext\n").unwrap();
        write_section(
            &doc,
            "6.1",
            "<!-- vm-bench 6.1 -->\nA\n<!-- vm-bench 6.1 end -->\n",
        )
        .unwrap();
        write_section(
            &doc,
            "6.12",
            "<!-- vm-bench 6.12 -->\nB\n<!-- vm-bench 6.12 end -->\n",
        )
        .unwrap();
        write_section(
            &doc,
            "6.1",
            "<!-- vm-bench 6.1 -->\nC\n<!-- vm-bench 6.1 end -->\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(text.starts_with("# Perf\n\ntext\n"));
        assert!(
            text.contains("\nC\n") && text.contains("\nB\n") && !text.contains("\nA\n"),
            "{text}"
        );
        let carried = sections_of(&doc);
        assert!(
            carried.contains("vm-bench 6.1 -->\nC") && carried.contains("vm-bench 6.12 -->\nB"),
            "{carried}"
        );
        std::fs::remove_file(&doc).unwrap();
    }
}
