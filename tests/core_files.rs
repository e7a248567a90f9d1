//! `--core`: a census, `snapshot --all` and `why` read from a core file equal what leakspy reads
//! of the same blocked process live (and the target's own census), on every interpreter; gdb's
//! gcore and kernel cores; a core read where the python binary moved away, and a chroot's core
//! read with --sysroot; bad input gets one line and its own exit code.

mod common;

use common::scratch::Scratch;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// gdb's gcore of a (blocked) process into `file`.
fn gcore(pid: i32, file: &Path) -> Result<(), String> {
    let out = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx", "-ex"])
        .arg(format!("gcore {}", file.display()))
        .output()
        .map_err(|e| format!("cannot run gdb: {e} (scripts/setup.sh installs it)"))?;
    if !file.exists() {
        return Err(format!("gcore wrote nothing: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// type -> (count, refcount_sum, size_bytes, untracked) of a census.
fn rows(census: &Value) -> BTreeMap<String, (u64, u64, u64, u64)> {
    census["types"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            (
                t["type"].as_str().unwrap_or("").to_string(),
                (n("count"), n("refcount_sum"), n("size_bytes"), n("untracked")),
            )
        })
        .collect()
}

/// Differences between the target's own census and leakspy's, type by type (counts).
fn against_truth(truth: &Value, census: &Value) -> Vec<String> {
    let ours = rows(census);
    let mut diffs = Vec::new();
    for (name, row) in truth["types"].as_object().into_iter().flatten() {
        let want = row["count"].as_u64().unwrap_or(0);
        let got = ours.get(name).map_or(0, |r| r.0);
        if want != got {
            diffs.push(format!("{name}: target {want}, core {got}"));
        }
    }
    if census["objects_total"] != truth["objects_total"] {
        diffs.push(format!("objects_total: target {}, core {}", truth["objects_total"], census["objects_total"]));
    }
    diffs
}

fn differences(a: &BTreeMap<String, (u64, u64, u64, u64)>, b: &BTreeMap<String, (u64, u64, u64, u64)>) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .take(10)
        .map(|n| format!("{n}: paused {:?}, core {:?}", a.get(n), b.get(n)))
        .collect()
}

#[test]
fn a_gcore_reads_as_the_paused_process_and_its_own_census_on_every_interpreter() {
    let failures = per_interpreter(2, &|interp| {
        let mut failures = Vec::new();
        let scratch = Scratch::new("core-census");
        let target = Target::start(interp, "census_target.py", &[]);
        let core = scratch.join("target.core");
        let pid = target.pid.to_string();
        let paused_all = || {
            leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"])
                .map(|all| serde_json::json!([all["types"], all["graph"]["size_bytes"]]))
        };
        if let Err(e) = capture_settled(paused_all, || gcore(target.pid, &core)) {
            return vec![format!("{}: {e}", interp.label)];
        }
        let core_arg = core.to_string_lossy().into_owned();
        let started = std::time::Instant::now();
        let from_core = match leakspy_json(&["snapshot", "--core", &core_arg, "--json"]) {
            Ok(c) => c,
            Err(e) => return vec![format!("{}: {e}", interp.label)],
        };
        let read_ms = started.elapsed().as_millis();
        let paused = match leakspy_json(&["snapshot", &pid, "--pause", "--json"]) {
            Ok(c) => c,
            Err(e) => return vec![format!("{}: {e}", interp.label)],
        };
        for d in against_truth(&target.truth, &from_core) {
            failures.push(format!("{} census vs the target's own: {d}", interp.label));
        }
        let strip = |m: BTreeMap<String, (u64, u64, u64, u64)>| -> BTreeMap<String, (u64, u64, u64, u64)> {
            m.into_iter().map(|(k, (c, r, _, _))| (k, (c, r, 0, 0))).collect()
        };
        for d in differences(&strip(rows(&paused)), &strip(rows(&from_core))) {
            failures.push(format!("{} census vs --pause: {d}", interp.label));
        }
        if from_core["pid"] != target.pid || from_core["core"]["kind"] != "core" || from_core["consistent"] != true {
            failures.push(format!("{}: identity {} {}", interp.label, from_core["pid"], from_core["core"]));
        }
        // --all: sizes, untracked objects, per type.
        match (
            leakspy_json(&["snapshot", "--core", &core_arg, "--all", "--json"]),
            leakspy_json(&["snapshot", &pid, "--pause", "--all", "--json"]),
        ) {
            (Ok(all_core), Ok(all_paused)) => {
                for d in differences(&rows(&all_paused), &rows(&all_core)) {
                    failures.push(format!("{} --all vs --pause --all: {d}", interp.label));
                }
                if all_core["graph"]["size_bytes"] != all_paused["graph"]["size_bytes"] {
                    failures.push(format!(
                        "{} --all total size: paused {}, core {}",
                        interp.label, all_paused["graph"]["size_bytes"], all_core["graph"]["size_bytes"]
                    ));
                }
            }
            (a, b) => failures.push(format!("{} --all: {:?} {:?}", interp.label, a.err(), b.err())),
        }
        println!(
            "{}: core of {} bytes read in {read_ms} ms: {} objects",
            interp.label,
            std::fs::metadata(&core).map(|m| m.len()).unwrap_or(0),
            from_core["objects_total"]
        );
        failures
    });
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn why_reads_a_core_as_it_reads_the_process_on_every_interpreter() {
    let failures = per_interpreter(2, &|interp| {
        let mut failures = Vec::new();
        let scratch = Scratch::new("core-why");
        let target = Target::start(interp, "graph_target.py", &[]);
        // The worker thread blocks a moment after the main thread: a core taken while it is
        // still on its way into its wait has its frame mid-call.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let core = scratch.join("graph.core");
        if let Err(e) = gcore(target.pid, &core) {
            return vec![format!("{}: {e}", interp.label)];
        }
        let core_arg = core.to_string_lossy().into_owned();
        let pid = target.pid.to_string();
        for class in target.truth["classes"].as_object().unwrap().keys() {
            let (live, offline) = match (
                leakspy_json(&["why", &pid, "--type", class, "--json"]),
                leakspy_json(&["why", "--core", &core_arg, "--type", class, "--json"]),
            ) {
                (Ok(l), Ok(o)) => (l, o),
                (l, o) => {
                    failures.push(format!("{} {class}: {:?} {:?}", interp.label, l.err(), o.err()));
                    continue;
                }
            };
            for field in ["paths", "instances", "unreachable", "retained_bytes", "external_refs"] {
                if live[field] != offline[field] {
                    failures.push(format!(
                        "{} {class} {field}: live {}, core {}",
                        interp.label, live[field], offline[field]
                    ));
                }
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_core_census_goes_to_a_history_with_the_dumped_process_and_every_format() {
    let interp = newest_host_python();
    let scratch = Scratch::new("core-history");
    let target = Target::start(&interp, "census_target.py", &[]);
    let core = scratch.join("a.core");
    gcore(target.pid, &core).unwrap();
    let core_arg = core.to_string_lossy().into_owned();
    let history = scratch.join("history.jsonl");
    let out = leakspy(&["snapshot", "--core", &core_arg, "--append", &history.to_string_lossy()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = std::fs::read_to_string(&history).unwrap();
    let record: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(record["pid"], target.pid);
    assert_eq!(record["core"]["dumped_at_source"], "core file mtime", "{}", record["core"]);
    assert_eq!(record["timestamp"], record["core"]["dumped_at"]);
    let exe_name = interp.exe.file_name().unwrap().to_string_lossy().into_owned();
    assert!(record["process"]["cmdline"].as_str().unwrap_or("").contains(&exe_name), "{}", record["process"]);
    for format in [["--format", "table"], ["--format", "prometheus"]] {
        let out = leakspy(&["snapshot", "--core", &core_arg, format[0], format[1]]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{format:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The same core compressed with zstd reads the same.
    let compressed = scratch.join("a.core.zst");
    let raw = std::fs::read(&core).unwrap();
    std::fs::write(&compressed, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let plain = leakspy_json(&["snapshot", "--core", &core_arg, "--json"]).unwrap();
    let unpacked = leakspy_json(&["snapshot", "--core", &compressed.to_string_lossy(), "--json"]).unwrap();
    assert_eq!(rows(&plain), rows(&unpacked));
    assert_eq!(unpacked["core"]["compressed"], true);
    // diff of two cores goes through their censuses.
    let a = scratch.join("a.json");
    std::fs::write(&a, leakspy(&["snapshot", "--core", &core_arg, "--json"]).stdout).unwrap();
    let out = leakspy(&["diff", &a.to_string_lossy(), &a.to_string_lossy()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A command that reads only live processes says so.
    let out = leakspy(&["attach", "--core", &core_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One line on stderr, the exit code expected, and the words that say what is wrong.
fn expect_failure(args: &[&str], code: i32, words: &str) -> Option<String> {
    let out = leakspy(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stderr.lines().filter(|l| l.starts_with("leakspy: error")).count();
    (out.status.code() != Some(code) || lines != 1 || !stderr.contains(words) || stderr.contains("panicked"))
        .then(|| format!("{}: exit {:?}, expected {code} and {words:?}: {stderr}", args.join(" "), out.status.code()))
}

#[test]
fn bad_cores_get_one_line_and_their_own_exit_code() {
    let interp = newest_host_python();
    let scratch = Scratch::new("core-bad");
    let dir = &*scratch;
    let target = Target::start(&interp, "census_target.py", &[]);
    let core = dir.join("good.core");
    gcore(target.pid, &core).unwrap();
    drop(target);
    let bytes = std::fs::read(&core).unwrap();
    let mut problems = Vec::new();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // Truncated: in the ELF header, in the program headers, in the memory, and by one byte.
    for cut in [10, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let name = format!("cut-{cut}.core");
        std::fs::write(dir.join(&name), &bytes[..cut]).unwrap();
        let started = std::time::Instant::now();
        problems.extend(expect_failure(&["snapshot", "--core", &path(&name)], 11, "truncated"));
        assert!(started.elapsed().as_secs() < 10, "a truncated core took {:?}", started.elapsed());
    }
    let mut random = vec![0u8; 1 << 16];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(dir.join("random"), &random).unwrap();
    problems.extend(expect_failure(&["snapshot", "--core", &path("random")], 11, "not an ELF file"));
    // Random bytes after a valid ELF core header: corrupt, not a panic.
    let mut forged = bytes[..64].to_vec();
    forged.extend_from_slice(&random);
    std::fs::write(dir.join("forged"), &forged).unwrap();
    let out = leakspy(&["snapshot", "--core", &path("forged")]);
    if out.status.code() != Some(11) || String::from_utf8_lossy(&out.stderr).contains("panicked") {
        problems.push(format!("forged: {:?} {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    problems.extend(expect_failure(&["snapshot", "--core", LEAKSPY], 11, "not a core dump"));
    std::fs::write(dir.join("empty"), b"").unwrap();
    problems.extend(expect_failure(&["snapshot", "--core", &path("empty")], 11, "empty"));
    // A core of a process that is not Python.
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let sleep_core = dir.join("sleep.core");
    gcore(sleeper.id() as i32, &sleep_core).unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    problems.extend(expect_failure(&["snapshot", "--core", &path("sleep.core")], 12, "not a CPython process"));
    // A file of another build given as the interpreter: named with the core's interpreter name.
    let other = supported_interpreters()
        .into_iter()
        .find(|i| i.chroot.is_none() && i.minor != interp.minor)
        .expect("a second host interpreter");
    let theirs = lib_or_exe(&other.exe);
    let ours_name = lib_or_exe(&interp.exe).file_name().unwrap().to_owned();
    let impostor = dir.join(&ours_name);
    std::fs::copy(&theirs, &impostor).unwrap();
    problems.extend(expect_failure(
        &["snapshot", "--core", &path("good.core"), "--python-binary", &impostor.to_string_lossy()],
        14,
        "build id",
    ));
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The file holding the interpreter's symbols for an interpreter: its libpython if it has one.
fn lib_or_exe(exe: &Path) -> PathBuf {
    let real = std::fs::canonicalize(exe).unwrap();
    let name = real.file_name().unwrap().to_string_lossy().into_owned();
    let lib = real.parent().unwrap().parent().unwrap().join("lib").join(format!("lib{name}.so.1.0"));
    if lib.exists() { lib } else { real }
}

#[test]
fn a_core_read_where_the_python_binary_moved_away() {
    let Some(debian) = interpreters().into_iter().find(|i| i.label.starts_with("debian") && i.is_supported()) else {
        println!("no Debian python3.X on this machine: skipped");
        return;
    };
    let scratch = Scratch::new("core-moved");
    let (here, there) = (scratch.join("here"), scratch.join("there"));
    std::fs::create_dir_all(&here).unwrap();
    std::fs::create_dir_all(&there).unwrap();
    let name = debian.exe.file_name().unwrap().to_owned();
    std::fs::copy(&debian.exe, here.join(&name)).unwrap();
    let copied = Interpreter { label: format!("copy of {}", debian.label), exe: here.join(&name), ..debian.clone() };
    let target = Target::start(&copied, "census_target.py", &[]);
    let core = scratch.join("moved.core");
    gcore(target.pid, &core).unwrap();
    let truth = target.truth.clone();
    drop(target);
    std::fs::rename(here.join(&name), there.join(&name)).unwrap();
    let core_arg = core.to_string_lossy().into_owned();
    let missing = here.join(&name).to_string_lossy().into_owned();
    if let Some(problem) = expect_failure(&["snapshot", "--core", &core_arg], 13, &missing) {
        panic!("{problem}");
    }
    let moved = there.join(&name).to_string_lossy().into_owned();
    let census = leakspy_json(&["snapshot", "--core", &core_arg, "--python-binary", &moved, "--json"]).unwrap();
    let diffs = against_truth(&truth, &census);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_chroot_targets_core_is_read_with_sysroot() {
    let root = sid_root();
    let Some(interp) = supported_interpreters().into_iter().rev().find(|i| i.chroot.is_some()) else {
        println!("no sid chroot at {}: skipped (scripts/setup.sh makes it)", root.display());
        return;
    };
    let scratch = Scratch::new("core-sysroot");
    let target = Target::start(&interp, "census_target.py", &[]);
    let core = scratch.join("chroot.core");
    gcore(target.pid, &core).unwrap();
    let census =
        leakspy_json(&["snapshot", "--core", &core.to_string_lossy(), "--sysroot", &root.to_string_lossy(), "--json"])
            .unwrap();
    let diffs = against_truth(&target.truth, &census);
    assert!(diffs.is_empty(), "{}: {}", interp.label, diffs.join("\n"));
}

/// Where the kernel writes cores now, if a test can make it write one into `dir`: a
/// core_pattern naming a plain file is written in the crashing process's directory; a pipe
/// (systemd-coredump, apport) is replaced for the test if /proc/sys/kernel/core_pattern is
/// writable, and restored after.
struct CorePattern {
    restore: Option<String>,
}

impl CorePattern {
    fn into_files() -> Result<CorePattern, String> {
        let path = "/proc/sys/kernel/core_pattern";
        let now = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let now = now.trim().to_string();
        if !now.starts_with('|') && !now.contains('/') {
            return Ok(CorePattern { restore: None });
        }
        std::fs::write(path, "core").map_err(|e| format!("core_pattern is {now:?} and cannot be changed: {e}"))?;
        Ok(CorePattern { restore: Some(now) })
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        if let Some(old) = &self.restore {
            let _ = std::fs::write("/proc/sys/kernel/core_pattern", old);
        }
    }
}

#[test]
fn a_kernel_core_of_a_target_killed_with_sigabrt() {
    let pattern = match CorePattern::into_files() {
        Ok(p) => p,
        Err(why) => {
            println!("kernel cores cannot be written here ({why}): skipped; the gcore tests stand in");
            return;
        }
    };
    let mut failures = Vec::new();
    // Every interpreter outside the chroot (whose core would land inside it; its gcore is read
    // with --sysroot above).
    for interp in supported_interpreters().into_iter().filter(|i| i.chroot.is_none()) {
        let scratch = Scratch::new("core-kernel");
        let dir = &*scratch;
        let script = dir.join("census_target.py");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/census_target.py"), &script).unwrap();
        let truth_path = dir.join("truth.json");
        let mut child = Command::new("sh")
            .arg("-c")
            // A hard limit of 0 makes ulimit fail: then no core is written, and the test says so.
            .arg("ulimit -c unlimited 2>/dev/null; cd \"$1\" && shift && exec \"$@\"")
            .arg("sh")
            .arg(dir)
            .arg(&interp.exe)
            .arg(&script)
            .arg(&truth_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        assert_eq!(line.trim(), "READY", "{}", interp.label);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
        // SAFETY: kill() on our own child's PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGABRT) };
        let status = child.wait().unwrap();
        let core = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("core")));
        let Some(core) = core else {
            println!(
                "{}: no kernel core was written (exit {status:?}; RLIMIT_CORE or the sandbox forbid it): skipped",
                interp.label
            );
            continue;
        };
        match leakspy_json(&["snapshot", "--core", &core.to_string_lossy(), "--json"]) {
            Ok(census) => {
                println!("{}: kernel core {} read", interp.label, core.display());
                failures.extend(against_truth(&truth, &census).into_iter().map(|d| format!("{}: {d}", interp.label)))
            }
            Err(e) => failures.push(format!("{}: {e}", interp.label)),
        }
    }
    drop(pattern);
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// Turns a gcore of `pid` into an image as `leakspy dump` writes it (the format in the
/// README): the gcore's segments, the read-only file data mappings copied from the process,
/// and leakspy's note with the interpreter's symbols, so that no file of the target is needed.
fn image_from_gcore(core: &Path, pid: i32, binary: &Path) -> Vec<u8> {
    let bytes = std::fs::read(core).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let (phoff, phnum) = (u64_at(32) as usize, u16_at(56));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let read_only: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| {
            l.split_whitespace().nth(1) == Some("r--p")
                && l.split_whitespace().nth(5).is_some_and(|p| p.starts_with('/'))
        })
        .map(|l| {
            let (a, b) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap())
        })
        .collect();
    let binary_text = binary.to_string_lossy().into_owned();
    let base = maps
        .lines()
        .find(|l| l.ends_with(&binary_text) && l.split_whitespace().nth(2) == Some("00000000"))
        .map(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
        .expect("the binary's first mapping");
    let nm = Command::new("nm").args(["-D", "--defined-only"]).arg(binary).output().unwrap();
    let symbols: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
            let addr = u64::from_str_radix(addr, 16).ok()?;
            ["_PyRuntime", "Py_Version", "interp_head", "_PyGC_generation0"]
                .contains(&name)
                .then(|| format!("\"{name}\":{}", base + addr))
        })
        .collect();
    let json = format!(
        r#"{{"format":1,"pid":{pid},"start_time_ticks":0,"exe":"","cmdline":["python","target"],"host":"elsewhere","dumped_at_unix":1700000000.0,"binary":"{binary_text}","binary_build_id":null,"load_bias":{base},"symbols":{{{}}},"rss_bytes":12345,"writable_bytes":1,"paused_ms":1.5,"copied_bytes":2,"threads":1}}"#,
        symbols.join(",")
    );
    let mut out = bytes.clone();
    let mut headers: Vec<[u8; 56]> = Vec::new();
    for i in 0..phnum {
        let ph: [u8; 56] = bytes[phoff + i * 56..phoff + (i + 1) * 56].try_into().unwrap();
        let (kind, vaddr) = (u32::from_le_bytes(ph[..4].try_into().unwrap()), u64_at(phoff + i * 56 + 16));
        let memsz = u64_at(phoff + i * 56 + 40);
        if kind == 1 && read_only.iter().any(|&(a, b)| vaddr < b && a < vaddr + memsz) {
            continue;
        }
        headers.push(ph);
    }
    let ph = |kind: u32, flags: u32, offset: u64, vaddr: u64, size: u64| -> [u8; 56] {
        let mut p = Vec::new();
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        for w in [offset, vaddr, 0, size, size, 1] {
            p.extend_from_slice(&w.to_le_bytes());
        }
        p.try_into().unwrap()
    };
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for (a, b) in read_only {
        use std::io::{Read, Seek, SeekFrom};
        let mut data = vec![0u8; (b - a) as usize];
        mem.seek(SeekFrom::Start(a)).unwrap();
        if mem.read_exact(&mut data).is_err() {
            continue;
        }
        headers.push(ph(1, 4, out.len() as u64, a, data.len() as u64));
        out.extend_from_slice(&data);
    }
    let mut note = Vec::new();
    note.extend_from_slice(&8u32.to_le_bytes());
    note.extend_from_slice(&(json.len() as u32).to_le_bytes());
    note.extend_from_slice(&0x4c53_0001u32.to_le_bytes());
    note.extend_from_slice(b"LEAKSPY\0");
    note.extend_from_slice(json.as_bytes());
    note.resize(note.len().next_multiple_of(4), 0);
    headers.push(ph(4, 0, out.len() as u64, 0, note.len() as u64));
    out.extend_from_slice(&note);
    let table = out.len() as u64;
    for h in &headers {
        out.extend_from_slice(h);
    }
    out[32..40].copy_from_slice(&table.to_le_bytes());
    out[56..58].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    // No section headers: gcore's would describe the old layout.
    out[40..48].copy_from_slice(&0u64.to_le_bytes());
    out[60..64].copy_from_slice(&0u32.to_le_bytes());
    out
}

#[test]
fn an_image_with_leakspy_note_needs_no_file_of_the_target() {
    let interp = newest_host_python();
    let scratch = Scratch::new("core-image");
    let target = Target::start(&interp, "census_target.py", &[]);
    let core = scratch.join("g.core");
    gcore(target.pid, &core).unwrap();
    let binary = lib_or_exe(&interp.exe);
    let image = scratch.join("app.image.zst");
    std::fs::write(&image, zstd::encode_all(&image_from_gcore(&core, target.pid, &binary)[..], 3).unwrap()).unwrap();
    // Files named by the core would be found on this machine: a sysroot with nothing in it
    // shows that none is opened.
    let empty = scratch.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let census = leakspy_json(&[
        "snapshot",
        "--core",
        &image.to_string_lossy(),
        "--sysroot",
        &empty.to_string_lossy(),
        "--json",
    ])
    .unwrap();
    let diffs = against_truth(&target.truth, &census);
    assert!(diffs.is_empty(), "{}: {}", interp.label, diffs.join("\n"));
    assert_eq!(census["core"]["kind"], "leakspy image");
    assert_eq!(census["core"]["dumped_at_source"], "leakspy note");
    assert_eq!(census["core"]["host"], "elsewhere");
    assert_eq!(census["process"]["rss_bytes"], 12345);
    assert_eq!(census["paused_ms"], 1.5);
    assert_eq!(census["core"]["files_used"], Value::Null);
}
