//! A hostile target: processes that corrupt their own objects with ctypes (as an attacker or a
//! buggy C extension could) so that a reader from outside would do unbounded work: containers
//! claiming gigabytes over memory never written, class namespaces claiming millions of
//! entries, a circular thread list, a circular frame chain, an object whose type is not a type.
//! On every interpreter, each leakspy run must finish within 10 s and 500 MB and report what it
//! could read.

mod common;

use common::*;
use leakspy::cpython::layout::{CurrentFrame, DictKeysFormat, FrameLayout, Layout};
use leakspy::cpython::process::PythonProcess;
use leakspy::memory::live::LiveProcess;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_SECONDS: f64 = 10.0;
const MAX_RSS_MB: f64 = 500.0;

/// leakspy's layout for an interpreter, from a quiet target of it.
fn layout_of(interp: &Interpreter) -> Layout {
    let target = Target::start(interp, "idle_target.py", &[]);
    let mut live = LiveProcess::new(target.pid);
    PythonProcess::inspect(target.pid, &mut live).unwrap_or_else(|e| panic!("{}: {e}", interp.label)).layout
}

/// The offsets the target needs to corrupt exactly what leakspy reads.
fn offsets(layout: &Layout) -> String {
    let mut o = json!({
        "ob_type": layout.object.ob_type,
        "ob_size": layout.containers.ob_size,
        "list_ob_item": layout.containers.list_ob_item,
        "tp_dict": layout.type_.tp_dict,
        "ma_keys": layout.dict.ma_keys,
        "dk_indices": layout.dict.dk_indices,
        "dk_nentries": layout.dict.dk_nentries,
        "tstate_next": layout.interp.tstate_next,
        "thread_id": layout.threads.thread_id,
    });
    match layout.dict.format {
        DictKeysFormat::SizeField { dk_size } => o["dk_size"] = json!(dk_size),
        DictKeysFormat::Log2 { dk_log2_index_bytes, dk_kind, .. } => {
            o["dk_log2_index_bytes"] = json!(dk_log2_index_bytes);
            o["dk_kind"] = json!(dk_kind);
        }
    }
    match &layout.frames {
        Some(FrameLayout::Objects { tstate_frame, f_back, .. }) => {
            o["tstate_frame"] = json!(tstate_frame);
            o["frame_back"] = json!(f_back);
        }
        Some(FrameLayout::Interpreter { current_frame, previous, .. }) => {
            o["frame_back"] = json!(previous);
            match current_frame {
                CurrentFrame::Direct(off) => o["current_frame"] = json!(off),
                CurrentFrame::ViaCFrame { cframe, current_frame } => {
                    o["cframe"] = json!(cframe);
                    o["cframe_current_frame"] = json!(current_frame);
                }
            }
        }
        None => {}
    }
    o.to_string()
}

/// One leakspy run, its wall time and its peak memory (from the kernel's accounting).
struct Bounded {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    seconds: f64,
    max_rss_mb: f64,
}

// The child is reaped by wait4 (which also gives its peak memory), not by std's wait.
#[allow(clippy::zombie_processes)]
fn run_bounded(args: &[&str]) -> Bounded {
    let started = Instant::now();
    let mut child =
        Command::new(LEAKSPY).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run leakspy");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; std's Child is not waited on afterwards.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Bounded {
        code,
        stdout,
        stderr,
        seconds: started.elapsed().as_secs_f64(),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Runs each of `runs` (leakspy arguments with PID in place of the target's pid) against the
/// target in `mode` on every interpreter; `check` gets each run's JSON output and the truth.
/// Checks one run: its arguments, its JSON output and the target's truth; returns problems.
type Check = dyn Fn(&[&str], &Value, &Value) -> Vec<String>;

fn hostile(mode: &str, runs: &[&[&str]], check: &Check) {
    let mut problems = Vec::new();
    for interp in supported_interpreters() {
        let offsets = offsets(&layout_of(&interp));
        let target = Target::start(&interp, "hostile_target.py", &[mode, &offsets]);
        let pid = target.pid.to_string();
        for run in runs {
            let args: Vec<&str> = run.iter().map(|a| if *a == "PID" { pid.as_str() } else { a }).collect();
            let r = run_bounded(&args);
            let what = format!("{} {mode} `{}`", interp.label, run.join(" "));
            println!("{what}: exit {:?}, {:.2} s, {:.0} MB", r.code, r.seconds, r.max_rss_mb);
            if r.seconds > MAX_SECONDS || r.max_rss_mb > MAX_RSS_MB {
                problems.push(format!("{what}: {:.1} s, {:.0} MB", r.seconds, r.max_rss_mb));
            }
            if r.code != Some(0) {
                problems.push(format!("{what}: exit {:?}: {}", r.code, r.stderr.trim_end()));
                continue;
            }
            match serde_json::from_slice::<Value>(&r.stdout) {
                Ok(out) => problems.extend(check(run, &out, &target.truth).into_iter().map(|p| format!("{what}: {p}"))),
                Err(e) => problems.push(format!("{what}: not JSON: {e}")),
            }
        }
        drop(target);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The stable objects, where the output is a census.
fn stable_exact(run: &[&str], out: &Value, truth: &Value) -> Vec<String> {
    if run[0] != "snapshot" {
        return Vec::new();
    }
    let name = "__main__.LeakspyHostileStable";
    let expected = truth["stable"][name].as_u64();
    if type_count(out, name) == expected {
        Vec::new()
    } else {
        vec![format!("{name}: {:?}, expected {expected:?}", type_count(out, name))]
    }
}

#[test]
fn containers_claiming_memory_never_written_are_not_read() {
    hostile(
        "huge_lists",
        &[
            &["why", "PID", "--top", "5", "--json"],
            &["why", "PID", "--type", "__main__.LeakspyHostileStable", "--no-retained", "--json"],
            &["snapshot", "PID", "--all", "--json"],
        ],
        &stable_exact,
    );
}

#[test]
fn class_namespaces_claiming_millions_of_entries_cost_a_few() {
    hostile(
        "fake_keys",
        &[
            &["snapshot", "PID", "--json"],
            &["why", "PID", "--top", "5", "--json"],
            &["why", "PID", "--type", "__main__.LeakspyHostileStable", "--no-retained", "--json"],
            &["snapshot", "PID", "--all", "--json"],
        ],
        &stable_exact,
    );
}

#[test]
fn a_circular_thread_list_is_read_once() {
    hostile(
        "thread_loop",
        &[
            &["snapshot", "PID", "--json"],
            &["why", "PID", "--top", "3", "--json"],
            &["why", "PID", "--type", "__main__.LeakspyHostileStable", "--no-retained", "--json"],
        ],
        &|run, out, truth| {
            let mut problems = stable_exact(run, out, truth);
            if run[0] == "snapshot"
                && out["threads"].as_array().map(Vec::len) != truth["threads"].as_u64().map(|n| n as usize)
            {
                problems.push(format!(
                    "{} threads, expected {}",
                    out["threads"].as_array().map_or(0, Vec::len),
                    truth["threads"]
                ));
            }
            problems
        },
    );
}

#[test]
fn a_circular_frame_chain_is_read_once() {
    hostile(
        "frame_loop",
        &[
            &["why", "PID", "--top", "3", "--json"],
            &["why", "PID", "--type", "__main__.LeakspyHostileStable", "--no-retained", "--json"],
            &["snapshot", "PID", "--all", "--json"],
        ],
        &|run, out, truth| {
            let mut problems = stable_exact(run, out, truth);
            let frames = &out["graph"]["frames"];
            if frames.as_u64().is_none_or(|n| n > 100) {
                problems.push(format!("{frames} frames read"));
            }
            problems
        },
    );
}

#[test]
fn an_object_whose_type_is_not_a_type_is_unreadable_not_named() {
    hostile("not_a_type", &[&["snapshot", "PID", "--json"]], &|run, out, truth| {
        let mut problems = stable_exact(run, out, truth);
        if out["unreadable_objects"] != 1 {
            problems.push(format!("unreadable_objects {}", out["unreadable_objects"]));
        }
        problems
    });
}
