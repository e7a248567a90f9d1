//! A set of object addresses, for "have we been here" during a walk, that costs a bit per
//! 16 bytes of the chunks where objects are found rather than 16+ bytes per object: a hash set
//! of millions of addresses would make leakspy bigger than the heap it reads.

use rustc_hash::FxHashMap;

/// Address-space chunk with its own bitmap: 1 MiB, the size of a pymalloc arena since 3.10.
const CHUNK_SHIFT: u32 = 20;
/// GC heads are 16-byte aligned by pymalloc but only 8 by some other allocators, so one bit
/// covers 8 bytes.
const GRANULE_SHIFT: u32 = 3;
const BITS_PER_CHUNK: usize = 1 << (CHUNK_SHIFT - GRANULE_SHIFT);

#[derive(Default)]
pub struct AddressSet {
    chunks: FxHashMap<u64, Box<[u64]>>,
    len: u64,
}

impl AddressSet {
    /// Bytes the bitmaps and their map hold.
    pub fn heap_bytes(&self) -> u64 {
        self.chunks.len() as u64 * (BITS_PER_CHUNK / 8) as u64 + super::memory_use::map_bytes(&self.chunks)
    }

    /// Adds `addr`; false if it was already there. Addresses must be 8-byte aligned (GC heads
    /// are); others are refused as already present, which callers treat as a torn link.
    pub fn insert(&mut self, addr: u64) -> bool {
        if addr & ((1 << GRANULE_SHIFT) - 1) != 0 {
            return false;
        }
        let bitmap = self
            .chunks
            .entry(addr >> CHUNK_SHIFT)
            .or_insert_with(|| vec![0u64; BITS_PER_CHUNK / 64].into_boxed_slice());
        let bit = ((addr & ((1 << CHUNK_SHIFT) - 1)) >> GRANULE_SHIFT) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if bitmap[word] & mask != 0 {
            return false;
        }
        bitmap[word] |= mask;
        self.len += 1;
        true
    }

    /// Whether `addr` was added (unaligned addresses never are).
    pub fn contains(&self, addr: u64) -> bool {
        let bit = ((addr & ((1 << CHUNK_SHIFT) - 1)) >> GRANULE_SHIFT) as usize;
        addr & ((1 << GRANULE_SHIFT) - 1) == 0
            && self
                .chunks
                .get(&(addr >> CHUNK_SHIFT))
                .is_some_and(|bitmap| bitmap[bit / 64] & (1u64 << (bit % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_addresses_across_chunks() {
        let mut set = AddressSet::default();
        for addr in [0x1000u64, 0x1008, 0x7fff_ffff_fff0, 0x10_0000, 0x1000] {
            set.insert(addr);
        }
        assert_eq!(set.len(), 4);
        assert!(!set.insert(0x1008));
        assert!(set.insert(0x1010));
        assert!(!set.insert(0x1001), "unaligned addresses are refused");
        assert!(set.contains(0x7fff_ffff_fff0) && set.contains(0x1010) && set.contains(0x10_0000));
        assert!(!set.contains(0x1018) && !set.contains(0x1001) && !set.contains(0x20_0000));
    }
}
