//! `fdtrace top`: every process by open descriptors and their growth, from /proc, to find the
//! leaking process before knowing its pid.
use std::{collections::HashMap, fmt::Write as _, time::Duration};

use anyhow::Result;

use crate::procinfo;

/// One process at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    pub comm: String,
    pub open: usize,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub open: usize,
    pub growth_per_min: f64,
    pub limit: Option<u64>,
}

/// Open descriptors of every process we may look at (all of them as root).
pub fn snapshot() -> HashMap<u32, Count> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        out.insert(
            pid,
            Count {
                comm: procinfo::comm(pid).unwrap_or_default(),
                open: fds.count(),
            },
        );
    }
    out
}

/// Rank processes by growth between two snapshots `secs` apart, then by open count.
pub fn rank(before: &HashMap<u32, Count>, after: &HashMap<u32, Count>, secs: f64) -> Vec<Row> {
    let mut rows: Vec<Row> = after
        .iter()
        .map(|(&pid, c)| {
            let was = before.get(&pid).map(|b| b.open).unwrap_or(c.open);
            Row {
                pid,
                comm: c.comm.clone(),
                open: c.open,
                growth_per_min: (c.open as f64 - was as f64) / secs.max(1e-9) * 60.0,
                limit: None,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.growth_per_min
            .total_cmp(&a.growth_per_min)
            .then(b.open.cmp(&a.open))
            .then(a.pid.cmp(&b.pid))
    });
    rows
}

pub fn render(rows: &[Row]) -> String {
    let mut o = format!(
        "{:>8} {:<16} {:>8} {:>12} {:>9} {:>6}\n",
        "PID", "COMMAND", "OPEN", "GROWTH/MIN", "LIMIT", "USED"
    );
    for r in rows {
        let (limit, used) = match r.limit {
            Some(l) if l > 0 => (
                l.to_string(),
                format!("{:.0}%", r.open as f64 * 100.0 / l as f64),
            ),
            _ => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>8} {:>+12.1} {:>9} {:>6}",
            r.pid, r.comm, r.open, r.growth_per_min, limit, used
        );
    }
    o
}

/// Measure over `interval`, print the top `n`; repeat on a terminal unless `once`.
pub fn run(n: usize, interval: Duration, once: bool) -> Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let repeat = !once && std::io::stdout().is_terminal();
    let mut before = snapshot();
    loop {
        std::thread::sleep(interval);
        let after = snapshot();
        let mut rows = rank(&before, &after, interval.as_secs_f64());
        rows.truncate(n);
        for r in &mut rows {
            r.limit = procinfo::nofile_limit(r.pid).and_then(|l| l.soft);
        }
        let mut out = std::io::stdout().lock();
        if repeat {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        out.write_all(render(&rows).as_bytes())?;
        out.flush()?;
        if !repeat {
            return Ok(());
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(comm: &str, open: usize) -> Count {
        Count {
            comm: comm.into(),
            open,
        }
    }

    #[test]
    fn growth_comes_first_then_size() {
        let before: HashMap<u32, Count> = [
            (1, c("big", 900)),
            (2, c("leaky", 10)),
            (3, c("steady", 50)),
        ]
        .into();
        let after: HashMap<u32, Count> = [
            (1, c("big", 900)),
            (2, c("leaky", 40)),
            (3, c("steady", 50)),
            (4, c("new", 5)),
        ]
        .into();
        let rows = rank(&before, &after, 2.0);
        let order: Vec<u32> = rows.iter().map(|r| r.pid).collect();
        assert_eq!(order, vec![2, 1, 3, 4]);
        assert_eq!(rows[0].growth_per_min, 900.0);
        // A process that appeared counts as not growing yet.
        assert_eq!(rows[3].growth_per_min, 0.0);
        let t = render(&rows);
        assert!(t.lines().nth(1).unwrap().contains("leaky"), "{t}");
    }

    #[test]
    fn this_process_is_seen() {
        let s = snapshot();
        assert!(s.get(&std::process::id()).is_some_and(|c| c.open > 0));
    }
}
