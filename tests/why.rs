//! `leakspy why`: the holder of each kind of object in a target with a known graph (globals,
//! containers, a logger's buffer, a closure's cell, a class attribute, a thread's local
//! variable, a reference taken from C), on every interpreter, retained sizes and references
//! from outside the heap.

mod common;

use common::*;
use serde_json::Value;

/// In both modes (with retained sizes, and `--no-retained`): the same paths and counts, each
/// the truth's.
#[test]
fn why_names_the_real_holder_on_every_interpreter() {
    let mut failures = Vec::new();
    for interp in supported_interpreters() {
        let target = Target::start(&interp, "graph_target.py", &[]);
        for (class, expected) in target.truth["classes"].as_object().unwrap() {
            let mut reports: Vec<(&str, Value)> = Vec::new();
            for (mode, extra) in why_modes() {
                let pid = target.pid.to_string();
                let mut args = vec!["why", pid.as_str(), "--type", class, "--json"];
                args.extend(extra);
                let out = leakspy(&args);
                if !out.status.success() {
                    failures.push(format!("{} {mode} {class}: {}", interp.label, String::from_utf8_lossy(&out.stderr)));
                    continue;
                }
                let report: Value = serde_json::from_slice(&out.stdout).unwrap();
                if report["graph"]["retained"] != (mode == "full")
                    || report["graph"]["bytes_per_node"].as_f64() <= Some(0.0)
                {
                    failures.push(format!("{} {mode} {class}: graph summary {}", interp.label, report["graph"]));
                }
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
                    failures.push(format!("{} {mode} {class}: external refs {report}", interp.label));
                }
                if report["instances"] != count {
                    failures.push(format!(
                        "{} {mode} {class}: {} instances, expected {count}",
                        interp.label, report["instances"]
                    ));
                }
                if let Some(p) = problem {
                    failures.push(format!("{} {mode} {class}: {p}", interp.label));
                }
                reports.push((mode, report));
            }
            if let [(_, full), (_, paths)] = &reports[..]
                && without_retained(full) != without_retained(paths)
            {
                failures.push(format!(
                    "{} {class}: the modes differ:\nfull  {}\npaths {}",
                    interp.label,
                    without_retained(full),
                    without_retained(paths)
                ));
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

/// Without retained sizes, the text says so; and when memory would not fit the full analysis,
/// `why` leaves them out by itself and says why, on stderr and in the JSON.
#[test]
fn why_without_retained_sizes_says_so() {
    let target = Target::start(&newest_host_python(), "graph_target.py", &[]);
    let pid = target.pid.to_string();
    let out = leakspy(&["why", &pid, "--type", "__main__.Order", "--no-retained"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("retained sizes not computed (--no-retained"), "{text}");
    let out = std::process::Command::new(LEAKSPY)
        .args(["why", &pid, "--type", "__main__.Order", "--json"])
        .env("LEAKSPY_TEST_MEM_AVAILABLE", "1000000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paths and counts only"), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["graph"]["retained"], false);
    assert!(report["graph"]["retained_skipped"].as_str().unwrap_or("").contains("may need about"), "{report}");
    let out = leakspy(&["why", &pid, "--no-retained"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn why_reports_unknown_types_clearly() {
    let target = Target::start(&newest_host_python(), "graph_target.py", &[]);
    let out = leakspy(&["why", &target.pid.to_string(), "--type", "__main__.NoSuchClass"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no instance of \"__main__.NoSuchClass\""), "{err}");
}

/// The sizes of objects of every kind (containers in every layout, str of every width, ints,
/// code, frames, generators, classes, instances in every attribute layout) sum to what the
/// target's own sys.getsizeof reports, exactly.
#[test]
fn sizes_equal_the_targets_getsizeof_on_every_interpreter() {
    let mut failures = Vec::new();
    for interp in supported_interpreters() {
        let target = Target::start(&interp, "graph_target.py", &[]);
        let kinds = target.truth["sizes"].as_object().unwrap();
        let size_of = |addresses: &[&str]| -> Result<u64, String> {
            let out = leakspy(&["why", &target.pid.to_string(), "--address", &addresses.join(","), "--json"]);
            let report: Value =
                serde_json::from_slice(&out.stdout).map_err(|_| String::from_utf8_lossy(&out.stderr).to_string())?;
            report["size_bytes"].as_u64().ok_or_else(|| report.to_string())
        };
        let all: Vec<&str> =
            kinds.values().flat_map(|k| k["addresses"].as_array().unwrap()).map(|a| a.as_str().unwrap()).collect();
        let expected: u64 = kinds.values().map(|k| k["getsizeof"].as_u64().unwrap()).sum();
        if size_of(&all) == Ok(expected) {
            continue;
        }
        // Name the kinds that differ.
        for (kind, k) in kinds {
            let addresses: Vec<&str> = k["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            let got = size_of(&addresses);
            if got != Ok(k["getsizeof"].as_u64().unwrap()) {
                failures
                    .push(format!("{} {kind}: sys.getsizeof sum {}, leakspy {got:?}", interp.label, k["getsizeof"]));
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// `snapshot --all` counts every object the target can reach through gc.get_referents,
/// tracked or not, with the same sizes: exactly for the types no conservative reference can
/// add to, and at least as many for the untracked ones (leakspy also sees what code objects
/// and other untracked objects hold, which gc.get_referents does not list), and none that the
/// target does not have.
#[test]
fn snapshot_all_counts_untracked_objects_on_every_interpreter() {
    // Types with a __sizeof__ leakspy does not compute (their own C code) are left out.
    let exact = |name: &str| {
        name.starts_with("__main__.") || ["list", "set", "frozenset", "function", "module"].contains(&name)
    };
    let mut failures = Vec::new();
    for interp in supported_interpreters() {
        let target = Target::start(&interp, "graph_target.py", &[]);
        let out = leakspy(&["snapshot", &target.pid.to_string(), "--all", "--json"]);
        let census: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ours: std::collections::HashMap<&str, &Value> =
            census["types"].as_array().into_iter().flatten().map(|t| (t["type"].as_str().unwrap_or(""), t)).collect();
        for (name, row) in target.truth["census"].as_object().unwrap() {
            let (count, size, untracked) =
                (row[0].as_u64().unwrap(), row[1].as_u64().unwrap(), row[2].as_u64().unwrap());
            let get = |field: &str| ours.get(name.as_str()).and_then(|t| t[field].as_u64()).unwrap_or(0);
            let problem = if exact(name) {
                (get("count"), get("size_bytes"), get("untracked")) != (count, size, untracked)
            } else {
                // The truth's own rows (dicts, a frame, a cell) are gone when leakspy reads.
                get("count") + 40 < count || get("untracked") + 40 < untracked
            };
            if problem {
                failures.push(format!(
                    "{} {name}: target reaches {count} ({untracked} untracked, {size} bytes), leakspy {} ({} untracked, {} bytes)",
                    interp.label,
                    get("count"),
                    get("untracked"),
                    get("size_bytes")
                ));
            }
        }
        // Nor may leakspy count objects the target does not have (graph_target.py's
        // Neighbour: words inside other objects that read as one).
        for (name, row) in &ours {
            if exact(name) && !target.truth["census"].as_object().is_some_and(|c| c.contains_key(*name)) {
                failures
                    .push(format!("{} {name}: leakspy counts {} the target does not have", interp.label, row["count"]));
            }
        }
        for marker in ["float", "bytes", "int", "str"] {
            if ours.get(marker).and_then(|t| t["untracked"].as_u64()).unwrap_or(0) < 1000 {
                failures
                    .push(format!("{} {marker}: the target's 1,000+ untracked objects are not counted", interp.label));
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// The graph of a heap that threads keep changing: every `why` and `snapshot --all` must
/// succeed (no hang, no error), the stable objects counted exactly and held where they are.
#[test]
fn the_graph_survives_a_churning_target() {
    for interp in oldest_and_newest() {
        let target = Target::start(&interp, "churn_target.py", &["3"]);
        let pid = target.pid.to_string();
        let stable = target.truth["stable"].as_object().expect("stable types in truth").clone();
        for i in 0..8 {
            let out = leakspy(&["snapshot", &pid, "--all", "--json"]);
            assert!(out.status.success(), "{} --all {i}: {}", interp.label, String::from_utf8_lossy(&out.stderr));
            let census: Value = serde_json::from_slice(&out.stdout).unwrap();
            for (name, expected) in &stable {
                assert_eq!(type_count(&census, name), expected.as_u64(), "{} --all {i}: {name}", interp.label);
            }
            let out = leakspy(&["why", &pid, "--type", "__main__.LeakspyStable", "--json"]);
            assert!(out.status.success(), "{} why {i}: {}", interp.label, String::from_utf8_lossy(&out.stderr));
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["paths"][0]["path"], "sys.modules['__main__'].__dict__['STABLE'][*]", "{}", interp.label);
            assert_eq!(report["paths"][0]["count"], stable["__main__.LeakspyStable"], "{}", interp.label);
        }
    }
}

/// Targets killed at varied moments while their graph is read: every run ends with an
/// answer or one "gone" line, never a panic or a hang.
#[test]
fn target_exiting_mid_graph_is_reported_not_a_crash() {
    let interp = newest_host_python();
    for i in 0..12u64 {
        let target = Target::start(&interp, "graph_target.py", &[]);
        let run = std::process::Command::new(LEAKSPY)
            .args(["why", &target.pid.to_string(), "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(i * 4));
        drop(target);
        let out = run.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(3) | Some(8)), "run {i}: exit {code:?}: {err}");
        if code != Some(0) {
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
}
