//! The census as the heap graph sees it (`snapshot --all`): every object found, whether the
//! GC tracks it or not, with sizes, references nobody in the heap explains, and the memory
//! each type keeps alive. In-process tools built on gc.get_objects() miss the untracked
//! objects, which are often most of the bytes (str, bytes, int).

use super::census::{Census, GraphTotals, TypeCount};
use super::graph::{HeapGraph, Kind, shortest_paths};
use super::retained::Retention;
use rustc_hash::FxHashMap;
use std::time::Instant;

/// Replaces the census's types with the graph's, keeping everything else it read. `started`:
/// when the graph's read began, so that its duration includes this analysis.
pub fn apply_graph(census: &mut Census, graph: &HeapGraph, started: Instant) {
    let retention = Retention::of(graph);
    let retained_by_type = retention.by_type(graph);
    let paths = shortest_paths(graph);
    let mut rows: FxHashMap<&str, TypeCount> = FxHashMap::default();
    let mut unreachable = 0;
    for i in 0..graph.len() as u32 {
        let info = graph.type_info(i);
        if info.kind == Kind::StackFrame {
            continue;
        }
        unreachable += u64::from(!paths.reached(i));
        let row = rows.entry(&info.name).or_insert_with(|| TypeCount {
            name: info.name.clone(),
            untracked: Some(0),
            size_bytes: Some(0),
            external_refs: Some(0),
            retained_bytes: Some(0),
            ..TypeCount::default()
        });
        let add = |field: &mut Option<u64>, n: u64| *field = Some(field.unwrap_or(0) + n);
        row.count += 1;
        // Mortal objects have a refcount of at least 1; 0 marks an immortal one.
        match graph.refcount(i) {
            0 => row.immortal += 1,
            n => row.refcount_sum += n,
        }
        add(&mut row.untracked, u64::from(!graph.is_tracked(i)));
        add(&mut row.size_bytes, graph.size(i));
        add(&mut row.external_refs, graph.external_refs(i));
    }
    for (t, info) in graph.types.iter().enumerate() {
        if let Some(row) = rows.get_mut(info.name.as_str()) {
            row.retained_bytes = Some(row.retained_bytes.unwrap_or(0) + retained_by_type[t]);
        }
    }
    let mut types: Vec<TypeCount> = rows.into_values().collect();
    types.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    census.graph = Some(GraphTotals {
        objects: graph.object_count(),
        untracked: graph.untracked_count(),
        references: graph.edges_len(),
        frames: graph.frames.len() as u64,
        size_bytes: types.iter().filter_map(|t| t.size_bytes).sum(),
        unreachable,
        truncated: graph.truncated,
        skipped_threads: graph.skipped_threads,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    census.types = types;
}
