//! Where results are written: the checks made before a session starts, so that hours of tracing
//! are never lost to a path that cannot be written, JSON or text, and the atomic write.
use std::{io::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};

/// A result as programs or people read it: pretty JSON (ending in a newline), or `text`.
pub fn render<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<String> {
    if json {
        let mut s = serde_json::to_string_pretty(value)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(text(value))
    }
}

/// Write a result to `path` (through a temporary file, [`write_atomically`]), or to standard
/// output without one or with `-`.
pub fn write_result(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        Some(p) if !is_stdout(p) => {
            write_atomically(p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))
        }
        _ => Ok(std::io::stdout().lock().write_all(text.as_bytes())?),
    }
}

/// `-o -`: standard output.
pub fn is_stdout(path: &Path) -> bool {
    path == Path::new("-")
}

/// A report path: a device or pipe that exists (`/dev/stdout`), or a file (new or replaced) in
/// a directory where fdtrace can create files.
pub fn check_writable(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("cannot write to {}: it is a directory", path.display()),
        Ok(m) if !m.is_file() => return Ok(()),
        _ => {}
    }
    check_dir_of(path)
}

/// A recording path: it must not exist (fdtrace never overwrites a recording), and its directory
/// must take new files.
pub fn check_new_file(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} exists: fdtrace does not overwrite a recording (choose another name)",
            path.display()
        );
    }
    check_dir_of(path)
}

/// The directory of `path` exists and takes a new file (tried: permissions, a read-only file
/// system and a full inode table all show here).
fn check_dir_of(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write to {}: no directory {}",
            path.display(),
            dir.display()
        );
    }
    match tempfile::Builder::new()
        .prefix(".fdtrace-check")
        .tempfile_in(dir)
    {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "cannot write to {}: cannot create files in {}: {e}",
            path.display(),
            dir.display()
        ),
    }
}

/// Write through a temporary file so a full disk never leaves a half report behind.
/// A device or a pipe (`-o /dev/stdout`, `-o /dev/null`) is written as it is.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(bytes)?;
        return Ok(());
    }
    let tmp = path.with_extension("fdtrace-tmp");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(res?)
}

/// Write one line to stderr. A closed or broken stderr (`2>&-`, a reader that went away) is
/// not an error worth failing for, and `eprintln!` would panic on it.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_cannot_be_written_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let e = check_writable(d.path()).unwrap_err().to_string();
        assert!(e.ends_with("it is a directory"), "{e}");
        let e = check_writable(&d.path().join("missing/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no directory"), "{e}");
        check_writable(&d.path().join("new.json")).unwrap();
        check_writable(Path::new("/dev/null")).unwrap();
        let existing = d.path().join("rec");
        std::fs::write(&existing, b"x").unwrap();
        check_writable(&existing).unwrap();
        let e = check_new_file(&existing).unwrap_err().to_string();
        assert!(e.contains("does not overwrite"), "{e}");
        check_new_file(&d.path().join("new.fdtrace")).unwrap();
        // The check leaves nothing behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(is_stdout(Path::new("-")));
    }
}
