//! A number per graph node in one or two bytes: type ids, refcounts, references in and sizes
//! are almost all small, and at tens of millions of nodes each byte saved per node is tens of
//! megabytes. The rare large value is kept exact in a map beside the array, so nothing is
//! rounded or capped.

use super::memory_use::{map_bytes, vec_bytes};
use rustc_hash::FxHashMap;

/// The narrow element: its largest value marks "exact value in the map".
pub trait Narrow: Copy + Eq + Into<u64> + TryFrom<u64> {
    const ESCAPE: Self;
}

impl Narrow for u8 {
    const ESCAPE: u8 = u8::MAX;
}

impl Narrow for u16 {
    const ESCAPE: u16 = u16::MAX;
}

/// Values by node, `N` wide, the ones that do not fit in `wide`.
#[derive(Debug, Clone, Default)]
pub struct Compact<N> {
    narrow: Vec<N>,
    wide: FxHashMap<u32, u64>,
}

impl<N: Narrow> Compact<N> {
    pub fn with_capacity(capacity: usize) -> Compact<N> {
        Compact { narrow: Vec::with_capacity(capacity), wide: FxHashMap::default() }
    }

    pub fn len(&self) -> usize {
        self.narrow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.narrow.is_empty()
    }

    /// The value of node `i` (0 past the end).
    pub fn get(&self, i: u32) -> u64 {
        match self.narrow.get(i as usize) {
            Some(&n) if n == N::ESCAPE => self.wide.get(&i).copied().unwrap_or(0),
            Some(&n) => n.into(),
            None => 0,
        }
    }

    /// Appends a value, growing by a quarter (the arrays are most of the graph's memory).
    pub fn push(&mut self, value: u64) {
        if self.narrow.len() == self.narrow.capacity() {
            self.narrow.reserve_exact(self.narrow.len() / 4 + 1024);
        }
        let i = self.narrow.len() as u32;
        match N::try_from(value) {
            Ok(n) if n != N::ESCAPE => self.narrow.push(n),
            _ => {
                self.narrow.push(N::ESCAPE);
                self.wide.insert(i, value);
            }
        }
    }

    pub fn set(&mut self, i: u32, value: u64) {
        let Some(slot) = self.narrow.get_mut(i as usize) else { return };
        match N::try_from(value) {
            Ok(n) if n != N::ESCAPE => {
                if *slot == N::ESCAPE {
                    self.wide.remove(&i);
                }
                *slot = n;
            }
            _ => {
                *slot = N::ESCAPE;
                self.wide.insert(i, value);
            }
        }
    }

    /// Adds one to node `i`'s value (saturating).
    pub fn increment(&mut self, i: u32) {
        let value = self.get(i).saturating_add(1);
        self.set(i, value);
    }

    pub fn shrink_to_fit(&mut self) {
        self.narrow.shrink_to_fit();
        self.wide.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> u64 {
        vec_bytes(&self.narrow) + map_bytes(&self.wide)
    }
}

impl<N: Narrow> FromIterator<u64> for Compact<N> {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Compact<N> {
        let mut c = Compact { narrow: Vec::new(), wide: FxHashMap::default() };
        for v in iter {
            c.push(v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_stay_exact() {
        let values = [0, 1, 254, 255, 256, 65_534, 65_535, 65_536, u64::from(u32::MAX), u64::MAX];
        let mut bytes: Compact<u8> = values.iter().copied().collect();
        let words: Compact<u16> = values.iter().copied().collect();
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(bytes.get(i as u32), v);
            assert_eq!(words.get(i as u32), v);
        }
        assert_eq!(bytes.get(99), 0);
        bytes.set(3, 7);
        assert_eq!(bytes.get(3), 7);
        bytes.set(0, 254);
        bytes.increment(0);
        bytes.increment(0);
        assert_eq!(bytes.get(0), 256);
        bytes.increment(9);
        assert_eq!(bytes.get(9), u64::MAX);
    }
}
