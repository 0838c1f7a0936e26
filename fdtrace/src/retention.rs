//! The agent's recordings on disk: their names, and the disk budget they are kept within.
//!
//! A recording is named by host, process start time, pid, command and (in a container) the
//! container, so a process restarted by its supervisor gets a recording of its own next to its
//! predecessor's. Over the budget, the oldest closed recordings are deleted first; one still
//! being written is never deleted, even if that leaves the directory over its budget.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result};

/// The extension of recordings.
pub const EXTENSION: &str = "fdtrace";

/// `s` with only characters safe in a file name on any system: others become `_`.
fn safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.trim_start_matches('.').to_string()
}

/// `host-YYYYMMDDTHHMMSSZ-pPID-COMM[-CONTAINER].fdtrace` in `dir` (the time is the process's
/// start, UTC), with `-2`, `-3`… before the extension when taken.
pub fn recording_path(
    dir: &Path,
    host: &str,
    started_unix: u64,
    pid: u32,
    comm: &str,
    container: Option<&str>,
) -> PathBuf {
    let mut stem = format!(
        "{}-{}-p{pid}-{}",
        safe(host),
        utc_stamp(started_unix),
        safe(comm)
    );
    if let Some(c) = container {
        stem += &format!("-{}", safe(c));
    }
    let mut path = dir.join(format!("{stem}.{EXTENSION}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.{EXTENSION}"));
        n += 1;
    }
    path
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time.
pub fn utc_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// One recording in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// The recordings in `dir`.
fn stored(dir: &Path) -> Result<Vec<Stored>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push(Stored {
            path,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(out)
}

/// Bytes the recordings in `dir` take.
pub fn used(dir: &Path) -> Result<u64> {
    Ok(stored(dir)?.iter().map(|s| s.bytes).sum())
}

/// Delete the oldest recordings in `dir` not in `open` until all of them fit in `budget`
/// bytes. Returns the deleted paths, oldest first.
pub fn enforce(dir: &Path, budget: u64, open: &HashSet<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut all = stored(dir)?;
    let mut total: u64 = all.iter().map(|s| s.bytes).sum();
    all.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    let mut deleted = Vec::new();
    for s in all {
        if total <= budget {
            break;
        }
        if open.contains(&s.path) {
            continue;
        }
        match std::fs::remove_file(&s.path) {
            Ok(()) => {
                total -= s.bytes;
                deleted.push(s.path);
            }
            // Gone already (someone else cleaned up): it no longer counts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= s.bytes,
            Err(e) => return Err(e).with_context(|| format!("deleting {}", s.path.display())),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_say_host_start_pid_command_and_container() {
        let d = tempfile::tempdir().unwrap();
        // 2026-12-02 04:45:01 UTC.
        let t = 1_796_186_701;
        assert_eq!(utc_stamp(t), "20261202T044501Z");
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        let p = recording_path(d.path(), "web-1", t, 4242, "my app/1", None);
        assert_eq!(
            p.file_name().unwrap(),
            "web-1-20261202T044501Z-p4242-my_app_1.fdtrace"
        );
        let c = recording_path(d.path(), "web-1", t, 7, "nginx", Some("3f2a9c1b7d0e"));
        assert_eq!(
            c.file_name().unwrap(),
            "web-1-20261202T044501Z-p7-nginx-3f2a9c1b7d0e.fdtrace"
        );
        // Never the name of an existing file.
        std::fs::write(&p, b"x").unwrap();
        let again = recording_path(d.path(), "web-1", t, 4242, "my app/1", None);
        assert_eq!(
            again.file_name().unwrap(),
            "web-1-20261202T044501Z-p4242-my_app_1-2.fdtrace"
        );
        assert_eq!(safe("../../etc"), "_.._etc");
    }

    fn file(dir: &Path, name: &str, bytes: usize, age_s: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; bytes]).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        p
    }

    #[test]
    fn the_oldest_closed_recordings_go_first_and_an_open_one_never() {
        let d = tempfile::tempdir().unwrap();
        let oldest = file(d.path(), "a.fdtrace", 400, 300);
        let open = file(d.path(), "b.fdtrace", 400, 200);
        let middle = file(d.path(), "c.fdtrace", 400, 100);
        let newest = file(d.path(), "d.fdtrace", 400, 0);
        let other = file(d.path(), "notes.txt", 10_000, 400);
        let open_set: HashSet<PathBuf> = [open.clone()].into();
        assert_eq!(used(d.path()).unwrap(), 1600);
        // Within the budget: nothing.
        assert!(enforce(d.path(), 1600, &open_set).unwrap().is_empty());
        // 1000 bytes: two must go; the open one is skipped.
        let gone = enforce(d.path(), 1000, &open_set).unwrap();
        assert_eq!(gone, vec![oldest.clone(), middle.clone()]);
        assert!(!oldest.exists() && !middle.exists());
        assert!(open.exists() && newest.exists() && other.exists());
        // A budget below the open recording: every closed one goes, the open one stays.
        let gone = enforce(d.path(), 100, &open_set).unwrap();
        assert_eq!(gone, vec![newest.clone()]);
        assert!(open.exists());
        assert_eq!(used(d.path()).unwrap(), 400);
    }
}
