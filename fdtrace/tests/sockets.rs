//! Privileged end-to-end tests of socket descriptors: addresses over IPv4, IPv6 and unix, and
//! TCP states joined to descriptors through the kernel socket, including transitions that run
//! while another process is on the CPU.
use serde_json::Value;

mod common;
use common::*;

fn group<'a>(site: &'a Value, peer: Option<&str>, state: Option<&str>) -> Option<&'a Value> {
    site["sockets"]
        .as_array()?
        .iter()
        .find(|g| g["peer"].as_str() == peer && g["state"].as_str() == state)
}

#[test]
fn sockets_carry_addresses_and_tcp_states() {
    check_sockets(&[]);
}

/// The same, with every member of a socket read on its own, as on a kernel whose structures
/// are laid out otherwise (where they sit as usual, fdtrace reads neighbours at once: see
/// `fdtrace_common::adjacent`).
#[test]
fn sockets_read_member_by_member_carry_the_same() {
    check_sockets(&[("FDTRACE_LAYOUT_APART", std::path::Path::new("1"))]);
}

fn check_sockets(env: &[(&str, &std::path::Path)]) {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("sockets.c", dir.path(), &["-O0"]);
    let upath = dir.path().join("s.sock");
    let r = fdtrace(
        &["-d", "3", "--"],
        &[bin.as_os_str(), upath.as_os_str()],
        env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = &r.json;
    let ready = r
        .stdout
        .lines()
        .find(|l| l.starts_with("ready "))
        .unwrap_or_else(|| panic!("the program did not get ready: {}\n{}", r.stdout, r.stderr));
    let nums: Vec<u32> = ready[6..].split(' ').map(|x| x.parse().unwrap()).collect();
    let (port4, port6, child) = (nums[0], nums[1], nums[2]);
    // The untraced server child dies with its parent; make sure.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    let site = |m: &str| {
        site_at(j, "sockets.c", line_of("sockets.c", m))
            .unwrap_or_else(|| panic!("no site for {m}: {j:#}"))
    };

    // IPv4 clients whose server (another process) closed: CLOSE_WAIT, with the hint.
    let c4 = site("C4");
    assert_eq!(c4["count"], 5, "{c4:#}");
    let peer4 = format!("127.0.0.1:{port4}");
    let g = group(c4, Some(&peer4), Some("CLOSE_WAIT")).unwrap_or_else(|| panic!("{c4:#}"));
    assert_eq!(g["count"], 5);
    assert!(
        c4["hint"].as_str().unwrap().contains("CLOSE_WAIT"),
        "{c4:#}"
    );
    for f in c4["fds"].as_array().unwrap() {
        assert_eq!(f["state"], "CLOSE_WAIT");
        assert_eq!(f["peer"], peer4.as_str());
        assert!(
            f["local"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{f:#}"
        );
        assert!(f["state_age_s"].as_f64().is_some(), "{f:#}");
    }

    // IPv6: listener, clients and accepted sockets.
    let peer6 = format!("[::1]:{port6}");
    let l6 = site("L6");
    assert_eq!(l6["count"], 1);
    assert_eq!(l6["fds"][0]["state"], "LISTEN");
    assert_eq!(l6["fds"][0]["local"], peer6.as_str());
    let c6 = site("C6");
    assert_eq!(c6["count"], 3);
    assert_eq!(
        group(c6, Some(&peer6), Some("ESTABLISHED")).map(|g| g["count"].clone()),
        Some(3.into()),
        "{c6:#}"
    );
    assert!(c6.get("hint").is_none(), "{c6:#}");
    let a6 = site("A6");
    assert_eq!(a6["count"], 3);
    let g = group(a6, Some("[::1]"), Some("ESTABLISHED")).unwrap_or_else(|| panic!("{a6:#}"));
    assert_eq!(
        (g["count"].clone(), g["local"].clone()),
        (3.into(), peer6.clone().into())
    );
    // Both ends agree: every accepted socket's peer is one of the clients.
    let client_locals: Vec<&str> = c6["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["local"].as_str().unwrap())
        .collect();
    for f in a6["fds"].as_array().unwrap() {
        assert!(
            client_locals.contains(&f["peer"].as_str().unwrap()),
            "{j:#}"
        );
    }

    // Unix: the listener's path on every side.
    let up = upath.to_str().unwrap();
    let lu = site("LU");
    assert_eq!(lu["fds"][0]["local"], up);
    let cu = site("CU");
    assert_eq!(cu["count"], 2);
    assert!(
        cu["fds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["peer"] == up),
        "{cu:#}"
    );
    let au = site("AU");
    assert_eq!(au["count"], 2);
    assert!(
        au["fds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["local"] == up),
        "{au:#}"
    );
    assert!(
        au["fds"][0]["target"]
            .as_str()
            .unwrap()
            .starts_with("unix-stream")
    );

    // UDP: connected peer, no TCP state.
    let udp = site("UDP");
    assert_eq!(udp["fds"][0]["peer"], "127.0.0.1:9");
    assert!(udp["fds"][0].get("state").is_none(), "{udp:#}");

    // The closed socket never appears; TCP states are summed up.
    let ok = line_of("sockets.c", "OK_SOCKET");
    assert!(site_at(j, "sockets.c", ok).is_none(), "{j:#}");
    assert_eq!(j["tcp_states"]["CLOSE_WAIT"], 5, "{j:#}");
    assert_eq!(j["tcp_states"]["ESTABLISHED"], 6, "{j:#}");
    assert_eq!(j["tcp_states"]["LISTEN"], 1, "{j:#}");
    assert_eq!(j["drift"]["missed_opens"], Value::Array(vec![]), "{j:#}");
    assert_eq!(j["drift"]["missed_closes"], Value::Array(vec![]), "{j:#}");
    assert_eq!(j["lost_events"], 0);
}

/// Many connections made and torn down, some ends kept: every kept socket is in the state its
/// program left it in. Each TCP state change of a socket on the system is first checked against
/// a table of counts in the kernel (`SOCK_MARKS`, a hash of the socket's address: how many
/// target sockets may have that hash), which must never read 0 for a socket still owned by the
/// target; these runs squeeze the table to 2 and 16 slots, so that sockets forgotten and sockets
/// kept share slots throughout, as well as the usual 65536.
#[test]
fn tcp_states_of_kept_sockets_survive_others_torn_down() {
    for bits in ["1", "4", "16"] {
        check_tcp_churn(bits);
    }
}

fn check_tcp_churn(bits: &str) {
    const ROUNDS: u64 = 64;
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c("tcpchurn.c", dir.path(), &["-O0"]);
    let r = fdtrace(
        &["-d", "3", "--"],
        &[bin.as_os_str(), std::ffi::OsStr::new(&ROUNDS.to_string())],
        &[("FDTRACE_SOCK_MARK_BITS", std::path::Path::new(bits))],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("ready"), "{}\n{}", r.stdout, r.stderr);
    let j = &r.json;
    let site = |m: &str| {
        site_at(j, "tcpchurn.c", line_of("tcpchurn.c", m))
            .unwrap_or_else(|| panic!("{bits} bits: no site for {m}: {j:#}"))
    };
    // A quarter of the rounds keep the client's end in CLOSE_WAIT, a quarter the server's, a
    // quarter both ends ESTABLISHED.
    let quarter = ROUNDS / 4;
    for m in ["CLIENT", "ACCEPTED"] {
        let s = site(m);
        assert_eq!(s["count"], 2 * quarter, "{bits} bits, {m}: {s:#}");
        for state in ["CLOSE_WAIT", "ESTABLISHED"] {
            let n: u64 = s["sockets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["state"] == state)
                .map(|g| g["count"].as_u64().unwrap())
                .sum();
            assert_eq!(n, quarter, "{bits} bits, {m} in {state}: {s:#}");
        }
    }
    assert_eq!(
        j["tcp_states"]["CLOSE_WAIT"],
        2 * quarter,
        "{bits} bits: {j:#}"
    );
    assert_eq!(
        j["tcp_states"]["ESTABLISHED"],
        2 * quarter,
        "{bits} bits: {j:#}"
    );
    assert_eq!(j["tcp_states"]["LISTEN"], 1, "{bits} bits: {j:#}");
    assert_eq!(j["lost_events"], 0);
}

/// The kernel writes a socket's TCP states while a descriptor refers to it, and none from its
/// last close on: read straight from the ring buffer, a connection closed from both ends yields
/// the CLOSE_WAIT its server saw while still open, and neither the FIN_WAIT1 and LAST_ACK its
/// closes set (while their files were released) nor the FIN_WAIT2 or CLOSE after them; a
/// connection shut down for writing, its descriptors still open, yields its FIN_WAIT1 and
/// FIN_WAIT2.
#[test]
fn tcp_states_stop_once_no_descriptor_refers_to_the_socket() {
    use std::collections::BTreeMap;
    const FIN_WAIT1: u32 = 4;
    const FIN_WAIT2: u32 = 5;
    const CLOSE: u32 = 7;
    const CLOSE_WAIT: u32 = 8;
    const LAST_ACK: u32 = 9;
    let _serial = serial();
    require_root();
    let mut tracer = fdtrace::tracer::Tracer::load(4 << 20).unwrap();
    tracer
        .add_target(std::process::id(), fdtrace_common::capture::STACK_COPY)
        .unwrap();
    let mut ring = tracer.take_ring().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = || {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client.local_addr().unwrap().port(), client, server)
    };
    let (closed, client, server) = connect();
    let (shut, shut_client, shut_server) = connect();
    let pause = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
    // FIN_WAIT1, then FIN_WAIT2 on the server's ACK; the server sees CLOSE_WAIT.
    shut_client.shutdown(std::net::Shutdown::Write).unwrap();
    pause(200);
    // The client closes first (FIN_WAIT1, then FIN_WAIT2 on the server's ACK), the server
    // sees CLOSE_WAIT, closes too (LAST_ACK, then CLOSE on the client's ACK).
    drop(client);
    pause(200);
    drop(server);
    pause(300);
    // Each socket's states, by (which end, the client's port).
    let mut states: BTreeMap<(&str, u16), Vec<u32>> = BTreeMap::new();
    while let Some(item) = ring.next() {
        if let Ok(fdtrace::events::Event::SockState(s)) = fdtrace::events::decode(&item) {
            let key = if s.sport == port {
                ("server", s.dport)
            } else {
                ("client", s.sport)
            };
            states.entry(key).or_default().push(s.newstate);
        }
    }
    tracer.detach();
    drop((shut_client, shut_server, listener));
    let of = |end: &'static str, client_port: u16| {
        states.get(&(end, client_port)).cloned().unwrap_or_default()
    };
    let after_close = [FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSE];
    assert!(
        !of("client", closed).iter().any(|s| after_close.contains(s)),
        "states from the client's close on: {states:?}"
    );
    let server_states = of("server", closed);
    assert!(server_states.contains(&CLOSE_WAIT), "{states:?}");
    assert!(
        !server_states.iter().any(|s| after_close.contains(s)),
        "states from the server's close on: {states:?}"
    );
    let shut_states = of("client", shut);
    assert!(
        shut_states.contains(&FIN_WAIT1) && shut_states.contains(&FIN_WAIT2),
        "the shut-down client's states: {states:?}"
    );
    assert!(of("server", shut).contains(&CLOSE_WAIT), "{states:?}");
}
