//! History files, diff, trend and Prometheus output, against real targets and real files.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

fn temp_dir(name: &str) -> scratch::Scratch {
    scratch::Scratch::new(name)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success() || out.status.code() == Some(9), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn concurrent_appends_never_interleave() {
    let target = Target::start(&newest_host_python(), "census_target.py", &[]);
    let dir = temp_dir("concurrent");
    let history = dir.join("history.jsonl");
    let pid = target.pid.to_string();
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (history, pid) = (history.clone(), pid.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let out = leakspy(&["snapshot", &pid, "--append", history.to_str().unwrap()]);
                    assert!(out.status.success(), "{}", stderr(&out));
                    assert!(out.stdout.is_empty(), "--append alone prints nothing");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let text = std::fs::read_to_string(&history).unwrap();
    assert_eq!(text.lines().count(), 30);
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).expect("every line a whole record");
        assert_eq!(record["pid"], target.pid);
        assert!(record["process"]["start_time"].as_str().unwrap().ends_with('Z'));
        assert!(record["process"]["cmdline"].as_str().unwrap().contains("census_target.py"));
        assert!(!record["process"]["hostname"].as_str().unwrap().is_empty());
    }
}

#[test]
fn pid_file_and_match_find_the_target() {
    let target = Target::start(&newest_host_python(), "idle_target.py", &[]);
    let dir = temp_dir("pidfile");
    let pid_file = dir.join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", target.pid)).unwrap();
    let by_file = json_of(&leakspy(&["snapshot", "--pid-file", pid_file.to_str().unwrap(), "--json"]));
    assert_eq!(by_file["pid"], target.pid);
    let by_match = json_of(&leakspy(&["snapshot", "--match", "idle_target.py", "--json"]));
    assert_eq!(by_match["pid"], target.pid);
    let none = leakspy(&["snapshot", "--match", "no-such-program-4711"]);
    assert_eq!(none.status.code(), Some(3), "{}", stderr(&none));
    std::fs::write(&pid_file, "garbage").unwrap();
    let bad = leakspy(&["snapshot", "--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("does not hold a PID"), "{}", stderr(&bad));
}

fn synthetic(timestamp: &str, pid: i32, started: &str, types: &[(&str, u64, u64)]) -> Value {
    json!({
        "schema_version": 1, "pid": pid, "python_version": "3.11.7", "python_binary": "python",
        "timestamp": timestamp, "duration_ms": 1.0, "objects_total": types.iter().map(|t| t.1).sum::<u64>(),
        "immortal_total": 0, "interpreters": 1, "consistent": false, "torn_links": 0,
        "resynced_objects": 0, "broken_lists": 0, "unreadable_objects": 0, "truncated": false,
        "gc_collecting": false, "generations": [],
        "process": {"start_time": started, "cmdline": "python app.py", "hostname": "web1", "rss_bytes": 1},
        "types": types.iter().map(|(n, c, r)| json!({"type": n, "count": c, "refcount_sum": r, "immortal": 0})).collect::<Vec<_>>()
    })
}

fn write_lines(path: &Path, records: &[Value], tail: &str) {
    let mut text: String = records.iter().map(|r| format!("{r}\n")).collect();
    text.push_str(tail);
    std::fs::write(path, text).unwrap();
}

#[test]
fn diff_of_known_snapshots() {
    let dir = temp_dir("diff");
    let a = dir.join("a.json");
    let b = dir.join("b.json");
    let before =
        synthetic("2026-11-26T10:00:00.000Z", 7, "t", &[("dict", 10, 20), ("app.Order", 5, 5), ("Gone", 3, 3)]);
    let after =
        synthetic("2026-11-26T11:00:00.000Z", 7, "t", &[("dict", 12, 20), ("app.Order", 505, 600), ("New", 1, 1)]);
    std::fs::write(&a, serde_json::to_string_pretty(&before).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_string_pretty(&after).unwrap()).unwrap();
    let d = json_of(&leakspy(&["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]));
    let rows: Vec<(String, String, i64, i64)> = d["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
                t["count_change"].as_i64().unwrap(),
                t["refcount_change"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, i64, i64)> = vec![
        ("app.Order".into(), "changed".into(), 500, 595),
        ("dict".into(), "changed".into(), 2, 0),
        ("New".into(), "new".into(), 1, 1),
        ("Gone".into(), "vanished".into(), -3, -3),
    ];
    assert_eq!(rows, expected);
    assert_eq!(d["objects_total_change"], 500);
    // The same two records as lines of a history, by index and by time.
    let history = dir.join("h.jsonl");
    write_lines(&history, &[before, after], "");
    let h = history.to_str().unwrap();
    let by_index = json_of(&leakspy(&["diff", &format!("{h}@1"), &format!("{h}@-1"), "--json"]));
    assert_eq!(by_index["types"], d["types"]);
    let by_time = json_of(&leakspy(&["diff", &format!("{h}@2026-11-26T10:30:00Z"), h, "--json"]));
    assert_eq!(by_time["types"], d["types"]);
    let text = leakspy(&["diff", &format!("{h}@1"), h]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("+500") && text.contains("New types") && text.contains("Vanished types"), "{text}");
    let missing = leakspy(&["diff", &format!("{h}@5"), h]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no such record"), "{}", stderr(&missing));
}

#[test]
fn trend_skips_garbage_and_partial_lines_and_splits_restarts() {
    let dir = temp_dir("trend");
    let history = dir.join("h.jsonl");
    let mut records = Vec::new();
    // Run 1: PID 100 leaks 40 Orders an hour for 10 hours. Run 2 (a restart): flat.
    for hour in 0..10u64 {
        let ts = format!("2026-11-26T{hour:02}:00:00.000Z");
        records.push(synthetic(
            &ts,
            100,
            "2026-11-25T23:00:00Z",
            &[("app.Order", 1000 + 40 * hour + hour % 3, 1000), ("dict", 500, 900)],
        ));
    }
    for hour in 10..20u64 {
        let ts = format!("2026-11-26T{hour:02}:00:00.000Z");
        records.push(synthetic(
            &ts,
            200,
            "2026-11-26T09:30:00Z",
            &[("app.Order", 20 + hour % 2, 20), ("dict", 500, 900)],
        ));
    }
    records.insert(4, json!("garbage"));
    write_lines(&history, &records, "{\"schema_version\": 1, \"pid\": 2");
    let out = leakspy(&["trend", history.to_str().unwrap(), "--json"]);
    let report = json_of(&out);
    let warnings = stderr(&out);
    assert!(warnings.contains("line 5: not a census record"), "{warnings}");
    assert!(warnings.contains("line 22: incomplete last line"), "{warnings}");
    assert_eq!(report["skipped_lines"], 2);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0]["pid"].as_i64(), runs[0]["samples"].as_i64()), (Some(100), Some(10)));
    assert_eq!(runs[1]["restart_of"], 100);
    let leak = &runs[0]["suspects"][0];
    assert_eq!(leak["type"], "app.Order");
    assert!((leak["growth_per_hour"].as_f64().unwrap() - 40.0).abs() < 1.0, "{leak}");
    assert!((leak["growth_per_day"].as_f64().unwrap() - 960.0).abs() < 24.0, "{leak}");
    assert_eq!(runs[1]["suspects"], json!([]));
    // A window that only holds the restarted, flat run; and the cron alert threshold.
    let h = history.to_str().unwrap();
    let window = json_of(&leakspy(&["trend", h, "--since", "2026-11-26T10:00:00Z", "--json"]));
    assert_eq!(window["runs"].as_array().unwrap().len(), 1);
    let alert = leakspy(&["trend", h, "--fail-if-growth", "30"]);
    assert_eq!(alert.status.code(), Some(9), "{}", stderr(&alert));
    assert!(stderr(&alert).contains("app.Order grows by"), "{}", stderr(&alert));
    let quiet = leakspy(&["trend", h, "--fail-if-growth", "100"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    let text = String::from_utf8_lossy(&quiet.stdout).into_owned();
    assert!(text.contains("restarted (previously PID 100)") && text.contains("/hour"), "{text}");
}

#[test]
fn trend_on_recorded_real_leak_and_control() {
    let interp = newest_host_python();
    let dir = temp_dir("recorded");
    for (scenario, leaking) in [("cache", true), ("lru", false)] {
        let target = Target::start(&interp, "leak_scenarios.py", &[scenario]);
        let record = dir.join(format!("{scenario}.jsonl"));
        let out = leakspy(&[
            "attach",
            &target.pid.to_string(),
            "--interval",
            "0.2",
            "--samples",
            "30",
            "--json",
            "--record",
            record.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report = json_of(&leakspy(&["trend", record.to_str().unwrap(), "--json"]));
        let suspects = count_suspects(&report["runs"][0]["suspects"]);
        if leaking {
            assert_eq!(suspects.first().map(String::as_str), Some("__main__.CachedResponse"), "{report}");
        } else {
            assert!(suspects.is_empty(), "{scenario}: {suspects:?}");
        }
        assert_eq!(report["runs"][0]["samples"], 30);
    }
}

#[test]
fn prometheus_output_parses_with_the_reference_parser() {
    let target = Target::start(&newest_host_python(), "census_target.py", &[]);
    let dir = temp_dir("prom");
    let file = dir.join("leakspy.prom");
    let out = leakspy(&[
        "snapshot",
        &target.pid.to_string(),
        "--format",
        "prometheus",
        "--top",
        "10",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let census = json_of(&leakspy(&["snapshot", &target.pid.to_string(), "--json"]));
    let parser = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let parse = |file: &std::path::Path| -> Value {
        let parsed =
            Command::new("python3").arg("-c").arg(parser).arg(file).stderr(Stdio::inherit()).output().expect("python3");
        assert!(parsed.status.success(), "prometheus_client rejected {file:?} (run scripts/setup.sh to install it)");
        serde_json::from_slice(&parsed.stdout).unwrap()
    };
    let metrics = parse(&file);
    let objects = metrics["leakspy_objects"].as_array().unwrap();
    assert_eq!(objects.len(), 11, "top 10 types plus (other)");
    let total: f64 = objects.iter().map(|s| s[1].as_f64().unwrap()).sum();
    assert_eq!(total as u64, census["objects_total"].as_u64().unwrap());
    let plain = objects.iter().find(|s| s[0]["type"] == "__main__.LeakspyPlain").expect("own class among the top 10");
    assert_eq!(plain[1], 3000.0);
    assert_eq!(plain[0]["pid"], target.pid.to_string());
    assert!(plain[0]["process"].as_str().unwrap().contains("census_target.py"));
    assert!(objects.iter().any(|s| s[0]["type"] == "(other)"));
    assert_eq!(
        metrics["leakspy_objects_total"][0][1].as_f64().unwrap() as u64,
        census["objects_total"].as_u64().unwrap()
    );
    for name in [
        "leakspy_refcount_sum",
        "leakspy_census_duration_seconds",
        "leakspy_torn_links",
        "leakspy_process_resident_bytes",
    ] {
        assert!(metrics[name].is_array(), "{name} missing");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "written via a temporary file and renamed");
    assert!(metrics["leakspy_object_bytes"].is_null(), "sizes only come with --all");

    // With --all: sizes and retained sizes per type, which the reference parser accepts too.
    let all_file = dir.join("leakspy-all.prom");
    let pid = target.pid.to_string();
    let out = leakspy(&[
        "snapshot",
        &pid,
        "--all",
        "--format",
        "prometheus",
        "--top",
        "10",
        "-o",
        all_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = parse(&all_file);
    let bytes = metrics["leakspy_object_bytes"].as_array().expect("leakspy_object_bytes");
    assert_eq!(bytes.len(), 11, "top 10 types plus (other)");
    let retained = metrics["leakspy_retained_bytes"].as_array().expect("leakspy_retained_bytes");
    assert_eq!(retained.len(), 10, "no (other): retained sizes overlap");
    assert!(bytes.iter().all(|s| s[1].as_f64().unwrap() > 0.0));
}
