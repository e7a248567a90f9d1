//! The heap graph: who refers to whom, so that leakspy can say who holds the objects that
//! grow (`why`), how much memory each holder keeps alive, and which references come from
//! outside the heap.
//!
//! Nodes are the GC-tracked objects, the objects the GC does not track (str, int, bytes,
//! float, untracked tuples and dicts) found through references, and, from 3.11, the threads'
//! frames (which are no longer objects). What each object refers to is decoded in
//! [`super::referents`]: strong references are the graph's edges (paths, dominators,
//! retained sizes), weak ones (a weak reference's referent) are kept apart, for `why` to show
//! who else refers to an object without keeping it alive.

use super::address_set::AddressSet;
use super::census::refcount;
use super::compact::Compact;
use super::memory_use::map_bytes;
use super::pools::Allocations;
use super::referents::{Decoder, Referent, Strength, referents, type_info};
pub use super::referents::{Kind, Storage, TypeInfo};
use super::walk::{WalkLimits, Walker};
use crate::cpython::frames::{StackFrame, thread_stacks};
use crate::cpython::layout::{Layout, ObjectLayout};
use crate::cpython::objects::{read_str, type_name};
use crate::cpython::process::{PythonProcess, read_error};
use crate::cpython::sizes::{SizeClass, shallow_size};
use crate::error::LeakspyError;
use crate::memory::maps::MemoryMap;
use crate::memory::{RemoteMemory, u64_at};
use crate::text::terminal;
use rustc_hash::{FxHashMap, FxHashSet};
use std::ops::Range;
use std::rc::Rc;

/// Items read from one container: more is a torn length.
pub(super) const MAX_ITEMS: u64 = 1 << 26;
/// Containers' item arrays may add up to this many times the target's resident memory (at
/// least `MIN_CLAIMS_BASE`): real ones add up to less than it (shared keys of split dicts
/// are read once per instance, the reason for the margin).
const CLAIMS_PER_TARGET_BYTE: u64 = 4;
const MIN_CLAIMS_BASE: u64 = 64 << 20;
/// A refcount above this is a word that is not an object's header (a hash, a pointer).
const MAX_PLAUSIBLE_REFCOUNT: u64 = 1 << 40;
/// 3.11 gives statically allocated objects (deep-frozen code, their strs and tuples) a
/// refcount of 999,999,999 instead of immortality: counts above this are those.
const STATIC_REFCOUNT: u64 = 1 << 29;
/// Tracked objects are indexed by 64 KiB chunk of the address space.
const CHUNK_SHIFT: u32 = 16;

/// How a reference is spelled on a path, as the decoding of a referrer gives it. Names (dict
/// keys, attribute and variable names) are ids the decoder gave out. The graph keeps none of
/// it per edge (see [`Edge`]): the few steps of the paths that are printed are found again by
/// decoding their referrers once more ([`Paths::paths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// `[i]` in a list or tuple.
    Index(u32),
    /// A dict value, under a key: `['key']`, or `.key` in a namespace.
    Key(u32),
    /// An attribute of an instance (values arrays and __dict__ alike): `.name`.
    Attr(u32),
    /// A local (or cell, or free) variable of a frame: `.f_locals['name']`.
    Local(u32),
    /// An entry of a running frame's value stack (a `for` loop's iterator, an argument being
    /// passed).
    Stack,
    /// A module's or class's namespace dict: `.__dict__`.
    Namespace,
    /// A set member.
    Member,
    /// A dict key (the key object itself, not the value under it).
    DictKey,
    /// A field with a name (a member or a known field), index into [`HeapGraph::field_names`].
    Named(u32),
    /// Found by the conservative scan, at this offset in the referrer.
    Field(u32),
}

impl Label {
    pub fn is_exact(self) -> bool {
        !matches!(self, Label::Field(_))
    }
}

/// An edge is its target's node id, with these flags in the two high bits: 4 bytes an edge,
/// where the label made it 8. Node ids stay below them ([`MAX_NODES`]).
const CONSERVATIVE: u32 = 1 << 31;
/// A reference through a named field (a member, a known field): what `attach`'s holders of
/// weak reference types count (their callback), not their referent.
const NAMED: u32 = 1 << 30;
const TARGET: u32 = NAMED - 1;
/// Nodes a graph may have: ids and the sentinels stay below the edge flags.
const MAX_NODES: usize = TARGET as usize - 2;

/// One reference in the graph, without its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub target: u32,
    /// Not found by the conservative scan: a real field or item.
    pub exact: bool,
    /// Through a named field ([`Label::Named`]).
    pub named: bool,
}

fn pack_edge(target: u32, label: Label) -> u32 {
    let exact = if label.is_exact() { 0 } else { CONSERVATIVE };
    let named = if matches!(label, Label::Named(_)) { NAMED } else { 0 };
    (target & TARGET) | exact | named
}

/// Where a path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// An interpreter's `sys.modules`.
    Modules { node: u32, interpreter: i64 },
    /// A frame of a thread's stack (index into [`HeapGraph::frames`]).
    Frame { node: u32, frame: u32 },
    /// An object the interpreter state or the runtime holds outside any module (index into
    /// [`HeapGraph::field_names`] for the field's name).
    Interpreter { node: u32, interpreter: i64, field: u32 },
}

impl Root {
    /// The interpreter the root belongs to (-1: the runtime, shared by all).
    pub fn interpreter(self, graph: &HeapGraph) -> i64 {
        match self {
            Root::Modules { interpreter, .. } | Root::Interpreter { interpreter, .. } => interpreter,
            Root::Frame { frame, .. } => graph.frames.get(frame as usize).map_or(0, |f| f.interpreter),
        }
    }

    pub fn node(self) -> u32 {
        match self {
            Root::Modules { node, .. } | Root::Frame { node, .. } | Root::Interpreter { node, .. } => node,
        }
    }
}

pub struct HeapGraph {
    /// Node addresses: 3.11+ frames first (their _PyInterpreterFrame), then the GC-tracked
    /// objects sorted, then untracked objects in the order they were found.
    pub addrs: Vec<u64>,
    /// Index into `types` (two bytes a node: see [`Compact`]).
    type_of: Compact<u16>,
    /// 0 for immortal objects and frames: none of their references is "external" in any
    /// useful sense.
    refcounts: Compact<u16>,
    /// What sys.getsizeof reports for each node (0 for frames), two bytes a node for sizes
    /// that are almost never above 64 KiB, the others exact beside them.
    sizes: Compact<u16>,
    /// Shared so that the builder can hold a node's type while it reads the node.
    pub types: Vec<Rc<TypeInfo>>,
    tracked: Range<usize>,
    /// Untracked nodes by address while the graph is built (they are found in any order);
    /// emptied at the end, when `untracked_sorted` takes over.
    untracked: NodeTable,
    /// Untracked nodes sorted by address: 4 bytes a node, where the map takes 20 to 40.
    untracked_sorted: Vec<u32>,
    /// CSR adjacency: edges of node i are `edges[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    /// Strong references only, [`Edge`]s packed in 4 bytes.
    edges: Vec<u32>,
    /// Namespaces of modules and classes (their `__dict__`): not "largest retainers", they
    /// hold what their owner does.
    pub namespaces: Vec<u32>,
    /// Weak references, (referrer, referent): no edge for paths or retained sizes.
    pub weak: Vec<(u32, u32)>,
    /// Interpreters in the process: paths name theirs when there are several.
    pub interpreters: usize,
    /// References from objects in the graph (a byte a node: most have one or two).
    in_degree: Compact<u8>,
    /// References owned by 3.11+ frames (a local variable, a value on the stack), per node
    /// that has any: few do.
    pub frame_refs: FxHashMap<u32, u32>,
    /// Where each 64 KiB chunk's objects start in the sorted tracked addresses, so a lookup
    /// searches a few hundred addresses instead of millions.
    chunk_ranges: FxHashMap<u64, (u32, u32)>,
    /// Names of fields (members of types, known fields of built-in types).
    pub field_names: Vec<String>,
    pub frames: Vec<StackFrame>,
    pub roots: Vec<Root>,
    /// Discovery of untracked objects stopped at the object limit.
    pub truncated: bool,
    /// Threads whose frames could not be read (they exited under the read): what only their
    /// locals held shows as unreachable.
    pub skipped_threads: u64,
    /// The most bytes the graph and its builder held while it was read (arrays with their
    /// slack, the table of untracked nodes, the set of rejected addresses).
    pub build_peak_bytes: u64,
}

impl HeapGraph {
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn frame_refs(&self, i: u32) -> u32 {
        self.frame_refs.get(&i).copied().unwrap_or(0)
    }

    pub fn index_of(&self, addr: u64) -> Option<u32> {
        if let Some(&(start, end)) = self.chunk_ranges.get(&(addr >> CHUNK_SHIFT))
            && let Ok(i) = self.addrs[start as usize..end as usize].binary_search(&addr)
        {
            return Some(start + i as u32);
        }
        if let Some(i) = self.untracked.get(&self.addrs, addr) {
            return Some(i);
        }
        let addrs = &self.addrs;
        let k = self.untracked_sorted.partition_point(|&i| addrs[i as usize] < addr);
        self.untracked_sorted.get(k).copied().filter(|&i| addrs[i as usize] == addr)
    }

    /// What sys.getsizeof reports for node `i` (0 for frames).
    pub fn size(&self, i: u32) -> u64 {
        self.sizes.get(i)
    }

    /// Node `i`'s type, an index into `types`.
    pub fn type_id(&self, i: u32) -> usize {
        self.type_of.get(i) as usize
    }

    /// Node `i`'s refcount (0: immortal, or a frame).
    pub fn refcount(&self, i: u32) -> u64 {
        self.refcounts.get(i)
    }

    /// References to node `i` from objects in the graph.
    pub fn in_degree(&self, i: u32) -> u64 {
        self.in_degree.get(i)
    }

    /// Bytes the graph's own structures hold (capacity, not length: what the allocator gave),
    /// so that tests and the benchmark can say how many bytes a node costs.
    pub fn heap_bytes(&self) -> u64 {
        use crate::heap::memory_use::vec_bytes;
        vec_bytes(&self.addrs)
            + self.type_of.heap_bytes()
            + self.refcounts.heap_bytes()
            + self.sizes.heap_bytes()
            + vec_bytes(&self.types)
            + self.untracked.heap_bytes()
            + vec_bytes(&self.untracked_sorted)
            + vec_bytes(&self.offsets)
            + vec_bytes(&self.edges)
            + vec_bytes(&self.weak)
            + self.in_degree.heap_bytes()
            + map_bytes(&self.frame_refs)
            + map_bytes(&self.chunk_ranges)
            + vec_bytes(&self.namespaces)
            + vec_bytes(&self.field_names)
            + vec_bytes(&self.frames)
            + vec_bytes(&self.roots)
    }

    /// Gives back what the arrays grew by and did not use, and replaces the map of untracked
    /// nodes by their sorted index: done once the graph is read, before the analyses that
    /// make the peak.
    fn compact(&mut self) {
        // The arrays' slack goes first, so that the sorted index below fits in what it gave back.
        self.addrs.shrink_to_fit();
        self.type_of.shrink_to_fit();
        self.refcounts.shrink_to_fit();
        self.sizes.shrink_to_fit();
        self.offsets.shrink_to_fit();
        self.edges.shrink_to_fit();
        self.weak.shrink_to_fit();
        self.in_degree.shrink_to_fit();
        self.namespaces.shrink_to_fit();
        // The table goes before the sorted index is made: the untracked nodes are the last
        // ones, so the index needs nothing of it.
        self.untracked = NodeTable::default();
        let first = self.tracked.end.min(self.addrs.len());
        let (sorted, scratch_bytes) = sort_by_address(&self.addrs, first);
        self.build_peak_bytes = self.build_peak_bytes.max(self.heap_bytes() + scratch_bytes);
        self.untracked_sorted = sorted;
    }

    pub fn is_tracked(&self, i: u32) -> bool {
        self.tracked.contains(&(i as usize))
    }

    /// Nodes that are objects (not 3.11+ frames).
    pub fn object_count(&self) -> u64 {
        (self.len() - self.tracked.start) as u64
    }

    pub fn untracked_count(&self) -> u64 {
        (self.len() - self.tracked.end.min(self.len())) as u64
    }

    pub fn edges_len(&self) -> u64 {
        self.edges.len() as u64
    }

    pub fn edges_of(&self, i: u32) -> impl Iterator<Item = Edge> + '_ {
        let range = self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize;
        self.edges[range].iter().map(|&e| Edge {
            target: e & TARGET,
            exact: e & CONSERVATIVE == 0,
            named: e & NAMED != 0,
        })
    }

    pub fn type_info(&self, i: u32) -> &TypeInfo {
        &self.types[self.type_id(i)]
    }

    /// Refcount minus the references found in the heap and in frames: held from outside
    /// (native code, the interpreter's own state).
    pub fn external_refs(&self, i: u32) -> u64 {
        let held = self.in_degree(i) + u64::from(self.frame_refs(i));
        self.refcount(i).saturating_sub(held)
    }
}

/// Nodes by address, open addressing over their indices: 4 bytes a slot, at most three
/// quarters full (linear probing over a multiplicative hash of addresses stays short there),
/// where a map of (address, index) takes 16 bytes an entry plus its slack. The address is
/// the node's own, in [`HeapGraph::addrs`], so the table need not hold it.
#[derive(Default)]
struct NodeTable {
    slots: Vec<u32>,
    len: usize,
}

impl NodeTable {
    const EMPTY: u32 = u32::MAX;

    fn slot_of(addr: u64, mask: usize) -> usize {
        // Objects are 8- or 16-byte aligned: the low bits carry nothing.
        ((addr >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
    }

    fn get(&self, addrs: &[u64], addr: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut k = Self::slot_of(addr, mask);
        loop {
            match self.slots[k] {
                Self::EMPTY => return None,
                i if addrs.get(i as usize) == Some(&addr) => return Some(i),
                _ => k = (k + 1) & mask,
            }
        }
    }

    /// Adds node `i` (its address is `addrs[i]`, not in the table yet). When the table grows,
    /// returns the bytes of the old slots, held beside the new ones while they are moved.
    fn insert(&mut self, addrs: &[u64], i: u32) -> Option<u64> {
        let mut grew = None;
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let size = (self.slots.len() * 2).max(1024);
            let old = std::mem::replace(&mut self.slots, vec![Self::EMPTY; size]);
            grew = Some(crate::heap::memory_use::vec_bytes(&old));
            for j in old.into_iter().filter(|&j| j != Self::EMPTY) {
                self.place(addrs, j);
            }
        }
        self.place(addrs, i);
        self.len += 1;
        grew
    }

    fn place(&mut self, addrs: &[u64], i: u32) {
        let mask = self.slots.len() - 1;
        let mut k = Self::slot_of(addrs.get(i as usize).copied().unwrap_or(0), mask);
        while self.slots[k] != Self::EMPTY {
            k = (k + 1) & mask;
        }
        self.slots[k] = i;
    }

    fn heap_bytes(&self) -> u64 {
        crate::heap::memory_use::vec_bytes(&self.slots)
    }
}

/// Builds the graph while reading it: nodes are processed in order, and an address that a
/// reference points to and that is not yet a node is checked (a readable header with a
/// plausible refcount and a known type) and appended, so untracked objects are found
/// breadth-first from the tracked ones.
struct Builder<'a> {
    layout: &'a Layout,
    maps: &'a MemoryMap,
    graph: HeapGraph,
    type_index: FxHashMap<u64, u32>,
    field_index: FxHashMap<String, u32>,
    /// Addresses already found not to be objects.
    rejected: AddressSet,
    allocations: Allocations,
    max_nodes: usize,
    /// Bytes that containers' item arrays may still take. Each real array is the target's
    /// own memory, read once; containers whose sizes add up to far more than the target holds
    /// are crafted (or torn), and past this budget their items are not read, so that the
    /// graph costs in proportion to the target's memory, not to what its objects claim.
    claims_left: u64,
    /// What the edges and offsets being read hold (they join the graph at the end).
    edges_bytes: u64,
}

impl Decoder for Builder<'_> {
    /// Takes `bytes` of item arrays out of the budget; false (and the graph marked
    /// truncated) when they do not fit.
    fn claim(&mut self, bytes: u64) -> bool {
        if bytes > self.claims_left {
            self.graph.truncated = true;
            return false;
        }
        self.claims_left -= bytes;
        true
    }

    fn field_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.field_index.get(name) {
            return id;
        }
        self.graph.field_names.push(name.to_string());
        let id = self.graph.field_names.len() as u32 - 1;
        self.field_index.insert(name.to_string(), id);
        id
    }

    /// Labels are not kept: no name needs an id.
    fn name_id(&mut self, _addr: u64) -> u32 {
        0
    }
}

impl Builder<'_> {
    fn type_id(&mut self, mem: &mut dyn RemoteMemory, type_addr: u64) -> u32 {
        if let Some(&i) = self.type_index.get(&type_addr) {
            return i;
        }
        let layout = self.layout;
        let info = type_info(mem, layout, type_addr, &mut |name| self.field_id(name))
            .unwrap_or_else(|_| TypeInfo::synthetic(format!("<unreadable type {type_addr:#x}>"), Kind::Other));
        self.graph.types.push(Rc::new(info));
        let i = self.graph.types.len() as u32 - 1;
        self.type_index.insert(type_addr, i);
        i
    }

    fn push_node(&mut self, addr: u64, type_id: u32, refcount: u32) -> u32 {
        let g = &mut self.graph;
        grow_by_quarter(&mut g.addrs);
        g.addrs.push(addr);
        g.type_of.push(u64::from(type_id));
        g.refcounts.push(u64::from(refcount));
        g.in_degree.push(0);
        g.addrs.len() as u32 - 1
    }

    /// Whether `addr`, not a type seen yet, is one: an instance of a metatype seen, or of a
    /// metatype whose own type is one. numpy's dtype classes are instances of `_DTypeMeta`,
    /// which no object met before may have had as its type: with only the first check, a
    /// dtype singleton met first was not an object (and stayed rejected).
    fn is_type(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> bool {
        let at = self.layout.object.ob_type as u64;
        let is_metatype =
            |b: &Self, t: u64| b.type_index.get(&t).is_some_and(|&id| b.graph.types[id as usize].kind == Kind::Type);
        let Ok(meta) = mem.read_u64(addr + at) else { return false };
        if is_metatype(self, meta) {
            return true;
        }
        if !mem.read_u64(meta + at).is_ok_and(|meta_type| is_metatype(self, meta_type)) {
            return false;
        }
        let meta_id = self.type_id(mem, meta);
        self.graph.types[meta_id as usize].kind == Kind::Type
    }

    /// The node at `addr`, adding it if it is an object not seen yet.
    fn resolve(&mut self, mem: &mut dyn RemoteMemory, addr: u64) -> Option<u32> {
        if let Some(i) = self.graph.index_of(addr) {
            return Some(i);
        }
        if addr == 0 || addr & 7 != 0 || self.graph.len() >= self.max_nodes {
            self.graph.truncated |= self.graph.len() >= self.max_nodes;
            return None;
        }
        // Words that point outside any readable mapping are most of what a conservative scan
        // finds: dropped before a read (a system call each) or a mark in the set of checked
        // addresses (a bitmap for every megabyte of address space they land in).
        if !self.maps.is_readable(addr, 16) || !self.rejected.insert(addr) {
            return None;
        }
        let mut header = [0u8; 16];
        let o = &self.layout.object;
        mem.read(addr, &mut header).ok()?;
        let word = u64_at(&header, o.ob_refcnt);
        if !plausible_refcount(o, word) {
            return None;
        }
        let rc = mortal_refcount(o, word);
        let ob_type = u64_at(&header, o.ob_type);
        if !self.type_index.contains_key(&ob_type) && !self.is_type(mem, ob_type) {
            return None;
        }
        if !self.allocations.allows(mem, addr, word) {
            return None;
        }
        let type_id = self.type_id(mem, ob_type);
        let i = self.push_node(addr, type_id, rc);
        let g = &mut self.graph;
        if let Some(old) = g.untracked.insert(&g.addrs, i) {
            // The old slots and the new side by side: part of the build's peak.
            let held =
                g.heap_bytes() + old + self.rejected.heap_bytes() + self.allocations.heap_bytes() + self.edges_bytes;
            g.build_peak_bytes = g.build_peak_bytes.max(held);
        }
        Some(i)
    }
}

/// Nodes `first..` sorted by their address, by a least-significant-digit radix sort of their
/// indices (16-bit digits of the address, as many as the addresses' spread needs): 8 bytes a
/// node with its scratch array, where sorting (address, node) pairs takes 16 and sorting the
/// indices with a comparison reads two random addresses per comparison. Also returns the bytes
/// it held.
fn sort_by_address(addrs: &[u64], first: usize) -> (Vec<u32>, u64) {
    let keys = addrs.get(first..).unwrap_or(&[]);
    let (Some(&low), Some(&high)) = (keys.iter().min(), keys.iter().max()) else { return (Vec::new(), 0) };
    let bits = 64 - (high - low).leading_zeros();
    let mut sorted: Vec<u32> = (first as u32..addrs.len() as u32).collect();
    let mut scratch = vec![0u32; sorted.len()];
    let held = crate::heap::memory_use::vec_bytes(&sorted) + crate::heap::memory_use::vec_bytes(&scratch);
    let mut shift = 0;
    while shift < bits {
        let digit = |i: u32| ((addrs[i as usize] - low) >> shift) as usize & 0xffff;
        let mut starts = vec![0u32; 1 << 16];
        for &k in keys {
            starts[((k - low) >> shift) as usize & 0xffff] += 1;
        }
        let mut total = 0;
        for s in starts.iter_mut() {
            (*s, total) = (total, total + *s);
        }
        for &i in &sorted {
            let d = digit(i);
            scratch[starts[d] as usize] = i;
            starts[d] += 1;
        }
        std::mem::swap(&mut sorted, &mut scratch);
        shift += 16;
    }
    (sorted, held)
}

/// Makes room for one more element by growing a quarter, not double: the graph's arrays are
/// most of leakspy's memory, and doubling would leave up to half of each unused.
fn grow_by_quarter<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 1024);
    }
}

/// The refcount of a mortal object; 0 for immortal and static ones, whose references are
/// never "external" in any useful sense.
pub(super) fn mortal_refcount(layout: &ObjectLayout, word: u64) -> u32 {
    refcount(layout, word).filter(|&n| n < STATIC_REFCOUNT).unwrap_or(0) as u32
}

/// Whether `word` may be a live object's refcount (immortal, or a count neither 0 nor huge).
pub(super) fn plausible_refcount(layout: &ObjectLayout, word: u64) -> bool {
    matches!(refcount(layout, word), Some(1..MAX_PLAUSIBLE_REFCOUNT) | None)
}

/// Reads the whole graph: walks the GC lists, reads every thread's frames, then every node's
/// references, finding untracked objects on the way.
pub fn build(process: &PythonProcess, mem: &mut dyn RemoteMemory) -> Result<HeapGraph, LeakspyError> {
    build_scoped(process, mem, &mut |_, _| true)
}

/// As [`build`], but of the GC-tracked objects only those `scope` accepts (given the node and
/// its type, in address order) have their references read and their size computed; the others
/// are nodes without edges. What `attach` asks at the end (which growing objects hold which)
/// needs the references of a sample of a few types, at the cost of a walk, not of the graph.
pub fn build_scoped(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    scope: &mut dyn FnMut(u32, &TypeInfo) -> bool,
) -> Result<HeapGraph, LeakspyError> {
    let layout = &process.layout;
    mem.invalidate();
    let interpreters = process.interpreters(mem)?.interpreters;
    let states = process.gc_states(mem, &interpreters)?;
    let limits = WalkLimits::default();
    let mut found: Vec<(u64, u64, u64)> = Vec::new();
    let mut walker = Walker::new(layout, limits);
    for list in states.iter().flat_map(|s| &s.lists) {
        walker
            .walk(mem, list.head, &mut |_, h| found.push((h.addr, h.type_addr, h.refcnt_word)))
            .map_err(|e| read_error(process.pid, e))?;
    }
    found.sort_unstable_by_key(|f| f.0);
    found.dedup_by_key(|f| f.0);
    let (frames, skipped_threads) = thread_stacks(process, mem, &interpreters)?;
    let stack_frames = frames.iter().filter(|f| f.frame_object.is_none()).count();

    // Mappings as they are now: the ones read at attach time miss heap grown since.
    let maps = process.current_maps();
    let mut b = Builder {
        layout,
        maps: &maps,
        graph: HeapGraph {
            addrs: Vec::with_capacity(found.len() * 2),
            type_of: Compact::with_capacity(found.len() * 2),
            refcounts: Compact::with_capacity(found.len() * 2),
            chunk_ranges: FxHashMap::default(),
            sizes: Compact::default(),
            types: Vec::new(),
            tracked: stack_frames..stack_frames + found.len(),
            untracked: NodeTable::default(),
            untracked_sorted: Vec::new(),
            offsets: Vec::new(),
            edges: Vec::new(),
            weak: Vec::new(),
            interpreters: 0,
            in_degree: Compact::with_capacity(found.len() * 2),
            frame_refs: FxHashMap::default(),
            namespaces: Vec::new(),
            field_names: Vec::new(),
            frames: Vec::new(),
            roots: Vec::new(),
            truncated: false,
            skipped_threads,
            build_peak_bytes: 0,
        },
        type_index: FxHashMap::default(),
        field_index: FxHashMap::default(),
        rejected: AddressSet::default(),
        allocations: Allocations::new(layout),
        max_nodes: (limits.max_objects as usize).max(found.len() * 4).min(MAX_NODES),
        claims_left: CLAIMS_PER_TARGET_BYTE
            * process.rss().unwrap_or_else(|| maps.writable_bytes()).max(MIN_CLAIMS_BASE),
        edges_bytes: 0,
    };
    let frame_type = b.graph.types.len() as u32;
    b.graph.types.push(Rc::new(TypeInfo::synthetic("<frame>".into(), Kind::StackFrame)));
    for (k, _) in frames.iter().enumerate().filter(|(_, f)| f.frame_object.is_none()) {
        let node = b.push_node(k as u64, frame_type, 0);
        b.graph.roots.push(Root::Frame { node, frame: k as u32 });
    }
    for (addr, type_addr, word) in &found {
        let type_id = b.type_id(mem, *type_addr);
        b.push_node(*addr, type_id, mortal_refcount(&layout.object, *word));
    }
    drop(found);
    for i in b.graph.tracked.clone() {
        let chunk = b.graph.addrs[i] >> CHUNK_SHIFT;
        b.graph.chunk_ranges.entry(chunk).or_insert((i as u32, i as u32)).1 = i as u32 + 1;
    }
    // 3.8-3.10 track a frame object only once it outlives its call: running ones are found
    // here, as untracked objects.
    for (k, frame) in frames.iter().enumerate() {
        if let Some(node) = frame.frame_object.and_then(|addr| b.resolve(mem, addr)) {
            b.graph.roots.push(Root::Frame { node, frame: k as u32 });
        }
    }
    let modules_off = layout.containers.interp_modules;
    let mut module_roots = Vec::new();
    for interp in &interpreters {
        let modules = modules_off.and_then(|off| mem.read_u64(interp.addr + off as u64).ok());
        if let Some(node) = modules.and_then(|m| b.graph.index_of(m)) {
            module_roots.push(Root::Modules { node, interpreter: interp.id });
        }
    }
    b.graph.roots.splice(0..0, module_roots);
    // The interpreters' own roots, found like untracked objects (most are not tracked lists
    // and dicts), and the runtime's (interpreter -1).
    let runtime = process.runtime().map(|addr| (-1, addr, &layout.interp.runtime_roots));
    let states = interpreters.iter().map(|i| (i.id, i.addr, &layout.interp.roots));
    for (interpreter, base, fields) in states.chain(runtime) {
        for (name, off) in fields {
            let Ok(addr) = mem.read_u64(base + *off as u64) else { continue };
            if let Some(node) = b.resolve(mem, addr) {
                let field = b.field_id(name);
                b.graph.roots.push(Root::Interpreter { node, interpreter, field });
            }
        }
    }
    for interp in &interpreters {
        static_type_roots(mem, &mut b, interp.id, interp.addr);
    }

    let mut offsets = Vec::with_capacity(b.graph.addrs.capacity() + 1);
    b.graph.sizes = Compact::with_capacity(b.graph.addrs.capacity());
    // About two references per object in typical heaps; grown by a quarter when short.
    let mut edges: Vec<u32> = Vec::with_capacity(b.graph.addrs.capacity() * 2);
    let mut refs: Vec<Referent> = Vec::new();
    let mut weak: Vec<(u32, u32)> = Vec::new();
    let mut i = 0;
    while i < b.graph.len() {
        grow_by_quarter(&mut offsets);
        offsets.push(edges.len() as u32);
        refs.clear();
        let mut sequence = None;
        let t = Rc::clone(&b.graph.types[b.graph.type_id(i as u32)]);
        let in_scope = !b.graph.is_tracked(i as u32) || scope(i as u32, &t);
        if t.kind == Kind::StackFrame {
            b.frame_referents(&frames[b.graph.addrs[i] as usize], &mut refs);
        } else if in_scope && matches!(t.kind, Kind::List | Kind::Tuple) {
            let addr = b.graph.addrs[i];
            sequence = sequence_items(mem, layout, &mut b, addr, t.kind);
        } else if in_scope {
            // An object freed or rewritten during the read yields no references, not an error.
            let addr = b.graph.addrs[i];
            let _ = referents(mem, layout, &mut b, addr, &t, &mut refs);
        }
        // Sized now, while its memory is in the cache.
        let size = match t.kind {
            Kind::StackFrame => 0,
            _ if !in_scope => 0,
            _ => {
                let class =
                    SizeClass { rule: t.size_rule, flags: t.flags, basicsize: t.basicsize, itemsize: t.itemsize };
                shallow_size(mem, layout, b.graph.addrs[i], &class).unwrap_or(0)
            }
        };
        b.graph.sizes.push(size);
        b.edges_bytes = crate::heap::memory_use::vec_bytes(&edges) + crate::heap::memory_use::vec_bytes(&offsets);
        let from_frame = t.kind == Kind::StackFrame;
        for &Referent { addr, label, owned, strength } in &refs {
            if let Some(target) = b.resolve(mem, addr) {
                if strength == Strength::Weak {
                    weak.push((i as u32, target));
                    continue;
                }
                grow_by_quarter(&mut edges);
                edges.push(pack_edge(target, label));
                if label == Label::Namespace && matches!(t.kind, Kind::Module | Kind::Type) {
                    b.graph.namespaces.push(target);
                }
                if !owned {
                    continue;
                }
                if from_frame {
                    *b.graph.frame_refs.entry(target).or_insert(0) += 1;
                } else {
                    b.graph.in_degree.increment(target);
                }
            }
        }
        // A list's or tuple's items, a slice at a time: a list of millions would otherwise be
        // millions of referents at once (24 bytes each), the build's peak. The same references
        // as `referents` gives (exact, strong, counted), in the same order.
        if let Some((items, count)) = sequence {
            let mut k = 0;
            while k < count {
                let len = (count - k).min(SEQUENCE_SLICE);
                let Ok(words) = mem.read_words(items + 8 * k, len as usize) else { break };
                for word in words {
                    if let Some(target) = b.resolve(mem, word) {
                        grow_by_quarter(&mut edges);
                        edges.push(pack_edge(target, Label::Index(0)));
                        b.graph.in_degree.increment(target);
                    }
                }
                k += len;
            }
        }
        i += 1;
    }
    offsets.push(edges.len() as u32);
    let builder_bytes = b.rejected.heap_bytes()
        + b.allocations.heap_bytes()
        + map_bytes(&b.type_index)
        + map_bytes(&b.field_index)
        + crate::heap::memory_use::vec_bytes(&refs);
    let mut graph = b.graph;
    graph.offsets = offsets;
    graph.edges = edges;
    graph.weak = weak;
    graph.frames = frames;
    graph.interpreters = interpreters.len();
    graph.build_peak_bytes = graph.heap_bytes() + builder_bytes;
    graph.compact();
    Ok(graph)
}

/// Items of a list or tuple read at once while the graph is built.
const SEQUENCE_SLICE: u64 = 1 << 14;

/// Where a list's or tuple's items are and how many, if the budget takes them (as
/// [`Builder::items`] would for [`referents`]); `None` for an unreadable object.
fn sequence_items(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    b: &mut Builder,
    obj: u64,
    kind: Kind,
) -> Option<(u64, u64)> {
    let count = mem.read_u64(obj + layout.containers.ob_size as u64).ok()?;
    let items = match kind {
        Kind::List => mem.read_u64(obj + layout.containers.list_ob_item as u64).ok()?,
        _ => obj + layout.graph.tuple_ob_item as u64,
    };
    (count <= MAX_ITEMS && b.claim(count * 8)).then_some((items, count))
}

/// 3.12+: the `__dict__` and `__subclasses__` dict the interpreter keeps for each static
/// builtin type (int, dict, object...), roots named `<interpreter N int.__dict__>`: no object
/// of the heap points at them, and they are not garbage. A torn entry is skipped.
fn static_type_roots(mem: &mut dyn RemoteMemory, b: &mut Builder, interpreter: i64, interp_addr: u64) {
    let Some(st) = b.layout.graph.static_types else { return };
    let Ok(count) = mem.read_u64(interp_addr + st.count as u64) else { return };
    for k in 0..count.min(st.max as u64) {
        let entry = interp_addr + st.array as u64 + k * st.entry_size as u64;
        // The entry starts with the type it is for.
        let Ok(type_addr) = mem.read_u64(entry) else { continue };
        let Ok(name) = type_name(mem, b.layout, type_addr) else { continue };
        for (offset, attr) in [(st.tp_dict, "__dict__"), (st.tp_subclasses, "__subclasses__")] {
            let Ok(addr) = mem.read_u64(entry + offset as u64) else { continue };
            if let Some(node) = b.resolve(mem, addr) {
                let field = b.field_id(&format!("{name}.{attr}"));
                b.graph.roots.push(Root::Interpreter { node, interpreter, field });
            }
        }
    }
}

/// Shortest paths from the roots by breadth-first search: for each node, the node it was
/// reached from. Module globals are searched first, then the threads' frames, both over exact
/// references; conservative ones (a word that looks like a pointer) are followed last, only to
/// reach what exact ones do not. So an object held by a global is reported there even if a
/// running frame also sees it, and a stale word never replaces a real holder.
///
/// How each step is spelled is not kept (4 bytes a node, not 8): the search took the first
/// exact reference from the parent (the first reference of any kind, for a node the last pass
/// reached, marked by [`CONSERVATIVE`] on its parent), and [`Paths::paths`] finds that same
/// reference again by decoding the parent once more.
pub struct Paths {
    /// Node reached from (a root is its own parent), with [`CONSERVATIVE`] when the last pass
    /// reached it; [`UNREACHED`].
    parent: Vec<u32>,
    /// The most bytes the search held at once (parents, and the order that is its queue).
    pub peak_bytes: u64,
}

const UNREACHED: u32 = u32::MAX;

pub fn shortest_paths(graph: &HeapGraph) -> Paths {
    let mut parent = vec![UNREACHED; graph.len()];
    // The nodes in the order they were reached, which is also the search's queue (`head` is
    // its front): one array a node, not a queue beside it. At most a node each: allocated once.
    let mut order: Vec<u32> = Vec::with_capacity(graph.len());
    let tiers = [
        graph.roots.iter().filter(|r| matches!(r, Root::Modules { .. })).collect::<Vec<_>>(),
        graph.roots.iter().filter(|r| matches!(r, Root::Frame { .. })).collect(),
        graph.roots.iter().filter(|r| matches!(r, Root::Interpreter { .. })).collect(),
    ];
    let bfs = |parent: &mut Vec<u32>, order: &mut Vec<u32>, mut head: usize, conservative: bool| {
        let mark = if conservative { CONSERVATIVE } else { 0 };
        while let Some(&u) = order.get(head) {
            head += 1;
            for e in graph.edges_of(u) {
                if parent[e.target as usize] == UNREACHED && (conservative || e.exact) {
                    parent[e.target as usize] = u | mark;
                    order.push(e.target);
                }
            }
        }
    };
    for tier in tiers {
        let start = order.len();
        for root in tier {
            let r = root.node();
            if parent[r as usize] == UNREACHED {
                parent[r as usize] = r;
                order.push(r);
            }
        }
        bfs(&mut parent, &mut order, start, false);
    }
    // Everything reached so far, again in order, now following conservative references too.
    bfs(&mut parent, &mut order, 0, true);
    use crate::heap::memory_use::vec_bytes;
    let peak_bytes = vec_bytes(&parent) + vec_bytes(&order);
    Paths { parent, peak_bytes }
}

/// What decoding a referrer again lends [`referents`]: names by their own ids, no budget (the
/// item counts are still capped per container). Field ids are the graph's (types' members
/// were given theirs when the graph was read), new names numbered after them.
struct StepDecoder<'a> {
    names: Vec<u64>,
    field_index: &'a FxHashMap<&'a str, u32>,
    known_fields: &'a [String],
    new_fields: Vec<String>,
}

impl StepDecoder<'_> {
    fn field(&self, id: u32) -> String {
        let known = self.known_fields.len();
        match (id as usize).checked_sub(known) {
            None => self.known_fields[id as usize].clone(),
            Some(k) => self.new_fields.get(k).cloned().unwrap_or_default(),
        }
    }
}

impl Decoder for StepDecoder<'_> {
    fn claim(&mut self, _bytes: u64) -> bool {
        true
    }

    fn name_id(&mut self, addr: u64) -> u32 {
        self.names.push(addr);
        self.names.len() as u32 - 1
    }

    fn field_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.field_index.get(name) {
            return id;
        }
        self.new_fields.push(name.to_string());
        (self.known_fields.len() + self.new_fields.len() - 1) as u32
    }
}

/// One step of a path, resolved for printing. The names it holds are the target's, exact;
/// [`Step::text`] and [`render`] write them escaped for a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Index(u32),
    Key(String),
    Attr(String),
    Local(String),
    Stack,
    Namespace,
    Member,
    DictKey,
    Named(String),
    Field(u32),
}

impl Step {
    /// The step on its own, as Python spells it, with the target's names escaped
    /// (`terminal::name`).
    pub fn text(&self) -> String {
        match self {
            Step::Index(i) => format!("[{i}]"),
            Step::Key(k) => format!("[{}]", key_repr(k)),
            Step::Attr(a) => format!(".{}", terminal::name(a)),
            Step::Local(name) => format!(".f_locals[{}]", key_repr(name)),
            Step::Stack => ".<value stack>".into(),
            Step::Namespace => ".__dict__".into(),
            Step::Member => ".<member>".into(),
            Step::DictKey => ".<key>".into(),
            Step::Named(name) => format!(".{}", terminal::name(name)),
            Step::Field(o) => format!(".<field +{o:#x}>"),
        }
    }
}

/// A path: where it starts, and each step with the node it leaves from.
#[derive(Debug, Clone)]
pub struct Path {
    pub root: String,
    pub steps: Vec<(u32, Step)>,
}

impl Paths {
    /// Bytes the parents hold.
    pub fn heap_bytes(&self) -> u64 {
        crate::heap::memory_use::vec_bytes(&self.parent)
    }

    pub fn reached(&self, i: u32) -> bool {
        self.parent.get(i as usize).is_some_and(|&p| p != UNREACHED)
    }

    /// The node `i` was reached from (itself for a root), if it was.
    pub fn parent_of(&self, i: u32) -> Option<u32> {
        self.parent.get(i as usize).filter(|&&p| p != UNREACHED).map(|&p| p & TARGET)
    }

    /// Per node, the interpreter whose root its path starts from (-1: the runtime's roots),
    /// `None` if no root reaches it. One pass: each chain is walked once and remembered.
    pub fn interpreters(&self, graph: &HeapGraph) -> Vec<Option<i64>> {
        const UNKNOWN: i64 = i64::MIN;
        const NONE: i64 = i64::MIN + 1;
        let mut of = vec![UNKNOWN; graph.len()];
        for root in &graph.roots {
            let r = root.node() as usize;
            if self.parent_of(root.node()) == Some(root.node()) && of[r] == UNKNOWN {
                of[r] = root.interpreter(graph);
            }
        }
        let mut chain = Vec::new();
        for i in 0..graph.len() as u32 {
            let mut at = i;
            chain.clear();
            let found = loop {
                let known = of[at as usize];
                if known != UNKNOWN {
                    break known;
                }
                let Some(from) = self.parent_of(at) else { break NONE };
                if from == at || chain.len() > graph.len() {
                    break NONE;
                }
                chain.push(at);
                at = from;
            };
            for &c in &chain {
                of[c as usize] = found;
            }
            if of[i as usize] == UNKNOWN {
                of[i as usize] = found;
            }
        }
        of.into_iter().map(|v| (v != NONE && v != UNKNOWN).then_some(v)).collect()
    }

    /// The path from a root to `i`, or `None` if no root reaches it.
    pub fn path(&self, graph: &HeapGraph, mem: &mut dyn RemoteMemory, layout: &Layout, i: u32) -> Option<Path> {
        self.paths(graph, mem, layout, &[i]).pop().flatten()
    }

    /// The paths to `nodes` (`None` for those no root reaches). Every referrer on them is
    /// decoded once more, once for all the paths that leave it (a list that holds the
    /// thousand instances traced is read once), to find how the search's reference to each
    /// next node is spelled: what is held beside the parents is a step per node on the paths.
    pub fn paths(
        &self,
        graph: &HeapGraph,
        mem: &mut dyn RemoteMemory,
        layout: &Layout,
        nodes: &[u32],
    ) -> Vec<Option<Path>> {
        // Per referrer, the nodes it leads to on the paths.
        let mut wanted: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut seen: FxHashSet<u32> = FxHashSet::default();
        for &i in nodes {
            let mut at = i;
            let mut steps = 0;
            while let Some(from) = self.parent_of(at).filter(|&from| from != at && steps <= graph.len()) {
                // The rest of the chain is there already.
                if !seen.insert(at) {
                    break;
                }
                wanted.entry(from).or_default().push(at);
                at = from;
                steps += 1;
            }
        }
        let mut found: FxHashMap<u32, Step> = FxHashMap::default();
        let field_index: FxHashMap<&str, u32> =
            graph.field_names.iter().enumerate().map(|(i, name)| (name.as_str(), i as u32)).collect();
        for (from, next) in wanted {
            let mut decoder = StepDecoder {
                names: Vec::new(),
                field_index: &field_index,
                known_fields: &graph.field_names,
                new_fields: Vec::new(),
            };
            found.extend(self.find_steps(graph, mem, layout, &mut decoder, from, &next));
        }
        nodes.iter().map(|&i| self.assemble(graph, i, &found)).collect()
    }

    /// How the search's references from `from` to each of `next` are spelled.
    fn find_steps(
        &self,
        graph: &HeapGraph,
        mem: &mut dyn RemoteMemory,
        layout: &Layout,
        decoder: &mut StepDecoder,
        from: u32,
        next: &[u32],
    ) -> Vec<(u32, Step)> {
        let mut found = Vec::with_capacity(next.len());
        // By address: whether the first reference of any kind counts (the last pass), or only
        // the first exact one.
        let mut by_addr: FxHashMap<u64, (u32, bool)> =
            next.iter().map(|&v| (graph.addrs[v as usize], (v, self.parent[v as usize] & CONSERVATIVE != 0))).collect();
        let mut refs: Vec<Referent> = Vec::new();
        let info = graph.type_info(from);
        if info.kind == Kind::StackFrame {
            if let Some(frame) = graph.frames.get(graph.addrs[from as usize] as usize) {
                decoder.frame_referents(frame, &mut refs);
            }
        } else if matches!(info.kind, Kind::List | Kind::Tuple) {
            // Items are all exact: the first one at each address, read a slice at a time and
            // matched as words (a list of millions is no referent each).
            let obj = graph.addrs[from as usize];
            let count = mem.read_u64(obj + layout.containers.ob_size as u64).unwrap_or(0);
            let items = match info.kind {
                Kind::List => mem.read_u64(obj + layout.containers.list_ob_item as u64).unwrap_or(0),
                _ => obj + layout.graph.tuple_ob_item as u64,
            };
            let mut k = 0;
            while k < count.min(MAX_ITEMS) && !by_addr.is_empty() {
                let len = (count - k).min(SEQUENCE_SLICE);
                let Ok(words) = mem.read_words(items + 8 * k, len as usize) else { break };
                for (n, word) in words.into_iter().enumerate() {
                    if let Some((v, _)) = by_addr.remove(&word) {
                        found.push((v, Step::Index((k + n as u64) as u32)));
                    }
                }
                k += len;
            }
        } else {
            // An object changed since the graph was read yields what it holds now.
            let _ = referents(mem, layout, decoder, graph.addrs[from as usize], info, &mut refs);
        }
        for r in &refs {
            if by_addr.is_empty() {
                break;
            }
            if r.strength != Strength::Strong {
                continue;
            }
            if let Some(&(v, any)) = by_addr.get(&r.addr)
                && (any || r.label.is_exact())
            {
                by_addr.remove(&r.addr);
                found.push((v, step_of(graph, mem, layout, decoder, r.label)));
            }
        }
        // Not there any more: the target changed since the graph was read.
        for (_, (v, _)) in by_addr {
            found.push((v, Step::Named("<changed since read>".into())));
        }
        found
    }

    /// The path to `i` from the steps found.
    fn assemble(&self, graph: &HeapGraph, i: u32, found: &FxHashMap<u32, Step>) -> Option<Path> {
        self.parent_of(i)?;
        let mut steps = Vec::new();
        let mut at = i;
        while let Some(from) = self.parent_of(at).filter(|&from| from != at && steps.len() <= 2 * graph.len()) {
            let step = found.get(&at).cloned().unwrap_or_else(|| Step::Named("<changed since read>".into()));
            let local = matches!(step, Step::Local(_) | Step::Stack);
            steps.push((from, step));
            // A generator's locals live in its frame: `gen.gi_frame.f_locals['x']`.
            let holder = graph.type_info(from);
            if holder.kind == Kind::Generator && local {
                let frame_attr = match holder.name.as_str() {
                    "coroutine" => "cr_frame",
                    "async_generator" => "ag_frame",
                    _ => "gi_frame",
                };
                steps.push((from, Step::Named(frame_attr.into())));
            }
            at = from;
        }
        steps.reverse();
        Some(Path { root: root_text(graph, at), steps })
    }
}

/// A label of a decoding, as a step: names read from the target.
fn step_of(
    graph: &HeapGraph,
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    decoder: &StepDecoder,
    label: Label,
) -> Step {
    let name = |mem: &mut dyn RemoteMemory, id: u32| match decoder.names.get(id as usize) {
        Some(&key) => name_text(graph, mem, layout, key),
        None => "?".into(),
    };
    match label {
        Label::Index(n) => Step::Index(n),
        Label::Key(k) => Step::Key(name(mem, k)),
        Label::Attr(k) => Step::Attr(name(mem, k)),
        Label::Local(k) => Step::Local(name(mem, k)),
        Label::Stack => Step::Stack,
        Label::Namespace => Step::Namespace,
        Label::Member => Step::Member,
        Label::DictKey => Step::DictKey,
        Label::Named(n) => Step::Named(decoder.field(n)),
        Label::Field(o) => Step::Field(o),
    }
}

/// A name a label refers to: the str's text, or `<type>` for a key that is not a str.
fn name_text(graph: &HeapGraph, mem: &mut dyn RemoteMemory, layout: &Layout, key: u64) -> String {
    match read_str(mem, layout, key) {
        Ok(Some(s)) => s,
        _ => match graph.index_of(key) {
            Some(k) => format!("<{}>", graph.type_info(k).name),
            None => format!("<object {key:#x}>"),
        },
    }
}

/// How a root is written at the start of a path, the target's names escaped.
pub fn root_text(graph: &HeapGraph, node: u32) -> String {
    describe_root(&graph.roots, &graph.frames, &graph.field_names, graph.interpreters > 1, node)
}

/// How the root at `node` (among `roots`) is written, with the frames and field names the
/// roots refer to; `several`: the target has more than one interpreter, so each is named.
pub(super) fn describe_root(
    roots: &[Root],
    frames: &[StackFrame],
    field_names: &[String],
    several: bool,
    node: u32,
) -> String {
    match roots.iter().find(|r| r.node() == node) {
        Some(Root::Frame { frame, .. }) => match frames.get(*frame as usize) {
            Some(f) => format!(
                "{}<frame {}() of thread {} ({}:{})>",
                if several { format!("<interpreter {}> ", f.interpreter) } else { String::new() },
                terminal::name(&f.function),
                f.thread,
                terminal::name(&f.file),
                f.first_line
            ),
            None => "<frame>".into(),
        },
        Some(Root::Interpreter { interpreter, field, .. }) => {
            let name = field_names.get(*field as usize).map_or_else(|| "?".into(), |n| terminal::name(n));
            match interpreter {
                -1 => format!("<runtime {name}>"),
                id => format!("<interpreter {id} {name}>"),
            }
        }
        Some(Root::Modules { interpreter, .. }) if several => format!("<interpreter {interpreter}> sys.modules"),
        _ => "sys.modules".into(),
    }
}

/// A dict key as Python would print it, 'name', escaped for a terminal as Python's repr()
/// escapes it (`\'` for a quote). Object keys are already `<type>`: escaped, not quoted.
pub fn key_repr(key: &str) -> String {
    let shown = terminal::name(key);
    if key.starts_with('<') { shown } else { format!("'{}'", shown.replace('\'', "\\'")) }
}

/// A path as Python code would write it, every name from the target escaped for a terminal
/// (`terminal::name`: the path is shown as it is, and printed by `jq -r`). `root` is written
/// as it is: [`root_text`] made it. A namespace followed by a key reads as an
/// attribute (`.handlers`), except a module's, which reads as `.__dict__['NAME']` so that the
/// module is named. Steps marked in `wildcard` print as `*`.
pub fn render(root: &str, steps: &[Step], wildcard: &[bool]) -> String {
    let mut out = root.to_string();
    let from_modules = root.ends_with("sys.modules");
    let mut in_namespace = false;
    for (n, step) in steps.iter().enumerate() {
        let value = |text: String| if wildcard.get(n).copied().unwrap_or(false) { "*".to_string() } else { text };
        let module_namespace = from_modules && n == 2;
        match step {
            Step::Index(i) => out += &format!("[{}]", value(i.to_string())),
            Step::Key(k) if in_namespace && !module_namespace => out += &format!(".{}", value(terminal::name(k))),
            Step::Key(k) => out += &format!("[{}]", value(key_repr(k))),
            // A namespace reads as attributes of its owner, except a module's (named above).
            Step::Namespace if !(from_modules && n == 1) => {}
            other => out += &other.text(),
        }
        in_namespace = matches!(step, Step::Namespace);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::heap::referents::MAX_SCAN;

    /// A graph from (type name, kind) per type, (type, size, refcount) per node and edges.
    pub(crate) fn graph_with(
        types: &[(&str, Kind)],
        nodes: &[(u32, u64, u32)],
        edges: &[(u32, u32, Label)],
        roots: &[Root],
    ) -> HeapGraph {
        let mut sorted = edges.to_vec();
        sorted.sort_by_key(|e| e.0);
        let mut offsets = Vec::new();
        let mut in_degree: Compact<u8> = nodes.iter().map(|_| 0).collect();
        for v in 0..nodes.len() as u32 {
            offsets.push(sorted.iter().filter(|e| e.0 < v).count() as u32);
        }
        offsets.push(sorted.len() as u32);
        for e in &sorted {
            in_degree.increment(e.1);
        }
        HeapGraph {
            addrs: (0..nodes.len() as u64).map(|i| 0x1000 + 16 * i).collect(),
            type_of: nodes.iter().map(|n| u64::from(n.0)).collect(),
            refcounts: nodes.iter().map(|n| u64::from(n.2)).collect(),
            sizes: nodes.iter().map(|n| n.1).collect(),
            types: types.iter().map(|(name, kind)| Rc::new(TypeInfo::synthetic(name.to_string(), *kind))).collect(),
            tracked: 0..nodes.len(),
            untracked: NodeTable::default(),
            untracked_sorted: Vec::new(),
            offsets,
            edges: sorted.iter().map(|e| pack_edge(e.1, e.2)).collect(),
            namespaces: sorted
                .iter()
                .filter(|e| {
                    e.2 == Label::Namespace
                        && matches!(types[nodes[e.0 as usize].0 as usize].1, Kind::Module | Kind::Type)
                })
                .map(|e| e.1)
                .collect(),
            weak: Vec::new(),
            interpreters: 1,
            in_degree,
            frame_refs: FxHashMap::default(),
            chunk_ranges: FxHashMap::from_iter([(0, (0, nodes.len() as u32))]),
            field_names: vec!["cell_contents".into()],
            frames: Vec::new(),
            roots: roots.to_vec(),
            truncated: false,
            skipped_threads: 0,
            build_peak_bytes: 0,
        }
    }

    #[test]
    fn paths_prefer_module_globals_and_exact_references() {
        // 0 sys.modules -> 1 module -> 2 namespace -> 3 list -> 4 item; 5 frame -> 3 (local);
        // 6 -> 4 by a conservative word only.
        let g = graph_with(
            &[("dict", Kind::Dict), ("module", Kind::Module), ("list", Kind::List), ("<frame>", Kind::StackFrame)],
            &[(0, 0, 1), (1, 0, 1), (0, 0, 1), (2, 0, 2), (2, 0, 2), (3, 0, 0), (2, 0, 1)],
            &[
                (0, 1, Label::Key(0)),
                (1, 2, Label::Namespace),
                (2, 3, Label::Key(1)),
                (3, 4, Label::Index(7)),
                (5, 3, Label::Local(2)),
                (0, 6, Label::Key(3)),
                (6, 4, Label::Field(24)),
            ],
            &[Root::Modules { node: 0, interpreter: 0 }, Root::Frame { node: 5, frame: 0 }],
        );
        let paths = shortest_paths(&g);
        let mut at = 4;
        let mut chain = vec![at];
        while paths.parent_of(at) != Some(at) {
            at = paths.parent_of(at).unwrap_or(at);
            chain.push(at);
        }
        assert_eq!(chain, vec![4, 3, 2, 1, 0], "module path, exact edges");
        assert_eq!(g.external_refs(3), 0, "the frame's reference is counted as a frame's");
    }

    #[test]
    fn edges_keep_their_target_and_flags_in_four_bytes() {
        let target = MAX_NODES as u32;
        for (label, exact, named) in [
            (Label::Index(MAX_ITEMS as u32 - 1), true, false),
            (Label::Named(3), true, true),
            (Label::Field(MAX_SCAN as u32 - 8), false, false),
            (Label::DictKey, true, false),
        ] {
            let g = graph_with(&[("x", Kind::Other)], &[(0, 0, 1), (0, 0, 1)], &[(0, 1, label)], &[]);
            assert_eq!(g.edges_of(0).collect::<Vec<_>>(), vec![Edge { target: 1, exact, named }]);
            assert_eq!(pack_edge(target, label) & TARGET, target);
        }
    }

    #[test]
    fn paths_render_as_python() {
        let steps =
            [Step::Key("__main__".into()), Step::Namespace, Step::Key("LOG".into()), Step::Attr("handlers".into())];
        assert_eq!(render("sys.modules", &steps, &[]), "sys.modules['__main__'].__dict__['LOG'].handlers");
        let steps = [Step::Local("keep".into()), Step::Index(3), Step::Named("cell_contents".into())];
        assert_eq!(render("<frame f()>", &steps, &[false, true]), "<frame f()>.f_locals['keep'][*].cell_contents");
        let steps =
            [Step::Key("m".into()), Step::Namespace, Step::Key("C".into()), Step::Namespace, Step::Key("x".into())];
        assert_eq!(render("sys.modules", &steps, &[]), "sys.modules['m'].__dict__['C'].x");
    }

    #[test]
    fn paths_show_the_targets_names_escaped() {
        let steps = [
            Step::Key("m\x1b]0;t\x07".into()),
            Step::Namespace,
            Step::Key("it's \\ \u{202e}".into()),
            Step::Namespace,
            Step::Key("a\nb".into()),
            Step::Attr("c\r\x1b[2J".into()),
            Step::Local("<x\u{9b}>".into()),
            Step::Named("n\u{200b}".into()),
        ];
        let text = render("sys.modules", &steps, &[]);
        assert_eq!(
            text,
            r"sys.modules['m\x1b]0;t\x07'].__dict__['it\'s \\ \u202e'].a\nb.c\r\x1b[2J.f_locals[<x\x9b>].n\u200b"
        );
        assert!(!text.chars().any(crate::text::terminal::is_unsafe));
        assert_eq!(Step::Key("q'\x07".into()).text(), r"['q\'\x07']");
    }
}
