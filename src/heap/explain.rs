//! Who holds a set of objects: their paths from the module globals or the threads' frames,
//! folded by shape ("`CACHE[*]`" for a thousand keys of one dict), with the containers on the
//! way, what the objects keep alive, and what nobody in the heap explains. The answer of
//! `leakspy why`, of `attach --why-top` (stored in the recording) and of the report's "who
//! holds them" section, so it is one data shape, written and read back as JSON.

use super::graph::{HeapGraph, Path, Paths, Step, Storage, render};
use super::referents::opaque_holders;
use super::retained::Retention;
use crate::cpython::process::PythonProcess;
use crate::memory::RemoteMemory;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

/// The object a group of paths runs through before the part that varies: the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    #[serde(rename = "type")]
    pub type_name: String,
    pub address: String,
    pub retained_bytes: u64,
}

/// One object (or, past a step that varies, the objects) a group's paths leave from at one
/// step: what a graph of the paths draws as a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathNode {
    #[serde(rename = "type")]
    pub type_name: String,
    /// Distinct objects at this step among the traced paths, scaled to all instances.
    pub objects: u64,
    /// Memory freed if they went (their retained sizes summed, scaled likewise).
    pub retained_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathGroup {
    /// The whole path as Python spells it, with `*` where the paths of the group differ.
    pub path: String,
    /// Instances reached this way (scaled from the traced ones).
    pub count: u64,
    /// Each step as Python spells it (`['CACHE']`, `.handlers`, `[*]`); names escaped.
    pub steps: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Where the paths start: `sys.modules`, a thread's frame.
    #[serde(default)]
    pub root: String,
    /// Per step, the objects it leaves from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PathNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retainer {
    pub address: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub size_bytes: u64,
    pub retained_bytes: u64,
    pub path: Option<String>,
    /// References no object or frame explains (native code, the interpreter's own state).
    pub external_refs: u64,
    /// The interpreter whose root the path starts from, when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<i64>,
}

/// An object of a type that keeps references outside itself, in memory leakspy does not
/// decode, whose memory holds pointers to instances that nothing else explains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpaqueHolder {
    #[serde(rename = "type")]
    pub type_name: String,
    pub address: String,
    pub path: Option<String>,
    /// Instances (of those traced) whose address is in its memory.
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GraphSummary {
    pub objects: u64,
    pub untracked: u64,
    pub references: u64,
    pub frames: u64,
    pub truncated: bool,
    /// Threads whose frames could not be read (they exited under the read).
    pub skipped_threads: u64,
    pub ms: f64,
    /// Retained sizes were computed (false: `--no-retained`, or memory would not have fitted
    /// the dominator tree; the retained sizes in the report are then 0).
    #[serde(default = "yes")]
    pub retained: bool,
    /// Why retained sizes were left out, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_skipped: Option<String>,
    /// Bytes the graph's structures hold once built.
    #[serde(default)]
    pub graph_bytes: u64,
    /// Bytes leakspy's graph structures held at the peak of the analysis (graph, dominator
    /// tree's working arrays, paths), counted from their capacities.
    #[serde(default)]
    pub peak_bytes: u64,
    /// `peak_bytes` per graph node (objects and frames).
    #[serde(default)]
    pub bytes_per_node: f64,
}

fn yes() -> bool {
    true
}

impl GraphSummary {
    /// Records the peak of the analysis: while the graph was read, or the graph's bytes plus
    /// the most the analyses held beside it, whichever is more.
    pub fn with_peak(mut self, graph: &HeapGraph, beside_graph: u64) -> GraphSummary {
        self.graph_bytes = graph.heap_bytes();
        self.peak_bytes = (self.graph_bytes + beside_graph).max(graph.build_peak_bytes);
        self.bytes_per_node = self.peak_bytes as f64 / graph.len().max(1) as f64;
        self
    }

    pub fn of(graph: &HeapGraph, ms: f64) -> GraphSummary {
        GraphSummary {
            retained: true,
            retained_skipped: None,
            graph_bytes: 0,
            peak_bytes: 0,
            bytes_per_node: 0.0,
            objects: graph.object_count(),
            untracked: graph.untracked_count(),
            references: graph.edges_len(),
            frames: graph.frames.len() as u64,
            truncated: graph.truncated,
            skipped_threads: graph.skipped_threads,
            ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhyReport {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// With --type or --address: who holds those objects.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// The objects retaining the most memory (of the type, with --type; of all, without).
    pub largest: Vec<Retainer>,
    pub graph: GraphSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    pub instances: u64,
    pub sampled: u64,
    /// sys.getsizeof summed over the instances.
    pub size_bytes: u64,
    /// Freed if every instance went.
    pub retained_bytes: u64,
    pub paths: Vec<PathGroup>,
    /// Instances no path from the module globals or a frame reaches (garbage cycles not yet
    /// collected, or held by native code only).
    pub unreachable: u64,
    /// Sum over the instances of refcount minus the references found in the heap and frames.
    pub external_refs: u64,
    /// Instances with at least one such reference.
    pub externally_held: u64,
    /// References the instances get from running frames (3.11+ locals and value stacks).
    pub frame_refs: u64,
    /// Weak references to the instances: they keep nothing alive, and are no part of the
    /// paths or retained sizes above.
    #[serde(default)]
    pub weak_refs: u64,
    /// Where those weak references are (the paths to the weak reference objects).
    #[serde(default)]
    pub weak_paths: Vec<PathGroup>,
    /// The weak references' types, most first: (type, count).
    #[serde(default)]
    pub weak_ref_types: Vec<(String, u64)>,
    /// Of the objects held from outside the heap: containers that hold them in storage
    /// leakspy does not decode (found by their addresses in that storage).
    #[serde(default)]
    pub opaque_holders: Vec<OpaqueHolder>,
}

/// A path and the object it leads to.
type TracedPath = (u32, Path);

/// What grouping paths needs to know of a node on them.
pub(super) struct NodeFacts {
    pub type_name: String,
    pub address: u64,
    /// 0 where retained sizes are not computed.
    pub retained_bytes: u64,
}

/// `paths` (to `nodes`, in order; `None` where no root reaches the node) grouped by shape (the
/// varying index or key as `*`), each path standing for `scale` objects, most first; and how
/// many no root reaches. Both `why` modes group with this, so their lines are the same.
pub(super) fn group_paths(
    nodes: &[u32],
    paths: Vec<Option<Path>>,
    scale: f64,
    facts: &mut dyn FnMut(u32) -> NodeFacts,
) -> (Vec<PathGroup>, u64) {
    let mut groups: FxHashMap<(String, Vec<Step>), Vec<TracedPath>> = FxHashMap::default();
    let mut unreachable = 0u64;
    for (&i, path) in nodes.iter().zip(paths) {
        match path {
            Some(path) => groups.entry(shape(&path)).or_default().push((i, path)),
            None => unreachable += 1,
        }
    }
    let mut path_groups: Vec<PathGroup> = groups
        .into_values()
        .map(|members| {
            let (first_node, first) = &members[0];
            let steps: Vec<Step> = first.steps.iter().map(|(_, s)| s.clone()).collect();
            // The object a step reaches: the next step's origin, or the path's end.
            let reached = |node: u32, p: &Path, n: usize| p.steps.get(n + 1).map_or(node, |s| s.0);
            // A step varies where its text does, and where an entry of a collection whose
            // text names no entry (a set member, a dict key object, a value under a key that
            // is not a str) reaches different objects.
            let wildcard: Vec<bool> = (0..steps.len())
                .map(|n| {
                    let entry = matches!(&steps[n], Step::Member | Step::DictKey)
                        || matches!(&steps[n], Step::Key(k) if k.starts_with('<'));
                    members.iter().any(|(node, m)| {
                        m.steps[n].1 != first.steps[n].1
                            || (entry && reached(*node, m, n) != reached(*first_node, first, n))
                    })
                })
                .collect();
            // The container: where the paths of the group start to differ (or the last holder).
            let holder_at = wildcard.iter().position(|w| *w).unwrap_or(steps.len().saturating_sub(1));
            let holder = first.steps.get(holder_at).map(|&(node, _)| {
                let f = facts(node);
                Holder {
                    type_name: f.type_name,
                    address: format!("{:#x}", f.address),
                    retained_bytes: f.retained_bytes,
                }
            });
            // Per step, the distinct objects the traced paths leave from; past the first step
            // that varies they are a sample of the instances' holders, scaled up.
            let nodes = (0..steps.len())
                .map(|n| {
                    let distinct: FxHashSet<u32> = members.iter().map(|(_, m)| m.steps[n].0).collect();
                    let factor = if n > holder_at { scale } else { 1.0 };
                    let retained: u64 = distinct.iter().map(|&v| facts(v).retained_bytes).sum();
                    PathNode {
                        type_name: facts(first.steps[n].0).type_name,
                        objects: (distinct.len() as f64 * factor).round() as u64,
                        retained_bytes: (retained as f64 * factor).round() as u64,
                    }
                })
                .collect();
            PathGroup {
                path: render(&first.root, &steps, &wildcard),
                count: (members.len() as f64 * scale).round() as u64,
                steps: steps
                    .iter()
                    .zip(&wildcard)
                    .map(|(s, w)| if *w { "[*]".to_string() } else { s.text() })
                    .collect(),
                holder: holder.filter(|h| !h.type_name.starts_with('<')),
                root: first.root.clone(),
                nodes,
            }
        })
        .collect();
    path_groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    (path_groups, unreachable)
}

/// What the explanations are made from: the graph, its shortest paths and retained sizes.
pub struct Explainer<'a> {
    pub graph: &'a HeapGraph,
    pub paths: &'a Paths,
    pub retention: &'a Retention,
    pub process: &'a PythonProcess,
}

/// The graph's nodes whose type is named `name` exactly.
pub fn instances_of_type(graph: &HeapGraph, name: &str) -> Vec<u32> {
    (0..graph.len() as u32).filter(|&i| graph.type_info(i).name == name).collect()
}

/// Steps with the varying part taken out: paths with the same shape are one line.
fn shape(path: &Path) -> (String, Vec<Step>) {
    let steps = path
        .steps
        .iter()
        .map(|(_, s)| match s {
            Step::Index(_) => Step::Index(0),
            Step::Key(_) => Step::Key(String::new()),
            other => other.clone(),
        })
        .collect();
    (path.root.clone(), steps)
}

impl Explainer<'_> {
    /// Who holds `instances` (non-empty): up to `sample` of them are traced, evenly spread,
    /// and the counts scaled up; `top` of them, largest retainers first, are listed.
    pub fn report(
        &self,
        mem: &mut dyn RemoteMemory,
        type_name: Option<String>,
        instances: &[u32],
        sample: usize,
        top: usize,
        summary: GraphSummary,
    ) -> WhyReport {
        let graph = self.graph;
        let retention = self.retention;
        let one_type = instances.first().map(|&first| {
            let name = &graph.type_info(first).name;
            (instances.iter().all(|&i| graph.type_info(i).name == *name), name.clone())
        });
        let mut largest = instances.to_vec();
        largest.sort_unstable_by_key(|&i| std::cmp::Reverse(retention.retained_of(i)));
        largest.truncate(top);
        WhyReport {
            type_name: type_name.or_else(|| one_type.and_then(|(one, name)| one.then_some(name))),
            explanation: Some(self.explain(mem, instances, sample)),
            largest: self.retainers(mem, &largest),
            graph: summary,
        }
    }

    /// The objects that retain the most, with no set to explain; with several interpreters,
    /// the first `top` of each.
    pub fn largest(&self, mem: &mut dyn RemoteMemory, top: usize, summary: GraphSummary) -> WhyReport {
        let graph = self.graph;
        let largest = if graph.interpreters > 1 {
            let mut per: FxHashMap<Option<i64>, usize> = FxHashMap::default();
            let of = self.paths.interpreters(graph);
            self.retention
                .largest(graph, graph.len())
                .into_iter()
                .filter(|&i| {
                    let n = per.entry(of[i as usize]).or_default();
                    *n += 1;
                    *n <= top
                })
                .collect()
        } else {
            self.retention.largest(graph, top)
        };
        WhyReport { type_name: None, explanation: None, largest: self.retainers(mem, &largest), graph: summary }
    }

    fn explain(&self, mem: &mut dyn RemoteMemory, instances: &[u32], sample: usize) -> Explanation {
        let (graph, retention) = (self.graph, self.retention);
        let step = (instances.len() / sample.max(1)).max(1);
        let sampled: Vec<u32> = instances.iter().step_by(step).copied().collect();
        let scale = instances.len() as f64 / sampled.len().max(1) as f64;
        let (path_groups, unreachable) = self.group_paths(mem, &sampled, scale);

        // Weak references to the instances, by where the weak reference objects are.
        let member: FxHashSet<u32> = instances.iter().copied().collect();
        let weak: Vec<u32> = graph.weak.iter().filter(|(_, to)| member.contains(to)).map(|&(from, _)| from).collect();
        let weak_step = (weak.len() / sample.max(1)).max(1);
        let weak_sampled: Vec<u32> = weak.iter().step_by(weak_step).copied().collect();
        let weak_scale = weak.len() as f64 / weak_sampled.len().max(1) as f64;
        let (weak_paths, _) = self.group_paths(mem, &weak_sampled, weak_scale);
        let mut weak_types: FxHashMap<&str, u64> = FxHashMap::default();
        for &w in &weak {
            *weak_types.entry(graph.type_info(w).name.as_str()).or_default() += 1;
        }
        let mut weak_ref_types: Vec<(String, u64)> = weak_types.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
        weak_ref_types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let sum = |f: &dyn Fn(u32) -> u64| instances.iter().map(|&i| f(i)).sum::<u64>();
        let held_outside: FxHashSet<u64> =
            sampled.iter().filter(|&&i| graph.external_refs(i) > 0).map(|&i| graph.addrs[i as usize]).collect();
        let opaque_holders = if held_outside.is_empty() { Vec::new() } else { self.opaque(mem, &held_outside, scale) };
        Explanation {
            instances: instances.len() as u64,
            sampled: sampled.len() as u64,
            size_bytes: sum(&|i| graph.size(i)),
            retained_bytes: retention.of_set(graph, instances),
            paths: path_groups,
            unreachable: (unreachable as f64 * scale).round() as u64,
            external_refs: sum(&|i| graph.external_refs(i)),
            externally_held: sum(&|i| u64::from(graph.external_refs(i) > 0)),
            frame_refs: sum(&|i| u64::from(graph.frame_refs(i))),
            weak_refs: weak.len() as u64,
            weak_paths,
            weak_ref_types,
            opaque_holders,
        }
    }

    /// The objects of types with storage leakspy does not decode that hold some of `wanted`
    /// (by address) in that storage, most first.
    fn opaque(&self, mem: &mut dyn RemoteMemory, wanted: &FxHashSet<u64>, scale: f64) -> Vec<OpaqueHolder> {
        let (graph, process) = (self.graph, self.process);
        let candidates: Vec<(u64, u64)> = (0..graph.len() as u32)
            .filter(|&i| graph.type_info(i).storage == Storage::Opaque)
            // The object's own body (not sys.getsizeof, which counts memory before it).
            .map(|i| (graph.addrs[i as usize], graph.type_info(i).basicsize))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let maps = process.current_maps();
        let is_object = |addr: u64| graph.index_of(addr).is_some();
        let mut found = opaque_holders(mem, &process.layout, &maps, &is_object, &candidates, wanted);
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        found
            .into_iter()
            .filter_map(|(addr, count)| {
                let i = graph.index_of(addr)?;
                Some(OpaqueHolder {
                    type_name: graph.type_info(i).name.clone(),
                    address: format!("{addr:#x}"),
                    path: self.rendered_path(mem, i),
                    count: (count as f64 * scale).round() as u64,
                })
            })
            .collect()
    }

    fn rendered_path(&self, mem: &mut dyn RemoteMemory, node: u32) -> Option<String> {
        self.paths.path(self.graph, mem, &self.process.layout, node).map(|p| {
            let steps: Vec<Step> = p.steps.into_iter().map(|(_, s)| s).collect();
            render(&p.root, &steps, &[])
        })
    }

    /// The paths to `nodes` grouped by shape (the varying index or key as `*`), each standing
    /// for `scale` objects, most first; and how many no root reaches.
    fn group_paths(&self, mem: &mut dyn RemoteMemory, nodes: &[u32], scale: f64) -> (Vec<PathGroup>, u64) {
        let (graph, retention) = (self.graph, self.retention);
        let paths = self.paths.paths(graph, mem, &self.process.layout, nodes);
        group_paths(nodes, paths, scale, &mut |node| NodeFacts {
            type_name: graph.type_info(node).name.clone(),
            address: graph.addrs[node as usize],
            retained_bytes: retention.retained_of(node),
        })
    }

    fn retainers(&self, mem: &mut dyn RemoteMemory, nodes: &[u32]) -> Vec<Retainer> {
        let graph = self.graph;
        let interpreters = (graph.interpreters > 1).then(|| self.paths.interpreters(graph));
        nodes
            .iter()
            .map(|&i| Retainer {
                address: format!("{:#x}", graph.addrs[i as usize]),
                type_name: graph.type_info(i).name.clone(),
                size_bytes: graph.size(i),
                retained_bytes: self.retention.retained_of(i),
                path: self.rendered_path(mem, i),
                external_refs: graph.external_refs(i),
                interpreter: interpreters.as_ref().and_then(|of| of[i as usize]),
            })
            .collect()
    }
}
