//! Marker frames: where a stack joined at a birth continues with the stack of another moment
//! (the goroutine that asked for a connection, the `go` statement that started a goroutine, the
//! JavaScript that made a Node.js socket's handle). A marker is an address that is no code
//! (`frame_tags`), shown as a bracketed text; the frames after it are the other stack's.
use crate::unwind::RawFrame;

/// The goroutine id in a marker's address.
use crate::frame_tags::LOW_BITS as MARKER_ID_BITS;
/// The goroutine that asked for a connection follows a `REQUESTED` marker; the `go` statement
/// that started the birth's goroutine follows a `CREATED` one; the JavaScript that made a
/// libuv handle follows a `UV_REQUESTED` one.
use crate::frame_tags::{GO_CREATED as CREATED, GO_REQUESTED as REQUESTED, UV_REQUESTED};

fn marker(base: u64, goid: u64) -> RawFrame {
    let addr = base | (goid & MARKER_ID_BITS);
    RawFrame { addr, lookup: addr }
}

/// The marker frame between a dialing goroutine's frames and those of the goroutine that asked
/// for the connection.
pub fn requested_by(goid: u64) -> RawFrame {
    marker(REQUESTED, goid)
}

/// The marker frame between a goroutine's frames and the `go` statement that started it, in
/// goroutine `parent` (0: unknown, before Go 1.21).
pub fn created_by(parent: u64) -> RawFrame {
    marker(CREATED, parent)
}

/// The marker frame between a Node.js socket's birth (in the tick that connects) and the
/// stack that made its handle (the program's `net.connect`).
pub fn socket_requested_by() -> RawFrame {
    marker(UV_REQUESTED, 0)
}

/// The text of a marker frame, if `addr` is one.
pub fn marker_text(addr: u64) -> Option<String> {
    let id = addr & MARKER_ID_BITS;
    match addr & !MARKER_ID_BITS {
        REQUESTED => Some(format!("[requested by goroutine {id}]")),
        CREATED if id == 0 => Some(CREATED_KEY.into()),
        CREATED => Some(format!("[created by goroutine {id}]")),
        UV_REQUESTED => Some(UV_TEXT.into()),
        _ => None,
    }
}

/// Is this a marker's text (a frame that is no code: never the program's own)?
pub fn is_marker_text(function: &str) -> bool {
    marker_key(function).is_some() || function == UV_TEXT
}

/// A marker frame's text without its goroutine: how sites are told apart across recordings.
pub const MARKER_KEY: &str = "[requested by goroutine]";
const CREATED_KEY: &str = "[created by a goroutine]";
const UV_TEXT: &str = "[socket requested by]";

/// The goroutine-free text of a marker frame's text (see [`MARKER_KEY`]), if it names a
/// goroutine.
pub fn marker_key(function: &str) -> Option<&'static str> {
    let number = |rest: Option<&str>| {
        rest.and_then(|r| r.strip_suffix(']'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if number(function.strip_prefix("[requested by goroutine ")) {
        Some(MARKER_KEY)
    } else if function == CREATED_KEY || number(function.strip_prefix("[created by goroutine ")) {
        Some(CREATED_KEY)
    } else {
        None
    }
}

/// The frame as stacks are grouped: every marker of a kind alike, whichever goroutine asked or
/// started (each request is made by a goroutine of its own; the site keeps the first one's
/// number).
pub fn grouping_key(f: &RawFrame) -> RawFrame {
    match f.addr & !MARKER_ID_BITS {
        REQUESTED => requested_by(0),
        CREATED => created_by(0),
        _ => *f,
    }
}

/// A recorded stack's frames from their addresses: each is a return address (looked up one
/// byte before, on its call) but the first, a marker, and the frame after a `requested by`
/// marker (the entry of the function the requester was probed in).
pub fn frames_of_addresses(addrs: &[u64]) -> Vec<RawFrame> {
    let mut prev = None;
    addrs
        .iter()
        .map(|&addr| {
            let exact = prev
                .is_none_or(|p: u64| matches!(p & !MARKER_ID_BITS, REQUESTED | UV_REQUESTED))
                || marker_text(addr).is_some();
            prev = Some(addr);
            RawFrame {
                addr,
                lookup: if exact { addr } else { addr.wrapping_sub(1) },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_group_alike() {
        assert_eq!(
            grouping_key(&requested_by(5)),
            grouping_key(&requested_by(6))
        );
        let f = RawFrame {
            addr: 0x40_1000,
            lookup: 0x40_0fff,
        };
        assert_eq!(grouping_key(&f), f);
        assert_eq!(marker_text(0x40_1000), None);
        assert_ne!(grouping_key(&requested_by(5)), grouping_key(&created_by(5)));
        assert_eq!(grouping_key(&created_by(5)), grouping_key(&created_by(0)));
        let key = |f: RawFrame| marker_key(&marker_text(f.addr).unwrap());
        assert_eq!(key(requested_by(42)), Some(MARKER_KEY));
        assert_eq!(key(created_by(42)), key(created_by(0)));
        assert_ne!(key(created_by(42)), Some(MARKER_KEY));
        assert_eq!(marker_key("[requested by goroutine ]"), None);
        assert_eq!(marker_key("[created by goroutine x]"), None);
        assert_eq!(marker_key("main.main"), None);
        assert_eq!(marker_text(0xffff_ffff_8100_0000), None);
    }

    #[test]
    fn a_socket_marker_is_one_frame_of_its_own() {
        let m = socket_requested_by();
        assert_eq!(
            marker_text(m.addr).as_deref(),
            Some("[socket requested by]")
        );
        assert!(is_marker_text("[socket requested by]"));
        assert!(is_marker_text("[created by goroutine 4]"));
        assert!(!is_marker_text("[jit]"));
        assert_eq!(grouping_key(&m), m);
        // The frame after it is the probed function's entry: looked up as is.
        let f = frames_of_addresses(&[0x40_1000, 0x40_2000, m.addr, 0x40_3000, 0x40_4000]);
        let lookups: Vec<u64> = f.iter().map(|f| f.lookup).collect();
        assert_eq!(
            lookups,
            vec![0x40_1000, 0x40_1fff, m.addr, 0x40_3000, 0x40_3fff]
        );
    }
}
