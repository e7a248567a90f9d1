//! Paths and counts without the heap graph: `why --no-retained` (and `why` when the full
//! analysis would not fit in memory). The full graph keeps every reference (8 bytes an edge,
//! two or three edges a node) to compute dominators; shortest paths need only a parent per
//! node and a visited mark, so here the references are read again when needed instead of
//! kept:
//!
//! 1. Discovery: the GC lists give the tracked objects; each object's references are decoded
//!    once, which finds the untracked objects (strs, floats, untracked tuples and dicts),
//!    counts the references to the objects asked about (for the references from outside the
//!    heap) and notes the weak references to them. Nodes are bits in a bitmap over the address
//!    space the objects are in (a bit per 8 bytes), not entries of a table.
//! 2. Node ids are the ranks of the addresses in that bitmap (3.11+ frames first), so an
//!    address maps to its id with no table at all.
//! 3. Paths: the same breadth-first search as [`super::graph::shortest_paths`], from the same
//!    roots in the same order, over the references decoded again as each node is reached,
//!    with a `u32` parent per node. The edge a path takes is the first of its referrer's
//!    references to it that the search would have followed, so paths and their labels are
//!    the full mode's; labels are decoded only for the edges of the paths reported.
//!
//! Everything is bounded as the graph's build is: the same item budget (`MAX_ITEMS`, claims
//! in proportion to the target's memory), the same node limit, and reads that fail give no
//! references rather than an error.

use super::address_set::AddressSet;
use super::explain::{Explanation, GraphSummary, NodeFacts, OpaqueHolder, PathGroup, Retainer, WhyReport, group_paths};
use super::graph::{
    Kind, Label, MAX_ITEMS, Path, Root, Step, Storage, TypeInfo, describe_root, mortal_refcount, plausible_refcount,
    render,
};
use super::memory_use::{Peak, map_bytes, vec_bytes};
use super::pools::Allocations;
use super::referents::{Decoder, Referent, Strength, opaque_holders, referents, type_info};
use super::walk::{WalkLimits, Walker};
use crate::cpython::frames::{StackFrame, thread_stacks};
use crate::cpython::layout::Layout;
use crate::cpython::objects::{read_str, type_name};
use crate::cpython::process::{PythonProcess, read_error};
use crate::cpython::sizes::{SizeClass, shallow_size};
use crate::error::LeakspyError;
use crate::memory::maps::MemoryMap;
use crate::memory::{RemoteMemory, u64_at};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

/// The bitmap of nodes has a chunk per MiB of address space where objects are: a pymalloc
/// arena since 3.10.
const CHUNK_SHIFT: u32 = 20;
/// Objects are at least 8-byte aligned: a bit per 8 bytes.
const GRANULE_SHIFT: u32 = 3;
const WORDS_PER_CHUNK: usize = 1 << (CHUNK_SHIFT - GRANULE_SHIFT - 6);
/// As in the graph's build: item arrays may add up to this many times the target's memory.
const CLAIMS_PER_TARGET_BYTE: u64 = 4;
const MIN_CLAIMS_BASE: u64 = 64 << 20;
/// Parents are node ids below 2^31; the top bit marks a node reached only through a
/// conservative reference (the last search), whose path may then take any reference.
const CONSERVATIVE: u32 = 1 << 31;
const UNREACHED: u32 = u32::MAX;
/// Node ids stay below the conservative bit.
const MAX_NODES: usize = (CONSERVATIVE - 1) as usize;

/// One MiB of address space: which 8-byte granules start a node, which of those can refer to
/// anything (not a str, int, float...), and, once frozen, how many nodes precede each word.
struct Chunk {
    key: u64,
    nodes: Box<[u64]>,
    containers: Box<[u64]>,
    /// Nodes before this chunk (frozen).
    base: u32,
    /// Nodes in this chunk before each word (frozen).
    prefix: Box<[u32]>,
}

/// The nodes as bits over the address space: a bit per 8 bytes of the MiB chunks objects are
/// in (about 2.5 % of the target's heap with the ranks), where a table of addresses takes 12
/// to 16 bytes a node. Once frozen, a node's id is its rank among the addresses.
#[derive(Default)]
struct NodeBits {
    chunks: Vec<Chunk>,
    index: FxHashMap<u64, u32>,
    len: u64,
    /// The id of the first address (the 3.11+ frames come before).
    first_id: u32,
    /// The chunk and word of the last id turned into an address: the search takes ids in
    /// about the order of their addresses, so the next one is most often a few words on.
    last_found: Cell<(usize, usize)>,
}

/// Words `addr_of` steps forward from the last one found before it searches instead.
const WORDS_STEPPED: usize = 16;

fn locate(addr: u64) -> (u64, usize, u64) {
    let bit = ((addr & ((1 << CHUNK_SHIFT) - 1)) >> GRANULE_SHIFT) as usize;
    (addr >> CHUNK_SHIFT, bit / 64, 1u64 << (bit % 64))
}

impl NodeBits {
    fn chunk(&self, key: u64) -> Option<&Chunk> {
        self.index.get(&key).and_then(|&k| self.chunks.get(k as usize))
    }

    /// Adds a node at `addr` (8-byte aligned); false if it was there already.
    fn insert(&mut self, addr: u64, container: bool) -> bool {
        if addr & ((1 << GRANULE_SHIFT) - 1) != 0 {
            return false;
        }
        let (key, word, mask) = locate(addr);
        let k = match self.index.get(&key) {
            Some(&k) => k as usize,
            None => {
                self.chunks.push(Chunk {
                    key,
                    nodes: vec![0; WORDS_PER_CHUNK].into_boxed_slice(),
                    containers: vec![0; WORDS_PER_CHUNK].into_boxed_slice(),
                    base: 0,
                    prefix: Box::new([]),
                });
                self.index.insert(key, self.chunks.len() as u32 - 1);
                self.chunks.len() - 1
            }
        };
        let c = &mut self.chunks[k];
        if c.nodes[word] & mask != 0 {
            return false;
        }
        c.nodes[word] |= mask;
        if container {
            c.containers[word] |= mask;
        }
        self.len += 1;
        true
    }

    fn contains(&self, addr: u64) -> bool {
        let (key, word, mask) = locate(addr);
        addr & 7 == 0 && self.chunk(key).is_some_and(|c| c.nodes[word] & mask != 0)
    }

    fn is_container(&self, addr: u64) -> bool {
        let (key, word, mask) = locate(addr);
        self.chunk(key).is_some_and(|c| c.containers[word] & mask != 0)
    }

    /// Numbers the nodes in address order from `first_id`.
    fn freeze(&mut self, first_id: u32) {
        self.first_id = first_id;
        self.chunks.sort_unstable_by_key(|c| c.key);
        self.index.clear();
        let mut base = 0u32;
        for (k, c) in self.chunks.iter_mut().enumerate() {
            self.index.insert(c.key, k as u32);
            c.base = base;
            let mut prefix = Vec::with_capacity(WORDS_PER_CHUNK);
            let mut n = 0u32;
            for w in c.nodes.iter() {
                prefix.push(n);
                n += w.count_ones();
            }
            c.prefix = prefix.into_boxed_slice();
            base = base.saturating_add(n);
        }
    }

    fn id_of(&self, addr: u64) -> Option<u32> {
        if addr & 7 != 0 {
            return None;
        }
        let (key, word, mask) = locate(addr);
        let c = self.chunk(key)?;
        let bits = c.nodes[word];
        if bits & mask == 0 {
            return None;
        }
        let rank = c.base + c.prefix.get(word).copied().unwrap_or(0) + (bits & (mask - 1)).count_ones();
        Some(self.first_id + rank)
    }

    fn addr_of(&self, id: u32) -> Option<u64> {
        let rank = id.checked_sub(self.first_id)?;
        let (last_chunk, last_word) = self.last_found.get();
        let in_chunk = |k: usize| {
            self.chunks.get(k).is_some_and(|c| c.base <= rank)
                && self.chunks.get(k + 1).is_none_or(|next| next.base > rank)
        };
        let k = match in_chunk(last_chunk) {
            true => last_chunk,
            false => self.chunks.partition_point(|c| c.base <= rank).checked_sub(1)?,
        };
        let c = &self.chunks[k];
        let within = rank - c.base;
        // The last word whose count of nodes before it is at most `within`.
        let mut word = if k == last_chunk && c.prefix.get(last_word).is_some_and(|&p| p <= within) {
            last_word
        } else {
            c.prefix.partition_point(|&p| p <= within).checked_sub(1)?
        };
        let mut stepped = 0;
        while c.prefix.get(word + 1).is_some_and(|&p| p <= within) {
            stepped += 1;
            if stepped > WORDS_STEPPED {
                word += c.prefix[word..].partition_point(|&p| p <= within) - 1;
                break;
            }
            word += 1;
        }
        self.last_found.set((k, word));
        let mut bits = *c.nodes.get(word)?;
        // Past the last node (an id out of range) the skip is more than a word holds.
        let skip = within - c.prefix[word];
        if skip >= 64 {
            return None;
        }
        for _ in 0..skip {
            bits &= bits.wrapping_sub(1);
        }
        (bits != 0).then(|| (c.key << CHUNK_SHIFT) | (((word as u64) * 64 + u64::from(bits.trailing_zeros())) << 3))
    }

    fn heap_bytes(&self) -> u64 {
        let per_chunk = (2 * WORDS_PER_CHUNK * 8) as u64;
        self.chunks.iter().map(|c| per_chunk + (c.prefix.len() * 4) as u64).sum::<u64>()
            + vec_bytes(&self.chunks)
            + map_bytes(&self.index)
    }
}

/// Names of fields (members, known fields of built-in types), shared by the types' infos.
#[derive(Default)]
struct Fields {
    index: FxHashMap<String, u32>,
    names: Vec<String>,
}

impl Fields {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() as u32 - 1);
        self.names.len() as u32 - 1
    }
}

/// The decoding's budget and names: one budget per pass over the heap, as the graph's build
/// has one for its single pass. Names (dict keys, attribute names) are kept only while
/// labels are wanted, for the decode at hand.
struct Decode {
    claims_base: u64,
    claims_left: u64,
    truncated: bool,
    fields: Fields,
    names: Vec<u64>,
    keep_names: bool,
}

impl Decode {
    fn new_pass(&mut self) {
        self.claims_left = self.claims_base;
    }
}

impl Decoder for Decode {
    fn claim(&mut self, bytes: u64) -> bool {
        if bytes > self.claims_left {
            self.truncated = true;
            return false;
        }
        self.claims_left -= bytes;
        true
    }

    fn name_id(&mut self, addr: u64) -> u32 {
        if !self.keep_names {
            return 0;
        }
        self.names.push(addr);
        self.names.len() as u32 - 1
    }

    fn field_id(&mut self, name: &str) -> u32 {
        self.fields.id(name)
    }
}

/// What is asked about: instances of a type, or objects by address.
pub enum Query<'a> {
    Type(&'a str),
    Addresses(&'a [u64]),
}

/// The objects asked about while the heap is read, by address: each one's refcount less the
/// references found to it so far (what is left is held from outside the heap). The tracked
/// instances of a type keep only the count of references found: their refcounts are read
/// at the end, 4 bytes an instance fewer while the heap is read.
#[derive(Default)]
struct Targets {
    /// Tracked instances of the type, sorted, and their counts.
    sorted: Vec<u64>,
    sorted_in: Vec<u32>,
    /// Untracked instances, and objects asked for by address.
    other: FxHashMap<u64, u32>,
    /// Sum of sys.getsizeof over the instances of the type.
    size_bytes: u64,
    frame_refs: u64,
    /// Every target's address, as bits: nearly all references are to other objects, and one
    /// bitmap word turns each of those away where the binary search and the hash probe cost
    /// several cache misses.
    marked: AddressSet,
}

impl Targets {
    /// The tracked instances of the type, sorted.
    fn set_tracked(&mut self, sorted: Vec<u64>) {
        for &addr in &sorted {
            self.marked.insert(addr);
        }
        self.sorted_in = vec![0; sorted.len()];
        self.sorted = sorted;
    }

    /// An untracked instance, or an object asked for by address, with its refcount.
    fn insert_other(&mut self, addr: u64, refcount: u32) {
        self.marked.insert(addr);
        self.other.insert(addr, refcount);
    }

    /// False when `addr` is certainly no target (an unaligned one is looked up).
    fn may_be(&self, addr: u64) -> bool {
        addr & 7 != 0 || self.marked.contains(addr)
    }

    /// What is left of the refcount of `addr`, when it is an untracked instance or an object
    /// asked for by address.
    fn other_mut(&mut self, addr: u64) -> Option<&mut u32> {
        if !self.may_be(addr) {
            return None;
        }
        self.other.get_mut(&addr)
    }

    /// Whether `addr` is an untracked instance or an object asked for by address.
    fn is_other(&self, addr: u64) -> bool {
        self.may_be(addr) && self.other.contains_key(&addr)
    }

    fn contains(&self, addr: u64) -> bool {
        self.may_be(addr) && (self.sorted.binary_search(&addr).is_ok() || self.other.contains_key(&addr))
    }

    /// Counts a reference to `addr`; false if it is no target.
    fn count_in(&mut self, addr: u64) -> bool {
        if !self.may_be(addr) {
            return false;
        }
        match self.sorted.binary_search(&addr) {
            Ok(k) => self.sorted_in.get_mut(k).map(|n| *n = n.saturating_add(1)).is_some(),
            Err(_) => self.other_mut(addr).map(|left| *left = left.saturating_sub(1)).is_some(),
        }
    }

    /// References to `addr` from outside the heap: its refcount less those found.
    fn external(&self, mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64) -> u64 {
        match self.sorted.binary_search(&addr) {
            Ok(k) => {
                let rc = mem
                    .read_u64(addr + layout.object.ob_refcnt as u64)
                    .map_or(0, |w| mortal_refcount(&layout.object, w));
                u64::from(rc.saturating_sub(self.sorted_in.get(k).copied().unwrap_or(0)))
            }
            Err(_) => u64::from(self.other.get(&addr).copied().unwrap_or(0)),
        }
    }

    fn heap_bytes(&self) -> u64 {
        vec_bytes(&self.sorted) + vec_bytes(&self.sorted_in) + map_bytes(&self.other) + self.marked.heap_bytes()
    }
}

/// A root before node ids exist: the address of its object, or a 3.11+ frame's index.
enum RootAt {
    Modules { addr: u64, interpreter: i64 },
    Frame { node: RootNode, frame: u32 },
    Interpreter { addr: u64, interpreter: i64, field: u32 },
}

enum RootNode {
    Stack(u32),
    Object(u64),
}

/// The heap read for paths and counts: nodes as bits, a parent per node.
pub struct Reach<'p> {
    process: &'p PythonProcess,
    frames: Vec<StackFrame>,
    /// 3.11+ frames (not objects): node ids 0..stack_frames.
    stack_frames: u32,
    bits: NodeBits,
    roots: Vec<Root>,
    parent: Vec<u32>,
    types: FxHashMap<u64, Rc<TypeInfo>>,
    decode: Decode,
    interpreters: usize,
    untracked: u64,
    references: u64,
    truncated: bool,
    skipped_threads: u64,
    /// The instances, their sum of sizes, references from frames and from outside the heap.
    instances: u64,
    /// `--sample`: the weak references are sampled the same way.
    sample: usize,
    sampled: Vec<u32>,
    top: Vec<u32>,
    size_bytes: u64,
    frame_refs: u64,
    external_refs: u64,
    externally_held: u64,
    /// Per sampled or listed instance held from outside the heap: its references from there.
    external_of: FxHashMap<u32, u64>,
    /// Referrers of the instances through weak references, one per weak reference.
    weak: Vec<u32>,
    /// Objects of types whose storage leakspy does not decode: (address, basicsize).
    opaque: Vec<(u64, u64)>,
    peak: Peak,
    graph_bytes: u64,
}

/// What discovery leaves for the search and the report.
struct Found {
    frames: Vec<StackFrame>,
    stack_frames: usize,
    bits: NodeBits,
    roots_at: Vec<RootAt>,
    types: FxHashMap<u64, Rc<TypeInfo>>,
    decode: Decode,
    interpreters: usize,
    untracked: u64,
    references: u64,
    truncated: bool,
    skipped_threads: u64,
    instances: usize,
    sample: usize,
    sampled: Vec<u32>,
    top: Vec<u32>,
    size_bytes: u64,
    frame_refs: u64,
    external_refs: u64,
    externally_held: u64,
    external_of: FxHashMap<u32, u64>,
    weak_from: Vec<u64>,
    opaque: Vec<(u64, u64)>,
    peak: Peak,
}

/// Discovery's state: the bitmap, the objects rejected, the queue of untracked containers.
struct Discovery<'a> {
    layout: &'a Layout,
    maps: &'a MemoryMap,
    bits: NodeBits,
    rejected: AddressSet,
    allocations: Allocations,
    /// Types of the tracked objects and of objects accepted since: an untracked candidate's
    /// type must be one of them, or an instance of a metatype (as in the graph's build).
    accepted: FxHashSet<u64>,
    types: FxHashMap<u64, Rc<TypeInfo>>,
    decode: Decode,
    pending: VecDeque<u64>,
    nodes: usize,
    max_nodes: usize,
    untracked: u64,
    truncated: bool,
    query_type: Option<String>,
    targets: Targets,
    opaque: Vec<(u64, u64)>,
}

fn type_of(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    types: &mut FxHashMap<u64, Rc<TypeInfo>>,
    fields: &mut Fields,
    type_addr: u64,
) -> Rc<TypeInfo> {
    if let Some(t) = types.get(&type_addr) {
        return Rc::clone(t);
    }
    let info = type_info(mem, layout, type_addr, &mut |name| fields.id(name))
        .unwrap_or_else(|_| TypeInfo::synthetic(format!("<unreadable type {type_addr:#x}>"), Kind::Other));
    let info = Rc::new(info);
    types.insert(type_addr, Rc::clone(&info));
    info
}

fn size_of_object(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64, t: &TypeInfo) -> u64 {
    let class = SizeClass { rule: t.size_rule, flags: t.flags, basicsize: t.basicsize, itemsize: t.itemsize };
    shallow_size(mem, layout, addr, &class).unwrap_or(0)
}

impl Discovery<'_> {
    fn type_of(&mut self, mem: &mut dyn RemoteMemory, type_addr: u64) -> Rc<TypeInfo> {
        type_of(mem, self.layout, &mut self.types, &mut self.decode.fields, type_addr)
    }

    fn is_target_type(&self, t: &TypeInfo) -> bool {
        self.query_type.as_deref() == Some(t.name.as_str())
    }

    /// Whether `addr`, not a type accepted yet, is one (as in the graph's build): an instance
    /// of a metatype accepted, or of a metatype whose own type is one.
    fn is_type(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> bool {
        let at = self.layout.object.ob_type as u64;
        let Ok(meta) = mem.read_u64(addr + at) else { return false };
        if !self.accepted.contains(&meta) {
            let Ok(meta_type) = mem.read_u64(meta + at) else { return false };
            if !self.accepted.contains(&meta_type) || self.type_of(mem, meta_type).kind != Kind::Type {
                return false;
            }
            self.accepted.insert(meta);
        }
        self.type_of(mem, meta).kind == Kind::Type
    }

    /// Whether `addr` is a node, adding it if it is an object not seen yet (the checks of the
    /// graph's build: a readable header, a plausible refcount, a known type).
    fn resolve(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> bool {
        if self.bits.contains(addr) {
            return true;
        }
        if addr == 0 || addr & 7 != 0 || self.nodes >= self.max_nodes {
            self.truncated |= self.nodes >= self.max_nodes;
            return false;
        }
        if !self.maps.is_readable(addr, 16) || !self.rejected.insert(addr) {
            return false;
        }
        let mut header = [0u8; 16];
        let o = &self.layout.object;
        if mem.read(addr, &mut header).is_err() {
            return false;
        }
        let word = u64_at(&header, o.ob_refcnt);
        if !plausible_refcount(o, word) {
            return false;
        }
        let ob_type = u64_at(&header, o.ob_type);
        if !self.accepted.contains(&ob_type) {
            if !self.is_type(mem, ob_type) {
                return false;
            }
            self.accepted.insert(ob_type);
        }
        if !self.allocations.allows(mem, addr, word) {
            return false;
        }
        let t = self.type_of(mem, ob_type);
        let container = t.kind != Kind::Leaf;
        self.bits.insert(addr, container);
        self.nodes += 1;
        self.untracked += 1;
        if container {
            self.pending.push_back(addr);
        }
        if t.storage == Storage::Opaque {
            self.opaque.push((addr, t.basicsize));
        }
        let rc = mortal_refcount(&self.layout.object, word);
        if self.is_target_type(&t) {
            self.targets.insert_other(addr, rc);
            self.targets.size_bytes += size_of_object(mem, self.layout, addr, &t);
        } else if let Some(left) = self.targets.other_mut(addr) {
            // Asked for by address.
            *left = rc;
        }
        true
    }

    /// Counts `refs` of the node at `from` (a 3.11+ frame when `from_frame`): references,
    /// references to the targets, weak references to them.
    fn count(
        &mut self,
        mem: &mut dyn RemoteMemory,
        refs: &[Referent],
        from_frame: bool,
        weak: &mut Vec<u64>,
        from: u64,
    ) -> u64 {
        let mut strong = 0;
        for r in refs {
            if !self.resolve(mem, r.addr) {
                continue;
            }
            if r.strength == Strength::Weak {
                if self.targets.contains(r.addr) {
                    weak.push(from);
                }
                continue;
            }
            strong += 1;
            if !r.owned {
                continue;
            }
            // Counted first, whoever refers.
            if self.targets.count_in(r.addr) && from_frame {
                self.targets.frame_refs += 1;
            }
        }
        strong
    }
}

impl<'p> Reach<'p> {
    /// Reads the heap of `process` for `query`: discovery, then the shortest paths.
    pub fn read(
        process: &'p PythonProcess,
        mem: &mut dyn RemoteMemory,
        query: &Query,
        sample: usize,
        top: usize,
    ) -> Result<Reach<'p>, LeakspyError> {
        let layout = &process.layout;
        mem.invalidate();
        let interpreters = process.interpreters(mem)?.interpreters;
        let states = process.gc_states(mem, &interpreters)?;
        let limits = WalkLimits::default();
        let mut peak = Peak::default();
        let mut tracked: Vec<u64> = Vec::new();
        let mut accepted = FxHashSet::default();
        let mut targets = Targets::default();
        let mut by_address: FxHashSet<u64> = FxHashSet::default();
        let mut type_matches: FxHashMap<u64, bool> = FxHashMap::default();
        let query_type = match query {
            Query::Type(name) => Some(name.to_string()),
            Query::Addresses(addrs) => {
                by_address.extend(addrs.iter().copied());
                None
            }
        };
        {
            let mut walker = Walker::new(layout, limits);
            let mut found: Vec<u64> = Vec::new();
            for list in states.iter().flat_map(|s| &s.lists) {
                walker
                    .walk(mem, list.head, &mut |mem, h| {
                        tracked.push(h.addr);
                        accepted.insert(h.type_addr);
                        let wanted = match &query_type {
                            Some(name) => *type_matches
                                .entry(h.type_addr)
                                .or_insert_with(|| type_name(mem, layout, h.type_addr).is_ok_and(|n| n == *name)),
                            None => by_address.contains(&h.addr),
                        };
                        if wanted {
                            found.push(h.addr);
                        }
                    })
                    .map_err(|e| read_error(process.pid, e))?;
            }
            peak.at(vec_bytes(&tracked) + vec_bytes(&found) + 2 * map_bytes(&type_matches));
            found.sort_unstable();
            found.dedup();
            match query {
                Query::Type(_) => targets.set_tracked(found),
                // Tracked objects asked for by address: their refcount now, counted down.
                Query::Addresses(_) => {
                    for addr in found {
                        let rc = mem
                            .read_u64(addr + layout.object.ob_refcnt as u64)
                            .map_or(0, |w| mortal_refcount(&layout.object, w));
                        targets.insert_other(addr, rc);
                    }
                }
            }
        }
        if let Query::Addresses(addrs) = query {
            for &a in *addrs {
                if !targets.other.contains_key(&a) {
                    targets.insert_other(a, 0);
                }
            }
        }
        tracked.sort_unstable();
        tracked.dedup();
        let (frames, skipped_threads) = thread_stacks(process, mem, &interpreters)?;
        let stack_frames = frames.iter().filter(|f| f.frame_object.is_none()).count();
        let maps = process.current_maps();
        let claims_base =
            CLAIMS_PER_TARGET_BYTE * process.rss().unwrap_or_else(|| maps.writable_bytes()).max(MIN_CLAIMS_BASE);
        let mut d = Discovery {
            layout,
            maps: &maps,
            bits: NodeBits::default(),
            rejected: AddressSet::default(),
            allocations: Allocations::new(layout),
            accepted,
            types: FxHashMap::default(),
            decode: Decode {
                claims_base,
                claims_left: claims_base,
                truncated: false,
                fields: Fields::default(),
                names: Vec::new(),
                keep_names: false,
            },
            pending: VecDeque::new(),
            nodes: stack_frames + tracked.len(),
            max_nodes: ((limits.max_objects as usize).max(tracked.len() * 4)).min(MAX_NODES),
            untracked: 0,
            truncated: false,
            query_type,
            targets,
            opaque: Vec::new(),
        };
        for &addr in &tracked {
            d.bits.insert(addr, true);
        }
        // The roots, in the graph's order: 3.11+ frames, frame objects, modules (put first),
        // the interpreters' own roots, the static types' dicts.
        let mut roots_at: Vec<RootAt> = Vec::new();
        for (k, _) in frames.iter().enumerate().filter(|(_, f)| f.frame_object.is_none()) {
            roots_at.push(RootAt::Frame { node: RootNode::Stack(k as u32), frame: k as u32 });
        }
        for (k, frame) in frames.iter().enumerate() {
            if let Some(addr) = frame.frame_object.filter(|&a| d.resolve(mem, a)) {
                roots_at.push(RootAt::Frame { node: RootNode::Object(addr), frame: k as u32 });
            }
        }
        let modules_off = layout.containers.interp_modules;
        let mut module_roots = Vec::new();
        for interp in &interpreters {
            let modules = modules_off.and_then(|off| mem.read_u64(interp.addr + off as u64).ok());
            if let Some(addr) = modules.filter(|&m| tracked.binary_search(&m).is_ok()) {
                module_roots.push(RootAt::Modules { addr, interpreter: interp.id });
            }
        }
        roots_at.splice(0..0, module_roots);
        let runtime = process.runtime().map(|addr| (-1, addr, &layout.interp.runtime_roots));
        let interp_states = interpreters.iter().map(|i| (i.id, i.addr, &layout.interp.roots));
        for (interpreter, base, fields) in interp_states.chain(runtime) {
            for (name, off) in fields {
                let Ok(addr) = mem.read_u64(base + *off as u64) else { continue };
                if d.resolve(mem, addr) {
                    let field = d.decode.fields.id(name);
                    roots_at.push(RootAt::Interpreter { addr, interpreter, field });
                }
            }
        }
        for interp in &interpreters {
            static_type_roots(mem, &mut d, &mut roots_at, interp.id, interp.addr);
        }

        // Discovery: every node's references once, in the graph's order (frames, tracked
        // objects by address, untracked ones as found).
        let mut refs: Vec<Referent> = Vec::new();
        let mut weak_from: Vec<u64> = Vec::new();
        let mut references = 0u64;
        let mut refs_bytes = 0u64;
        for frame in frames.iter().filter(|f| f.frame_object.is_none()) {
            let mut cursor = Cursor::of_frame(frame, &mut d.decode, &mut refs);
            while cursor.next(mem, &mut refs) {
                references += d.count(mem, &refs, true, &mut weak_from, 0);
            }
        }
        let mut header = [0u8; 16];
        let o = &layout.object;
        let mut k = 0;
        loop {
            let addr = match tracked.get(k) {
                Some(&a) => {
                    k += 1;
                    a
                }
                None => match d.pending.pop_front() {
                    Some(a) => a,
                    None => break,
                },
            };
            let tracked_node = k > 0 && tracked.get(k - 1) == Some(&addr);
            if mem.read(addr, &mut header).is_err() {
                continue;
            }
            let t = d.type_of(mem, u64_at(&header, o.ob_type));
            if tracked_node {
                if t.storage == Storage::Opaque {
                    d.opaque.push((addr, t.basicsize));
                }
                if d.is_target_type(&t) || d.targets.is_other(addr) {
                    d.targets.size_bytes += size_of_object(mem, layout, addr, &t);
                }
            }
            let mut cursor = Cursor::start(mem, layout, &mut d.decode, addr, &t, &mut refs);
            while cursor.next(mem, &mut refs) {
                references += d.count(mem, &refs, false, &mut weak_from, addr);
            }
            refs_bytes = refs_bytes.max(vec_bytes(&refs));
            if refs.capacity() > 4 * ITEMS_BLOCK as usize {
                // One large dict's references need not stay allocated for the rest.
                refs = Vec::new();
            }
        }
        peak.at(refs_bytes
            + vec_bytes(&tracked)
            + d.bits.heap_bytes()
            + d.rejected.heap_bytes()
            + d.allocations.heap_bytes()
            + d.targets.heap_bytes()
            + vec_bytes(&weak_from)
            + vec_bytes(&d.opaque)
            + (d.pending.capacity() * 8) as u64);
        drop(tracked);
        let Discovery {
            mut bits,
            mut types,
            mut decode,
            untracked,
            truncated,
            targets,
            mut opaque,
            rejected,
            allocations,
            pending,
            ..
        } = d;
        drop(rejected);
        drop(allocations);
        drop(pending);
        bits.freeze(stack_frames as u32);

        // The instances, by id; what they get from frames and from outside the heap.
        let instance_addrs: Vec<u64> = match query {
            Query::Type(_) => {
                let mut all: Vec<u64> = targets.sorted.iter().chain(targets.other.keys()).copied().collect();
                all.sort_unstable();
                all
            }
            Query::Addresses(addrs) => addrs.iter().copied().filter(|&a| bits.contains(a)).collect(),
        };
        let count = instance_addrs.len();
        let step = (count / sample.max(1)).max(1);
        let mut external_refs = 0u64;
        let mut externally_held = 0u64;
        let mut external_of = FxHashMap::default();
        let mut sampled = Vec::new();
        let mut top_ids = Vec::new();
        for (n, &addr) in instance_addrs.iter().enumerate() {
            let external = targets.external(mem, layout, addr);
            external_refs += external;
            externally_held += u64::from(external > 0);
            let listed = n % step == 0 || n < top;
            let Some(id) = bits.id_of(addr).filter(|_| listed) else { continue };
            if external > 0 {
                external_of.insert(id, external);
            }
            if n % step == 0 {
                sampled.push(id);
            }
            if n < top {
                top_ids.push(id);
            }
        }
        let size_bytes = match query {
            Query::Type(_) => targets.size_bytes,
            // Each address as often as it was given.
            Query::Addresses(_) => {
                let mut sum = 0;
                for &a in &instance_addrs {
                    if let Ok(t) = mem.read_u64(a + o.ob_type as u64) {
                        let t = type_of(mem, layout, &mut types, &mut decode.fields, t);
                        sum += size_of_object(mem, layout, a, &t);
                    }
                }
                sum
            }
        };
        let frame_refs = targets.frame_refs;
        drop(targets);
        drop(instance_addrs);
        opaque.sort_unstable();
        let found = Found {
            frames,
            stack_frames,
            bits,
            roots_at,
            types,
            decode,
            interpreters: interpreters.len(),
            untracked,
            references,
            truncated,
            skipped_threads,
            instances: count,
            sample,
            sampled,
            top: top_ids,
            size_bytes,
            frame_refs,
            external_refs,
            externally_held,
            external_of,
            weak_from,
            opaque,
            peak,
        };
        Ok(Self::finish(process, mem, found))
    }

    fn finish(process: &'p PythonProcess, mem: &mut dyn RemoteMemory, found: Found) -> Reach<'p> {
        let Found {
            frames,
            stack_frames,
            bits,
            roots_at,
            types,
            decode,
            interpreters,
            untracked,
            references,
            truncated,
            skipped_threads,
            instances,
            sample,
            sampled,
            top,
            size_bytes,
            frame_refs,
            external_refs,
            externally_held,
            external_of,
            weak_from,
            opaque,
            peak,
        } = found;
        let id = |addr: u64| bits.id_of(addr);
        let roots: Vec<Root> = roots_at
            .iter()
            .filter_map(|r| match *r {
                RootAt::Modules { addr, interpreter } => Some(Root::Modules { node: id(addr)?, interpreter }),
                RootAt::Frame { node: RootNode::Stack(k), frame } => Some(Root::Frame { node: k, frame }),
                RootAt::Frame { node: RootNode::Object(addr), frame } => Some(Root::Frame { node: id(addr)?, frame }),
                RootAt::Interpreter { addr, interpreter, field } => {
                    Some(Root::Interpreter { node: id(addr)?, interpreter, field })
                }
            })
            .collect();
        let weak: Vec<u32> = weak_from.iter().filter_map(|&a| if a == 0 { None } else { bits.id_of(a) }).collect();
        drop(weak_from);
        let mut reach = Reach {
            process,
            frames,
            stack_frames: stack_frames as u32,
            bits,
            roots,
            parent: Vec::new(),
            types,
            decode,
            interpreters,
            untracked,
            references,
            truncated,
            skipped_threads,
            instances: instances as u64,
            sample,
            sampled,
            top,
            size_bytes,
            frame_refs,
            external_refs,
            externally_held,
            external_of,
            weak,
            opaque,
            peak,
            graph_bytes: 0,
        };
        reach.search(mem);
        reach.truncated |= reach.decode.truncated;
        reach
    }

    pub fn len(&self) -> usize {
        self.stack_frames as usize + self.bits.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Instances found (0: none of the type, or none of the addresses is an object).
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// Whether `addr` is the start of an object leakspy read.
    pub fn is_object(&self, addr: u64) -> bool {
        self.bits.contains(addr)
    }

    fn addr(&self, i: u32) -> u64 {
        match i < self.stack_frames {
            true => u64::from(i),
            false => self.bits.addr_of(i).unwrap_or(0),
        }
    }

    fn type_info(&mut self, mem: &mut dyn RemoteMemory, i: u32) -> Rc<TypeInfo> {
        if i < self.stack_frames {
            return Rc::new(TypeInfo::synthetic("<frame>".into(), Kind::StackFrame));
        }
        let addr = self.addr(i);
        self.type_at(mem, addr)
    }

    /// The type of the object at `addr`.
    fn type_at(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> Rc<TypeInfo> {
        let layout = &self.process.layout;
        match mem.read_u64(addr + layout.object.ob_type as u64) {
            Ok(t) => type_of(mem, layout, &mut self.types, &mut self.decode.fields, t),
            Err(_) => Rc::new(TypeInfo::synthetic("<unreadable>".into(), Kind::Other)),
        }
    }

    /// Starts on node `i`'s references.
    fn cursor(&mut self, mem: &mut dyn RemoteMemory, i: u32, refs: &mut Vec<Referent>) -> Cursor {
        if i < self.stack_frames {
            return match self.frames.get(i as usize) {
                Some(frame) => Cursor::of_frame(frame, &mut self.decode, refs),
                None => Cursor::Decoded { given: true },
            };
        }
        let addr = self.addr(i);
        let t = self.type_at(mem, addr);
        Cursor::start(mem, &self.process.layout, &mut self.decode, addr, &t, refs)
    }

    /// The breadth-first search of [`super::graph::shortest_paths`]: module globals, then the
    /// threads' frames, then the interpreters' roots over exact references, then conservative
    /// ones from every node reached, in the order reached. Only the nodes with a conservative
    /// reference are remembered for that last search: from the others, every exact reference
    /// was followed already. Objects that refer to nothing (strs, ints) are never queued.
    fn search(&mut self, mem: &mut dyn RemoteMemory) {
        let n = self.len();
        self.parent = vec![UNREACHED; n];
        self.decode.new_pass();
        let mut queue: VecDeque<u32> = VecDeque::new();
        let mut with_conservative: Vec<u32> = Vec::new();
        let mut refs = Vec::new();
        let mut queue_bytes = 0u64;
        let mut refs_bytes = 0u64;
        let tiers: [Vec<u32>; 3] = [
            self.roots.iter().filter(|r| matches!(r, Root::Modules { .. })).map(|r| r.node()).collect(),
            self.roots.iter().filter(|r| matches!(r, Root::Frame { .. })).map(|r| r.node()).collect(),
            self.roots.iter().filter(|r| matches!(r, Root::Interpreter { .. })).map(|r| r.node()).collect(),
        ];
        for tier in tiers {
            for r in tier {
                if self.parent.get(r as usize) == Some(&UNREACHED) {
                    self.parent[r as usize] = r;
                    queue.push_back(r);
                }
            }
            while let Some(u) = queue.pop_front() {
                let mut cursor = self.cursor(mem, u, &mut refs);
                let mut conservative = false;
                while cursor.next(mem, &mut refs) {
                    for r in refs.iter().filter(|r| r.strength == Strength::Strong) {
                        let Some(v) = self.bits.id_of(r.addr) else { continue };
                        if !r.label.is_exact() {
                            conservative = true;
                        } else if self.parent[v as usize] == UNREACHED {
                            self.parent[v as usize] = u;
                            if self.bits.is_container(r.addr) {
                                queue.push_back(v);
                            }
                        }
                    }
                }
                if conservative {
                    with_conservative.push(u);
                }
                queue_bytes = queue_bytes.max((queue.capacity() * 4) as u64);
                refs_bytes = refs_bytes.max(vec_bytes(&refs));
            }
        }
        let mut queue: VecDeque<u32> = with_conservative.into_iter().collect();
        while let Some(u) = queue.pop_front() {
            let mut cursor = self.cursor(mem, u, &mut refs);
            while cursor.next(mem, &mut refs) {
                for r in refs.iter().filter(|r| r.strength == Strength::Strong) {
                    let Some(v) = self.bits.id_of(r.addr) else { continue };
                    if self.parent[v as usize] == UNREACHED {
                        self.parent[v as usize] = u | CONSERVATIVE;
                        if self.bits.is_container(r.addr) {
                            queue.push_back(v);
                        }
                    }
                }
            }
            queue_bytes = queue_bytes.max((queue.capacity() * 4) as u64);
            refs_bytes = refs_bytes.max(vec_bytes(&refs));
        }
        self.graph_bytes = self.bits.heap_bytes() + vec_bytes(&self.parent);
        let beside =
            map_bytes(&self.types) + vec_bytes(&self.sampled) + vec_bytes(&self.weak) + vec_bytes(&self.opaque);
        // The conservative holders are gone before the last queue grows: counted as the
        // queue that starts from them.
        self.peak.at(self.graph_bytes + queue_bytes + refs_bytes + beside);
    }

    fn parent_of(&self, i: u32) -> Option<(u32, bool)> {
        match self.parent.get(i as usize) {
            None | Some(&UNREACHED) => None,
            Some(&p) => Some((p & !CONSERVATIVE, p & CONSERVATIVE != 0)),
        }
    }

    /// The paths from a root to each of `nodes` (`None`: no root reaches it). The referrers
    /// on the way are decoded once each, for the labels of the edges the paths take.
    fn paths(&mut self, mem: &mut dyn RemoteMemory, nodes: &[u32]) -> Vec<Option<Path>> {
        let limit = self.len();
        let mut wanted: FxHashMap<u32, FxHashMap<u32, bool>> = FxHashMap::default();
        let mut chains: Vec<Option<Vec<u32>>> = Vec::with_capacity(nodes.len());
        for &i in nodes {
            let mut chain = vec![i];
            let mut at = i;
            let complete = loop {
                let Some((from, conservative)) = self.parent_of(at) else { break false };
                if from == at {
                    break true;
                }
                if chain.len() > limit {
                    break false;
                }
                wanted.entry(from).or_default().insert(at, conservative);
                chain.push(from);
                at = from;
            };
            chains.push(complete.then_some(chain));
        }
        let mut steps: FxHashMap<(u32, u32), Step> = FxHashMap::default();
        let mut froms: Vec<u32> = wanted.keys().copied().collect();
        froms.sort_unstable();
        self.decode.keep_names = true;
        self.decode.new_pass();
        let mut refs = Vec::new();
        let mut found: Vec<(u32, Label)> = Vec::new();
        let mut filled: FxHashSet<u32> = FxHashSet::default();
        for from in froms {
            self.decode.names.clear();
            found.clear();
            filled.clear();
            let want = &wanted[&from];
            let mut cursor = self.cursor(mem, from, &mut refs);
            while cursor.next(mem, &mut refs) {
                for r in refs.iter().filter(|r| r.strength == Strength::Strong) {
                    if let Some(v) = self.bits.id_of(r.addr)
                        && let Some(&conservative) = want.get(&v)
                        && (conservative || r.label.is_exact())
                        && filled.insert(v)
                    {
                        found.push((v, r.label));
                    }
                }
            }
            for &(v, label) in &found {
                let step = self.step_of(mem, label);
                steps.insert((from, v), step);
            }
        }
        self.decode.keep_names = false;
        self.decode.names = Vec::new();
        chains
            .into_iter()
            .map(|chain| {
                let chain = chain?;
                let mut out = Vec::new();
                for pair in chain.windows(2) {
                    let (at, from) = (pair[0], pair[1]);
                    // A reference no longer there (the target changed): a field at 0.
                    let step = steps.get(&(from, at)).cloned().unwrap_or(Step::Field(0));
                    let generator_frame = matches!(step, Step::Local(_) | Step::Stack);
                    out.push((from, step));
                    if generator_frame {
                        let holder = self.type_info(mem, from);
                        if holder.kind == Kind::Generator {
                            let attr = match holder.name.as_str() {
                                "coroutine" => "cr_frame",
                                "async_generator" => "ag_frame",
                                _ => "gi_frame",
                            };
                            // After the local in the reversed order: before it in the path.
                            out.push((from, Step::Named(attr.into())));
                        }
                    }
                }
                out.reverse();
                let root = *chain.last()?;
                Some(Path { root: self.root_text(root), steps: out })
            })
            .collect()
    }

    fn step_of(&mut self, mem: &mut dyn RemoteMemory, label: Label) -> Step {
        match label {
            Label::Index(n) => Step::Index(n),
            Label::Key(k) => Step::Key(self.name_text(mem, k)),
            Label::Attr(k) => Step::Attr(self.name_text(mem, k)),
            Label::Local(k) => Step::Local(self.name_text(mem, k)),
            Label::Stack => Step::Stack,
            Label::Namespace => Step::Namespace,
            Label::Member => Step::Member,
            Label::DictKey => Step::DictKey,
            Label::Named(n) => Step::Named(self.decode.fields.names.get(n as usize).cloned().unwrap_or_default()),
            Label::Field(o) => Step::Field(o),
        }
    }

    /// A name a label refers to: the str's text, or `<type>` for a key that is not a str.
    fn name_text(&mut self, mem: &mut dyn RemoteMemory, id: u32) -> String {
        let Some(&key) = self.decode.names.get(id as usize) else { return "?".into() };
        match read_str(mem, &self.process.layout, key) {
            Ok(Some(s)) => s,
            _ => match self.bits.id_of(key) {
                Some(k) => format!("<{}>", self.type_info(mem, k).name),
                None => format!("<object {key:#x}>"),
            },
        }
    }

    /// How a root is written at the start of a path (as the full mode writes it).
    fn root_text(&self, node: u32) -> String {
        describe_root(&self.roots, &self.frames, &self.decode.fields.names, self.interpreters > 1, node)
    }

    /// The interpreter whose root node `i`'s path starts from.
    fn interpreter_of(&self, i: u32) -> Option<i64> {
        let mut at = i;
        for _ in 0..=self.len() {
            let (from, _) = self.parent_of(at)?;
            if from == at {
                return self.roots.iter().find(|r| r.node() == at).map(|r| match *r {
                    Root::Modules { interpreter, .. } | Root::Interpreter { interpreter, .. } => interpreter,
                    Root::Frame { frame, .. } => self.frames.get(frame as usize).map_or(0, |f| f.interpreter),
                });
            }
            at = from;
        }
        None
    }

    /// The summary of what was read, with the bytes leakspy's structures held.
    pub fn summary(&self, ms: f64, retained_skipped: Option<String>) -> GraphSummary {
        GraphSummary {
            objects: self.bits.len,
            untracked: self.untracked,
            references: self.references,
            frames: self.frames.len() as u64,
            truncated: self.truncated,
            skipped_threads: self.skipped_threads,
            ms,
            retained: false,
            retained_skipped,
            graph_bytes: self.graph_bytes,
            peak_bytes: self.peak.0,
            bytes_per_node: self.peak.0 as f64 / self.len().max(1) as f64,
        }
    }

    /// The report of `why --no-retained`: the full mode's, with every retained size 0.
    pub fn report(
        &mut self,
        mem: &mut dyn RemoteMemory,
        type_name: Option<String>,
        summary: GraphSummary,
    ) -> WhyReport {
        let sampled = std::mem::take(&mut self.sampled);
        let scale = self.instances as f64 / sampled.len().max(1) as f64;
        let (paths, unreachable) = self.group_paths(mem, &sampled, scale);
        let weak = std::mem::take(&mut self.weak);
        let weak_step = (weak.len() / self.sample.max(1)).max(1);
        let weak_sampled: Vec<u32> = weak.iter().step_by(weak_step).copied().collect();
        let weak_scale = weak.len() as f64 / weak_sampled.len().max(1) as f64;
        let (weak_paths, _) = self.group_paths(mem, &weak_sampled, weak_scale);
        let mut weak_types: FxHashMap<String, u64> = FxHashMap::default();
        for &w in &weak {
            *weak_types.entry(self.type_info(mem, w).name.clone()).or_default() += 1;
        }
        let mut weak_ref_types: Vec<(String, u64)> = weak_types.into_iter().collect();
        weak_ref_types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let held_outside: FxHashSet<u64> =
            sampled.iter().filter(|i| self.external_of.contains_key(i)).map(|&i| self.addr(i)).collect();
        let opaque_holders = if held_outside.is_empty() { Vec::new() } else { self.opaque(mem, &held_outside, scale) };
        let top = std::mem::take(&mut self.top);
        let one_type = match top.first() {
            Some(&first) if type_name.is_none() => {
                let name = self.type_info(mem, first).name.clone();
                let all = sampled.iter().chain(&top).all(|&i| self.type_info(mem, i).name == name);
                all.then_some(name)
            }
            _ => None,
        };
        let largest = self.retainers(mem, &top);
        WhyReport {
            type_name: type_name.or(one_type),
            explanation: Some(Explanation {
                instances: self.instances,
                sampled: sampled.len() as u64,
                size_bytes: self.size_bytes,
                retained_bytes: 0,
                paths,
                unreachable: (unreachable as f64 * scale).round() as u64,
                external_refs: self.external_refs,
                externally_held: self.externally_held,
                frame_refs: self.frame_refs,
                weak_refs: weak.len() as u64,
                weak_paths,
                weak_ref_types,
                opaque_holders,
            }),
            largest,
            graph: summary,
        }
    }

    fn opaque(&mut self, mem: &mut dyn RemoteMemory, wanted: &FxHashSet<u64>, scale: f64) -> Vec<OpaqueHolder> {
        if self.opaque.is_empty() {
            return Vec::new();
        }
        let maps = self.process.current_maps();
        let candidates = std::mem::take(&mut self.opaque);
        let bits = &self.bits;
        let is_object = |addr: u64| bits.contains(addr);
        let mut found = opaque_holders(mem, &self.process.layout, &maps, &is_object, &candidates, wanted);
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        let held: Vec<(u32, u64, u64)> =
            found.into_iter().filter_map(|(addr, count)| Some((self.bits.id_of(addr)?, addr, count))).collect();
        let ids: Vec<u32> = held.iter().map(|h| h.0).collect();
        let paths = self.rendered_paths(mem, &ids);
        held.into_iter()
            .zip(paths)
            .map(|((i, addr, count), path)| OpaqueHolder {
                type_name: self.type_info(mem, i).name.clone(),
                address: format!("{addr:#x}"),
                path,
                count: (count as f64 * scale).round() as u64,
            })
            .collect()
    }

    /// The paths to `nodes` as Python spells them, all read at once: a holder on the way is
    /// decoded once, not once per path.
    fn rendered_paths(&mut self, mem: &mut dyn RemoteMemory, nodes: &[u32]) -> Vec<Option<String>> {
        self.paths(mem, nodes)
            .into_iter()
            .map(|p| {
                p.map(|p| {
                    let steps: Vec<Step> = p.steps.into_iter().map(|(_, s)| s).collect();
                    render(&p.root, &steps, &[])
                })
            })
            .collect()
    }

    fn retainers(&mut self, mem: &mut dyn RemoteMemory, nodes: &[u32]) -> Vec<Retainer> {
        let paths = self.rendered_paths(mem, nodes);
        nodes
            .iter()
            .zip(paths)
            .map(|(&i, path)| {
                let t = self.type_info(mem, i);
                let addr = self.addr(i);
                Retainer {
                    address: format!("{addr:#x}"),
                    type_name: t.name.clone(),
                    size_bytes: size_of_object(mem, &self.process.layout, addr, &t),
                    retained_bytes: 0,
                    path,
                    external_refs: self.external_of.get(&i).copied().unwrap_or(0),
                    interpreter: (self.interpreters > 1).then(|| self.interpreter_of(i)).flatten(),
                }
            })
            .collect()
    }

    /// The paths to `nodes` grouped by shape as the full mode groups them (with no retained
    /// sizes), most first; and how many no root reaches.
    fn group_paths(&mut self, mem: &mut dyn RemoteMemory, nodes: &[u32], scale: f64) -> (Vec<PathGroup>, u64) {
        let paths = self.paths(mem, nodes);
        group_paths(nodes, paths, scale, &mut |node| NodeFacts {
            type_name: self.type_info(mem, node).name.clone(),
            address: self.addr(node),
            retained_bytes: 0,
        })
    }
}

/// 3.12+: the static builtin types' `__dict__` and `__subclasses__`, as the graph's build
/// finds them.
fn static_type_roots(
    mem: &mut dyn RemoteMemory,
    d: &mut Discovery,
    roots: &mut Vec<RootAt>,
    interpreter: i64,
    interp_addr: u64,
) {
    let Some(st) = d.layout.graph.static_types else { return };
    let Ok(count) = mem.read_u64(interp_addr + st.count as u64) else { return };
    for k in 0..count.min(st.max as u64) {
        let entry = interp_addr + st.array as u64 + k * st.entry_size as u64;
        let Ok(type_addr) = mem.read_u64(entry) else { continue };
        let Ok(name) = type_name(mem, d.layout, type_addr) else { continue };
        for (offset, attr) in [(st.tp_dict, "__dict__"), (st.tp_subclasses, "__subclasses__")] {
            let Ok(addr) = mem.read_u64(entry + offset as u64) else { continue };
            if d.resolve(mem, addr) {
                let field = d.decode.fields.id(&format!("{name}.{attr}"));
                roots.push(RootAt::Interpreter { addr, interpreter, field });
            }
        }
    }
}

/// Words of a list's or tuple's items read at once: a list of millions would otherwise be
/// millions of 24-byte `Referent`s at once, more than the rest of the search.
const ITEMS_BLOCK: u64 = 8192;

/// An object's references, a block at a time: a list's or tuple's items in blocks of
/// [`ITEMS_BLOCK`], any other object's all at once (decoded by [`referents`]).
enum Cursor {
    Items { at: u64, count: u64, next: u64 },
    Decoded { given: bool },
}

impl Cursor {
    /// Starts on the object at `addr` of type `t`; `refs` holds the decoded references of an
    /// object that is not a list or tuple.
    fn start(
        mem: &mut dyn RemoteMemory,
        layout: &Layout,
        decode: &mut Decode,
        addr: u64,
        t: &TypeInfo,
        refs: &mut Vec<Referent>,
    ) -> Cursor {
        refs.clear();
        let c = &layout.containers;
        let items = match t.kind {
            Kind::List => mem.read_u64(addr + c.list_ob_item as u64).ok(),
            Kind::Tuple => Some(addr + layout.graph.tuple_ob_item as u64),
            _ => {
                // An object freed or rewritten during the read yields no references.
                let _ = referents(mem, layout, decode, addr, t, refs);
                return Cursor::Decoded { given: false };
            }
        };
        let count = mem.read_u64(addr + c.ob_size as u64).ok();
        match (items, count) {
            // The graph's budget: a torn length or a crafted one reads nothing.
            (Some(at), Some(count)) if count <= MAX_ITEMS && decode.claim(count * 8) => {
                Cursor::Items { at, count, next: 0 }
            }
            _ => Cursor::Decoded { given: false },
        }
    }

    /// The frame's references (3.11+ frames are not objects).
    fn of_frame(frame: &StackFrame, decode: &mut Decode, refs: &mut Vec<Referent>) -> Cursor {
        refs.clear();
        decode.frame_referents(frame, refs);
        Cursor::Decoded { given: false }
    }

    /// The next block into `refs`; false when there is no more.
    fn next(&mut self, mem: &mut dyn RemoteMemory, refs: &mut Vec<Referent>) -> bool {
        match self {
            Cursor::Decoded { given } => !std::mem::replace(given, true),
            Cursor::Items { at, count, next } => {
                if *next >= *count {
                    return false;
                }
                let n = (*count - *next).min(ITEMS_BLOCK);
                let Ok(words) = mem.read_words(*at + 8 * *next, n as usize) else { return false };
                refs.clear();
                refs.extend(
                    words
                        .into_iter()
                        .enumerate()
                        .map(|(k, w)| Referent::strong(w, Label::Index((*next + k as u64) as u32), true)),
                );
                *next += n;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ranks_of_addresses() {
        let mut bits = NodeBits::default();
        let addrs = [0x7f00_0010_0000u64, 0x1000, 0x1008, 0x7f00_0000_fff8, 0x2000_0000, 0x1040];
        for (k, &a) in addrs.iter().enumerate() {
            assert!(bits.insert(a, k % 2 == 0));
        }
        assert!(!bits.insert(0x1008, true), "already there");
        assert!(!bits.insert(0x1001, true), "unaligned");
        bits.freeze(3);
        let mut sorted = addrs.to_vec();
        sorted.sort_unstable();
        for (k, &a) in sorted.iter().enumerate() {
            assert_eq!(bits.id_of(a), Some(3 + k as u32), "{a:#x}");
            assert_eq!(bits.addr_of(3 + k as u32), Some(a));
        }
        assert_eq!(bits.id_of(0x1010), None);
        assert_eq!(bits.addr_of(2), None);
        assert_eq!(bits.addr_of(3 + sorted.len() as u32), None);
        assert_eq!(bits.addr_of(u32::MAX), None);
        assert!(bits.is_container(0x7f00_0010_0000) && !bits.is_container(0x1000));
    }

    /// `addr_of` starts from the last address it found: ids asked for in address order, in
    /// reverse, in long jumps and at random give the same addresses as a fresh search.
    #[test]
    fn addresses_of_ids_in_any_order() {
        let mut bits = NodeBits::default();
        // Dense runs, sparse ones and empty words, over three chunks.
        let addrs: Vec<u64> = (0..3u64)
            .flat_map(|chunk| {
                let kept = |k: &u64| (k % 7 < 3 && !(5000..8000).contains(k)) || k % 1000 == 999;
                (0..20_000u64).filter(kept).map(move |k| (chunk << 30) + 0x10_0000 + k * 24)
            })
            .collect();
        for &a in &addrs {
            assert!(bits.insert(a, false));
        }
        bits.freeze(2);
        let n = addrs.len() as u32;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random = (0..5000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        });
        let orders: Vec<Vec<u32>> =
            vec![(0..n).collect(), (0..n).rev().collect(), (0..n).step_by(997).collect(), random.collect()];
        for order in orders {
            for k in order {
                assert_eq!(bits.addr_of(2 + k), Some(addrs[k as usize]), "id {}", 2 + k);
            }
        }
        assert_eq!(bits.addr_of(2 + n), None);
    }
}
