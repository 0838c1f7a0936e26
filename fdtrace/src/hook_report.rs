//! `fdtrace hooks`: which hook observes each event on this kernel, and why. The programs are
//! loaded and attached as a trace would (the kernel's verifier and trampolines have the last
//! word), then released.
use std::io::Write as _;

use anyhow::{Context as _, Result};

use crate::{hooks::HookSet, tracer::Tracer};

/// Print one line per event, then what the choice costs processes fdtrace does not trace.
pub fn print(hooks: HookSet) -> Result<()> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "fdtrace hooks loads fdtrace's programs to see which hooks this kernel takes, which only root may do: run it with sudo"
        );
    }
    let started = std::time::Instant::now();
    let mut tracer = Tracer::load_for(1 << 20, false, false, hooks)?;
    let secs = started.elapsed().as_secs_f64();
    let choices = std::mem::take(&mut tracer.hooks);
    let time = tracer.trampoline_time;
    tracer.release_in_background();
    let width = choices
        .iter()
        .map(|c| c.event.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let hook_width = choices
        .iter()
        .map(|c| c.hook.len().min(60))
        .max()
        .unwrap_or(4);
    let mut text = format!("{:<width$}  {:<hook_width$}  why\n", "event", "hook");
    for c in &choices {
        text.push_str(&format!(
            "{:<width$}  {:<hook_width$}  {}\n",
            c.event, c.hook, c.why
        ));
    }
    let syscall_tracepoints = choices
        .iter()
        .filter(|c| c.hook.starts_with("tracepoint syscalls:"))
        .count();
    text.push_str(&if syscall_tracepoints == 0 {
        "\nno syscall tracepoint is attached: processes fdtrace does not trace pay only when they \
         call a hooked function (a trampoline and one map load)\n"
            .to_string()
    } else {
        format!(
            "\n{syscall_tracepoints} syscalls are observed on their tracepoints: while fdtrace \
             runs, every syscall of every process takes the kernel's syscall tracing path\n"
        )
    });
    text.push_str(&format!(
        "loaded and attached in {secs:.1} s (trampolines: {:.1} s verifying, {:.1} s attaching)\n",
        time.loading.as_secs_f64(),
        time.attaching.as_secs_f64()
    ));
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
