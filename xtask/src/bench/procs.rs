//! Processes the bench starts and ends (their own process groups, ended by id, every wait with a
//! timeout), temporary directories and sysctls restored on drop.
use super::*;

/// On Ctrl-C (or SIGTERM, SIGHUP), end every process group the bench started and let the
/// run unwind: no new process starts, the guards remove the temporary directory and restore
/// sysctls, and no report is written.
pub(super) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only uses atomics and kill().
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(super) fn register_group(pgid: i32) {
    for g in &GROUPS {
        if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

pub(super) fn unregister_group(pgid: i32) {
    for g in &GROUPS {
        let _ = g.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A started process (leader of its own process group) with its output read line by line.
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) what: String,
    pub(super) lines: Receiver<(bool, String)>,
    pub(super) stdout: Vec<String>,
    pub(super) stderr: Vec<String>,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) status: Option<ExitStatus>,
}

/// What a finished process printed.
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Proc {
    /// Start `cmd` in a new process group, stdout and stderr piped, stdin piped when asked
    /// (otherwise /dev/null).
    pub(super) fn start(cmd: &mut Command, what: &str, with_stdin: bool) -> Result<Self> {
        if interrupted() {
            bail!("interrupted");
        }
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {what}: {cmd:?}"))?;
        register_group(child.id() as i32);
        let (tx, rx) = channel();
        for (is_err, stream) in [
            (
                false,
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                true,
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            what: what.to_string(),
            lines: rx,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdin,
            status: None,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn take_line(&mut self, timeout: Duration) -> Option<(bool, String)> {
        match self.lines.recv_timeout(timeout) {
            Ok((is_err, line)) => {
                if is_err {
                    self.stderr.push(line.clone());
                } else {
                    self.stdout.push(line.clone());
                }
                Some((is_err, line))
            }
            Err(_) => None,
        }
    }

    /// Wait for a line of stdout starting with `prefix`.
    pub(super) fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((false, line)) = self.take_line(Duration::from_millis(50))
                && line.starts_with(prefix)
            {
                return Ok(line);
            }
            if self.exited() {
                // Output may still be in the pipe.
                while let Some((is_err, line)) = self.take_line(Duration::from_millis(200)) {
                    if !is_err && line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                bail!(
                    "{} exited ({}) before printing `{prefix}`: {}",
                    self.what,
                    self.status.map(|s| s.to_string()).unwrap_or_default(),
                    self.stderr_tail()
                );
            }
        }
        bail!(
            "{} did not print `{prefix}` within {timeout:?}: {}",
            self.what,
            self.stderr_tail()
        )
    }

    pub(super) fn send_line(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
        }
    }

    pub(super) fn exited(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.status = Some(s);
        }
        self.status.is_some()
    }

    pub(super) fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: signalling our own child, which is not reaped yet.
            unsafe { libc::kill(self.pid() as i32, sig) };
        }
    }

    /// Signal the whole process group (our child leads it).
    pub(super) fn signal_group(&self, sig: i32) {
        // SAFETY: the group was created for this child; the leader is ours.
        unsafe { libc::kill(-(self.pid() as i32), sig) };
    }

    pub(super) fn stderr_tail(&self) -> String {
        let n = self.stderr.len();
        self.stderr[n.saturating_sub(5)..].join(" | ")
    }

    /// Wait for the process to exit by itself; after `timeout` it is ended and this fails.
    pub(super) fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "{} did not finish within {timeout:?} and was ended: {}",
                    self.what,
                    self.stderr_tail()
                );
            }
            let _ = self.take_line(Duration::from_millis(20));
        }
        // Anything left in the group (a child the leader did not wait for) goes too.
        self.signal_group(libc::SIGKILL);
        unregister_group(self.pid() as i32);
        // The rest of the output.
        let drain_deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < drain_deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok((true, l)) => self.stderr.push(l),
                Ok((false, l)) => self.stdout.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        Ok(Finished {
            status: self.status.expect("exited"),
            stdout: std::mem::take(&mut self.stdout).join("\n"),
            stderr: std::mem::take(&mut self.stderr).join("\n"),
        })
    }

    /// End the process group: SIGTERM, then SIGKILL after a grace period.
    pub(super) fn stop(&mut self) {
        self.stdin = None;
        if !self.exited() {
            self.signal_group(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while !self.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !self.exited() {
                self.signal_group(libc::SIGKILL);
                if let Ok(s) = self.child.wait() {
                    self.status = Some(s);
                }
            }
        }
        self.signal_group(libc::SIGKILL);
        unregister_group(self.pid() as i32);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.stop();
        }
    }
}

/// A directory removed when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("fdtrace-bench.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets a sysctl file and restores its value when dropped.
pub(super) struct Sysctl {
    pub(super) path: &'static str,
    pub(super) old: String,
}

impl Sysctl {
    pub(super) fn set(path: &'static str, value: &str) -> Result<Self> {
        let old = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Self {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}
