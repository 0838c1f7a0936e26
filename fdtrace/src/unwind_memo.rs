//! What the unwinder keeps between stacks: the answers of `needs_scan` per address, and the
//! last walk from each set of registers with the words of the stack it read.
use std::cell::Cell;

use crate::unwind::Unwound;

/// How many walks `StackUnwinder::unwind` keeps (all are dropped when it is full): a few
/// hundred bytes each, per traced process; a hot call site's walk is kept again at once.
pub(crate) const WALKS_KEPT: usize = 256;

/// A kept walk: the words of the copy it read (None: beyond the copy), what it found and how
/// much stack its frames took.
pub(crate) struct Walk {
    pub(crate) reads: Vec<(u64, Option<u64>)>,
    pub(crate) unwound: Unwound,
    pub(crate) stack_bytes: u64,
    /// This walk's number, never given to another (`next_serial`): what a caller keeps an
    /// answer of its own under (`StackUnwinder::kept_walk`).
    pub(crate) serial: u64,
}

/// A new walk's number, unique in this process (across unwinders).
pub(crate) fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Walk {
    /// Whether this walk read the same words in `stack` (a copy from `sp`) as in its own.
    pub(crate) fn holds_for(&self, stack: &[u8], sp: u64) -> bool {
        self.reads
            .iter()
            .all(|&(a, w)| stack_word(stack, sp, a) == w)
    }
}

/// The word at `addr` in a copy of the stack from `sp` up, if the copy holds it.
pub(crate) fn stack_word(stack: &[u8], sp: u64, addr: u64) -> Option<u64> {
    let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
    let bytes = stack.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A direct-mapped memo of a yes/no answer per address: a slot holds the last address that
/// hashed to it, with its answer.
pub(crate) struct ScanMemo(Box<[Cell<(u64, bool)>]>);

impl ScanMemo {
    const SLOTS: usize = 1024;
    /// An address no slot can hold for real (not canonical on x86-64): the empty slot.
    pub(crate) const EMPTY: u64 = u64::MAX;

    pub(crate) fn clear(&mut self) {
        self.0.iter().for_each(|s| s.set((Self::EMPTY, false)));
    }

    pub(crate) fn get_or(&self, addr: u64, answer: impl FnOnce() -> bool) -> bool {
        if addr == Self::EMPTY {
            return answer();
        }
        // Fibonacci hashing: the top bits of the product spread nearby addresses.
        let slot = &self.0[(addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize];
        match slot.get() {
            (a, yes) if a == addr => yes,
            _ => {
                let yes = answer();
                slot.set((addr, yes));
                yes
            }
        }
    }
}

impl Default for ScanMemo {
    fn default() -> Self {
        Self(vec![Cell::new((Self::EMPTY, false)); Self::SLOTS].into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::{RuntimeFrame, StackUnwinder};

    #[test]
    fn a_kept_walk_is_given_again_only_where_the_copy_holds_the_words_it_read() {
        let (ip, sp, bp, mut stack) = crate::own_stack::capture_here();
        let maps = crate::procinfo::exec_maps(std::process::id()).0;
        let fresh = |stack: &[u8]| {
            let mut u = StackUnwinder::new();
            u.set_mappings(maps.clone());
            u.unwind(ip, sp, bp, stack, &mut |_| RuntimeFrame::Unknown)
        };
        let mut kept = StackUnwinder::new();
        kept.set_mappings(maps.clone());
        let first = kept.unwind(ip, sp, bp, &stack, &mut |_| RuntimeFrame::Unknown);
        assert!(!first.frames.is_empty());
        assert_eq!(first, fresh(&stack));
        let reads = kept.walks[&(ip, sp, bp)].reads.clone();
        let read_words: Vec<u64> = reads.iter().filter_map(|r| r.1.map(|_| r.0)).collect();
        assert!(!read_words.is_empty(), "the walk read no word of the copy");
        // The same copy: the kept walk, which read the same words.
        assert_eq!(
            kept.unwind(ip, sp, bp, &stack, &mut |_| RuntimeFrame::Unknown),
            first
        );
        // A word it read changed (the return address or the saved frame pointer it followed
        // first): walked again, as a fresh unwinder walks it.
        let off = (read_words[0] - sp) as usize;
        stack[off..off + 8].copy_from_slice(&0u64.to_le_bytes());
        let changed = kept.unwind(ip, sp, bp, &stack, &mut |_| RuntimeFrame::Unknown);
        assert_eq!(changed, fresh(&stack));
        assert_eq!(kept.walks[&(ip, sp, bp)].reads[0].1, reads[0].1.map(|_| 0));
        // Other mappings: nothing kept.
        kept.set_mappings(Vec::new());
        assert!(kept.walks.is_empty());
    }

    #[test]
    fn the_scan_memo_answers_as_its_question_would_for_every_address() {
        let mut memo = ScanMemo::default();
        let asked = Cell::new(0);
        let question = |a: u64| {
            asked.set(asked.get() + 1);
            a.is_multiple_of(3)
        };
        // Many more addresses than slots, so that they share slots: right after an address
        // was answered, it is answered again from the memo.
        let addrs: Vec<u64> = (0..5000u64).map(|i| 0x7f00_0000_0000 + i * 7).collect();
        for _ in 0..2 {
            for &a in &addrs {
                assert_eq!(
                    memo.get_or(a, || question(a)),
                    a.is_multiple_of(3),
                    "{a:#x}"
                );
                let before = asked.get();
                assert_eq!(
                    memo.get_or(a, || question(a)),
                    a.is_multiple_of(3),
                    "{a:#x} again"
                );
                assert_eq!(asked.get(), before, "{a:#x} asked twice in a row");
            }
        }
        assert!(asked.get() >= addrs.len());
        // Emptied, it asks again; the empty slot's marker is never taken for an address.
        memo.clear();
        assert!(memo.get_or(ScanMemo::EMPTY, || true));
        assert!(!memo.get_or(ScanMemo::EMPTY, || false));
        assert!(memo.get_or(addrs[0], || true));
    }
}
