//! `leakspy stacks`: a target with threads in known places (one spinning with the GIL, one
//! blocked on a lock holding a list, one in time.sleep, the main one in os.read) gets those
//! stacks, with the lines the target marks, the GIL's holder and, with --locals, the list.
//! Ground truth from the target itself (sys._current_frames(), its own source's markers).

mod common;

use common::*;
use serde_json::Value;

fn check(interp: &Interpreter) {
    let target = Target::start(interp, "stacks_target.py", &[]);
    let out = leakspy(&["stacks", &target.pid.to_string(), "--locals", "--json"]);
    assert!(out.status.success(), "{}: {}", interp.label, String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
    let stacks = report["stacks"].as_array().unwrap();
    for truth in target.truth["threads"].as_array().unwrap() {
        let name = truth["name"].as_str().unwrap();
        let ours = stacks
            .iter()
            .find(|s| s["thread_id"] == truth["ident"])
            .unwrap_or_else(|| panic!("{}: no thread {name} ({}) in {report}", interp.label, truth["ident"]));
        if !truth["native_id"].is_null() && !ours["native_thread_id"].is_null() {
            assert_eq!(ours["native_thread_id"], truth["native_id"], "{}: {name}", interp.label);
        }
        let frames = ours["frames"].as_array().unwrap();
        let functions: Vec<&str> = frames.iter().map(|f| f["function"].as_str().unwrap()).collect();
        let expected: Vec<&str> = truth["functions"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert_eq!(functions, expected, "{}: {name}'s functions, outermost first", interp.label);
        let innermost = frames.last().unwrap();
        let line = innermost["line"].as_u64();
        match truth["line"].as_u64() {
            Some(expected) => assert_eq!(line, Some(expected), "{}: {name}'s line", interp.label),
            None => {
                let lines: Vec<u64> = truth["lines"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
                assert!(
                    line.is_some_and(|l| lines.contains(&l)),
                    "{}: {name} at {line:?}, not in {lines:?}",
                    interp.label
                );
            }
        }
        assert!(innermost["file"].as_str().unwrap().ends_with("stacks_target.py"), "{}", interp.label);
        assert_eq!(ours["holds_gil"], name == "spinner", "{}: {name} and the GIL", interp.label);
        let python_name = if name == "main" { "MainThread" } else { name };
        assert_eq!(ours["python_name"], python_name, "{}: threading's name", interp.label);
        if name == "locked" {
            let held = innermost["locals"]
                .as_array()
                .and_then(|l| l.iter().find(|v| v["name"] == "held"))
                .unwrap_or_else(|| panic!("{}: no local `held` in {innermost}", interp.label));
            assert_eq!(held["type"], "list", "{}", interp.label);
            assert_eq!(held["size"], target.truth["held_size"], "{}: sys.getsizeof(held)", interp.label);
        }
    }
    println!(
        "{}: {} threads, stacks, lines, GIL holder and the held list as the target says",
        interp.label,
        stacks.len()
    );
    // The census carries the stacks too (no locals there).
    let census = snapshot_json(target.pid).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
    assert_eq!(census["stacks"].as_array().map(Vec::len), Some(stacks.len()), "{}", interp.label);
}

#[test]
fn stacks_show_each_thread_where_it_is() {
    // One at a time: each target keeps a core busy with its spinning thread.
    for interp in supported_interpreters() {
        check(&interp);
    }
    // The table, once: the GIL holder and a frame line.
    let interp = newest_host_python();
    let target = Target::start(&interp, "stacks_target.py", &[]);
    let out = leakspy(&["stacks", &target.pid.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("holds the GIL") && text.contains("stacks_target.py:"), "{text}");
}

/// py-spy where it is installed: LEAKSPY_PY_SPY, on PATH, or in the tests' virtual environments.
fn py_spy() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("LEAKSPY_PY_SPY") {
        return Some(path.into());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("py-spy"));
    let in_venvs = std::fs::read_dir(libs_root()).into_iter().flatten().flatten().map(|e| e.path().join("bin/py-spy"));
    on_path.chain(in_venvs).find(|p| p.is_file())
}

#[test]
fn stacks_agree_with_py_spy_dump() {
    let Some(py_spy) = py_spy() else {
        println!("py-spy is not installed (pip install py-spy, or LEAKSPY_PY_SPY=PATH): skipping the comparison");
        return;
    };
    for interp in supported_interpreters().into_iter().filter(|i| i.chroot.is_none()) {
        let target = Target::start(&interp, "stacks_target.py", &[]);
        let dump = std::process::Command::new(&py_spy)
            .args(["dump", "--pid", &target.pid.to_string(), "--json"])
            .output()
            .expect("run py-spy");
        let Ok(theirs) = serde_json::from_slice::<Value>(&dump.stdout) else {
            println!(
                "{}: py-spy cannot read it ({}): not compared",
                interp.label,
                String::from_utf8_lossy(&dump.stderr)
            );
            continue;
        };
        let out = leakspy(&["stacks", &target.pid.to_string(), "--json"]);
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
        let theirs = theirs.as_array().unwrap();
        assert_eq!(ours["stacks"].as_array().unwrap().len(), theirs.len(), "{}: threads", interp.label);
        for thread in theirs {
            let stack = ours["stacks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["thread_id"] == thread["thread_id"])
                .unwrap_or_else(|| panic!("{}: py-spy's thread {} not found", interp.label, thread["thread_id"]));
            let spinning = thread["thread_name"] == "spinner";
            // py-spy lists innermost first and names 3.11+ frames by qualname.
            let mut frames: Vec<(String, String, Option<u64>)> = thread["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let name = f["name"].as_str().unwrap();
                    let function = name.rsplit('.').next().unwrap_or(name).to_string();
                    (function, f["filename"].as_str().unwrap().to_string(), f["line"].as_u64())
                })
                .collect();
            frames.reverse();
            let mine: Vec<(String, String, Option<u64>)> = stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["function"].as_str().unwrap().to_string(),
                        f["file"].as_str().unwrap().to_string(),
                        f["line"].as_u64(),
                    )
                })
                .collect();
            // The spinner moves between the two reads: its innermost line may differ.
            let n = if spinning { mine.len().saturating_sub(1) } else { mine.len() };
            assert_eq!(
                mine.len(),
                frames.len(),
                "{}: {} frames: ours {mine:?}, py-spy {frames:?}",
                interp.label,
                thread["thread_name"]
            );
            assert_eq!(mine[..n], frames[..n], "{}: {}", interp.label, thread["thread_name"]);
            if thread["owns_gil"].as_bool() == Some(true) {
                assert_eq!(stack["holds_gil"], true, "{}: {}", interp.label, thread["thread_name"]);
            }
        }
        println!("{}: {} threads as py-spy dump shows them", interp.label, theirs.len());
    }
}
