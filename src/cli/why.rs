//! `leakspy why PID --type T | --address ADDR`: who holds those objects, as paths from the
//! module globals or the threads' frames, how much they keep alive, and what nobody in the
//! heap explains. Without either: the objects that retain the most memory.

use super::{TargetArgs, open_target, warn_if_graph_may_not_fit};
use crate::cpython::process::{PythonProcess, retry_transient};
use crate::error::LeakspyError;
use crate::heap::graph::{HeapGraph, Path, Paths, Step, Storage, build, render, shortest_paths};
use crate::heap::referents::opaque_holders;
use crate::heap::retained::Retention;
use crate::memory::RemoteMemory;
use crate::memory::maps::MemoryMap;
use crate::text::{human_bytes, terminal, thousands};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The type whose holders to show, named as in the census (`__main__.Order`, `dict`).
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "address")]
    pub type_name: Option<String>,
    /// Objects by address (0x7f3a... as hex(id(obj)) prints it, or decimal); several may be
    /// given, separated by commas or repeated.
    #[arg(long, value_parser = parse_address, value_delimiter = ',', num_args = 1)]
    pub address: Vec<u64>,
    /// Instances to trace (evenly spread over all of them); counts are scaled up.
    #[arg(long, default_value_t = 10_000)]
    pub sample: usize,
    /// How many of the largest retainers to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// How many paths to print, most instances first (--json gives all).
    #[arg(long, default_value_t = 20)]
    pub paths: usize,
    /// Print the report as JSON (the fields are listed in the README).
    #[arg(long)]
    pub json: bool,
}

fn parse_address(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not an address: give it as 0x7f3a5c2b1d40 or in decimal"))
}

/// The object a group of paths runs through before the part that varies: the container.
#[derive(Serialize)]
struct Holder {
    #[serde(rename = "type")]
    type_name: String,
    address: String,
    retained_bytes: u64,
}

#[derive(Serialize)]
struct PathGroup {
    path: String,
    count: u64,
    steps: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<Holder>,
}

#[derive(Serialize)]
struct Retainer {
    address: String,
    #[serde(rename = "type")]
    type_name: String,
    size_bytes: u64,
    retained_bytes: u64,
    path: Option<String>,
    /// References no object or frame explains (native code, the interpreter's own state).
    external_refs: u64,
    /// The interpreter whose root the path starts from, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    interpreter: Option<i64>,
}

/// An object of a type that keeps references outside itself, in memory leakspy does not
/// decode, whose memory holds pointers to instances that nothing else explains.
#[derive(Serialize)]
struct OpaqueHolder {
    #[serde(rename = "type")]
    type_name: String,
    address: String,
    path: Option<String>,
    /// Instances (of those traced) whose address is in its memory.
    count: u64,
}

#[derive(Serialize)]
struct GraphSummary {
    objects: u64,
    untracked: u64,
    references: u64,
    frames: u64,
    truncated: bool,
    /// Threads whose frames could not be read (they exited under the read).
    skipped_threads: u64,
    ms: f64,
}

#[derive(Serialize)]
struct WhyReport {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_name: Option<String>,
    /// With --type or --address: who holds those objects.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    explanation: Option<Explanation>,
    /// The objects retaining the most memory (of the type, with --type; of all, without).
    largest: Vec<Retainer>,
    graph: GraphSummary,
}

#[derive(Serialize)]
struct Explanation {
    instances: u64,
    sampled: u64,
    /// sys.getsizeof summed over the instances.
    size_bytes: u64,
    /// Freed if every instance went.
    retained_bytes: u64,
    paths: Vec<PathGroup>,
    /// Instances no path from the module globals or a frame reaches (garbage cycles not yet
    /// collected, or held by native code only).
    unreachable: u64,
    /// Sum over the instances of refcount minus the references found in the heap and frames.
    external_refs: u64,
    /// Instances with at least one such reference.
    externally_held: u64,
    /// References the instances get from running frames (3.11+ locals and value stacks).
    frame_refs: u64,
    /// Weak references to the instances: they keep nothing alive, and are no part of the
    /// paths or retained sizes above.
    weak_refs: u64,
    /// Where those weak references are (the paths to the weak reference objects).
    weak_paths: Vec<PathGroup>,
    /// The weak references' types, most first: (type, count).
    weak_ref_types: Vec<(String, u64)>,
    /// Of the objects held from outside the heap: containers that hold them in storage
    /// leakspy does not decode (found by their addresses in that storage).
    opaque_holders: Vec<OpaqueHolder>,
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

pub fn run(args: WhyArgs) -> Result<(), LeakspyError> {
    let (process, mut mem) = open_target(args.target.resolve()?)?;
    warn_if_graph_may_not_fit(process.pid);
    let started = Instant::now();
    let (graph, _) = retry_transient(true, |_| build(&process, &mut mem))?;
    // Dominators first: their working arrays are gone before the paths' are made.
    let retention = Retention::of(&graph);
    let paths = shortest_paths(&graph);
    let summary = GraphSummary {
        objects: graph.object_count(),
        untracked: graph.untracked_count(),
        references: graph.edges_len(),
        frames: graph.frames.len() as u64,
        truncated: graph.truncated,
        skipped_threads: graph.skipped_threads,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let mem: &mut dyn RemoteMemory = &mut mem;
    let report = if args.type_name.is_none() && args.address.is_empty() {
        let largest = if graph.interpreters > 1 {
            // Each interpreter's largest apart: the first `top` of each.
            let mut per: FxHashMap<Option<i64>, usize> = FxHashMap::default();
            let of = paths.interpreters(&graph);
            retention
                .largest(&graph, graph.len())
                .into_iter()
                .filter(|&i| {
                    let n = per.entry(of[i as usize]).or_default();
                    *n += 1;
                    *n <= args.top
                })
                .collect()
        } else {
            retention.largest(&graph, args.top)
        };
        WhyReport {
            type_name: None,
            explanation: None,
            largest: retainers(&graph, &paths, &retention, mem, &process, &largest),
            graph: summary,
        }
    } else {
        let instances: Vec<u32> = match &args.type_name {
            Some(name) => (0..graph.len() as u32).filter(|&i| graph.type_info(i).name == *name).collect(),
            None => args.address.iter().filter_map(|&a| graph.index_of(a)).collect(),
        };
        let missing = args.address.iter().find(|&&a| graph.index_of(a).is_none());
        if instances.is_empty() || missing.is_some() {
            return Err(not_found(&process, args.type_name.as_deref(), missing.copied()));
        }
        let first_type = &graph.type_info(instances[0]).name;
        let one_type = instances.iter().all(|&i| graph.type_info(i).name == *first_type);
        let mut largest = instances.clone();
        largest.sort_unstable_by(|a, b| retention.retained[*b as usize].cmp(&retention.retained[*a as usize]));
        largest.truncate(args.top);
        WhyReport {
            type_name: args.type_name.clone().or_else(|| one_type.then(|| first_type.clone())),
            explanation: Some(explain(&graph, &paths, &retention, mem, &process, &instances, args.sample)),
            largest: retainers(&graph, &paths, &retention, mem, &process, &largest),
            graph: summary,
        }
    };
    if args.json {
        println!("{}", terminal::json(serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?));
    } else {
        print!("{}", render_report(&report, args.paths));
    }
    Ok(())
}

fn not_found(process: &PythonProcess, type_name: Option<&str>, address: Option<u64>) -> LeakspyError {
    match (type_name, address) {
        (Some(name), _) => anyhow::anyhow!(
            "no instance of {name:?} in process {}: check the name against `leakspy snapshot --all` (module.qualname)",
            process.pid
        ),
        (None, Some(addr)) => anyhow::anyhow!(
            "no object at {addr:#x} in process {}: give the start of an object (hex(id(obj)) in the target)",
            process.pid
        ),
        (None, None) => anyhow::anyhow!("nothing to explain"),
    }
    .into()
}

fn explain(
    graph: &HeapGraph,
    paths: &Paths,
    retention: &Retention,
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    instances: &[u32],
    sample: usize,
) -> Explanation {
    let step = (instances.len() / sample.max(1)).max(1);
    let sampled: Vec<u32> = instances.iter().step_by(step).copied().collect();
    let scale = instances.len() as f64 / sampled.len() as f64;
    let (path_groups, unreachable) = group_paths(graph, paths, retention, mem, process, &sampled, scale);

    // Weak references to the instances, by where the weak reference objects are.
    let member: FxHashSet<u32> = instances.iter().copied().collect();
    let weak: Vec<u32> = graph.weak.iter().filter(|(_, to)| member.contains(to)).map(|&(from, _)| from).collect();
    let weak_step = (weak.len() / sample.max(1)).max(1);
    let weak_sampled: Vec<u32> = weak.iter().step_by(weak_step).copied().collect();
    let weak_scale = weak.len() as f64 / weak_sampled.len().max(1) as f64;
    let (weak_paths, _) = group_paths(graph, paths, retention, mem, process, &weak_sampled, weak_scale);
    let mut weak_types: FxHashMap<&str, u64> = FxHashMap::default();
    for &w in &weak {
        *weak_types.entry(graph.type_info(w).name.as_str()).or_default() += 1;
    }
    let mut weak_ref_types: Vec<(String, u64)> = weak_types.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
    weak_ref_types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let sum = |f: &dyn Fn(u32) -> u64| instances.iter().map(|&i| f(i)).sum::<u64>();
    let retained_bytes = retention.of_set(graph, instances);
    let held_outside: FxHashSet<u64> =
        sampled.iter().filter(|&&i| graph.external_refs(i) > 0).map(|&i| graph.addrs[i as usize]).collect();
    let opaque =
        if held_outside.is_empty() { Vec::new() } else { opaque(graph, paths, mem, process, &held_outside, scale) };
    Explanation {
        instances: instances.len() as u64,
        sampled: sampled.len() as u64,
        size_bytes: sum(&|i| graph.sizes[i as usize]),
        retained_bytes,
        paths: path_groups,
        unreachable: (unreachable as f64 * scale).round() as u64,
        external_refs: sum(&|i| graph.external_refs(i)),
        externally_held: sum(&|i| u64::from(graph.external_refs(i) > 0)),
        frame_refs: sum(&|i| u64::from(graph.frame_refs(i))),
        weak_refs: weak.len() as u64,
        weak_paths,
        weak_ref_types,
        opaque_holders: opaque,
    }
}

/// The objects of types with storage leakspy does not decode that hold some of `wanted` (by
/// address) in that storage, most first.
fn opaque(
    graph: &HeapGraph,
    paths: &Paths,
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    wanted: &FxHashSet<u64>,
    scale: f64,
) -> Vec<OpaqueHolder> {
    let candidates: Vec<(u64, u64)> = (0..graph.len() as u32)
        .filter(|&i| graph.type_info(i).storage == Storage::Opaque)
        // The object's own body (not sys.getsizeof, which counts memory before it).
        .map(|i| (graph.addrs[i as usize], graph.type_info(i).basicsize))
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let maps = MemoryMap::read(process.pid).unwrap_or_else(|_| process.maps.clone());
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
                path: paths.path(graph, mem, &process.layout, i).map(|p| {
                    let steps: Vec<Step> = p.steps.into_iter().map(|(_, s)| s).collect();
                    render(&p.root, &steps, &[])
                }),
                count: (count as f64 * scale).round() as u64,
            })
        })
        .collect()
}

/// A path and the object it leads to.
type TracedPath = (u32, Path);

/// The paths to `nodes` grouped by shape (the varying index or key as `*`), each standing
/// for `scale` objects, most first; and how many no root reaches.
fn group_paths(
    graph: &HeapGraph,
    paths: &Paths,
    retention: &Retention,
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    nodes: &[u32],
    scale: f64,
) -> (Vec<PathGroup>, u64) {
    let mut groups: FxHashMap<(String, Vec<Step>), Vec<TracedPath>> = FxHashMap::default();
    let mut unreachable = 0u64;
    for &i in nodes {
        match paths.path(graph, mem, &process.layout, i) {
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
            let holder = first.steps.get(holder_at).map(|(node, _)| Holder {
                type_name: graph.type_info(*node).name.clone(),
                address: format!("{:#x}", graph.addrs[*node as usize]),
                retained_bytes: retention.retained[*node as usize],
            });
            PathGroup {
                path: render(&first.root, &steps, &wildcard),
                count: (members.len() as f64 * scale).round() as u64,
                steps: steps
                    .iter()
                    .zip(&wildcard)
                    .map(|(s, w)| if *w { "[*]".to_string() } else { s.text() })
                    .collect(),
                holder: holder.filter(|h| !h.type_name.starts_with('<')),
            }
        })
        .collect();
    path_groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    (path_groups, unreachable)
}

fn retainers(
    graph: &HeapGraph,
    paths: &Paths,
    retention: &Retention,
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    nodes: &[u32],
) -> Vec<Retainer> {
    let of = (graph.interpreters > 1).then(|| paths.interpreters(graph));
    let interpreters = of.as_ref();
    nodes
        .iter()
        .map(|&i| Retainer {
            address: format!("{:#x}", graph.addrs[i as usize]),
            type_name: graph.type_info(i).name.clone(),
            size_bytes: graph.sizes[i as usize],
            retained_bytes: retention.retained[i as usize],
            path: paths.path(graph, mem, &process.layout, i).map(|p| {
                let steps: Vec<Step> = p.steps.into_iter().map(|(_, s)| s).collect();
                render(&p.root, &steps, &[])
            }),
            external_refs: graph.external_refs(i),
            interpreter: interpreters.and_then(|of| of[i as usize]),
        })
        .collect()
}

/// The text of the report. Type names are the target's, shown through `terminal::name`; the
/// paths were rendered with their names escaped already (`heap::graph::render`).
fn render_report(r: &WhyReport, max_paths: usize) -> String {
    let g = &r.graph;
    let mut out = format!(
        "heap graph: {} objects ({} not tracked by the GC), {} references, {} frames; built in {:.0} ms{}{}\n",
        thousands(g.objects),
        thousands(g.untracked),
        thousands(g.references),
        thousands(g.frames),
        g.ms,
        if g.truncated { " (stopped at the object limit: counts are lower bounds)" } else { "" },
        match g.skipped_threads {
            0 => String::new(),
            n => format!(" ({n} threads exited under the read: what only their frames held shows as unreachable)"),
        }
    );
    if let Some(e) = &r.explanation {
        let what = match &r.type_name {
            Some(name) => format!("instances of {}", terminal::name(name)),
            None => "objects".into(),
        };
        out += &format!(
            "{} {what} (traced {}): {} in themselves, {} retained (freed if they all went)\n\n",
            thousands(e.instances),
            thousands(e.sampled),
            human_bytes(e.size_bytes),
            human_bytes(e.retained_bytes),
        );
        for p in e.paths.iter().take(max_paths) {
            out += &format!("{} of {} via {}\n", thousands(p.count), thousands(e.instances), p.path);
            if let Some(h) = &p.holder {
                out += &format!(
                    "    held by {} at {}, which retains {}\n",
                    terminal::name(&h.type_name),
                    h.address,
                    human_bytes(h.retained_bytes)
                );
            }
        }
        if e.paths.len() > max_paths {
            let rest = &e.paths[max_paths..];
            out += &format!(
                "... and {} more paths, {} instances (--paths N to see more, --json for all)\n",
                thousands(rest.len() as u64),
                thousands(rest.iter().map(|p| p.count).sum())
            );
        }
        if e.unreachable > 0 && !e.opaque_holders.is_empty() {
            out += &format!(
                "{} of {} are reachable from no module, frame or interpreter root through references leakspy can read:\n",
                thousands(e.unreachable),
                thousands(e.instances)
            );
        } else if e.unreachable > 0 {
            out += &format!(
                "{} of {} are reachable from no module, frame or interpreter root: held by native code, or garbage cycles the GC has not collected\n",
                thousands(e.unreachable),
                thousands(e.instances)
            );
        }
        if e.externally_held > 0 {
            let explained: u64 = e.opaque_holders.iter().map(|h| h.count).sum();
            for h in &e.opaque_holders {
                out += &format!(
                    "{} held by an object leakspy cannot read inside: {} at {} (their addresses are in its own memory)\n",
                    thousands(h.count),
                    terminal::name(&h.type_name),
                    h.path.clone().unwrap_or_else(|| h.address.clone())
                );
            }
            if explained < e.externally_held {
                out += &format!(
                    "{} have references from outside the heap ({} in all) that no object or frame explains: native code (C extensions, Py_IncRef without Py_DecRef)\n",
                    thousands(e.externally_held - explained.min(e.externally_held)),
                    thousands(e.external_refs)
                );
            }
        }
        if e.weak_refs > 0 {
            let types: Vec<String> =
                e.weak_ref_types.iter().map(|(t, n)| format!("{} {}", thousands(*n), terminal::name(t))).collect();
            out += &format!(
                "also referenced weakly by {} weak reference{} ({}; they keep nothing alive, and are not counted above):\n",
                thousands(e.weak_refs),
                if e.weak_refs == 1 { "" } else { "s" },
                types.join(", ")
            );
            for p in e.weak_paths.iter().take(max_paths) {
                out += &format!("    {} via {}\n", thousands(p.count), p.path);
            }
        }
        if e.paths.iter().any(|p| p.path.contains(".<field +")) {
            out += "(.<field +0x..>: a reference found by scanning an object of a type leakspy does not decode, at that offset)\n";
        }
        if e.frame_refs > 0 {
            out += &format!(
                "{} references come from running frames (local variables, value stacks)\n",
                thousands(e.frame_refs)
            );
        }
        out += "\n";
    }
    // Of the objects explained, single ones are worth listing only when some retain far
    // more than the average one.
    let notable = match &r.explanation {
        None => true,
        Some(e) => {
            let average = e.retained_bytes / e.instances.max(1);
            r.largest.first().is_some_and(|l| l.retained_bytes > 2 * average.max(1))
        }
    };
    if notable && !r.largest.is_empty() {
        let mut shown: Option<Option<i64>> = None;
        let several = r.largest.iter().any(|l| l.interpreter.is_some());
        if !several {
            out += "largest retainers (memory freed if the object went):\n";
        }
        let mut largest: Vec<&Retainer> = r.largest.iter().collect();
        // Each interpreter's apart (the runtime's and unreached ones last), largest first.
        largest.sort_by_key(|l| (l.interpreter.is_none(), l.interpreter.map(|i| i < 0), l.interpreter));
        for l in largest {
            if several && shown != Some(l.interpreter) {
                shown = Some(l.interpreter);
                out += &match l.interpreter {
                    Some(-1) => {
                        "largest retainers held by the runtime's roots (memory freed if the object went):\n".into()
                    }
                    Some(id) => format!("largest retainers in interpreter {id} (memory freed if the object went):\n"),
                    None => "largest retainers no root reaches:\n".into(),
                };
            }
            out += &format!(
                "  {:>10}  {}  {}\n",
                human_bytes(l.retained_bytes),
                terminal::name(&l.type_name),
                match (&l.path, l.external_refs) {
                    (Some(path), _) => path.clone(),
                    (None, 0) => "(no path and no outside reference: garbage awaiting collection)".into(),
                    (None, n) => format!(
                        "(no path; held from outside the heap by {n} reference{}: native code or the interpreter)",
                        if n == 1 { "" } else { "s" }
                    ),
                }
            );
        }
    }
    out
}
