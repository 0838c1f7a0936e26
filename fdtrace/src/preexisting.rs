//! Descriptors that were open before tracing began, summarized instead of listed: grouped by
//! kind and target pattern (`/var/spool/img-*.jpg`), sockets by protocol, peer and TCP state,
//! with counts, a few examples, ages where the kernel keeps them (pipes), and the call site seen
//! leaking descriptors like them while traced, when there is one (an inference, said as such).
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::report::{FdEntry, Site, fmt_age};

/// Examples kept per group.
const EXAMPLES: usize = 3;
/// Groups the text report shows; the others are summed up in one line.
const TEXT_GROUPS: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub count: usize,
    pub kind: &'static str,
    /// What the group's descriptors refer to: a path with its varying parts (runs of digits)
    /// collapsed to `*`, or for sockets `tcp to 10.0.0.5:80`, `tcp on 0.0.0.0:8080`, ….
    pub pattern: String,
    /// Sockets: protocol, peer (`host:*` when the port varies) and TCP state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// A few of the group's descriptors: `fd N target`.
    pub examples: Vec<String>,
    /// Every descriptor of the group has a known age (pipes, on kernels that keep their birth
    /// time); otherwise no age is shown.
    pub ages_known: bool,
    pub oldest_age_s: Option<f64>,
    pub newest_age_s: Option<f64>,
    /// Index into `sites` of a call site that, while traced, opened descriptors like these (an
    /// inference from kind and peer and state, or path pattern; not a recorded fact).
    pub likely_site: Option<usize>,
    /// Why `likely_site` was chosen, e.g. "same peer and state".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likely_because: Option<String>,
}

/// `path` with every run of digits replaced by `*`.
pub fn path_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for c in path.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('*');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// `10.0.0.5:80` -> `10.0.0.5`, `[::1]:80` -> `[::1]`; a unix path stays as it is.
fn host_of(peer: &str) -> Option<&str> {
    let (host, port) = peer.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    (!peer.starts_with('/') && !peer.starts_with('@')).then_some(host)
}

fn proto_of(e: &FdEntry) -> String {
    e.target
        .split_whitespace()
        .next()
        .unwrap_or("socket")
        .to_string()
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: &'static str,
    pattern: String,
    proto: Option<String>,
    peer: Option<String>,
    state: Option<&'static str>,
}

/// A socket group's pattern: `tcp to 10.0.0.5:80`, `tcp on 0.0.0.0:8080`, or the protocol.
pub fn socket_pattern(proto: &str, peer: Option<&str>, local: Option<&str>) -> String {
    match (peer, local) {
        (Some(p), _) => format!("{proto} to {p}"),
        (None, Some(l)) => format!("{proto} on {l}"),
        (None, None) => proto.to_string(),
    }
}

fn key_of(e: &FdEntry, peer: Option<String>) -> Key {
    if e.kind == "socket" {
        let proto = proto_of(e);
        let pattern = socket_pattern(&proto, peer.as_deref(), e.local.as_deref());
        Key {
            kind: e.kind,
            pattern,
            proto: Some(proto),
            peer,
            state: e.state,
        }
    } else {
        Key {
            kind: e.kind,
            pattern: if e.kind == "pipe" {
                "pipe".into()
            } else {
                path_pattern(&e.target)
            },
            proto: None,
            peer: None,
            state: None,
        }
    }
}

/// Group `fds` (the report's `preexisting`), largest group first, and point each group at a
/// site of `sites` that looks like its origin.
pub fn group(fds: &[FdEntry], sites: &[Site]) -> Vec<Group> {
    // Sockets by their exact peer first; a peer seen once whose host has other such singletons
    // (the server side of connections, each from its own client port) joins them as `host:*`.
    let mut exact: BTreeMap<Key, Vec<&FdEntry>> = BTreeMap::new();
    for e in fds {
        exact.entry(key_of(e, e.peer.clone())).or_default().push(e);
    }
    let mut singles_per_host: BTreeMap<(String, Option<&str>, String), usize> = BTreeMap::new();
    for (k, v) in &exact {
        if let (1, Some(p), Some(proto)) = (v.len(), &k.peer, &k.proto)
            && let Some(h) = host_of(p)
        {
            *singles_per_host
                .entry((proto.clone(), k.state, h.to_string()))
                .or_default() += 1;
        }
    }
    let mut groups: BTreeMap<Key, Vec<&FdEntry>> = BTreeMap::new();
    for (k, v) in exact {
        let merged = match (v.len(), &k.peer, &k.proto) {
            (1, Some(p), Some(proto)) => host_of(p).and_then(|h| {
                (singles_per_host.get(&(proto.clone(), k.state, h.to_string())) > Some(&1))
                    .then(|| format!("{h}:*"))
            }),
            _ => None,
        };
        let key = match merged {
            Some(peer) => key_of(v[0], Some(peer)),
            None => k,
        };
        groups.entry(key).or_default().extend(v);
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(k, v)| {
            // Only pipes have ages here, and only where the kernel keeps their birth (see
            // procinfo::fds): sockfs leaves a socket's times at 0, and anonymous inodes are
            // shared.
            let ages: Vec<f64> = v.iter().filter_map(|e| e.age_s).collect();
            let ages_known = ages.len() == v.len();
            // A group of one file is named by its path, not its pattern.
            let pattern = match (v.as_slice(), k.kind) {
                ([one], kind) if kind != "socket" && kind != "pipe" => one.target.clone(),
                _ => k.pattern,
            };
            let mut g = Group {
                count: v.len(),
                kind: k.kind,
                pattern,
                proto: k.proto,
                peer: k.peer,
                state: k.state,
                examples: v
                    .iter()
                    .take(EXAMPLES)
                    .map(|e| format!("fd {} {}", e.fd, e.target))
                    .collect(),
                ages_known,
                oldest_age_s: ages.iter().copied().reduce(f64::max),
                newest_age_s: ages.iter().copied().reduce(f64::min),
                likely_site: None,
                likely_because: None,
            };
            if let Some((i, why)) = likely_site(&g, sites) {
                g.likely_site = Some(i);
                g.likely_because = Some(why);
            }
            g
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    out
}

/// The site (index, reason) that opened, while traced, the most descriptors like the group's:
/// sockets to the same peer (and in the same state, when it is), or files with the same path
/// pattern.
fn likely_site(g: &Group, sites: &[Site]) -> Option<(usize, String)> {
    let mut best: Option<(usize, usize, String)> = None;
    for (i, s) in sites.iter().enumerate() {
        if s.kind != g.kind || g.kind == "pipe" {
            continue;
        }
        let (n, why) = if g.kind == "socket" {
            let Some(gp) = g.peer.as_deref() else {
                continue;
            };
            let same_peer = |p: &str| match gp.strip_suffix(":*") {
                Some(host) => host_of(p) == Some(host),
                None => p == gp,
            };
            let peers: Vec<&FdEntry> = s
                .fds
                .iter()
                .filter(|f| f.peer.as_deref().is_some_and(same_peer))
                .collect();
            let same_state = peers.iter().filter(|f| f.state == g.state).count();
            if same_state > 0 {
                (same_state, "same peer and state")
            } else {
                (peers.len(), "same peer")
            }
        } else {
            let n = s
                .fds
                .iter()
                .filter(|f| path_pattern(&f.target) == g.pattern)
                .count();
            (n, "same path pattern")
        };
        if n > 0 && best.as_ref().is_none_or(|b| n > b.1) {
            best = Some((i, n, why.to_string()));
        }
    }
    best.map(|(i, _, why)| (i, why))
}

/// The text report's section: one line per group (and the whole list with `all`).
pub fn render(
    s: &mut String,
    groups: &[Group],
    fds: &[FdEntry],
    sites: &[Site],
    site_name: impl Fn(&Site) -> String,
    all: bool,
) {
    if fds.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\npre-existing (open before tracing began, origin unknown): {} descriptor{} in {} group{}",
        fds.len(),
        if fds.len() == 1 { "" } else { "s" },
        groups.len(),
        if groups.len() == 1 { "" } else { "s" },
    );
    for g in groups.iter().take(TEXT_GROUPS) {
        let plural = if g.count == 1 { "" } else { "s" };
        let what = match (g.kind, &g.proto) {
            ("socket", Some(proto)) => format!(
                "{} {proto} socket{plural}{}{}",
                g.count,
                g.pattern.strip_prefix(proto.as_str()).unwrap_or(&g.pattern),
                g.state.map(|st| format!(" in {st}")).unwrap_or_default()
            ),
            ("pipe", _) => format!("{} pipe{plural}", g.count),
            (kind, _) => format!("{} {kind}{plural} {}", g.count, g.pattern),
        };
        let age = match (g.ages_known, g.oldest_age_s) {
            (true, Some(a)) => format!(", oldest {}", fmt_age(a)),
            _ => String::new(),
        };
        let example = match g.examples.first() {
            Some(e) if g.count > 1 => format!("; e.g. {e}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "  {what}{age}{example}");
        if let (Some(i), Some(why)) = (g.likely_site, &g.likely_because)
            && let Some(site) = sites.get(i)
        {
            let _ = writeln!(
                s,
                "      look like the leak opened by {} ({why}; {} more opened there while traced)",
                site_name(site),
                site.count
            );
        }
    }
    if groups.len() > TEXT_GROUPS {
        let rest = &groups[TEXT_GROUPS..];
        let _ = writeln!(
            s,
            "  and {} more group{} of {} descriptor{} in all",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" },
            rest.iter().map(|g| g.count).sum::<usize>(),
            if rest.iter().map(|g| g.count).sum::<usize>() == 1 {
                ""
            } else {
                "s"
            },
        );
    }
    let no_ages: Vec<&str> = {
        let mut v: Vec<&str> = groups
            .iter()
            .filter(|g| !g.ages_known)
            .map(|g| g.kind)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if !no_ages.is_empty() {
        let _ = writeln!(
            s,
            "  (no ages for {}: the kernel keeps no birth time for them)",
            no_ages.join(", ")
        );
    }
    if all {
        let _ = writeln!(s, "  every one:");
        for p in fds {
            let _ = writeln!(s, "  fd {:<4} {:<8} {}", p.fd, p.kind, p.target);
        }
    } else if fds.len() > groups.len() {
        let _ = writeln!(
            s,
            "  (every one with --all, or in --json under `preexisting`)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(fd: i32, kind: &'static str, target: &str) -> FdEntry {
        FdEntry {
            fd,
            kind,
            target: target.into(),
            age_s: None,
            state: None,
            peer: None,
            local: None,
            state_age_s: None,
            cloexec: false,
        }
    }

    fn sock(fd_: i32, local: &str, peer: &str, state: &'static str) -> FdEntry {
        FdEntry {
            state: Some(state),
            peer: Some(peer.into()),
            local: Some(local.into()),
            ..fd(fd_, "socket", &format!("tcp {local} -> {peer} {state}"))
        }
    }

    #[test]
    fn paths_collapse_their_varying_parts() {
        assert_eq!(
            path_pattern("/var/spool/img-123.jpg"),
            "/var/spool/img-*.jpg"
        );
        assert_eq!(path_pattern("/data/2024/07/x"), "/data/*/*/x");
        assert_eq!(path_pattern("/etc/hosts"), "/etc/hosts");
    }

    #[test]
    fn groups_count_exactly_and_sockets_merge_client_ports() {
        let mut fds = Vec::new();
        for i in 0..50 {
            fds.push(fd(10 + i, "file", &format!("/var/spool/img-{i}.jpg")));
        }
        for i in 0..30 {
            fds.push(sock(
                100 + i,
                &format!("10.0.0.1:{}", 40000 + i),
                "10.0.0.5:80",
                "CLOSE_WAIT",
            ));
        }
        // The server side: one peer port each.
        for i in 0..7 {
            fds.push(sock(
                200 + i,
                "10.0.0.1:8080",
                &format!("10.0.0.9:{}", 50000 + i),
                "ESTABLISHED",
            ));
        }
        fds.push(sock(300, "10.0.0.1:41000", "10.0.0.6:443", "ESTABLISHED"));
        let mut p = fd(400, "pipe", "pipe:[123]");
        // (An age, as procinfo gives pipes on kernels that keep their birth time.)
        p.age_s = Some(7.5);
        fds.push(p);
        let g = group(&fds, &[]);
        let counts: Vec<(usize, &str)> = g.iter().map(|g| (g.count, g.pattern.as_str())).collect();
        assert_eq!(
            counts,
            vec![
                (50, "/var/spool/img-*.jpg"),
                (30, "tcp to 10.0.0.5:80"),
                (7, "tcp to 10.0.0.9:*"),
                (1, "pipe"),
                (1, "tcp to 10.0.0.6:443"),
            ]
        );
        assert_eq!(g[1].state, Some("CLOSE_WAIT"));
        assert_eq!(g[0].examples.len(), EXAMPLES);
        assert!(!g[0].ages_known && g[0].oldest_age_s.is_none());
        assert!(g[3].ages_known);
        assert_eq!(g[3].oldest_age_s, Some(7.5));
    }
}
