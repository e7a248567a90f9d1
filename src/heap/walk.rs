//! Walking one GC generation list of a process that keeps running while we read it.
//!
//! A generation is a circular doubly linked list of PyGC_Head, each just before its object.
//! The target may be moving objects between lists or freeing them as we go, so every link is
//! checked (`next->prev == self`), every object is visited at most once, every walk has an
//! object budget, and a broken forward walk is resumed backwards from the head so that one
//! torn pointer loses as little of the list as possible. What could not be trusted is counted
//! and reported, never silently dropped.

use super::address_set::AddressSet;
use super::pools::ObjectIndex;
use crate::cpython::layout::{GC_LINK_FLAG_BITS, Layout};
use crate::memory::{ReadError, RemoteMemory, u64_at};

const FLAG_BITS: u64 = GC_LINK_FLAG_BITS;
/// 3.8+ sets this bit of `_gc_prev` while a collection uses the field for gc_refs. Before
/// 3.8 `gc_prev` is always a pointer, whose low bits are clear.
const PREV_MASK_COLLECTING: u64 = 0b10;

/// How far a walk may go. Generous by default; the point is that it ends.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_objects: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits { max_objects: 200_000_000 }
    }
}

/// A PyGC_Head and the object header after it.
struct Header {
    next: u64,
    prev: u64,
    type_addr: u64,
    refcnt_word: u64,
    /// The index's entry for this address, used or not (its back link may be stale).
    entry: Option<u32>,
    /// The links came from the index.
    from_index: bool,
}

/// What went wrong during the walks of one sample.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkStats {
    /// Links whose back-pointer did not match, or that led to an object already seen.
    pub torn_links: u64,
    /// Objects reached by walking backwards after the forward walk broke.
    pub resynced: u64,
    /// Lists whose walk stopped at an unreadable or invalid pointer.
    pub broken_lists: u64,
    /// Objects seen in the middle of a collection (their back link was not a pointer).
    pub in_collection: u64,
    /// True if the object budget ran out: the census is incomplete.
    pub truncated: bool,
    /// Objects whose header came from the pools' index instead of a read of the target.
    pub index_hits: u64,
}

/// What the walker hands to its visitor for each object: enough for a census without a
/// second read. The visitor also gets the memory source, to resolve what it has not seen.
#[derive(Debug, Clone, Copy)]
pub struct ObjectHeader {
    pub addr: u64,
    pub type_addr: u64,
    /// The raw refcount word (the layout says how wide and how to read immortality).
    pub refcnt_word: u64,
}

pub struct Walker<'a> {
    layout: &'a Layout,
    /// Headers read in bulk from pymalloc's pools: consulted before the target is read.
    index: Option<&'a ObjectIndex>,
    /// PyGC_Head plus the PyObject header, read as one copy per object.
    header_len: usize,
    /// Objects seen that the index does not hold.
    seen: AddressSet,
    /// Objects seen that the index holds, a bit per entry: a few hundred KiB that stay in
    /// the processor's cache, where a bitmap over the address space misses it at every object.
    seen_entries: Vec<u64>,
    /// The address the walk goes to next and its entry in the index (`None`: not indexed),
    /// when the object it comes from was indexed.
    hint: Option<(u64, Option<u32>)>,
    budget: u64,
    pub stats: WalkStats,
}

enum Step {
    Next(u64),
    End,
    Broken,
}

impl<'a> Walker<'a> {
    pub fn new(layout: &'a Layout, limits: WalkLimits) -> Walker<'a> {
        let o = &layout.object;
        let header_len = layout.gc_head.size + o.ob_refcnt.max(o.ob_type) + 8;
        Walker {
            layout,
            index: None,
            header_len,
            seen: AddressSet::default(),
            seen_entries: Vec::new(),
            hint: None,
            budget: limits.max_objects,
            stats: WalkStats::default(),
        }
    }

    /// Follows the lists through `index` where it has the object, reading the target only for
    /// the rest.
    pub fn with_index(mut self, index: Option<&'a ObjectIndex>) -> Walker<'a> {
        self.index = index;
        self.seen_entries = vec![0; index.map_or(0, |i| i.len().div_ceil(64))];
        self
    }

    /// The links, type and refcount of the object whose PyGC_Head is at `at`: from the index
    /// if it has it and its back link agrees with how the walk got there (an index entry can
    /// be stale: the object may have moved since the pools were read), else read now.
    fn header(
        &mut self,
        mem: &mut dyn RemoteMemory,
        buf: &mut [u8],
        at: u64,
        from: u64,
        back_off: usize,
    ) -> Result<Header, ReadError> {
        let g = &self.layout.gc_head;
        // Walking forward from an indexed object, the index already knows the next one's entry.
        let indexed = self.index.and_then(|index| match self.hint.take() {
            Some((addr, entry)) if addr == at => entry.and_then(|k| index.header(k)),
            _ => index.get(at),
        });
        if let Some(h) = indexed {
            let back = if back_off == g.prev { h.prev } else { h.next };
            if back & !FLAG_BITS == from || (back_off == g.prev && back & PREV_MASK_COLLECTING != 0) {
                self.stats.index_hits += 1;
                return Ok(Header {
                    next: h.next,
                    prev: h.prev,
                    type_addr: h.type_addr,
                    refcnt_word: u64::from(h.refcnt_low),
                    entry: Some(h.entry),
                    from_index: true,
                });
            }
        }
        mem.read(at, buf)?;
        let o = &self.layout.object;
        Ok(Header {
            next: u64_at(buf, g.next),
            prev: u64_at(buf, g.prev),
            type_addr: u64_at(buf, g.size + o.ob_type),
            refcnt_word: u64_at(buf, g.size + o.ob_refcnt),
            entry: indexed.map(|h| h.entry),
            from_index: false,
        })
    }

    /// Walks the list whose head is at `head`, calling `visit` once per object. Fails only if
    /// the process is gone or reading is denied; torn lists are counted, not errors.
    pub fn walk(
        &mut self,
        mem: &mut dyn RemoteMemory,
        head: u64,
        visit: &mut dyn FnMut(&mut dyn RemoteMemory, ObjectHeader),
    ) -> Result<u64, ReadError> {
        let g = &self.layout.gc_head;
        let mut visited = 0u64;
        let mut previous = head;
        let mut current = mem.read_u64(head + g.next as u64)? & !FLAG_BITS;
        let mut buf = vec![0u8; self.header_len];
        let forward_complete = loop {
            match self.step(mem, &mut buf, current, previous, g.prev, head, visit)? {
                Step::End => break true,
                Step::Broken => break false,
                Step::Next(next) => {
                    visited += 1;
                    previous = current;
                    current = next;
                }
            }
            if self.stats.truncated {
                return Ok(visited);
            }
        };
        if !forward_complete {
            self.stats.broken_lists += 1;
            visited += self.resync_backwards(mem, &mut buf, head, visit)?;
        }
        Ok(visited)
    }

    /// Walks from the head along `prev` links until meeting an object the forward walk saw.
    fn resync_backwards(
        &mut self,
        mem: &mut dyn RemoteMemory,
        buf: &mut [u8],
        head: u64,
        visit: &mut dyn FnMut(&mut dyn RemoteMemory, ObjectHeader),
    ) -> Result<u64, ReadError> {
        let g = &self.layout.gc_head;
        let mut recovered = 0;
        let mut following = head;
        let mut current = mem.read_u64(head + g.prev as u64)? & !FLAG_BITS;
        while let Step::Next(prev) = self.step(mem, buf, current, following, g.next, head, visit)? {
            recovered += 1;
            following = current;
            current = prev;
            if self.stats.truncated {
                break;
            }
        }
        self.stats.resynced += recovered;
        Ok(recovered)
    }

    /// Visits `current` (reached from `from`) and returns the next address in the same
    /// direction. `back_off` is the link that must point back: `prev` walking forward, `next`
    /// walking backward.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        mem: &mut dyn RemoteMemory,
        buf: &mut [u8],
        current: u64,
        from: u64,
        back_off: usize,
        head: u64,
        visit: &mut dyn FnMut(&mut dyn RemoteMemory, ObjectHeader),
    ) -> Result<Step, ReadError> {
        if current == head {
            return Ok(Step::End);
        }
        if current == 0 || current & FLAG_BITS != 0 {
            self.stats.torn_links += 1;
            return Ok(Step::Broken);
        }
        let header = match self.header(mem, buf, current, from, back_off) {
            Ok(header) => header,
            Err(e) if e.is_torn() => {
                self.stats.torn_links += 1;
                return Ok(Step::Broken);
            }
            Err(e) => return Err(e),
        };
        let first_visit = match header.entry {
            Some(entry) => {
                let (word, bit) = (entry as usize / 64, 1u64 << (entry % 64));
                let first = self.seen_entries.get(word).is_some_and(|w| w & bit == 0);
                if let Some(w) = self.seen_entries.get_mut(word) {
                    *w |= bit;
                }
                first
            }
            None => self.seen.insert(current),
        };
        if !first_visit {
            // Either the list loops without passing the head, or the object moved to another
            // list under us; following it further would walk the wrong list.
            self.stats.torn_links += 1;
            return Ok(Step::Broken);
        }
        let g = &self.layout.gc_head;
        let (back, forward) = if back_off == g.prev { (header.prev, header.next) } else { (header.next, header.prev) };
        if back_off == g.prev && back & PREV_MASK_COLLECTING != 0 {
            // A collection is running over this object and `_gc_prev` holds its gc_refs, not
            // a pointer: nothing to check, and nothing torn.
            self.stats.in_collection += 1;
        } else if back & !FLAG_BITS != from {
            // Mid-update: the object is still a live object on a GC list, so it is counted.
            self.stats.torn_links += 1;
        }
        if back_off == g.prev
            && header.from_index
            && let (Some(index), Some(entry)) = (self.index, header.entry)
        {
            self.hint = index.successor(entry).map(|successor| (forward & !FLAG_BITS, successor));
            // The next object's entry is fetched into the cache while this one is counted.
            if let Some((_, Some(successor))) = self.hint {
                index.prefetch(successor);
            }
        }
        let object = current + g.size as u64;
        visit(mem, ObjectHeader { addr: object, type_addr: header.type_addr, refcnt_word: header.refcnt_word });
        self.budget = self.budget.saturating_sub(1);
        if self.budget == 0 {
            self.stats.truncated = true;
        }
        Ok(Step::Next(forward & !FLAG_BITS))
    }
}
