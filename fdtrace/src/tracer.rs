//! Loading and attaching the eBPF programs; the target filter; the ring buffer; kernel counters.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use fdtrace_common::stat;
use tracing::{debug, warn};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Tracepoints each program attaches to. Optional ones (absent on some kernels or
/// architectures) are skipped with a message.
const ATTACH: &[(&str, &str, &str, bool)] = &[
    ("enter_openat", "syscalls", "sys_enter_openat", true),
    ("enter_open", "syscalls", "sys_enter_open", false),
    ("enter_creat", "syscalls", "sys_enter_creat", false),
    ("enter_openat2", "syscalls", "sys_enter_openat2", false),
    ("enter_socket", "syscalls", "sys_enter_socket", true),
    ("enter_accept", "syscalls", "sys_enter_accept", false),
    ("enter_accept4", "syscalls", "sys_enter_accept4", true),
    ("enter_dup", "syscalls", "sys_enter_dup", true),
    ("enter_dup2", "syscalls", "sys_enter_dup2", false),
    ("enter_dup3", "syscalls", "sys_enter_dup3", true),
    ("enter_fcntl", "syscalls", "sys_enter_fcntl", true),
    ("enter_eventfd", "syscalls", "sys_enter_eventfd", false),
    ("enter_eventfd2", "syscalls", "sys_enter_eventfd2", true),
    (
        "enter_epoll_create",
        "syscalls",
        "sys_enter_epoll_create",
        false,
    ),
    (
        "enter_epoll_create1",
        "syscalls",
        "sys_enter_epoll_create1",
        true,
    ),
    ("enter_pipe", "syscalls", "sys_enter_pipe", false),
    ("enter_pipe2", "syscalls", "sys_enter_pipe2", true),
    ("enter_socketpair", "syscalls", "sys_enter_socketpair", true),
    (
        "enter_timerfd_create",
        "syscalls",
        "sys_enter_timerfd_create",
        false,
    ),
    ("enter_signalfd", "syscalls", "sys_enter_signalfd", false),
    ("enter_signalfd4", "syscalls", "sys_enter_signalfd4", false),
    (
        "enter_inotify_init",
        "syscalls",
        "sys_enter_inotify_init",
        false,
    ),
    (
        "enter_inotify_init1",
        "syscalls",
        "sys_enter_inotify_init1",
        false,
    ),
    (
        "enter_memfd_create",
        "syscalls",
        "sys_enter_memfd_create",
        false,
    ),
    (
        "enter_pidfd_open",
        "syscalls",
        "sys_enter_pidfd_open",
        false,
    ),
    ("exit_open", "syscalls", "sys_exit_openat", true),
    ("exit_open", "syscalls", "sys_exit_open", false),
    ("exit_open", "syscalls", "sys_exit_creat", false),
    ("exit_open", "syscalls", "sys_exit_openat2", false),
    ("exit_open", "syscalls", "sys_exit_socket", true),
    ("exit_open", "syscalls", "sys_exit_accept", false),
    ("exit_open", "syscalls", "sys_exit_accept4", true),
    ("exit_open", "syscalls", "sys_exit_dup", true),
    ("exit_open", "syscalls", "sys_exit_dup2", false),
    ("exit_open", "syscalls", "sys_exit_dup3", true),
    ("exit_open", "syscalls", "sys_exit_fcntl", true),
    ("exit_open", "syscalls", "sys_exit_eventfd", false),
    ("exit_open", "syscalls", "sys_exit_eventfd2", true),
    ("exit_open", "syscalls", "sys_exit_epoll_create", false),
    ("exit_open", "syscalls", "sys_exit_epoll_create1", true),
    ("exit_open", "syscalls", "sys_exit_pipe", false),
    ("exit_open", "syscalls", "sys_exit_pipe2", true),
    ("exit_open", "syscalls", "sys_exit_socketpair", true),
    ("exit_open", "syscalls", "sys_exit_timerfd_create", false),
    ("exit_open", "syscalls", "sys_exit_signalfd", false),
    ("exit_open", "syscalls", "sys_exit_signalfd4", false),
    ("exit_open", "syscalls", "sys_exit_inotify_init", false),
    ("exit_open", "syscalls", "sys_exit_inotify_init1", false),
    ("exit_open", "syscalls", "sys_exit_memfd_create", false),
    ("exit_open", "syscalls", "sys_exit_pidfd_open", false),
    ("enter_close", "syscalls", "sys_enter_close", true),
    (
        "enter_close_range",
        "syscalls",
        "sys_enter_close_range",
        false,
    ),
    ("sched_exec", "sched", "sched_process_exec", true),
    ("sched_exit", "sched", "sched_process_exit", true),
];

/// The loaded programs and their maps.
pub struct Tracer {
    ebpf: Ebpf,
    /// Tracepoints that are missing on this kernel.
    pub missing: Vec<String>,
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

/// Fail early with a clear message when we cannot possibly load BPF programs.
pub fn check_privileges() -> Result<()> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "fdtrace needs root (CAP_BPF and CAP_PERFMON) to load its eBPF programs: run it with sudo"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): fdtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

impl Tracer {
    /// Load the embedded object and attach every program.
    pub fn load() -> Result<Self> {
        check_privileges()?;
        ensure_tracefs()?;
        // Memory of BPF maps is charged to the memory cgroup on current kernels; the limit
        // only matters on old ones, so failing to raise it is not fatal.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
            debug!("could not raise RLIMIT_MEMLOCK (not needed on kernels with memcg accounting)");
        }
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/fdtrace"
        )))
        .context("loading the eBPF programs into the kernel failed")?;
        let mut missing = Vec::new();
        let mut loaded = std::collections::HashSet::new();
        for &(prog, category, name, required) in ATTACH {
            if !Path::new(TRACEFS)
                .join("events")
                .join(category)
                .join(name)
                .exists()
            {
                if required {
                    bail!("tracepoint {category}:{name} does not exist on this kernel");
                }
                warn!("tracepoint {category}:{name} is not available on this kernel; skipped");
                missing.push(format!("{category}:{name}"));
                continue;
            }
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .with_context(|| format!("program {prog} missing from the eBPF object"))?
                .try_into()?;
            if loaded.insert(prog) {
                p.load()
                    .with_context(|| format!("the kernel rejected program {prog}"))?;
            }
            p.attach(category, name)
                .with_context(|| format!("attaching to {category}:{name} failed"))?;
        }
        Ok(Self { ebpf, missing })
    }

    /// Let this thread group's events through the in-kernel filter.
    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let mut targets: HashMap<_, u32, u32> =
            HashMap::try_from(self.ebpf.map_mut("TARGETS").context("TARGETS map")?)?;
        targets
            .insert(tgid, 1, 0)
            .context("adding the target to the filter")?;
        Ok(())
    }

    /// Take the ring buffer (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sum of a kernel counter over all CPUs.
    pub fn counter(&self, index: u32) -> u64 {
        let Some(map) = self.ebpf.map("STATS") else {
            return 0;
        };
        let Ok(stats) = PerCpuArray::<_, u64>::try_from(map) else {
            return 0;
        };
        stats
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or_default()
    }

    pub fn lost_events(&self) -> u64 {
        self.counter(stat::LOST_EVENTS)
    }

    pub fn stack_errors(&self) -> u64 {
        self.counter(stat::STACK_ERRORS)
    }

    pub fn pending_errors(&self) -> u64 {
        self.counter(stat::PENDING_ERRORS)
    }
}
