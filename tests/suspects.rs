//! Leak suspects on leaks written through real libraries from PyPI (tests/requirements.txt):
//! the top suspect must be the type whose instances are the leak (the class the program wrote,
//! or the library's own type where that is what leaks), with the types that grow along with it
//! listed as its parts; closure and bound-method leaks must be named by the function, where it
//! is defined, what it captures or what it is bound to; `why` on the top suspect (read by
//! `attach --why-top 1`) must name the container that holds them. The controls (the same libraries,
//! bounded) must name nothing. `trend` over the recorded samples must lead with the same type.
//!
//! What each target leaks, and how it must be named, comes from the target itself
//! (tests/targets/library_leaks.py writes it from the objects: `__qualname__`,
//! `__code__.co_filename`, `co_firstlineno`, `co_freevars`).

mod common;

use common::*;
use serde_json::Value;

const SAMPLES: &str = "40";
const INTERVAL: &str = "0.2";
const LEAKS: &[&str] = &["orm", "signal", "hooks", "hooks_bound", "lru", "logging"];
const CONTROLS: &[&str] = &["orm_commit", "lru_bounded", "logging_flush", "signal_weak"];
const MODULES: &[&str] = &["sqlalchemy", "requests", "blinker"];

/// The oldest and the newest interpreter that have the libraries.
fn ends() -> Vec<LibraryPython> {
    let all = library_pythons(MODULES);
    match (all.first(), all.last()) {
        (Some(first), Some(last)) if all.len() > 1 => vec![first.clone(), last.clone()],
        (Some(only), _) => vec![only.clone()],
        _ => Vec::new(),
    }
}

/// A suspect as one readable block: rate, code, parts with their evidence.
fn describe(s: &Value) -> String {
    // attach gives rates per minute, trend per hour.
    let rate = s["growth_per_minute"].as_f64().or_else(|| s["growth_per_hour"].as_f64().map(|h| h / 60.0));
    let mut text = format!("{} +{:.0}/min", s["type"].as_str().unwrap_or("?"), rate.unwrap_or(0.0));
    let code = |f: &Value| {
        format!(
            " [{} {} {}:{} captures {} self {}]",
            f["kind"].as_str().unwrap_or("?"),
            f["qualname"].as_str().unwrap_or("?"),
            f["file"].as_str().unwrap_or("?"),
            f["line"],
            f.get("captures").map_or("-".into(), |c| c.to_string()),
            f.get("self_types").map_or("-".into(), |c| c.to_string()),
        )
    };
    for f in s["functions"].as_array().into_iter().flatten() {
        text.push_str(&code(f));
    }
    for p in s["parts"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n      {} {} {}{} by {}",
            p["per_instance"],
            p["type"].as_str().unwrap_or("?"),
            p["relation"].as_str().unwrap_or("?"),
            p.get("of").and_then(Value::as_str).map_or(String::new(), |o| format!(" of {o}")),
            p["evidence"].as_str().unwrap_or("?"),
        ));
        for f in p["functions"].as_array().into_iter().flatten() {
            text.push_str(&code(f));
        }
    }
    text
}

/// Where the truth's function must be named: in the suspect's own code, or in a part's.
fn named_code(top: &Value) -> Vec<&Value> {
    let own = top["functions"].as_array().into_iter().flatten();
    let parts =
        top["parts"].as_array().into_iter().flatten().flat_map(|p| p["functions"].as_array().into_iter().flatten());
    own.chain(parts).collect()
}

/// Runs one scenario: returns what was seen (printed by the caller) and the problems found.
fn check(lib: &LibraryPython, scenario: &str) -> (String, Vec<String>) {
    let target = lib.start("library_leaks.py", &[scenario]);
    let record = std::env::temp_dir().join(format!("leakspy-suspects-{}-{}.jsonl", std::process::id(), target.pid));
    let out = leakspy(&[
        "attach",
        &target.pid.to_string(),
        "--interval",
        INTERVAL,
        "--samples",
        SAMPLES,
        "--json",
        "--record",
        record.to_str().unwrap(),
        "--why-top",
        "1",
    ]);
    let what = format!("{} {scenario}", lib.interp.label);
    let mut problems = Vec::new();
    if !out.status.success() {
        let _ = std::fs::remove_file(&record);
        return (what.clone(), vec![format!("{what}: attach failed: {}", String::from_utf8_lossy(&out.stderr))]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary line");
    let truth = &target.truth;
    let suspects: Vec<Value> = summary["suspects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["metric"] == "count")
        .collect();
    let mut seen = format!("{what} (libraries {}): graph pass {}", truth["libraries"], summary["graph_pass"]);
    for s in &suspects {
        seen.push_str(&format!("\n    {}", describe(s)));
    }
    let expected: Vec<&str> = truth["leaking_types"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let Some(top) = suspects.first() else {
        if !expected.is_empty() {
            problems.push(format!("{what}: no suspect, expected {expected:?}"));
        }
        let _ = std::fs::remove_file(&record);
        return (seen, problems);
    };
    if expected.is_empty() {
        problems.push(format!("{what}: a control, but suspects were named"));
        let _ = std::fs::remove_file(&record);
        return (seen, problems);
    }
    let top_type = top["type"].as_str().unwrap_or_default();
    if !expected.contains(&top_type) {
        problems.push(format!("{what}: top suspect {top_type}, expected one of {expected:?}"));
    }
    let parts: Vec<&str> = top["parts"].as_array().into_iter().flatten().filter_map(|p| p["type"].as_str()).collect();
    for part in truth["parts"].as_array().unwrap().iter().filter_map(Value::as_str) {
        if !parts.contains(&part) {
            problems.push(format!("{what}: {part} is not among the top suspect's parts {parts:?}"));
        }
    }
    // Who holds them: the first path of `why` on the top suspect ends in the container the
    // target names as the strong holder (not a weak registry, not "native code").
    if let Some(holder) = truth["holder"].as_object() {
        let why = &summary["why"][0];
        let first = &why["paths"][0];
        seen.push_str(&format!(
            "\n    why: {} of {} via {} held by {} at {}",
            first["count"], why["instances"], first["path"], first["holder"]["type"], first["holder"]["address"]
        ));
        if first["holder"]["address"] != holder["address"] {
            problems.push(format!(
                "{what}: why names {} at {} as the holder, the target {} at {} (why: {})",
                first["holder"]["type"],
                first["holder"]["address"],
                holder["type"],
                holder["address"],
                summary.get("why_skipped_because").unwrap_or(&Value::Null)
            ));
        }
    }
    // The other types that grew (a dict per instance, the cells of a closure) are parts, not
    // suspects of their own, wherever the graph or the growth ties them.
    if scenario == "orm" && summary["graph_pass"]["ran"] != true {
        problems.push(format!("{what}: the graph pass did not run: {}", summary["graph_pass"]));
    }
    if let Some(f) = truth["function"].as_object() {
        let code = named_code(top);
        let found = code.iter().find(|c| c["qualname"] == f["qualname"]);
        match found {
            None => problems.push(format!("{what}: {} is not named among {code:?}", f["qualname"])),
            Some(c) => {
                if c["file"] != f["file"] || c["line"] != f["line"] {
                    problems.push(format!(
                        "{what}: {} at {}:{}, expected {}:{}",
                        f["qualname"], c["file"], c["line"], f["file"], f["line"]
                    ));
                }
                let captured: Vec<&Value> =
                    c["captures"].as_array().into_iter().flatten().map(|v| &v["name"]).collect();
                let expected_captures: Vec<&Value> = f["captures"].as_array().unwrap().iter().collect();
                if captured != expected_captures {
                    problems.push(format!("{what}: captures {captured:?}, expected {expected_captures:?}"));
                }
                if let Some(self_type) = f["self_type"].as_str() {
                    let bound = c["self_types"][0]["type"].as_str();
                    if bound != Some(self_type) {
                        problems.push(format!("{what}: bound to {bound:?}, expected {self_type}"));
                    }
                }
            }
        }
    }
    // trend over the same samples, without a heap graph, leads with the same type.
    let trend = leakspy(&["trend", record.to_str().unwrap(), "--json"]);
    let _ = std::fs::remove_file(&record);
    match serde_json::from_slice::<Value>(&trend.stdout) {
        Ok(report) => {
            let first = &report["runs"][0]["suspects"][0];
            seen.push_str(&format!("\n    trend: {}", describe(first)));
            if first["type"] != top["type"] {
                problems.push(format!("{what}: trend leads with {}, attach with {top_type}", first["type"]));
            }
        }
        Err(e) => {
            problems.push(format!("{what}: trend gave no JSON ({e}): {}", String::from_utf8_lossy(&trend.stderr)))
        }
    }
    (seen, problems)
}

#[test]
fn real_library_leaks_are_led_by_the_leaking_type_and_controls_stay_quiet() {
    let cases: Vec<(LibraryPython, &str)> =
        ends().into_iter().flat_map(|lib| LEAKS.iter().chain(CONTROLS).map(move |s| (lib.clone(), *s))).collect();
    let mut problems = Vec::new();
    // Two at a time: each is a target serving requests plus a sampler, mostly asleep.
    for pair in cases.chunks(2) {
        let results: Vec<(String, Vec<String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                pair.iter().map(|(lib, scenario)| scope.spawn(move || check(lib, scenario))).collect();
            handles.into_iter().map(|h| h.join().expect("scenario thread")).collect()
        });
        for (seen, found) in results {
            println!("{seen}");
            problems.extend(found);
        }
    }
    assert!(problems.is_empty(), "wrong calls:\n{}", problems.join("\n"));
}
