//! Tools, and the measurements every case takes: medians, ranges, fields of a program's output,
//! memory, CPU time.
use super::*;

/// The peers and load generators the bench compares with, and their Debian packages.
pub(super) const TOOLS: [(&str, &str); 7] = [
    ("bpftrace", "bpftrace"),
    ("strace", "strace"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
    ("time", "time"),
    ("valgrind", "valgrind"),
    ("callgrind_control", "valgrind"),
];

pub(super) fn find_tool(name: &str) -> Option<PathBuf> {
    crate::deps::find_program(name)
}

/// A loop's time ratio, with a third decimal where two would round it onto the 1.5x target
/// (1.503x reads as "1.50x, missed" otherwise).
pub(super) fn loop_ratio(r: f64) -> String {
    if (r - 1.5).abs() < 0.005 {
        format!("{r:.3}x")
    } else {
        format!("{r:.2}x")
    }
}

pub(super) fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

pub(super) fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The value after `key ` on a line of `text`.
pub(super) fn field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
}

pub(super) fn ns_per_pair(out: &Finished) -> Result<f64> {
    if !out.status.success() {
        bail!("the loop failed ({}): {}", out.status, out.stderr.trim());
    }
    field(&out.stdout, "ns_per_pair ")
        .with_context(|| format!("no `ns_per_pair` in the output: {}", out.stdout.trim()))
}

/// Read a process's own memory peak (VmHWM, KiB).
pub(super) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// RSS (KiB) of a process's shared BPF map mappings (`anon_inode:bpf-map`, `r--s`): fdtrace's
/// ring buffer, whose data pages the kernel maps twice in a row (so records can wrap around).
pub(super) fn bpf_map_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut in_map = false;
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first().is_some_and(|a| {
            a.contains('-') && a.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            in_map = f.get(1).is_some_and(|p| p.ends_with('s'))
                && f.last().is_some_and(|n| *n == "anon_inode:bpf-map");
        } else if in_map && f.first() == Some(&"Rss:") {
            total += f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(total)
}

pub(super) fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// (busy, total) jiffies of all CPUs from /proc/stat, and the time it was read (s).
pub(super) fn cpu_stat() -> Option<(f64, f64, f64)> {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total, now))
}

/// Busy share of all CPUs between two /proc/stat readings.
pub(super) fn busy(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let total = b.1 - a.1;
    (total > 0.0).then(|| (b.0 - a.0) / total)
}

pub(super) fn first_line(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Results
