//! Floors for `cargo xtask bench`, loaded from fdtrace's own eBPF object with aya, as fdtrace
//! loads its programs:
//!
//! ```sh
//! floor tp CATEGORY:NAME...   # `floor_empty` (returns 0 at once) on these tracepoints
//! floor raw                   # `floor_raw_syscalls` (one lookup of the target filter) on the
//!                             # raw sys_enter and sys_exit tracepoints
//! ```
//!
//! Prints `ready` once everything is attached and detaches when a line (or end of file)
//! arrives on stdin.
use anyhow::{Context as _, bail};
use aya::programs::{RawTracePoint, TracePoint};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ebpf = aya::EbpfLoader::new()
        .btf(None)
        .load(fdtrace::tracer::ebpf_object())
        .context("loading the eBPF object")?;
    let mut raw_links = Vec::new();
    let mut tp_links = Vec::new();
    match args.first().map(String::as_str) {
        Some("raw") => {
            let prog: &mut RawTracePoint = ebpf
                .program_mut("floor_raw_syscalls")
                .context("floor_raw_syscalls missing from the eBPF object")?
                .try_into()?;
            prog.load().context("loading floor_raw_syscalls")?;
            for tp in ["sys_enter", "sys_exit"] {
                raw_links.push(
                    prog.attach(tp)
                        .with_context(|| format!("attaching to {tp}"))?,
                );
            }
        }
        Some("tp") if args.len() > 1 => {
            let prog: &mut TracePoint = ebpf
                .program_mut("floor_empty")
                .context("floor_empty missing from the eBPF object")?
                .try_into()?;
            prog.load().context("loading floor_empty")?;
            for tp in &args[1..] {
                let (category, name) = tp
                    .split_once(':')
                    .with_context(|| format!("{tp}: expected CATEGORY:NAME"))?;
                tp_links.push(
                    prog.attach(category, name)
                        .with_context(|| format!("attaching to {tp}"))?,
                );
            }
        }
        _ => bail!("usage: floor tp CATEGORY:NAME... | floor raw"),
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}
