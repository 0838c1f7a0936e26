//! Memory of the start-up steps of fdtrace that parse the kernel's BTF, each alone in this
//! process: `layout` (fdtrace's kernel layout, `kernel_layout::KernelTypes`) or `aya` (aya's
//! full BTF parse, which `aya::EbpfLoader::new()` makes and fdtrace then drops with
//! `EbpfLoader::btf(None)`). Used by `cargo xtask bench`.
//!
//! ```sh
//! cargo run --release -p fdtrace --example startup_memory -- layout|aya
//! ```
//!
//! Prints `key value` lines: the process's peak RSS (VmHWM, KiB) before and after the step.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let step = std::env::args().nth(1).unwrap_or_default();
    let before = vm_hwm_kib();
    match step.as_str() {
        "layout" => {
            let types = fdtrace::kernel_layout::KernelTypes::load().expect("kernel BTF");
            let layout = types.layout().expect("kernel layout");
            std::hint::black_box(layout);
        }
        "aya" => {
            let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
            std::hint::black_box(&btf);
        }
        _ => {
            eprintln!("usage: startup_memory layout|aya");
            std::process::exit(2);
        }
    }
    println!("step {step}");
    println!("hwm_before_kib {before}");
    println!("hwm_after_kib {}", vm_hwm_kib());
}
