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
use fdtrace_common::go;

use crate::{
    bounded_map::BoundedMap,
    events::GoLink,
    link_markers::{created_by, requested_by},
    unwind::{RawFrame, StackUnwinder, Unwound},
};

/// Requests waiting for their dial, and dialing goroutines, kept at most (the oldest go first).
const MAX_LINKS: usize = 4096;

struct Request {
    goid: u64,
    stack: Unwound,
}

/// The links of one process.
pub struct GoLinks {
    /// `*wantConn` → the request, until its dial begins.
    requests: BoundedMap<Request>,
    /// Dialing goroutine → the request it dials for.
    dials: BoundedMap<Request>,
}

impl Default for GoLinks {
    fn default() -> Self {
        Self {
            requests: BoundedMap::new(MAX_LINKS),
            dials: BoundedMap::new(MAX_LINKS),
        }
    }
}

impl GoLinks {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.dials.is_empty()
    }

    /// Take one probe's report.
    pub fn on_link(&mut self, l: GoLink, unwinder: &StackUnwinder) {
        if l.role == go::REQUEST {
            let stack = unwinder.unwind_fp(&l.stack);
            self.requests.insert(
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
            self.dials.insert(l.goid, r);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::GoLink,
        link_markers::{frames_of_addresses, marker_text},
        procinfo::Mapping,
        unwind::Method,
    };
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
        Unwound::of_return_addresses(addrs, Method::Fp)
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
}
