//! The heap graph: who refers to whom among the GC-tracked objects, so that leakspy can say
//! who holds the objects that grow (`why`) and which references come from outside the heap.
//!
//! References are read exactly for the containers that hold most of a heap (list, tuple,
//! dict in every layout, set, instance attributes in every layout, class and module
//! namespaces) and conservatively for any other object: an aligned word inside it that points
//! at the start of a known object counts as a reference. That can over-count (an integer
//! that looks like a pointer) but never misses a field, which is what attribution needs.

use super::census::refcount;
use super::walk::{WalkLimits, Walker};
use crate::cpython::layout::{InstanceAttributes, Layout, ManagedValues};
use crate::cpython::objects::{dict_entries, keys_entries, read_str, split_values, type_name};
use crate::cpython::process::{PythonProcess, read_error};
use crate::error::LeakspyError;
use crate::memory::{ReadError, RemoteMemory, u64_at};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
const TPFLAGS_LIST: u64 = 1 << 25;
const TPFLAGS_TUPLE: u64 = 1 << 26;
const TPFLAGS_DICT: u64 = 1 << 29;
const TPFLAGS_TYPE: u64 = 1 << 31;
/// Items read from one container: more is a torn length.
const MAX_ITEMS: u64 = 1 << 26;
/// Bytes of one object scanned conservatively: the exact kinds cover the big containers.
const MAX_SCAN: u64 = 4096;

/// How a reference is spelled on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// `[i]` in a list or tuple.
    Index(u32),
    /// A dict value, under the key object at this address: `['key']`, or `.key` in a namespace.
    Key(u64),
    /// An attribute of an instance (values arrays and __dict__ alike): `.name`.
    Attr(u64),
    /// A module's or class's namespace dict: `.__dict__`.
    Namespace,
    /// A set member.
    Member,
    /// Found by the conservative scan, at this offset in the referrer.
    Field(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Tuple,
    Dict,
    Set,
    Module,
    Type,
    Other,
}

/// What the graph knows of a type.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub name: String,
    kind: Kind,
    flags: u64,
    basicsize: u64,
    itemsize: u64,
    dictoffset: u64,
    /// Heap types: the keys their instances' values arrays use.
    cached_keys: u64,
}

pub struct HeapGraph {
    /// Object addresses, sorted.
    pub objects: Vec<u64>,
    pub type_of: Vec<u32>,
    pub refcounts: Vec<u64>,
    pub types: Vec<TypeInfo>,
    /// CSR adjacency: edges of object i are `edges[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    edges: Vec<(u32, Label)>,
    pub in_degree: Vec<u32>,
}

impl HeapGraph {
    pub fn index_of(&self, addr: u64) -> Option<u32> {
        self.objects.binary_search(&addr).ok().map(|i| i as u32)
    }

    pub fn edges_len(&self) -> u64 {
        self.edges.len() as u64
    }

    pub fn edges_of(&self, i: u32) -> &[(u32, Label)] {
        &self.edges[self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize]
    }

    /// Refcount minus the references found in the heap: held from outside it (native code,
    /// a running frame's locals, the interpreter's own state).
    pub fn external_refs(&self, i: u32) -> u64 {
        self.refcounts[i as usize].saturating_sub(self.in_degree[i as usize] as u64)
    }
}

fn kind_of(name: &str, flags: u64) -> Kind {
    if flags & TPFLAGS_LIST != 0 {
        Kind::List
    } else if flags & TPFLAGS_TUPLE != 0 {
        Kind::Tuple
    } else if flags & TPFLAGS_DICT != 0 {
        Kind::Dict
    } else if flags & TPFLAGS_TYPE != 0 {
        Kind::Type
    } else if name == "set" || name == "frozenset" {
        Kind::Set
    } else if name == "module" {
        Kind::Module
    } else {
        Kind::Other
    }
}

/// Walks the GC lists and reads every tracked object's references.
pub fn build(process: &PythonProcess, mem: &mut dyn RemoteMemory) -> Result<HeapGraph, LeakspyError> {
    let layout = &process.layout;
    mem.invalidate();
    let interpreters = process.interpreters(mem)?;
    let states = process.gc_states(mem, &interpreters)?;
    let mut found: Vec<(u64, u64, u64)> = Vec::new();
    let mut walker = Walker::new(layout, WalkLimits::default());
    for list in states.iter().flat_map(|s| &s.lists) {
        walker
            .walk(mem, list.head, &mut |_, h| found.push((h.addr, h.type_addr, h.refcnt_word)))
            .map_err(|e| read_error(process.pid, e))?;
    }
    found.sort_unstable_by_key(|f| f.0);
    found.dedup_by_key(|f| f.0);

    let mut types: Vec<TypeInfo> = Vec::new();
    let mut type_index: FxHashMap<u64, u32> = FxHashMap::default();
    let mut type_of = Vec::with_capacity(found.len());
    for (_, type_addr, _) in &found {
        let index = match type_index.get(type_addr) {
            Some(i) => *i,
            None => {
                let info = type_info(mem, layout, *type_addr).unwrap_or(TypeInfo {
                    name: format!("<unreadable type {type_addr:#x}>"),
                    kind: Kind::Other,
                    flags: 0,
                    basicsize: 0,
                    itemsize: 0,
                    dictoffset: 0,
                    cached_keys: 0,
                });
                types.push(info);
                type_index.insert(*type_addr, types.len() as u32 - 1);
                types.len() as u32 - 1
            }
        };
        type_of.push(index);
    }
    let objects: Vec<u64> = found.iter().map(|f| f.0).collect();
    // Immortal objects count as 0: none of their references is "external" in any useful sense.
    let refcounts = found.iter().map(|f| refcount(&layout.object, f.2).unwrap_or(0)).collect();
    drop(found);

    let mut graph = HeapGraph {
        in_degree: vec![0; objects.len()],
        objects,
        type_of,
        refcounts,
        types,
        offsets: Vec::new(),
        edges: Vec::new(),
    };
    let mut offsets = Vec::with_capacity(graph.objects.len() + 1);
    let mut edges = Vec::new();
    let mut refs = Vec::new();
    for i in 0..graph.objects.len() {
        offsets.push(edges.len() as u32);
        refs.clear();
        // An object freed or rewritten during the read yields no references, not an error.
        let _ = references(mem, layout, &graph, i, &mut refs);
        for (addr, label) in refs.drain(..) {
            if let Some(target) = graph.index_of(addr) {
                edges.push((target, label));
                graph.in_degree[target as usize] += 1;
            }
        }
    }
    offsets.push(edges.len() as u32);
    graph.offsets = offsets;
    graph.edges = edges;
    Ok(graph)
}

fn type_info(mem: &mut dyn RemoteMemory, layout: &Layout, type_addr: u64) -> Result<TypeInfo, ReadError> {
    let name = type_name(mem, layout, type_addr)?;
    let g = &layout.graph;
    let flags = mem.read_u64(type_addr + layout.type_.tp_flags as u64)?;
    Ok(TypeInfo {
        kind: kind_of(&name, flags),
        name,
        flags,
        basicsize: mem.read_u64(type_addr + g.tp_basicsize as u64)?,
        itemsize: mem.read_u64(type_addr + g.tp_itemsize as u64)?,
        dictoffset: mem.read_u64(type_addr + g.tp_dictoffset as u64)?,
        cached_keys: if flags & TPFLAGS_HEAPTYPE != 0 { mem.read_u64(type_addr + g.ht_cached_keys as u64)? } else { 0 },
    })
}

fn read_words(mem: &mut dyn RemoteMemory, addr: u64, count: u64) -> Result<Vec<u64>, ReadError> {
    if count > MAX_ITEMS {
        return Ok(Vec::new());
    }
    let mut raw = vec![0u8; (count * 8) as usize];
    mem.read(addr, &mut raw)?;
    Ok(raw.chunks_exact(8).map(|w| u64_at(w, 0)).collect())
}

/// The references of object `i`, as (address, label); addresses that are not tracked objects
/// are dropped by the caller.
fn references(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    graph: &HeapGraph,
    i: usize,
    out: &mut Vec<(u64, Label)>,
) -> Result<(), ReadError> {
    let obj = graph.objects[i];
    let t = &graph.types[graph.type_of[i] as usize];
    let g = &layout.graph;
    let ob_size = |mem: &mut dyn RemoteMemory| mem.read_u64(obj + layout.containers.ob_size as u64);
    match t.kind {
        Kind::List => {
            let n = ob_size(mem)?;
            let items = mem.read_u64(obj + layout.containers.list_ob_item as u64)?;
            for (k, item) in read_words(mem, items, n)?.into_iter().enumerate() {
                out.push((item, Label::Index(k as u32)));
            }
        }
        Kind::Tuple => {
            let n = ob_size(mem)?;
            for (k, item) in read_words(mem, obj + g.tuple_ob_item as u64, n)?.into_iter().enumerate() {
                out.push((item, Label::Index(k as u32)));
            }
        }
        Kind::Dict => {
            for (key, value) in dict_entries(mem, layout, obj)? {
                out.push((key, Label::Member));
                out.push((value, Label::Key(key)));
            }
        }
        Kind::Set => {
            let mask = mem.read_u64(obj + g.set_mask as u64)?;
            let table = mem.read_u64(obj + g.set_table as u64)?;
            let words = read_words(mem, table, (mask + 1) * (g.set_entry_size as u64 / 8))?;
            for entry in words.chunks_exact(g.set_entry_size / 8) {
                out.push((entry[0], Label::Member));
            }
        }
        Kind::Module => out.push((mem.read_u64(obj + layout.containers.module_dict as u64)?, Label::Namespace)),
        Kind::Type => {
            out.push((mem.read_u64(obj + layout.type_.tp_dict as u64)?, Label::Namespace));
            scan(mem, layout, obj, t, &[layout.type_.tp_dict as u64], out)?;
        }
        Kind::Other => {
            let mut skip = Vec::new();
            attributes(mem, layout, obj, t, &mut skip, out)?;
            scan(mem, layout, obj, t, &skip, out)?;
        }
    }
    Ok(())
}

/// Instance attributes, named: from the instance's __dict__, or from its values array where
/// the dict has not been made (3.11+). `skip` gets the offsets of the words read here, so the
/// conservative scan does not count them twice.
fn attributes(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    obj: u64,
    t: &TypeInfo,
    skip: &mut Vec<u64>,
    out: &mut Vec<(u64, Label)>,
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
                        out.push((value, Label::Attr(key)));
                    }
                    return Ok(());
                }
                _ => slot,
            }
        }
        _ if t.dictoffset > 0 && t.dictoffset < MAX_SCAN => {
            skip.push(t.dictoffset);
            mem.read_u64(obj + t.dictoffset)?
        }
        _ => 0,
    };
    if dict != 0 {
        for (key, value) in dict_entries(mem, layout, dict)? {
            out.push((value, Label::Attr(key)));
        }
        // The dict itself is referenced too (its refcount counts the instance).
        out.push((dict, Label::Namespace));
    }
    Ok(())
}

/// Every aligned word of the object's body (past the header) that may point at an object.
fn scan(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    obj: u64,
    t: &TypeInfo,
    skip: &[u64],
    out: &mut Vec<(u64, Label)>,
) -> Result<(), ReadError> {
    let mut size = t.basicsize;
    if t.itemsize > 0 {
        // ob_size is signed (an int's sign lives there).
        let items = (mem.read_u64(obj + layout.containers.ob_size as u64)? as i64).unsigned_abs();
        size += t.itemsize.saturating_mul(items.min(MAX_SCAN));
    }
    let size = size.min(MAX_SCAN) & !7;
    let header = (layout.object.ob_type + 8) as u64;
    if size <= header {
        return Ok(());
    }
    let words = read_words(mem, obj + header, (size - header) / 8)?;
    for (k, word) in words.into_iter().enumerate() {
        let offset = header + 8 * k as u64;
        if word != 0 && word & 7 == 0 && !skip.contains(&offset) {
            out.push((word, Label::Field(offset as u32)));
        }
    }
    Ok(())
}

/// Shortest paths from the roots (every interpreter's sys.modules) by breadth-first search:
/// for each object, the object it was reached from and how. Exact references are followed
/// first; conservative ones (a word that looks like a pointer) only to reach what exact ones
/// do not, so a stale word never replaces a real holder on a path.
pub struct Paths {
    parent: Vec<(u32, Label)>,
    pub roots: Vec<u32>,
}

const UNREACHED: u32 = u32::MAX;

pub fn shortest_paths(graph: &HeapGraph, roots: &[u32]) -> Paths {
    let mut parent = vec![(UNREACHED, Label::Member); graph.objects.len()];
    let mut order: Vec<u32> = Vec::new();
    for &r in roots {
        if parent[r as usize].0 == UNREACHED {
            parent[r as usize] = (r, Label::Member);
            order.push(r);
        }
    }
    for conservative in [false, true] {
        let mut queue: VecDeque<u32> = order.iter().copied().collect();
        while let Some(u) = queue.pop_front() {
            for &(v, label) in graph.edges_of(u) {
                if parent[v as usize].0 == UNREACHED && (conservative || !matches!(label, Label::Field(_))) {
                    parent[v as usize] = (u, label);
                    queue.push_back(v);
                    order.push(v);
                }
            }
        }
    }
    Paths { parent, roots: roots.to_vec() }
}

/// One step of a path, resolved for printing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Index(u32),
    Key(String),
    Attr(String),
    Namespace,
    Member,
    Field(u32),
}

impl Paths {
    /// The steps from a root to `i`, or `None` if no root reaches it.
    pub fn steps(&self, graph: &HeapGraph, mem: &mut dyn RemoteMemory, layout: &Layout, i: u32) -> Option<Vec<Step>> {
        if self.parent[i as usize].0 == UNREACHED {
            return None;
        }
        let mut steps = Vec::new();
        let mut at = i;
        while !self.roots.contains(&at) {
            let (from, label) = self.parent[at as usize];
            let key_text = |mem: &mut dyn RemoteMemory, key: u64| -> String {
                match read_str(mem, layout, key) {
                    Ok(Some(s)) => s,
                    _ => match graph.index_of(key) {
                        Some(k) => format!("<{}>", graph.types[graph.type_of[k as usize] as usize].name),
                        None => format!("<object {key:#x}>"),
                    },
                }
            };
            steps.push(match label {
                Label::Index(n) => Step::Index(n),
                Label::Key(k) => Step::Key(key_text(mem, k)),
                Label::Attr(k) => Step::Attr(key_text(mem, k)),
                Label::Namespace => Step::Namespace,
                Label::Member => Step::Member,
                Label::Field(o) => Step::Field(o),
            });
            at = from;
        }
        steps.reverse();
        Some(steps)
    }
}

/// A dict key as Python would print it: 'name' (object keys are already `<type>`).
pub fn key_repr(key: &str) -> String {
    if key.starts_with('<') { key.to_string() } else { format!("{key:?}").replace('"', "'") }
}

/// A path as Python code would write it, starting from `sys.modules`. A namespace followed by
/// a key reads as an attribute (`.handlers`), except a module's, which reads as
/// `.__dict__['NAME']` so that the module is named.
pub fn render(steps: &[Step], wildcard: &[bool]) -> String {
    let mut out = String::from("sys.modules");
    let mut in_namespace = false;
    let mut module_level = true;
    for (n, step) in steps.iter().enumerate() {
        let value = |text: String| if wildcard.get(n).copied().unwrap_or(false) { "*".to_string() } else { text };
        match step {
            Step::Index(i) => out += &format!("[{}]", value(i.to_string())),
            Step::Key(k) if in_namespace && !module_level => out += &format!(".{}", value(k.clone())),
            Step::Key(k) => out += &format!("[{}]", value(key_repr(k))),
            Step::Attr(a) => out += &format!(".{a}"),
            Step::Namespace if module_level && n == 1 => out += ".__dict__",
            Step::Namespace => {}
            Step::Member => out += ".<member>",
            Step::Field(o) => out += &format!(".<field +{o:#x}>"),
        }
        in_namespace = matches!(step, Step::Namespace);
        if n >= 2 {
            module_level = false;
        }
    }
    out
}
