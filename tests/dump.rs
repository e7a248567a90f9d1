//! `leakspy dump`: a memory image that gdb and readelf open as a core, carrying what leakspy
//! needs to read it later; a target never left stopped, and never a partial FILE.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NT_LEAKSPY: u32 = 0x4c53_0001;

fn scratch(name: &str) -> scratch::Scratch {
    scratch::Scratch::new(&format!("dump-{name}"))
}

fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).unwrap_or('?')
}

/// Lets a census target (blocked reading stdin) go, and says whether it then exits cleanly:
/// proof that it runs and answers.
fn answers(target: &mut Target) -> bool {
    let Some(mut stdin) = target.child.stdin.take() else { return false };
    if stdin.write_all(b"x").is_err() {
        return false;
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = target.child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The program headers and notes of an ELF core, as (type, vaddr, filesz) and (owner, type).
struct Core {
    loads: Vec<(u64, u64)>,
    notes: Vec<(String, u32)>,
    leakspy: Option<Value>,
}

fn parse_core(bytes: &[u8]) -> Result<Core, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    if elf.header.e_type != goblin::elf::header::ET_CORE || !elf.is_64 {
        return Err(format!("not a 64-bit core: type {}", elf.header.e_type));
    }
    let loads = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|p| (p.p_vaddr, p.p_filesz))
        .collect();
    let mut notes = Vec::new();
    let mut leakspy = None;
    for note in elf.iter_note_headers(bytes).ok_or("no notes")? {
        let note = note.map_err(|e| e.to_string())?;
        if note.name == "LEAKSPY" && note.n_type == NT_LEAKSPY {
            leakspy = Some(serde_json::from_slice(note.desc).map_err(|e| e.to_string())?);
        }
        notes.push((note.name.to_string(), note.n_type));
    }
    Ok(Core { loads, notes, leakspy })
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run a tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A symbol's address in a live process, found without leakspy: its value in the file's
/// symbol tables (readelf) plus where the file is loaded (/proc/PID/maps and the file's
/// first PT_LOAD).
fn live_symbol(pid: i32, binary: &str, name: &str) -> Option<u64> {
    let (_, syms, _) = run(Command::new("readelf").args(["-Ws", binary]));
    let value = syms.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 8 && f[7].split('@').next() == Some(name)).then(|| u64::from_str_radix(f[1], 16).ok())?
    })?;
    let (_, headers, _) = run(Command::new("readelf").args(["-Wl", binary]));
    let first_load = headers.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.first() == Some(&"LOAD")).then(|| {
            let offset = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).ok()?;
            let vaddr = u64::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            Some(vaddr.wrapping_sub(offset))
        })?
    })?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let start = maps.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 6 && f[5] == binary && u64::from_str_radix(f[2], 16).ok() == Some(0))
            .then(|| u64::from_str_radix(f[0].split('-').next()?, 16).ok())?
    })?;
    Some(start.wrapping_sub(first_load & !0xfff).wrapping_add(value))
}

/// Checks the image of one blocked target; the problems found.
fn check_dump(interp: &Interpreter) -> Vec<String> {
    let mut problems = Vec::new();
    let what = interp.label.clone();
    let dir = scratch(&format!("valid-{}", what.replace(['/', ' '], "_")));
    let mut target = Target::start(interp, "census_target.py", &[]);
    let pid = target.pid.to_string();
    let plain = dir.join("plain.core");
    let packed = dir.join("image.zst");
    let out = leakspy(&["dump", &pid, "-o", plain.to_str().unwrap(), "--no-compress", "--json"]);
    if !out.status.success() {
        return vec![format!("{what}: dump --no-compress failed: {}", String::from_utf8_lossy(&out.stderr))];
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let out = leakspy(&["dump", &pid, "-o", packed.to_str().unwrap()]);
    if !out.status.success() {
        return vec![format!("{what}: dump failed: {}", String::from_utf8_lossy(&out.stderr))];
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !(stderr.contains("threads stopped") && stderr.contains("for an RSS of") && stderr.lines().count() == 1) {
        problems.push(format!("{what}: the report on stderr is {stderr:?}"));
    }
    for field in ["image_bytes", "core_bytes", "rss_bytes", "paused_ms", "copied_bytes", "write_ms", "segments"] {
        if !report[field].is_number() {
            problems.push(format!("{what}: --json lacks {field}: {report}"));
        }
    }
    println!(
        "{what}: image {} MB, RSS {} MB, paused {:.1} ms, copied {} MB, written in {:.0} ms, {} segments",
        report["image_bytes"].as_u64().unwrap_or(0) >> 20,
        report["rss_bytes"].as_u64().unwrap_or(0) >> 20,
        report["paused_ms"].as_f64().unwrap_or(0.0),
        report["copied_bytes"].as_u64().unwrap_or(0) >> 20,
        report["write_ms"].as_f64().unwrap_or(0.0),
        report["segments"],
    );

    // readelf lists the notes and the segments.
    let (ok, notes, err) = run(Command::new("readelf").arg("-n").arg(&plain));
    for expected in ["NT_PRSTATUS", "NT_PRPSINFO", "NT_AUXV", "NT_FILE", "LEAKSPY"] {
        if !ok || !notes.contains(expected) {
            problems.push(format!("{what}: readelf -n does not list {expected}: {err}"));
        }
    }
    let (ok, headers, err) = run(Command::new("readelf").arg("-lW").arg(&plain));
    if !ok || !headers.contains("CORE (Core file)") || headers.matches(" LOAD ").count() < 3 {
        problems.push(format!("{what}: readelf -l: {err}{}", &headers[..headers.len().min(400)]));
    }
    // gdb opens the plain form.
    let (ok, out, err) = run(Command::new("gdb").args(["-nx", "-batch", "-ex", "info threads", "-c"]).arg(&plain));
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            (l.contains("error") || l.contains("not a core") || l.contains("not in executable format"))
                && !l.contains("during file-backed mapping note processing")
        })
        .collect();
    if !ok || !complaints.is_empty() || !out.contains("LWP") {
        problems.push(format!("{what}: gdb -c: {complaints:?} {out}"));
    }
    // zstd -d of the image is a core of the same structure as the plain form.
    let unpacked = dir.join("unpacked.core");
    let (ok, _, err) = run(Command::new("zstd").args(["-q", "-d", "-f"]).arg(&packed).arg("-o").arg(&unpacked));
    if !ok {
        problems.push(format!("{what}: zstd -d: {err}"));
    }
    let (a, b) = (std::fs::read(&plain).unwrap_or_default(), std::fs::read(&unpacked).unwrap_or_default());
    match (parse_core(&a), parse_core(&b)) {
        (Ok(a), Ok(b)) => {
            // Two dumps, one after the other: the same notes and the same identity, the same
            // memory within a few pages (a page the target's allocator touched meanwhile).
            let covered = |c: &Core| c.loads.iter().map(|l| l.1).sum::<u64>() as f64;
            let same_note = |k: &str| a.leakspy.as_ref().map(|n| &n[k]) == b.leakspy.as_ref().map(|n| &n[k]);
            let close = |x: f64, y: f64| (x - y).abs() <= 0.05 * x.max(y) + 8.0;
            if a.notes != b.notes
                || !["pid", "start_time_ticks", "binary", "binary_build_id", "symbols", "load_bias"]
                    .iter()
                    .all(|k| same_note(k))
                || !close(a.loads.len() as f64, b.loads.len() as f64)
                || !close(covered(&a), covered(&b))
            {
                problems.push(format!(
                    "{what}: the plain and the compressed image differ in structure: notes {:?} vs {:?}, {} vs {} segments",
                    a.notes,
                    b.notes,
                    a.loads.len(),
                    b.loads.len()
                ));
            }
            problems.extend(check_note(&what, target.pid, &b, interp.chroot.as_deref()));
        }
        (a, b) => problems.push(format!("{what}: not ELF cores: {:?} / {:?}", a.err(), b.err())),
    }
    if !matches!(state(target.pid), 'S' | 'R') || !answers(&mut target) {
        problems.push(format!("{what}: the target does not run on after the dumps"));
    }
    problems
}

/// The leakspy note has every field, the target's identity, and symbol addresses equal to
/// those of the live process (found without leakspy) and inside the image.
fn check_note(what: &str, pid: i32, core: &Core, chroot: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(note) = &core.leakspy else { return vec![format!("{what}: no LEAKSPY note")] };
    let fields = [
        ("format", Value::is_u64 as fn(&Value) -> bool),
        ("pid", Value::is_i64),
        ("start_time_ticks", Value::is_u64),
        ("exe", Value::is_string),
        ("cmdline", Value::is_array),
        ("host", Value::is_string),
        ("dumped_at_unix", Value::is_f64),
        ("python_version", Value::is_string),
        ("binary", Value::is_string),
        ("load_bias", Value::is_u64),
        ("symbols", Value::is_object),
        ("rss_bytes", Value::is_u64),
        ("writable_bytes", Value::is_u64),
        ("paused_ms", Value::is_f64),
        ("copied_bytes", Value::is_u64),
        ("threads", Value::is_u64),
    ];
    for (field, ok) in fields {
        if !ok(&note[field]) {
            problems.push(format!("{what}: note field {field} is {}", note[field]));
        }
    }
    if note["format"] != 1
        || note["pid"] != pid
        || !(note["binary_build_id"].is_string() || note["binary_build_id"].is_null())
    {
        problems.push(format!("{what}: note {note}"));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: Option<u64> = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(19)?.parse().ok());
    if note["start_time_ticks"].as_u64() != ticks {
        problems.push(format!("{what}: start_time_ticks {} vs /proc {ticks:?}", note["start_time_ticks"]));
    }
    // As the target sees it: inside its chroot, where there is one.
    let binary = note["binary"].as_str().unwrap_or_default();
    if !binary.starts_with('/') || chroot.is_some_and(|root| binary.starts_with(&*root.to_string_lossy())) {
        problems.push(format!("{what}: the binary {binary:?} is not named as the target sees it"));
    }
    let binary = match chroot {
        Some(root) => format!("{}{binary}", root.display()),
        None => binary.to_string(),
    };
    let binary = binary.as_str();
    let symbols = note["symbols"].as_object().cloned().unwrap_or_default();
    let anchor = if symbols.contains_key("_PyRuntime") { "_PyRuntime" } else { "interp_head" };
    let mut checked = 0;
    for name in [anchor, "Py_Version"] {
        let Some(in_note) = symbols.get(name).and_then(Value::as_u64) else {
            if name == anchor {
                problems.push(format!("{what}: the note has no {anchor}: {symbols:?}"));
            }
            continue;
        };
        match live_symbol(pid, binary, name) {
            Some(live) if live == in_note => checked += 1,
            live => problems.push(format!("{what}: {name} at {in_note:#x} in the note, {live:x?} in the live process")),
        }
        if !core.loads.iter().any(|&(vaddr, size)| (vaddr..vaddr + size).contains(&in_note)) {
            problems.push(format!("{what}: {name} ({in_note:#x}) is in no segment of the image"));
        }
    }
    if checked == 0 {
        problems.push(format!("{what}: no symbol of the note could be checked"));
    }
    problems
}

#[test]
fn every_interpreter_dumps_a_core_that_readelf_gdb_and_zstd_open_with_a_correct_note() {
    let problems = per_interpreter(2, &check_dump);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Waits until every thread of `pid` is held in a tracing stop.
fn wait_paused(pid: i32) -> bool {
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('t'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    all_stopped()
}

/// True once process `pid` has a file open in `dir` (the image being written: unnamed where
/// the file system allows it, so only its descriptor shows it).
fn writing_into(pid: u32, dir: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(dir)))
}

/// Waits (up to 20 s) until `pid` writes into `dir`, then a little more.
fn wait_writing(pid: u32, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !writing_into(pid, dir) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    writing_into(pid, dir)
}

fn no_file_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// leakspy killed while the target is paused, then while the image is being written: the
/// target runs on (not stopped, it answers) and no FILE exists.
fn check_killed_leakspy(interp: &Interpreter) -> Vec<String> {
    let mut problems = Vec::new();
    let what = &interp.label;
    let dir = scratch(&format!("killed-{}", what.replace(['/', ' '], "_")));
    let file = dir.join("image.zst");
    let mut target = Target::start(interp, "census_target.py", &[]);
    for (hook, ms) in [("LEAKSPY_TEST_HOLD_PAUSE_MS", "20000"), ("LEAKSPY_TEST_HOLD_WRITE_MS", "20000")] {
        let mut run = Command::new(LEAKSPY)
            .args(["dump", &target.pid.to_string(), "-o"])
            .arg(&file)
            .env(hook, ms)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if hook.contains("PAUSE") {
            if !wait_paused(target.pid) {
                problems.push(format!("{what}: the target was never paused"));
            }
        } else {
            if !wait_writing(run.id(), &dir) {
                problems.push(format!("{what}: leakspy never wrote the image"));
            }
        }
        run.kill().unwrap();
        run.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if file.exists() {
            problems.push(format!("{what}: killed with {hook}, leakspy left {}", file.display()));
        }
        if !matches!(state(target.pid), 'S' | 'R') {
            problems.push(format!("{what}: killed with {hook}, the target is left in state {}", state(target.pid)));
        }
    }
    let leftover = no_file_left(&dir);
    if !leftover.is_empty() {
        problems.push(format!("{what}: files left: {leftover:?}"));
    }
    if !answers(&mut target) {
        problems.push(format!("{what}: the target does not answer after leakspy was killed"));
    }
    problems
}

#[test]
fn killing_leakspy_mid_dump_leaves_the_target_running_and_no_file() {
    let problems = per_interpreter(2, &check_killed_leakspy);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The target killed while it is paused for the dump: no FILE, one clear error line, the
/// exit code of a process that exited.
fn check_killed_target(interp: &Interpreter) -> Vec<String> {
    let what = &interp.label;
    let dir = scratch(&format!("target-{}", what.replace(['/', ' '], "_")));
    let file = dir.join("image.zst");
    let mut target = Target::start(interp, "census_target.py", &[]);
    let run = Command::new(LEAKSPY)
        .args(["dump", &target.pid.to_string(), "-o"])
        .arg(&file)
        .env("LEAKSPY_TEST_HOLD_PAUSE_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut problems = Vec::new();
    if !wait_paused(target.pid) {
        problems.push(format!("{what}: the target was never paused"));
    }
    let _ = target.child.kill();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(8) || stderr.lines().count() != 1 || !stderr.contains("exited") {
        problems.push(format!("{what}: exit {:?}, stderr {stderr:?}", out.status.code()));
    }
    let left = no_file_left(&dir);
    if !left.is_empty() {
        problems.push(format!("{what}: files left: {left:?}"));
    }
    problems
}

#[test]
fn a_target_killed_mid_dump_leaves_no_file_and_one_error_line() {
    let problems = per_interpreter(2, &check_killed_target);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// An existing FILE is replaced whole: while the new image is written it still holds the old
/// contents, then the new image under a new inode, with no temporary file left.
#[test]
fn an_existing_file_is_replaced_atomically() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch("replace");
    let file = dir.join("image.zst");
    std::fs::write(&file, b"the previous image").unwrap();
    let old_inode = std::fs::metadata(&file).unwrap().ino();
    let target = Target::start(&newest_host_python(), "census_target.py", &[]);
    let mut run = Command::new(LEAKSPY)
        .args(["dump", &target.pid.to_string(), "-o"])
        .arg(&file)
        .env("LEAKSPY_TEST_HOLD_WRITE_MS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_writing(run.id(), &dir), "leakspy writes the image");
    assert_eq!(std::fs::read(&file).unwrap(), b"the previous image", "mid-write, FILE is the old one whole");
    assert!(run.wait().unwrap().success());
    let new = std::fs::read(&file).unwrap();
    assert_eq!(&new[..4], b"\x28\xb5\x2f\xfd", "a zstd frame");
    assert_ne!(std::fs::metadata(&file).unwrap().ino(), old_inode, "renamed over, not rewritten");
    assert_eq!(no_file_left(&dir), vec!["image.zst".to_string()]);
}

// Round trip: images read back with `--core` (src/memory/core.rs).

/// Refcounts of types the target's own code touches move between its census and our read; its
/// own classes' must match exactly (as in tests/snapshot.rs).
const REFCOUNT_SLACK_PER_TYPE: i64 = 64;

type TypeCounts = std::collections::BTreeMap<String, (u64, u64, u64)>;

fn types_of(census: &Value) -> TypeCounts {
    census["types"]
        .as_array()
        .map(|types| {
            types
                .iter()
                .map(|t| {
                    let n = |k: &str| t[k].as_u64().unwrap_or(0);
                    (t["type"].as_str().unwrap_or_default().to_string(), (n("count"), n("refcount_sum"), n("immortal")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The differences between a census and the target's own, type by type.
fn differences_from_truth(census: &Value, truth: &Value) -> Vec<String> {
    let ours = types_of(census);
    let theirs: TypeCounts = truth["types"]
        .as_object()
        .map(|types| {
            types
                .iter()
                .map(|(name, t)| {
                    let n = |k: &str| t[k].as_u64().unwrap_or(0);
                    (name.clone(), (n("count"), n("refcount_sum"), n("immortal")))
                })
                .collect()
        })
        .unwrap_or_default();
    let own: Vec<&str> = truth["own_types"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut problems = Vec::new();
    for name in ours.keys().chain(theirs.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (c1, r1, i1) = ours.get(name).copied().unwrap_or_default();
        let (c2, r2, i2) = theirs.get(name).copied().unwrap_or_default();
        let slack = if own.contains(&name.as_str()) { 0 } else { REFCOUNT_SLACK_PER_TYPE };
        if c1 != c2 || i1 != i2 || (r1 as i64 - r2 as i64).abs() > slack {
            problems.push(format!("{name}: ({c1}, {r1}, {i1}) vs the target's ({c2}, {r2}, {i2})"));
        }
    }
    if census["objects_total"] != truth["objects_total"] || theirs.is_empty() {
        problems.push(format!("objects_total {} vs the target's {}", census["objects_total"], truth["objects_total"]));
    }
    problems
}

/// Dumps `pid` into `dir`; the image's path.
fn dump_into(dir: &Path, pid: i32) -> Result<String, String> {
    let image = dir.join("image.zst").to_string_lossy().into_owned();
    let out = leakspy(&["dump", &pid.to_string(), "-o", &image]);
    if !out.status.success() {
        return Err(format!("dump: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(image)
}

/// The census of the image equals the target's own census and `snapshot --pause` of the same
/// target, type by type; `snapshot --all` gives the same types with the same sizes.
fn check_census_round_trip(interp: &Interpreter) -> Vec<String> {
    let what = &interp.label;
    let dir = scratch(&format!("round-{}", what.replace(['/', ' '], "_")));
    let target = Target::start(interp, "census_target.py", &[]);
    let pid = target.pid.to_string();
    let paused_types = || {
        leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"])
            .map(|all| serde_json::json!([all["types"], all["graph"]["size_bytes"]]))
    };
    let image = match capture_settled(paused_types, || dump_into(&dir, target.pid)) {
        Ok(image) => image,
        Err(e) => return vec![format!("{what}: {e}")],
    };
    let mut problems = Vec::new();
    let results = (
        leakspy_json(&["snapshot", "--core", &image, "--json"]),
        leakspy_json(&["snapshot", &pid, "--pause", "--json"]),
        leakspy_json(&["snapshot", "--core", &image, "--all", "--json"]),
        leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"]),
    );
    match results {
        (Ok(core), Ok(paused), Ok(core_all), Ok(paused_all)) => {
            problems.extend(
                differences_from_truth(&core, &target.truth).into_iter().map(|p| format!("{what}: image: {p}")),
            );
            if types_of(&core) != types_of(&paused) {
                problems.push(format!("{what}: the image's census differs from --pause's"));
            }
            if core_all["types"] != paused_all["types"]
                || core_all["graph"]["size_bytes"] != paused_all["graph"]["size_bytes"]
            {
                let (a, b) = (core_all["types"].as_array().cloned(), paused_all["types"].as_array().cloned());
                let differing: Vec<String> = a
                    .unwrap_or_default()
                    .iter()
                    .zip(b.unwrap_or_default().iter())
                    .filter(|(x, y)| x != y)
                    .take(3)
                    .map(|(x, y)| format!("{x} vs {y}"))
                    .collect();
                problems.push(format!("{what}: --all differs: {differing:?}"));
            }
            println!(
                "{what}: image census {} objects, {} types; --all {} bytes",
                core["objects_total"],
                types_of(&core).len(),
                core_all["graph"]["size_bytes"]
            );
        }
        (a, b, c, d) => {
            problems.extend([a.err(), b.err(), c.err(), d.err()].into_iter().flatten().map(|e| format!("{what}: {e}")))
        }
    }
    problems
}

#[test]
fn an_image_reads_back_as_the_targets_census_and_the_paused_one_on_every_interpreter() {
    let problems = per_interpreter(2, &check_census_round_trip);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// `why --type` of the image gives what `why` gives of the live target: the same paths, counts,
/// sizes and references.
fn check_why_round_trip(interp: &Interpreter) -> Vec<String> {
    let what = &interp.label;
    let dir = scratch(&format!("why-{}", what.replace(['/', ' '], "_")));
    let target = Target::start(interp, "graph_target.py", &[]);
    let pid = target.pid.to_string();
    let mut problems = Vec::new();
    let classes: Vec<String> =
        target.truth["classes"].as_object().into_iter().flatten().map(|(c, _)| c.clone()).collect();
    let Some(first) = classes.first() else { return vec![format!("{what}: the graph target lists no classes")] };
    // Timings aside, everything must agree.
    let why = |source: &[&str], class: &str| {
        let mut args = vec!["why"];
        args.extend_from_slice(source);
        args.extend_from_slice(&["--type", class, "--json"]);
        leakspy_json(&args).map(|mut report| {
            if let Some(graph) = report["graph"].as_object_mut() {
                graph.remove("ms");
                graph.remove("duration_ms");
            }
            report
        })
    };
    let image = match capture_settled(|| why(&[&pid], first), || dump_into(&dir, target.pid)) {
        Ok(image) => image,
        Err(e) => return vec![format!("{what}: {e}")],
    };
    for class in &classes {
        match (why(&["--core", &image], class), why(&[&pid], class)) {
            (Ok(core), Ok(live)) => {
                if core != live {
                    let differing: Vec<String> = core
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, v)| live.get(k.as_str()) != Some(v))
                        .map(|(k, v)| format!("{k}: {v} in the image, {} live", live[k.as_str()]))
                        .collect();
                    problems.push(format!("{what} {class}: {}", differing.join("; ")));
                }
            }
            (a, b) => problems.extend([a.err(), b.err()].into_iter().flatten().map(|e| format!("{what} {class}: {e}"))),
        }
    }
    problems
}

#[test]
fn why_of_an_image_equals_why_of_the_live_target_on_every_interpreter() {
    let problems = per_interpreter(2, &check_why_round_trip);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Copies a tree (symbolic links as links, modes kept), leaving out what a target does not
/// need: installed packages and the test suite (hundreds of MB for some versions).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if ["site-packages", "test", "tests", "__pycache__", "idlelib", "tkinter"].iter().any(|s| name == *s) {
            continue;
        }
        let (source, dest) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &dest)?;
        } else if kind.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            std::fs::copy(&source, &dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(entry.metadata()?.permissions().mode()))?;
        }
    }
    Ok(())
}

/// The image alone: the target ran from a copy of its Python (the pyenv version directory, or
/// Debian's static executable) that is moved away after the dump; the image still reads as the
/// target's own census. (The chroot's interpreters are left out: moving their files means
/// rebuilding the chroot; the image carries the same pages for them.)
fn check_files_moved_away(interp: &Interpreter) -> Vec<String> {
    let what = &interp.label;
    if interp.chroot.is_some() {
        return Vec::new();
    }
    let dir = scratch(&format!("moved-{}", what.replace(['/', ' '], "_")));
    let copy = dir.join("python");
    let (exe, env_lib) = if what.starts_with("pyenv") {
        let Some(version_dir) = interp.exe.parent().and_then(Path::parent) else {
            return vec![format!("{what}: no version dir")];
        };
        if let Err(e) = copy_tree(version_dir, &copy) {
            return vec![format!("{what}: copying {}: {e}", version_dir.display())];
        }
        (copy.join("bin/python"), Some(copy.join("lib")))
    } else {
        std::fs::create_dir_all(copy.join("bin")).unwrap();
        let exe = copy.join("bin").join(interp.exe.file_name().unwrap());
        std::fs::copy(&interp.exe, &exe).unwrap();
        (exe, None)
    };
    let moved = Interpreter { exe, ..interp.clone() };
    let env: Vec<(&str, &Path)> = env_lib.iter().map(|lib| ("LD_LIBRARY_PATH", lib.as_path())).collect();
    let target = Target::start_with_env(&moved, "census_target.py", &[], &env);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", target.pid)).unwrap_or_default();
    let mut problems = Vec::new();
    if !maps.contains(copy.to_str().unwrap_or("?")) {
        problems.push(format!("{what}: the target does not run from the copy"));
    }
    let image = match dump_into(&dir, target.pid) {
        Ok(image) => image,
        Err(e) => return vec![format!("{what}: {e}")],
    };
    let gone = dir.join("moved-away");
    std::fs::rename(&copy, &gone).unwrap();
    match leakspy_json(&["snapshot", "--core", &image, "--json"]) {
        Ok(census) => {
            problems.extend(differences_from_truth(&census, &target.truth).into_iter().map(|p| format!("{what}: {p}")))
        }
        Err(e) => problems.push(format!("{what}: with the files moved away: {e}")),
    }
    drop(target);
    problems
}

#[test]
fn an_image_reads_without_the_targets_files() {
    let problems = per_interpreter(2, &check_files_moved_away);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// As with `--pause`: a target the user stopped (SIGSTOP) is dumped and stays stopped.
#[test]
fn an_already_stopped_target_is_dumped_and_stays_stopped() {
    let dir = scratch("stopped");
    let target = Target::start(&newest_host_python(), "census_target.py", &[]);
    let pid = target.pid.to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(target.pid), 'T');
    let image = dump_into(&dir, target.pid).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(target.pid), 'T', "leakspy must not resume a process the user stopped");
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let census = leakspy_json(&["snapshot", "--core", &image, "--json"]).unwrap();
    assert_eq!(differences_from_truth(&census, &target.truth), Vec::<String>::new());
}

/// `dump` reads a live process: `--core` is refused, and so is a directory that does not exist
/// (before any target is stopped); each with one line and its exit code.
#[test]
fn dump_refuses_a_core_and_a_missing_directory() {
    let out = leakspy(&["dump", "--core", "/nonexistent.core", "-o", "/tmp/never-written.zst"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--core") && stderr.lines().count() == 1, "{stderr}");
    let target = Target::start(&newest_host_python(), "census_target.py", &[]);
    let out = leakspy(&["dump", &target.pid.to_string(), "-o", "/nonexistent-dir/image.zst"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a directory") && stderr.lines().count() == 1, "{stderr}");
    assert!(matches!(state(target.pid), 'S' | 'R'));
}

/// Type names of an extension module's static types (numpy.ndarray) live in the module's
/// read-only data: the image carries them, and its census names the type as the live one does.
#[test]
fn an_image_names_the_static_types_of_extension_modules() {
    let pythons = library_pythons(&["numpy"]);
    let mut problems = Vec::new();
    for python in &pythons {
        let what = &python.interp.label;
        let dir = scratch(&format!("numpy-{}", what.replace(['/', ' ', '(', ')'], "_")));
        let target = python.start("image_numpy_target.py", &[]);
        // Arrays are not tracked by the collector: the heap graph (--all) counts them.
        let pid = target.pid.to_string();
        let paused_types =
            || leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"]).map(|c| c["types"].clone());
        let censuses = capture_settled(paused_types, || dump_into(&dir, target.pid)).and_then(|image| {
            Ok((
                leakspy_json(&["snapshot", "--core", &image, "--all", "--json"])?,
                leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"])?,
            ))
        });
        match censuses {
            Ok((census, paused)) => {
                let arrays = type_count(&census, "numpy.ndarray");
                println!("{what}: numpy.ndarray {arrays:?} in the image");
                if arrays.is_none_or(|n| n < target.truth["arrays"].as_u64().unwrap_or(u64::MAX))
                    || census["unreadable_objects"] != paused["unreadable_objects"]
                    || types_of(&census) != types_of(&paused)
                {
                    problems.push(format!(
                        "{what}: numpy.ndarray {arrays:?} (the target made {}), {} unreadable ({} with --pause)",
                        target.truth["arrays"], census["unreadable_objects"], paused["unreadable_objects"]
                    ));
                }
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
