//! Which kernel hooks fdtrace attaches its programs to, and why: the tracepoints of the
//! syscalls that create descriptors (from `fdtrace_common::syscall::BIRTHS`) and of the other
//! events, which of them this kernel has, and the tracing filesystem they live in; and the
//! trampolines (fentry/fexit) on the kernel functions of the same syscalls that replace the
//! syscall tracepoints where the kernel takes them.
//!
//! Why two sets: enabling any `syscalls:` tracepoint puts every syscall of every task on the
//! kernel's slow syscall path (`SYSCALL_WORK_SYSCALL_TRACEPOINT`), traced or not. A trampoline
//! costs only the callers of its own function, and fdtrace's programs return after one map load
//! for processes it does not trace.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::util::KernelVersion;
use tracing::debug;

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// The tracepoints of the syscalls that create descriptors (`fdtrace_common::syscall::BIRTHS`):
/// program `enter_<name>` on `sys_enter_<name>`, and the shared `exit_open` on
/// `sys_exit_<name>` (or `exit_regs_<name>` alone, see `FROM_REGS`), with whether every
/// supported kernel has it; optional ones (absent on some kernels or architectures) are skipped
/// with a message. Then whether a language runtime's stack is copied in full there.
fn birth_tracepoints() -> impl Iterator<Item = (&'static str, bool, bool)> {
    fdtrace_common::syscall::BIRTHS.iter().flat_map(|b| {
        b.tracepoints
            .iter()
            .map(move |&(name, required)| (name, required, b.deep))
    })
}

/// The other programs: (program, category, tracepoint, required).
const OTHERS: &[(&str, &str, &str, bool)] = &[
    ("enter_close", "syscalls", "sys_enter_close", true),
    (
        "enter_close_range",
        "syscalls",
        "sys_enter_close_range",
        false,
    ),
    ("enter_bind", "syscalls", "sys_enter_bind", true),
    ("exit_sockaddr", "syscalls", "sys_exit_bind", true),
    ("enter_connect", "syscalls", "sys_enter_connect", true),
    ("exit_sockaddr", "syscalls", "sys_exit_connect", true),
    ("sock_state", "sock", "inet_sock_set_state", false),
    ("enter_clone", "syscalls", "sys_enter_clone", true),
    ("exit_clone", "syscalls", "sys_exit_clone", true),
    ("enter_clone3", "syscalls", "sys_enter_clone3", false),
    ("exit_clone", "syscalls", "sys_exit_clone3", false),
    ("sched_fork", "sched", "sched_process_fork", true),
    ("sched_exec", "sched", "sched_process_exec", true),
    ("sched_exit", "sched", "sched_process_exit", true),
];

/// Frequent births whose exit program `exit_regs_<name>` reads the arguments from the user
/// registers, so that they need no entry program (one tracepoint hit per call instead of two,
/// and no hash-map insert, lookup and delete).
const FROM_REGS: &[&str] = &["openat", "open", "accept4"];

/// Those of `FROM_REGS` whose `exit_regs_<name>` some verifiers refuse: 6.1's stops at its
/// 1M-instruction limit on the socket births (the register reads, then `sock_info`), 6.12's
/// and later accept them. Where the kernel refuses it, the birth keeps its entry program and
/// `exit_open`.
pub(crate) const FROM_REGS_IF_ACCEPTED: &[&str] = &["accept4"];

/// The births whose trampoline program sends the record itself (`fexit_r_<syscall>`, the twin of
/// `exit_regs_<syscall>`) rather than handing it to `fexit_birth` through a tail call: the most
/// frequent ones, where the hand-over's cost counts. Where the kernel refuses the twin, the
/// birth keeps `fexit_<syscall>`.
pub(crate) const TRAMPOLINE_FROM_REGS: &[&str] = &["openat", "open", "accept4"];

/// Those of `TRAMPOLINE_FROM_REGS` whose twin is only tried from this kernel version on: 6.1's
/// verifier refuses accept4's record read from the registers (as it refuses
/// `exit_regs_accept4`), and a refusal at its 1M-instruction limit costs start-up seconds
/// (a minute under emulation); 6.12's takes it.
const TRAMPOLINE_FROM_REGS_SINCE: &[(&str, KernelVersion)] =
    &[("accept4", KernelVersion::new(6, 12, 0))];

/// Whether `hook`'s births are tried with their `fexit_r_<hook>` twin on a kernel of this
/// version (`TRAMPOLINE_FROM_REGS`, `TRAMPOLINE_FROM_REGS_SINCE`).
pub(crate) fn trampoline_from_regs(hook: &str, kernel: KernelVersion) -> bool {
    TRAMPOLINE_FROM_REGS.contains(&hook)
        && TRAMPOLINE_FROM_REGS_SINCE
            .iter()
            .all(|&(h, since)| h != hook || kernel >= since)
}

/// The programs attached before the birth programs of deep births for language runtimes:
/// the rest of the stack, and CPython's frames.
pub(crate) const DEEP_PROGRAMS: [&str; 2] = ["exit_deep_stack", "exit_python_frames"];

/// A program on a tracepoint: (program, category, tracepoint, required).
pub(crate) type Attachment = (String, &'static str, String, bool);

/// Every (program, category, tracepoint, required) to attach. `regs`: the programs can read the
/// user registers of the current task (see `exit_regs_*` in fdtrace-ebpf). `deep`: a target
/// may be a language runtime, whose stacks go deeper than a birth record's copy.
pub(crate) fn attach_plan(regs: bool, deep: bool) -> Vec<Attachment> {
    let mut plan = Vec::new();
    for (name, required, deep_birth) in birth_tracepoints() {
        if deep && deep_birth {
            // First on the tracepoint, so it runs before the birth's program.
            for prog in DEEP_PROGRAMS {
                plan.push((
                    prog.to_string(),
                    "syscalls",
                    format!("sys_exit_{name}"),
                    false,
                ));
            }
        }
        if regs && FROM_REGS.contains(&name) {
            plan.push((
                format!("exit_regs_{name}"),
                "syscalls",
                format!("sys_exit_{name}"),
                required,
            ));
            continue;
        }
        plan.push((
            format!("enter_{name}"),
            "syscalls",
            format!("sys_enter_{name}"),
            required,
        ));
        // recvmmsg has an exit program of its own (see fdtrace-ebpf).
        let exit = if name == "recvmmsg" {
            "exit_recvmmsg"
        } else {
            "exit_open"
        };
        plan.push((
            exit.to_string(),
            "syscalls",
            format!("sys_exit_{name}"),
            required,
        ));
    }
    for &(prog, category, name, required) in OTHERS {
        plan.push((prog.to_string(), category, name.to_string(), required));
    }
    plan
}

/// Which hooks to use for the syscalls (`--hooks`, or `FDTRACE_HOOKS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HookSet {
    /// Trampolines where this kernel takes them, each syscall's tracepoints elsewhere.
    #[default]
    Auto,
    /// The syscall tracepoints only.
    Tracepoints,
    /// Trampolines only: fail where the kernel refuses one.
    Trampolines,
}

impl HookSet {
    /// `FDTRACE_HOOKS` (auto, tracepoints or trampolines); `Auto` when unset.
    pub fn from_env() -> Result<Self> {
        use clap::ValueEnum as _;
        match std::env::var("FDTRACE_HOOKS") {
            Err(_) => Ok(Self::Auto),
            Ok(v) => Self::from_str(&v, true).map_err(|_| {
                anyhow::anyhow!("FDTRACE_HOOKS must be auto, tracepoints or trampolines, not {v:?}")
            }),
        }
    }
}

/// Where a trampoline program runs: before its function or after it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Entry,
    Exit,
}

impl Side {
    /// The program type's name, as `fdtrace hooks` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Side::Entry => "fentry",
            Side::Exit => "fexit",
        }
    }
}

/// The kernel function behind syscall `name` on this architecture.
pub(crate) fn syscall_function(name: &str) -> String {
    format!("__x64_sys_{name}")
}

/// The syscall whose tracepoint `name` is (`sys_enter_<syscall>`, `sys_exit_<syscall>`).
pub(crate) fn syscall_of(name: &str) -> Option<&str> {
    name.strip_prefix("sys_enter_")
        .or_else(|| name.strip_prefix("sys_exit_"))
}

/// The trampoline programs that replace the tracepoint programs of syscall `name`, in the order
/// they are attached: (program, side, kernel function). None for the syscalls that only have
/// tracepoint programs. `deep`: with the programs that take the deep stacks of language
/// runtimes, attached after the birth's own so that they run before it (a trampoline runs its
/// programs newest first; a tracepoint, oldest first).
pub(crate) fn trampolines(name: &str, deep: bool) -> Option<Vec<(String, Side, String)>> {
    let progs: Vec<(String, Side)> = match birth_tracepoints().find(|b| b.0 == name) {
        Some((_, _, deep_birth)) => {
            let mut v = vec![(format!("fexit_{name}"), Side::Exit)];
            if deep && deep_birth {
                v.push((format!("fexit_deep_{name}"), Side::Exit));
                v.push((format!("fexit_python_{name}"), Side::Exit));
            }
            v
        }
        None => match name {
            "close" | "close_range" => vec![(format!("fentry_{name}"), Side::Entry)],
            "bind" | "connect" => vec![(format!("fexit_{name}"), Side::Exit)],
            "clone" | "clone3" => vec![
                (format!("fentry_{name}"), Side::Entry),
                (format!("fexit_{name}"), Side::Exit),
            ],
            _ => return None,
        },
    };
    let function = syscall_function(name);
    Some(
        progs
            .into_iter()
            .map(|(p, side)| (p, side, function.clone()))
            .collect(),
    )
}

/// The attach plan in hooks: consecutive entries of one syscall (its entry and exit
/// tracepoints, and the deep programs on them) form one hook, named by the syscall; each other
/// tracepoint is a hook of its own, named `category:name`.
pub(crate) fn by_hook(plan: Vec<Attachment>) -> Vec<(String, Vec<Attachment>)> {
    let mut hooks: Vec<(String, Vec<_>)> = Vec::new();
    for entry in plan {
        let key = match syscall_of(&entry.2) {
            Some(sc) if entry.1 == "syscalls" => sc.to_string(),
            _ => format!("{}:{}", entry.1, entry.2),
        };
        match hooks.last_mut() {
            Some((k, entries)) if *k == key => entries.push(entry),
            _ => hooks.push((key, vec![entry])),
        }
    }
    hooks
}

/// The kernel function behind descriptors installed outside the hooked syscalls (io_uring's
/// operations, an ioctl's, clone's pidfd), its program, and its event's name in `fdtrace hooks`.
pub(crate) const INSTALL_FUNCTION: &str = "fd_install";
pub(crate) const INSTALL_PROGRAM: &str = "fentry_fd_install";

/// The event of the descriptors closed outside close and close_range in `fdtrace hooks`.
pub(crate) const CLOSE_EVENT: &str = "io_uring_close";

/// A kernel function that takes a descriptor out of the table, hooked for the deaths no close
/// syscall's program records (io_uring's close), and for close's own where close calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CloseFunction {
    pub(crate) function: &'static str,
    pub(crate) program: &'static str,
    /// close(2) calls it too: its one trampoline then records close's deaths as well, and
    /// `__x64_sys_close` takes none (a trampoline less on every close of every process).
    pub(crate) serves_close: bool,
}

/// The close functions, newest kernels' first: the first one this kernel's BTF has is hooked.
/// Should a kernel's compiler have inlined `file_close_fd_locked` into close's path while keeping
/// a copy (BTF lists the copy), that path's closes would be missed: each is then found at the
/// next comparison with /proc (drift), or as a birth that replaces a descriptor the model still
/// held when its number is reused first, never left open in the model.
pub(crate) const CLOSE_FUNCTIONS: [CloseFunction; 2] = [
    // 6.12 and later: `file_close_fd_locked(files, fd)`, which close, close_range and io_uring's
    // close all call (close_range once per slot of its range: those calls are skipped).
    CloseFunction {
        function: "file_close_fd_locked",
        program: "fentry_close_locked",
        serves_close: true,
    },
    // 5.10 to 6.1: `__close_fd_get_file(fd, ...)`, io_uring's close only. Close and close_range
    // call `pick_file` there, which close_range calls for every slot of its range, open or not,
    // and which 5.10's io_uring close does not call: its trampoline would cost close_range a
    // trampoline per slot and spare close nothing (one trampoline either way).
    CloseFunction {
        function: "__close_fd_get_file",
        program: "fentry_close_get_file",
        serves_close: false,
    },
];

/// The syscalls whose births or deaths their own programs record (every birth tracepoint's
/// syscall but ioctl, whose program only sees close-on-exec changes; close and close_range), by
/// x86_64 number: the programs on `fd_install` and on the close functions skip theirs (close
/// excepted where the close function records close's deaths: see `attach::mark_hooked_syscalls`).
pub(crate) fn hooked_syscall_numbers() -> Vec<u32> {
    birth_tracepoints()
        .map(|(name, _, _)| name)
        .filter(|&name| name != "ioctl")
        .chain(["close", "close_range"])
        .filter_map(syscall_number)
        .collect()
}

/// The x86_64 number of a birth or death syscall.
fn syscall_number(name: &str) -> Option<u32> {
    use libc::*;
    let nr = match name {
        "openat" => SYS_openat,
        "open" => SYS_open,
        "creat" => SYS_creat,
        "openat2" => SYS_openat2,
        "socket" => SYS_socket,
        "accept" => SYS_accept,
        "accept4" => SYS_accept4,
        "dup" => SYS_dup,
        "dup2" => SYS_dup2,
        "dup3" => SYS_dup3,
        "fcntl" => SYS_fcntl,
        "eventfd" => SYS_eventfd,
        "eventfd2" => SYS_eventfd2,
        "epoll_create" => SYS_epoll_create,
        "epoll_create1" => SYS_epoll_create1,
        "pipe" => SYS_pipe,
        "pipe2" => SYS_pipe2,
        "socketpair" => SYS_socketpair,
        "timerfd_create" => SYS_timerfd_create,
        "signalfd" => SYS_signalfd,
        "signalfd4" => SYS_signalfd4,
        "inotify_init" => SYS_inotify_init,
        "inotify_init1" => SYS_inotify_init1,
        "memfd_create" => SYS_memfd_create,
        "pidfd_open" => SYS_pidfd_open,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "fanotify_init" => SYS_fanotify_init,
        "memfd_secret" => SYS_memfd_secret,
        "userfaultfd" => SYS_userfaultfd,
        "perf_event_open" => SYS_perf_event_open,
        "bpf" => SYS_bpf,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "io_uring_setup" => SYS_io_uring_setup,
        "mq_open" => SYS_mq_open,
        "fsopen" => SYS_fsopen,
        "fsmount" => SYS_fsmount,
        "fspick" => SYS_fspick,
        "open_tree" => SYS_open_tree,
        "landlock_create_ruleset" => SYS_landlock_create_ruleset,
        "recvmsg" => SYS_recvmsg,
        "recvmmsg" => SYS_recvmmsg,
        "ioctl" => SYS_ioctl,
        "close" => SYS_close,
        "close_range" => SYS_close_range,
        _ => return None,
    };
    u32::try_from(nr).ok()
}

/// Mount tracefs when it is missing (aya attaches tracepoints through it).
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS)?;
    let fstype = std::ffi::CString::new("tracefs")?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); mount it with `mount -t tracefs tracefs {TRACEFS}`"
        );
    }
    debug!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// The offset of FIELD in a tracepoint's tracefs `format` file.
pub(crate) fn field_offset(format: &Path, field: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format).ok()?;
    let line = text.lines().find(|l| {
        l.split(';')
            .next()
            .is_some_and(|d| d.ends_with(&format!(" {field}")))
    })?;
    let off = line.split("offset:").nth(1)?.split(';').next()?;
    off.trim().parse().ok()
}

/// Whether the kernel has `bpf_get_current_task_btf` and `bpf_task_pt_regs` (5.15); without
/// them the programs find the user registers at the top of the task's kernel stack.
pub(crate) fn have_task_pt_regs() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 15, 0))
}

/// Whether `category:name` exists on this kernel.
pub(crate) fn tracepoint_exists(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .exists()
}

/// `fdtrace tracepoints`: one line per tracepoint; a reader that goes away ends it quietly.
pub fn print_tracepoints() -> Result<()> {
    use std::io::Write as _;
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "fdtrace tracepoints reads the kernel's tracing directory, which only root may read: run it with sudo"
        );
    }
    ensure_tracefs()?;
    let mut out = std::io::stdout().lock();
    for (tp, exists) in tracepoints() {
        let missing = if exists { "" } else { " (missing)" };
        match writeln!(out, "{tp}{missing}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The tracepoints fdtrace attaches on this kernel, as `category:name`, each with whether it
/// exists here (`fdtrace tracepoints`; `cargo xtask bench` puts empty programs on them).
pub fn tracepoints() -> Vec<(String, bool)> {
    let mut seen = std::collections::BTreeSet::new();
    attach_plan(have_task_pt_regs(), false)
        .into_iter()
        .filter(|(_, category, name, _)| seen.insert(format!("{category}:{name}")))
        .map(|(_, category, name, _)| {
            let exists = tracepoint_exists(category, &name);
            (format!("{category}:{name}"), exists)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        DEEP_PROGRAMS, FROM_REGS, attach_plan, birth_tracepoints, field_offset,
        hooked_syscall_numbers, syscall_number,
    };

    #[test]
    fn the_tracepoint_list_names_each_once() {
        let tps: Vec<String> = super::tracepoints().into_iter().map(|t| t.0).collect();
        let unique: std::collections::BTreeSet<&String> = tps.iter().collect();
        assert_eq!(unique.len(), tps.len(), "{tps:?}");
        for tp in [
            "syscalls:sys_exit_openat",
            "syscalls:sys_enter_close",
            "sock:inet_sock_set_state",
            "sched:sched_process_exit",
        ] {
            assert!(tps.iter().any(|t| t == tp), "{tp} missing from {tps:?}");
        }
    }

    #[test]
    fn every_birth_has_one_exit_program_and_register_births_no_entry() {
        for name in FROM_REGS {
            assert!(
                birth_tracepoints().any(|(b, _, _)| b == *name),
                "{name} is not a birth"
            );
        }
        for (regs, deep) in [(false, false), (true, false), (false, true), (true, true)] {
            let plan = attach_plan(regs, deep);
            for (name, required, deep_birth) in birth_tracepoints() {
                let exits: Vec<_> = plan
                    .iter()
                    .filter(|p| {
                        p.2 == format!("sys_exit_{name}") && !DEEP_PROGRAMS.contains(&p.0.as_str())
                    })
                    .collect();
                // The deep programs come first on their tracepoint: they run first there.
                for prog in DEEP_PROGRAMS {
                    let deep_at = plan
                        .iter()
                        .position(|p| p.2 == format!("sys_exit_{name}") && p.0 == prog);
                    assert_eq!(deep_at.is_some(), deep && deep_birth);
                    if let Some(at) = deep_at {
                        assert!(plan[at + 1..].iter().any(|p| std::ptr::eq(p, exits[0])));
                    }
                }
                assert_eq!(exits.len(), 1, "{name}: {exits:?}");
                assert_eq!(exits[0].3, required);
                let from_regs = regs && FROM_REGS.contains(&name);
                let expected = if from_regs {
                    format!("exit_regs_{name}")
                } else if name == "recvmmsg" {
                    "exit_recvmmsg".to_string()
                } else {
                    "exit_open".to_string()
                };
                assert_eq!(exits[0].0, expected);
                let entries = plan
                    .iter()
                    .filter(|p| p.2 == format!("sys_enter_{name}"))
                    .count();
                assert_eq!(entries, usize::from(!from_regs), "{name}");
            }
        }
    }

    #[test]
    fn every_syscall_hook_has_trampolines_in_the_object() {
        // The object's strings (symbol names among them), split at NULs.
        let strings: std::collections::HashSet<&[u8]> =
            crate::tracer::ebpf_object().split(|&b| b == 0).collect();
        let has_symbol = |name: &str| strings.contains(name.as_bytes());
        for (regs, deep) in [(false, false), (true, false), (false, true), (true, true)] {
            let hooks = super::by_hook(attach_plan(regs, deep));
            // One hook per syscall, each once.
            let names: std::collections::BTreeSet<&String> = hooks.iter().map(|h| &h.0).collect();
            assert_eq!(names.len(), hooks.len());
            for (hook, entries) in &hooks {
                let syscalls = entries.iter().all(|e| e.1 == "syscalls");
                let progs = super::trampolines(hook, deep);
                assert_eq!(progs.is_some(), syscalls, "{hook}");
                let Some(progs) = progs else { continue };
                // The birth's (or death's) own program first; the deep ones after it, so that
                // they run first on the trampoline.
                let deep_birth = birth_tracepoints().any(|(b, _, d)| b == hook && d);
                assert_eq!(
                    progs.len(),
                    match hook.as_str() {
                        "clone" | "clone3" => 2,
                        _ if deep && deep_birth => 3,
                        _ => 1,
                    }
                );
                for (prog, _, function) in &progs {
                    assert!(has_symbol(prog), "{prog} is not in the eBPF object");
                    // A birth's copy for the second prototype of the syscall functions.
                    let birth = birth_tracepoints().any(|(b, _, _)| b == hook);
                    if birth && prog == &format!("fexit_{hook}") {
                        let second = format!("fexit2_{hook}");
                        assert!(has_symbol(&second), "{second} is not in the eBPF object");
                    }
                    assert_eq!(*function, format!("__x64_sys_{hook}"));
                }
                // The deep programs ride on the trampolines exactly where they ride on the
                // tracepoints.
                let deep_tp = entries
                    .iter()
                    .any(|e| DEEP_PROGRAMS.contains(&e.0.as_str()));
                let deep_tramp = progs.iter().any(|p| p.0.starts_with("fexit_deep_"));
                assert_eq!(deep_tp, deep_tramp, "{hook}");
            }
        }
        // The programs on the functions every birth and death goes through.
        for prog in
            std::iter::once(super::INSTALL_PROGRAM).chain(super::CLOSE_FUNCTIONS.map(|c| c.program))
        {
            assert!(has_symbol(prog), "{prog} is not in the eBPF object");
        }
    }

    #[test]
    fn child_pid_offset_of_both_fork_record_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("format");
        // 6.1 and 6.12: comm arrays.
        std::fs::write(
            &f,
            "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
             \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
             \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
             \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n",
        )
        .unwrap();
        assert_eq!(field_offset(&f, "child_pid"), Some(44));
        assert_eq!(field_offset(&f, "parent_pid"), Some(24));
        // Newer kernels: __data_loc strings.
        std::fs::write(
            &f,
            "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
             \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n",
        )
        .unwrap();
        assert_eq!(field_offset(&f, "child_pid"), Some(20));
        assert_eq!(field_offset(&f, "pid"), None);
    }

    #[test]
    fn every_birth_syscall_has_its_number() {
        let names: Vec<&str> = birth_tracepoints().map(|b| b.0).collect();
        for name in &names {
            assert!(syscall_number(name).is_some(), "{name}");
        }
        let hooked = hooked_syscall_numbers();
        assert_eq!(hooked.len(), names.len() - 1 + 2);
        assert!(hooked.contains(&(libc::SYS_close as u32)));
        assert!(hooked.contains(&(libc::SYS_close_range as u32)));
        assert!(hooked.contains(&(libc::SYS_openat as u32)));
        assert!(!hooked.contains(&(libc::SYS_ioctl as u32)));
        assert!(
            hooked
                .iter()
                .all(|&n| n < fdtrace_common::syscall::SYSCALL_NRS)
        );
    }
}
