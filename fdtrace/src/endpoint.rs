//! A socket's address as fdtrace keeps it: an IP address and port as the kernel gave them,
//! written out only when shown (`a.b.c.d:port`, `[v6]:port`), or any other address as text (a
//! unix path, `@name` for an abstract one). Every accepted or connected socket has two, and a
//! busy server accepts thousands a second: formatting both into new strings at each birth was
//! nearly a fifth of fdtrace's work per request under nginx (callgrind), for names most
//! sockets never show.
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use crate::sockets::{AF_INET, AF_INET6};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IPv4 or IPv6 address and port (an IPv4-mapped IPv6 address is kept as IPv4).
    Inet(SocketAddr),
    /// Any other address, as it is shown.
    Text(String),
}

impl Endpoint {
    /// An IPv4 or IPv6 endpoint from the kernel's bytes (`addr`: 4 or 16 bytes in network
    /// order, `port` in host order); None for the unspecified address with port 0 (not bound,
    /// not connected) and for other families.
    pub fn inet(family: u16, addr: &[u8; 16], port: u16) -> Option<Endpoint> {
        let a = match family {
            AF_INET => {
                let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                if port == 0 && ip.is_unspecified() {
                    return None;
                }
                SocketAddr::V4(SocketAddrV4::new(ip, port))
            }
            AF_INET6 => {
                let ip = Ipv6Addr::from(*addr);
                if port == 0 && ip.is_unspecified() {
                    return None;
                }
                match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
                }
            }
            _ => return None,
        };
        Some(Endpoint::Inet(a))
    }

    /// The port, for an IP endpoint.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Inet(a) => Some(a.port()),
            Endpoint::Text(_) => None,
        }
    }

    /// Without its port (`10.0.0.5`, `[::1]`): accepted connections come from ephemeral ports,
    /// so they are told apart by host. Text that ends in `:PORT` loses it too unless `unix`
    /// (a unix path may hold a colon).
    pub fn host(&self, unix: bool) -> String {
        match self {
            Endpoint::Inet(SocketAddr::V4(a)) => a.ip().to_string(),
            Endpoint::Inet(SocketAddr::V6(a)) => format!("[{}]", a.ip()),
            Endpoint::Text(t) => match t.rsplit_once(':') {
                Some((host, port)) if !unix && port.parse::<u16>().is_ok() => host.to_string(),
                _ => t.clone(),
            },
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet(a) => a.fmt(f),
            Endpoint::Text(t) => f.write_str(t),
        }
    }
}

/// Text that an IP endpoint shows exactly as is one (a recording's, a test's); any other text
/// as it is.
impl From<String> for Endpoint {
    fn from(text: String) -> Self {
        match text.parse::<SocketAddr>() {
            Ok(a) if Endpoint::Inet(a).to_string() == text => Endpoint::Inet(a),
            _ => Endpoint::Text(text),
        }
    }
}

impl From<&str> for Endpoint {
    fn from(text: &str) -> Self {
        Endpoint::from(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4]) -> [u8; 16] {
        let mut a = [0; 16];
        a[..4].copy_from_slice(&ip);
        a
    }

    #[test]
    fn ip_endpoints_show_as_the_standard_library_writes_them() {
        for (ip, port) in [
            ([0, 0, 0, 0], 1),
            ([255, 255, 255, 255], 65535),
            ([10, 0, 7, 99], 80),
        ]
        .into_iter()
        .chain((0..=255u8).map(|b| ([b, b / 3, 255 - b, b % 10], u16::from(b) * 257)))
        {
            let std = format!("{}:{port}", Ipv4Addr::from(ip));
            let e = Endpoint::inet(AF_INET, &v4(ip), port).unwrap();
            assert_eq!(e.to_string(), std);
            // An IPv4-mapped IPv6 address shows as IPv4, and is the same endpoint.
            let mapped = Ipv4Addr::from(ip).to_ipv6_mapped().octets();
            assert_eq!(Endpoint::inet(AF_INET6, &mapped, port), Some(e.clone()));
            // Its text read back is the same endpoint.
            assert_eq!(Endpoint::from(std), e);
        }
        let mut loopback = [0; 16];
        loopback[15] = 1;
        let e = Endpoint::inet(AF_INET6, &loopback, 443).unwrap();
        assert_eq!(e.to_string(), "[::1]:443");
        assert_eq!(Endpoint::from("[::1]:443"), e);
        let a: [u8; 16] = "2001:db8::1234:5678".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            Endpoint::inet(AF_INET6, &a, 65535).unwrap().to_string(),
            "[2001:db8::1234:5678]:65535"
        );
    }

    #[test]
    fn unbound_and_other_families_have_none() {
        assert_eq!(Endpoint::inet(AF_INET, &[0; 16], 0), None);
        assert_eq!(Endpoint::inet(AF_INET6, &[0; 16], 0), None);
        assert_eq!(
            Endpoint::inet(AF_INET, &[0; 16], 8080).map(|e| e.to_string()),
            Some("0.0.0.0:8080".into())
        );
        assert_eq!(Endpoint::inet(1, &v4([127, 0, 0, 1]), 80), None);
    }

    #[test]
    fn other_text_stays_text_and_shows_as_it_was() {
        for t in [
            "/run/x.sock",
            "@hidden",
            "/run/a:1",
            "[::ffff:10.0.0.5]:80x",
            "127.0.0.01:80",
            "",
        ] {
            let e = Endpoint::from(t);
            assert_eq!(e, Endpoint::Text(t.into()), "{t}");
            assert_eq!(e.to_string(), t);
        }
        assert_eq!(Endpoint::from("/run/a:1").port(), None);
    }

    #[test]
    fn a_host_is_its_endpoint_without_the_port() {
        assert_eq!(Endpoint::from("[::1]:44080").host(false), "[::1]");
        assert_eq!(Endpoint::from("10.0.0.5:80").host(false), "10.0.0.5");
        assert_eq!(Endpoint::from("10.0.0.5:80").port(), Some(80));
        assert_eq!(Endpoint::from("/run/a:1").host(true), "/run/a:1");
        assert_eq!(Endpoint::from("/run/a:1").host(false), "/run/a");
        assert_eq!(Endpoint::from("/run/a").host(false), "/run/a");
    }
}
