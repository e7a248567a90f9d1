//! Which growing objects hold which: one pass over the heap graph, reading the references of
//! a sample of the instances of a few types only (the leak suspects), so that analysis can
//! tell the leaking type (the holder) from the parts each of its instances brings along (its
//! `__dict__`, a closure's cells) and from what holds it (a bound method, a cache's key tuple).
//!
//! Cost: a walk of the GC lists (as a census) plus the references of at most
//! [`READS_PER_TYPE`] instances of each type asked about; the graph's per-node arrays are kept
//! for every tracked object (about 40 bytes each) but edges only for those read.

use super::graph::{HeapGraph, TypeInfo, build_scoped};
use crate::cpython::objects::{base_chain, type_name};
use crate::cpython::process::PythonProcess;
use crate::error::LeakspyError;
use crate::memory::RemoteMemory;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::time::Instant;

/// Instances of one type whose references are read; more are sampled evenly (every k-th in
/// address order) and the counts scaled.
pub const READS_PER_TYPE: u64 = 20_000;

/// Types whose objects refer to their referent weakly: that reference keeps nothing alive. A
/// weak reference's callback (`__callback__`, a named field) is a strong reference.
const WEAK_REFERENCE_TYPES: &[&str] = &[
    "weakref",
    "weakref.ReferenceType",
    "weakproxy",
    "weakcallableproxy",
    "weakref.ProxyType",
    "weakref.CallableProxyType",
];

/// Instances of `holder` refer to instances of `held`, as seen in the graph.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Hold {
    pub holder: String,
    pub held: String,
    /// Instances of `holder` with at least one such reference (scaled when sampled).
    pub holders: u64,
    /// Distinct instances of `held` they refer to (scaled when sampled).
    pub held_objects: u64,
}

/// What the pass found and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Holdings {
    pub holds: Vec<Hold>,
    /// Objects whose references were read.
    pub objects_read: u64,
    /// Nodes of the graph (every tracked object, and the untracked ones found from those read).
    pub graph_objects: u64,
    pub duration_ms: f64,
}

/// The pass over the heap graph at the end of sampling: which growing objects hold which.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct GraphPass {
    pub ran: bool,
    /// Why it did not run (fewer than two growing types, the target gone, too large, asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// Why it failed (the target changed under every retry of the read): grouping then rests
    /// on growth alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects whose references were read, nodes of the graph, and the time it took.
    pub objects_read: u64,
    pub graph_objects: u64,
    pub duration_ms: f64,
}

struct Wanted {
    index: usize,
    stride: u64,
    seen: u64,
}

/// Reads who holds whom among the instances of `types` (name, instances now).
pub fn read_holdings(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    types: &[(String, u64)],
) -> Result<Holdings, LeakspyError> {
    let started = Instant::now();
    let index: FxHashMap<&str, usize> = types.iter().enumerate().map(|(i, (name, _))| (name.as_str(), i)).collect();
    // Per type object (by its TypeInfo, shared by all its nodes): which of `types` it is.
    let mut by_type: FxHashMap<*const TypeInfo, Option<Wanted>> = FxHashMap::default();
    let mut selected: Vec<u32> = Vec::new();
    let graph = build_scoped(process, mem, &mut |node, t| {
        let wanted = by_type.entry(t as *const TypeInfo).or_insert_with(|| {
            index.get(t.name.as_str()).map(|&i| Wanted {
                index: i,
                stride: types[i].1.div_ceil(READS_PER_TYPE).max(1),
                seen: 0,
            })
        });
        let Some(w) = wanted else { return false };
        w.seen += 1;
        let read = (w.seen - 1).is_multiple_of(w.stride);
        if read {
            selected.push(node);
        }
        read
    })?;
    let strides: Vec<u64> = {
        let mut strides = vec![1; types.len()];
        for w in by_type.values().flatten() {
            strides[w.index] = w.stride;
        }
        strides
    };
    let weak = weak_holders(process, mem, &graph, &selected, &index);
    let holds = count_holds(&graph, &selected, types, &strides, &weak);
    Ok(Holdings {
        holds,
        objects_read: selected.len() as u64,
        graph_objects: graph.len() as u64,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Counts, over the `selected` nodes (each standing for `strides[type]` instances), which of
/// `types` hold which: per pair, the instances holding and the distinct instances held.
/// References from the `weak` types count only where named (a weak reference's callback),
/// not to their referent.
fn count_holds(
    graph: &HeapGraph,
    selected: &[u32],
    types: &[(String, u64)],
    strides: &[u64],
    weak: &FxHashSet<usize>,
) -> Vec<Hold> {
    let index: FxHashMap<&str, usize> = types.iter().enumerate().map(|(i, (name, _))| (name.as_str(), i)).collect();
    let type_of = |node: u32| index.get(graph.type_info(node).name.as_str()).copied();
    // (holder type, held type) -> (holders seen, distinct held nodes)
    let mut pairs: FxHashMap<(usize, usize), (u64, FxHashSet<u32>)> = FxHashMap::default();
    let mut held_here: Vec<usize> = Vec::new();
    for &node in selected {
        let Some(a) = type_of(node) else { continue };
        held_here.clear();
        for edge in graph.edges_of(node) {
            let target = edge.target;
            if target == node || (weak.contains(&a) && !edge.named) {
                continue;
            }
            let Some(b) = type_of(target) else { continue };
            let entry = pairs.entry((a, b)).or_default();
            entry.1.insert(target);
            if !held_here.contains(&b) {
                held_here.push(b);
                entry.0 += 1;
            }
        }
    }
    let mut holds: Vec<Hold> = pairs
        .into_iter()
        .map(|((a, b), (holders, held))| Hold {
            holder: types[a].0.clone(),
            held: types[b].0.clone(),
            holders: holders * strides[a],
            held_objects: held.len() as u64 * strides[a],
        })
        .collect();
    holds.sort_by(|x, y| (&x.holder, &x.held).cmp(&(&y.holder, &y.held)));
    holds
}

/// Which of the types asked about are weak references (or subclasses of them, such as
/// `weakref.KeyedRef`): read from one instance's type and its bases.
fn weak_holders(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    graph: &HeapGraph,
    selected: &[u32],
    index: &FxHashMap<&str, usize>,
) -> FxHashSet<usize> {
    let mut checked = FxHashSet::default();
    let mut weak = FxHashSet::default();
    for &node in selected {
        let Some(&i) = index.get(graph.type_info(node).name.as_str()) else { continue };
        if !checked.insert(i) {
            continue;
        }
        let addr = graph.addrs[node as usize];
        let is_weak = (|| -> Option<bool> {
            let type_addr = mem.read_u64(addr + process.layout.object.ob_type as u64).ok()?;
            let chain = base_chain(mem, &process.layout, type_addr).ok()?;
            Some(chain.into_iter().any(|t| {
                type_name(mem, &process.layout, t).is_ok_and(|name| WEAK_REFERENCE_TYPES.contains(&name.as_str()))
            }))
        })();
        if is_weak == Some(true) {
            weak.insert(i);
        }
    }
    weak
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::graph::Kind;
    use crate::heap::graph::Label;
    use crate::heap::graph::tests::graph_with;

    #[test]
    fn holds_are_counted_per_pair_and_weak_referents_are_not_holds() {
        // Nodes: 0 module dict; 1, 2 Invoice; 3, 4 their dicts; 5, 6 weak references to the
        // Invoices with 7, 8 (bound methods) as callbacks; 9 a function.
        let types = [
            ("dict", Kind::Dict),
            ("__main__.Invoice", Kind::Other),
            ("weakref", Kind::Other),
            ("method", Kind::Other),
            ("function", Kind::Other),
        ];
        let nodes = [
            (0, 0, 1),
            (1, 0, 1),
            (1, 0, 1),
            (0, 0, 1),
            (0, 0, 1),
            (2, 0, 1),
            (2, 0, 1),
            (3, 0, 1),
            (3, 0, 1),
            (4, 0, 1),
        ];
        let edges = [
            (0, 1, Label::Key(0)),
            (0, 2, Label::Key(1)),
            (0, 9, Label::Key(2)),
            (1, 3, Label::Namespace),
            (2, 4, Label::Namespace),
            (5, 1, Label::Field(24)),
            (5, 7, Label::Named(0)),
            (6, 2, Label::Field(24)),
            (6, 8, Label::Named(0)),
            (9, 0, Label::Named(0)),
        ];
        let g = graph_with(&types, &nodes, &edges, &[]);
        let asked: Vec<(String, u64)> =
            ["dict", "__main__.Invoice", "weakref", "method", "function"].iter().map(|t| (t.to_string(), 2)).collect();
        let weak = FxHashSet::from_iter([2]);
        let holds = count_holds(&g, &(0..10).collect::<Vec<u32>>(), &asked, &[1, 1, 1, 1, 1], &weak);
        let pairs: Vec<(&str, &str, u64, u64)> =
            holds.iter().map(|h| (h.holder.as_str(), h.held.as_str(), h.holders, h.held_objects)).collect();
        assert_eq!(
            pairs,
            vec![
                ("__main__.Invoice", "dict", 2, 2),
                ("dict", "__main__.Invoice", 1, 2),
                ("dict", "function", 1, 1),
                ("function", "dict", 1, 1),
                ("weakref", "method", 2, 2),
            ]
        );
        // Sampled: every instance read stands for `stride` of them.
        let sampled = count_holds(&g, &[1], &asked, &[1, 10, 1, 1, 1], &weak);
        assert_eq!((sampled[0].holders, sampled[0].held_objects), (10, 10));
    }
}
