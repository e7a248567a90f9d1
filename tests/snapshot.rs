//! `leakspy snapshot` against real target processes on every interpreter present, compared
//! with the census each target takes of itself.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Refcounts of types that the target's own code touches (its module dict, functions, code
/// objects, the frames and strings the census itself used) move between the target's census
/// and our read; for those a small absolute difference is allowed per type. The target's own
/// classes are left alone after the census, so their refcount sums must match exactly.
const REFCOUNT_SLACK_PER_TYPE: i64 = 64;

fn types_of(census: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    census["types"]
        .as_array()
        .expect("types list")
        .iter()
        .map(|t| {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            (t["type"].as_str().unwrap().to_string(), (n("count"), n("refcount_sum"), n("immortal")))
        })
        .collect()
}

fn truth_types(truth: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    truth["types"]
        .as_object()
        .expect("truth types")
        .iter()
        .map(|(name, t)| {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            (name.clone(), (n("count"), n("refcount_sum"), n("immortal")))
        })
        .collect()
}

/// Every difference between our census and the target's own, as readable lines.
fn differences(census: &Value, truth: &Value) -> Vec<String> {
    let ours = types_of(census);
    let theirs = truth_types(truth);
    let own: Vec<&str> = truth["own_types"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let mut problems = Vec::new();
    for name in ours.keys().chain(theirs.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (c1, r1, i1) = ours.get(name).copied().unwrap_or_default();
        let (c2, r2, i2) = theirs.get(name).copied().unwrap_or_default();
        if c1 != c2 {
            problems.push(format!("{name}: count {c1}, target says {c2}"));
        }
        if i1 != i2 {
            problems.push(format!("{name}: {i1} immortal, target says {i2}"));
        }
        let slack = if own.contains(&name.as_str()) { 0 } else { REFCOUNT_SLACK_PER_TYPE };
        if (r1 as i64 - r2 as i64).abs() > slack {
            problems.push(format!("{name}: refcount sum {r1}, target says {r2}"));
        }
    }
    if census["objects_total"] != truth["objects_total"] {
        problems.push(format!("objects_total {} vs {}", census["objects_total"], truth["objects_total"]));
    }
    if let Some(frozen) = truth["frozen"].as_u64() {
        let permanent: u64 = census["generations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["generation"] == "permanent")
            .map(|g| g["objects"].as_u64().unwrap())
            .sum();
        if permanent != frozen {
            problems.push(format!("permanent generation {permanent}, gc.get_freeze_count() {frozen}"));
        }
    }
    for own_type in &own {
        if !theirs.contains_key(*own_type) && !ours.contains_key(*own_type) {
            problems.push(format!("{own_type} is in neither census: the target did not build its heap"));
        }
    }
    problems
}

#[test]
fn census_equals_the_targets_own_on_every_interpreter() {
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for interp in supported_interpreters() {
        let mut modes: Vec<&[&str]> = vec![&[], &["--threads"]];
        if interp.minor >= 7 {
            modes.push(&["--freeze"]);
        }
        for mode in modes {
            let target = Target::start(&interp, "census_target.py", mode);
            let what = format!("{} {}", interp.label, mode.join(" "));
            match snapshot_json(target.pid) {
                Err(e) => failures.push(format!("{what}: leakspy failed: {e}")),
                Ok(census) => {
                    let problems = differences(&census, &target.truth);
                    if problems.is_empty() {
                        passed.push(format!(
                            "{what}: {} objects, {} types, {:.1} ms, torn {}",
                            census["objects_total"],
                            census["types"].as_array().unwrap().len(),
                            census["duration_ms"].as_f64().unwrap_or(0.0),
                            census["torn_links"]
                        ));
                    } else {
                        failures.push(format!("{what}:\n    {}", problems.join("\n    ")));
                    }
                }
            }
        }
    }
    println!("passed:\n  {}", passed.join("\n  "));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Every interpreter in the runtime's list is walked, not only the main one (sub-interpreters
/// can be made from Python from 3.8 on).
#[test]
fn sub_interpreters_are_walked_too() {
    let mut checked = Vec::new();
    for interp in supported_interpreters().into_iter().filter(|i| i.minor >= 8) {
        let target = Target::start(&interp, "subinterp_target.py", &[]);
        let census = snapshot_json(target.pid).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
        assert_eq!(census["interpreters"], 2, "{}", interp.label);
        let sub_type = target.truth["sub_type"].as_str().unwrap();
        assert_eq!(type_count(&census, sub_type), target.truth["sub_instances"].as_u64(), "{}", interp.label);
        let per_interpreter: std::collections::BTreeSet<i64> =
            census["generations"].as_array().unwrap().iter().map(|g| g["interpreter"].as_i64().unwrap()).collect();
        // From 3.9 each interpreter has its own GC lists; 3.8 shares one set.
        assert_eq!(per_interpreter.len(), if interp.minor >= 9 { 2 } else { 1 }, "{}", interp.label);
        checked.push(interp.label.clone());
    }
    assert!(!checked.is_empty(), "no interpreter of 3.8 or later to test sub-interpreters with");
    println!("sub-interpreters walked on: {}", checked.join(", "));
}
