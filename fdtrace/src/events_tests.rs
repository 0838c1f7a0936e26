//! The decoder of kernel records against byte images of each record type.
use super::*;
use std::mem::offset_of;

fn as_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a POD value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn hdr(kind: u32) -> Header {
    Header {
        kind,
        tgid: 42,
        tid: 43,
        _pad: 0,
        ts_ns: 123_456_789,
    }
}

/// A birth record of fd 3 with every other field zero (no path, no stack): what a test changes
/// is written over it.
fn open_record() -> OpenEvent {
    OpenEvent {
        hdr: hdr(kind::OPEN),
        fd: 3,
        fd2: -1,
        flags: 0,
        syscall: 1,
        stack_len: 0,
        stack_kind: capture::NONE,
        arg: -1,
        ip: 0,
        sp: 0,
        bp: 0,
        goid: 0,
        parent_goid: 0,
        gopc: 0,
        sock: SockInfo::default(),
        path: [0; MAX_PATH],
        stack: [0; STACK_BYTES],
    }
}

#[test]
fn offsets_match_the_decoder() {
    assert_eq!(offset_of!(OpenEvent, fd), 24);
    assert_eq!(offset_of!(OpenEvent, fd2), 28);
    assert_eq!(offset_of!(OpenEvent, flags), 32);
    assert_eq!(offset_of!(OpenEvent, syscall), 36);
    assert_eq!(offset_of!(OpenEvent, stack_len), 40);
    assert_eq!(offset_of!(OpenEvent, stack_kind), 42);
    assert_eq!(offset_of!(OpenEvent, arg), 44);
    assert_eq!(offset_of!(OpenEvent, ip), 48);
    assert_eq!(offset_of!(OpenEvent, sp), 56);
    assert_eq!(offset_of!(OpenEvent, bp), 64);
    assert_eq!(offset_of!(OpenEvent, goid), 72);
    assert_eq!(offset_of!(OpenEvent, parent_goid), 80);
    assert_eq!(offset_of!(OpenEvent, gopc), 88);
    assert_eq!(offset_of!(OpenEvent, sock), SOCK_OFF);
    assert_eq!(offset_of!(OpenEvent, path), PATH_OFF);
    assert_eq!(offset_of!(OpenEvent, stack), PATH_OFF + MAX_PATH);
}

#[test]
fn open_round_trip() {
    let mut ev = OpenEvent {
        fd: 7,
        fd2: 8,
        flags: 0o2000001,
        syscall: fdtrace_common::syscall::OPENAT,
        stack_len: 16,
        stack_kind: capture::STACK_COPY,
        arg: 5,
        ip: 0x7f00_0000_1234,
        sp: 0x7ffc_0000_0000,
        bp: 0x7ffc_0000_0040,
        goid: 41,
        parent_goid: 17,
        gopc: 0x4a_1234,
        sock: SockInfo {
            sk: 0xffff_8880_0000_1000,
            family: 2,
            lport: 80,
            ..SockInfo::default()
        },
        stack: [0xAA; STACK_BYTES],
        ..open_record()
    };
    ev.path[..10].copy_from_slice(b"/tmp/x.txt");
    let bytes = as_bytes(&ev);
    let got = decode(&bytes).unwrap();
    assert_eq!(
        got,
        Event::Open(Open {
            hdr: hdr(kind::OPEN),
            fd: 7,
            fd2: 8,
            arg: 5,
            flags: 0o2000001,
            syscall: fdtrace_common::syscall::OPENAT,
            path: "/tmp/x.txt".into(),
            ip: 0x7f00_0000_1234,
            sp: 0x7ffc_0000_0000,
            bp: 0x7ffc_0000_0040,
            goid: 41,
            parent_goid: 17,
            gopc: 0x4a_1234,
            sock: SockInfo {
                sk: 0xffff_8880_0000_1000,
                family: 2,
                lport: 80,
                ..SockInfo::default()
            },
            control: Vec::new(),
            stack: UserStack::Copy(&[0xAA; 16]),
        })
    );
}

#[test]
fn path_without_nul_is_bounded() {
    let ev = OpenEvent {
        stack_len: u16::MAX,
        stack_kind: capture::STACK_COPY,
        path: [b'a'; MAX_PATH],
        ..open_record()
    };
    let bytes = as_bytes(&ev);
    let Event::Open(o) = decode(&bytes).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(o.path.len(), MAX_PATH);
    assert_eq!(o.stack, UserStack::Copy(&[0; STACK_BYTES]));
}

#[test]
fn frame_pointer_walk_and_failed_capture() {
    let mut ev = OpenEvent {
        stack_len: 24,
        stack_kind: capture::FRAME_POINTERS,
        ip: 0x401000,
        ..open_record()
    };
    for (i, a) in [0x401000u64, 0x402345, 0x40abcd].iter().enumerate() {
        ev.stack[i * 8..i * 8 + 8].copy_from_slice(&a.to_le_bytes());
    }
    let bytes = as_bytes(&ev);
    let Event::Open(o) = decode(&bytes).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(
        o.stack,
        UserStack::FramePointers(vec![0x401000, 0x402345, 0x40abcd])
    );
    ev.stack_len = 0;
    let bytes = as_bytes(&ev);
    let Event::Open(o) = decode(&bytes).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(o.stack, UserStack::None);
    ev.stack_len = 8;
    ev.stack_kind = 77;
    let bytes = as_bytes(&ev);
    let Event::Open(o) = decode(&bytes).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(o.stack, UserStack::None);
}

#[test]
fn a_birth_shed_under_load_ends_before_its_stack() {
    let mut ev = OpenEvent {
        fd: 9,
        stack_kind: capture::SHED,
        ip: 0x401000,
        sp: 0x7ff0,
        ..open_record()
    };
    ev.path[..9].copy_from_slice(b"/dev/zero");
    let bytes = as_bytes(&ev);
    let head = &bytes[..OPEN_HEAD_BYTES];
    let Event::Open(o) = decode(head).unwrap() else {
        panic!("not an open")
    };
    assert_eq!((o.fd, o.path.as_str()), (9, "/dev/zero"));
    assert_eq!(o.stack, UserStack::Shed);
    // Any other record that short is damage.
    ev.stack_kind = capture::STACK_COPY;
    let bytes = as_bytes(&ev);
    assert!(matches!(
        decode(&bytes[..OPEN_HEAD_BYTES]),
        Err(DecodeError::Size { .. })
    ));
    assert!(matches!(
        decode(&bytes[..OPEN_HEAD_BYTES - 1]),
        Err(DecodeError::Size { .. })
    ));
}

#[test]
fn close_exec_exit_round_trip() {
    let c = CloseEvent {
        hdr: hdr(kind::CLOSE),
        fd: 9,
        _pad: 0,
    };
    assert_eq!(
        decode(&as_bytes(&c)).unwrap(),
        Event::Close {
            hdr: hdr(kind::CLOSE),
            fd: 9
        }
    );
    let r = CloseRangeEvent {
        hdr: hdr(kind::CLOSE_RANGE),
        first: 3,
        last: u32::MAX,
        flags: 4,
        _pad: 0,
    };
    assert_eq!(
        decode(&as_bytes(&r)).unwrap(),
        Event::CloseRange {
            hdr: hdr(kind::CLOSE_RANGE),
            first: 3,
            last: u32::MAX,
            flags: 4
        }
    );
    let e = ProcEvent {
        hdr: hdr(kind::EXEC),
    };
    assert_eq!(
        decode(&as_bytes(&e)).unwrap(),
        Event::Exec {
            hdr: hdr(kind::EXEC)
        }
    );
    let x = ProcEvent {
        hdr: hdr(kind::EXIT),
    };
    assert_eq!(
        decode(&as_bytes(&x)).unwrap(),
        Event::Exit {
            hdr: hdr(kind::EXIT)
        }
    );
    let j = ProcEvent {
        hdr: hdr(kind::JOIN),
    };
    assert_eq!(
        decode(&as_bytes(&j)).unwrap(),
        Event::Join {
            hdr: hdr(kind::JOIN)
        }
    );
}

#[test]
fn fork_cloexec_and_scm_rights_round_trip() {
    let f = ForkEvent {
        hdr: hdr(kind::FORK),
        child: 77,
        _pad: 0,
        flags: fdtrace_common::CLONE_FILES,
    };
    assert_eq!(
        decode(&as_bytes(&f)).unwrap(),
        Event::Fork {
            hdr: hdr(kind::FORK),
            child: 77,
            flags: fdtrace_common::CLONE_FILES
        }
    );
    let c = CloexecEvent {
        hdr: hdr(kind::CLOEXEC),
        fd: 4,
        on: 1,
    };
    assert_eq!(
        decode(&as_bytes(&c)).unwrap(),
        Event::Cloexec {
            hdr: hdr(kind::CLOEXEC),
            fd: 4,
            on: true
        }
    );
    let mut ev = OpenEvent {
        fd: -1,
        syscall: fdtrace_common::syscall::RECVMSG,
        arg: 20,
        ..open_record()
    };
    ev.path[0] = 20;
    let bytes = as_bytes(&ev);
    let Event::Open(o) = decode(&bytes).unwrap() else {
        panic!("not an open")
    };
    assert_eq!(o.control.len(), 20);
    assert_eq!(o.control[0], 20);
    assert!(o.path.is_empty());
}

#[test]
fn socket_records_round_trip() {
    let mut a = SockAddrEvent {
        hdr: hdr(kind::SOCK_ADDR),
        fd: 5,
        op: fdtrace_common::SOCK_OP_CONNECT,
        ret: 0,
        len: 16,
        addr: [0; MAX_SOCKADDR],
    };
    a.addr[..4].copy_from_slice(&[2, 0, 0x1f, 0x91]);
    let Event::SockAddr { fd, op, addr, .. } = decode(&as_bytes(&a)).unwrap() else {
        panic!("not an address")
    };
    assert_eq!(
        (fd, op, addr.len()),
        (5, fdtrace_common::SOCK_OP_CONNECT, 16)
    );
    assert_eq!(&addr[..4], &[2, 0, 0x1f, 0x91]);
    // A length beyond the buffer is bounded.
    a.len = 10_000;
    let Event::SockAddr { addr, .. } = decode(&as_bytes(&a)).unwrap() else {
        panic!("not an address")
    };
    assert_eq!(addr.len(), MAX_SOCKADDR);
    let st = SockStateEvent {
        hdr: hdr(kind::SOCK_STATE),
        sk: 77,
        oldstate: 1,
        newstate: 8,
        family: 2,
        protocol: 6,
        sport: 40000,
        dport: 8081,
        saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    assert_eq!(decode(&as_bytes(&st)).unwrap(), Event::SockState(st));
}

#[test]
fn bad_records_are_errors() {
    assert_eq!(decode(&[0; 5]), Err(DecodeError::Short(5)));
    let mut b = as_bytes(&hdr(99));
    assert_eq!(decode(&b), Err(DecodeError::Kind(99)));
    b = as_bytes(&hdr(kind::OPEN));
    assert!(matches!(decode(&b), Err(DecodeError::Size { .. })));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
        let _ = decode(&bytes);
    }
}

#[test]
fn go_links() {
    let mut ev = fdtrace_common::GoLinkEvent {
        hdr: hdr(kind::GO_LINK),
        role: go::REQUEST,
        stack_len: 24,
        goid: 21,
        conn: 0xc000_1234,
        ret: 0x40_2222,
        stack: [0; STACK_BYTES],
    };
    for (i, a) in [0x40_1000u64, 0x40_3333, 0x40_4444].iter().enumerate() {
        ev.stack[i * 8..i * 8 + 8].copy_from_slice(&a.to_le_bytes());
    }
    let bytes = as_bytes(&ev);
    let Event::GoLink(l) = decode(&bytes).unwrap() else {
        panic!("not a link");
    };
    // The caller, skipped by a frame-pointer walk from a function's entry, put back.
    assert_eq!(l.stack, vec![0x40_1000, 0x40_2222, 0x40_3333, 0x40_4444]);
    assert_eq!((l.goid, l.conn, l.role), (21, 0xc000_1234, go::REQUEST));
    // A dial is sent without its stack; a request must have one.
    ev.role = go::DIAL;
    let bytes = as_bytes(&ev);
    let Event::GoLink(d) = decode(&bytes[..GO_LINK_HEAD_BYTES]).unwrap() else {
        panic!("not a link");
    };
    assert_eq!((d.goid, d.stack.len()), (21, 0));
    ev.role = go::REQUEST;
    let bytes = as_bytes(&ev);
    assert!(decode(&bytes[..GO_LINK_HEAD_BYTES]).is_err());
}

#[test]
fn uv_handles() {
    let mut ev = UvHandleEvent {
        hdr: hdr(kind::UV_HANDLE),
        role: uv::INIT,
        stack_len: 16,
        handle: 0x5555_0000_1230,
        ip: 0x18b_9f80,
        sp: 0x7ffc_0000_1000,
        bp: 0x7ffc_0000_1100,
        ret: 0,
        stack: [7; STACK_BYTES],
    };
    let bytes = as_bytes(&ev);
    let Event::UvHandle(h) = decode(&bytes).unwrap() else {
        panic!("not a handle");
    };
    assert_eq!(
        (h.role, h.handle, h.ip, h.sp, h.bp, h.stack),
        (uv::INIT, ev.handle, ev.ip, ev.sp, ev.bp, &[7u8; 16][..])
    );
    // A creation must carry its stack; a connect is sent without one.
    assert!(decode(&bytes[..UV_HANDLE_HEAD_BYTES]).is_err());
    ev.role = uv::CONNECT;
    ev.ret = 0x4242;
    let bytes = as_bytes(&ev);
    let Event::UvHandle(c) = decode(&bytes[..UV_HANDLE_HEAD_BYTES]).unwrap() else {
        panic!("not a handle");
    };
    assert_eq!((c.role, c.ret, c.stack.len()), (uv::CONNECT, 0x4242, 0));
}

#[test]
fn paths_decode_as_ascii_utf8_or_lossily() {
    let mut ev = OpenEvent {
        syscall: fdtrace_common::syscall::OPENAT,
        stack_kind: capture::STACK_COPY,
        arg: 0,
        ..open_record()
    };
    let long = format!("/var/lib/{}/data.db", "x".repeat(40));
    for (raw, want) in [
        (&b"/dev/null"[..], "/dev/null"),
        (long.as_bytes(), long.as_str()),
        (
            "/tmp/caf\u{e9}/\u{65e5}\u{672c}".as_bytes(),
            "/tmp/caf\u{e9}/\u{65e5}\u{672c}",
        ),
        (&b"/tmp/\xff\xfeend"[..], "/tmp/\u{fffd}\u{fffd}end"),
        (&b""[..], ""),
    ] {
        ev.path = [0; MAX_PATH];
        ev.path[..raw.len()].copy_from_slice(raw);
        let bytes = as_bytes(&ev);
        let Event::Open(o) = decode(&bytes).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(o.path, want);
    }
}
