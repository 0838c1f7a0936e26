//! Node.js: a socket that `net.connect()` asked for, joined at its birth to the JavaScript that
//! asked.
//!
//! The socket is created when the connect runs, a tick later (`process.nextTick`, or a DNS
//! lookup's callback): `uv_tcp_connect` → `uv__tcp_connect` → `socket(2)`, with only Node's own
//! `internalConnect` above it. Its libuv handle was made at once, in the program's JavaScript
//! (`new TCP()` → `uv_tcp_init`). The kernel reports both (`Event::UvHandle`): the creation
//! with its stack, unwound here as a birth's is, and the connect with its thread and the return
//! address at its stack pointer. A socket born on that thread while that connect is still on the
//! stack (the word at the connect's stack pointer in the birth's copy is its return address)
//! gets the handle's stack after its own, behind a marker frame.
use crate::{bounded_map::BoundedMap, link_markers::socket_requested_by, unwind::Unwound};

/// Handles whose creation is kept until their connect (the oldest go first).
const MAX_HANDLES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Connect {
    handle: u64,
    sp: u64,
    ret: u64,
}

/// The handles and connects of one process.
pub struct UvLinks {
    /// `uv_tcp_t *` → the stack that made it, until its socket is born.
    handles: BoundedMap<Unwound>,
    /// Thread → the connect it entered last.
    connects: foldhash::HashMap<u32, Connect>,
}

impl Default for UvLinks {
    fn default() -> Self {
        Self {
            handles: BoundedMap::new(MAX_HANDLES),
            connects: Default::default(),
        }
    }
}

impl UvLinks {
    /// A handle was made by the code of `stack` (its first frame `uv_tcp_init`'s entry).
    pub fn on_init(&mut self, handle: u64, stack: Unwound) {
        self.handles.insert(handle, stack);
    }

    /// Thread `tid` entered `uv_tcp_connect` for `handle`, with `ret` at its stack pointer `sp`.
    pub fn on_connect(&mut self, tid: u32, handle: u64, sp: u64, ret: u64) {
        // A connect on a handle made before tracing began links nothing.
        if !self.handles.contains_key(&handle) {
            self.connects.remove(&tid);
            return;
        }
        self.connects.insert(tid, Connect { handle, sp, ret });
    }

    /// Whether a connect of `tid` waits for its socket's birth (`join` would look at it).
    pub fn waits_on(&self, tid: u32) -> bool {
        self.connects.contains_key(&tid)
    }

    /// `own` (a birth's stack on thread `tid`, whose stack from `sp` is `copy`), followed by the
    /// stack that made the handle being connected, if the birth is that connect's socket.
    pub fn join(&mut self, own: Unwound, tid: u32, sp: u64, copy: &[u8]) -> Unwound {
        if self.connects.is_empty() {
            return own;
        }
        let Some(&c) = self.connects.get(&tid) else {
            return own;
        };
        let inside = c.sp > sp
            && usize::try_from(c.sp - sp)
                .ok()
                .and_then(|at| copy.get(at..at.checked_add(8)?))
                .is_some_and(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")) == c.ret);
        if !inside {
            return own;
        }
        // One socket per connect.
        self.connects.remove(&tid);
        let Some(made) = self.handles.remove(&c.handle) else {
            return own;
        };
        let mut joined = own;
        joined.frames.push(socket_requested_by());
        let first = joined.frames.len();
        joined.frames.extend(made.frames.iter().copied());
        joined.truncated = made.truncated;
        joined
            .jit_slots
            .extend(made.jit_slots.iter().map(|&(i, m, b)| (first + i, m, b)));
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{link_markers::marker_text, unwind::Method};

    fn stack(addrs: &[u64]) -> Unwound {
        Unwound::of_return_addresses(addrs, Method::Dwarf)
    }

    /// A birth's stack copy from `sp`, with `ret` at `at` bytes.
    fn copy_with(at: usize, ret: u64) -> Vec<u8> {
        let mut c = vec![0u8; 2048];
        c[at..at + 8].copy_from_slice(&ret.to_le_bytes());
        c
    }

    #[test]
    fn a_socket_born_in_its_connect_gets_the_handle_s_creator() {
        let mut links = UvLinks::default();
        links.on_init(0xaa00, stack(&[0x40_1000, 0x40_2000]));
        links.on_connect(7, 0xaa00, 0x7ff0_1000, 0x40_9999);
        // Born deeper on the same thread, the connect's return address still in place.
        let copy = copy_with(0x300, 0x40_9999);
        let j = links.join(stack(&[0x40_5000]), 7, 0x7ff0_1000 - 0x300, &copy);
        let addrs: Vec<u64> = j.frames.iter().map(|f| f.addr).collect();
        assert_eq!(
            addrs,
            vec![0x40_5000, socket_requested_by().addr, 0x40_1000, 0x40_2000]
        );
        assert_eq!(
            marker_text(j.frames[1].addr).as_deref(),
            Some("[socket requested by]")
        );
        // Linked once: the next birth keeps its own stack.
        let again = links.join(stack(&[0x40_5000]), 7, 0x7ff0_1000 - 0x300, &copy);
        assert_eq!(again.frames.len(), 1);
    }

    #[test]
    fn births_outside_the_connect_keep_their_own_stacks() {
        let mut links = UvLinks::default();
        links.on_init(0xaa00, stack(&[0x40_1000]));
        links.on_connect(7, 0xaa00, 0x7ff0_1000, 0x40_9999);
        // Another thread; the connect returned (its slot overwritten); shallower than it;
        // beyond the copy.
        let copy = copy_with(0x300, 0x40_9999);
        let sp = 0x7ff0_1000 - 0x300;
        assert_eq!(links.join(stack(&[1]), 8, sp, &copy).frames.len(), 1);
        assert_eq!(
            links
                .join(stack(&[1]), 7, sp, &copy_with(0x300, 0x40_1234))
                .frames
                .len(),
            1
        );
        assert_eq!(
            links.join(stack(&[1]), 7, 0x7ff0_1008, &copy).frames.len(),
            1
        );
        assert_eq!(
            links
                .join(stack(&[1]), 7, 0x7ff0_1000 - 0x1000, &copy)
                .frames
                .len(),
            1
        );
        // Still linked when the right birth comes.
        assert_eq!(links.join(stack(&[1]), 7, sp, &copy).frames.len(), 3);
        // A connect on a handle made before tracing began links nothing.
        links.on_connect(7, 0xbb00, 0x7ff0_1000, 0x40_9999);
        assert_eq!(links.join(stack(&[1]), 7, sp, &copy).frames.len(), 1);
    }
}
