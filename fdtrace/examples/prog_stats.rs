//! The run statistics of every loaded BPF program, for `cargo xtask bench --vm`'s per-program
//! breakdown (its VMs have no bpftool): one line per program that has run,
//!
//! ```text
//! ID NAME RUN_TIME_NS RUN_COUNT
//! ```
//!
//! The kernel counts run time and runs only while `kernel.bpf_stats_enabled` is 1; NAME is the
//! kernel's copy of the program's name (at most 15 bytes).
use std::io::Write as _;

fn main() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for p in aya::programs::loaded_programs() {
        // (One unloaded while the list is read is left out.)
        let Ok(p) = p else { continue };
        if p.run_count() == 0 {
            continue;
        }
        writeln!(
            out,
            "{} {} {} {}",
            p.id(),
            p.name_as_str().filter(|n| !n.is_empty()).unwrap_or("-"),
            p.run_time().as_nanos(),
            p.run_count()
        )?;
    }
    Ok(())
}
