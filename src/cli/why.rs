//! `leakspy why PID --type T`: who holds the instances of T, as paths from the module globals.

use super::{TargetArgs, open_target};
use crate::error::LeakspyError;
use crate::heap::graph::{HeapGraph, Step, build, key_repr, render, shortest_paths};
use crate::memory::RemoteMemory;
use crate::output::table::thousands;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The type whose holders to show, named as in the census (`__main__.Order`, `dict`).
    #[arg(long = "type", value_name = "TYPE")]
    pub type_name: String,
    /// Instances to trace (evenly spread over all of them); counts are scaled up.
    #[arg(long, default_value_t = 10_000)]
    pub sample: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct PathGroup {
    path: String,
    count: u64,
    steps: Vec<String>,
}

#[derive(Serialize)]
struct WhyReport {
    #[serde(rename = "type")]
    type_name: String,
    instances: u64,
    sampled: u64,
    paths: Vec<PathGroup>,
    /// Instances no path from the module globals reaches (held by running frames, threads'
    /// locals, native code).
    unreachable: u64,
    /// Sum over the instances of refcount minus references found in the heap.
    external_refs: u64,
    /// Instances with at least one such reference.
    externally_held: u64,
    graph_objects: u64,
    graph_edges: u64,
    graph_ms: f64,
}

fn step_text(step: &Step) -> String {
    match step {
        Step::Index(i) => format!("[{i}]"),
        Step::Key(k) => format!("[{}]", key_repr(k)),
        Step::Attr(a) => format!(".{a}"),
        Step::Namespace => "__dict__".into(),
        Step::Member => "<member>".into(),
        Step::Field(o) => format!("<field +{o:#x}>"),
    }
}

/// Steps with the varying part taken out: paths with the same shape are one line.
fn shape(steps: &[Step]) -> Vec<Step> {
    steps
        .iter()
        .map(|s| match s {
            Step::Index(_) => Step::Index(0),
            Step::Key(_) => Step::Key(String::new()),
            other => other.clone(),
        })
        .collect()
}

pub fn run(args: WhyArgs) -> Result<(), LeakspyError> {
    let (process, mut mem) = open_target(args.target.resolve()?)?;
    let started = Instant::now();
    let graph = build(&process, &mut mem)?;
    let interpreters = process.interpreters(&mut mem)?;
    let roots: Vec<u32> = interpreters
        .iter()
        .filter_map(|i| {
            let off = process.layout.containers.interp_modules?;
            let modules = mem.read_u64(i.addr + off as u64).ok()?;
            graph.index_of(modules)
        })
        .collect();
    let paths = shortest_paths(&graph, &roots);
    let graph_ms = started.elapsed().as_secs_f64() * 1000.0;

    let instances: Vec<u32> = (0..graph.objects.len() as u32)
        .filter(|&i| graph.types[graph.type_of[i as usize] as usize].name == args.type_name)
        .collect();
    if instances.is_empty() {
        return Err(anyhow::anyhow!(
            "no GC-tracked instance of {:?} in process {}: check the name against `leakspy snapshot` (module.qualname)",
            args.type_name,
            process.pid
        )
        .into());
    }
    let step = (instances.len() / args.sample.max(1)).max(1);
    let sampled: Vec<u32> = instances.iter().step_by(step).copied().collect();
    let scale = instances.len() as f64 / sampled.len() as f64;

    let mut groups: FxHashMap<Vec<Step>, Vec<Vec<Step>>> = FxHashMap::default();
    let mut unreachable = 0u64;
    for &i in &sampled {
        match paths.steps(&graph, &mut mem as &mut dyn RemoteMemory, &process.layout, i) {
            Some(steps) => groups.entry(shape(&steps)).or_default().push(steps),
            None => unreachable += 1,
        }
    }
    let mut path_groups: Vec<PathGroup> = groups
        .into_values()
        .map(|members| {
            let first = &members[0];
            let wildcard: Vec<bool> = (0..first.len()).map(|n| members.iter().any(|m| m[n] != first[n])).collect();
            PathGroup {
                path: render(first, &wildcard),
                count: (members.len() as f64 * scale).round() as u64,
                steps: first
                    .iter()
                    .zip(&wildcard)
                    .map(|(s, w)| if *w { "[*]".to_string() } else { step_text(s) })
                    .collect(),
            }
        })
        .collect();
    path_groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    let (external_refs, externally_held) = external(&graph, &instances);
    let report = WhyReport {
        type_name: args.type_name,
        instances: instances.len() as u64,
        sampled: sampled.len() as u64,
        paths: path_groups,
        unreachable: (unreachable as f64 * scale).round() as u64,
        external_refs,
        externally_held,
        graph_objects: graph.objects.len() as u64,
        graph_edges: graph.edges_len(),
        graph_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?);
    } else {
        print!("{}", render_report(&report));
    }
    Ok(())
}

fn external(graph: &HeapGraph, instances: &[u32]) -> (u64, u64) {
    instances.iter().fold((0, 0), |(sum, held), &i| {
        let e = graph.external_refs(i);
        (sum + e, held + u64::from(e > 0))
    })
}

fn render_report(r: &WhyReport) -> String {
    let mut out = format!(
        "{} instances of {} (traced {}); heap graph of {} objects and {} references built in {:.0} ms\n\n",
        thousands(r.instances),
        r.type_name,
        thousands(r.sampled),
        thousands(r.graph_objects),
        thousands(r.graph_edges),
        r.graph_ms
    );
    for p in &r.paths {
        out += &format!("{} of {} instances via {}\n", thousands(p.count), thousands(r.instances), p.path);
    }
    if r.unreachable > 0 {
        out += &format!(
            "{} of {} instances are not reachable from any module: held by running frames, threads' locals or native code\n",
            thousands(r.unreachable),
            thousands(r.instances)
        );
    }
    if r.externally_held > 0 {
        out += &format!(
            "{} instances have references from outside the heap ({} in all): native code (C extensions, Py_IncRef without Py_DecRef) or running frames\n",
            thousands(r.externally_held),
            thousands(r.external_refs)
        );
    }
    out
}
