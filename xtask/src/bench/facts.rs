//! The numbers (and texts) a run keeps for the analysis: the cases set them, `doc` reads them.
//! One typed key per measurement, so that a writer and its reader cannot drift apart by a typo.
//! "Median" is the median over the repetitions; a ratio or a difference "per run" is taken
//! against the untraced run of the same repetition.

/// Which diagnostic run of the open/close loop (case 1) a figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum DiagRun {
    /// The diagnostic run: `fdtrace -p` of `openclose -w` with BPF statistics on, its consumer
    /// following the ring buffer.
    Normal,
    /// The short runs with fdtrace's process stopped (SIGSTOP) while the loop runs, merged.
    Stopped,
}

/// What runs while the loop runs in a process that is not the target (case 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Untargeted {
    /// `fdtrace -p` of a `sleep`.
    Fdtrace,
    /// The floor: an empty program on every tracepoint fdtrace attaches.
    Floor,
    /// The raw floor: a filter-only program on the raw `sys_enter` and `sys_exit` tracepoints.
    RawFloor,
}

/// Which statistic of the per-run figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Stat {
    /// The median over the runs.
    Median,
    /// The smallest run.
    Lo,
    /// The largest run.
    Hi,
}

/// A number a case measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Fact {
    // Case 1: the open/close loop.
    /// Untraced loop, median time per open/close pair (ns).
    LoopUntracedNs,
    /// Loop under `fdtrace --`, median time per pair (ns).
    LoopFdtraceNs,
    /// Loop under the floor (empty programs on fdtrace's tracepoints), median time per pair (ns).
    LoopFloorNs,
    /// Loop under the raw floor (filter-only program on `sys_enter`/`sys_exit`), median time
    /// per pair (ns).
    LoopRawFloorNs,
    /// Loop under bpftrace with empty blocks, median time per pair (ns).
    LoopBpftraceEmptyNs,
    /// Loop under the bpftrace script, median time per pair (ns).
    LoopBpftraceNs,
    /// Loop under strace, median time per pair (ns).
    LoopStraceNs,
    /// fdtrace's loop against the untraced one, median per-run ratio (x).
    LoopFdtraceRatio,
    /// Time fdtrace adds to the loop, median per-run difference (ns per pair).
    LoopFdtraceAddedNs,
    /// Time the floor adds to the loop, median per-run difference (ns per pair).
    LoopFloorAddedNs,
    /// Time the raw floor adds to the loop, median per-run difference (ns per pair).
    LoopRawFloorAddedNs,
    /// Time bpftrace with empty blocks adds to the loop, median per-run difference (ns per
    /// pair).
    LoopBpftraceEmptyAddedNs,
    /// Time the bpftrace script adds to the loop, median per-run difference (ns per pair).
    LoopBpftraceAddedNs,
    /// strace's loop against the untraced one, median per-run ratio (x).
    LoopStraceRatio,
    /// Time fdtrace adds over the time the floor adds (x; set only when the floor adds time).
    LoopFdtraceVsFloor,
    /// Events lost over all of case 1's fdtrace runs (events).
    LoopLostEvents,

    // Case 1: the diagnostic runs (BPF statistics on).
    /// The loop's time per pair in the run (ns; the median of the stopped runs).
    DiagLoopNs { run: DiagRun },
    /// Time in all of fdtrace's BPF programs per pair (ns).
    DiagBpfNsPerPair { run: DiagRun },
    /// fdtrace's own CPU time per pair (ns).
    DiagConsumerCpuNsPerPair { run: DiagRun },
    /// fdtrace's voluntary context switches (wake-ups) per pair.
    DiagConsumerWakeupsPerPair { run: DiagRun },
    /// Events lost in the run (events).
    DiagLostEvents { run: DiagRun },
    /// One of `OPEN_CLOSE_PROGS`, time per run of the program (ns); set only for a program
    /// that ran at least once per two pairs.
    ProgramNsPerRun { run: DiagRun, program: &'static str },
    /// One of `OPEN_CLOSE_PROGS`, time in the program per pair (ns); set as `ProgramNsPerRun`.
    ProgramNsPerPair { run: DiagRun, program: &'static str },

    // Case 2: untargeted processes.
    /// The loop in a process nothing targets, under `under`, against untraced: per-run ratios
    /// (x), their median, smallest or largest.
    UntargetedRatio { under: Untargeted, stat: Stat },

    // Case 3: sustained rate.
    /// The untraced loop's event rate, two events per pair (events/s).
    SustainedUntracedEventsPerS,
    /// Events lost by fdtrace on the loop at full speed (events).
    SustainedLostEvents,
    /// The loop's event rate under fdtrace (events/s).
    SustainedTracedEventsPerS,
    /// The user side alone, decode and `State::apply` (events/s).
    UserEventsPerS,
    /// The user side's decoding alone (events/s).
    UserDecodeEventsPerS,
    /// The user side's decoding alone, records without stacks (events/s).
    UserDecodeNostackEventsPerS,
    /// fdtrace's instructions per open/close pair it consumes, under callgrind (instructions).
    ConsumerInstructionsPerPair,

    // Case 4: nginx.
    /// fdtrace's instructions per nginx request it consumes, under callgrind (instructions).
    ConsumerInstructionsPerRequest,
    /// Requests per second under the floor, median (requests/s).
    NginxFloorRps,
    /// Requests lost to the floor, from the median per-run ratio to untraced (%).
    NginxFloorLossPct,
    /// Requests per second untraced, median (requests/s).
    NginxUntracedRps,
    /// Requests per second with fdtrace tracing the worker, median (requests/s).
    NginxTracedRps,
    /// Requests lost to fdtrace, from the median per-run ratio to untraced (%).
    NginxLossPct,
    /// Events lost over the traced runs (events).
    NginxLostEvents,
    /// Share of both CPUs busy during the untraced runs, median (%).
    NginxBusyUntracedPct,
    /// Share of both CPUs busy during the traced runs, median (%).
    NginxBusyTracedPct,
    /// fdtrace's process's CPU time during the traced runs, median (% of one CPU).
    NginxFdtraceCpuPct,
    /// Requests per second of the traced run with BPF statistics on (requests/s).
    NginxDiagRps,
    /// Time in fdtrace's BPF programs per request in that run (ns).
    NginxBpfNsPerRequest,

    // Case 5: memory.
    /// fdtrace's peak RSS (MiB).
    PeakRssMib,
    /// fdtrace's peak RSS per process it followed and kept, from two runs (KiB).
    FollowRssKibPerProcess,
    /// Peak memory of fdtrace's own BTF member reader alone in a process (MiB).
    StartupLayoutMib,
    /// Peak memory of aya's full BTF parse alone in a process (MiB).
    StartupAyaMib,
    /// fdtrace's VmHWM when it began following the ring buffer (MiB).
    StartupRssMib,
    /// RSS of the ring buffer's mapping in fdtrace (MiB).
    RingRssMib,

    // Case 6: recording.
    /// Recording size per event of the loop (bytes).
    RecordBytesPerEvent,
    /// The loop's time per pair under `fdtrace record` (ns).
    RecordNsPerPair,

    // Case 7: metrics scrapes.
    /// Scrape latency with `idle` clients holding unfinished requests, median (ms).
    ScrapeMedianMs { idle: usize },
    /// Scrape latency with `idle` such clients, slowest (ms).
    ScrapeMaxMs { idle: usize },
    /// Events lost in that run (events).
    ScrapeLostEvents { idle: usize },

    // Case 8: under load.
    /// Bursts from `threads` threads, time per pair traced against untraced, medians (x).
    BurstRatio { threads: u64 },
    /// Bursts from `threads` threads, events lost in the worst traced run (events).
    BurstLostEvents { threads: u64 },
    /// The EMFILE storm, events lost in the worst traced run (events).
    StormLostEvents,
    /// Attaching to a process holding many descriptors, time to "tracing pid" (s).
    AttachSeconds,
    /// Attaching to a process holding many descriptors, fdtrace's peak RSS (MiB).
    AttachRssMib,

    // Case 9: a whole cgroup traced.
    /// The loop outside the traced cgroup against untraced, median per-run ratio (x).
    CgroupRatio,
    /// The same against `fdtrace -p` of a process elsewhere, median per-run ratio (x).
    CgroupVsUntargeted,

    // Case 10: Go link probes.
    /// Time the probes add per request, median per-run difference (ns).
    GoProbeNs,
    /// Time per request with the probes against untraced, median per-run ratio (x).
    GoRatio,

    // Case 11: the idle agent.
    /// `fdtrace agent` polling every 5 s, its CPU time (% of one CPU).
    AgentCpuPct5s,
    /// `fdtrace agent` polling every second, its CPU time (% of one CPU).
    AgentCpuPct1s,

    // Case 12: language runtimes.
    /// Time fdtrace adds per pair to the C loop, difference of the medians (ns).
    RuntimeCAddedNs,
    /// Time fdtrace adds per pair to the Python loop, difference of the medians (ns).
    RuntimePyAddedNs,
    /// Time fdtrace adds per pair to the Java loop, difference of the medians (ns).
    RuntimeJavaAddedNs,
}

/// A text a case measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Text {
    /// Case 4's diagnostic run: the four most costly programs, runs and ns per request each.
    NginxTopPrograms,
}
