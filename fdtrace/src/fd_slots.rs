//! Entries by descriptor number, in order (a table's descriptors; as `FdSlots<()>`, a set of
//! numbers): a vector indexed by the number for the numbers processes use (the kernel hands
//! out the lowest free one), an ordered map for the rare numbers beyond (a `dup2` onto
//! 1,000,000 must not make a million slots).
//!
//! Every birth and close of a traced process inserts or removes one entry: with an ordered
//! map that was a seventh of fdtrace's user-side instructions under a stream of connections
//! (node searches, entries shifted within nodes, nodes merged); a slot is one index.
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Numbers below this have a slot (at 64 bytes an entry, 4 MiB for a table that uses them
/// all; the vector only reaches the highest number open).
const SLOTTED: i32 = 1 << 16;

#[derive(Clone, Debug)]
pub(crate) struct FdSlots<T> {
    /// Entry `fd` at index `fd`, for 0 <= fd < SLOTTED; never ends with an empty slot.
    low: Vec<Option<T>>,
    /// The numbers outside the slots.
    rest: BTreeMap<i32, T>,
    /// Entries in `low`.
    low_len: usize,
}

impl<T> Default for FdSlots<T> {
    fn default() -> Self {
        FdSlots {
            low: Vec::new(),
            rest: BTreeMap::new(),
            low_len: 0,
        }
    }
}

fn slot(fd: i32) -> Option<usize> {
    (0..SLOTTED).contains(&fd).then_some(fd as usize)
}

impl<T> FdSlots<T> {
    pub(crate) fn insert(&mut self, fd: i32, entry: T) -> Option<T> {
        let Some(i) = slot(fd) else {
            return self.rest.insert(fd, entry);
        };
        if i >= self.low.len() {
            self.low.resize_with(i + 1, || None);
        }
        let old = self.low[i].replace(entry);
        if old.is_none() {
            self.low_len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, fd: i32) -> Option<T> {
        let Some(i) = slot(fd) else {
            return self.rest.remove(&fd);
        };
        let old = self.low.get_mut(i)?.take();
        if old.is_some() {
            self.low_len -= 1;
            self.trim();
        }
        old
    }

    /// Drop the empty slots at the end: the vector reaches the highest number open.
    fn trim(&mut self) {
        while self.low.last().is_some_and(Option::is_none) {
            self.low.pop();
        }
    }

    pub(crate) fn get(&self, fd: i32) -> Option<&T> {
        match slot(fd) {
            Some(i) => self.low.get(i)?.as_ref(),
            None => self.rest.get(&fd),
        }
    }

    pub(crate) fn get_mut(&mut self, fd: i32) -> Option<&mut T> {
        match slot(fd) {
            Some(i) => self.low.get_mut(i)?.as_mut(),
            None => self.rest.get_mut(&fd),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.low_len + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn clear(&mut self) {
        self.low.clear();
        self.rest.clear();
        self.low_len = 0;
    }

    /// Every entry, by number.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i32, &T)> {
        self.range(i32::MIN..=i32::MAX)
    }

    /// The entries numbered in `range`, by number.
    pub(crate) fn range(&self, range: RangeInclusive<i32>) -> impl Iterator<Item = (i32, &T)> {
        let (lo, hi) = (*range.start(), *range.end());
        let low = (lo.max(0)..=hi.min(SLOTTED - 1))
            .take_while(|&fd| (fd as usize) < self.low.len())
            .filter_map(|fd| Some((fd, self.low[fd as usize].as_ref()?)));
        self.rest_in(lo, hi.min(-1))
            .chain(low)
            .chain(self.rest_in(lo.max(SLOTTED), hi))
    }

    /// The entries of `rest` numbered from `lo` to `hi` (none when `lo` > `hi`).
    fn rest_in(&self, lo: i32, hi: i32) -> impl Iterator<Item = (i32, &T)> {
        (lo <= hi)
            .then(|| self.rest.range(lo..=hi))
            .into_iter()
            .flatten()
            .map(|(fd, e)| (*fd, e))
    }

    /// Each entry numbered in `range`, to change.
    pub(crate) fn for_each_in(&mut self, range: RangeInclusive<i32>, mut f: impl FnMut(&mut T)) {
        let (lo, hi) = (*range.start(), *range.end());
        if lo > hi {
            return;
        }
        self.rest.range_mut(lo..=hi).for_each(|(_, e)| f(e));
        if hi >= 0 && lo < SLOTTED {
            let end = (hi as i64 + 1).min(self.low.len() as i64) as usize;
            let start = (lo.max(0) as usize).min(end);
            self.low[start..end].iter_mut().flatten().for_each(f);
        }
    }

    /// Keep the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(i32, &mut T) -> bool) {
        self.rest.retain(|fd, e| keep(*fd, e));
        for (fd, s) in self.low.iter_mut().enumerate() {
            if s.as_mut().is_some_and(|e| !keep(fd as i32, e)) {
                *s = None;
                self.low_len -= 1;
            }
        }
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Numbers from every part: negative, slotted (small and at the edge), beyond.
    fn number() -> impl Strategy<Value = i32> {
        prop_oneof![
            0..8i32,
            SLOTTED - 3..SLOTTED + 3,
            -3..0i32,
            Just(1_000_000),
            Just(i32::MAX),
            Just(i32::MIN),
        ]
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(i32, u32),
        Remove(i32),
        Mark(i32, i32),
        Retain(u32),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (number(), any::<u32>()).prop_map(|(fd, v)| Op::Insert(fd, v)),
            3 => number().prop_map(Op::Remove),
            1 => (number(), number()).prop_map(|(a, b)| Op::Mark(a.min(b), a.max(b))),
            1 => (2..5u32).prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Whatever is done to it, the table answers as an ordered map does, and its vector
        /// reaches no further than the highest slotted number held.
        #[test]
        fn the_slots_answer_as_an_ordered_map(ops in prop::collection::vec(op(), 0..60)) {
            let mut slots = FdSlots::default();
            let mut map = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(fd, v) => prop_assert_eq!(slots.insert(fd, v), map.insert(fd, v)),
                    Op::Remove(fd) => prop_assert_eq!(slots.remove(fd), map.remove(&fd)),
                    Op::Mark(lo, hi) => {
                        slots.for_each_in(lo..=hi, |v| *v |= 1 << 31);
                        map.range_mut(lo..=hi).for_each(|(_, v)| *v |= 1 << 31);
                        let a: Vec<_> = slots.range(lo..=hi).map(|(fd, v)| (fd, *v)).collect();
                        let b: Vec<_> = map.range(lo..=hi).map(|(fd, v)| (*fd, *v)).collect();
                        prop_assert_eq!(a, b);
                    }
                    Op::Retain(m) => {
                        slots.retain(|fd, v| (*v as i64 + fd as i64) % m as i64 != 0);
                        map.retain(|fd, v| (*v as i64 + *fd as i64) % m as i64 != 0);
                    }
                    Op::Clear => {
                        slots.clear();
                        map.clear();
                    }
                }
                let a: Vec<_> = slots.iter().map(|(fd, v)| (fd, *v)).collect();
                let b: Vec<_> = map.iter().map(|(fd, v)| (*fd, *v)).collect();
                prop_assert_eq!(a, b);
                prop_assert_eq!(slots.len(), map.len());
                prop_assert_eq!(slots.is_empty(), map.is_empty());
                for fd in [-1, 0, 3, SLOTTED - 1, SLOTTED, 1_000_000] {
                    prop_assert_eq!(slots.get(fd), map.get(&fd));
                }
                let highest = map.range(0..SLOTTED).next_back().map_or(0, |(fd, _)| *fd + 1);
                prop_assert_eq!(slots.low.len(), highest as usize);
            }
        }
    }

    #[test]
    fn a_high_number_takes_no_slots() {
        let mut slots = FdSlots::default();
        slots.insert(1_000_000, ());
        slots.insert(3, ());
        assert_eq!(slots.low.len(), 4);
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.remove(3), Some(()));
        assert!(slots.low.is_empty());
        assert_eq!(slots.get_mut(1_000_000), Some(&mut ()));
    }
}
