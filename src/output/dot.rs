//! `why --format dot`: the folded paths from the roots to the instances as a Graphviz graph
//! (objgraph's `show_backrefs`, read from outside and folded). Paths that share a beginning
//! share its nodes; each node is a container, with its type, how many objects it stands for
//! and what they retain; each edge is the Python step (`['CACHE']`, `.handlers`, `[*]`).

use crate::heap::explain::WhyReport;
use crate::text::{dot, human_bytes, terminal, thousands};
use rustc_hash::FxHashMap;
use std::fmt::Write;

/// A node of the folded graph: reached by a root and the steps taken so far.
struct Node {
    lines: Vec<String>,
    /// Instances reached through it.
    count: u64,
    target: bool,
}

/// The DOT text of a `why` report. Type names come from the target: escaped for a terminal,
/// then quoted for DOT (`text::dot`); steps and roots were escaped when they were worded.
pub fn render_dot(report: &WhyReport, max_paths: usize) -> String {
    let mut ids: FxHashMap<(String, usize), usize> = FxHashMap::default();
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges: FxHashMap<(usize, usize), (String, u64)> = FxHashMap::default();
    let what = report.type_name.as_deref().map_or_else(|| "objects".to_string(), terminal::name);
    if let Some(e) = &report.explanation {
        for p in e.paths.iter().take(max_paths) {
            let mut prefix = p.root.clone();
            let mut previous: Option<usize> = None;
            // Node n is where step n leaves from; the last step reaches the instances.
            for n in 0..=p.steps.len() {
                let key = (prefix.clone(), n);
                let id = *ids.entry(key).or_insert_with(|| {
                    let lines = match p.nodes.get(n) {
                        _ if n == p.steps.len() => vec![what.clone()],
                        Some(node) => {
                            let mut lines = vec![terminal::name(&node.type_name)];
                            if n == 0 {
                                lines.insert(0, p.root.clone());
                            }
                            let many = if node.objects > 1 {
                                format!("{} objects, ", thousands(node.objects))
                            } else {
                                String::new()
                            };
                            lines.push(format!("{many}retains {}", human_bytes(node.retained_bytes)));
                            lines
                        }
                        None => vec![if n == 0 { p.root.clone() } else { "?".into() }],
                    };
                    nodes.push(Node { lines, count: 0, target: n == p.steps.len() });
                    nodes.len() - 1
                });
                nodes[id].count += p.count;
                if let Some(from) = previous {
                    let edge = edges.entry((from, id)).or_insert_with(|| (p.steps[n - 1].clone(), 0));
                    edge.1 += p.count;
                }
                previous = Some(id);
                if let Some(step) = p.steps.get(n) {
                    prefix.push_str(step);
                    // A separator no step contains unescaped: keeps "[1]" + "[2]" apart from "[12]".
                    prefix.push('\u{0}');
                }
            }
        }
    }
    let mut out = String::from(
        "digraph why {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
    );
    if let Some(e) = &report.explanation {
        let _ = writeln!(
            out,
            "  label={};\n  labelloc=t;",
            dot::quote(&format!(
                "who holds {} {what}: {} in themselves, {} retained",
                thousands(e.instances),
                human_bytes(e.size_bytes),
                human_bytes(e.retained_bytes)
            ))
        );
    }
    for (id, node) in nodes.iter().enumerate() {
        let mut lines = node.lines.clone();
        lines.push(format!("{} instances below", thousands(node.count)));
        if node.target {
            lines.truncate(1);
            lines.push(format!("{} instances", thousands(node.count)));
        }
        let style = if node.target { ", style=filled, fillcolor=\"#fde2e1\"" } else { "" };
        let _ = writeln!(out, "  n{id} [label={}{style}];", dot::label(&lines));
    }
    if let Some(e) = report.explanation.as_ref().filter(|e| e.unreachable > 0) {
        let lines = [
            what.clone(),
            format!("{} instances reachable from no root", thousands(e.unreachable)),
            "(native code, or garbage cycles not yet collected)".to_string(),
        ];
        let _ = writeln!(out, "  unreachable [label={}, style=dashed];", dot::label(&lines));
    }
    let mut edge_list: Vec<_> = edges.into_iter().collect();
    edge_list.sort_by_key(|((a, b), _)| (*a, *b));
    for ((from, to), (step, count)) in edge_list {
        let _ = writeln!(out, "  n{from} -> n{to} [label={}];", dot::label(&[step, format!("×{}", thousands(count))]));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::explain::{Explanation, GraphSummary, PathGroup, PathNode};

    fn node(t: &str, objects: u64) -> PathNode {
        PathNode { type_name: t.into(), objects, retained_bytes: 4096 }
    }

    #[test]
    fn shared_beginnings_are_one_node_and_hostile_names_stay_in_their_labels() {
        let group = |key: &str, count| PathGroup {
            path: format!("sys.modules['__main__'].__dict__[{key}][*]"),
            count,
            steps: vec!["['__main__']".into(), ".__dict__".into(), format!("[{key}]"), "[*]".into()],
            holder: None,
            root: "sys.modules".into(),
            nodes: vec![node("dict", 1), node("module", 1), node("dict", 1), node("x\"y\\n<z>\n", 3)],
        };
        let report = WhyReport {
            type_name: Some("Ev\"il\\\n<b>".into()),
            explanation: Some(Explanation {
                instances: 300,
                sampled: 300,
                size_bytes: 1000,
                retained_bytes: 2000,
                paths: vec![group("'A'", 200), group("'B'", 100)],
                unreachable: 0,
                external_refs: 0,
                externally_held: 0,
                frame_refs: 0,
                weak_refs: 0,
                weak_paths: Vec::new(),
                weak_ref_types: Vec::new(),
                opaque_holders: Vec::new(),
            }),
            largest: Vec::new(),
            graph: GraphSummary::default(),
        };
        let text = render_dot(&report, 10);
        // sys.modules, its module, the namespace: shared; then a container and the target per key.
        assert_eq!(text.matches(" [label=").count() - text.matches(" -> ").count(), 3 + 2 * 2, "{text}");
        assert_eq!(text.matches(" -> ").count(), 2 + 2 * 2, "{text}");
        assert!(text.contains(r#"x\"y\\\\n<z>\\n"#), "{text}");
        assert!(text.contains(r#"Ev\"il\\\\\\n<b>"#), "{text}");
        assert!(text.contains("300 instances below"), "{text}");
    }
}
