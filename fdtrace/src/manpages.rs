//! `fdtrace manpage`: the man pages, generated from the command-line definition: fdtrace(1) and
//! one page per subcommand (fdtrace-record(1), …), which fdtrace(1) refers to.
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Every page as (file name, roff text).
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    // Built, so that the generated `help` subcommand (which fdtrace(1) lists) is there too.
    cmd.build();
    let mut out = Vec::new();
    let mut main = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut main)?;
    out.push(("fdtrace.1".to_string(), main));
    for sub in cmd.get_subcommands() {
        let name = format!("fdtrace-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone()).bin_name(name.clone()))
            .render(&mut page)?;
        out.push((format!("{name}.1"), page));
    }
    Ok(out)
}

/// Print fdtrace(1), or write every page into `dir`.
pub fn run(dir: Option<&Path>) -> Result<()> {
    let pages = pages()?;
    let Some(dir) = dir else {
        use std::io::Write as _;
        return Ok(std::io::stdout().write_all(&pages[0].1)?);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `fdtrace-X(1)` a page names is a page of its own.
    #[test]
    fn every_page_referred_to_exists() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for sub in ["record", "report", "export", "diff", "top", "hooks"] {
            assert!(
                names.contains(&format!("fdtrace-{sub}.1").as_str()),
                "{names:?}"
            );
        }
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            let mut rest: &str = &text;
            while let Some(i) = rest.find("fdtrace\\-") {
                let tail = &rest[i + "fdtrace\\-".len()..];
                let end = tail.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(0);
                let sub = &tail[..end];
                if !sub.is_empty() && tail[end..].starts_with("(1)") {
                    assert!(
                        names.contains(&format!("fdtrace-{sub}.1").as_str()),
                        "{name} refers to fdtrace-{sub}(1)"
                    );
                }
                rest = tail;
            }
        }
    }
}
