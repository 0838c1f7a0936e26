//! The analysis section of docs/PERFORMANCE.md: what each case's numbers mean, from a run's facts.
use super::*;

pub(super) fn analysis(b: &Bench) -> String {
    let mut a = String::new();
    let f = |k: Fact| fact(b, k);
    // Case 1.
    if let (Some(u), Some(fd), Some(ratio), Some(add)) = (
        f(Fact::LoopUntracedNs),
        f(Fact::LoopFdtraceNs),
        f(Fact::LoopFdtraceRatio),
        f(Fact::LoopFdtraceAddedNs),
    ) {
        let _ = write!(
            a,
            "**Open/close loop.** Untraced, a pair takes {u:.0} ns; under fdtrace {fd:.0} ns: \
             {}, {add:.0} ns added per pair. ",
            loop_ratio(ratio)
        );
        if ratio <= 1.5 {
            a.push_str("The 1.5x target is met. ");
        } else {
            let _ = write!(
                a,
                "The 1.5x target is missed: it allows {:.0} ns added per pair and fdtrace adds \
                 {:.1}x that ({:.0} ns too many). ",
                0.5 * u,
                add / (0.5 * u),
                add - 0.5 * u
            );
        }
        if let Some(floor) = f(Fact::LoopFloorAddedNs) {
            let _ = write!(
                a,
                "The floor (empty programs on the same tracepoints) adds {floor:.0} ns per pair"
            );
            match f(Fact::LoopFdtraceVsFloor) {
                Some(r) if r <= 2.0 => {
                    let _ = write!(a, "; fdtrace adds {r:.1}x that: the 2x target is met. ");
                }
                Some(r) => {
                    let _ = write!(
                        a,
                        "; fdtrace adds {r:.1}x that: the 2x target is missed by {:.0} ns per pair. ",
                        add - 2.0 * floor
                    );
                }
                None => a.push_str(
                    ", which is within this machine's run-to-run noise: the ratio to it is not \
                     meaningful here. ",
                ),
            }
        }
        if let Some(bt) = f(Fact::LoopBpftraceAddedNs) {
            if add < bt {
                let _ = write!(
                    a,
                    "The bpftrace script adds {bt:.0} ns: fdtrace is cheaper ({:.0}% of it). ",
                    100.0 * add / bt
                );
            } else {
                let _ = write!(
                    a,
                    "The bpftrace script adds {bt:.0} ns: fdtrace costs {:.1}x as much, so the \
                     \"lower than bpftrace\" target is missed (by {:.0} ns per pair). The script \
                     does less, though: no path, no 2 KiB stack copy, no record to user space. ",
                    add / bt,
                    add - bt
                );
            }
        }
        if let Some(r) = f(Fact::LoopStraceRatio) {
            let _ = write!(a, "strace, for scale: {r:.1}x the untraced loop. ");
        }
        if let (Some(bte), Some(floor)) =
            (f(Fact::LoopBpftraceEmptyAddedNs), f(Fact::LoopFloorAddedNs))
        {
            let _ = write!(
                a,
                "bpftrace with empty blocks on the same tracepoints adds {bte:.0} ns per pair, \
                 against {floor:.0} ns for an empty program loaded as fdtrace loads its own: it \
                 is no floor, and earlier versions of this file, which used it as one, made \
                 fdtrace's cost over the floor look smaller than it is. "
            );
        }
        if let (Some(raw), Some(floor)) = (f(Fact::LoopRawFloorAddedNs), f(Fact::LoopFloorAddedNs))
        {
            let own = add - floor;
            let _ = write!(
                a,
                "On the raw `sys_enter`/`sys_exit` tracepoints instead, a program that only \
                 looks the process up in the target filter, run at the entry and exit of every \
                 syscall (four runs per pair), adds {raw:.0} ns per pair, against {floor:.0} ns \
                 for the per-syscall tracepoints' floor: no tracepoint record is built for it. \
                 fdtrace's own share ({own:.0} ns per pair over its floor in this run) on top of \
                 that would be about {:.2}x the untraced loop (an estimate from these two \
                 measurements, not a run): what moving fdtrace to those two hooks (one program \
                 each, dispatching on the syscall number) could be worth here.",
                (u + raw + own) / u
            );
        }
        let trimmed = a.trim_end().len();
        a.truncate(trimmed);
        a.push_str("\n\n");
        let (normal, stopped) = (DiagRun::Normal, DiagRun::Stopped);
        if let Some(bpf) = f(Fact::DiagBpfNsPerPair { run: normal }) {
            let cpu = f(Fact::DiagConsumerCpuNsPerPair { run: normal }).unwrap_or(f64::NAN);
            let wake = f(Fact::DiagConsumerWakeupsPerPair { run: normal }).unwrap_or(f64::NAN);
            let dl = f(Fact::DiagLoopNs { run: normal }).unwrap_or(f64::NAN);
            let per_run = |run: DiagRun| -> Vec<String> {
                OPEN_CLOSE_PROGS
                    .iter()
                    .filter_map(|&(n, why)| {
                        let v = fact(b, Fact::ProgramNsPerRun { run, program: n })?;
                        Some(format!("`{n}` {v:.0} ns ({why})"))
                    })
                    .collect()
            };
            // The diagnostic run is a run of its own (and BPF statistics slow it a little):
            // its decomposition refers to its own loop time.
            let dadd = dl - u;
            let _ = write!(
                a,
                "**Where the added time goes.** In a diagnostic run with BPF statistics on, the \
                 loop took {dl:.0} ns per pair, {dadd:.0} ns over the untraced median; fdtrace's \
                 programs ran {bpf:.0} ns per pair of it ({:.0}%). Per run: {}. fdtrace's process \
                 woke up {wake:.2} times per pair and used {cpu:.0} ns of CPU per pair ({:.0}% of \
                 a CPU while the loop ran).\n\n",
                100.0 * bpf / dadd,
                per_run(normal).join(", "),
                100.0 * cpu / dl
            );
            if let (Some(sl), Some(sbpf)) = (
                f(Fact::DiagLoopNs { run: stopped }),
                f(Fact::DiagBpfNsPerPair { run: stopped }),
            ) {
                let _ = write!(
                    a,
                    "With fdtrace's process stopped (SIGSTOP) during short loops of {STOPPED_PAIRS} \
                     pairs ({STOPPED_RUNS} runs), whose records all fit in a quarter of the ring buffer, nothing \
                     is read while the loop runs: no consumer touches the ring buffer's pages or \
                     competes for the CPUs, and at most one wake-up is queued per 2 MiB of \
                     records. Then the loop took {sl:.0} ns per pair (median of the runs; {:+.0} ns \
                     against the untraced median) and the programs {sbpf:.0} ns per pair; per run: \
                     {}. ",
                    sl - u,
                    per_run(stopped).join(", ")
                );
                let d = bpf - sbpf;
                if d > 0.0 {
                    let _ = write!(
                        a,
                        "With the consumer following the ring buffer, the programs take {d:.0} ns \
                         more per pair: the consumer reads, on the other CPU, the pages the \
                         programs write, and their cache lines move between the CPUs."
                    );
                } else {
                    let _ = write!(
                        a,
                        "With the consumer following the ring buffer, the programs take {:.0} ns \
                         less per pair: a consumer reading along costs the programs nothing \
                         measurable here (why the short stopped runs cost more is not \
                         explained by this measurement).",
                        -d
                    );
                }
                let ns_per_run = |program| {
                    f(Fact::ProgramNsPerRun {
                        run: stopped,
                        program,
                    })
                };
                let open = ["exit_regs_openat", "exit_open"]
                    .into_iter()
                    .find_map(ns_per_run);
                if let (Some(o), Some(c)) = (open, ns_per_run("enter_close")) {
                    let _ = write!(
                        a,
                        " The open record costs {:.0} ns more than a close record: the path, the \
                         2 KiB stack copy and the registers.",
                        o - c
                    );
                }
                a.push_str("\n\n");
            }
            if let Some(floor) = f(Fact::LoopFloorAddedNs) {
                let rest = dadd - bpf - floor.max(0.0);
                if rest > 0.0 {
                    let _ = write!(
                        a,
                        "Of the {dadd:.0} ns added per pair in the diagnostic run, the floor (the \
                         syscall-tracepoint path with a program on it, from the table) is \
                         {floor:.0} ns and fdtrace's programs {bpf:.0} ns; the other {rest:.0} ns \
                         are spent outside BPF programs: interrupts and scheduling, and the \
                         loop sharing 2 CPUs with fdtrace's consumer and the rest of the \
                         machine. This remainder is inferred, not \
                         measured piece by piece.\n\n"
                    );
                } else {
                    let _ = write!(
                        a,
                        "In the diagnostic run, the floor (from the table, {floor:.0} ns) and \
                         fdtrace's programs ({bpf:.0} ns) account for all of the {dadd:.0} ns \
                         added per pair (they exceed it by {:.0} ns: run-to-run noise).\n\n",
                        -rest
                    );
                }
            }
        }
        a.push_str(
            "Levers already in fdtrace: the in-kernel target filter first, an array load the \
             JIT inlines (one byte per process id) in front of the hash of targets; tracepoint \
             fields loaded straight from the record, not with a helper call each; records submitted \
             without a wake-up, user space woken only when the unread bytes cross a multiple of \
             2 MiB and otherwise draining on a timer of 100 ms, shorter (down to 20 ms) as records \
             arrive faster (a wake-up, an `irq_work` self-interrupt \
             and then waking the consumer, costs more than a record), and on every record once a \
             quarter of the ring is unread (which slows the traced thread while its consumer is \
             far behind, rather than losing records); open and openat (and accept4 where the \
             kernel's verifier accepts that program: 6.12 and later) \
             read their arguments from the registers at exit instead of remembering them at \
             entry (one tracepoint hit and no hash-map insert, lookup and \
             delete per call), and read the registers in two copies, not one helper call per \
             register; no zeroing left to the byte-at-a-time `memset` the BPF target links; \
             on the user side, the unwinder reads the stack copy in the ring buffer (no 2 KiB \
             copy per open) and the per-event maps hash with foldhash. Copying less stack is a smaller \
             lever than it looks: in alternating runs of this loop under fdtrace and under a \
             build that copied 512 bytes instead of 2 KiB, the medians differed by less than the \
             runs' spread (tens of ns per pair). Levers not tried: \
             (1) skip the path copy for paths already seen (a per-process LRU of path hashes); \
             (2) the raw syscall tracepoints (above); (3) fentry/fexit programs instead of \
             syscall tracepoints (see untargeted processes).\n\n",
        );
    }
    // Case 2.
    let c2 = |under, stat| f(Fact::UntargetedRatio { under, stat });
    if let Some(r) = c2(Untargeted::Fdtrace, Stat::Median) {
        let pct = (r - 1.0) * 100.0;
        let (lo, hi) = (
            c2(Untargeted::Fdtrace, Stat::Lo).unwrap_or(f64::NAN),
            c2(Untargeted::Fdtrace, Stat::Hi).unwrap_or(f64::NAN),
        );
        let (flo, fhi) = (
            c2(Untargeted::Floor, Stat::Lo).unwrap_or(f64::NAN),
            c2(Untargeted::Floor, Stat::Hi).unwrap_or(f64::NAN),
        );
        let floor = match c2(Untargeted::Floor, Stat::Median) {
            Some(fr) => format!(
                " The floor, empty programs on every tracepoint fdtrace attaches with no process \
                 traced, makes the same loop {:+.1}% slower: {}.",
                (fr - 1.0) * 100.0,
                if fr >= 1.03 {
                    format!(
                        "the kernel's share alone is over the 3% target, and fdtrace's filter \
                         adds {:+.1} points to it (per-run ratios {:.3}–{:.3} under fdtrace, \
                         {:.3}–{:.3} under the floor: the difference is {} this machine's \
                         run-to-run spread)",
                        (r - fr) * 100.0,
                        lo,
                        hi,
                        flo,
                        fhi,
                        if lo > fhi { "beyond" } else { "within" }
                    )
                } else {
                    format!(
                        "fdtrace's filter adds {:+.1} points to it",
                        (r - fr) * 100.0
                    )
                }
            ),
            None => String::new(),
        };
        let raw = match c2(Untargeted::RawFloor, Stat::Median) {
            Some(rr) => format!(
                " A program that only looks the process up in the target filter on the raw \
                 `sys_enter` and `sys_exit` tracepoints, run for every syscall of every process, \
                 costs the loop {:+.1}%: no record is built per hooked syscall, but the \
                 syscall-tracing path stays on for every task.",
                (rr - 1.0) * 100.0
            ),
            None => String::new(),
        };
        let floor = floor + &raw;
        let _ = write!(
            a,
            "**Untargeted processes.** The loop in a process fdtrace does not trace runs \
             {pct:+.1}% against untraced: {}. A process that is not traced still takes the \
             kernel's syscall-tracing path on every syscall (enabling any `syscalls:` tracepoint \
             turns it on for every task), and on `openat` and `close` the kernel fills a \
             tracepoint record and runs fdtrace's program, which returns after one array load \
             the JIT inlines (`TARGET_FLAGS`, a byte per process id).{floor}",
            if r < 1.03 {
                "within the 3% target".to_string()
            } else {
                format!("the 3% target is missed by {:.1} points", pct - 3.0)
            }
        );
        if r >= 1.03 {
            a.push_str(
                " As long as the floor itself is above 3% on this machine, no program on these \
                 tracepoints can meet the target. The lever is a different hook: fentry/fexit \
                 programs (BPF trampolines) on the kernel functions behind the syscalls (for \
                 example `do_sys_openat2` for open and openat) run only when those functions run \
                 and do not put every syscall of every task on the tracing path. This machine's \
                 kernel cannot load them (no `BPF_PROG_TYPE_TRACING` programs, and no kprobes), \
                 so that lever cannot be built or measured here.",
            );
        }
        a.push_str("\n\n");
    }
    // Case 3.
    if let Some(lost) = f(Fact::SustainedLostEvents) {
        let eps = f(Fact::SustainedTracedEventsPerS).unwrap_or(f64::NAN);
        let _ = write!(
            a,
            "**Sustained rate.** At the loop's full single-thread speed under fdtrace \
             ({eps:.0} events/s), {lost:.0} events were lost{}. ",
            if lost == 0.0 {
                ": the target is met"
            } else {
                ": the target (none) is missed"
            }
        );
        if let (Some(user), Some(u)) = (
            f(Fact::UserEventsPerS),
            f(Fact::SustainedUntracedEventsPerS),
        ) {
            let _ = write!(
                a,
                "The user side alone (decode, unwind, intern the stack, update the model) handles \
                 {user:.0} events/s, {:.1}x what the loop produces untraced ({u:.0} events/s){}",
                user / u,
                if user > u {
                    ": at one producing thread the consumer keeps up even if the kernel side \
                     cost nothing. (The synthetic stream repeats one stack, as the loop does; \
                     every new distinct stack costs more once.)"
                } else {
                    ": the consumer could not keep up with the loop's untraced rate."
                }
            );
        }
        a.push_str("\n\n");
    }
    // Case 4.
    if let (Some(loss), Some(t), Some(u)) = (
        f(Fact::NginxLossPct),
        f(Fact::NginxTracedRps),
        f(Fact::NginxUntracedRps),
    ) {
        let _ = write!(
            a,
            "**nginx.** {t:.0} requests/s traced against {u:.0} untraced: {loss:.1}% fewer{}. \
             Each request is an `accept4`, an `openat` and two closes in the worker: two open \
             records with their 2 KiB stack copies, two close records, plus TCP state events.",
            if loss < 5.0 {
                ", within the 5% target".to_string()
            } else {
                format!("; the 5% target is missed by {:.1} points", loss - 5.0)
            }
        );
        if let (Some(fl), Some(fr)) = (f(Fact::NginxFloorLossPct), f(Fact::NginxFloorRps)) {
            let mut why = String::new();
            if fl >= 5.0 {
                why.push_str(
                    "As long as the floor alone costs more than 5%, no program on these \
                     tracepoints meets the target here; the lever is the one for untargeted \
                     processes (fentry/fexit). ",
                );
            }
            let _ = write!(
                why,
                "fdtrace's own work (its programs' records and its consumer) accounts for the \
                 other {:.1} points.",
                loss - fl
            );
            let _ = write!(
                a,
                " The floor, empty BPF programs on every tracepoint fdtrace attaches, already \
                 serves {fr:.0} requests/s: {fl:.1}% fewer than untraced. Every syscall of nginx \
                 and of wrk (on the same 2 CPUs) then takes the kernel's syscall-tracing path, \
                 not only those that carry a program. {why}"
            );
        }
        if let (Some(bu), Some(bt), Some(fc)) = (
            f(Fact::NginxBusyUntracedPct),
            f(Fact::NginxBusyTracedPct),
            f(Fact::NginxFdtraceCpuPct),
        ) {
            let _ = write!(
                a,
                " Both CPUs were {bu:.0}% busy during untraced runs (wrk, nginx and the rest of \
                 the machine) and {bt:.0}% during traced runs, in which fdtrace's process used \
                 {fc:.0}% of one CPU."
            );
            if let (Some(ns), Some(drps)) = (f(Fact::NginxBpfNsPerRequest), f(Fact::NginxDiagRps)) {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let _ = write!(
                    a,
                    " In one more traced run with BPF statistics on ({drps:.0} requests/s), \
                     fdtrace's programs ran {ns:.0} ns per request, {:.1}% of the {cpus} CPUs' time; \
                     the most costly: {}. `raw_sock_state` (`sock_state` on the tracepoint's \
                     record where the kernel's BTF is not read) runs on every TCP state change of \
                     every socket on the machine (wrk's too): a change of a socket no target owns \
                     ends at one array load (`SOCK_MARKS`, counts by a hash of the socket's \
                     address), and each change of a traced socket is a record while a descriptor \
                     refers to it (the FIN_WAIT1 or LAST_ACK of its last close, made while the \
                     kernel releases its file, is not: the program forgets the socket there).",
                    100.0 * ns * drps / (cpus as f64 * 1e9),
                    b.texts
                        .get(&Text::NginxTopPrograms)
                        .map_or("", String::as_str)
                );
            }
            if loss >= 5.0 && bu > 90.0 {
                a.push_str(
                    " With no idle CPU left, the time fdtrace's consumer and its programs take \
                     comes out of wrk's and nginx's; the loop's levers not tried above (repeated \
                     path copies, fentry) apply here too.",
                );
            }
        }
        if let Some(l) = f(Fact::NginxLostEvents) {
            let _ = write!(a, " Lost events over the traced runs: {l:.0}.");
        }
        a.push_str("\n\n");
    }
    // Case 5.
    if let Some(mib) = f(Fact::PeakRssMib) {
        let _ = write!(
            a,
            "**Memory.** fdtrace's peak RSS was {mib:.1} MiB{}.",
            if mib < 64.0 {
                ", under the 64 MiB target".to_string()
            } else {
                format!(": the 64 MiB target is missed by {:.1} MiB", mib - 64.0)
            }
        );
        if let Some(st) = f(Fact::StartupRssMib) {
            let _ = write!(
                a,
                " {st:.1} MiB of it was already reached when fdtrace began following the ring \
                 buffer (sampled every 5 ms from its start){}",
                if st >= 0.9 * mib {
                    ": the peak comes from start-up, not from the events or the held descriptors."
                } else {
                    "; the rest grew while the events were processed."
                }
            );
        }
        if let Some(r) = f(Fact::RingRssMib) {
            let _ = write!(
                a,
                " {r:.1} MiB of the RSS is the ring buffer's mapping (`anon_inode:bpf-map` in \
                 /proc/PID/smaps): the kernel maps the buffer's data pages twice in a row, so \
                 that a record can wrap around the end, and RSS counts both views of the same \
                 memory (the default 16 MiB buffer is 16 MiB of kernel memory, counted as \
                 32 MiB). A smaller buffer (`--ring-mb`) shrinks that share by twice its size, \
                 at the price of less room for bursts; the target is not bought that way here."
            );
        }
        if let (Some(bp), Some(ay)) = (f(Fact::StartupLayoutMib), f(Fact::StartupAyaMib)) {
            let _ = write!(
                a,
                " Start-up reads the kernel's BTF (`/sys/kernel/btf/vmlinux`) twice: with \
                 fdtrace's own member reader (`kernel_layout::KernelTypes`, for the socket \
                 offsets and the trampolines' functions), {bp:.1} MiB of peak memory on its \
                 own, and in aya's full parse (`Btf::from_sys_fs`, {ay:.1} MiB alone), which \
                 `aya::EbpfLoader::new()` makes whatever the loader is told next (aya 0.14 \
                 builds no loader without it; fdtrace drops it with `EbpfLoader::btf(None)`, \
                 as its programs carry no CO-RE relocations). Both are freed, and the heap's \
                 freed pages returned to the system (`malloc_trim`), before tracing starts; the \
                 peak they set stays in VmHWM (each measured alone in a process by \
                 `fdtrace/examples/startup_memory.rs`)."
            );
        }
        a.push_str("\n\n");
    }
    if let Some(b) = f(Fact::RecordBytesPerEvent) {
        let _ = writeln!(
            a,
            "**Recording.** {b:.2} bytes per event on disk for the open/close loop: records are \
             varint-encoded with timestamps as deltas, each stack is written once, and blocks \
             are zstd-compressed (docs/FORMAT.md)."
        );
    }
    if let (Some(r8), Some(r32)) = (
        f(Fact::BurstRatio { threads: 8 }),
        f(Fact::BurstRatio { threads: 32 }),
    ) {
        let _ = writeln!(
            a,
            "\n**Under load.** Bursts from 8 and 32 threads on this machine's CPUs cost {r8:.2}x \
             and {r32:.2}x the untraced time per pair, with {} and {} events lost at most per \
             run. fdtrace's consumer runs at nice -20 (`fdtrace/src/priority.rs`), so that it \
             is scheduled whenever records wait, however many threads the program keeps busy; \
             and once the ring buffer is half full, births are sent without their stacks. A storm of \"too many open files\" lost {} events: \
             every failure is counted in the kernel per process, syscall and errno, and only \
             the first 128 per CPU in each 250 ms are sent with their stacks.",
            f(Fact::BurstLostEvents { threads: 8 }).unwrap_or(0.0),
            f(Fact::BurstLostEvents { threads: 32 }).unwrap_or(0.0),
            f(Fact::StormLostEvents).unwrap_or(0.0),
        );
    }
    let idle = scrape::IDLE_CLIENTS;
    if let (Some(alone), Some(med), Some(max), Some(lost)) = (
        f(Fact::ScrapeMedianMs { idle: 0 }),
        f(Fact::ScrapeMedianMs { idle }),
        f(Fact::ScrapeMaxMs { idle }),
        f(Fact::ScrapeLostEvents { idle }),
    ) {
        let _ = writeln!(
            a,
            "\n**Metrics.** A scrape took {alone:.2} ms (median) while fdtrace traced the loop \
             with no other client, and {med:.2} ms (median, slowest {max:.1} ms) with {} \
             clients holding unfinished requests, {lost} events lost: the endpoint answers from \
             a snapshot the tracing loop publishes once a second, on a thread of its own, so \
             no client waits on the loop and the loop waits on no client.",
            scrape::IDLE_CLIENTS
        );
    }
    a
}
