//! The model checked against `/proc/PID/fd`: a difference seen twice in a row is drift,
//! corrected and recorded.
use super::*;

impl State {
    /// Compare the model with /proc/PID/fd. A difference seen at two checks in a row is not an
    /// event in flight: it is drift, counted and corrected (the model takes the kernel's word).
    pub fn reconcile(&mut self) {
        let Ok(fds) = procinfo::fds(self.pid) else {
            return;
        };
        self.rlimit = procinfo::nofile_limit(self.pid).or(self.rlimit);
        self.describe_preexisting_sockets(false);
        let mut now: foldhash::HashMap<i32, bool> = Default::default();
        for p in &fds {
            if self.table.get(p.fd).is_none() {
                now.insert(p.fd, true);
            }
        }
        // `fds` is in descriptor order: a search, not a scan (a process may hold 100,000).
        let in_proc = |fd: i32| fds.binary_search_by_key(&fd, |p| p.fd).ok();
        for (fd, _) in self.table.iter() {
            if in_proc(fd).is_none() {
                now.insert(fd, false);
            }
        }
        for (&fd, &missed_open) in &now {
            if self.suspects.get(&fd) != Some(&missed_open) || self.touched.get(fd).is_some() {
                continue;
            }
            if missed_open {
                if let Some(p) = in_proc(fd).map(|i| &fds[i]) {
                    warn!(
                        "pid {}: fd {fd} ({}) opened without a traced birth",
                        self.pid, p.target
                    );
                    self.change(Record::Untraced {
                        ts_ns: monotonic_ns(),
                        tgid: self.pid,
                        fd,
                        kind: p.kind.code(),
                        cloexec: p.cloexec,
                        target: p.target.clone(),
                    });
                }
            } else {
                warn!("pid {}: fd {fd} closed without a traced close", self.pid);
                self.change(Record::DriftClose {
                    ts_ns: monotonic_ns(),
                    tgid: self.pid,
                    fd,
                });
            }
        }
        now.retain(|fd, missed_open| {
            // Corrected entries are no longer suspects.
            self.table.get(*fd).is_some() != *missed_open
        });
        self.suspects = now;
        self.touched.clear();
    }
}
