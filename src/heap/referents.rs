//! What one object refers to, and how strongly: the decoding of each kind of object into its
//! references (its referents), for the heap graph.
//!
//! References are read exactly for the containers that hold most of a heap (list, tuple,
//! dict in every layout, set, instance attributes in every layout, class and module
//! namespaces, frames' locals) and for the containers that keep their items outside the
//! object (`collections.deque`'s blocks, numpy object arrays' data buffers), and
//! conservatively for any other object: an aligned word inside it that points at a known
//! object counts as a reference, named where the field is known (`__closure__`,
//! `cell_contents`, a type's tp_members). That can over-count (an integer that looks like a
//! pointer) but never misses a field, which is what attribution needs.
//!
//! Each reference is [`Strength::Strong`] or [`Strength::Weak`]: a weak reference object's
//! referent (`weakref.ref`, proxies, and subclasses such as `WeakValueDictionary`'s
//! `KeyedRef` or `WeakMethod`) keeps nothing alive, so it is no edge for paths, dominators or
//! retained sizes; `why` lists it apart. `WeakSet` (a set of weak references) and
//! `WeakKeyDictionary` (weak references as keys, values held strongly, as they are) follow
//! from that one rule. The borrowed pointers between weak references (`wr_prev`/`wr_next`)
//! and to them (an object's weak reference list) are no reference at all.

use super::graph::{Label, MAX_ITEMS};
use super::pools::Allocations;
use crate::cpython::frames::{SlotKind, StackFrame, generator_frame_slots, object_frame_slots};
use crate::cpython::layout::{FrameLayout, InstanceAttributes, Layout, ManagedValues, field_name};
use crate::cpython::objects::{base_chain, dict_entries, keys_entries, split_values, type_name};
use crate::cpython::sizes::{SizeRule, size_rule};
use crate::memory::{ReadError, RemoteMemory};
use std::ops::Range;

const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
const TPFLAGS_LIST: u64 = 1 << 25;
const TPFLAGS_TUPLE: u64 = 1 << 26;
const TPFLAGS_DICT: u64 = 1 << 29;
const TPFLAGS_TYPE: u64 = 1 << 31;
/// What one dict entry counts against the budget (hash, key, value).
const DICT_ENTRY_BYTES: u64 = 24;
/// Bytes of one object scanned conservatively: the exact kinds cover the big containers.
pub(super) const MAX_SCAN: u64 = 4096;
/// Members read from one type: more is a torn array.
const MAX_MEMBERS: usize = 1024;
/// Types whose objects refer to no other object: read no further.
const LEAF_TYPES: &[&str] = &["str", "bytes", "int", "float", "bool", "complex", "NoneType"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    List,
    Tuple,
    Dict,
    Set,
    Module,
    Type,
    /// 3.6-3.10 frame objects: their locals are read by name.
    FrameObject,
    /// 3.11+ generators, coroutines and async generators: the frame inside them is read like
    /// a thread's, locals by name.
    Generator,
    Leaf,
    Other,
    /// A 3.11+ frame of a thread's stack: not an object.
    StackFrame,
}

/// What the graph knows of a type.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub name: String,
    /// Where the objects keep references the generic reading would not find or would take
    /// for strong ones.
    pub storage: Storage,
    pub kind: Kind,
    pub flags: u64,
    pub basicsize: u64,
    pub itemsize: u64,
    pub(super) dictoffset: u64,
    /// Heap types: the keys their instances' values arrays use.
    pub cached_keys: u64,
    /// Pointer fields with a name, as (offset, index into [`HeapGraph::field_names`]).
    pub(super) named: Vec<(u64, u32)>,
    /// Which built-in __sizeof__ its instances use.
    pub(super) size_rule: SizeRule,
    /// Offset of the head of the object's weak reference list (0: none, or before the
    /// object): a borrowed pointer, not a reference.
    weaklist: u64,
    /// Offsets of words that are no reference whatever they hold (stale memory).
    not_references: Vec<u64>,
}

impl TypeInfo {
    /// A type leakspy makes up (a frame node) or could not read: nothing to decode.
    pub(crate) fn synthetic(name: String, kind: Kind) -> TypeInfo {
        TypeInfo {
            name,
            storage: Storage::Inline,
            weaklist: 0,
            not_references: Vec::new(),
            kind,
            flags: 0,
            basicsize: 0,
            itemsize: 0,
            dictoffset: 0,
            cached_keys: 0,
            named: Vec::new(),
            size_rule: SizeRule::Default,
        }
    }
}

pub(super) fn kind_of(layout: &Layout, name: &str, flags: u64) -> Kind {
    if flags & TPFLAGS_LIST != 0 {
        Kind::List
    } else if flags & TPFLAGS_TUPLE != 0 {
        Kind::Tuple
    } else if flags & TPFLAGS_DICT != 0 {
        Kind::Dict
    } else if flags & TPFLAGS_TYPE != 0 {
        Kind::Type
    } else if LEAF_TYPES.contains(&name) {
        Kind::Leaf
    } else {
        match name {
            "set" | "frozenset" => Kind::Set,
            "module" => Kind::Module,
            "frame" => Kind::FrameObject,
            "generator" | "coroutine" | "async_generator" if layout.sizes.gen_gi_iframe.is_some() => Kind::Generator,
            _ => Kind::Other,
        }
    }
}

/// Where a type's objects keep references that need more than the generic reading: found
/// from the type's base chain, so subclasses (`weakref.KeyedRef`, a deque subclass, a numpy
/// matrix) are read like their base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Everything is in the object (or its `__dict__`): the generic reading finds it.
    Inline,
    /// A weak reference (or proxy): the referent is a weak edge, the callback a strong one.
    WeakReference,
    /// `collections.deque`: items in a linked list of blocks; the base's body (up to
    /// `base_size`) holds no other object.
    Deque { base_size: u64 },
    /// `numpy.ndarray`: the items of an object array are in its data buffer.
    NdArray,
    /// A type known to keep references in storage leakspy does not decode
    /// ([`OPAQUE_CONTAINERS`]): searched by [`opaque_holders`] when objects are held from
    /// outside the heap.
    Opaque,
}

/// Type names (as [`type_name`] gives them, across versions) of the base types whose
/// objects keep references out of line or weakly.
fn storage_of(name: &str) -> Option<Storage> {
    match name {
        "weakref"
        | "weakref.ReferenceType"
        | "weakproxy"
        | "weakcallableproxy"
        | "weakref.ProxyType"
        | "weakref.CallableProxyType" => Some(Storage::WeakReference),
        "collections.deque" => Some(Storage::Deque { base_size: 0 }),
        "numpy.ndarray" => Some(Storage::NdArray),
        _ if OPAQUE_CONTAINERS.contains(&name) => Some(Storage::Opaque),
        _ => None,
    }
}

/// Types known to keep object references in storage outside the object that leakspy does
/// not read: what only they hold looks held from outside the heap. Named in `why`'s report
/// when such an object is present, instead of blaming native code.
pub const OPAQUE_CONTAINERS: &[&str] = &[
    // Children in `extra->children`, an array behind a struct behind the object.
    "xml.etree.ElementTree.Element",
    // The memo table (PyMemoTable), an array of (object, index) entries.
    "_pickle.Pickler",
    "_pickle.Unpickler",
    // Statement caches and row factories' state behind the connection.
    "sqlite3.Connection",
];

/// Bytes of out-of-line memory read per object searched by [`opaque_holders`], and in all.
const OPAQUE_BYTES_PER_OBJECT: u64 = 256 << 10;
const OPAQUE_BYTES_TOTAL: u64 = 64 << 20;
/// Pointers followed from an object into memory that is not an object: two levels reach an
/// array behind a struct (an Element's `extra->children`).
const OPAQUE_DEPTH: u32 = 2;
/// Bytes read behind one such pointer at most (an array of 8,192 pointers), and never past
/// the allocation it points into.
const OPAQUE_BUFFER_BYTES: u64 = 64 << 10;

/// Which of `candidates` (objects of types with out-of-line storage leakspy does not decode)
/// keep the addresses in `wanted` in their out-of-line memory: each candidate's words that
/// point at readable memory other than a known object are followed (two levels deep, a
/// bounded number of bytes each) and that memory searched for the wanted addresses. Evidence,
/// not a guess: an address found there is a pointer to the object from the container's own
/// storage. Returns (candidate, wanted objects found), the ones found only.
pub fn opaque_holders(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    maps: &crate::memory::maps::MemoryMap,
    is_object: &dyn Fn(u64) -> bool,
    candidates: &[(u64, u64)],
    wanted: &rustc_hash::FxHashSet<u64>,
) -> Vec<(u64, u64)> {
    let mut budget = OPAQUE_BYTES_TOTAL;
    let mut out = Vec::new();
    let mut allocations = Allocations::new(layout);
    for &(obj, size) in candidates {
        if budget == 0 {
            break;
        }
        let mut found = rustc_hash::FxHashSet::default();
        let mut left = OPAQUE_BYTES_PER_OBJECT.min(budget);
        let header = (layout.object.ob_type + 8) as u64;
        let mut level = vec![(obj + header, size.clamp(header, MAX_SCAN) - header)];
        let mut seen = rustc_hash::FxHashSet::default();
        for depth in 0..=OPAQUE_DEPTH {
            let mut next = Vec::new();
            for (start, len) in level {
                // Up to the end of the mapping the memory is in: the size of a buffer behind
                // a pointer is not known.
                let Some(mapping) = maps.find(start).filter(|m| m.readable) else { continue };
                let len = len.min(left).min(mapping.end - start) & !7;
                if len == 0 {
                    continue;
                }
                let Ok(words) = mem.read_words(start, (len / 8) as usize) else { continue };
                left -= len;
                for word in words {
                    if wanted.contains(&word) {
                        found.insert(word);
                    } else if depth < OPAQUE_DEPTH
                        && word & 7 == 0
                        && word != obj
                        && !is_object(word)
                        && maps.is_readable(word, 8)
                        && seen.insert(word)
                        && let Some(extent) = allocations.extent(mem, word)
                    {
                        next.push((word, extent.min(OPAQUE_BUFFER_BYTES)));
                    }
                }
            }
            level = next;
        }
        budget -= OPAQUE_BYTES_PER_OBJECT.min(budget) - left;
        if !found.is_empty() {
            out.push((obj, found.len() as u64));
        }
    }
    out
}

/// What the builder of the graph lends the decoding: the budget of item arrays
/// (so that crafted lengths cost nothing) and the ids of names.
pub(super) trait Decoder {
    /// A container's item array of `count` words, empty if the budget does not allow it.
    fn items(&mut self, mem: &mut dyn RemoteMemory, addr: u64, count: u64) -> Result<Vec<u64>, ReadError> {
        if count > MAX_ITEMS || !self.claim(count * 8) {
            return Ok(Vec::new());
        }
        mem.read_words(addr, count as usize)
    }
    /// Takes `bytes` out of the budget; false when they do not fit.
    fn claim(&mut self, bytes: u64) -> bool;
    /// The id of a name (a str object's address) for labels.
    fn name_id(&mut self, addr: u64) -> u32;
    /// The id of a field's name.
    fn field_id(&mut self, name: &str) -> u32;

    /// A 3.11+ frame's references, into `out`: its locals, value stack and `f_locals`.
    fn frame_referents(&mut self, frame: &StackFrame, out: &mut Vec<Referent>) {
        for slot in &frame.slots {
            let label = match slot.kind {
                SlotKind::Local => Label::Local(self.name_id(slot.name)),
                SlotKind::Stack => Label::Stack,
                SlotKind::FLocals => Label::Named(self.field_id("f_locals")),
            };
            out.push(Referent::strong(slot.value, label, slot.owned));
        }
    }
}

/// Whether a reference keeps its referent alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    Strong,
    Weak,
}

/// One reference of an object: where it points, how a path spells it, whether it is one of
/// the referent's counted references (`owned`: a dict's entries listed again under its
/// instance are not), and its strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Referent {
    pub addr: u64,
    pub label: Label,
    pub owned: bool,
    pub strength: Strength,
}

impl Referent {
    pub fn strong(addr: u64, label: Label, owned: bool) -> Referent {
        Referent { addr, label, owned, strength: Strength::Strong }
    }
}

pub(super) fn type_info(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    type_addr: u64,
    field_id: &mut dyn FnMut(&str) -> u32,
) -> Result<TypeInfo, ReadError> {
    let name = type_name(mem, layout, type_addr)?;
    let g = &layout.graph;
    let flags = mem.read_u64(type_addr + layout.type_.tp_flags as u64)?;
    let kind = kind_of(layout, &name, flags);
    let basicsize = mem.read_u64(type_addr + g.tp_basicsize as u64)?;
    let named_as = if kind == Kind::Type { "type" } else { name.as_str() };
    let mut named: Vec<(u64, u32)> = g
        .named_fields
        .iter()
        .filter(|f| f.type_name == named_as)
        .map(|f| (f.offset as u64, field_id(field_name(f.name))))
        .collect();
    // Members, the type's own and its bases' (a subclass's tp_members lists only its own).
    let bases = base_chain(mem, layout, type_addr)?;
    let mut storage = Storage::Inline;
    for &t in &bases {
        for (offset, member) in members(mem, layout, t).unwrap_or_default() {
            if offset < basicsize && !named.iter().any(|(o, _)| *o == offset) {
                named.push((offset, field_id(&member)));
            }
        }
        if kind == Kind::Other
            && storage == Storage::Inline
            && let Some(found) = type_name(mem, layout, t).ok().as_deref().and_then(storage_of)
        {
            storage = match found {
                Storage::Deque { .. } => Storage::Deque { base_size: mem.read_u64(t + g.tp_basicsize as u64)? },
                other => other,
            };
        }
    }
    match storage {
        Storage::WeakReference => named.push((g.weakref.wr_callback as u64, field_id("__callback__"))),
        Storage::NdArray => {
            named.push((g.numpy.base as u64, field_id("base")));
            named.push((g.numpy.descr as u64, field_id("dtype")));
        }
        _ => {}
    }
    let weaklist = mem.read_u64(type_addr + g.tp_weaklistoffset as u64)?;
    let not_references = g.not_references.iter().filter(|(t, _)| *t == name).map(|&(_, o)| o as u64).collect();
    Ok(TypeInfo {
        named,
        kind,
        name,
        storage,
        flags,
        basicsize,
        itemsize: mem.read_u64(type_addr + g.tp_itemsize as u64)?,
        dictoffset: mem.read_u64(type_addr + g.tp_dictoffset as u64)?,
        cached_keys: if flags & TPFLAGS_HEAPTYPE != 0 { mem.read_u64(type_addr + g.ht_cached_keys as u64)? } else { 0 },
        size_rule: size_rule(mem, layout, &bases)?,
        // Negative offsets do not exist for weak lists; 3.12+ managed ones sit before the
        // object, where the scan does not look.
        weaklist: if (16..MAX_SCAN).contains(&weaklist) { weaklist } else { 0 },
        not_references,
    })
}

/// The object-pointer members of a type: (offset, name).
fn members(mem: &mut dyn RemoteMemory, layout: &Layout, type_addr: u64) -> Result<Vec<(u64, String)>, ReadError> {
    let m = &layout.graph.members;
    let mut at = mem.read_u64(type_addr + m.tp_members as u64)?;
    let mut out = Vec::new();
    if at == 0 {
        return Ok(out);
    }
    for _ in 0..MAX_MEMBERS {
        let name_ptr = mem.read_u64(at)?;
        if name_ptr == 0 {
            break;
        }
        let member_type = mem.read_u32(at + m.type_ as u64)?;
        let offset = mem.read_u64(at + m.offset as u64)?;
        if m.object_types.contains(&member_type)
            && let Some(name) = mem.read_c_string(name_ptr, 256)?
        {
            out.push((offset, name));
        }
        at += m.size as u64;
    }
    Ok(out)
}

/// The references of the object at `obj`, of type `t`, appended to `out`.
pub(super) fn referents(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    b: &mut dyn Decoder,
    obj: u64,
    t: &TypeInfo,
    out: &mut Vec<Referent>,
) -> Result<(), ReadError> {
    let g = &layout.graph;
    let ob_size = |mem: &mut dyn RemoteMemory| mem.read_u64(obj + layout.containers.ob_size as u64);
    match t.kind {
        Kind::List => {
            let n = ob_size(mem)?;
            let items = mem.read_u64(obj + layout.containers.list_ob_item as u64)?;
            for (k, item) in b.items(mem, items, n)?.into_iter().enumerate() {
                out.push(Referent::strong(item, Label::Index(k as u32), true));
            }
        }
        Kind::Tuple => {
            let n = ob_size(mem)?;
            for (k, item) in b.items(mem, obj + g.tuple_ob_item as u64, n)?.into_iter().enumerate() {
                out.push(Referent::strong(item, Label::Index(k as u32), true));
            }
        }
        Kind::Dict => {
            let entries = dict_entries(mem, layout, obj)?;
            if !b.claim(entries.len() as u64 * DICT_ENTRY_BYTES) {
                return Ok(());
            }
            for (key, value) in entries {
                out.push(Referent::strong(key, Label::DictKey, true));
                out.push(Referent::strong(value, Label::Key(b.name_id(key)), true));
            }
        }
        Kind::Set => {
            let mask = mem.read_u64(obj + g.set_mask as u64)?;
            let table = mem.read_u64(obj + g.set_table as u64)?;
            let words = b.items(mem, table, mask.saturating_add(1).saturating_mul(g.set_entry_size as u64 / 8))?;
            for entry in words.chunks_exact(g.set_entry_size / 8) {
                out.push(Referent::strong(entry[0], Label::Member, true));
            }
        }
        Kind::Module => out.push(Referent::strong(
            mem.read_u64(obj + layout.containers.module_dict as u64)?,
            Label::Namespace,
            true,
        )),
        Kind::Type => {
            out.push(Referent::strong(mem.read_u64(obj + layout.type_.tp_dict as u64)?, Label::Namespace, true));
            let tp_dict = layout.type_.tp_dict as u64;
            let own_size = if t.flags & TPFLAGS_HEAPTYPE == 0 { g.type_size as u64 } else { u64::MAX };
            scan(mem, layout, obj, t, own_size, std::slice::from_ref(&(tp_dict..tp_dict + 8)), out)?;
        }
        Kind::FrameObject => {
            let mut skip = Vec::new();
            if let Some(FrameLayout::Objects { f_localsplus, .. }) = layout.frames {
                let slots = object_frame_slots(mem, layout, obj)?;
                let start = f_localsplus as u64;
                skip.push(start..start + 8 * slots.len() as u64);
                for slot in slots {
                    out.push(Referent::strong(slot.value, Label::Local(b.name_id(slot.name)), true));
                }
            }
            scan(mem, layout, obj, t, u64::MAX, &skip, out)?;
        }
        Kind::Generator => {
            let (slots, range) = generator_frame_slots(mem, layout, obj)?;
            for slot in slots {
                let label = match slot.kind {
                    SlotKind::Local => Label::Local(b.name_id(slot.name)),
                    _ => Label::Stack,
                };
                out.push(Referent::strong(slot.value, label, slot.owned));
            }
            scan(mem, layout, obj, t, u64::MAX, std::slice::from_ref(&range), out)?;
        }
        Kind::Leaf | Kind::StackFrame => {}
        Kind::Other => {
            let mut skip = Vec::new();
            attributes(mem, layout, b, obj, t, &mut skip, out)?;
            match t.storage {
                Storage::Inline => {}
                Storage::WeakReference => {
                    let w = &g.weakref;
                    let referent = mem.read_u64(obj + w.wr_object as u64)?;
                    out.push(Referent {
                        addr: referent,
                        label: Label::Field(w.wr_object as u32),
                        owned: false,
                        strength: Strength::Weak,
                    });
                    // wr_object, the hash and the list links: the callback stays for the scan.
                    for field in [w.wr_object, w.wr_prev, w.wr_next] {
                        skip.push(field as u64..field as u64 + 8);
                    }
                }
                Storage::Deque { base_size } => {
                    deque_items(mem, layout, b, obj, out)?;
                    // The rest of a deque's own body holds no object (block pointers, counts).
                    skip.push(16..base_size);
                }
                Storage::NdArray => object_array_items(mem, layout, b, obj, out)?,
                Storage::Opaque => {}
            }
            scan(mem, layout, obj, t, u64::MAX, &skip, out)?;
        }
    }
    Ok(())
}

/// A deque's items, in order: `ob_size` of them from `leftblock[leftindex]` on, following
/// each block's right link after its last slot. Bounded by the item budget and the length.
fn deque_items(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    b: &mut dyn Decoder,
    obj: u64,
    out: &mut Vec<Referent>,
) -> Result<(), ReadError> {
    let d = layout.graph.deque;
    let ob_size = layout.containers.ob_size as u64;
    let len = mem.read_u64(obj + ob_size)?;
    let mut block = mem.read_u64(obj + d.leftblock as u64)?;
    let mut index = mem.read_u64(obj + d.leftindex as u64)?;
    let block_len = d.block_len as u64;
    if len > MAX_ITEMS || index >= block_len || !b.claim(len * 8) {
        return Ok(());
    }
    let mut k = 0u64;
    while k < len && block != 0 {
        let here = (block_len - index).min(len - k);
        let words = mem.read_words(block + d.block_data as u64 + 8 * index, here as usize)?;
        for word in words {
            out.push(Referent::strong(word, Label::Index(k as u32), true));
            k += 1;
        }
        if k < len {
            block = mem.read_u64(block + d.block_rightlink as u64)?;
            index = 0;
        }
    }
    Ok(())
}

/// The items of a numpy array of dtype object that owns its buffer: every element of its
/// shape, read from the data pointer (an owning array's buffer is contiguous). A view's
/// items are its base's (reached through `.base`), so a view adds none.
fn object_array_items(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    b: &mut dyn Decoder,
    obj: u64,
    out: &mut Vec<Referent>,
) -> Result<(), ReadError> {
    let np = layout.graph.numpy;
    let descr = mem.read_u64(obj + np.descr as u64)?;
    let flags = mem.read_u32(obj + np.flags as u64)?;
    if descr == 0 || flags & np.owndata_flag == 0 {
        return Ok(());
    }
    let mut kind = [0u8; 1];
    mem.read(descr + np.descr_kind as u64, &mut kind)?;
    if kind[0] != np.object_kind {
        return Ok(());
    }
    let nd = u64::from(mem.read_u32(obj + np.nd as u64)?);
    if nd as usize > np.max_dims {
        return Ok(());
    }
    let dimensions = mem.read_u64(obj + np.dimensions as u64)?;
    let dims = mem.read_words(dimensions, nd as usize)?;
    let count = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| n <= MAX_ITEMS));
    let Some(count) = count else { return Ok(()) };
    let data = mem.read_u64(obj + np.data as u64)?;
    for (k, item) in b.items(mem, data, count)?.into_iter().enumerate() {
        out.push(Referent::strong(item, Label::Index(k as u32), true));
    }
    Ok(())
}
/// Instance attributes, named: from the instance's __dict__, or from its values array where
/// the dict has not been made (3.11+). `skip` gets the offsets of the words read here, so the
/// conservative scan does not count them twice.
fn attributes(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    b: &mut dyn Decoder,
    obj: u64,
    t: &TypeInfo,
    skip: &mut Vec<Range<u64>>,
    out: &mut Vec<Referent>,
) -> Result<(), ReadError> {
    let dict = match layout.graph.instance_attributes {
        InstanceAttributes::Managed { managed_flag, dict_before, values } if t.flags & managed_flag != 0 => {
            let slot = mem.read_u64(obj - dict_before as u64)?;
            let values_array = match values {
                // 3.12 stores the values pointer minus one, so that bit 0 tells it from a dict.
                ManagedValues::Tagged if slot & 1 == 1 => Some(slot + 1),
                ManagedValues::Before(before) if slot == 0 => Some(mem.read_u64(obj - before as u64)?),
                ManagedValues::Inline { inline_flag } if slot == 0 && t.flags & inline_flag != 0 => {
                    Some(obj + t.basicsize)
                }
                _ => None,
            };
            match values_array {
                Some(array) if array != 0 => {
                    let keys = keys_entries(mem, layout, t.cached_keys)?;
                    for (key, value) in split_values(mem, layout, &keys, array)? {
                        out.push(Referent::strong(value, Label::Attr(b.name_id(key)), true));
                    }
                    return Ok(());
                }
                _ => slot,
            }
        }
        _ if t.dictoffset > 0 && t.dictoffset < MAX_SCAN => {
            skip.push(t.dictoffset..t.dictoffset + 8);
            mem.read_u64(obj + t.dictoffset)?
        }
        // Subclasses of variable-size types (int, str, tuple) up to 3.11: the dict pointer
        // follows the items, counted back from the object's end (_PyObject_GetDictPtr).
        _ if (t.dictoffset as i64) < 0 => {
            let items = (mem.read_u64(obj + layout.containers.ob_size as u64)? as i64).unsigned_abs();
            let end = t.basicsize.saturating_add(items.saturating_mul(t.itemsize)).next_multiple_of(8);
            match end.checked_add_signed(t.dictoffset as i64) {
                Some(offset) if (16..MAX_ITEMS).contains(&offset) => {
                    skip.push(offset..offset + 8);
                    mem.read_u64(obj + offset)?
                }
                _ => 0,
            }
        }
        _ => 0,
    };
    if dict != 0 {
        let entries = dict_entries(mem, layout, dict)?;
        if !b.claim(entries.len() as u64 * DICT_ENTRY_BYTES) {
            return Ok(());
        }
        for (key, value) in entries {
            out.push(Referent::strong(value, Label::Attr(b.name_id(key)), false));
        }
        // The dict itself is what the instance references (and what counts in refcounts);
        // the attributes above are its entries, listed again under the instance for paths.
        out.push(Referent::strong(dict, Label::Namespace, true));
    }
    Ok(())
}

/// Every aligned word of the object's body (past the header, within `own_size` bytes) that
/// may point at an object; fields the type names are labelled with their names. The head of
/// the object's weak reference list is skipped: a borrowed pointer to a weak reference.
fn scan(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    obj: u64,
    t: &TypeInfo,
    own_size: u64,
    skip: &[Range<u64>],
    out: &mut Vec<Referent>,
) -> Result<(), ReadError> {
    let mut size = t.basicsize;
    if t.itemsize > 0 {
        let items = match layout.sizes.long_lv_tag {
            // 3.12+ ints (and their subclasses, enum members of IntEnum) count their digits
            // in lv_tag above three bits of sign: read as a count, the tag would take the
            // scan past the object into its neighbours' memory.
            Some(tag) if t.size_rule == SizeRule::Int => mem.read_u64(obj + tag as u64)? >> 3,
            // ob_size is signed (an int's sign lives there).
            _ => (mem.read_u64(obj + layout.containers.ob_size as u64)? as i64).unsigned_abs(),
        };
        size += t.itemsize.saturating_mul(items.min(MAX_SCAN));
    }
    let size = size.min(MAX_SCAN).min(own_size) & !7;
    let header = (layout.object.ob_type + 8) as u64;
    if size <= header {
        return Ok(());
    }
    let words = mem.read_words(obj + header, ((size - header) / 8) as usize)?;
    for (k, word) in words.into_iter().enumerate() {
        let offset = header + 8 * k as u64;
        if word == 0
            || word & 7 != 0
            || offset == t.weaklist
            || t.not_references.contains(&offset)
            || skip.iter().any(|r| r.contains(&offset))
        {
            continue;
        }
        let label = match t.named.iter().find(|(o, _)| *o == offset) {
            Some(&(_, name)) => Label::Named(name),
            None => Label::Field(offset as u32),
        };
        out.push(Referent::strong(word, label, true));
    }
    Ok(())
}
