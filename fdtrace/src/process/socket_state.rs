//! A traced process's sockets: their addresses (bind, connect) and TCP states, recorded as
//! they change, and those it held before tracing began.
use super::*;
use crate::endpoint::Endpoint;

/// The fewest entries of a process's socket index (`State::socks`) pruned at once.
pub(super) const SOCKS_PRUNE_MIN: usize = 64;

impl State {
    /// `fd` refers to kernel socket `sk` from now on (before the birth enters the table).
    /// Entries leave the index at the socket's next state change that finds no descriptor
    /// still referring to it; the kernel sends none for a socket its last close released (it
    /// forgets the socket there), so the index is also pruned of such entries whenever it has
    /// grown to twice its size after the last pruning (amortized, a constant cost per socket),
    /// and an address the kernel reuses for a new socket drops the descriptors of the old one.
    pub(super) fn index_socket(&mut self, sk: u64, fd: i32) {
        if self.socks.len() >= self.socks_prune_at {
            let table = &self.table;
            self.socks.retain(|&sk, fds| {
                fds.retain(|&mut fd| {
                    table
                        .get(fd)
                        .and_then(|e| e.sock.as_ref())
                        .is_some_and(|s| s.sk == sk)
                });
                !fds.is_empty()
            });
            self.socks_prune_at = (2 * self.socks.len()).max(SOCKS_PRUNE_MIN);
        }
        // The kernel reuses a freed socket's address for a later one, and no state change told
        // the index that the earlier one's descriptors were closed (the last close's is not
        // sent): only the descriptors that still refer to this socket stay (dups of it), so an
        // address a server's connections keep reusing holds one entry, not one per connection.
        let table = &self.table;
        let fds = self.socks.entry(sk).or_default();
        fds.retain(|&mut f| {
            f != fd
                && table
                    .get(f)
                    .and_then(|e| e.sock.as_ref())
                    .is_some_and(|s| s.sk == sk)
        });
        fds.push(fd);
    }

    /// Log what is known of socket `fd` now.
    pub(super) fn log_socket(&mut self, fd: i32, ts_ns: u64) {
        if self.log.is_none() {
            return;
        }
        if let Some(s) = self.table.get(fd).and_then(|e| e.sock.clone()) {
            self.log(crate::recorder::sock_record(self.pid, fd, ts_ns, &s));
        }
    }

    /// Sockets open before tracing began: addresses and TCP state from /proc/PID/net, read at
    /// attach (`all`) and again at each reconciliation for the TCP sockets whose state may
    /// still change (their state changes are not traced). A listening socket stays listening,
    /// and reading /proc/PID/net/tcp costs the consumer dearly on a busy server (it lists every
    /// TIME_WAIT connection): a server whose only pre-existing socket listens never reads it
    /// again.
    pub(super) fn describe_preexisting_sockets(&mut self, all: bool) {
        let pre: Vec<(i32, u64)> = self
            .table
            .iter()
            .filter(|(_, e)| e.origin == Origin::Preexisting && e.kind == FdKind::Socket)
            .filter(|(_, e)| all || e.sock.as_deref().is_some_and(sockets::state_may_change))
            .filter_map(|(fd, e)| Some((fd, sockets::socket_inode(&e.target)?)))
            .collect();
        if pre.is_empty() {
            return;
        }
        let known = sockets::proc_net_sockets(self.pid);
        for (fd, inode) in pre {
            if let (Some(e), Some(s)) = (self.table.get_mut(fd), known.get(&inode))
                && e.sock.as_deref() != Some(s)
            {
                e.sock = Some(Box::new(s.clone()));
                self.log_socket(fd, monotonic_ns());
            }
        }
    }

    /// A successful bind (local address) or connect (peer address).
    pub(super) fn on_sock_addr(&mut self, ts_ns: u64, fd: i32, op: u32, addr: &[u8]) {
        self.update_sock_addr(fd, op, addr);
        self.log_socket(fd, ts_ns);
    }

    pub(super) fn update_sock_addr(&mut self, fd: i32, op: u32, addr: &[u8]) {
        let Some((family, text)) = sockets::parse_sockaddr(addr) else {
            return;
        };
        let Some(e) = self.table.get_mut(fd) else {
            return;
        };
        let s = e.sock.get_or_insert_with(|| {
            Box::new(SocketInfo {
                family,
                ..SocketInfo::default()
            })
        });
        if op == fdtrace_common::SOCK_OP_BIND {
            s.local = Some(text);
        } else if family != sockets::AF_UNIX || s.peer.is_none() {
            s.peer = Some(text);
        }
    }

    /// A TCP state change: applies to every descriptor still referring to that socket.
    pub(super) fn on_sock_state(&mut self, ev: &fdtrace_common::SockStateEvent) {
        let Some(fds) = self.socks.get_mut(&ev.sk) else {
            return;
        };
        let table = &mut self.table;
        // Once per change, whichever descriptors refer to the socket.
        let local = Endpoint::inet(ev.family, &ev.saddr, ev.sport);
        let peer = Endpoint::inet(ev.family, &ev.daddr, ev.dport);
        fds.retain(|&mut fd| {
            let Some(s) = table
                .get_mut(fd)
                .and_then(|e| e.sock.as_mut())
                .filter(|s| s.sk == ev.sk)
            else {
                return false;
            };
            s.set_state(ev.newstate as u8, ev.hdr.ts_ns, local.clone(), peer.clone());
            true
        });
        if fds.is_empty() {
            self.socks.remove(&ev.sk);
        } else if self.log.is_some() {
            for fd in fds.clone() {
                self.log_socket(fd, ev.hdr.ts_ns);
            }
        }
    }
}
