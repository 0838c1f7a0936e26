//! Decoding of ring-buffer records into typed events (pure, no BPF).
use fdtrace_common::{
    CloseEvent, CloseRangeEvent, Header, MAX_PATH, OpenEvent, ProcEvent, STACK_BYTES, capture, kind,
};

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Open(Open),
    Close {
        hdr: Header,
        fd: i32,
    },
    CloseRange {
        hdr: Header,
        first: u32,
        last: u32,
        flags: u32,
    },
    Exec {
        hdr: Header,
    },
    Exit {
        hdr: Header,
    },
}

/// A new descriptor, with what is needed to unwind its creating stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub hdr: Header,
    pub fd: i32,
    /// Second descriptor of pipe/socketpair, -1 otherwise.
    pub fd2: i32,
    /// Duplicated descriptor of dup*/fcntl, -1 otherwise.
    pub arg: i32,
    pub flags: u32,
    pub syscall: u32,
    pub path: String,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The captured user stack.
    pub stack: UserStack,
}

/// The user stack as the kernel captured it at a birth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserStack {
    /// Nothing could be captured.
    None,
    /// The top of the user stack memory, starting at `sp` (unwound with DWARF CFI).
    Copy(Vec<u8>),
    /// The kernel's frame-pointer walk: the instruction pointer, then return addresses.
    FramePointers(Vec<u64>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("unknown record kind {0}")]
    Kind(u32),
}

const PATH_OFF: usize = 72;

fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; T is a plain-old-data #[repr(C)] type.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn check(kind: u32, bytes: &[u8], expected: usize) -> Result<(), DecodeError> {
    if bytes.len() < expected {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    Ok(())
}

/// Decode one record as written by the eBPF side.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let hdr: Header = read(bytes);
    match hdr.kind {
        kind::OPEN => {
            check(hdr.kind, bytes, size_of::<OpenEvent>())?;
            // Read the fixed part without copying the whole stack array twice.
            let fd: i32 = read(&bytes[24..]);
            let fd2: i32 = read(&bytes[28..]);
            let flags: u32 = read(&bytes[32..]);
            let syscall: u32 = read(&bytes[36..]);
            let stack_len: u16 = read(&bytes[40..]);
            let stack_kind: u16 = read(&bytes[42..]);
            let arg: i32 = read(&bytes[44..]);
            let ip: u64 = read(&bytes[48..]);
            let sp: u64 = read(&bytes[56..]);
            let bp: u64 = read(&bytes[64..]);
            let path_bytes = &bytes[PATH_OFF..PATH_OFF + MAX_PATH];
            let end = path_bytes.iter().position(|&b| b == 0).unwrap_or(MAX_PATH);
            let path = String::from_utf8_lossy(&path_bytes[..end]).into_owned();
            let stack_off = PATH_OFF + MAX_PATH;
            let n = (stack_len as usize).min(STACK_BYTES);
            let raw = &bytes[stack_off..stack_off + n];
            let stack = match stack_kind {
                _ if n == 0 => UserStack::None,
                capture::STACK_COPY => UserStack::Copy(raw.to_vec()),
                capture::FRAME_POINTERS => UserStack::FramePointers(
                    raw.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ),
                _ => UserStack::None,
            };
            Ok(Event::Open(Open {
                hdr,
                fd,
                fd2,
                arg,
                flags,
                syscall,
                path,
                ip,
                sp,
                bp,
                stack,
            }))
        }
        kind::CLOSE => {
            check(hdr.kind, bytes, size_of::<CloseEvent>())?;
            let ev: CloseEvent = read(bytes);
            Ok(Event::Close { hdr, fd: ev.fd })
        }
        kind::CLOSE_RANGE => {
            check(hdr.kind, bytes, size_of::<CloseRangeEvent>())?;
            let ev: CloseRangeEvent = read(bytes);
            Ok(Event::CloseRange {
                hdr,
                first: ev.first,
                last: ev.last,
                flags: ev.flags,
            })
        }
        kind::EXEC => {
            check(hdr.kind, bytes, size_of::<ProcEvent>())?;
            Ok(Event::Exec { hdr })
        }
        kind::EXIT => {
            check(hdr.kind, bytes, size_of::<ProcEvent>())?;
            Ok(Event::Exit { hdr })
        }
        k => Err(DecodeError::Kind(k)),
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(offset_of!(OpenEvent, path), PATH_OFF);
        assert_eq!(offset_of!(OpenEvent, stack), PATH_OFF + MAX_PATH);
    }

    #[test]
    fn open_round_trip() {
        let mut ev = OpenEvent {
            hdr: hdr(kind::OPEN),
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
            path: [0; MAX_PATH],
            stack: [0xAA; STACK_BYTES],
        };
        ev.path[..10].copy_from_slice(b"/tmp/x.txt");
        let got = decode(&as_bytes(&ev)).unwrap();
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
                stack: UserStack::Copy(vec![0xAA; 16]),
            })
        );
    }

    #[test]
    fn path_without_nul_is_bounded() {
        let ev = OpenEvent {
            hdr: hdr(kind::OPEN),
            fd: 3,
            fd2: -1,
            flags: 0,
            syscall: 1,
            stack_len: u16::MAX,
            stack_kind: capture::STACK_COPY,
            arg: -1,
            ip: 0,
            sp: 0,
            bp: 0,
            path: [b'a'; MAX_PATH],
            stack: [0; STACK_BYTES],
        };
        let Event::Open(o) = decode(&as_bytes(&ev)).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(o.path.len(), MAX_PATH);
        assert_eq!(o.stack, UserStack::Copy(vec![0; STACK_BYTES]));
    }

    #[test]
    fn frame_pointer_walk_and_failed_capture() {
        let mut ev = OpenEvent {
            hdr: hdr(kind::OPEN),
            fd: 3,
            fd2: -1,
            flags: 0,
            syscall: 1,
            stack_len: 24,
            stack_kind: capture::FRAME_POINTERS,
            arg: -1,
            ip: 0x401000,
            sp: 0,
            bp: 0,
            path: [0; MAX_PATH],
            stack: [0; STACK_BYTES],
        };
        for (i, a) in [0x401000u64, 0x402345, 0x40abcd].iter().enumerate() {
            ev.stack[i * 8..i * 8 + 8].copy_from_slice(&a.to_le_bytes());
        }
        let Event::Open(o) = decode(&as_bytes(&ev)).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(
            o.stack,
            UserStack::FramePointers(vec![0x401000, 0x402345, 0x40abcd])
        );
        ev.stack_len = 0;
        let Event::Open(o) = decode(&as_bytes(&ev)).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(o.stack, UserStack::None);
        ev.stack_len = 8;
        ev.stack_kind = 77;
        let Event::Open(o) = decode(&as_bytes(&ev)).unwrap() else {
            panic!("not an open")
        };
        assert_eq!(o.stack, UserStack::None);
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
}
