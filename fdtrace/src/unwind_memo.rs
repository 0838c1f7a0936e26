//! What the unwinder keeps between stacks: the answers of `needs_scan` per address, and the
//! last walk from each set of registers with the words of the stack it read.
use std::cell::Cell;

use crate::unwind::Unwound;

/// How many walks `StackUnwinder::unwind` keeps (all are dropped when it is full): a few
/// hundred bytes each, per traced process; a hot call site's walk is kept again at once.
const WALKS_KEPT: usize = 256;

/// A word of the stack copy a walk read: where, what it held (None: beyond the copy), and
/// whether the walk's answer depends on what it held (`Walks::keep`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Read {
    pub(crate) addr: u64,
    pub(crate) word: Option<u64>,
    pub(crate) pinned: bool,
}

/// A kept walk: the frame pointer it started from and the words of the copy it read, what it
/// found and how much stack its frames took.
pub(crate) struct Walk {
    bp: u64,
    /// Whether the answer depends on the frame pointer the walk started from.
    bp_pinned: bool,
    pub(crate) reads: Vec<Read>,
    /// What `reads` ask of a copy, for `holds_for`.
    test: CopyTest,
    pub(crate) unwound: Unwound,
    pub(crate) stack_bytes: u64,
    /// This walk's number, never given to another (`next_serial`): what a caller keeps an
    /// answer of its own under (`StackUnwinder::kept_walk`).
    pub(crate) serial: u64,
}

/// A new walk's number, unique in this process (across unwinders).
fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Walk {
    /// Whether this walk, from `bp`, would read the same words in `stack` (a copy from `sp`)
    /// where its answer depends on them, and find each other word it read in the copy.
    pub(crate) fn holds_for(&self, stack: &[u8], bp: u64) -> bool {
        let t = &self.test;
        (!self.bp_pinned || bp == self.bp)
            && stack.len() >= t.len_at_least
            && stack.len() < t.len_below
            && t.words.iter().all(|&(off, w)| {
                debug_assert!(off + 8 <= t.len_at_least);
                // SAFETY: a pinned word ends at `len_at_least` at most (`CopyTest::of`), and the
                // copy is that long (checked above). Every birth of a traced process asks this
                // of a few dozen words: without a bounds check each, the test costs half.
                u64::from_le(unsafe { stack.as_ptr().add(off).cast::<u64>().read_unaligned() }) == w
            })
    }

    /// Whether `unwound`, which read `reads`, is this walk again with other values in some of
    /// the same words: the same frames from the same stack reads, both walks ended by their
    /// reads (`ended_by_reads`).
    fn same_but_for_values(&self, unwound: &Unwound, stack_bytes: u64, reads: &[Read]) -> bool {
        ended_by_reads(&self.unwound, &self.reads)
            && ended_by_reads(unwound, reads)
            && self.unwound.frames == unwound.frames
            && self.unwound.truncated == unwound.truncated
            && self.stack_bytes == stack_bytes
            && self.reads.len() == reads.len()
            && self
                .reads
                .iter()
                .zip(reads)
                .all(|(a, b)| a.addr == b.addr && a.word.is_some() == b.word.is_some())
    }
}

/// What a walk's reads ask of a copy of the stack from its sp: as long as the words it found
/// (`len_at_least`), shorter than the first it did not (`len_below`), and the pinned words
/// found again (offsets in the copy).
struct CopyTest {
    len_at_least: usize,
    len_below: usize,
    words: Vec<(usize, u64)>,
}

impl CopyTest {
    fn of(reads: &[Read], sp: u64) -> Self {
        let mut t = CopyTest {
            len_at_least: 0,
            len_below: usize::MAX,
            words: Vec::new(),
        };
        for r in reads {
            // Below sp: never in a copy from sp (`stack_word`), whatever the copy.
            let Some(off) = r.addr.checked_sub(sp) else {
                continue;
            };
            let end = usize::try_from(off.saturating_add(8)).unwrap_or(usize::MAX);
            match r.word {
                Some(w) => {
                    t.len_at_least = t.len_at_least.max(end);
                    if r.pinned {
                        t.words.push((end - 8, w));
                    }
                }
                None => t.len_below = t.len_below.min(end),
            }
        }
        t
    }
}

/// Whether a walk ended where its reads say: at the end of the stack, or at a word beyond the
/// copy (its last read). A walk cut short otherwise may have stopped at a check of a value it
/// did not read from (the frame pointer it followed went backwards): no value of it is
/// unpinned.
fn ended_by_reads(unwound: &Unwound, reads: &[Read]) -> bool {
    !unwound.truncated || reads.last().is_some_and(|r| r.word.is_none())
}

/// The last walk from each (ip, sp) of a process, with what it read (`StackUnwinder::unwind`).
///
/// A saved frame pointer a walk reads (and the frame pointer it starts from) is, in code
/// built without frame pointers, any value the code kept in that register: a different one in
/// nearly every stack of the same call site. Such a value matters to the walk only if a later
/// step finds a frame from it, and then the words that step reads are found from it: two walks
/// that read the same words of the stack, found the same frames and ended by their reads
/// (`ended_by_reads`) while that value differed between them did not use it, and no other
/// value would be used (which words a step reads, and from what, depends only on the frames
/// found before). That value is then unpinned: the walk is given again whatever it holds.
/// Return addresses are never unpinned (they are the frames), nor any word of a walk that
/// searched the stack for return addresses (such a search is steered by the values it reads).
#[derive(Default)]
pub(crate) struct Walks(foldhash::HashMap<(u64, u64), Walk>);

impl Walks {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn of(&self, ip: u64, sp: u64) -> &Walk {
        &self.0[&(ip, sp)]
    }

    /// The kept walk from these registers that holds for this copy of the stack.
    pub(crate) fn get(&self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Option<&Walk> {
        self.0.get(&(ip, sp)).filter(|w| w.holds_for(stack, bp))
    }

    /// Keep a walk just made from (ip, sp, bp) with the reads it made (`searched`: it searched
    /// the stack for return addresses). A walk kept from (ip, sp) that it repeats with other
    /// values (`same_but_for_values`) lends it its number and the values it did not depend on.
    pub(crate) fn keep(
        &mut self,
        (ip, sp, bp): (u64, u64, u64),
        reads: Vec<(u64, Option<u64>)>,
        unwound: Unwound,
        stack_bytes: u64,
        searched: bool,
    ) {
        let mut reads: Vec<Read> = reads
            .into_iter()
            .map(|(addr, word)| Read {
                addr,
                word,
                pinned: true,
            })
            .collect();
        let (bp_pinned, serial) = match self.0.remove(&(ip, sp)) {
            Some(old) if !searched && old.same_but_for_values(&unwound, stack_bytes, &reads) => {
                for (new, old) in reads.iter_mut().zip(&old.reads) {
                    new.pinned = old.pinned && old.word == new.word;
                }
                (old.bp_pinned && old.bp == bp, old.serial)
            }
            _ => (true, next_serial()),
        };
        let walk = Walk {
            bp,
            bp_pinned,
            test: CopyTest::of(&reads, sp),
            reads,
            unwound,
            stack_bytes,
            serial,
        };
        if self.0.len() >= WALKS_KEPT {
            self.0.clear();
        }
        self.0.insert((ip, sp), walk);
    }
}

/// The word at `addr` in a copy of the stack from `sp` up, if the copy holds it.
pub(crate) fn stack_word(stack: &[u8], sp: u64, addr: u64) -> Option<u64> {
    let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
    let bytes = stack.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A direct-mapped memo of a yes/no answer per address: a slot holds the last address that
/// hashed to it, with its answer. Its slots (16 KB) are made at the first question.
pub(crate) struct ScanMemo(std::cell::OnceCell<Box<[Slot]>>);

/// An address and its answer.
type Slot = Cell<(u64, bool)>;

impl ScanMemo {
    const SLOTS: usize = 1024;
    /// An address no slot can hold for real (not canonical on x86-64): the empty slot.
    pub(crate) const EMPTY: u64 = u64::MAX;

    pub(crate) fn clear(&mut self) {
        if let Some(slots) = self.0.get() {
            slots.iter().for_each(|s| s.set((Self::EMPTY, false)));
        }
    }

    /// Its slots are made (a question was asked since it was made).
    #[cfg(test)]
    pub(crate) fn holds_slots(&self) -> bool {
        self.0.get().is_some()
    }

    pub(crate) fn get_or(&self, addr: u64, answer: impl FnOnce() -> bool) -> bool {
        if addr == Self::EMPTY {
            return answer();
        }
        let slots = self
            .0
            .get_or_init(|| vec![Cell::new((Self::EMPTY, false)); Self::SLOTS].into_boxed_slice());
        // Fibonacci hashing: the top bits of the product spread nearby addresses.
        let slot = &slots[(addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize];
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
        Self(std::cell::OnceCell::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::{RuntimeFrame, StackUnwinder};

    /// This test's own stack (ip, sp, bp, copy) and mappings, an unwinder that walked it, and
    /// what it found.
    struct Here {
        regs: (u64, u64, u64),
        stack: Vec<u8>,
        maps: Vec<crate::procinfo::Mapping>,
        kept: StackUnwinder,
        first: Unwound,
    }

    #[inline(never)]
    fn walked_here() -> Here {
        let (ip, sp, bp, stack) = crate::own_stack::capture_here();
        let maps = crate::procinfo::exec_maps(std::process::id()).0;
        let mut kept = StackUnwinder::new();
        kept.set_mappings(maps.clone());
        let first = kept.unwind(ip, sp, bp, &stack, &mut |_| RuntimeFrame::Unknown);
        assert!(!first.frames.is_empty());
        assert_eq!(first, fresh_walk(&maps, (ip, sp, bp), &stack));
        Here {
            regs: (ip, sp, bp),
            stack,
            maps,
            kept,
            first,
        }
    }

    /// A fresh unwinder's walk.
    fn fresh_walk(
        maps: &[crate::procinfo::Mapping],
        (ip, sp, bp): (u64, u64, u64),
        stack: &[u8],
    ) -> Unwound {
        let mut u = StackUnwinder::new();
        u.set_mappings(maps.to_vec());
        u.unwind(ip, sp, bp, stack, &mut |_| RuntimeFrame::Unknown)
    }

    /// Processes that map the same binaries share one copy of their bytes; a process that
    /// exited lets go of everything its unwinder held, and unwinds again once given mappings
    /// (a birth after its leader thread's exit).
    #[test]
    fn unwinders_share_binaries_and_let_go_of_them_at_exit() {
        let Here {
            regs: (ip, sp, bp),
            stack,
            maps,
            mut kept,
            first,
        } = walked_here();
        let mut other = StackUnwinder::new();
        other.set_mappings(maps.clone());
        assert!(kept.shares_a_binary_with(&other));
        kept.release();
        assert!(kept.mappings().is_empty());
        assert!(kept.holds_nothing());
        assert!(!other.holds_nothing());
        kept.set_mappings(maps.clone());
        let again = kept.unwind(ip, sp, bp, &stack, &mut |_| RuntimeFrame::Unknown);
        assert_eq!(again, first);
    }

    #[test]
    fn a_kept_walk_is_given_again_only_where_the_copy_holds_the_words_it_read() {
        let Here {
            regs: (ip, sp, bp),
            mut stack,
            maps,
            mut kept,
            first,
        } = walked_here();
        let fresh = |stack: &[u8]| fresh_walk(&maps, (ip, sp, bp), stack);
        let reads = kept.walks.of(ip, sp).reads.clone();
        let read_words: Vec<u64> = reads
            .iter()
            .filter_map(|r| r.word.map(|_| r.addr))
            .collect();
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
        assert_eq!(
            kept.walks.of(ip, sp).reads[0].word,
            reads[0].word.map(|_| 0)
        );
        // Other mappings: nothing kept.
        kept.set_mappings(Vec::new());
        assert!(kept.walks.is_empty());
    }

    #[test]
    fn a_kept_walk_answers_as_a_fresh_walk_whatever_the_words_and_frame_pointer_it_read() {
        let Here {
            regs: (ip, sp, bp),
            stack,
            maps,
            mut kept,
            first,
        } = walked_here();
        let fresh = |bp: u64, stack: &[u8]| fresh_walk(&maps, (ip, sp, bp), stack);
        let read_words: Vec<u64> = (kept.walks.of(ip, sp).reads.iter())
            .filter_map(|r| r.word.map(|_| r.addr))
            .collect();
        let mut unwind =
            |bp: u64, stack: &[u8]| kept.unwind(ip, sp, bp, stack, &mut |_| RuntimeFrame::Unknown);
        // Each word the walk read, and the frame pointer, given other values one at a time,
        // then together, twice each (the second time may be answered by the kept walk, with
        // what the first unpinned): always what a fresh walk finds.
        let mut variants: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, &addr) in read_words.iter().enumerate() {
            for k in 1..3u64 {
                let mut s = stack.clone();
                let off = (addr - sp) as usize;
                let w = u64::from_le_bytes(s[off..off + 8].try_into().unwrap());
                s[off..off + 8].copy_from_slice(&(w ^ (k << (4 + i % 8))).to_le_bytes());
                variants.push((bp, s));
            }
        }
        for k in 1..4u64 {
            variants.push((bp ^ (k << 4), stack.clone()));
        }
        let mut all = stack.clone();
        for &addr in &read_words {
            let off = (addr - sp) as usize;
            all[off..off + 8].copy_from_slice(&0x10u64.to_le_bytes());
        }
        variants.push((bp ^ 0x30, all));
        for (vbp, s) in variants.iter().chain(&variants) {
            assert_eq!(unwind(*vbp, s), fresh(*vbp, s));
            assert_eq!(unwind(bp, &stack), first);
        }
    }

    /// What `Walk::holds_for` asks, read by read.
    fn holds_read_by_read(w: &Walk, stack: &[u8], sp: u64, bp: u64) -> bool {
        (!w.bp_pinned || bp == w.bp)
            && w.reads.iter().all(|r| {
                let found = stack_word(stack, sp, r.addr);
                if r.pinned {
                    found == r.word
                } else {
                    found.is_some() == r.word.is_some()
                }
            })
    }

    #[test]
    fn a_walks_test_of_a_copy_asks_what_its_reads_do() {
        let Here {
            regs: (ip, sp, bp),
            stack,
            kept: u,
            ..
        } = walked_here();
        // Made up too: reads below sp, beyond the copy, unpinned; one walk kept of each.
        let mut walks = Walks::default();
        let ras = [0x401000, 0x402000];
        for bp in [0xb0, 0xb1] {
            let r = vec![
                (sp - 8, None),
                (sp, Some(bp)),
                (sp + 8, Some(0x402000)),
                (sp + 64, None),
            ];
            walks.keep((1, sp, bp), r, frames(&ras, true), 16, false);
        }
        for w in [u.walks.of(ip, sp), walks.of(1, sp)] {
            for len in (0..stack.len().min(4096)).step_by(8).chain([stack.len()]) {
                for flip in [
                    None,
                    Some(0),
                    Some(8),
                    Some(16),
                    Some(len.saturating_sub(8)),
                ] {
                    let mut copy = stack[..len].to_vec();
                    if let Some(b) = flip.filter(|&b| b < len) {
                        copy[b] ^= 1;
                    }
                    for bp in [bp, 0xb0, 0xb3] {
                        assert_eq!(
                            w.holds_for(&copy, bp),
                            holds_read_by_read(w, &copy, sp, bp),
                            "{len} {flip:?} {bp:#x}"
                        );
                    }
                }
            }
        }
    }

    fn frames(addrs: &[u64], truncated: bool) -> Unwound {
        let mut u = Unwound::of_return_addresses(addrs, crate::unwind::Method::Dwarf);
        u.truncated = truncated;
        u
    }

    /// A copy of a stack from `sp` holding these words.
    fn copy(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn a_saved_frame_pointer_two_whole_walks_did_not_use_is_unpinned_and_nothing_else() {
        const SP: u64 = 0x7000;
        let reads = |words: &[u64]| -> Vec<(u64, Option<u64>)> {
            (words.iter().enumerate())
                .map(|(i, &w)| (SP + 8 * i as u64, Some(w)))
                .collect()
        };
        // A whole walk from (1, SP, bp) that read these words and found these frames.
        let keep = |walks: &mut Walks, bp: u64, words: &[u64], ras: &[u64], truncated: bool| {
            walks.keep((1, SP, bp), reads(words), frames(ras, truncated), 16, false)
        };
        // Word 0: a saved frame pointer; word 1: the return address the frames end with.
        let ras = [0x401000, 0x402000];
        let mut walks = Walks::default();
        keep(&mut walks, 0xb0, &[0xaa, 0x402000], &ras, false);
        let serial = walks.of(1, SP).serial;
        assert!(walks.get(1, SP, 0xb0, &copy(&[0xaa, 0x402000])).is_some());
        // Another saved frame pointer, another frame pointer: not given until shown unused.
        assert!(walks.get(1, SP, 0xb0, &copy(&[0xbb, 0x402000])).is_none());
        assert!(walks.get(1, SP, 0xb1, &copy(&[0xaa, 0x402000])).is_none());
        keep(&mut walks, 0xb1, &[0xbb, 0x402000], &ras, false);
        assert_eq!(
            walks.of(1, SP).serial,
            serial,
            "the same walk keeps its number"
        );
        // Any value there now, and any frame pointer; never another return address, nor a
        // copy that ends before a word the walk read.
        assert!(walks.get(1, SP, 0xc3, &copy(&[0xcc, 0x402000])).is_some());
        assert!(walks.get(1, SP, 0xb0, &copy(&[0xaa, 0x403000])).is_none());
        assert!(walks.get(1, SP, 0xb0, &copy(&[0xaa])).is_none());
        assert!(walks.get(2, SP, 0xb0, &copy(&[0xaa, 0x402000])).is_none());
        // Other frames from the same registers: a new walk, all pinned again.
        let other = [0x401000, 0x403000];
        keep(&mut walks, 0xb1, &[0xbb, 0x403000], &other, false);
        assert_ne!(walks.of(1, SP).serial, serial);
        assert!(walks.get(1, SP, 0xb1, &copy(&[0xcc, 0x403000])).is_none());
        assert!(walks.get(1, SP, 0xb1, &copy(&[0xbb, 0x403000])).is_some());
        // A walk cut short at the end of the copy unpins as a whole one does.
        let mut walks = Walks::default();
        for (w, bp) in [(0xaa, 0xb0), (0xbb, 0xb1)] {
            let mut r = reads(&[w, 0x402000]);
            r.push((SP + 16, None));
            walks.keep((1, SP, bp), r, frames(&ras, true), 24, false);
        }
        assert!(walks.get(1, SP, 0xb2, &copy(&[0xcc, 0x402000])).is_some());
        assert!(
            walks
                .get(1, SP, 0xb2, &copy(&[0xcc, 0x402000, 0]))
                .is_none()
        );
        // A walk cut short after a word it read (at a check of a value), or one that searched
        // the stack, unpins nothing.
        for (truncated, searched) in [(true, false), (false, true)] {
            let mut walks = Walks::default();
            for (w, bp) in [(0xaa, 0xb0), (0xbb, 0xb1)] {
                let f = frames(&ras, truncated);
                walks.keep((1, SP, bp), reads(&[w, 0x402000]), f, 16, searched);
            }
            assert!(walks.get(1, SP, 0xb2, &copy(&[0xcc, 0x402000])).is_none());
            assert!(walks.get(1, SP, 0xb1, &copy(&[0xbb, 0x402000])).is_some());
        }
        // A walk that ended another way than the one before it: not the same walk.
        let mut walks = Walks::default();
        keep(&mut walks, 0xb0, &[0xaa, 0x402000], &ras, false);
        keep(&mut walks, 0xb1, &[0xbb, 0x402000], &ras, true);
        assert!(walks.get(1, SP, 0xb2, &copy(&[0xcc, 0x402000])).is_none());
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
