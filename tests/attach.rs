//! `leakspy attach`: real targets with one known leak (or none) under plenty of churn; the
//! JSON Lines summary must name the leaking type first, and name nothing for the controls.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Samples per scenario: 0.2 s apart, so about 8 s of a target's life.
const SAMPLES: &str = "40";
const INTERVAL: &str = "0.2";

const LEAKS: &[&str] = &["cycles", "cache", "files", "closures", "del_cycles"];
const CONTROLS: &[&str] = &["churn", "lru", "sawtooth"];

fn attach_json(pid: i32, extra: &[&str]) -> (Vec<Value>, Value) {
    let pid = pid.to_string();
    let mut args = vec!["attach", pid.as_str(), "--interval", INTERVAL, "--samples", SAMPLES, "--json"];
    args.extend_from_slice(extra);
    let out = leakspy(&args);
    assert!(out.status.success(), "attach failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (summary, samples) = lines.split_last().expect("at least a summary line");
    (samples.to_vec(), summary.clone())
}

/// Runs one scenario and returns a line describing the call, and whether it was right.
fn check_scenario(interp: &Interpreter, scenario: &str) -> (String, bool) {
    let target = Target::start(interp, "leak_scenarios.py", &[scenario]);
    let (samples, summary) = attach_json(target.pid, &[]);
    let what = format!("{} {scenario}", interp.label);
    // The JSON Lines contract: one census per line with the snapshot fields.
    assert_eq!(samples.len(), 40, "{what}");
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s["sample"], i as u64 + 1, "{what}");
        assert!(s["types"].as_array().is_some_and(|t| !t.is_empty()), "{what}");
        assert_eq!(s["pid"], target.pid, "{what}");
    }
    assert_eq!(summary["summary"], true, "{what}");
    assert_eq!(summary["samples"], 40, "{what}");
    let suspects = count_suspects(&summary["suspects"]);
    let expected: Vec<&str> =
        target.truth["leaking_types"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let ok = match suspects.first() {
        None => expected.is_empty(),
        Some(top) => expected.contains(&top.as_str()),
    };
    if let Some(top) = summary["suspects"].as_array().unwrap().first() {
        assert!(top["growth_per_minute"].as_f64().unwrap() > 0.0, "{what}");
        assert!(top["confidence"].as_f64().unwrap() > 0.9, "{what}");
        assert!(top["added"].as_i64().unwrap() > 0, "{what}");
    }
    (format!("{what}: suspects {suspects:?}, expected one of {expected:?}"), ok)
}

#[test]
fn leaks_are_named_and_controls_are_not() {
    let cases: Vec<(Interpreter, &str)> = oldest_and_newest()
        .into_iter()
        .flat_map(|interp| LEAKS.iter().chain(CONTROLS).map(move |s| (interp.clone(), *s)))
        .collect();
    let mut failures = Vec::new();
    // Two scenarios at a time (each is a target plus a sampler, mostly asleep).
    for pair in cases.chunks(2) {
        let results: Vec<(String, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                pair.iter().map(|(interp, scenario)| scope.spawn(move || check_scenario(interp, scenario))).collect();
            handles.into_iter().map(|h| h.join().expect("scenario thread")).collect()
        });
        for (line, ok) in results {
            println!("{line}");
            if !ok {
                failures.push(line);
            }
        }
    }
    assert!(failures.is_empty(), "wrong calls:\n{}", failures.join("\n"));
}

#[test]
fn record_file_holds_every_sample_and_the_target_exiting_ends_sampling() {
    let interp = supported_interpreters().pop().unwrap();
    let target = Target::start(&interp, "leak_scenarios.py", &["cache"]);
    let dir = std::env::temp_dir().join(format!("leakspy-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("series.jsonl");
    let pid = target.pid;
    // Kill the target while attach runs: attach must end by itself, exit 0, and keep the
    // samples it took.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(target);
    });
    let out = leakspy(&[
        "attach",
        &pid.to_string(),
        "--interval",
        "0.1",
        "--duration",
        "60s",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    killer.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ended_because"], "target exited");
    let recorded: Vec<Value> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(recorded.len() >= 5, "{} samples recorded", recorded.len());
    assert_eq!(recorded.len() as u64, summary["samples"].as_u64().unwrap());
    assert!(recorded.iter().all(|r| r["schema_version"] == 1 && r["types"].is_array()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The live view under a real terminal (tmux): redrawn in place, and Ctrl-C prints the
/// summary and exits 0.
#[test]
fn live_view_on_a_terminal_and_ctrl_c() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test: run scripts/setup.sh");
    }
    let interp = supported_interpreters().pop().unwrap();
    let target = Target::start(&interp, "leak_scenarios.py", &["cache"]);
    let session = format!("leakspy-live-{}", std::process::id());
    let command = format!("{LEAKSPY} attach {} --interval 0.2; echo LEAKSPY_EXIT=$?; sleep 30", target.pid);
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    let started = tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "50", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    std::thread::sleep(Duration::from_secs(5));
    let during = screen();
    tmux(&["send-keys", "-t", &session, "C-c"]);
    std::thread::sleep(Duration::from_secs(1));
    let after = screen();
    tmux(&["kill-session", "-t", &session]);
    assert!(during.contains("leakspy  PID") && during.contains("REFCOUNT SUM"), "screen:\n{during}");
    assert_eq!(during.matches("leakspy  PID").count(), 1, "redrawn in place, not scrolled:\n{during}");
    assert!(during.contains("__main__.CachedResponse"), "screen:\n{during}");
    assert!(after.contains("Sampling ended (interrupted)"), "screen:\n{after}");
    assert!(after.contains("CachedResponse"), "summary names the suspect:\n{after}");
    let why = format!("Who holds them: leakspy why {} --type __main__.CachedResponse", target.pid);
    assert!(after.contains(&why), "summary names the next command:\n{after}");
    assert!(after.contains("LEAKSPY_EXIT=0"), "screen:\n{after}");
}

/// A process that execs a new program under its PID (a server reloading itself) is not the
/// one attach was sampling: sampling ends there, with a summary, instead of following stale
/// addresses or merging two programs into one series.
#[test]
fn a_target_that_execs_ends_sampling_as_replaced() {
    for interp in oldest_and_newest() {
        let target = Target::start(&interp, "exec_target.py", &["1.5"]);
        let out = leakspy(&["attach", &target.pid.to_string(), "--interval", "0.1", "--samples", "100", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}", interp.label, String::from_utf8_lossy(&out.stderr));
        let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let ended = summary["ended_because"].as_str().unwrap_or_default();
        assert!(ended.starts_with("target replaced"), "{}: ended because {ended}", interp.label);
        let samples = summary["samples"].as_u64().unwrap();
        assert!((5..40).contains(&samples), "{}: {samples} samples", interp.label);
        assert_eq!(summary["skipped"], 0, "{}", interp.label);
    }
}
