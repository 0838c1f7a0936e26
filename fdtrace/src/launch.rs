//! Starting a command so that it is traced from its first instruction: the child is forked,
//! waits until fdtrace has registered its pid with the kernel filter, and only then execs.
use std::{
    ffi::{CString, OsStr, OsString},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A forked child held before its exec.
pub struct Launched {
    pub pid: u32,
    /// The executable the child execs (the command resolved through PATH).
    pub program: PathBuf,
    go: libc::c_int,
    err: libc::c_int,
    reaped: bool,
    /// The wait status, once reaped.
    status: Option<libc::c_int>,
    /// fdtrace ended it (the session stopped first).
    ended_by_us: bool,
}

fn resolve(cmd: &OsStr) -> Result<PathBuf> {
    let p = PathBuf::from(cmd);
    if cmd.as_bytes().contains(&b'/') {
        if p.is_file() {
            return Ok(p);
        }
        bail!("cannot run {}: no such file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(cmd);
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!("cannot run {}: command not found in PATH", p.display())
}

fn pipe() -> Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    Ok((fds[0], fds[1]))
}

impl Launched {
    /// Fork `argv`; the child waits for [`Launched::release`] before it execs.
    /// Call this before any other thread exists.
    pub fn fork(argv: &[OsString]) -> Result<Self> {
        let prog = resolve(argv.first().context("no command given")?)?;
        let path = CString::new(prog.as_os_str().as_bytes())?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("argument contains a NUL byte")?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let (go_r, go_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the child only calls async-signal-safe functions (read, execv, write, _exit).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            unsafe {
                libc::close(go_w);
                libc::close(err_r);
                let mut b = 0u8;
                let n = libc::read(go_r, (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    libc::execv(path.as_ptr(), arg_ptrs.as_ptr());
                }
                let errno = *libc::__errno_location();
                libc::write(err_w, (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        // SAFETY: closing our copies of the child's ends.
        unsafe {
            libc::close(go_r);
            libc::close(err_w);
        }
        Ok(Self {
            pid: pid as u32,
            program: prog,
            go: go_w,
            err: err_r,
            reaped: false,
            status: None,
            ended_by_us: false,
        })
    }

    /// Let the child exec; returns an error if the exec failed.
    pub fn release(&mut self) -> Result<()> {
        let b = 1u8;
        // SAFETY: valid one-byte buffer; fds owned by self.
        unsafe {
            libc::write(self.go, (&b as *const u8).cast(), 1);
            libc::close(self.go);
        }
        self.go = -1;
        let mut errno = 0i32;
        // EOF (0 bytes) means the exec succeeded (the pipe was close-on-exec).
        let n = unsafe { libc::read(self.err, (&mut errno as *mut i32).cast(), 4) };
        unsafe { libc::close(self.err) };
        self.err = -1;
        if n == 4 {
            self.wait_blocking();
            bail!(
                "cannot run the command: {}",
                std::io::Error::from_raw_os_error(errno)
            );
        }
        Ok(())
    }

    /// Has the child exited? Reaps it if so.
    pub fn exited(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        if r == self.pid as i32 {
            self.status = Some(status);
        }
        if r == self.pid as i32 || r < 0 {
            self.reaped = true;
        }
        self.reaped
    }

    fn wait_blocking(&mut self) {
        let mut status = 0;
        // SAFETY: our own child.
        if unsafe { libc::waitpid(self.pid as i32, &mut status, 0) } == self.pid as i32 {
            self.status = Some(status);
        }
        self.reaped = true;
    }

    /// How the command ended, as a shell reports it: its exit code, or 128 + the signal that
    /// killed it. None while it runs, and when fdtrace ended it.
    pub fn exit_code(&self) -> Option<i32> {
        if self.ended_by_us {
            return None;
        }
        let st = self.status?;
        if libc::WIFEXITED(st) {
            Some(libc::WEXITSTATUS(st))
        } else if libc::WIFSIGNALED(st) {
            Some(128 + libc::WTERMSIG(st))
        } else {
            None
        }
    }

    /// End the child: SIGTERM, then SIGKILL after a grace period; always reaps it.
    pub fn terminate(&mut self) {
        if self.exited() {
            return;
        }
        self.ended_by_us = true;
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.wait_blocking();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.go >= 0 {
            // Never released: let the child's read fail so it exits without exec.
            unsafe { libc::close(self.go) };
        }
        self.terminate();
    }
}
