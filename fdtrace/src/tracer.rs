//! Loading and attaching the eBPF programs; the target filter; the ring buffer; kernel counters.
use crate::go_runtime::{self, GoBinary};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use fdtrace_common::{
    FailKey, KernelLayout, PID_MAX_LIMIT, SOCK_MARK_BITS, TARGET_FLAGS_PER_ENTRY, stat,
};

use crate::attach::{self, HookChoice, Link, SetupTime};
use crate::hooks::{HookSet, TRACEFS, ensure_tracefs, field_offset, have_task_pt_regs};
use crate::kernel_layout::KernelTypes;
use tracing::{debug, warn};

/// Entries of `TARGET_FLAGS` for this kernel's `pid_max` (all ids when it cannot be read).
fn target_flag_entries() -> u32 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(PID_MAX_LIMIT)
        .clamp(1, PID_MAX_LIMIT);
    pid_max.div_ceil(TARGET_FLAGS_PER_ENTRY as u32)
}

/// The shift that leaves a socket's hash its slot in the kernel's `SOCK_MARKS`: all
/// `SOCK_MARK_BITS` bits, or as few as `FDTRACE_SOCK_MARK_BITS` asks (1 to 16: how the tests
/// make target sockets share slots, which the kernel's counts must get right).
fn sock_mark_shift() -> u32 {
    let Some(asked) = std::env::var_os("FDTRACE_SOCK_MARK_BITS") else {
        return 64 - SOCK_MARK_BITS;
    };
    match asked.to_str().and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(bits) if (1..=SOCK_MARK_BITS).contains(&bits) => 64 - bits,
        _ => {
            warn!(
                "FDTRACE_SOCK_MARK_BITS={}: not a number from 1 to {SOCK_MARK_BITS}; using {SOCK_MARK_BITS}",
                asked.to_string_lossy()
            );
            64 - SOCK_MARK_BITS
        }
    }
}

/// The loaded programs and their maps.
pub struct Tracer {
    ebpf: Ebpf,
    /// Every attachment, to detach them all at once at the end.
    links: Vec<(String, Link)>,
    /// Tracepoints that are missing on this kernel.
    pub missing: Vec<String>,
    /// The hook each event uses on this kernel, and why (`fdtrace hooks`).
    pub hooks: Vec<HookChoice>,
    /// How long loading and attaching the trampoline programs took.
    pub trampoline_time: SetupTime,
    /// The cgroups in the kernel's `CGROUPS` map.
    cgroups: std::collections::BTreeSet<u64>,
    /// Go binaries seen, by (device, inode), and whether their net/http probes are attached.
    go_binaries: std::collections::HashMap<(u64, u64), Option<GoBinary>>,
    /// Whether Go programs get the net/http probes (`--no-go-links` turns them off).
    pub go_links: bool,
    /// Files (a Node.js executable, a libuv library) looked at for libuv's TCP functions, by
    /// (device, inode), and whether the `uv_links` probes are attached to them.
    uv_files: std::collections::HashMap<(u64, u64), bool>,
}

/// The oldest kernel fdtrace runs on.
const MIN_KERNEL: aya::util::KernelVersion = aya::util::KernelVersion::new(5, 10, 0);

fn too_old(release: &str) -> String {
    format!("this kernel ({release}) is too old: fdtrace needs Linux 5.10 or newer")
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
    // The BPF ring buffer is 5.8; 5.10 is the oldest kernel the suite runs on (cargo xtask
    // vmtest). Older kernels would fail with a verifier dump; say so in one line instead.
    if let Ok(v) = aya::util::KernelVersion::current()
        && v < MIN_KERNEL
    {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        bail!("{}", too_old(release.trim()));
    }
    Ok(())
}

/// The eBPF object fdtrace loads (built from `fdtrace-ebpf`).
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fdtrace"))
}

impl Tracer {
    /// Load the embedded object with a ring buffer of `ring_bytes` (a power of two, a multiple
    /// of the page size) and attach every program.
    /// The syscall hooks are chosen as `FDTRACE_HOOKS` says (`HookSet::from_env`).
    pub fn load(ring_bytes: u32) -> Result<Self> {
        Self::load_for(ring_bytes, false, false, HookSet::from_env()?)
    }

    /// `load`, and with `cgroup`, every process of the cgroups v2 given to `set_cgroups` that
    /// makes a hooked syscall is traced from then on, announced by a `JOIN` record. With `deep`,
    /// the births of targets that ask for it (`capture::deep_copy`) bring their whole stack.
    /// `hooks`: which hooks the syscalls get (see `hooks.rs`).
    pub fn load_for(ring_bytes: u32, cgroup: bool, deep: bool, hooks: HookSet) -> Result<Self> {
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
        // Without the layout, sockets are still traced but carry no address or TCP state.
        let types = KernelTypes::load();
        // Where the main stack ends (`main_stack_end` in the eBPF side): 0 when not found.
        let (task_mm, mm_start_stack) = types
            .as_ref()
            .ok()
            .and_then(|t| {
                Some((
                    t.offset("task_struct", "mm").ok()?,
                    t.offset("mm_struct", "start_stack").ok()?,
                ))
            })
            .unwrap_or((0, 0));
        // No CO-RE relocations in our programs (kernel offsets come from KernelTypes), so aya
        // needs no kernel BTF. `EbpfLoader::new()` parses it all the same (aya 0.14 has no
        // loader without; ~18 MiB at its peak, 0.16 s here); `btf(None)` drops it, and
        // `memory::return_freed_memory` gives its pages back once set up.
        let mut ebpf = aya::EbpfLoader::new()
            .btf(None)
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("TARGET_FLAGS", target_flag_entries())
            .override_global("HAVE_TASK_PT_REGS", &u8::from(have_task_pt_regs()), true)
            // Every record asks for a wake-up once a quarter of the ring is unread.
            // (ring_bytes is a power of two).
            .override_global(
                "BEHIND_SHIFT",
                &(ring_bytes / 4).max(4096).trailing_zeros(),
                true,
            )
            // Births are sent without their stacks once half the ring is unread.
            .override_global("SHED_BYTES", &(ring_bytes as u64 / 2), true)
            .override_global("CGROUP_FILTER", &u8::from(cgroup), true)
            .override_global("OWN_TGID", &std::process::id(), true)
            .override_global("TASK_MM", &task_mm, true)
            .override_global("MM_START_STACK", &mm_start_stack, true)
            .override_global("SOCK_MARK_SHIFT", &sock_mark_shift(), true)
            .load(ebpf_object())
            .context("loading the eBPF programs into the kernel failed")?;
        let mut missing = Vec::new();
        // The `exit_regs_*` programs only on 5.15 and newer: older kernels keep the entry
        // programs for every birth (the combination the 5.10 VM suite checks).
        let regs = have_task_pt_regs();
        match types
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|t| t.layout())
        {
            Ok(mut layout) => {
                // Every member read on its own, as on a kernel laid out otherwise: how the
                // tests check that way on kernels where neighbours are read at once.
                if std::env::var_os("FDTRACE_LAYOUT_APART").is_some() {
                    layout.adjacent = 0;
                }
                let mut map: Array<_, KernelLayout> =
                    Array::try_from(ebpf.map_mut("LAYOUT").context("LAYOUT map")?)?;
                map.set(0, layout, 0).context("storing the kernel layout")?;
            }
            Err(e) => {
                warn!("socket addresses and TCP states are not available: {e:#}");
                missing.push("socket layout (BTF)".to_string());
            }
        }
        let attached = attach::attach_all(&mut ebpf, regs, deep, hooks, types)?;
        missing.extend(attached.missing);
        // The layout of sched_process_fork's record changed (comm arrays became strings).
        let fork_format = Path::new(TRACEFS).join("events/sched/sched_process_fork/format");
        if let Some(off) = field_offset(&fork_format, "child_pid") {
            let mut settings: Array<_, u32> =
                Array::try_from(ebpf.map_mut("SETTINGS").context("SETTINGS map")?)?;
            settings
                .set(fdtrace_common::setting::FORK_CHILD_PID, off, 0)
                .context("storing the fork record layout")?;
        }
        Ok(Self {
            ebpf,
            links: attached.links,
            missing,
            hooks: attached.choices,
            trampoline_time: attached.time,
            cgroups: Default::default(),
            go_binaries: Default::default(),
            go_links: true,
            uv_files: Default::default(),
        })
    }

    /// Detach every program. The kernel waits for an RCU grace period per tracepoint it
    /// unregisters; detaching from several threads lets those waits overlap (seconds otherwise).
    pub fn detach(&mut self) {
        let links: Vec<_> = self.links.drain(..).collect();
        attach::detach_links(&mut self.ebpf, links);
    }

    /// End tracing without waiting for the kernel: no process passes the filter any more, and
    /// the attachments are released by a child process that outlives this one. Unregistering a
    /// tracepoint costs an RCU grace period under a kernel-wide lock (4 to 7 s for all of them
    /// here, however many threads close them), which the user should not wait for once the
    /// report is out. Falls back to `detach` when no child can be made.
    pub fn release_in_background(&mut self) {
        if let Some(map) = self.ebpf.map_mut("TARGETS")
            && let Ok(mut targets) = HashMap::<_, u32, u32>::try_from(map)
        {
            let keys: Vec<u32> = targets.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = targets.remove(&k);
            }
        }
        // The attachments: bpf links (5.15+) or perf events with a program (older kernels).
        let mut links = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            for e in dir.flatten() {
                let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                match std::fs::read_link(e.path()) {
                    Ok(t) if t == Path::new("anon_inode:bpf_link") => links.push(fd),
                    Ok(t) if t == Path::new("anon_inode:[perf_event]") => links.push(fd),
                    _ => {}
                }
            }
        }
        if links.is_empty() {
            self.detach();
            return;
        }
        links.sort_unstable();
        // Every other descriptor, as ranges for close_range (5.9+): whatever is open at the
        // fork, a pipe or a metrics connection, must not be held open by the child.
        let mut gaps = Vec::new();
        let mut from = 0u32;
        for &fd in &links {
            if fd as u32 > from {
                gaps.push((from, fd as u32 - 1));
            }
            from = fd as u32 + 1;
        }
        gaps.push((from, u32::MAX));
        let parent = std::process::id() as i32;
        // SAFETY: the child calls only async-signal-safe functions (close_range, close, setsid, getppid,
        // nanosleep, _exit) on data prepared before the fork, then exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                for &(a, b) in &gaps {
                    libc::syscall(libc::SYS_close_range, a, b, 0);
                }
                libc::setsid();
                // Wait for this process to exit, so that the child holds the last reference
                // to every attachment and pays for releasing it.
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                for _ in 0..500 {
                    if libc::getppid() != parent {
                        break;
                    }
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
                for &fd in &links {
                    libc::close(fd);
                }
                libc::_exit(0)
            },
            -1 => self.detach(),
            child => debug!("attachments released by pid {child}"),
        }
    }

    /// Let this thread group's events through the in-kernel filter, capturing its stacks as
    /// `capture` says (`fdtrace_common::capture::STACK_COPY` or `FRAME_POINTERS`). Calling it
    /// again for a traced process changes how its stacks are captured.
    pub fn add_target(&mut self, tgid: u32, capture: u16) -> Result<()> {
        // The flag in front of TARGETS first (see fdtrace-ebpf): once the process is in TARGETS,
        // every program, `sched_fork` included, must find its flag set, or a child it forks
        // right then would not be followed. Writing a whole entry could only undo a flag the
        // kernel sets at that moment for a child of a target among the same 64 ids: none when
        // the first target is added, and a traced process added again (exec) already has its
        // flag, so nothing is written then.
        let mut flags: Array<_, [u8; TARGET_FLAGS_PER_ENTRY]> = Array::try_from(
            self.ebpf
                .map_mut("TARGET_FLAGS")
                .context("TARGET_FLAGS map")?,
        )?;
        let (index, byte) = (
            tgid / TARGET_FLAGS_PER_ENTRY as u32,
            tgid as usize % TARGET_FLAGS_PER_ENTRY,
        );
        // Beyond the map (pid_max was raised): the kernel checks TARGETS alone for this id.
        if let Ok(mut entry) = flags.get(&index, 0)
            && entry[byte] == 0
        {
            entry[byte] = 1;
            flags
                .set(index, entry, 0)
                .context("adding the target to the filter")?;
        }
        let value = if capture == fdtrace_common::capture::FRAME_POINTERS {
            self.go_target_value(tgid, capture)
        } else {
            u32::from(capture)
        };
        if fdtrace_common::capture::chunks(value) > 0 {
            self.attach_uv_probes(tgid);
        }
        let mut targets: HashMap<_, u32, u32> =
            HashMap::try_from(self.ebpf.map_mut("TARGETS").context("TARGETS map")?)?;
        targets
            .insert(tgid, value, 0)
            .context("adding the target to the filter")?;
        Ok(())
    }

    /// The `TARGETS` value of a process whose stacks are walked by frame pointers: with the
    /// layout of its goroutines when it runs Go, whose net/http probes are attached then (once
    /// per binary, for every process running it: the kernel's filter picks the targets).
    fn go_target_value(&mut self, tgid: u32, capture: u16) -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        let exe = PathBuf::from(format!("/proc/{tgid}/exe"));
        let Ok(meta) = std::fs::metadata(&exe) else {
            return u32::from(capture);
        };
        let key = (meta.dev(), meta.ino());
        if !self.go_binaries.contains_key(&key) {
            let go = go_runtime::inspect(&exe);
            if let Some(g) = &go {
                debug!(
                    "pid {tgid}: Go {:?}, runtime.g layout {:?}, net/http probes at {:?}/{:?}",
                    g.version, g.layout, g.request, g.dial
                );
                if g.layout.is_some() && self.go_links {
                    self.attach_go_probes(&exe, g);
                }
            }
            self.go_binaries.insert(key, go);
        }
        match &self.go_binaries[&key] {
            Some(g) => g.target_value(capture),
            None => u32::from(capture),
        }
    }

    /// The probes of `go_links` on one Go binary. Without them (no symbol table, or the kernel
    /// refused them) the sockets net/http dials keep their own stacks only.
    fn attach_go_probes(&mut self, exe: &Path, go: &GoBinary) {
        for (prog, off) in [("go_request", go.request), ("go_dial", go.dial)] {
            let Some(off) = off else {
                debug!(
                    "{}: no {prog} probe point (no symbol table?)",
                    exe.display()
                );
                continue;
            };
            let res = self.attach_uprobe(prog, exe, off);
            if let Err(e) = res {
                warn!("{}: the {prog} probe failed: {e:#}", exe.display());
            }
        }
    }

    /// A language runtime's process: if it runs libuv (Node.js, in its executable or a
    /// `libuv.so`), the probes of `uv_links` on that file (once per file, for every process
    /// running it: the kernel's filter picks the targets). Without them, a socket Node.js
    /// connects in a later tick has Node's frames only.
    fn attach_uv_probes(&mut self, tgid: u32) {
        use std::os::unix::fs::MetadataExt as _;
        let mut files = vec![PathBuf::from(format!("/proc/{tgid}/exe"))];
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) {
            let mut libs: Vec<&str> = maps
                .lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .filter(|p| {
                    p.rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with("libuv.so"))
                })
                .collect();
            libs.dedup();
            files.extend(
                libs.iter()
                    .map(|p| PathBuf::from(format!("/proc/{tgid}/root{p}"))),
            );
        }
        for file in files {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            if self.uv_files.contains_key(&key) {
                continue;
            }
            let progs = ["uv_tcp_init", "uv_tcp_connect"];
            let offsets = crate::elf_symbols::function_offsets(&file, &progs);
            let mut attached = false;
            if let [Some(init), Some(connect)] = offsets[..] {
                attached = true;
                for (prog, off) in progs.into_iter().zip([init, connect]) {
                    if let Err(e) = self.attach_uprobe(prog, &file, off) {
                        warn!("{}: the {prog} probe failed: {e:#}", file.display());
                        attached = false;
                    }
                }
                debug!(
                    "pid {tgid}: libuv in {} (uv_tcp_init at {init:#x}, uv_tcp_connect at {connect:#x}): probes {}",
                    file.display(),
                    if attached { "attached" } else { "failed" }
                );
            }
            self.uv_files.insert(key, attached);
        }
    }

    /// Attach the uprobe program `prog` to every process running `file`, at `offset` in it.
    fn attach_uprobe(&mut self, prog: &str, file: &Path, offset: u64) -> Result<()> {
        use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
        let p: &mut aya::programs::UProbe = self
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("no {prog} program"))?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        p.attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            file,
            UProbeScope::AllProcesses,
        )?;
        Ok(())
    }

    /// Stop letting this thread group's events through (it exited).
    pub fn remove_target(&mut self, tgid: u32) {
        if let Some(map) = self.ebpf.map_mut("TARGETS")
            && let Ok(mut targets) = HashMap::<_, u32, u32>::try_from(map)
        {
            let _ = targets.remove(&tgid);
        }
        let _ = self.set_python(tgid, None);
    }

    /// Where the CPython interpreter of `tgid` keeps its frames (None: it has none any more).
    /// Without the deep programs loaded (no runtime among the targets), nothing to tell.
    pub fn set_python(
        &mut self,
        tgid: u32,
        layout: Option<fdtrace_common::PyLayout>,
    ) -> Result<()> {
        let Some(map) = self.ebpf.map_mut("PY_PROCS") else {
            return Ok(());
        };
        let mut map: HashMap<_, u32, fdtrace_common::PyLayout> = HashMap::try_from(map)?;
        match layout {
            Some(l) => map
                .insert(tgid, l, 0)
                .context("telling the kernel where Python's frames are")?,
            None => {
                let _ = map.remove(&tgid);
            }
        }
        Ok(())
    }

    /// The cgroups whose processes the kernel adopts (with `load_for(_, true)`): the traced
    /// cgroup and those below it, by id. Only the changes are written.
    pub fn set_cgroups(&mut self, ids: &std::collections::BTreeSet<u64>) -> Result<()> {
        if *ids == self.cgroups {
            return Ok(());
        }
        let mut map: HashMap<_, u64, u8> =
            HashMap::try_from(self.ebpf.map_mut("CGROUPS").context("CGROUPS map")?)?;
        for id in ids.difference(&self.cgroups) {
            map.insert(id, 1, 0)
                .context("adding a cgroup to the filter")?;
        }
        for id in self.cgroups.difference(ids) {
            let _ = map.remove(id);
        }
        self.cgroups = ids.clone();
        Ok(())
    }

    /// Trace the children of traced processes too (`-f`).
    pub fn set_follow(&mut self, follow: bool) -> Result<()> {
        let mut settings: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut("SETTINGS").context("SETTINGS map")?)?;
        settings
            .set(fdtrace_common::setting::FOLLOW, u32::from(follow), 0)
            .context("storing the follow setting")?;
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

    pub fn sock_errors(&self) -> u64 {
        self.counter(stat::SOCK_ERRORS)
    }

    pub fn pending_errors(&self) -> u64 {
        self.counter(stat::PENDING_ERRORS)
    }

    /// The kernel's exact counts of failed births ("too many open files"), per process,
    /// syscall and errno, summed over the CPUs. Only some of them came as records (with stacks).
    pub fn failure_counts(&self) -> Vec<(FailKey, u64)> {
        let Some(map) = self.ebpf.map("FAILURES") else {
            return Vec::new();
        };
        let Ok(counts) = PerCpuHashMap::<_, FailKey, u64>::try_from(map) else {
            return Vec::new();
        };
        counts
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k, v.iter().sum()))
            .collect()
    }
}
