//! The memory split: pymalloc's state read from outside equals what the target's own
//! `sys._debugmallocstats()` prints (arenas, and per size class pools, used and free blocks),
//! on every interpreter present; fragmentation is named on a heap that has it and not on a
//! dense one; over a series, native growth and pymalloc growth are told apart.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};

/// What `sys._debugmallocstats()` printed: per size class (block size, pools, blocks in use,
/// available blocks), and the arena and byte figures below the table.
#[derive(Debug, Default)]
struct MallocStats {
    classes: Vec<(u64, u64, u64, u64)>,
    arenas_current: u64,
    arenas_total: u64,
    allocated_bytes: u64,
    available_bytes: u64,
    unused_pools: u64,
}

fn number(text: &str) -> u64 {
    text.trim().replace(',', "").parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Reads the target's stderr up to the end of the arena section (the first `Total` line):
/// the target printed it before READY and then blocks, so it is all there.
fn read_mallocstats(target: &mut Target) -> MallocStats {
    let stderr = target.child.stderr.take().expect("the target's stderr");
    let mut stats = MallocStats::default();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_digit())) {
            stats.classes.push((number(fields[1]), number(fields[2]), number(fields[3]), number(fields[4])));
            continue;
        }
        let Some((label, value)) = line.split_once('=') else { continue };
        let label = label.trim();
        match label {
            "# arenas allocated current" => stats.arenas_current = number(value),
            "# arenas allocated total" => stats.arenas_total = number(value),
            "# bytes in allocated blocks" => stats.allocated_bytes = number(value),
            "# bytes in available blocks" => stats.available_bytes = number(value),
            "Total" => break,
            _ if label.contains("unused pools") => {
                stats.unused_pools = number(label.split_whitespace().next().unwrap_or_default())
            }
            _ => {}
        }
    }
    assert!(!stats.classes.is_empty(), "{}: no size classes in sys._debugmallocstats()", target.label);
    stats
}

fn snapshot(target: &Target) -> Value {
    snapshot_json(target.pid).unwrap_or_else(|e| panic!("{}: {e}", target.label))
}

fn kinds(value: &Value) -> Vec<String> {
    value["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

/// A Debian build stripped of .symtab does not say where 3.6-3.11 keep pymalloc's statics.
fn stripped_statics(census: &Value, interp: &Interpreter) -> bool {
    let missing = census["memory"]["pymalloc_missing"].as_str();
    if interp.minor <= 11 && missing == Some("pymalloc state not found (stripped binary)") {
        println!("{}: {}", interp.label, missing.unwrap_or_default());
        return true;
    }
    false
}

/// Checks one quiet target: our numbers must be exactly the target's.
fn check_quiet(interp: &Interpreter) {
    let mut target = Target::start(interp, "memory_target.py", &["quiet"]);
    let theirs = read_mallocstats(&mut target);
    let census = snapshot(&target);
    if stripped_statics(&census, interp) {
        return;
    }
    let ours = &census["memory"]["pymalloc"];
    assert!(ours.is_object(), "{}: no pymalloc state: {}", interp.label, census["memory"]);
    let classes: Vec<(u64, u64, u64, u64)> = ours["size_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap();
            (n("size"), n("pools"), n("used_blocks"), n("free_blocks"))
        })
        .collect();
    assert_eq!(classes, theirs.classes, "{}: size classes (size, pools, used, free)", interp.label);
    let n = |k: &str| ours[k].as_u64().unwrap();
    assert_eq!(n("arenas"), theirs.arenas_current, "{}: arenas", interp.label);
    assert_eq!(n("arenas_allocated_total"), theirs.arenas_total, "{}: arenas allocated total", interp.label);
    assert_eq!(n("used_bytes"), theirs.allocated_bytes, "{}: bytes in allocated blocks", interp.label);
    assert_eq!(n("free_block_bytes"), theirs.available_bytes, "{}: bytes in available blocks", interp.label);
    assert_eq!(n("unused_pools"), theirs.unused_pools, "{}: unused pools", interp.label);
    let memory = &census["memory"];
    assert_eq!(memory["native_bytes"]["estimate"], true);
    assert_eq!(memory["object_bytes"]["estimate"], true);
    println!(
        "{}: {} arenas, {} bytes in used blocks, {} in free blocks, {} size classes: as sys._debugmallocstats() says",
        interp.label,
        n("arenas"),
        n("used_bytes"),
        n("free_block_bytes"),
        classes.len()
    );
}

#[test]
fn pymalloc_state_equals_what_debugmallocstats_prints() {
    let all = supported_interpreters();
    for pair in all.chunks(2) {
        std::thread::scope(|scope| {
            for interp in pair {
                scope.spawn(move || check_quiet(interp));
            }
        });
    }
    // The table's line, once: the parts add up to the RSS.
    let interp = newest_host_python();
    let target = Target::start(&interp, "memory_target.py", &["quiet"]);
    let out = leakspy(&["snapshot", &target.pid.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RSS ")).unwrap_or_else(|| panic!("no RSS line in:\n{text}"));
    println!("{}: {line}", interp.label);
    assert!((line.contains(" = ") && line.contains("pymalloc free")) || line.contains("stripped binary"), "{line}");
}

fn check_fragmentation(interp: &Interpreter) {
    for (mode, fragmented) in [("fragmented", true), ("dense", false)] {
        let mut target = Target::start(interp, "memory_target.py", &[mode]);
        let theirs = read_mallocstats(&mut target);
        let census = snapshot(&target);
        let found = kinds(&census);
        println!("{} {mode}: findings {found:?}", interp.label);
        if stripped_statics(&census, interp) {
            assert!(!found.contains(&"fragmentation".to_string()), "{}: nothing to judge by", interp.label);
            continue;
        }
        assert_eq!(census["memory"]["pymalloc"]["arenas"].as_u64(), Some(theirs.arenas_current), "{}", interp.label);
        assert_eq!(found.contains(&"fragmentation".to_string()), fragmented, "{} {mode}: {found:?}", interp.label);
        if fragmented {
            let message = census["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["kind"] == "fragmentation")
                .and_then(|f| f["message"].as_str())
                .unwrap_or_default();
            println!("  {message}");
            assert!(message.contains("it will be reused, not returned"), "{message}");
        }
    }
}

#[test]
fn fragmentation_is_named_and_a_dense_heap_is_not() {
    let all = supported_interpreters();
    for pair in all.chunks(2) {
        std::thread::scope(|scope| {
            for interp in pair {
                scope.spawn(move || check_fragmentation(interp));
            }
        });
    }
}

/// The summary of `attach` over a target, with its findings.
fn attach_findings(target: &Target) -> Value {
    let out = leakspy(&["attach", &target.pid.to_string(), "--interval", "0.25", "--samples", "14", "--json"]);
    assert!(out.status.success(), "{}: {}", target.label, String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: {e}", target.label))
}

#[test]
fn native_growth_and_pymalloc_growth_are_told_apart() {
    let cases: Vec<(Interpreter, &str, &str, &str)> = oldest_and_newest()
        .into_iter()
        .flat_map(|interp| {
            [
                (interp.clone(), "findings_target.py", "native", "native_memory"),
                (interp, "memory_target.py", "leak", "pymalloc_growth"),
            ]
        })
        .collect();
    for pair in cases.chunks(2) {
        std::thread::scope(|scope| {
            for (interp, script, mode, kind) in pair {
                scope.spawn(move || {
                    let target = Target::start(interp, script, &[mode]);
                    let summary = attach_findings(&target);
                    let found = kinds(&summary);
                    println!("{} {mode}: findings {found:?}", interp.label);
                    let message = summary["findings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|f| f["kind"] == *kind)
                        .and_then(|f| f["message"].as_str())
                        .unwrap_or_else(|| {
                            panic!("{} {mode}: no {kind} finding: {}", interp.label, summary["findings"])
                        });
                    println!("  {message}");
                    let other = if *kind == "native_memory" { "pymalloc_growth" } else { "native_memory" };
                    assert!(!found.contains(&other.to_string()), "{} {mode}: {found:?}", interp.label);
                    if *kind == "native_memory" {
                        assert!(message.contains("pymalloc's arenas stayed at"), "{message}");
                    }
                });
            }
        });
    }
}
