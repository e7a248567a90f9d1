//! Names chosen by the target to attack whoever reads leakspy's output: escape sequences
//! (window title, clear screen, OSC 52 clipboard, 8-bit C1), forged lines, bidirectional
//! overrides, zero-width characters, backslashes and shell syntax, in type, module, function,
//! file, dict key, attribute and thread names and in the command line. On every interpreter,
//! every command's output (tables, findings, `why`, the live `attach` view on a real
//! pseudo-terminal and its summary, `trend`, `diff`, JSON, errors) must carry none of them raw,
//! keep each name on its own row, show it escaped, keep it exact in the JSON, and suggest a
//! command that the shell reads back as the exact name without running anything in it.
//! Prometheus output keeps the names exact, and its reference parser must read them back.

mod common;

use common::scratch::Scratch;
use common::*;
use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What no output of leakspy may carry raw: C0 controls but the line feed (tab included: the
/// tables align with spaces), DEL and the C1 controls, bidirectional marks, embeddings,
/// overrides and isolates, zero-width characters, line and paragraph separators. Listed here
/// by hand, apart from leakspy's own list, so that a gap there is not a gap here too.
fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{61c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Fails if `bytes` hold anything a terminal would act on or that hides text.
fn assert_safe(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e})"));
    if let Some((at, c)) = text.char_indices().find(|(_, c)| forbidden(*c)) {
        let from = text[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
        panic!("{what}: raw {c:?} at byte {at}, after: {:?}", &text[from..at]);
    }
}

/// The target's own line for a type, escaped by hand: `Grow` + ESC ] 0 ; pwned BEL + shell
/// syntax + quotes + LF + U+202E + backslash, as the target script spells it.
fn grower_shown(marker: &str) -> String {
    format!(r#"__main__.Grow\x1b]0;pwned\x07$(touch {marker})`touch {marker}`'"\n\u202e\\"#)
}

/// Runs leakspy and returns its stdout, after checking that it succeeded and that neither
/// stdout nor stderr carries anything raw.
fn run_safe(what: &str, args: &[&str]) -> String {
    let out = leakspy(args);
    assert_safe(&format!("{what} stderr"), &out.stderr);
    assert_safe(&format!("{what} stdout"), &out.stdout);
    assert!(out.status.success(), "{what}: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs leakspy with stdout on a pseudo-terminal in raw mode (so that `attach` shows its live
/// view, and the bytes read are the bytes written) and stderr on a pipe; returns both and
/// whether it exited 0.
fn leakspy_on_pty(args: &[&str]) -> (Vec<u8>, Vec<u8>, bool) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: 60, ws_col: 250, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty stores two descriptors it opened in the integers passed.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened, and nothing else owns them.
    let (mut master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: termios is plain data; the calls only read and write it and the terminal's mode.
    unsafe {
        let mut mode: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut mode), 0);
        libc::cfmakeraw(&mut mode);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &mode), 0);
    }
    // The Command (and with it this process's copy of the terminal's slave side) is gone once
    // spawned: reading the master side ends when leakspy exits.
    let mut child = Command::new(LEAKSPY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start leakspy");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // Ends with EIO once no process holds the slave side; what was read is kept.
        let _ = master.read_to_end(&mut out);
        out
    });
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    let ok = child.wait().expect("wait for leakspy").success();
    (reader.join().expect("pty reader"), stderr, ok)
}

/// The rows of a snapshot table: the lines between the column header and the first blank
/// line. Each must start with its two number columns, and there must be one per type.
fn table_rows<'a>(what: &str, table: &'a str) -> Vec<&'a str> {
    let types: usize = table
        .lines()
        .next()
        .and_then(|l| l.split_once("objects in ")?.1.split_once(" types")?.0.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("{what}: no type count in the header:\n{table}"));
    let rows: Vec<&str> =
        table.lines().skip_while(|l| !l.contains("REFCOUNT SUM")).skip(1).take_while(|l| !l.is_empty()).collect();
    for row in &rows {
        let mut columns = row.split_whitespace();
        for _ in 0..2 {
            let number = columns.next().unwrap_or_default();
            assert!(
                !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == ','),
                "{what}: a row that is not a type's:\n{row:?}\nin:\n{table}"
            );
        }
    }
    assert_eq!(rows.len(), types, "{what}: one row per type:\n{table}");
    rows
}

/// The `type` label values of leakspy_objects, as prometheus_client's parser reads them. The
/// file is read without newline translation, as collectors read it: the format ends lines at
/// LF only, and a CR in a label value is part of the value (it has no escape for one).
const PROMETHEUS_TYPES: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
types = []
for family in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8", newline="").read()):
    for s in family.samples:
        if s.name == "leakspy_objects":
            types.append(s.labels["type"])
print(json.dumps(types))
"#;

/// One interpreter (number `n` of those present): every command over the hostile target.
fn check(interp: &Interpreter, n: usize, scratch: &Path) {
    let label = &interp.label;
    // Short: the command line that trend shows (cut at 200 characters) must reach the argv.
    let marker = scratch.join(format!("m{n}"));
    let marker_text = marker.display().to_string();
    let hostile_argv = format!("\x1b]0;argv\x07\n$(touch {marker_text})");
    let target = Target::start(interp, "hostile_names_target.py", &[&marker_text, &hostile_argv]);
    let truth = &target.truth;
    assert_eq!(truth["marker"], marker_text.as_str(), "{label}: truth {truth}");
    let pid = target.pid.to_string();
    let shown = |key: &str| truth[key].as_str().map(str::to_string);
    let types: Vec<&Value> = truth["types"].as_array().expect("truth types").iter().collect();
    let grower = truth["grower"].as_str().expect("grower");

    // JSON: exact names, nothing raw.
    let census: Value =
        serde_json::from_str(&run_safe(&format!("{label} snapshot --json"), &["snapshot", &pid, "--json"]))
            .expect("census JSON");
    let names: Vec<&str> =
        census["types"].as_array().expect("types").iter().filter_map(|t| t["type"].as_str()).collect();
    for t in &types {
        let name = t["name"].as_str().unwrap_or_default();
        assert!(names.contains(&name), "{label}: {name:?} not in the JSON types");
    }
    let closure =
        census["functions"].as_array().and_then(|f| f.iter().find(|f| f["qualname"] == truth["closure_qualname"]));
    assert!(
        closure.is_some_and(|f| f["file"] == truth["closure_file"] && f["closures"].as_u64() >= Some(1000)),
        "{label}: closures of the hostile function: {}",
        census["functions"]
    );
    let garbage = census["gc"][0]["garbage_types"].as_array().cloned().unwrap_or_default();
    assert!(garbage.iter().any(|g| g[0] == truth["garbage_type"]), "{label}: garbage types {garbage:?}");
    // Thread names are read where the layout records native thread ids (not on every version).
    let threads = census["threads"].as_array().cloned().unwrap_or_default();
    let native_ids = threads.iter().any(|t| t["native_thread_id"].is_u64());
    let comm = truth["thread_comm"].as_str().filter(|_| native_ids);
    if let Some(comm) = comm {
        assert!(threads.iter().any(|t| t["name"] == comm), "{label}: thread {comm:?} not in {threads:?}");
    }

    // The table: one row per type, names escaped as Python's repr() writes them.
    let table = run_safe(&format!("{label} snapshot"), &["snapshot", &pid, "--top", "100000"]);
    let rows = table_rows(&format!("{label} snapshot"), &table);
    for t in &types {
        if let Some(shown) = t["shown"].as_str() {
            assert!(rows.iter().any(|r| r.ends_with(&format!("  {shown}"))), "{label}: no row shows {shown}:\n{table}");
        }
    }
    assert!(rows.iter().any(|r| r.ends_with(&format!("  {}", grower_shown(&marker_text)))), "{label}:\n{table}");
    let findings = table.split_once("\nFindings:\n").map(|(_, f)| f).unwrap_or_default();
    let garbage_line = format!("gc.garbage holds 1 objects (1 {})", r"__main__.Title\x1b]0;pwned\x07");
    assert!(findings.contains(&garbage_line), "{label}: {findings}");
    let closures_line = format!(
        "closures of {} ({}:{})",
        shown("closure_qualname_shown").unwrap_or_default(),
        shown("closure_file_shown").unwrap_or_default(),
        truth["closure_line"]
    );
    assert!(findings.contains(&closures_line), "{label}: {closures_line} in\n{findings}");
    let tracer = format!("(function {})", shown("tracer_shown").unwrap_or_default());
    assert!(findings.contains(&tracer), "{label}: {tracer} in\n{findings}");
    if comm.is_some() {
        let thread = format!("({})", shown("thread_comm_shown").unwrap_or_default());
        assert!(findings.contains(&thread), "{label}: {thread} in\n{findings}");
    }
    for line in findings.lines().filter(|l| !l.is_empty() && !l.starts_with("note:")) {
        assert!(line.starts_with("  * "), "{label}: a findings line that is not a finding: {line:?}");
    }
    let all = run_safe(&format!("{label} snapshot --all"), &["snapshot", &pid, "--all", "--top", "100000"]);
    table_rows(&format!("{label} snapshot --all"), &all);

    // Prometheus: exact label values, read back by the reference parser.
    let prom = scratch.join(format!("p{n}.prom"));
    let prom_text = prom.display().to_string();
    run_safe(
        &format!("{label} prometheus"),
        &["snapshot", &pid, "--format", "prometheus", "--top", "100000", "-o", &prom_text],
    );
    let parsed = Command::new("python3").args(["-c", PROMETHEUS_TYPES, &prom_text]).output().expect("python3");
    assert!(
        parsed.status.success(),
        "prometheus_client rejected {prom_text}: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let labels: Vec<String> = serde_json::from_slice(&parsed.stdout).expect("parser output");
    for t in &types {
        let name = t["name"].as_str().unwrap_or_default();
        assert!(labels.iter().any(|l| l == name), "{label}: {name:?} not a type label in {prom_text}");
    }

    // why: each type by its exact name; paths escaped as Python would write them.
    for t in &types {
        let name = t["name"].as_str().unwrap_or_default();
        let Some(path) = t["path"].as_str() else { continue };
        let what = format!("{label} why --type {name:?} --json");
        let report: Value = serde_json::from_str(&run_safe(&what, &["why", &pid, "--type", name, "--json"]))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report["type"], name, "{what}");
        assert_eq!(report["paths"][0]["path"], path, "{what}: {}", report["paths"]);
    }
    for name in [truth["garbage_type"].as_str().unwrap_or_default(), grower] {
        let text = run_safe(&format!("{label} why --type {name:?}"), &["why", &pid, "--type", name]);
        assert!(text.contains("instances of __main__."), "{label}: {text}");
    }
    let frame = run_safe(&format!("{label} why FrameHeld"), &["why", &pid, "--type", "__main__.FrameHeld"]);
    let file = shown("closure_file_shown").unwrap_or_default();
    assert!(frame.contains("<frame worker() of thread ") && frame.contains(&file), "{label}: {frame}");
    run_safe(&format!("{label} why --top 5"), &["why", &pid, "--top", "5"]);

    // attach on a terminal: the live view and the summary, and its suggested command.
    let (screen, stderr, ok) = leakspy_on_pty(&["attach", &pid, "--samples", "10", "--interval", "0.2"]);
    assert_safe(&format!("{label} attach stderr"), &stderr);
    assert!(ok, "{label}: attach failed: {}", String::from_utf8_lossy(&stderr));
    let screen = String::from_utf8_lossy(&screen).replace("\x1b[H\x1b[2J", "");
    assert_safe(&format!("{label} attach on a terminal"), screen.as_bytes());
    assert!(screen.contains("Leak suspects, the leaking type first"), "{label}: {screen}");
    let command = screen
        .lines()
        .find_map(|l| l.strip_prefix("Who holds them: "))
        .unwrap_or_else(|| panic!("{label}: no suggested command in:\n{screen}"));
    let echoed = Command::new("bash").args(["-c", &format!("echo {command}")]).output().expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout),
        format!("leakspy why {pid} --type {grower}\n"),
        "{label}: the shell reads {command} as another name, on the screen:\n{screen}"
    );

    // History written by snapshot --append, then trend and diff over it.
    let history = scratch.join(format!("history-{}.jsonl", target.pid));
    let history_text = history.display().to_string();
    for _ in 0..10 {
        run_safe(&format!("{label} snapshot --append"), &["snapshot", &pid, "--append", &history_text]);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A line that is not a census, quoting hostile text back in its parse error.
    let mut lines = std::fs::read_to_string(&history).expect("history");
    lines.push_str("{\"pid\": \"\\u001b]0;x\\u0007\\u202e\"}\n");
    std::fs::write(&history, lines).expect("history");
    let trend = run_safe(&format!("{label} trend"), &["trend", &history_text]);
    let shown_grower = grower_shown(&marker_text);
    assert!(trend.contains(&format!("  ! {shown_grower}: ")), "{label}: {trend}");
    assert!(trend.contains(r"\x1b]0;argv\x07\n"), "{label}: command line in {trend}");
    let report: Value =
        serde_json::from_str(&run_safe(&format!("{label} trend --json"), &["trend", &history_text, "--json"]))
            .expect("trend JSON");
    assert_eq!(report["runs"][0]["suspects"][0]["type"], grower, "{label}: {report}");
    let crossed = leakspy(&["trend", &history_text, "--fail-if-growth", "1"]);
    assert_eq!(crossed.status.code(), Some(9), "{label}: {}", String::from_utf8_lossy(&crossed.stderr));
    assert_safe(&format!("{label} trend --fail-if-growth"), &crossed.stderr);
    assert!(String::from_utf8_lossy(&crossed.stderr).contains(&shown_grower), "{label}");
    let first = format!("{history_text}@1");
    let last = format!("{history_text}@-1");
    let diff = run_safe(&format!("{label} diff"), &["diff", &first, &last]);
    assert!(diff.lines().any(|l| l.ends_with(&format!("  {shown_grower}"))), "{label}: {diff}");
    for line in diff.lines().skip(1) {
        let numbers = line
            .split_whitespace()
            .take(4)
            .all(|n| n.trim_start_matches(['+', '-']).replace(',', "").parse::<u64>().is_ok());
        let other = line.is_empty()
            || line.ends_with(':')
            || line.contains("BEFORE")
            || line.trim_start().starts_with('(')
            || line.starts_with("note:");
        assert!(numbers || other, "{label}: a diff line that is not a row: {line:?}\n{diff}");
    }
    let changes: Value =
        serde_json::from_str(&run_safe(&format!("{label} diff --json"), &["diff", &first, &last, "--json"]))
            .expect("diff JSON");
    assert!(changes["types"].as_array().is_some_and(|t| t.iter().any(|t| t["type"] == grower)), "{label}: {changes}");

    assert!(!marker.exists(), "{label}: something ran `touch {marker_text}`");
    drop(target);
    println!("{label}: no name reached the terminal raw");
}

#[test]
fn hostile_names_reach_no_terminal_raw_on_every_interpreter() {
    let guard = Scratch::new("hostile");
    let scratch = guard.to_path_buf();
    let all = supported_interpreters();
    // Two interpreters at a time: each is a target plus leakspy, mostly waiting.
    for (k, pair) in all.chunks(2).enumerate() {
        std::thread::scope(|scope| {
            let scratch = &scratch;
            let handles: Vec<_> = pair
                .iter()
                .enumerate()
                .map(|(i, interp)| scope.spawn(move || check(interp, 2 * k + i, scratch)))
                .collect();
            for h in handles {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
    }
}

/// A process that is not Python, whose executable's path is hostile: the error names the
/// path (read from /proc/PID/maps), escaped.
#[test]
fn a_hostile_executable_path_in_an_error_is_escaped() {
    let guard = Scratch::new("hostile-exe");
    let dir = guard.to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
    let exe: PathBuf = dir.join("sl\x1b]0;pwned\x07\u{202e}eep");
    std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
    let mut child = Command::new(&exe).arg("30").spawn().expect("start the copy of sleep");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = leakspy(&["snapshot", &child.id().to_string()]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_safe("not-Python error", &out.stderr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r"sl\x1b]0;pwned\x07\u202eeep"), "{stderr}");
}
