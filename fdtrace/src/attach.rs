//! Attaching the programs to their hooks: each syscall's trampolines (fentry/fexit on its kernel
//! function) or its tracepoints, chosen one by one as `hooks.rs` plans them; the other events'
//! tracepoints (the TCP states' raw one where the kernel's BTF is read); `fd_install`'s
//! trampoline for the descriptors installed outside those syscalls; and detaching them all.
use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{FEntry, FExit, RawTracePoint, TracePoint},
    util::KernelVersion,
};
use tracing::{debug, warn};

use crate::hooks::{
    CLOSE_EVENT, CLOSE_FUNCTIONS, CloseFunction, DEEP_PROGRAMS, FROM_REGS_IF_ACCEPTED, HookSet,
    INSTALL_FUNCTION, INSTALL_PROGRAM, Side, attach_plan, by_hook, hooked_syscall_numbers,
    tracepoint_exists, trampolines,
};
use crate::kernel_layout::KernelTypes;
use fdtrace_common::NO_OFFSET;

/// What `attach_all` attached, and how.
pub(crate) struct Attached {
    pub(crate) links: Vec<(String, Link)>,
    /// Tracepoints this kernel lacks.
    pub(crate) missing: Vec<String>,
    pub(crate) choices: Vec<HookChoice>,
    pub(crate) time: SetupTime,
}

/// An attachment of one of our programs.
pub(crate) enum Link {
    Tracepoint(aya::programs::trace_point::TracePointLinkId),
    Raw(aya::programs::raw_trace_point::RawTracePointLinkId),
    Entry(aya::programs::fentry::FEntryLinkId),
    Exit(aya::programs::fexit::FExitLinkId),
}

/// The hook an event uses: `hook` names it (`fexit __x64_sys_openat`, `tracepoints
/// syscalls:sys_enter_openat, syscalls:sys_exit_openat`), `why` says why that one.
#[derive(Clone, Debug)]
pub struct HookChoice {
    pub event: String,
    pub hook: String,
    pub why: String,
}

/// Load the trampoline programs of one hook and attach them (all or none: what was attached is
/// detached again when one fails).
fn attach_trampolines(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    progs: &[(String, Side, String)],
    time: &mut SetupTime,
) -> Result<Vec<(String, Link)>> {
    let mut links = Vec::new();
    let mut attach_one =
        |ebpf: &mut Ebpf, prog: &str, side: Side, function: &str| -> Result<Link> {
            let p = ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} missing from the eBPF object"))?;
            let t0 = std::time::Instant::now();
            Ok(match side {
                Side::Entry => {
                    let p: &mut FEntry = p.try_into()?;
                    p.load(function, btf).with_context(|| {
                        format!("the kernel rejected fentry {prog} on {function}")
                    })?;
                    let t1 = std::time::Instant::now();
                    time.loading += t1 - t0;
                    let link = p
                        .attach()
                        .with_context(|| format!("attaching fentry to {function}"));
                    time.attaching += t1.elapsed();
                    Link::Entry(link?)
                }
                Side::Exit => {
                    let p: &mut FExit = p.try_into()?;
                    p.load(function, btf).with_context(|| {
                        format!("the kernel rejected fexit {prog} on {function}")
                    })?;
                    let t1 = std::time::Instant::now();
                    time.loading += t1 - t0;
                    let link = p
                        .attach()
                        .with_context(|| format!("attaching fexit to {function}"));
                    time.attaching += t1.elapsed();
                    Link::Exit(link?)
                }
            })
        };
    for (prog, side, function) in progs {
        match attach_one(ebpf, prog, *side, function) {
            Ok(link) => links.push((prog.clone(), link)),
            Err(e) => {
                detach_links(ebpf, links);
                return Err(e);
            }
        }
    }
    Ok(links)
}

/// Where start-up time went: the kernel verifying programs, and attaching them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetupTime {
    pub loading: std::time::Duration,
    pub attaching: std::time::Duration,
}

/// One line of why the kernel refused a program: the error, and the verifier's last word (its
/// log can run to thousands of lines).
fn short_reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let Some((head, log)) = text.split_once(" Verifier output:") else {
        return text;
    };
    let head = head
        .replace("the BPF_PROG_LOAD syscall returned ", "")
        .trim_end_matches('.')
        .to_string();
    match log
        .lines()
        .map(|l| l.trim().trim_start_matches(':').trim())
        .rfind(|l| !l.is_empty() && !l.starts_with("Operation not permitted"))
    {
        Some(last) => format!("{head} ({last})"),
        None => head,
    }
}

/// The programs that send the births' records on trampolines, tail-called by each birth's
/// trampoline program: one per prototype of the syscalls' functions (see `BIRTH_EXIT2` in
/// fdtrace-ebpf), with their program array and the prefix of their births' programs.
const BIRTH_EXITS: [(&str, &str, &str); 2] = [
    ("fexit_birth", "BIRTH_EXIT", "fexit_"),
    ("fexit_birth2", "BIRTH_EXIT2", "fexit2_"),
];

/// Load the record program of prototype group `group` for `function` (one of the group's; it
/// is never attached) and put it in its program array.
fn load_birth_exit(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    group: usize,
    function: &str,
    time: &mut SetupTime,
) -> Result<()> {
    let (prog, map, _) = BIRTH_EXITS[group];
    let t0 = std::time::Instant::now();
    let p: &mut FExit = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    p.load(function, btf)
        .with_context(|| format!("the kernel rejected fexit {prog}"))?;
    let fd = p.fd()?.try_clone()?;
    time.loading += t0.elapsed();
    let mut array: ProgramArray<_> =
        ProgramArray::try_from(ebpf.map_mut(map).with_context(|| format!("{map} map"))?)?;
    array
        .set(0, &fd, 0)
        .with_context(|| format!("storing {prog} in {map}"))?;
    Ok(())
}

/// The programs of a birth hook with its exit program replaced by the twin that sends the
/// record itself (`fexit_r_<syscall>`), for the syscalls that have one.
fn from_regs_twin(
    hook: &str,
    progs: &[(String, Side, String)],
    kernel: KernelVersion,
) -> Option<Vec<(String, Side, String)>> {
    if !crate::hooks::trampoline_from_regs(hook, kernel) {
        return None;
    }
    let own = format!("fexit_{hook}");
    let mut twin = progs.to_vec();
    let first = twin.iter_mut().find(|p| p.0 == own)?;
    first.0 = format!("fexit_r_{hook}");
    Some(twin)
}

/// A birth's trampoline programs with its own (`fexit_<name>`) named for the record program of
/// its function's prototype (`fexit2_<name>` for the second); the others unchanged.
fn birth_programs(
    mut progs: Vec<(String, Side, String)>,
    groups: &std::collections::HashMap<String, Result<usize, String>>,
) -> Result<Vec<(String, Side, String)>> {
    for (prog, _, function) in &mut progs {
        match groups.get(function.as_str()) {
            Some(Ok(g))
                if prog.starts_with("fexit_")
                    && !prog.starts_with("fexit_deep_")
                    && !prog.starts_with("fexit_python_") =>
            {
                *prog = prog.replacen("fexit_", BIRTH_EXITS[*g].2, 1);
            }
            Some(Err(why)) => bail!("{why}"),
            _ => {}
        }
    }
    Ok(progs)
}

/// Detach `links` now (one thread per 16: each detachment waits for an RCU grace period).
pub(crate) fn detach_links(ebpf: &mut Ebpf, links: Vec<(String, Link)>) {
    let mut owned: Vec<Box<dyn Send>> = Vec::new();
    for (prog, link) in links {
        let Some(p) = ebpf.program_mut(&prog) else {
            continue;
        };
        match link {
            Link::Tracepoint(id) => {
                if let Ok(tp) = <&mut TracePoint>::try_from(p)
                    && let Ok(l) = tp.take_link(id)
                {
                    owned.push(Box::new(l));
                }
            }
            Link::Raw(id) => {
                if let Ok(tp) = <&mut RawTracePoint>::try_from(p)
                    && let Ok(l) = tp.take_link(id)
                {
                    owned.push(Box::new(l));
                }
            }
            Link::Entry(id) => {
                if let Ok(f) = <&mut FEntry>::try_from(p)
                    && let Ok(l) = f.take_link(id)
                {
                    owned.push(Box::new(l));
                }
            }
            Link::Exit(id) => {
                if let Ok(f) = <&mut FExit>::try_from(p)
                    && let Ok(l) = f.take_link(id)
                {
                    owned.push(Box::new(l));
                }
            }
        }
    }
    let per_thread = owned.len().div_ceil(16).max(1);
    std::thread::scope(|s| {
        while !owned.is_empty() {
            let chunk: Vec<_> = owned.drain(..per_thread.min(owned.len())).collect();
            s.spawn(move || drop(chunk));
        }
    });
}

/// Load `prog` (once) and attach it to `category:name`.
fn attach(
    ebpf: &mut Ebpf,
    loaded: &mut std::collections::HashSet<String>,
    prog: &str,
    category: &str,
    name: &str,
) -> Result<aya::programs::trace_point::TracePointLinkId> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    if !loaded.contains(prog) {
        p.load()
            .with_context(|| format!("the kernel rejected program {prog}"))?;
        loaded.insert(prog.to_string());
    }
    p.attach(category, name)
        .with_context(|| format!("attaching to {category}:{name} failed"))
}

/// The TCP state changes' hook (as `by_hook` names it), program and raw tracepoint where the
/// kernel's BTF is read (with the trampolines): `raw_sock_state`, not `sock_state` on the
/// tracepoint's record.
const RAW_SOCK_STATE: (&str, &str, &str) = (
    "sock:inet_sock_set_state",
    "raw_sock_state",
    "inet_sock_set_state",
);

/// Load `prog` and attach it to the raw tracepoint `name`.
fn attach_raw(
    ebpf: &mut Ebpf,
    prog: &str,
    name: &str,
) -> Result<aya::programs::raw_trace_point::RawTracePointLinkId> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    p.load()
        .with_context(|| format!("the kernel rejected program {prog}"))?;
    p.attach(name)
        .with_context(|| format!("attaching to raw tracepoint {name} failed"))
}

/// Attach every program of the plan (`regs`, `deep`: see `attach_plan`), each syscall with the
/// hook `hooks` asks for where the kernel takes it. `types`: the kernel's BTF, for the
/// trampolines' functions.
pub(crate) fn attach_all(
    ebpf: &mut Ebpf,
    regs: bool,
    deep: bool,
    hooks: HookSet,
    types: Result<KernelTypes>,
) -> Result<Attached> {
    let mut missing = Vec::new();
    let mut loaded = std::collections::HashSet::new();
    let mut links = Vec::new();
    let mut choices = Vec::new();
    let mut trampoline_time = SetupTime::default();
    // Unreadable: as old as any kernel fdtrace runs on (no twin tried where one is withheld).
    let kernel = KernelVersion::current().unwrap_or(KernelVersion::new(0, 0, 0));
    // The kernel's BTF names the functions trampolines attach to (parsed only for them).
    let plan = attach_plan(regs, deep);
    let hooks_of_plan = by_hook(plan.clone());
    // Each birth function's group of prototypes (the record program it tail-calls), or
    // why it has none.
    let mut birth_group: std::collections::HashMap<String, Result<usize, String>> =
        Default::default();
    // The function io_uring's close (and on 6.12 close itself) takes descriptors out of the
    // table with.
    let mut close_function: Option<CloseFunction> = None;
    let btf = match (hooks, &types) {
        (HookSet::Tracepoints, _) => Err("the syscall tracepoints were asked for".to_string()),
        (_, Err(e)) => Err(format!("the kernel's BTF: {e:#}")),
        (_, Ok(types)) => {
            // The functions of every hook, found in the kernel's BTF.
            let functions: Vec<String> = hooks_of_plan
                .iter()
                .filter_map(|(hook, _)| trampolines(hook, deep))
                .flatten()
                .map(|(_, _, f)| f)
                .chain([INSTALL_FUNCTION.to_string()])
                .chain(CLOSE_FUNCTIONS.map(|c| c.function.to_string()))
                .collect();
            let ids = types.function_ids(functions.iter().map(String::as_str));
            close_function = CLOSE_FUNCTIONS
                .into_iter()
                .find(|c| ids.contains_key(c.function));
            crate::function_btf::stand_in(&ids)
                .map_err(|e| format!("{e:#}"))
                .inspect(|btf| {
                    // (prototype, its record program loaded or why not)
                    let mut protos: Vec<(u32, Result<(), String>)> = Vec::new();
                    for (prog, _, function) in hooks_of_plan
                        .iter()
                        .filter_map(|(hook, _)| trampolines(hook, deep))
                        .flatten()
                    {
                        let Some(&(_, proto)) = ids.get(&function) else {
                            continue;
                        };
                        if !prog.starts_with("fexit_") || birth_group.contains_key(&function) {
                            continue;
                        }
                        let is_birth = fdtrace_common::syscall::BIRTHS.iter().any(|b| {
                            b.tracepoints
                                .iter()
                                .any(|t| crate::hooks::syscall_function(t.0) == function)
                        });
                        if !is_birth {
                            continue;
                        }
                        let g = match protos.iter().position(|p| p.0 == proto) {
                            Some(g) => g,
                            None if protos.len() < BIRTH_EXITS.len() => {
                                let g = protos.len();
                                let loaded =
                                    load_birth_exit(ebpf, btf, g, &function, &mut trampoline_time)
                                        .map_err(|e| match hooks {
                                            HookSet::Trampolines => format!("{e:#}"),
                                            _ => short_reason(&e),
                                        });
                                protos.push((proto, loaded));
                                g
                            }
                            None => {
                                let why = format!(
                                    "{function} has a prototype of its own (a third one): \
                                     fdtrace's programs expect two"
                                );
                                birth_group.insert(function, Err(why));
                                continue;
                            }
                        };
                        let group = protos[g].1.clone().map(|()| g);
                        birth_group.insert(function, group);
                    }
                })
        }
    };
    // The raw TCP state tracepoint reads what the record would hold from the socket.
    let raw_sock_state = btf.is_ok()
        && types
            .as_ref()
            .is_ok_and(|t| t.layout().is_ok_and(|l| l.sk_protocol != NO_OFFSET));
    drop(types);
    if let (HookSet::Trampolines, Err(why)) = (hooks, &btf) {
        bail!("--hooks trampolines: this kernel takes none: {why}");
    }
    // Close's deaths on the close function's trampoline where close calls it (none on
    // `__x64_sys_close`), marked before any trampoline is attached: from then on, the programs on
    // `fd_install` and the close function skip the syscalls whose own programs record theirs.
    // (Some(Ok) while close's deaths are the close function's; Some(Err(why)) once its
    // trampoline was refused.)
    let mut for_close: Option<Result<(), String>> =
        (btf.is_ok() && close_function.is_some_and(|c| c.serves_close)).then_some(Ok(()));
    if btf.is_ok() {
        mark_hooked_syscalls(ebpf, for_close.is_some())?;
    }
    for (hook, entries) in by_hook(plan) {
        let (_, category, first_tp, required) = entries[0].clone();
        let tps: Vec<String> = entries
            .iter()
            .filter(|e| !DEEP_PROGRAMS.contains(&e.0.as_str()))
            .map(|e| format!("{}:{}", e.1, e.2))
            .collect();
        if category == "syscalls" && !tracepoint_exists(category, &first_tp) {
            // A syscall this kernel does not have.
            if required {
                bail!("tracepoint {category}:{first_tp} does not exist on this kernel");
            }
            warn!("tracepoint {category}:{first_tp} is not available on this kernel; skipped");
            missing.push(format!("{category}:{first_tp}"));
            choices.push(HookChoice {
                event: hook,
                hook: "none".into(),
                why: "this kernel does not have the syscall".into(),
            });
            continue;
        }
        if let (true, Some(Ok(())), Ok(btf), Some(c)) =
            (hook == "close", &for_close, &btf, close_function)
        {
            let prog = [(c.program.to_string(), Side::Entry, c.function.to_string())];
            match attach_trampolines(ebpf, btf, &prog, &mut trampoline_time) {
                Ok(l) => {
                    links.extend(l);
                    choices.push(HookChoice {
                        event: hook,
                        hook: format!("{} {}", Side::Entry.name(), c.function),
                        why: "close takes the descriptor out of the table with it: no \
                              trampoline on __x64_sys_close"
                            .into(),
                    });
                    continue;
                }
                Err(e) if hooks == HookSet::Trampolines => {
                    return Err(
                        e.context(format!("--hooks trampolines: {}'s trampoline", c.function))
                    );
                }
                Err(e) => {
                    debug!("close keeps its own hook: {e:#}");
                    for_close = Some(Err(short_reason(&e)));
                    mark_hooked_syscalls(ebpf, false)?;
                }
            }
        }
        if hook == RAW_SOCK_STATE.0 && raw_sock_state {
            match attach_raw(ebpf, RAW_SOCK_STATE.1, RAW_SOCK_STATE.2) {
                Ok(link) => {
                    links.push((RAW_SOCK_STATE.1.to_string(), Link::Raw(link)));
                    choices.push(HookChoice {
                        event: hook,
                        hook: format!("raw tracepoint {}", RAW_SOCK_STATE.2),
                        why: "the kernel builds no record of each change of every socket: its \
                              arguments only"
                            .into(),
                    });
                    continue;
                }
                Err(e) => debug!("TCP states keep their tracepoint: {e:#}"),
            }
        }
        let why_not = match (&btf, trampolines(&hook, deep)) {
            (_, None) => Some("a tracepoint that only fires for the event itself".to_string()),
            (Err(why), Some(_)) => Some(why.clone()),
            (Ok(btf), Some(progs)) => match from_regs_twin(&hook, &progs, kernel)
                .and_then(
                    |twin| match attach_trampolines(ebpf, btf, &twin, &mut trampoline_time) {
                        Ok(l) => Some(Ok(l)),
                        Err(e) => {
                            debug!("{hook} hands its births to fexit_birth: {e:#}");
                            None
                        }
                    },
                )
                .unwrap_or_else(|| {
                    birth_programs(progs.clone(), &birth_group).and_then(|progs| {
                        attach_trampolines(ebpf, btf, &progs, &mut trampoline_time)
                    })
                }) {
                Ok(l) => {
                    links.extend(l);
                    let sides: std::collections::BTreeSet<&str> =
                        progs.iter().map(|p| p.1.name()).collect();
                    choices.push(HookChoice {
                        event: hook,
                        hook: format!(
                            "{} {}",
                            sides.into_iter().collect::<Vec<_>>().join("+"),
                            progs[0].2
                        ),
                        why: "this kernel takes trampolines: only callers of the function pay"
                            .into(),
                    });
                    continue;
                }
                Err(e) if hooks == HookSet::Trampolines => {
                    return Err(e.context(format!(
                        "--hooks trampolines: the {hook} hook cannot use a trampoline"
                    )));
                }
                Err(e) => Some(short_reason(&e)),
            },
        };
        let mut hook_links = Vec::new();
        for (prog, category, name, required) in entries {
            if !tracepoint_exists(category, &name) {
                if DEEP_PROGRAMS.contains(&prog.as_str()) {
                    continue;
                }
                if required {
                    bail!("tracepoint {category}:{name} does not exist on this kernel");
                }
                warn!("tracepoint {category}:{name} is not available on this kernel; skipped");
                missing.push(format!("{category}:{name}"));
                continue;
            }
            let fallback = prog
                .strip_prefix("exit_regs_")
                .filter(|birth| FROM_REGS_IF_ACCEPTED.contains(birth));
            match (attach(ebpf, &mut loaded, &prog, category, &name), fallback) {
                (Ok(link), _) => hook_links.push((prog, Link::Tracepoint(link))),
                (Err(e), Some(birth)) => {
                    debug!("{birth} keeps its entry program: {e:#}");
                    for (p, tp) in [
                        (format!("enter_{birth}"), format!("sys_enter_{birth}")),
                        ("exit_open".to_string(), name.clone()),
                    ] {
                        hook_links.push((
                            p.clone(),
                            Link::Tracepoint(attach(ebpf, &mut loaded, &p, category, &tp)?),
                        ));
                    }
                }
                (Err(e), None) => return Err(e),
            }
        }
        if !hook_links.is_empty() {
            choices.push(HookChoice {
                event: hook,
                hook: format!("tracepoint {}", tps.join(" ")),
                why: why_not.unwrap_or_default(),
            });
        }
        links.extend(hook_links);
    }
    choices.extend(attach_elsewhere(
        ebpf,
        &btf,
        hooks,
        close_function,
        for_close,
        &mut links,
        &mut trampoline_time,
    )?);
    Ok(Attached {
        links,
        missing,
        choices,
        time: trampoline_time,
    })
}

/// Mark the syscalls whose own programs record their births and deaths in `HOOKED_SYSCALLS`, for
/// the programs on `fd_install` and the close function to skip (`close_on_function`: close's
/// deaths are the close function's own, close is not marked).
fn mark_hooked_syscalls(ebpf: &mut Ebpf, close_on_function: bool) -> Result<()> {
    let mut hooked: aya::maps::Array<_, u8> = aya::maps::Array::try_from(
        ebpf.map_mut("HOOKED_SYSCALLS")
            .context("HOOKED_SYSCALLS map")?,
    )?;
    for nr in hooked_syscall_numbers() {
        let mark = u8::from(!(close_on_function && nr == libc::SYS_close as u32));
        hooked
            .set(nr, mark, 0)
            .with_context(|| format!("marking syscall {nr} in HOOKED_SYSCALLS"))?;
    }
    Ok(())
}

/// The trampolines on the functions every birth and death goes through, for those outside the
/// hooked syscalls: `fd_install`, and `close_function` (io_uring's close), unless it was asked
/// for close's deaths already (`for_close`: attached, or refused and why).
fn attach_elsewhere(
    ebpf: &mut Ebpf,
    btf: &Result<aya::Btf, String>,
    hooks: HookSet,
    close_function: Option<CloseFunction>,
    for_close: Option<Result<(), String>>,
    links: &mut Vec<(String, Link)>,
    time: &mut SetupTime,
) -> Result<Vec<HookChoice>> {
    let btf = match btf {
        Ok(btf) => btf,
        Err(_) => {
            return Ok([INSTALL_FUNCTION, CLOSE_EVENT]
                .map(|event| HookChoice {
                    event: event.into(),
                    hook: "none".into(),
                    why: "trampolines only: io_uring's opens and closes are found as drift".into(),
                })
                .into());
        }
    };
    let mut choices = Vec::new();
    let close_row = match (for_close, close_function) {
        (Some(Ok(())), Some(c)) => Some(HookChoice {
            event: CLOSE_EVENT.into(),
            hook: format!("{} {}", Side::Entry.name(), c.function),
            why: "close's trampoline (above) records these too".into(),
        }),
        (Some(Err(why)), _) => Some(HookChoice {
            event: CLOSE_EVENT.into(),
            hook: "none".into(),
            why: format!("{why}: found as drift instead"),
        }),
        _ => None,
    };
    let hooks_wanted = [
        Some((
            INSTALL_FUNCTION,
            INSTALL_FUNCTION,
            Some(INSTALL_PROGRAM),
            Side::Entry,
            "descriptors installed outside the syscalls above (io_uring, ioctl, clone's pidfd)",
        )),
        close_row.is_none().then_some((
            CLOSE_EVENT,
            close_function.map_or("", |c| c.function),
            close_function.map(|c| c.program),
            Side::Entry,
            "descriptors closed outside close and close_range (io_uring)",
        )),
    ];
    for (event, function, prog, side, what) in hooks_wanted.into_iter().flatten() {
        let Some(prog) = prog else {
            choices.push(HookChoice {
                event: event.into(),
                hook: "none".into(),
                why: "this kernel's BTF has none of the close functions: io_uring's closes are \
                      found as drift"
                    .into(),
            });
            continue;
        };
        let side_name = side.name();
        match attach_trampolines(
            ebpf,
            btf,
            &[(prog.to_string(), side, function.to_string())],
            time,
        ) {
            Ok(l) => {
                links.extend(l);
                choices.push(HookChoice {
                    event: event.into(),
                    hook: format!("{side_name} {function}"),
                    why: what.into(),
                });
            }
            Err(e) if hooks == HookSet::Trampolines => {
                return Err(e.context(format!("--hooks trampolines: {function}'s trampoline")));
            }
            Err(e) => choices.push(HookChoice {
                event: event.into(),
                hook: "none".into(),
                why: format!("{}: found as drift instead", short_reason(&e)),
            }),
        }
    }
    choices.extend(close_row);
    Ok(choices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_replaces_only_the_birth_program_of_its_syscalls() {
        let deep = trampolines("openat", true).unwrap();
        let twin = from_regs_twin("openat", &deep, KernelVersion::new(5, 10, 0)).unwrap();
        assert_eq!(twin.len(), deep.len());
        assert_eq!(twin[0].0, "fexit_r_openat");
        assert_eq!(twin[0].2, "__x64_sys_openat");
        // The deep programs stay, after it (they run first on the trampoline).
        assert_eq!(twin[1..], deep[1..]);
        assert!(twin[1..].iter().all(|p| p.0.contains("openat")));
        assert_eq!(
            from_regs_twin(
                "open",
                &trampolines("open", false).unwrap(),
                KernelVersion::new(6, 1, 0)
            )
            .unwrap()[0]
                .0,
            "fexit_r_open"
        );
        // accept4's from 6.12 on, whose verifier takes it.
        let accept4 = trampolines("accept4", true).unwrap();
        assert_eq!(
            from_regs_twin("accept4", &accept4, KernelVersion::new(6, 1, 0)),
            None
        );
        for kernel in [(6, 12, 0), (6, 18, 44), (7, 0, 0)] {
            let kernel = KernelVersion::new(kernel.0, kernel.1, kernel.2);
            let twin = from_regs_twin("accept4", &accept4, kernel).unwrap();
            assert_eq!(twin[0].0, "fexit_r_accept4");
            assert_eq!(twin[1..], accept4[1..]);
        }
        for other in ["socket", "close", "dup2"] {
            let progs = trampolines(other, true).unwrap();
            assert_eq!(
                from_regs_twin(other, &progs, KernelVersion::new(6, 18, 0)),
                None,
                "{other}"
            );
        }
    }
}
