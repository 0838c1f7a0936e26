//! Go: the goroutine that asked for a connection, joined to the stack of the goroutine that
//! dialed it.
//!
//! net/http dials in a goroutine of its own: `(*Transport).queueForDial(w)` runs in the
//! goroutine that asks (a handler's `client.Get`), and `(*Transport).dialConnFor(w)` in the
//! goroutine that dials, started there or (with `MaxConnsPerHost`) by whichever goroutine freed a
//! connection. The kernel reports both with the `*wantConn` w and the goroutine ids
//! (`Event::GoLink`), and every birth of a Go program with its goroutine and parent goroutine
//! (`Open::goid`, `parent_goid`). A birth in a dialing goroutine (or in a goroutine the dialer
//! started, such as the racers of a dual-stack dial, known by their parent on Go 1.21+) gets the
//! requester's stack after its own, behind a marker frame. Other births in a goroutine get the
//! `go` statement that started it (`runtime.g.gopc`, `Open::gopc`), behind a marker frame too:
//! a goroutine a library started (`database/sql`'s connection opener) is named by its creator.
use std::collections::VecDeque;

use fdtrace_common::go;

use crate::{
    events::GoLink,
    unwind::{RawFrame, StackUnwinder, Unwound},
};

/// The goroutine id in a marker's address.
use crate::frame_tags::LOW_BITS as MARKER_ID_BITS;
/// Addresses with these top 16 bits stand for a marker frame, never for code: they are not
/// canonical x86_64 addresses (bits 63 to 47 differ), so no stack holds them. The goroutine
/// that asked for a connection follows a `REQUESTED` marker; the `go` statement that started
/// the birth's goroutine follows a `CREATED` one.
use crate::frame_tags::{GO_CREATED as CREATED, GO_REQUESTED as REQUESTED};

/// Requests waiting for their dial, and dialing goroutines, kept at most (the oldest go first).
const MAX_LINKS: usize = 4096;

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

/// The text of a marker frame, if `addr` is one.
pub fn marker_text(addr: u64) -> Option<String> {
    let id = addr & MARKER_ID_BITS;
    match addr & !MARKER_ID_BITS {
        REQUESTED => Some(format!("[requested by goroutine {id}]")),
        CREATED if id == 0 => Some(CREATED_KEY.into()),
        CREATED => Some(format!("[created by goroutine {id}]")),
        _ => None,
    }
}

/// A marker frame's text without its goroutine: how sites are told apart across recordings.
pub const MARKER_KEY: &str = "[requested by goroutine]";
const CREATED_KEY: &str = "[created by a goroutine]";

/// The goroutine-free text of a marker frame's text (see [`MARKER_KEY`]), if it is one.
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
            let exact = prev.is_none_or(|p: u64| p & !MARKER_ID_BITS == REQUESTED)
                || marker_text(addr).is_some();
            prev = Some(addr);
            RawFrame {
                addr,
                lookup: if exact { addr } else { addr.wrapping_sub(1) },
            }
        })
        .collect()
}

struct Request {
    goid: u64,
    stack: Unwound,
}

/// The links of one process.
#[derive(Default)]
pub struct GoLinks {
    /// `*wantConn` → the request, until its dial begins.
    requests: foldhash::HashMap<u64, Request>,
    request_order: VecDeque<u64>,
    /// Dialing goroutine → the request it dials for.
    dials: foldhash::HashMap<u64, Request>,
    dial_order: VecDeque<u64>,
}

impl GoLinks {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.dials.is_empty()
    }

    /// Take one probe's report.
    pub fn on_link(&mut self, l: GoLink, unwinder: &StackUnwinder) {
        if l.role == go::REQUEST {
            let stack = unwinder.unwind_fp(&l.stack);
            insert_bounded(
                &mut self.requests,
                &mut self.request_order,
                l.conn,
                Request {
                    goid: l.goid,
                    stack,
                },
            );
        } else if l.role == go::DIAL {
            // A dial for a request not seen (asked for before tracing began) stays unlinked.
            let Some(r) = self.requests.remove(&l.conn) else {
                return;
            };
            insert_bounded(&mut self.dials, &mut self.dial_order, l.goid, r);
        }
    }

    /// `own` (a birth's stack in goroutine `goid`, started by goroutine `parent` at `gopc`)
    /// followed by the stack of the goroutine that asked for the connection being dialed, if
    /// any, or else by the `go` statement that started the goroutine (as Go's own tracebacks
    /// end with "created by"; not for the main goroutine, which the runtime starts).
    pub fn join(&self, own: Unwound, goid: u64, parent: u64, gopc: u64) -> Unwound {
        if goid == 0 {
            return own;
        }
        let request = if self.dials.is_empty() {
            None
        } else {
            self.dials
                .get(&goid)
                .or_else(|| (parent != 0).then(|| self.dials.get(&parent)).flatten())
        };
        let mut joined = own;
        if let Some(r) = request {
            joined.frames.push(requested_by(r.goid));
            joined.frames.extend(r.stack.frames.iter().copied());
            joined.truncated = r.stack.truncated;
        } else if goid != 1 && gopc != 0 && !joined.truncated && !joined.frames.is_empty() {
            joined.frames.push(created_by(parent));
            joined.frames.push(RawFrame {
                addr: gopc,
                lookup: gopc - 1,
            });
        }
        joined
    }
}

fn insert_bounded<V>(
    map: &mut foldhash::HashMap<u64, V>,
    order: &mut VecDeque<u64>,
    key: u64,
    value: V,
) {
    if map.insert(key, value).is_none() {
        order.push_back(key);
    }
    while map.len() > MAX_LINKS {
        match order.pop_front() {
            Some(k) => {
                map.remove(&k);
            }
            None => break,
        }
    }
    // Keys removed otherwise (a request taken by its dial) leave stale entries in `order`.
    if order.len() > 2 * MAX_LINKS {
        order.retain(|k| map.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::GoLink, procinfo::Mapping, unwind::Method};
    use fdtrace_common::Header;

    fn unwinder() -> StackUnwinder {
        let mut u = StackUnwinder::new();
        u.set_mappings(vec![Mapping {
            start: 0x40_0000,
            end: 0x80_0000,
            offset: 0,
            path: "/bin/svc".into(),
            source: None,
        }]);
        u
    }

    fn link(role: u32, goid: u64, conn: u64, stack: &[u64]) -> GoLink {
        GoLink {
            hdr: Header::default(),
            role,
            goid,
            conn,
            stack: stack.to_vec(),
        }
    }

    fn own(addrs: &[u64]) -> Unwound {
        Unwound {
            frames: addrs
                .iter()
                .map(|&a| RawFrame {
                    addr: a,
                    lookup: a - 1,
                })
                .collect(),
            truncated: false,
            method: Method::Fp,
            ..Default::default()
        }
    }

    #[test]
    fn a_dialing_goroutine_gets_its_requester() {
        let u = unwinder();
        let mut links = GoLinks::default();
        links.on_link(link(go::REQUEST, 7, 0xc000, &[0x40_1000, 0x40_2000]), &u);
        links.on_link(link(go::DIAL, 9, 0xc000, &[]), &u);
        let j = links.join(own(&[0x40_5000, 0x40_6000]), 9, 7, 0x40_7000);
        let addrs: Vec<u64> = j.frames.iter().map(|f| f.addr).collect();
        assert_eq!(
            addrs,
            vec![
                0x40_5000,
                0x40_6000,
                requested_by(7).addr,
                0x40_1000,
                0x40_2000
            ]
        );
        assert_eq!(
            marker_text(j.frames[2].addr).as_deref(),
            Some("[requested by goroutine 7]")
        );
        // The requester's first frame is the probed function's entry: looked up as is.
        assert_eq!(j.frames[3].lookup, 0x40_1000);
        assert_eq!(j.frames[4].lookup, 0x40_2000 - 1);
        // A goroutine the dialer started (Go 1.21+ knows its parent).
        let racer = links.join(own(&[0x40_5000]), 11, 9, 0x40_7000);
        assert_eq!(racer.frames.len(), 4);
        // Another goroutine, and a birth whose goroutine is unknown, keep their own stacks.
        assert_eq!(links.join(own(&[0x40_5000]), 12, 1, 0).frames.len(), 1);
        assert_eq!(
            links.join(own(&[0x40_5000]), 0, 9, 0x40_7000).frames.len(),
            1
        );
    }

    #[test]
    fn other_goroutines_end_with_their_creator() {
        let links = GoLinks::default();
        let j = links.join(own(&[0x40_5000, 0x40_6000]), 12, 3, 0x40_7000);
        let addrs: Vec<u64> = j.frames.iter().map(|f| f.addr).collect();
        assert_eq!(
            addrs,
            vec![0x40_5000, 0x40_6000, created_by(3).addr, 0x40_7000]
        );
        assert_eq!(
            marker_text(j.frames[2].addr).as_deref(),
            Some("[created by goroutine 3]")
        );
        // gopc is the return address of the `go` statement's call: looked up on the call.
        assert_eq!(j.frames[3].lookup, 0x40_7000 - 1);
        // Before Go 1.21 the parent is unknown.
        let old = links.join(own(&[0x40_5000]), 12, 0, 0x40_7000);
        assert_eq!(
            marker_text(old.frames[1].addr).as_deref(),
            Some("[created by a goroutine]")
        );
        // Not the main goroutine (the runtime starts it), not without a gopc, not after a
        // truncated stack, not for an unknown goroutine.
        assert_eq!(
            links.join(own(&[0x40_5000]), 1, 0, 0x40_7000).frames.len(),
            1
        );
        assert_eq!(links.join(own(&[0x40_5000]), 12, 3, 0).frames.len(), 1);
        assert_eq!(
            links.join(own(&[0x40_5000]), 0, 0, 0x40_7000).frames.len(),
            1
        );
        let mut cut = own(&[0x40_5000]);
        cut.truncated = true;
        assert_eq!(links.join(cut, 12, 3, 0x40_7000).frames.len(), 1);
    }

    #[test]
    fn recorded_addresses_are_looked_up_as_they_were_unwound() {
        let u = unwinder();
        let mut links = GoLinks::default();
        links.on_link(link(go::REQUEST, 7, 0xc000, &[0x40_1000, 0x40_2000]), &u);
        links.on_link(link(go::DIAL, 9, 0xc000, &[]), &u);
        for j in [
            links.join(own(&[0x40_5000, 0x40_6000]), 9, 7, 0),
            GoLinks::default().join(own(&[0x40_5000, 0x40_6000]), 12, 3, 0x40_7000),
        ] {
            let mut unwound = j.frames.clone();
            // A birth's first frame is its instruction pointer, looked up as is.
            unwound[0].lookup = unwound[0].addr;
            let addrs: Vec<u64> = unwound.iter().map(|f| f.addr).collect();
            assert_eq!(frames_of_addresses(&addrs), unwound);
        }
    }

    #[test]
    fn dials_without_a_request_seen_and_stale_links_are_left_alone() {
        let u = unwinder();
        let mut links = GoLinks::default();
        links.on_link(link(go::DIAL, 9, 0xc000, &[]), &u);
        assert!(links.is_empty());
        // Linked once: a request is taken by its dial.
        links.on_link(link(go::REQUEST, 7, 0xc000, &[0x40_1000]), &u);
        links.on_link(link(go::DIAL, 9, 0xc000, &[]), &u);
        links.on_link(link(go::DIAL, 10, 0xc000, &[]), &u);
        assert_eq!(links.join(own(&[0x40_5000]), 10, 0, 0).frames.len(), 1);
        assert_eq!(links.join(own(&[0x40_5000]), 9, 0, 0).frames.len(), 3);
        for i in 0..(MAX_LINKS as u64 + 10) {
            links.on_link(link(go::REQUEST, 100 + i, 0x1000 + i, &[0x40_1000]), &u);
        }
        assert_eq!(links.requests.len(), MAX_LINKS);
        // The oldest requests went first.
        assert!(!links.requests.contains_key(&0x1000));
        assert!(
            links
                .requests
                .contains_key(&(0x1000 + MAX_LINKS as u64 + 9))
        );
    }

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
}
