//! `leakspy why PID --type T | --address ADDR`: who holds those objects, as paths from the
//! module globals or the threads' frames, how much they keep alive, and what nobody in the
//! heap explains. Without either: the objects that retain the most memory.

use super::{TargetArgs, open_target, retained_would_not_fit, warn_if_graph_may_not_fit};
use crate::cpython::process::{PythonProcess, retry_transient};
use crate::error::LeakspyError;
use crate::heap::explain::{Explainer, GraphSummary, Retainer, WhyReport, instances_of_type};
use crate::heap::graph::{build, shortest_paths};
use crate::heap::reach::{Query, Reach};
use crate::heap::retained::Retention;
use crate::memory::RemoteMemory;
use crate::output::dot::render_dot;
use crate::text::{human_bytes, terminal, thousands};
use std::time::Instant;

#[derive(clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub core_files: super::core::CoreFileArgs,
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
    /// Print the report as JSON (the fields are listed in the README); the same as
    /// `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// How to print the report: text, json, or dot (a Graphviz graph of the folded paths from
    /// the roots to the instances: `leakspy why PID --type T --format dot | dot -Tsvg`).
    #[arg(long, value_enum, default_value_t = WhyFormat::Text)]
    pub format: WhyFormat,
    /// Paths and counts only, no retained sizes: no dominator tree, so less memory (chosen
    /// automatically when the full analysis would not fit in the memory available).
    #[arg(long)]
    pub no_retained: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhyFormat {
    Text,
    Json,
    Dot,
}

fn parse_address(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not an address: give it as 0x7f3a5c2b1d40 or in decimal"))
}

pub fn run(args: WhyArgs) -> Result<(), LeakspyError> {
    match &args.target.which.core {
        Some(path) => {
            if args.target.children {
                return Err(LeakspyError::Usage("--children follows live processes; a core holds one".into()));
            }
            let mut opened = super::core::open_core(path, &args.core_files)?;
            explain(&args, &opened.process, &mut opened.mem)
        }
        None => {
            args.core_files.check_without_core()?;
            let (process, mut mem) = open_target(args.target.resolve()?)?;
            explain(&args, &process, &mut mem)
        }
    }
}

/// The report on `process`, read through `mem` (a live process or a core).
fn explain(args: &WhyArgs, process: &PythonProcess, mem: &mut dyn RemoteMemory) -> Result<(), LeakspyError> {
    let skipped = match args.no_retained {
        true => Some("--no-retained: paths and counts only".to_string()),
        false => retained_would_not_fit(process),
    };
    if args.no_retained && args.type_name.is_none() && args.address.is_empty() {
        return Err(anyhow::anyhow!(
            "--no-retained needs --type or --address: without them, why lists the objects that retain the most"
        )
        .into());
    }
    match &skipped {
        Some(reason) if !args.no_retained => eprintln!("leakspy: {reason}"),
        Some(_) => {}
        None => warn_if_graph_may_not_fit(process),
    }
    let format = if args.json { WhyFormat::Json } else { args.format };
    if skipped.is_some() && (args.type_name.is_some() || !args.address.is_empty()) {
        return paths_only(args, process, mem, skipped, format);
    }
    let started = Instant::now();
    let (graph, _) = retry_transient(mem.changes_under_reads(), |_| build(process, mem))?;
    // Dominators first: their working arrays are gone before the paths' are made.
    let retention = if skipped.is_some() { Retention::none() } else { Retention::of(&graph) };
    let paths = shortest_paths(&graph);
    let beside_graph = retention.peak_bytes.max(retention.heap_bytes() + paths.peak_bytes);
    let mut summary =
        GraphSummary::of(&graph, started.elapsed().as_secs_f64() * 1000.0).with_peak(&graph, beside_graph);
    summary.retained = skipped.is_none();
    summary.retained_skipped = skipped;
    let explainer = Explainer { graph: &graph, paths: &paths, retention: &retention, process };
    let report = if args.type_name.is_none() && args.address.is_empty() {
        explainer.largest(mem, args.top, summary)
    } else {
        let instances: Vec<u32> = match &args.type_name {
            Some(name) => instances_of_type(&graph, name),
            None => args.address.iter().filter_map(|&a| graph.index_of(a)).collect(),
        };
        let missing = args.address.iter().find(|&&a| graph.index_of(a).is_none());
        if instances.is_empty() || missing.is_some() {
            return Err(not_found(process, args.type_name.as_deref(), missing.copied()));
        }
        explainer.report(mem, args.type_name.clone(), &instances, args.sample, args.top, summary)
    };
    print_report(&report, format, args.paths)
}

/// Paths and counts only (`--no-retained`, or when the full analysis would not fit): the
/// references are read again as the search needs them instead of kept (`heap::reach`), a few
/// bytes a node where the graph takes tens.
fn paths_only(
    args: &WhyArgs,
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    skipped: Option<String>,
    format: WhyFormat,
) -> Result<(), LeakspyError> {
    let query = match &args.type_name {
        Some(name) => Query::Type(name),
        None => Query::Addresses(&args.address),
    };
    let started = Instant::now();
    let (mut reach, _) =
        retry_transient(mem.changes_under_reads(), |_| Reach::read(process, mem, &query, args.sample, args.top))?;
    let missing = args.address.iter().find(|&&a| !reach.is_object(a));
    if reach.instances() == 0 || missing.is_some() {
        return Err(not_found(process, args.type_name.as_deref(), missing.copied()));
    }
    let summary = reach.summary(started.elapsed().as_secs_f64() * 1000.0, skipped);
    let report = reach.report(mem, args.type_name.clone(), summary);
    print_report(&report, format, args.paths)
}

fn print_report(report: &WhyReport, format: WhyFormat, paths: usize) -> Result<(), LeakspyError> {
    match format {
        WhyFormat::Json => {
            println!("{}", terminal::json(serde_json::to_string_pretty(report).map_err(anyhow::Error::from)?))
        }
        WhyFormat::Dot => print!("{}", render_dot(report, paths)),
        WhyFormat::Text => print!("{}", render_report(report, paths)),
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

/// The text of the report. Type names are the target's, shown through `terminal::name`; the
/// paths were rendered with their names escaped already (`heap::graph::render`).
pub fn render_report(r: &WhyReport, max_paths: usize) -> String {
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
        let retained = match &g.retained_skipped {
            None => format!("{} retained (freed if they all went)", human_bytes(e.retained_bytes)),
            Some(reason) => format!("retained sizes not computed ({})", terminal::name(reason)),
        };
        out += &format!(
            "{} {what} (traced {}): {} in themselves, {retained}\n\n",
            thousands(e.instances),
            thousands(e.sampled),
            human_bytes(e.size_bytes),
        );
        for p in e.paths.iter().take(max_paths) {
            out += &format!("{} of {} via {}\n", thousands(p.count), thousands(e.instances), p.path);
            if let Some(h) = &p.holder
                && !g.retained
            {
                out += &format!("    held by {} at {}\n", terminal::name(&h.type_name), h.address);
            } else if let Some(h) = &p.holder {
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
