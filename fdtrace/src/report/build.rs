//! The report made from a process's descriptor table (live or replayed) as of a moment.
use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::{
    model::{FdKind, FdTable, OpenFd, Origin, StackId},
    procinfo::ProcFd,
    sockets::{tcp, tcp_state_name},
    stacks::StackStore,
    symbolize::{Frame, Symbols},
    user_frame::user_frame,
    verdict::{self, History, Trend, Verdict},
};

/// Group a site's sockets by (protocol, peer, state).
fn socket_groups(fds: &[(i32, &OpenFd)], now_ns: u64) -> Vec<SocketGroup> {
    let mut groups: HashMap<GroupKey, SocketGroup> = HashMap::new();
    for (_, e) in fds {
        let Some(s) = &e.sock else { continue };
        // Client sockets are told apart by their peer; accepted ones by where they were accepted
        // and the peer host; the others by their local address.
        let (peer, local) = if s.accepted {
            (s.peer_host(), s.local_text())
        } else if s.peer.is_some() {
            (s.peer_text(), None)
        } else {
            (None, s.local_text())
        };
        let key = (s.proto_name(), peer.clone(), local.clone(), s.state_name());
        let g = groups.entry(key).or_insert_with(|| SocketGroup {
            count: 0,
            proto: s.proto_name(),
            peer,
            local,
            accepted: s.accepted,
            state: s.state_name(),
            oldest_state_age_s: None,
        });
        g.count += 1;
        let a = age(now_ns, s.state_since_ns.or(e.opened_ns));
        g.oldest_state_age_s = match (g.oldest_state_age_s, a) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
    }
    let mut v: Vec<SocketGroup> = groups.into_values().collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.peer.cmp(&b.peer))
            .then_with(|| a.state.cmp(&b.state))
    });
    v
}

fn json_frames(frames: Vec<Frame>) -> Vec<JsonFrame> {
    frames
        .into_iter()
        .map(|f| JsonFrame {
            function: f.function,
            file: f.file,
            line: f.line,
            addr: format!("{:#x}", f.addr),
            module: f.module,
            inlined: f.inlined,
        })
        .collect()
}

fn age(now_ns: u64, opened: Option<u64>) -> Option<f64> {
    opened.map(|t| now_ns.saturating_sub(t) as f64 / 1e9)
}

/// Build the report from the model as of `now_ns` (monotonic).
/// With `min_age_s` (`--min-age`), the lists (sites, pre-existing, untraced) hold only
/// descriptors at least that old; the counts, the drift check and the time to exhaustion are
/// always of every open descriptor.
#[allow(clippy::too_many_arguments)]
pub fn build(
    meta: Meta,
    table: &FdTable,
    min_age_s: Option<f64>,
    stacks: &mut StackStore,
    symbols: &Symbols,
    now_ns: u64,
    proc_fds: Option<&[ProcFd]>,
    history: Option<&History>,
) -> Report {
    let aged;
    let view = match min_age_s {
        Some(min) => {
            let mut t = table.clone();
            t.retain_older(now_ns, min);
            aged = t;
            &aged
        }
        None => table,
    };
    // Births without a stack (shed under load) share one stack: their site is split by kind.
    type SiteKey = (StackId, Option<FdKind>);
    let mut by_stack: HashMap<SiteKey, Vec<(i32, &crate::model::OpenFd)>> = HashMap::new();
    let shed = |id: StackId| {
        stacks
            .get(id)
            .is_some_and(|s| s.raw.method == crate::unwind::Method::Shed)
    };
    let mut preexisting = Vec::new();
    let mut untraced = Vec::new();
    for (fd, e) in view.iter() {
        match e.origin {
            Origin::Preexisting => preexisting.push(FdEntry::new(fd, e, now_ns)),
            Origin::Untraced => untraced.push(FdEntry::new(fd, e, now_ns)),
            Origin::Stack(id) => by_stack
                .entry((id, shed(id).then_some(e.kind)))
                .or_default()
                .push((fd, e)),
        }
    }
    let mut sites: Vec<Site> = by_stack
        .into_iter()
        .map(|((id, _), fds)| {
            let frames = stacks.frames(id, symbols);
            let truncated = stacks.get(id).map(|s| s.raw.truncated).unwrap_or(true);
            let method = stacks
                .get(id)
                .map(|s| s.raw.method)
                .unwrap_or_default()
                .as_str();
            let user_frame = user_frame(&frames).filter(|_| method != "shed");
            let mut kinds: HashMap<FdKind, usize> = HashMap::new();
            for (_, e) in &fds {
                *kinds.entry(e.kind).or_default() += 1;
            }
            let kind = kinds
                .into_iter()
                .max_by_key(|(k, n)| (*n, std::cmp::Reverse(*k)))
                .map(|(k, _)| k.as_str())
                .unwrap_or("other");
            let oldest = fds
                .iter()
                .filter_map(|(_, e)| age(now_ns, e.opened_ns))
                .reduce(f64::max);
            let trend = history.map(|h| h.site_trend(id, oldest)).unwrap_or(Trend {
                verdict: Verdict::Unknown,
                growth_per_min: None,
            });
            let sockets = socket_groups(&fds, now_ns);
            let hint = sockets
                .iter()
                .any(|g| g.state == Some(tcp_state_name(tcp::CLOSE_WAIT)))
                .then(|| CLOSE_WAIT_HINT.to_string());
            let ages: Vec<f64> = fds
                .iter()
                .filter_map(|(_, e)| age(now_ns, e.opened_ns))
                .collect();
            Site {
                count: fds.len(),
                kind,
                example: fds
                    .last()
                    .map(|(fd, e)| FdEntry::new(*fd, e, now_ns).target)
                    .unwrap_or_default(),
                user_frame,
                truncated,
                method,
                verdict: trend.verdict,
                growth_per_min: trend.growth_per_min,
                oldest_age_s: ages.iter().copied().reduce(f64::max),
                newest_age_s: ages.iter().copied().reduce(f64::min),
                frames: json_frames(frames),
                sockets,
                hint,
                fds: fds
                    .iter()
                    .map(|(fd, e)| FdEntry::new(*fd, e, now_ns))
                    .collect(),
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            a.fds
                .first()
                .map(|f| f.fd)
                .cmp(&b.fds.first().map(|f| f.fd))
        })
    });
    let drift = proc_fds.map(|pfds| {
        let mut d = Drift::default();
        for p in pfds {
            match table.get(p.fd) {
                None => d.missed_opens.push(FdEntry::from_proc(p)),
                Some(e) if e.cloexec != p.cloexec => {
                    d.cloexec_mismatches.push(FdEntry::new(p.fd, e, now_ns))
                }
                Some(_) => {}
            }
        }
        // A set of /proc's numbers: a process may hold 100,000 descriptors.
        let in_proc: std::collections::HashSet<i32> = pfds.iter().map(|p| p.fd).collect();
        for (fd, e) in table.iter() {
            if !in_proc.contains(&fd) {
                d.missed_closes.push(FdEntry::new(fd, e, now_ns));
            }
        }
        d
    });
    let mut failed_opens: Vec<FailedSite> = table
        .failures
        .iter()
        .map(|(&id, f)| {
            let frames = stacks.frames(id, symbols);
            FailedSite {
                count: f.count,
                errno: crate::model::failure_name(f.errno),
                example: f.example.clone(),
                user_frame: user_frame(&frames),
                first_age_s: age(now_ns, Some(f.first_ns)),
                last_age_s: age(now_ns, Some(f.last_ns)),
                frames: json_frames(frames),
            }
        })
        .collect();
    failed_opens.sort_by_key(|f| std::cmp::Reverse(f.count));
    let failure_totals = crate::model::COUNTED_FAILURES
        .into_iter()
        .filter_map(|(errno, name)| {
            let (count, with_stack) = table.failure_count(errno);
            let mut by_syscall = BTreeMap::new();
            for (&(sc, e), &n) in &table.failure_totals {
                if e == errno {
                    *by_syscall
                        .entry(crate::model::syscall_name(sc))
                        .or_default() += n;
                }
            }
            (count > 0).then_some(FailureTotal {
                errno: name,
                count,
                with_stack,
                by_syscall,
            })
        })
        .collect();
    let mut tcp_states = BTreeMap::new();
    for (_, e) in table.iter() {
        if let Some(st) = e.sock.as_ref().and_then(|s| s.state_name()) {
            *tcp_states.entry(st).or_default() += 1;
        }
    }
    let growth_per_min = history.and_then(|h| h.total_trend().growth_per_min);
    let exhaustion_eta_s = verdict::exhaustion_eta_s(
        table.len(),
        meta.rlimit_nofile.and_then(|l| l.soft),
        growth_per_min,
    );
    let runtime_hint = runtime_hint(&sites);
    Report {
        runtime_hint,
        growth_per_min,
        exhaustion_eta_s,
        preexisting_groups: crate::preexisting::group(&preexisting, &sites),
        meta,
        open_count: table.len(),
        shown: min_age_s.map(|min_age_s| Shown {
            min_age_s,
            count: view.len(),
        }),
        sites,
        preexisting,
        untraced,
        drift,
        model: table.stats,
        failed_opens,
        failure_totals,
        tcp_states,
        processes: Vec::new(),
        recording: None,
        live_updates_dropped: None,
        stray_events: None,
    }
}

/// A site in a language runtime's native code (`node`, `java`, `python3.11`) without one of the
/// program's frames, whose stack holds code the runtime did not name: how to have it named.
/// Node: unnamed JIT code or V8's interpreter trampoline (a socket the event loop accepted has
/// no JavaScript on its stack, and no hint); Python: no Python frame read; Java: any such site
/// (its stack was cut at compiled code without frame pointers, or its methods were interpreted).
fn runtime_hint(sites: &[Site]) -> Option<&'static str> {
    use crate::runtime::{JIT_MODULE, Runtime, of_module};
    sites
        .iter()
        .filter(|s| s.user_frame.is_none())
        .find_map(|s| {
            let runtime = s
                .frames
                .iter()
                .find_map(|f| of_module(f.module.as_deref()?))?;
            let unnamed_js = s.frames.iter().any(|f| {
                f.module.as_deref() != Some(JIT_MODULE)
                    && (f.function.is_none() && f.module.is_none()
                        || f.function
                            .as_deref()
                            .is_some_and(|n| n.contains("InterpreterEntryTrampoline")))
            });
            let named_by =
                |module: &str| s.frames.iter().any(|f| f.module.as_deref() == Some(module));
            let python_named = named_by(crate::python_code::PY_MODULE);
            match runtime {
                Runtime::Node => unnamed_js.then_some(runtime),
                Runtime::Python => (!python_named).then_some(runtime),
                // Java frames not read from the JVM: only the perf map names them, and without
                // frame pointers the stack ends at the first compiled frame. (Named frames and
                // no program frame: the JDK's own code opened it.)
                Runtime::Java => (!named_by(crate::runtime::JAVA_MODULE)).then_some(runtime),
            }
        })
        .map(|r| r.naming_hint())
}

impl FdEntry {
    pub fn new(fd: i32, e: &OpenFd, now_ns: u64) -> Self {
        let sock = e.sock.as_ref();
        Self {
            fd,
            kind: e.kind.as_str(),
            target: sock
                .map(|s| s.describe())
                .unwrap_or_else(|| e.target.to_string()),
            age_s: age(now_ns, e.opened_ns),
            state: sock.and_then(|s| s.state_name()),
            peer: sock.and_then(|s| s.peer_text()),
            local: sock.and_then(|s| s.local_text()),
            state_age_s: sock.and_then(|s| age(now_ns, s.state_since_ns)),
            cloexec: e.cloexec,
        }
    }

    /// A descriptor only /proc knows of.
    fn from_proc(p: &ProcFd) -> Self {
        Self {
            fd: p.fd,
            kind: p.kind.as_str(),
            target: p.target.clone(),
            age_s: None,
            state: None,
            peer: None,
            local: None,
            state_age_s: None,
            cloexec: p.cloexec,
        }
    }
}
