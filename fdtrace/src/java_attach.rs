//! Asking a HotSpot JVM (JDK 17+) for its perf map, as `jcmd PID Compiler.perfmap` does, through
//! the JVM's attach mechanism: a trigger file `.attach_pidNSPID` and SIGQUIT start its attach
//! listener, which answers on the UNIX socket `/tmp/.java_pidNSPID` in its own mount namespace
//! (reached through `/proc/PID/root`, so a container's JVM too). The JVM writes
//! `/tmp/perf-NSPID.map`, which `runtime::PerfMap` reads.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the JVM does not handle SIGQUIT (started with -Xrs?): not asked, it would stop")]
    NoSigquit,
    #[error("the JVM's attach listener did not start (-XX:+DisableAttachMechanism?)")]
    NoListener,
    #[error("talking to the JVM: {0}")]
    Io(#[from] std::io::Error),
    #[error("the JVM answered {0:?}")]
    Refused(String),
}

/// Does process `pid` catch SIGQUIT (the JVM does, unless started with `-Xrs`)? Sending it to a
/// process that does not would end it.
fn catches_sigquit(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGQUIT - 1)) != 0)
}

/// The JVM's attach socket, starting its listener first if needed.
fn connect(pid: u32) -> Result<UnixStream, AttachError> {
    let nspid = crate::procinfo::nspid(pid).unwrap_or(pid);
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let socket = root.join(format!("tmp/.java_pid{nspid}"));
    if let Ok(s) = UnixStream::connect(&socket) {
        return Ok(s);
    }
    if !catches_sigquit(pid) {
        return Err(AttachError::NoSigquit);
    }
    // The JVM looks for the trigger in its working directory, then in /tmp.
    let trigger = [
        PathBuf::from(format!("/proc/{pid}/cwd/.attach_pid{nspid}")),
        root.join(format!("tmp/.attach_pid{nspid}")),
    ]
    .into_iter()
    .find(|p| std::fs::File::create(p).is_ok())
    .ok_or(AttachError::NoListener)?;
    // SAFETY: kill has no memory preconditions; the process was checked to catch SIGQUIT.
    unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(3);
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&socket) {
            break Ok(s);
        }
        if Instant::now() > deadline {
            break Err(AttachError::NoListener);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&trigger);
    stream
}

/// Ask the JVM of `pid` to write its perf map (`Compiler.perfmap`), and wait for its answer.
pub fn request_perf_map(pid: u32) -> Result<(), AttachError> {
    let mut s = connect(pid)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    // Protocol 1: version, command, three arguments, each ending in NUL.
    s.write_all(b"1\0jcmd\0Compiler.perfmap\0\0\0")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    // "0\n" then the command's own output ("Command executed successfully" or an error).
    let mut lines = answer.lines();
    match lines.next() {
        Some("0") if !answer.contains("Exception") => Ok(()),
        _ => Err(AttachError::Refused(answer.trim().to_string())),
    }
}

/// The requests of one process: at most one at a time, in a thread of its own (the JVM may take
/// a while to write a large map), and at most one every `MIN_INTERVAL`. Only for a JVM whose
/// own structures fdtrace cannot read (`java_vm`): they name every Java frame, and asking
/// starts a thread in the JVM and leaves a file in its `/tmp`.
#[derive(Default)]
pub struct PerfMapRequests {
    is_java: Option<bool>,
    /// Could fdtrace read the JVM's own structures (None: not looked yet)?
    vm_readable: Option<bool>,
    last: Option<Instant>,
    running: Option<std::thread::JoinHandle<()>>,
}

const MIN_INTERVAL: Duration = Duration::from_secs(5);

impl PerfMapRequests {
    /// Ask, if `pid` is a JVM and the last request is done and old enough.
    pub fn request(&mut self, pid: u32) {
        if !self.needs_map(pid)
            || self.running.as_ref().is_some_and(|t| !t.is_finished())
            || self.last.is_some_and(|t| t.elapsed() < MIN_INTERVAL)
        {
            return;
        }
        self.last = Some(Instant::now());
        let first = self.running.is_none();
        self.running = Some(std::thread::spawn(move || match request_perf_map(pid) {
            Ok(()) if first => tracing::info!(
                "pid {pid}: asked the JVM for its perf map (as `jcmd {pid} Compiler.perfmap`; it writes /tmp/perf-{pid}.map)"
            ),
            Ok(()) => tracing::debug!("pid {pid}: the JVM's perf map written again"),
            Err(e) => tracing::warn!("pid {pid}: no Java names: {e}"),
        }));
    }

    /// Ask now and wait for the answer, if `pid` is a JVM: before tracing it, so the attach
    /// listener's own socket is not among the births and the code compiled so far is named
    /// from the first birth.
    pub fn request_now(&mut self, pid: u32) {
        if !self.is_java(pid) {
            return;
        }
        self.set_vm_readable(pid, crate::java_vm::JavaVm::find(pid).is_some());
        if !self.needs_map(pid) {
            return;
        }
        self.last = Some(Instant::now());
        match request_perf_map(pid) {
            Ok(()) => tracing::info!(
                "pid {pid}: asked the JVM for its perf map (as `jcmd {pid} Compiler.perfmap`; it writes /tmp/perf-{pid}.map)"
            ),
            Err(e) => tracing::warn!("pid {pid}: no Java names: {e}"),
        }
    }

    /// Whether fdtrace could read the JVM's structures (found when its first JIT frame is seen).
    pub fn set_vm_readable(&mut self, pid: u32, readable: bool) {
        if !readable && self.vm_readable.is_none() && self.is_java(pid) {
            tracing::info!(
                "pid {pid}: the JVM's structures cannot be read; its perf map names compiled methods"
            );
        }
        self.vm_readable = Some(readable);
    }

    /// A JVM whose structures fdtrace could not read.
    fn needs_map(&mut self, pid: u32) -> bool {
        self.vm_readable == Some(false) && self.is_java(pid)
    }

    fn is_java(&mut self, pid: u32) -> bool {
        *self.is_java.get_or_insert_with(|| {
            crate::runtime::of_exe(std::path::Path::new(&format!("/proc/{pid}/exe")))
                == Some(crate::runtime::Runtime::Java)
        })
    }

    /// Ask once, when the process is first seen (a JVM's compiled code is named from the
    /// start).
    pub fn first(&mut self, pid: u32) {
        if self.last.is_none() {
            self.request(pid);
        }
    }

    /// The process exec'd another program.
    pub fn reset(&mut self) {
        self.is_java = None;
        self.vm_readable = None;
        self.last = None;
    }
}
