//! `leakspy why`: the holder of each kind of object in a target with a known graph (globals,
//! containers, a logger's buffer, a closure's cell, a class attribute, a thread's local
//! variable, a reference taken from C), on every interpreter, retained sizes and references
//! from outside the heap.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn why_names_the_real_holder_on_every_interpreter() {
    let mut failures = Vec::new();
    for interp in supported_interpreters() {
        let target = Target::start(&interp, "graph_target.py", &[]);
        for (class, expected) in target.truth["classes"].as_object().unwrap() {
            let out = leakspy(&["why", &target.pid.to_string(), "--type", class, "--json"]);
            if !out.status.success() {
                failures.push(format!("{} {class}: {}", interp.label, String::from_utf8_lossy(&out.stderr)));
                continue;
            }
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            let count = expected["count"].as_u64().unwrap();
            let problem = match expected["path"].as_str() {
                Some(path) => {
                    let top = &report["paths"][0];
                    (top["path"] != path || top["count"] != count || report["unreachable"] != 0)
                        .then(|| format!("expected all {count} via {path}, got {}", report["paths"]))
                }
                None => (report["unreachable"] != count || report["paths"] != serde_json::json!([]))
                    .then(|| format!("expected {count} unreachable, got {report}")),
            };
            if let Some(external) = expected["external_refs"].as_u64()
                && (report["external_refs"] != external || report["externally_held"] != count)
            {
                failures.push(format!("{} {class}: external refs {report}", interp.label));
            }
            if report["instances"] != count {
                failures.push(format!("{} {class}: {} instances, expected {count}", interp.label, report["instances"]));
            }
            if let Some(p) = problem {
                failures.push(format!("{} {class}: {p}", interp.label));
            }
        }
        // A list that alone holds 100 bytes objects retains exactly its size and theirs.
        let blobs = &target.truth["blobs"];
        let out = leakspy(&["why", &target.pid.to_string(), "--address", blobs["address"].as_str().unwrap(), "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if report["retained_bytes"] != blobs["retained_bytes"] || report["type"] != "list" {
            failures
                .push(format!("{} BLOBS: expected retained {}, got {report}", interp.label, blobs["retained_bytes"]));
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn why_reports_unknown_types_clearly() {
    let target = Target::start(&newest_host_python(), "graph_target.py", &[]);
    let out = leakspy(&["why", &target.pid.to_string(), "--type", "__main__.NoSuchClass"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no instance of \"__main__.NoSuchClass\""), "{err}");
}
