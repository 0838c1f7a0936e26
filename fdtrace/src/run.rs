//! `fdtrace -p PID`, `fdtrace -- CMD`, `--cgroup`: attach (or launch), follow the kernel's
//! records until the session stops, then write the report or the recording; the live view and
//! the metrics endpoint while it runs.
use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use fdtrace_common::capture;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::{
    clock::monotonic_ns,
    drain_pacing::DrainPacing,
    launch::Launched,
    live_writer::LiveWriter,
    metrics_server::{self, Published},
    options::{Options, Target},
    process::{State, attach_running, capture_for},
    procinfo,
    recorder::Recorder,
    report::{self, Meta},
    session::Session,
    symbolize::Symbols,
    tracer::{self, Tracer},
};

enum Stop {
    Duration,
    Signal,
    TargetExited,
    CgroupRemoved,
}

/// A live snapshot of each traced process still running (the root first).
fn live_statuses(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    top: usize,
) -> Vec<crate::live::LiveStatus> {
    let root = session.root;
    let lost = tracer.lost_events();
    let mut out = Vec::new();
    for p in session.procs.values_mut() {
        if p.exited_ns.is_some() && Some(p.pid) != root {
            continue;
        }
        let st = crate::live::status(
            p.pid,
            p.comm.as_deref().unwrap_or("?"),
            started.elapsed().as_secs_f64(),
            &p.table,
            &p.history,
            &mut p.stacks,
            symbols,
            monotonic_ns(),
            p.rlimit.and_then(|l| l.soft),
            lost,
            top,
        );
        if Some(p.pid) == root {
            out.insert(0, st);
        } else {
            out.push(st);
        }
    }
    out
}

/// The live view of the root process, handed to the live view's writer.
fn show_live(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    out: &mut LiveWriter,
) {
    let Some(st) = live_statuses(session, tracer, symbols, started, 8)
        .into_iter()
        .next()
    else {
        return;
    };
    out.send(if out.screen() {
        format!(
            "{}{}",
            crate::live_writer::CLEAR,
            crate::live::render_screen(&st, crate::terminal::width(2).unwrap_or(80))
        )
    } else {
        format!("{}\n", crate::live::render_line(&st))
    });
}

/// The metrics the endpoint serves until the next call.
fn publish_metrics(
    session: &mut Session,
    tracer: &Tracer,
    symbols: &Symbols,
    started: Instant,
    to: &Published,
) {
    let st = live_statuses(session, tracer, symbols, started, 20);
    to.set(crate::metrics::render(&st, tracer.lost_events()));
}

/// Where a session shows what it sees while it runs: the live view and the metrics endpoint.
struct Outputs {
    live: Option<LiveWriter>,
    /// `q` on the terminal stops the session (when tracing a pid: a launched command keeps
    /// the keyboard).
    quit: Option<crate::terminal::QuitKey>,
    /// No live view (the writer still carries the start-up line).
    quiet: bool,
    metrics: Option<Published>,
}

/// The signals that end a session with its report.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    session: &mut Session,
    tracer: &mut Tracer,
    ring: RingBuf<MapData>,
    launched: &mut Option<Launched>,
    opts: &Options,
    symbols: &Symbols,
    out: &mut Outputs,
    signals: Signals,
) -> Result<Stop> {
    let duration = opts.duration;
    let started = Instant::now();
    let mut live = tokio::time::interval(opts.interval);
    live.tick().await;
    if let Some(m) = &out.metrics {
        publish_metrics(session, tracer, symbols, started, m);
    }
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(std::io::Error::from)
        .context("watching the ring buffer")?;
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // The kernel wakes us only when much is waiting; otherwise we look every 20 to 100 ms, as
    // often as records arrive (`drain_pacing`).
    let mut pacing = DrainPacing::new(u64::from(opts.ring_mb) << 20, Instant::now());
    let poll = tokio::time::sleep(pacing.longest());
    tokio::pin!(poll);
    let mut ticks: u64 = 0;
    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                pacing.drained(session.drain(guard.get_inner_mut()));
                guard.clear_ready();
                session.untarget_gone(tracer);
                if session.finished() {
                    break Stop::TargetExited;
                }
            }
            _ = &mut poll => {
                pacing.drained(session.drain(ring.get_mut()));
                let period = pacing.next_period(Instant::now());
                poll.as_mut().reset(tokio::time::Instant::now() + period);
                session.untarget_gone(tracer);
                if session.finished() {
                    break Stop::TargetExited;
                }
            }
            _ = sigterm.recv() => break Stop::Signal,
            _ = sigint.recv() => break Stop::Signal,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Stop::Duration;
            }
            _ = live.tick(), if !out.quiet => {
                if let Some(w) = out.live.as_mut() {
                    show_live(session, tracer, symbols, started, w);
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                if out.quit.as_ref().is_some_and(|q| q.pressed()) {
                    break Stop::Signal;
                }
                // A recording is written in complete blocks every second, so a killed recorder
                // leaves a readable file.
                if ticks.is_multiple_of(4) {
                    session.take_failure_counts(&tracer.failure_counts());
                    if let Some(rec) = session.recorder.as_mut() {
                        rec.flush();
                    }
                    if let Some(m) = &out.metrics {
                        publish_metrics(session, tracer, symbols, started, m);
                    }
                    let now = monotonic_ns();
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() {
                            p.history.sample(now, &p.table);
                        }
                    }
                }
                if let Some(c) = &session.cgroup {
                    // Cgroups made below it since (a pod's new container) are traced too.
                    let ids = c.ids();
                    if let Err(e) = tracer.set_cgroups(&ids) {
                        warn!("could not update the cgroup filter: {e:#}");
                    }
                    if ids.is_empty() {
                        // The container is gone: every process in it has exited.
                        session.drain(ring.get_mut());
                        for p in session.procs.values_mut() {
                            p.exited_ns.get_or_insert_with(monotonic_ns);
                        }
                        break Stop::CgroupRemoved;
                    }
                } else if let Some(root) = session.root
                    // Once a second: the exit record says it first; reading /proc/PID/stat
                    // (all of it, the kernel computes each field) is the fallback for a lost one.
                    && ticks.is_multiple_of(4)
                {
                    let root_gone = match launched {
                        Some(l) => l.exited(),
                        None => !procinfo::exists(root),
                    };
                    if root_gone && session.procs[&root].exited_ns.is_none() {
                        // The exit event was lost or the process vanished: stop following it.
                        session.drain(ring.get_mut());
                        if let Some(p) = session.procs.get_mut(&root) {
                            p.exited_ns.get_or_insert_with(monotonic_ns);
                        }
                    }
                }
                if session.follow && ticks.is_multiple_of(4) {
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() && !procinfo::exists(p.pid) {
                            p.exited(monotonic_ns());
                        }
                    }
                }
                if session.finished() {
                    break Stop::TargetExited;
                }
                // Every two seconds, check the model against the kernel's tables.
                if ticks.is_multiple_of(8) {
                    session.drain(ring.get_mut());
                    for p in session.procs.values_mut() {
                        if p.exited_ns.is_none() {
                            p.reconcile();
                        }
                    }
                    session.flush_logs();
                }
            }
        }
    };
    // Everything the kernel produced before we stopped is applied.
    session.drain(ring.get_mut());
    session.take_failure_counts(&tracer.failure_counts());
    Ok(stop)
}

/// Run a whole session and write its report.
/// Returns the exit status for fdtrace: the launched command's when it ended on its own (its
/// exit code, or 128 + the signal that killed it), 0 otherwise.
pub fn run(opts: Options) -> Result<i32> {
    tracer::check_privileges()?;
    if let Target::Pid(pid) = opts.target
        && !procinfo::exists(pid)
    {
        bail!("no process with pid {pid}");
    }
    // Where the results go is checked before anything is traced: a session is never lost to a
    // path that cannot be written.
    if let Some(path) = &opts.record {
        crate::output::check_new_file(path)?;
    }
    if let Some(path) = opts
        .output
        .as_deref()
        .filter(|p| !crate::output::is_stdout(p))
    {
        crate::output::check_writable(path)?;
    }
    let cgroup = match &opts.target {
        Target::Cgroup(arg) => Some(arg.resolve()?),
        _ => None,
    };
    // Fork before any thread exists; the child waits for us before it execs.
    let mut launched = match &opts.target {
        Target::Command(argv) => Some(Launched::fork(argv)?),
        _ => None,
    };
    // Bound before tracing starts, so that a taken or bad address fails first.
    let metrics_listener = opts.metrics.map(metrics_server::bind).transpose()?;
    // Language runtimes get their whole stacks (one more program on some birth tracepoints,
    // attached only when a target may need it: a cgroup's processes may be any program).
    // How the root's stacks are captured (a pid or a command; a cgroup's processes each).
    let root_capture = match (&opts.target, &launched) {
        (Target::Pid(pid), _) => {
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            capture_for(opts.unwind, Some(&exe))
        }
        (_, Some(l)) => capture_for(opts.unwind, Some(&l.program)),
        _ => capture::STACK_COPY,
    };
    // CPython: its frames are read by a program of the same set.
    let python_root = match (&opts.target, &launched) {
        (Target::Pid(pid), _) => crate::runtime::of_exe(&PathBuf::from(format!("/proc/{pid}/exe"))),
        (_, Some(l)) => crate::runtime::of_exe(&l.program),
        _ => None,
    } == Some(crate::runtime::Runtime::Python);
    let deep = cgroup.is_some() || capture::chunks(u32::from(root_capture)) > 0 || python_root;
    let mut tracer = Tracer::load_for(opts.ring_mb << 20, cgroup.is_some(), deep, opts.hooks)?;
    tracer.go_links = opts.go_links;
    tracer.set_follow(opts.follow || cgroup.is_some())?;
    if let Some(c) = &cgroup {
        tracer.set_cgroups(&c.ids())?;
    }
    let ring = tracer.take_ring()?;
    let recording = opts.record.is_some();
    let mut session = match (&opts.target, &launched, &cgroup) {
        (Target::Pid(pid), _, _) => {
            let pid = *pid;
            // A JVM writes its perf map when asked (before tracing: its answer is no birth).
            let mut java = crate::java_attach::PerfMapRequests::default();
            java.request_now(pid);
            tracer.add_target(pid, root_capture)?;
            let mut state = attach_running(pid, opts.unwind, recording)?;
            state.runtime.java = java;
            Session::new(state, opts.follow)
        }
        (_, Some(l), _) => {
            let capture = root_capture;
            tracer.add_target(l.pid, capture)?;
            let mut state = State::new(l.pid, opts.unwind, capture);
            state.comm = PathBuf::from(&l.program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            if recording {
                state.log = Some(Vec::new());
            }
            // Its mappings are fdtrace's own until it execs, which reads them anew.
            state.baseline(false)?;
            Session::new(state, opts.follow)
        }
        (_, None, Some(c)) => {
            // The kernel adopts the cgroup's processes as they make syscalls; these are the ones
            // there now, read as when attaching to a pid (a process the kernel adopted first is
            // read once: its JOIN record finds it known).
            let mut session = Session::of_cgroup(Some(c.clone()), opts.unwind);
            for pid in c.processes() {
                if pid == std::process::id() {
                    continue;
                }
                let exe = PathBuf::from(format!("/proc/{pid}/exe"));
                tracer.add_target(pid, capture_for(opts.unwind, Some(&exe)))?;
                match attach_running(pid, opts.unwind, recording) {
                    Ok(p) => session.add_process(p),
                    // Gone meanwhile.
                    Err(e) => debug!("pid {pid} of the cgroup: {e:#}"),
                }
            }
            session
        }
        _ => unreachable!("a target"),
    };
    // What the kernel must know of the processes now (where a Python process keeps its frames)
    // before "tracing" is said.
    session.untarget_gone(&mut tracer);
    if let Some(root) = session.root() {
        debug!(
            "unwinding pid {}: {}",
            root.pid,
            if root.capture == capture::FRAME_POINTERS {
                "frame pointers"
            } else {
                "DWARF CFI over a stack copy"
            }
        );
    }
    let what = match (&opts.target, &cgroup, session.root()) {
        (_, Some(c), _) => c.describe(),
        (Target::Pid(p), _, Some(r)) => format!("pid {p} ({})", r.comm.as_deref().unwrap_or("?")),
        (Target::Command(argv), _, _) => argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if let Some(path) = &opts.record {
        session.start_recording(Recorder::create(path, what.clone())?);
    }
    // From here on, stderr is written only through the live view's writer, which never waits
    // for a reader: the kernel is producing events.
    // Ctrl-C and SIGTERM are caught before "tracing" is said: a signal sent as soon as it shows
    // ends the session with its report, never the process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = {
        let _in_runtime = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        }
    };
    let interactive = !opts.quiet && std::io::stderr().is_terminal();
    let mut out = Outputs {
        live: Some(LiveWriter::start(std::io::stderr(), interactive)),
        quiet: opts.quiet,
        quit: match opts.target {
            Target::Pid(_) | Target::Cgroup(_) if interactive => crate::terminal::QuitKey::listen(),
            _ => None,
        },
        metrics: match metrics_listener {
            Some(l) => {
                let p = Published::default();
                metrics_server::start(l, p.clone())?;
                Some(p)
            }
            None => None,
        },
    };
    if let Some(w) = out.live.as_mut()
        && !w.screen()
    {
        match (&opts.target, &cgroup) {
            (Target::Pid(_), _) => w.send(format!(
                "fdtrace: tracing {what}{}; Ctrl-C to stop and report\n",
                if opts.follow { " and its children" } else { "" }
            )),
            (_, Some(_)) => w.send(format!(
                "fdtrace: tracing {what}: {} process{} now, and every one that enters it; Ctrl-C to stop and report\n",
                session.procs.len(),
                if session.procs.len() == 1 { "" } else { "es" },
            )),
            _ => {}
        }
    }
    crate::memory::return_freed_memory();
    let started = Instant::now();
    if let Some(l) = launched.as_mut() {
        l.release()?;
    }
    crate::priority::raise_consumer();
    let symbols = Symbols::new();
    let stop = rt.block_on(follow(
        &mut session,
        &mut tracer,
        ring,
        &mut launched,
        &opts,
        &symbols,
        &mut out,
        signals,
    ));
    // The terminal's screen is restored before anything else is written.
    let live_dropped = out
        .live
        .take()
        .map(|w| w.finish(Duration::from_millis(200)));
    let stop = stop?;
    debug!(
        "stopped after {:?} ({})",
        started.elapsed(),
        match stop {
            Stop::Duration => "duration",
            Stop::Signal => "signal",
            Stop::TargetExited => "target exited",
            Stop::CgroupRemoved => "cgroup removed",
        }
    );
    if tracer.pending_errors() > 0 {
        warn!(
            "{} syscalls could not be followed from entry to exit",
            tracer.pending_errors()
        );
    }
    let duration_s = started.elapsed().as_secs_f64();
    let mut ends = Vec::new();
    // The moment the reports (and the recording's end) describe.
    let ended_ns = monotonic_ns();
    for p in session.procs.values() {
        let exited = p.exited_ns.is_some() || !procinfo::exists(p.pid);
        // Ground truth, while the process still lives.
        let proc_fds = if exited {
            None
        } else {
            procinfo::fds(p.pid).ok()
        };
        let meta = Meta {
            pid: p.pid,
            parent: p.parent,
            command: p.comm.clone(),
            duration_s,
            target_exited: exited,
            lost_events: tracer.lost_events(),
            stack_errors: tracer.stack_errors(),
            missing_tracepoints: tracer.missing.clone(),
            rlimit_nofile: procinfo::nofile_limit(p.pid).or(p.rlimit),
            container: crate::container::of(p.pid).or_else(|| p.container.clone()),
        };
        ends.push((p.pid, meta, proc_fds));
    }
    session.name_jit_frames();
    let report = session.report(&ends, opts.min_age, &symbols, ended_ns);
    if let Some(l) = launched.as_mut() {
        l.terminate();
    }
    let reason = match stop {
        Stop::Duration => "duration reached",
        Stop::Signal => "interrupted",
        Stop::TargetExited => "target exited",
        Stop::CgroupRemoved => "cgroup removed",
    };
    if let Some((bytes, path)) =
        session.finish_recording(&ends, tracer.lost_events(), reason, ended_ns)?
    {
        let events: u64 = session
            .procs
            .values()
            .map(|p| p.table.stats.opens + p.table.stats.closes)
            .sum();
        crate::output::say(&format!(
            "fdtrace: recorded {} process{}, {events} births and closes, {bytes} bytes, to {}; read it with `fdtrace report {}`",
            session.procs.len(),
            if session.procs.len() == 1 { "" } else { "es" },
            path.display(),
            path.display()
        ));
        tracer.release_in_background();
        return Ok(exit_code(&launched));
    }
    let Some(mut report) = report else {
        bail!("{what} held no process while it was traced: nothing to report");
    };
    report.live_updates_dropped = live_dropped;
    report.stray_events = Some(session.stray_events);
    let text = crate::output::render(&report, opts.json, |r| report::render_text_all(r, opts.all))?;
    // The report goes to -o FILE, to stdout with `-o -` or when tracing a pid (so that it can
    // be piped), and to stderr when a launched command keeps stdout for itself.
    match (&opts.output, &opts.target) {
        (Some(path), _) if !crate::output::is_stdout(path) => {
            crate::output::write_atomically(path, text.as_bytes())
                .with_context(|| format!("writing the report to {}", path.display()))?
        }
        (Some(_), _) | (None, Target::Pid(_) | Target::Cgroup(_)) => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the report to stdout")?,
        (None, Target::Command(_)) => std::io::stderr()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the report to stderr")?,
    }
    tracer.release_in_background();
    Ok(exit_code(&launched))
}

fn exit_code(launched: &Option<Launched>) -> i32 {
    launched.as_ref().and_then(|l| l.exit_code()).unwrap_or(0)
}
