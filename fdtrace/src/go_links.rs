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
//! requester's stack after its own, behind a marker frame.
use std::collections::VecDeque;

use fdtrace_common::go;

use crate::{
    events::GoLink,
    unwind::{RawFrame, StackUnwinder, Unwound},
};

/// Addresses with these top 16 bits stand for a marker frame, never for code: they are not
/// canonical x86_64 addresses (bits 63 to 47 differ), so no stack holds them.
const MARKER_BASE: u64 = 0xdead_0000_0000_0000;
/// The goroutine id in a marker's address.
const MARKER_ID_BITS: u64 = (1 << 48) - 1;

/// Requests waiting for their dial, and dialing goroutines, kept at most (the oldest go first).
const MAX_LINKS: usize = 4096;

/// The marker frame between a dialing goroutine's frames and those of the goroutine that asked
/// for the connection.
pub fn requested_by(goid: u64) -> RawFrame {
    let addr = MARKER_BASE | (goid & MARKER_ID_BITS);
    RawFrame { addr, lookup: addr }
}

/// The text of a marker frame, if `addr` is one.
pub fn marker_text(addr: u64) -> Option<String> {
    (addr & !MARKER_ID_BITS == MARKER_BASE)
        .then(|| format!("[requested by goroutine {}]", addr & MARKER_ID_BITS))
}

/// A marker frame's text without its goroutine: how sites are told apart across recordings.
pub const MARKER_KEY: &str = "[requested by goroutine]";

/// Whether a symbolized frame's function is a marker's text.
pub fn is_marker_text(function: &str) -> bool {
    function
        .strip_prefix("[requested by goroutine ")
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The frame as stacks are grouped: every marker alike, whichever goroutine asked (each request
/// is made by a goroutine of its own; the site keeps the first one's number).
pub fn grouping_key(f: &RawFrame) -> RawFrame {
    if marker_text(f.addr).is_some() {
        requested_by(0)
    } else {
        *f
    }
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

    /// `own` (a birth's stack in goroutine `goid`, started by `parent`) followed by the stack of
    /// the goroutine that asked for the connection being dialed, if any.
    pub fn join(&self, own: Unwound, goid: u64, parent: u64) -> Unwound {
        if goid == 0 || self.dials.is_empty() {
            return own;
        }
        let Some(r) = self
            .dials
            .get(&goid)
            .or_else(|| (parent != 0).then(|| self.dials.get(&parent)).flatten())
        else {
            return own;
        };
        let mut joined = own;
        joined.frames.push(requested_by(r.goid));
        joined.frames.extend(r.stack.frames.iter().copied());
        joined.truncated = r.stack.truncated;
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
        }
    }

    #[test]
    fn a_dialing_goroutine_gets_its_requester() {
        let u = unwinder();
        let mut links = GoLinks::default();
        links.on_link(link(go::REQUEST, 7, 0xc000, &[0x40_1000, 0x40_2000]), &u);
        links.on_link(link(go::DIAL, 9, 0xc000, &[]), &u);
        let j = links.join(own(&[0x40_5000, 0x40_6000]), 9, 7);
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
        let racer = links.join(own(&[0x40_5000]), 11, 9);
        assert_eq!(racer.frames.len(), 4);
        // Another goroutine, and a birth whose goroutine is unknown, keep their own stacks.
        assert_eq!(links.join(own(&[0x40_5000]), 12, 1).frames.len(), 1);
        assert_eq!(links.join(own(&[0x40_5000]), 0, 9).frames.len(), 1);
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
        assert_eq!(links.join(own(&[0x40_5000]), 10, 0).frames.len(), 1);
        assert_eq!(links.join(own(&[0x40_5000]), 9, 0).frames.len(), 3);
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
        assert!(is_marker_text(&marker_text(requested_by(42).addr).unwrap()));
        assert!(!is_marker_text("[requested by goroutine ]"));
        assert!(!is_marker_text("main.main"));
        assert_eq!(marker_text(0xffff_ffff_8100_0000), None);
    }
}
