//! What leakspy's own structures hold, in bytes, counted from their capacities: the heap
//! graph's cost per node is a goal (bytes per node at the peak of `why`), and tests and the
//! benchmark check it from these counts rather than from the process's RSS, which the
//! allocator's own caching blurs.

use std::collections::HashMap;

/// Bytes a vector's buffer takes (its capacity, not its length).
pub fn vec_bytes<T>(v: &Vec<T>) -> u64 {
    (v.capacity() * size_of::<T>()) as u64
}

/// Bytes a hash map's table takes: hashbrown keeps one control byte per bucket beside the
/// entries, and has at least capacity * 8 / 7 buckets (a power of two).
pub fn map_bytes<K, V, S>(m: &HashMap<K, V, S>) -> u64 {
    if m.capacity() == 0 {
        return 0;
    }
    let buckets = (m.capacity() * 8 / 7).next_power_of_two() as u64;
    buckets * (size_of::<(K, V)>() as u64 + 1)
}

/// The most bytes held at once across the phases of an analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak(pub u64);

impl Peak {
    /// Records that `bytes` are held now.
    pub fn at(&mut self, bytes: u64) {
        self.0 = self.0.max(bytes);
    }
}
