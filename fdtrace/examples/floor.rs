//! Floors for `cargo xtask bench`, loaded from fdtrace's own eBPF object with aya, as fdtrace
//! loads its programs:
//!
//! ```sh
//! floor tp CATEGORY:NAME...   # `floor_empty` (returns 0 at once) on these tracepoints
//! floor raw                   # `floor_raw_syscalls` (one lookup of the target filter) on the
//!                             # raw sys_enter and sys_exit tracepoints
//! floor hooks SPEC...         # an empty program on each hook, as `fdtrace hooks` names them:
//!                             # tracepoint:CATEGORY:NAME, fentry:FUNCTION or fexit:FUNCTION
//! ```
//!
//! Prints `ready` once everything is attached and detaches when a line (or end of file)
//! arrives on stdin.
use anyhow::{Context as _, bail};
use aya::programs::{FEntry, FExit, RawTracePoint, TracePoint};

/// Copies of the empty trampoline programs in the object (`floor_fentry0..`, `floor_fexit0..`):
/// a trampoline program is loaded for one function.
const TRAMPOLINE_COPIES: usize = 4;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ebpf = aya::EbpfLoader::new()
        .btf(None)
        .load(fdtrace::tracer::ebpf_object())
        .context("loading the eBPF object")?;
    let mut raw_links = Vec::new();
    let mut tp_links = Vec::new();
    let mut entry_links = Vec::new();
    let mut exit_links = Vec::new();
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
        Some("hooks") if args.len() > 1 => {
            let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
            let (mut entries, mut exits) = (0, 0);
            let mut empty_tp_loaded = false;
            for spec in &args[1..] {
                match spec.split_once(':') {
                    Some(("tracepoint", tp)) => {
                        let (category, name) = tp.split_once(':').with_context(|| {
                            format!("{spec}: expected tracepoint:CATEGORY:NAME")
                        })?;
                        let prog: &mut TracePoint = ebpf
                            .program_mut("floor_empty")
                            .context("floor_empty missing from the eBPF object")?
                            .try_into()?;
                        if !empty_tp_loaded {
                            prog.load().context("loading floor_empty")?;
                            empty_tp_loaded = true;
                        }
                        tp_links.push(
                            prog.attach(category, name)
                                .with_context(|| format!("attaching to {tp}"))?,
                        );
                    }
                    Some(("fentry", function)) if entries < TRAMPOLINE_COPIES => {
                        let name = format!("floor_fentry{entries}");
                        entries += 1;
                        let prog: &mut FEntry = ebpf
                            .program_mut(&name)
                            .with_context(|| format!("{name} missing from the eBPF object"))?
                            .try_into()?;
                        prog.load(function, &btf)
                            .with_context(|| format!("loading fentry on {function}"))?;
                        entry_links.push(
                            prog.attach()
                                .with_context(|| format!("attaching fentry to {function}"))?,
                        );
                    }
                    Some(("fexit", function)) if exits < TRAMPOLINE_COPIES => {
                        let name = format!("floor_fexit{exits}");
                        exits += 1;
                        let prog: &mut FExit = ebpf
                            .program_mut(&name)
                            .with_context(|| format!("{name} missing from the eBPF object"))?
                            .try_into()?;
                        prog.load(function, &btf)
                            .with_context(|| format!("loading fexit on {function}"))?;
                        exit_links.push(
                            prog.attach()
                                .with_context(|| format!("attaching fexit to {function}"))?,
                        );
                    }
                    Some(("fentry" | "fexit", _)) => {
                        bail!("{spec}: at most {TRAMPOLINE_COPIES} functions per side")
                    }
                    _ => bail!(
                        "{spec}: expected tracepoint:CATEGORY:NAME, fentry:FUNCTION or fexit:FUNCTION"
                    ),
                }
            }
        }
        _ => bail!("usage: floor tp CATEGORY:NAME... | floor raw | floor hooks SPEC..."),
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}
