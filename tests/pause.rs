//! `snapshot --pause`: a consistent census, and a target that is never left stopped.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).unwrap_or('?')
}

/// Total CPU ticks the process has used: it grows only while the process runs.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn newest() -> Interpreter {
    supported_interpreters().pop().unwrap()
}

/// The census of a paused target says so, and the target runs again after each pause (the
/// busy-target tests check paused censuses for exactness on every interpreter).
#[test]
fn a_paused_target_runs_again_and_an_unpaused_census_says_it_was_not() {
    let target = Target::start(&newest(), "churn_target.py", &["3"]);
    for _ in 0..3 {
        let out = leakspy(&["snapshot", &target.pid.to_string(), "--pause", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let census: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(census["consistent"], true);
        assert!(census["paused_ms"].as_f64().unwrap() > 0.0);
        assert!(matches!(state(target.pid), 'R' | 'S'), "running again after the pause");
    }
    let unpaused = snapshot_json(target.pid).unwrap();
    assert_eq!(unpaused["consistent"], false);
    assert!(unpaused.get("paused_ms").is_none());
}

#[test]
fn an_already_stopped_target_stays_stopped() {
    let target = Target::start(&newest(), "idle_target.py", &[]);
    let pid = target.pid.to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(target.pid), 'T');
    let out = leakspy(&["snapshot", &pid, "--pause", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(target.pid), 'T', "leakspy must not resume a process the user stopped");
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
}

#[test]
fn killing_leakspy_mid_pause_leaves_the_target_running() {
    let target = Target::start(&newest(), "churn_target.py", &["2"]);
    let mut run = Command::new(LEAKSPY)
        .args(["snapshot", &target.pid.to_string(), "--pause", "--json"])
        .env("LEAKSPY_TEST_HOLD_PAUSE_MS", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until every thread of the target is held in a tracing stop (they are stopped one
    // after the other).
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{}/task", target.pid)).into_iter().flatten().flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('t'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !all_stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(all_stopped(), "the target should be paused by now");
    let before = cpu_ticks(target.pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu_ticks(target.pid), before, "paused means not running");
    run.kill().unwrap();
    run.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after_kill = cpu_ticks(target.pid);
    std::thread::sleep(Duration::from_millis(500));
    assert!(matches!(state(target.pid), 'R' | 'S'), "state {}", state(target.pid));
    assert!(cpu_ticks(target.pid) > after_kill, "the target runs again after leakspy died");
}

/// A pause costs what the target wrote, not the size of its mappings: 300 idle threads'
/// stacks (2.4 GB reserved) or an untouched 4 GiB reservation are not copied.
#[test]
fn a_pause_copies_what_the_target_wrote_not_what_it_reserved() {
    let mut problems = Vec::new();
    for interp in supported_interpreters() {
        for mode in ["threads", "reservation"] {
            let target = Target::start(&interp, "pause_target.py", &[mode]);
            let started = Instant::now();
            let out = leakspy(&["snapshot", &target.pid.to_string(), "--pause", "--json"]);
            let seconds = started.elapsed().as_secs_f64();
            let what = format!("{} {mode}", interp.label);
            if !out.status.success() {
                problems.push(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)));
                continue;
            }
            let census: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let (paused_ms, copied) = (census["paused_ms"].as_f64().unwrap(), census["paused_bytes"].as_u64().unwrap());
            println!("{what}: paused {paused_ms:.1} ms, copied {} MB, {seconds:.2} s", copied >> 20);
            if copied > 200 << 20 || paused_ms > 2000.0 || seconds > 10.0 {
                problems.push(format!("{what}: paused {paused_ms:.0} ms, copied {copied} bytes, {seconds:.1} s"));
            }
            let name = "__main__.LeakspyPauseStable";
            if type_count(&census, name) != target.truth["stable"][name].as_u64() || census["consistent"] != true {
                problems.push(format!(
                    "{what}: {name} {:?}, consistent {}",
                    type_count(&census, name),
                    census["consistent"]
                ));
            }
            if !matches!(state(target.pid), 'R' | 'S') {
                problems.push(format!("{what}: left in state {}", state(target.pid)));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
