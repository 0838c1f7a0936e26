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
    /// The container id (its first 12 hex digits), for a process in a container.
    pub container: Option<String>,
}

/// Open descriptors of every process we may look at (all of them as root).
pub fn snapshot() -> HashMap<u32, Count> {
    snapshot_counting().0
}

/// [`snapshot`], and how many processes could not be read (not ours, without root).
pub fn snapshot_counting() -> (HashMap<u32, Count>, usize) {
    let mut out = HashMap::new();
    let mut unreadable = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (out, unreadable);
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    unreadable += 1;
                }
                continue;
            }
        };
        out.insert(
            pid,
            Count {
                comm: procinfo::comm(pid).unwrap_or_default(),
                open: fds.count(),
            },
        );
    }
    (out, unreadable)
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
                container: None,
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
        "{:>8} {:<16} {:>8} {:>12} {:>9} {:>6} {}\n",
        "PID", "COMMAND", "OPEN", "GROWTH/MIN", "LIMIT", "USED", "CONTAINER"
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
            "{:>8} {:<16} {:>8} {:>+12.1} {:>9} {:>6} {}",
            r.pid,
            r.comm,
            r.open,
            r.growth_per_min,
            limit,
            used,
            r.container.as_deref().unwrap_or("-")
        );
    }
    o
}

use crate::terminal::{ENTER_ALT_SCREEN, LEAVE_ALT_SCREEN};

/// Measure over `interval`, print the top `n`; on a terminal (unless `once`) redraw on the
/// alternate screen until `q`, Ctrl-C or SIGTERM.
pub fn run(n: usize, interval: Duration, once: bool) -> Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let repeat = !once && std::io::stdout().is_terminal();
    let (mut before, unreadable) = snapshot_counting();
    if unreadable > 0 {
        crate::output::say(&format!(
            "fdtrace top: {unreadable} processes could not be read (their /proc/PID/fd needs \
             root): run it with sudo to see them all"
        ));
    }
    if !repeat {
        std::thread::sleep(interval);
        let rows = measure(&before, &snapshot(), interval, n);
        let mut out = std::io::stdout().lock();
        out.write_all(render(&rows).as_bytes())?;
        return Ok(out.flush()?);
    }
    crate::terminal::catch_interrupts();
    let keys = crate::terminal::QuitKey::listen();
    let mut out = std::io::stdout();
    write!(out, "{ENTER_ALT_SCREEN}")?;
    let result = (|| -> Result<()> {
        loop {
            // Wait in short steps, so that a key or a signal ends it at once.
            let start = std::time::Instant::now();
            while start.elapsed() < interval {
                let step = Duration::from_millis(100).min(interval - start.elapsed());
                let quit = match &keys {
                    Some(k) => k.wait(step),
                    None => {
                        std::thread::sleep(step);
                        false
                    }
                };
                if quit || crate::terminal::interrupted() {
                    return Ok(());
                }
            }
            let after = snapshot();
            let rows = measure(&before, &after, interval, n);
            let width = crate::terminal::width(1).unwrap_or(80);
            let text = format!(
                "fdtrace top: every {}; q or Ctrl-C to quit\n{}",
                crate::report::fmt_age(interval.as_secs_f64()),
                render(&rows)
            );
            write!(
                out,
                "\x1b[H\x1b[2J{}",
                crate::terminal::fit_lines(&text, width)
            )?;
            out.flush()?;
            before = after;
        }
    })();
    write!(out, "{LEAVE_ALT_SCREEN}")?;
    out.flush()?;
    drop(keys);
    result
}

/// The top `n` rows between two snapshots, with their limits.
fn measure(
    before: &HashMap<u32, Count>,
    after: &HashMap<u32, Count>,
    interval: Duration,
    n: usize,
) -> Vec<Row> {
    let mut rows = rank(before, after, interval.as_secs_f64());
    rows.truncate(n);
    for r in &mut rows {
        r.limit = procinfo::nofile_limit(r.pid).and_then(|l| l.soft);
        r.container = crate::container::of(r.pid)
            .and_then(|c| c.id)
            .map(|id| id.chars().take(12).collect());
    }
    rows
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
        let mut rows = rows;
        rows[1].container = Some("3f2a9c1b7d0e".into());
        let t = render(&rows);
        assert!(t.lines().nth(1).unwrap().contains("leaky"), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with(" -"), "{t}");
        assert!(t.lines().nth(2).unwrap().ends_with(" 3f2a9c1b7d0e"), "{t}");
        assert!(t.lines().all(|l| l.len() <= 80), "{t}");
    }

    #[test]
    fn this_process_is_seen() {
        let s = snapshot();
        assert!(s.get(&std::process::id()).is_some_and(|c| c.open > 0));
    }
}
