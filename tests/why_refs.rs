//! `leakspy why` on references that are not plain strong fields: weak references beside
//! strong ones (weakref.ref, WeakValueDictionary, WeakSet, WeakKeyDictionary, a blinker
//! signal's weak receivers), containers with out-of-line items (deque, queue.Queue,
//! asyncio.Queue, a pandas object column's numpy array), a container leakspy cannot read
//! inside (an xml.etree Element's children), several interpreters, and the static builtin
//! types' per-interpreter dicts. Holders and retained sizes are what the
//! target computes about itself (gc.get_referents, which lists no weak referent).

mod common;

use common::*;
use serde_json::Value;

/// Each supported interpreter once: with the tests' libraries (numpy, pandas, blinker) where
/// they are installed for it, else the plain interpreter (the cases through them are then
/// left out, as the target reports).
fn targets_to_run() -> Vec<(String, Box<dyn Fn() -> Target + Send + Sync>)> {
    let libs = library_pythons(&["numpy", "pandas", "blinker"]);
    let mut out: Vec<(String, Box<dyn Fn() -> Target + Send + Sync>)> = Vec::new();
    for interp in supported_interpreters() {
        let lib = libs.iter().find(|l| {
            (l.interp.major, l.interp.minor, l.interp.chroot.is_some())
                == (interp.major, interp.minor, interp.chroot.is_some())
                && l.interp.label.starts_with(&interp.label)
        });
        match lib {
            Some(lib) => {
                let lib = lib.clone();
                out.push((lib.interp.label.clone(), Box::new(move || lib.start("weak_refs_target.py", &[]))));
            }
            None => {
                let interp = interp.clone();
                out.push((interp.label.clone(), Box::new(move || Target::start(&interp, "weak_refs_target.py", &[]))));
            }
        }
    }
    out
}

fn why_json(pid: i32, args: &[&str]) -> Result<Value, String> {
    let pid = pid.to_string();
    let mut all = vec!["why", pid.as_str(), "--json"];
    all.extend_from_slice(args);
    // LEAKSPY_TEST_WHY_MODE=paths: the same checks without retained sizes.
    if std::env::var("LEAKSPY_TEST_WHY_MODE").as_deref() == Ok("paths")
        && args.iter().any(|a| *a == "--type" || *a == "--address")
    {
        all.push("--no-retained");
    }
    let out = leakspy(&all);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
}

/// With both modes under test (LEAKSPY_TEST_WHY_MODE unset): where `why --no-retained` on
/// the same arguments differs from the full mode's `report` in paths and counts.
fn modes_differ(pid: i32, args: &[&str], report: &Value) -> Option<String> {
    if std::env::var("LEAKSPY_TEST_WHY_MODE").is_ok() {
        return None;
    }
    let mut paths_args = args.to_vec();
    paths_args.push("--no-retained");
    match why_json(pid, &paths_args) {
        Ok(paths) if without_retained(&paths) == without_retained(report) => None,
        Ok(paths) => Some(format!(
            "the modes differ on {args:?}:\nfull  {}\npaths {}",
            without_retained(report),
            without_retained(&paths)
        )),
        Err(e) => Some(format!("--no-retained {args:?}: {e}")),
    }
}

/// What differs between a case's truth and leakspy's report on it.
fn check_case(name: &str, truth: &Value, report: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let count = truth["count"].as_u64().unwrap();
    let top = &report["paths"][0];
    let holder = &top["holder"];
    let mut expect = |what: &str, got: &Value, want: &Value| {
        if got != want {
            problems.push(format!("{name}: {what} {got}, expected {want}"));
        }
    };
    expect("instances", &report["instances"], &truth["count"]);
    expect("unreachable", &report["unreachable"], &Value::from(0));
    expect("held from outside the heap", &report["externally_held"], &Value::from(0));
    expect("instances on the top path", &top["count"], &Value::from(count));
    expect("holder", &holder["address"], &truth["holder"]);
    expect("holder type", &holder["type"], &truth["holder_type"]);
    expect("weak references", &report["weak_refs"], &truth["weak_refs"]);
    if let Some(retained) = truth.get("retained_bytes").filter(|_| report["graph"]["retained"] != false) {
        expect("holder's retained bytes", &holder["retained_bytes"], retained);
    }
    if truth["weak_refs"].as_u64() > Some(0) && report["weak_paths"].as_array().is_none_or(|p| p.is_empty()) {
        problems.push(format!("{name}: weak references counted but not placed: {}", report["weak_paths"]));
    }
    problems
}

/// The cases of one target: what differs from its truth, and a line for the summary.
fn check_target(label: &str, target: &Target) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let cases = target.truth["cases"].as_object().unwrap();
    for (name, truth) in cases {
        let ty = truth["type"].as_str().unwrap();
        match why_json(target.pid, &["--type", ty]) {
            Ok(report) => {
                failures.extend(check_case(name, truth, &report).into_iter().map(|p| format!("{label} {p}")));
                failures
                    .extend(modes_differ(target.pid, &["--type", ty], &report).map(|p| format!("{label} {name}: {p}")));
            }
            Err(e) => failures.push(format!("{label} {name}: {e}")),
        }
    }
    // Children of an Element (out-of-line storage leakspy does not decode): named as held by
    // that Element, found by their addresses in its memory, not blamed on native code.
    let opaque = &target.truth["opaque"];
    match why_json(target.pid, &["--type", opaque["type"].as_str().unwrap()]) {
        Ok(report) => {
            let args = ["--type", opaque["type"].as_str().unwrap()];
            failures.extend(modes_differ(target.pid, &args, &report).map(|p| format!("{label} Element children: {p}")));
            let found = &report["opaque_holders"][0];
            if found["address"] != opaque["holder"]
                || found["type"] != opaque["holder_type"]
                || found["count"] != opaque["count"]
            {
                failures.push(format!(
                    "{label}: Element children: expected {} at {} holding {}, got {}",
                    opaque["holder_type"], opaque["holder"], opaque["count"], report["opaque_holders"]
                ));
            }
        }
        Err(e) => failures.push(format!("{label} Element children: {e}")),
    }
    // The static builtin types' namespaces are reachable from a root on every version
    // (3.12+: the interpreter's own types state), never garbage.
    let statics: Vec<&str> = target.truth["static_dicts"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let addresses = statics.join(",");
    let report = why_json(target.pid, &["--address", &addresses]);
    if let Ok(report) = &report {
        failures.extend(
            modes_differ(target.pid, &["--address", &addresses], report).map(|p| format!("{label} static dicts: {p}")),
        );
    }
    match report {
        Ok(report) if report["unreachable"] == 0 => {}
        Ok(report) => failures.push(format!(
            "{label}: static types' dicts unreachable ({} of {}): {}",
            report["unreachable"],
            statics.len(),
            report["paths"]
        )),
        Err(e) => failures.push(format!("{label} static types' dicts: {e}")),
    }
    let skipped = target.truth["skipped"].as_array().map(|s| s.len()).unwrap_or(0);
    (failures, format!("{label} ({} cases{})", cases.len(), if skipped > 0 { ", without libraries" } else { "" }))
}

#[test]
fn weak_references_and_out_of_line_containers_on_every_interpreter() {
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    // Two targets at a time, as the other graph tests run them.
    for pair in targets_to_run().chunks(2) {
        let results: Vec<(Vec<String>, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = pair
                .iter()
                .map(|(label, start)| {
                    s.spawn(move || {
                        let target = start();
                        check_target(label, &target)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a target's checks panicked")).collect()
        });
        for (f, c) in results {
            failures.extend(f);
            checked.push(c);
        }
    }
    println!("checked: {}", checked.join("; "));
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// Paths name their interpreter when there are several, and `why` without a
/// type lists each interpreter's largest retainers apart.
#[test]
fn paths_name_their_interpreter() {
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for interp in supported_interpreters().into_iter().filter(|i| i.minor >= 8) {
        let target = Target::start(&interp, "subinterp_target.py", &[]);
        let sub_type = target.truth["sub_type"].as_str().unwrap();
        let sub = target.truth["sub_id"].as_i64().unwrap();
        let expected = format!("<interpreter {sub}> sys.modules['__main__'].__dict__['keep'][*]");
        match why_json(target.pid, &["--type", sub_type]) {
            Ok(report) if report["paths"][0]["path"] == expected.as_str() => {}
            Ok(report) => failures.push(format!("{}: expected {expected}, got {}", interp.label, report["paths"])),
            Err(e) => failures.push(format!("{}: {e}", interp.label)),
        }
        let out = leakspy(&["why", &target.pid.to_string(), "--top", "3"]);
        let text = String::from_utf8_lossy(&out.stdout);
        for section in
            [format!("largest retainers in interpreter {sub} "), "largest retainers in interpreter 0 ".into()]
        {
            if !text.contains(&section) {
                failures.push(format!("{}: no section {section:?} in:\n{text}", interp.label));
            }
        }
        checked.push(interp.label.clone());
    }
    assert!(!checked.is_empty(), "no interpreter of 3.8 or later to test sub-interpreters with");
    println!("checked: {}", checked.join(", "));
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
