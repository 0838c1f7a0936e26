//! Decoding of ring-buffer records into typed events (pure, no BPF).
use compact_str::CompactString;
use fdtrace_common::{
    CloexecEvent, CloseEvent, CloseRangeEvent, ForkEvent, GO_LINK_HEAD_BYTES, GoLinkEvent, Header,
    MAX_PATH, MAX_SOCKADDR, OPEN_HEAD_BYTES, OpenEvent, ProcEvent, STACK_BYTES, SockAddrEvent,
    SockInfo, SockStateEvent, StackChunkEvent, UV_HANDLE_HEAD_BYTES, UvHandleEvent, capture, go,
    kind, uv,
};

/// One decoded ring-buffer record. It borrows the record's bytes (`'a`) for the stack copy of
/// a birth, which only the unwinder reads: copying 2 KiB per birth cost more than the rest of
/// decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Open(Open<'a>),
    /// A birth failed with EMFILE/ENFILE; `fd` holds the negative errno.
    OpenFailed(Open<'a>),
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
    /// A process of the traced cgroup that the kernel traces from now on (`kind::JOIN`).
    Join {
        hdr: Header,
    },
    /// A successful bind or connect, with the raw `struct sockaddr`.
    SockAddr {
        hdr: Header,
        fd: i32,
        op: u32,
        addr: Vec<u8>,
    },
    /// A traced socket changed TCP state.
    SockState(SockStateEvent),
    /// A traced process created a process.
    Fork {
        hdr: Header,
        child: u32,
        flags: u64,
    },
    /// The close-on-exec flag of `fd` was set or cleared.
    Cloexec {
        hdr: Header,
        fd: i32,
        on: bool,
    },
    /// A Go goroutine asked for a connection or began dialing one (`kind::GO_LINK`).
    GoLink(GoLink),
    /// A piece of a thread's stack beyond the copy in the birth that follows it
    /// (`kind::STACK_CHUNK`).
    StackChunk {
        hdr: Header,
        sp: u64,
        /// Bytes above `sp` where `bytes` begins.
        offset: u32,
        bytes: &'a [u8],
    },
    /// libuv: a TCP handle was made, or a connect on one began (`kind::UV_HANDLE`).
    UvHandle(UvHandle<'a>),
    /// CPython: the Python frames of the thread whose birth follows (`kind::PY_FRAMES`).
    PyFrames {
        hdr: Header,
        sp: u64,
        frames: Vec<fdtrace_common::PyFrame>,
        truncated: bool,
    },
}

/// net/http's link between the goroutine that asks for a connection and the one that dials it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoLink {
    pub hdr: Header,
    /// `go::REQUEST` or `go::DIAL`.
    pub role: u32,
    pub goid: u64,
    /// The `*wantConn`: the same value in the request and its dial.
    pub conn: u64,
    /// REQUEST: the requester's stack, innermost first (the probed function, then its caller
    /// and theirs).
    pub stack: Vec<u64>,
}

/// A libuv TCP handle's creation (`uv::INIT`, with the creating stack) or a connect on it
/// (`uv::CONNECT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UvHandle<'a> {
    pub hdr: Header,
    pub role: u32,
    /// The `uv_tcp_t *`.
    pub handle: u64,
    /// Registers at the function's entry (CONNECT: `sp` only).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// CONNECT: the return address at `sp`.
    pub ret: u64,
    /// INIT: the copy of the stack from `sp`.
    pub stack: &'a [u8],
}

impl Event<'_> {
    /// The header every record starts with.
    pub fn header(&self) -> &Header {
        match self {
            Event::Open(o) | Event::OpenFailed(o) => &o.hdr,
            Event::SockState(s) => &s.hdr,
            Event::GoLink(l) => &l.hdr,
            Event::UvHandle(h) => &h.hdr,
            Event::Close { hdr, .. }
            | Event::CloseRange { hdr, .. }
            | Event::Exec { hdr }
            | Event::Exit { hdr }
            | Event::Join { hdr }
            | Event::SockAddr { hdr, .. }
            | Event::StackChunk { hdr, .. }
            | Event::PyFrames { hdr, .. }
            | Event::Fork { hdr, .. }
            | Event::Cloexec { hdr, .. } => hdr,
        }
    }
}

/// A new descriptor, with what is needed to unwind its creating stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open<'a> {
    pub hdr: Header,
    pub fd: i32,
    /// Second descriptor of pipe/socketpair, -1 otherwise.
    pub fd2: i32,
    /// Duplicated descriptor of dup*/fcntl, -1 otherwise.
    pub arg: i32,
    pub flags: u32,
    pub syscall: u32,
    /// Inline up to 24 bytes (no allocation for most paths).
    pub path: CompactString,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Go programs: the goroutine of the birth and the goroutine that started it (0: unknown).
    pub goid: u64,
    pub parent_goid: u64,
    /// Go programs: `runtime.g.gopc` of the birth's goroutine, where it was started (0: unknown).
    pub gopc: u64,
    /// The kernel socket behind `fd` (socket births), zeroed otherwise.
    pub sock: SockInfo,
    /// recvmsg: the control messages (SCM_RIGHTS descriptors are in them).
    pub control: Vec<u8>,
    /// The captured user stack.
    pub stack: UserStack<'a>,
}

/// The user stack as the kernel captured it at a birth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserStack<'a> {
    /// Nothing could be captured.
    None,
    /// The top of the user stack memory, starting at `sp` (unwound with DWARF CFI).
    Copy(&'a [u8]),
    /// The kernel's frame-pointer walk: the instruction pointer, then return addresses.
    FramePointers(Vec<u64>),
    /// Not captured on purpose: the ring buffer was half full (`capture::SHED`).
    Shed,
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

const SOCK_OFF: usize = 96;
const PATH_OFF: usize = SOCK_OFF + size_of::<SockInfo>();

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
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let hdr: Header = read(bytes);
    match hdr.kind {
        kind::OPEN | kind::OPEN_FAILED => {
            // A birth sent without its stack ends where the stack would begin.
            check(hdr.kind, bytes, OPEN_HEAD_BYTES)?;
            let shed = read::<u16>(&bytes[42..]) == capture::SHED;
            if !shed {
                check(hdr.kind, bytes, size_of::<OpenEvent>())?;
            }
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
            let goid: u64 = read(&bytes[72..]);
            let parent_goid: u64 = read(&bytes[80..]);
            let gopc: u64 = read(&bytes[88..]);
            let sock: SockInfo = read(&bytes[SOCK_OFF..]);
            let path_bytes = &bytes[PATH_OFF..PATH_OFF + MAX_PATH];
            let (path, control) = if syscall == fdtrace_common::syscall::RECVMSG {
                let n = (arg.max(0) as usize).min(MAX_PATH);
                (CompactString::default(), path_bytes[..n].to_vec())
            } else if syscall == fdtrace_common::syscall::RECVMMSG {
                (CompactString::default(), path_bytes.to_vec())
            } else {
                let end = path_bytes.iter().position(|&b| b == 0).unwrap_or(MAX_PATH);
                let path = &path_bytes[..end];
                // Most paths are ASCII, a check of a word at a time (a UTF-8 check goes a
                // byte at a time through short strings); then UTF-8, whose check is faster
                // than the lossy conversion's own.
                let path = if path.is_ascii() {
                    // SAFETY: ASCII is UTF-8.
                    CompactString::from(unsafe { std::str::from_utf8_unchecked(path) })
                } else {
                    match std::str::from_utf8(path) {
                        Ok(p) => CompactString::from(p),
                        Err(_) => CompactString::from(String::from_utf8_lossy(path)),
                    }
                };
                (path, Vec::new())
            };
            let stack_off = PATH_OFF + MAX_PATH;
            let n = if shed {
                0
            } else {
                (stack_len as usize).min(STACK_BYTES)
            };
            let raw = &bytes[stack_off..stack_off + n];
            let stack = match stack_kind {
                capture::SHED => UserStack::Shed,
                _ if n == 0 => UserStack::None,
                capture::STACK_COPY => UserStack::Copy(raw),
                capture::FRAME_POINTERS => UserStack::FramePointers(
                    raw.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ),
                _ => UserStack::None,
            };
            let open = Open {
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
                goid,
                parent_goid,
                gopc,
                sock,
                control,
                stack,
            };
            Ok(if hdr.kind == kind::OPEN {
                Event::Open(open)
            } else {
                Event::OpenFailed(open)
            })
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
        kind::JOIN => {
            check(hdr.kind, bytes, size_of::<ProcEvent>())?;
            Ok(Event::Join { hdr })
        }
        kind::SOCK_ADDR => {
            check(hdr.kind, bytes, size_of::<SockAddrEvent>())?;
            let ev: SockAddrEvent = read(bytes);
            let n = (ev.len as usize).min(MAX_SOCKADDR);
            Ok(Event::SockAddr {
                hdr,
                fd: ev.fd,
                op: ev.op,
                addr: ev.addr[..n].to_vec(),
            })
        }
        kind::FORK => {
            check(hdr.kind, bytes, size_of::<ForkEvent>())?;
            let ev: ForkEvent = read(bytes);
            Ok(Event::Fork {
                hdr,
                child: ev.child,
                flags: ev.flags,
            })
        }
        kind::CLOEXEC => {
            check(hdr.kind, bytes, size_of::<CloexecEvent>())?;
            let ev: CloexecEvent = read(bytes);
            Ok(Event::Cloexec {
                hdr,
                fd: ev.fd,
                on: ev.on != 0,
            })
        }
        kind::GO_LINK => {
            check(hdr.kind, bytes, GO_LINK_HEAD_BYTES)?;
            let role: u32 = read(&bytes[24..]);
            let stack_len: u32 = read(&bytes[28..]);
            let goid: u64 = read(&bytes[32..]);
            let conn: u64 = read(&bytes[40..]);
            let ret: u64 = read(&bytes[48..]);
            let mut stack = Vec::new();
            if role == go::REQUEST {
                check(hdr.kind, bytes, size_of::<GoLinkEvent>())?;
                let n = (stack_len as usize).min(STACK_BYTES);
                let mut ips = bytes[GO_LINK_HEAD_BYTES..GO_LINK_HEAD_BYTES + n]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
                // The walk from a function's first instruction: its own address, then (the
                // frame pointer still being the caller's) the caller's caller; the caller is
                // the return address at the stack pointer.
                if let Some(ip) = ips.next() {
                    stack.push(ip);
                    if ret != 0 {
                        stack.push(ret);
                    }
                    stack.extend(ips);
                }
            }
            Ok(Event::GoLink(GoLink {
                hdr,
                role,
                goid,
                conn,
                stack,
            }))
        }
        kind::UV_HANDLE => {
            check(hdr.kind, bytes, UV_HANDLE_HEAD_BYTES)?;
            let ev = |at: usize| -> u64 { read(&bytes[at..]) };
            let role: u32 = read(&bytes[24..]);
            let stack_len: u32 = read(&bytes[28..]);
            let mut stack: &[u8] = &[];
            if role == uv::INIT {
                check(hdr.kind, bytes, size_of::<UvHandleEvent>())?;
                let n = (stack_len as usize).min(STACK_BYTES);
                stack = &bytes[UV_HANDLE_HEAD_BYTES..UV_HANDLE_HEAD_BYTES + n];
            }
            Ok(Event::UvHandle(UvHandle {
                hdr,
                role,
                handle: ev(32),
                ip: ev(40),
                sp: ev(48),
                bp: ev(56),
                ret: ev(64),
                stack,
            }))
        }
        kind::STACK_CHUNK => {
            const BYTES_OFF: usize = size_of::<StackChunkEvent>() - capture::CHUNK_BYTES;
            check(hdr.kind, bytes, size_of::<StackChunkEvent>())?;
            let sp: u64 = read(&bytes[24..]);
            let offset: u32 = read(&bytes[32..]);
            let len: u32 = read(&bytes[36..]);
            let n = (len as usize).min(capture::CHUNK_BYTES);
            Ok(Event::StackChunk {
                hdr,
                sp,
                offset,
                bytes: &bytes[BYTES_OFF..BYTES_OFF + n],
            })
        }
        kind::PY_FRAMES => {
            use fdtrace_common::{PyFrame, PyFramesEvent, py};
            check(hdr.kind, bytes, size_of::<PyFramesEvent>())?;
            let sp: u64 = read(&bytes[24..]);
            let n: u32 = read(&bytes[32..]);
            let truncated: u32 = read(&bytes[36..]);
            let frames = bytes[40..]
                .chunks_exact(size_of::<PyFrame>())
                .take((n as usize).min(py::MAX_FRAMES))
                .map(read::<PyFrame>)
                .collect();
            Ok(Event::PyFrames {
                hdr,
                sp,
                frames,
                truncated: truncated != 0,
            })
        }
        kind::SOCK_STATE => {
            check(hdr.kind, bytes, size_of::<SockStateEvent>())?;
            Ok(Event::SockState(read(bytes)))
        }
        k => Err(DecodeError::Kind(k)),
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
