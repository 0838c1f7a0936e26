//! What fdtrace knows of a socket descriptor: family, type, addresses and TCP state (pure).
use fdtrace_common::SockInfo;

use crate::endpoint::Endpoint;

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_NETLINK: u16 = 16;

const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;
const SOCK_SEQPACKET: u16 = 5;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LISTEN: u8 = 10;
}

/// Whether a socket seen in /proc/PID/net may be in another state later: a TCP socket that is
/// not listening (a listening socket leaves that state only by being closed).
pub fn state_may_change(s: &SocketInfo) -> bool {
    s.is_tcp() && s.state != Some(tcp::LISTEN)
}

/// Name of a TCP state, as `ss` prints it.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Decode a `struct sockaddr` as passed to bind/connect: (family, address). Unix paths show
/// as they are, abstract names with a leading `@` (as `ss` does).
pub fn parse_sockaddr(bytes: &[u8]) -> Option<(u16, Endpoint)> {
    if bytes.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    match family {
        AF_INET if bytes.len() >= 8 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&bytes[4..8]);
            Some((family, Endpoint::inet(family, &a, port)?))
        }
        AF_INET6 if bytes.len() >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let a: [u8; 16] = bytes[8..24].try_into().ok()?;
            Some((family, Endpoint::inet(family, &a, port)?))
        }
        AF_UNIX => {
            let path = &bytes[2..];
            if path.is_empty() {
                return None;
            }
            if path[0] == 0 {
                // Abstract: every byte of the given length is part of the name.
                let name = &path[1..];
                let end = name.len() - name.iter().rev().take_while(|&&b| b == 0).count();
                Some((
                    family,
                    Endpoint::Text(format!("@{}", String::from_utf8_lossy(&name[..end]))),
                ))
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                Some((
                    family,
                    Endpoint::Text(String::from_utf8_lossy(&path[..end]).into_owned()),
                ))
            }
        }
        _ => None,
    }
}

/// One socket as the model knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketInfo {
    /// Kernel `struct sock` address (0 when unknown): joins TCP state events.
    pub sk: u64,
    pub family: u16,
    pub sk_type: u16,
    pub protocol: u16,
    pub local: Option<Endpoint>,
    pub peer: Option<Endpoint>,
    /// TCP state, when known.
    pub state: Option<u8>,
    /// Monotonic time the socket entered `state` (None when it was already in it when seen).
    pub state_since_ns: Option<u64>,
    /// Came from accept: the server side of a connection.
    pub accepted: bool,
}

impl SocketInfo {
    /// From what the kernel said at the descriptor's birth.
    pub fn from_kernel(k: &SockInfo, birth_ns: u64) -> Self {
        let is_tcp = (k.family == AF_INET || k.family == AF_INET6)
            && (k.protocol == IPPROTO_TCP || (k.protocol == 0 && k.sk_type == SOCK_STREAM));
        Self {
            sk: k.sk,
            family: k.family,
            sk_type: k.sk_type,
            protocol: k.protocol,
            local: Endpoint::inet(k.family, &k.laddr, k.lport),
            peer: Endpoint::inet(k.family, &k.raddr, k.rport),
            state: (is_tcp && k.state != 0).then_some(k.state as u8),
            state_since_ns: (is_tcp && k.state != 0).then_some(birth_ns),
            accepted: false,
        }
    }

    /// The peer without its port: accepted connections come from ephemeral ports, so they
    /// are told apart by host.
    pub fn peer_host(&self) -> Option<String> {
        Some(self.peer.as_ref()?.host(self.family == AF_UNIX))
    }

    /// The local address as shown.
    pub fn local_text(&self) -> Option<String> {
        self.local.as_ref().map(Endpoint::to_string)
    }

    /// The peer address as shown.
    pub fn peer_text(&self) -> Option<String> {
        self.peer.as_ref().map(Endpoint::to_string)
    }

    pub fn is_tcp(&self) -> bool {
        (self.family == AF_INET || self.family == AF_INET6)
            && (self.protocol == IPPROTO_TCP || self.sk_type == SOCK_STREAM)
    }

    /// `tcp`, `udp6`, `unix-stream`, …
    pub fn proto_name(&self) -> String {
        let v6 = if self.family == AF_INET6 { "6" } else { "" };
        match self.family {
            AF_INET | AF_INET6 => match (self.protocol, self.sk_type) {
                (IPPROTO_TCP, _) | (_, SOCK_STREAM) => format!("tcp{v6}"),
                (IPPROTO_UDP, _) | (_, SOCK_DGRAM) => format!("udp{v6}"),
                (p, _) => format!("ip{v6}/{p}"),
            },
            AF_UNIX => match self.sk_type {
                SOCK_STREAM => "unix-stream".into(),
                SOCK_DGRAM => "unix-dgram".into(),
                SOCK_SEQPACKET => "unix-seqpacket".into(),
                _ => "unix".into(),
            },
            AF_NETLINK => "netlink".into(),
            0 => "socket".into(),
            f => format!("socket/af{f}"),
        }
    }

    pub fn state_name(&self) -> Option<&'static str> {
        self.state.map(tcp_state_name)
    }

    /// One line, like `tcp 127.0.0.1:40312 -> 127.0.0.1:8081 CLOSE_WAIT`.
    pub fn describe(&self) -> String {
        let mut s = self.proto_name();
        match (&self.local, &self.peer) {
            (Some(l), Some(p)) => s += &format!(" {l} -> {p}"),
            (Some(l), None) => s += &format!(" {l}"),
            (None, Some(p)) => s += &format!(" -> {p}"),
            (None, None) => {}
        }
        if let Some(st) = self.state_name() {
            s += " ";
            s += st;
        }
        s
    }

    /// A TCP state change of this socket, with the addresses the kernel reported with it.
    pub fn set_state(
        &mut self,
        state: u8,
        ts_ns: u64,
        local: Option<Endpoint>,
        peer: Option<Endpoint>,
    ) {
        if self.state != Some(state) {
            self.state = Some(state);
            self.state_since_ns = Some(ts_ns);
        }
        // A connecting socket gets its local port only after SYN_SENT; keep the best known.
        if let Some(l) = local
            && l.port() != Some(0)
            && self.local.as_ref() != Some(&l)
        {
            self.local = Some(l);
        }
        if let Some(p) = peer
            && self.peer.as_ref() != Some(&p)
        {
            self.peer = Some(p);
        }
    }
}

/// Sockets of a network namespace as `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` list them, by
/// inode: what is known of sockets that were open before tracing began.
pub fn proc_net_sockets(pid: u32) -> std::collections::HashMap<u64, SocketInfo> {
    let mut out = std::collections::HashMap::new();
    for (file, family, sk_type, protocol) in [
        ("tcp", AF_INET, SOCK_STREAM, IPPROTO_TCP),
        ("tcp6", AF_INET6, SOCK_STREAM, IPPROTO_TCP),
        ("udp", AF_INET, SOCK_DGRAM, IPPROTO_UDP),
        ("udp6", AF_INET6, SOCK_DGRAM, IPPROTO_UDP),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for (inode, s) in parse_proc_net_inet(&text, family, sk_type, protocol) {
            out.insert(inode, s);
        }
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
        out.extend(parse_proc_net_unix(&text));
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6, four host-order words) and a port.
fn parse_hex_endpoint(family: u16, text: &str) -> Option<Endpoint> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut a = [0u8; 16];
    match family {
        AF_INET => a[..4].copy_from_slice(&u32::from_str_radix(addr, 16).ok()?.to_ne_bytes()),
        _ => {
            if addr.len() != 32 {
                return None;
            }
            for w in 0..4 {
                let word = u32::from_str_radix(&addr[w * 8..w * 8 + 8], 16).ok()?;
                a[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
        }
    }
    Endpoint::inet(family, &a, port)
}

fn parse_proc_net_inet(
    text: &str,
    family: u16,
    sk_type: u16,
    protocol: u16,
) -> Vec<(u64, SocketInfo)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let tcp = protocol == IPPROTO_TCP;
            Some((
                inode,
                SocketInfo {
                    family,
                    sk_type,
                    protocol,
                    local: parse_hex_endpoint(family, f.get(1)?),
                    peer: parse_hex_endpoint(family, f.get(2)?),
                    // UDP's "state" column is not a TCP state.
                    state: tcp.then_some(state),
                    ..SocketInfo::default()
                },
            ))
        })
        .collect()
}

fn parse_proc_net_unix(text: &str) -> Vec<(u64, SocketInfo)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sk_type = u16::from_str_radix(f.get(4)?, 16).ok()?;
            let inode: u64 = f.get(6)?.parse().ok()?;
            Some((
                inode,
                SocketInfo {
                    family: AF_UNIX,
                    sk_type,
                    local: f.get(7).map(|p| Endpoint::Text(p.to_string())),
                    ..SocketInfo::default()
                },
            ))
        })
        .collect()
}

/// The inode of a `socket:[123]` link.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn ipv4_and_ipv6_addresses() {
        assert_eq!(
            parse_sockaddr(&sockaddr_in([127, 0, 0, 1], 8081)),
            Some((AF_INET, "127.0.0.1:8081".into()))
        );
        let mut b = vec![0u8; 28];
        b[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        b[2..4].copy_from_slice(&443u16.to_be_bytes());
        b[23] = 1;
        assert_eq!(parse_sockaddr(&b), Some((AF_INET6, "[::1]:443".into())));
        // What they show (every address: `endpoint.rs`).
        let (_, e) = parse_sockaddr(&b).unwrap();
        assert_eq!(e.to_string(), "[::1]:443");
    }

    #[test]
    fn unix_paths_and_abstract_names() {
        let mut b = AF_UNIX.to_ne_bytes().to_vec();
        b.extend_from_slice(b"/run/x.sock\0\0\0");
        assert_eq!(
            parse_sockaddr(&b),
            Some((AF_UNIX, Endpoint::Text("/run/x.sock".into())))
        );
        let mut b = AF_UNIX.to_ne_bytes().to_vec();
        b.extend_from_slice(b"\0hidden");
        assert_eq!(
            parse_sockaddr(&b),
            Some((AF_UNIX, Endpoint::Text("@hidden".into())))
        );
        assert_eq!(parse_sockaddr(&AF_UNIX.to_ne_bytes()), None);
        assert_eq!(parse_sockaddr(&[1]), None);
        assert_eq!(parse_sockaddr(&[99, 0, 1, 2]), None);
    }

    #[test]
    fn state_changes_keep_the_best_addresses() {
        let k = SockInfo {
            sk: 0xffff_1234,
            family: AF_INET,
            sk_type: SOCK_STREAM,
            protocol: IPPROTO_TCP,
            state: tcp::CLOSE as u16,
            ..SockInfo::default()
        };
        let mut s = SocketInfo::from_kernel(&k, 5);
        assert_eq!(s.describe(), "tcp CLOSE");
        s.set_state(
            tcp::SYN_SENT,
            10,
            Some("0.0.0.0:0".into()),
            Some("127.0.0.1:8081".into()),
        );
        s.set_state(
            tcp::ESTABLISHED,
            11,
            Some("127.0.0.1:40000".into()),
            Some("127.0.0.1:8081".into()),
        );
        s.set_state(tcp::CLOSE_WAIT, 20, None, None);
        assert_eq!(
            s.describe(),
            "tcp 127.0.0.1:40000 -> 127.0.0.1:8081 CLOSE_WAIT"
        );
        assert_eq!(s.state_since_ns, Some(20));
        // The same state again does not reset its age.
        s.set_state(tcp::CLOSE_WAIT, 30, None, None);
        assert_eq!(s.state_since_ns, Some(20));
    }

    #[test]
    fn peer_host_drops_the_port() {
        let mut s = SocketInfo {
            family: AF_INET6,
            peer: Some("[::1]:44080".into()),
            ..Default::default()
        };
        assert_eq!(s.peer_host().as_deref(), Some("[::1]"));
        s.family = AF_INET;
        s.peer = Some("10.0.0.5:80".into());
        assert_eq!(s.peer_host().as_deref(), Some("10.0.0.5"));
        s.family = AF_UNIX;
        s.peer = Some("/run/a:1".into());
        assert_eq!(s.peer_host().as_deref(), Some("/run/a:1"));
    }

    #[test]
    fn proc_net_lines() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:9C40 08 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n";
        let got = parse_proc_net_inet(tcp, AF_INET, SOCK_STREAM, IPPROTO_TCP);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 4242);
        assert_eq!(
            got[0].1.describe(),
            "tcp 127.0.0.1:8080 -> 127.0.0.1:40000 CLOSE_WAIT"
        );
        let tcp6 = "header\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let got = parse_proc_net_inet(tcp6, AF_INET6, SOCK_STREAM, IPPROTO_TCP);
        assert_eq!(got[0].1.describe(), "tcp6 [::1]:80 LISTEN");
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 999 /run/x.sock\n0000000000000000: 00000003 00000000 00000000 0001 03 1000\n";
        let got = parse_proc_net_unix(unix);
        assert_eq!(got[0].1.describe(), "unix-stream /run/x.sock");
        assert_eq!(got[1].1.local, None);
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[1]"), None);
        // This process's own table parses.
        let _ = proc_net_sockets(std::process::id());
    }

    #[test]
    fn only_tcp_sockets_that_do_not_listen_are_read_again() {
        let tcp = "header\n   0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 1 0\n   1: 0100007F:1F90 0100007F:9C40 01 0 0 0 0 0 2 0\n   2: 0100007F:9C41 0100007F:1F90 07 0 0 0 0 0 3 0\n";
        let got = parse_proc_net_inet(tcp, AF_INET, SOCK_STREAM, IPPROTO_TCP);
        let may: Vec<bool> = got.iter().map(|(_, s)| state_may_change(s)).collect();
        assert_eq!(may, [false, true, true], "LISTEN, ESTABLISHED, CLOSE");
        let udp = "header\n   0: 0100007F:1F90 00000000:0000 07 0 0 0 0 0 4 0\n";
        let got = parse_proc_net_inet(udp, AF_INET, 2, IPPROTO_UDP);
        assert!(!state_may_change(&got[0].1));
        let unix = "Num RefCount Protocol Flags Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 999 /run/x.sock\n";
        assert!(!state_may_change(&parse_proc_net_unix(unix)[0].1));
    }

    #[test]
    fn names() {
        let s = SocketInfo {
            family: AF_UNIX,
            sk_type: SOCK_STREAM,
            local: Some("/tmp/s".into()),
            ..Default::default()
        };
        assert_eq!(s.describe(), "unix-stream /tmp/s");
        assert!(!s.is_tcp());
        assert_eq!(tcp_state_name(tcp::LISTEN), "LISTEN");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }
}
