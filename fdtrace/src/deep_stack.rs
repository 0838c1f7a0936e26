//! Stacks deeper than a birth record's own copy: language runtimes (see
//! `fdtrace_common::capture::DEEP_SHIFT`) get the rest of the stack in pieces sent by the kernel
//! just before the birth, by the same thread. They wait here until that birth arrives.
use fdtrace_common::{STACK_BYTES, capture};

/// Pieces waiting for their birth, per thread. A thread has at most one birth in flight, so a
/// piece of another birth (a birth lost with its record, a thread id reused) replaces them.
#[derive(Default)]
pub struct DeepStacks {
    pending: foldhash::HashMap<u32, Pending>,
}

struct Pending {
    sp: u64,
    /// The stack from `sp + STACK_BYTES` on, contiguous.
    bytes: Vec<u8>,
}

/// More threads with pieces waiting than this: they are stale (their births were lost).
const MAX_THREADS: usize = 4096;

impl DeepStacks {
    /// A piece of `tid`'s stack, `offset` bytes above `sp`.
    pub fn on_chunk(&mut self, tid: u32, sp: u64, offset: u32, bytes: &[u8]) {
        if self.pending.len() >= MAX_THREADS && !self.pending.contains_key(&tid) {
            self.pending.clear();
        }
        let first = offset as usize == STACK_BYTES;
        match self.pending.get_mut(&tid) {
            Some(p) if !first && p.sp == sp && offset as usize == STACK_BYTES + p.bytes.len() => {
                p.bytes.extend_from_slice(bytes);
            }
            _ if first => {
                let mut v = Vec::with_capacity(capture::MAX_CHUNKS as usize * capture::CHUNK_BYTES);
                v.extend_from_slice(bytes);
                self.pending.insert(tid, Pending { sp, bytes: v });
            }
            // Not the next piece of what is waiting: nothing it could continue.
            _ => {
                self.pending.remove(&tid);
            }
        }
    }

    /// Whether pieces of `tid`'s stack wait for its birth (`join` would take them).
    pub fn waits_on(&self, tid: u32) -> bool {
        self.pending.contains_key(&tid)
    }

    /// `tid`'s birth came without a stack copy: what waits for it is of no use.
    pub fn forget(&mut self, tid: u32) {
        self.pending.remove(&tid);
    }

    /// The whole stack of `tid`'s birth whose record holds `copy` (copied from `sp`): the copy
    /// followed by the pieces that came before it, or None when none fit it.
    pub fn join(&mut self, tid: u32, sp: u64, copy: &[u8]) -> Option<Vec<u8>> {
        let p = self.pending.remove(&tid)?;
        if p.sp != sp || copy.len() != STACK_BYTES {
            return None;
        }
        let mut all = Vec::with_capacity(copy.len() + p.bytes.len());
        all.extend_from_slice(copy);
        all.extend_from_slice(&p.bytes);
        Some(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: usize = capture::CHUNK_BYTES;

    #[test]
    fn pieces_follow_the_copy_in_order() {
        let mut d = DeepStacks::default();
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        d.on_chunk(7, 0x1000, (STACK_BYTES + C) as u32, &[2; 100]);
        let all = d.join(7, 0x1000, &[0; STACK_BYTES]).unwrap();
        assert_eq!(all.len(), STACK_BYTES + C + 100);
        assert_eq!(all[STACK_BYTES - 1], 0);
        assert_eq!(all[STACK_BYTES], 1);
        assert_eq!(all[STACK_BYTES + C], 2);
        // Taken once.
        assert!(d.join(7, 0x1000, &[0; STACK_BYTES]).is_none());
    }

    #[test]
    fn pieces_of_another_birth_are_not_joined() {
        let mut d = DeepStacks::default();
        // Another stack pointer (the birth those pieces were sent for was lost).
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        assert!(d.join(7, 0x2000, &[0; STACK_BYTES]).is_none());
        // Another thread.
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        assert!(d.join(8, 0x1000, &[0; STACK_BYTES]).is_none());
        assert!(d.join(7, 0x1000, &[0; STACK_BYTES]).is_some());
        // A gap between pieces (one lost): what came before it is dropped.
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        d.on_chunk(7, 0x1000, (STACK_BYTES + 2 * C) as u32, &[1; C]);
        assert!(d.join(7, 0x1000, &[0; STACK_BYTES]).is_none());
        // A copy cut short (the stack ended): the pieces cannot follow it.
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        assert!(d.join(7, 0x1000, &[0; 512]).is_none());
        // A new first piece starts over.
        d.on_chunk(7, 0x1000, STACK_BYTES as u32, &[1; C]);
        d.on_chunk(7, 0x3000, STACK_BYTES as u32, &[3; C]);
        assert_eq!(
            d.join(7, 0x3000, &[0; STACK_BYTES]).unwrap()[STACK_BYTES],
            3
        );
    }
}
