//! A map that keeps at most a given number of entries, dropping the oldest: for links between
//! moments of a process (a request and its dial, a handle and its connect) whose second half
//! may never come.
use std::collections::VecDeque;

pub struct BoundedMap<V> {
    map: foldhash::HashMap<u64, V>,
    /// Keys in insertion order; may hold keys removed since (pruned when it grows).
    order: VecDeque<u64>,
    max: usize,
}

impl<V> BoundedMap<V> {
    pub fn new(max: usize) -> Self {
        Self {
            map: Default::default(),
            order: VecDeque::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &u64) -> Option<&V> {
        self.map.get(key)
    }

    pub fn contains_key(&self, key: &u64) -> bool {
        self.map.contains_key(key)
    }

    pub fn remove(&mut self, key: &u64) -> Option<V> {
        self.map.remove(key)
    }

    /// Insert or replace; the oldest entries go beyond the bound.
    pub fn insert(&mut self, key: u64, value: V) {
        if self.map.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.max {
            match self.order.pop_front() {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        // Keys removed otherwise (a request taken by its dial) leave stale entries in `order`.
        if self.order.len() > 2 * self.max {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_and_removed_keys_are_forgotten() {
        let mut m = BoundedMap::new(3);
        for k in 1..=5 {
            m.insert(k, k * 10);
        }
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key(&2));
        assert_eq!(m.get(&5), Some(&50));
        // Replacing keeps the key's place; a removed key is not counted.
        m.insert(3, 31);
        assert_eq!(m.remove(&4), Some(40));
        m.insert(6, 60);
        m.insert(7, 70);
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key(&3));
        assert!(m.contains_key(&5) && m.contains_key(&6) && m.contains_key(&7));
        for k in 100..200 {
            m.insert(k, 0);
            m.remove(&k);
        }
        assert!(m.order.len() <= 6);
    }
}
