//! Finding the interpreters on this machine and running target scripts under them.
//!
//! Ground truth always comes from the target itself: a script under tests/targets/ builds a
//! heap, counts it with gc.get_objects(), writes the result, prints READY and blocks.

#![allow(dead_code)]

pub mod counting;
pub mod image;
pub mod scratch;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const LEAKSPY: &str = env!("CARGO_BIN_EXE_leakspy");
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Interpreter {
    /// "pyenv 3.11.7", "debian /usr/bin/python3.11", "sid-chroot python3.14".
    pub label: String,
    /// The executable as the target sees it.
    pub exe: PathBuf,
    /// Set for interpreters inside a chroot (our container case).
    pub chroot: Option<PathBuf>,
    pub major: u32,
    pub minor: u32,
}

impl Interpreter {
    pub fn is_supported(&self) -> bool {
        self.major == 3 && self.minor >= 6
    }
}

pub fn sid_root() -> PathBuf {
    std::env::var_os("LEAKSPY_SID_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/leakspy/sid"))
}

fn pyenv_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        return Some(PathBuf::from(root));
    }
    let out = Command::new("pyenv").arg("root").output().ok()?;
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv"))
}

/// "python3.11" -> (3, 11); "3.11.7" -> (3, 11).
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let text = text.trim_start_matches("python");
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn versioned_pythons(dir: &Path) -> Vec<(String, u32, u32)> {
    let mut found: Vec<(String, u32, u32)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("python")?;
            if rest.chars().all(|c| c.is_ascii_digit() || c == '.') && rest.contains('.') {
                let (major, minor) = major_minor(rest)?;
                Some((name, major, minor))
            } else {
                None
            }
        })
        .collect();
    found.sort_by_key(|(_, major, minor)| (*major, *minor));
    found
}

/// Every interpreter present: pyenv builds, Debian's own python3.X, and the sid chroot's.
pub fn interpreters() -> Vec<Interpreter> {
    let mut all = Vec::new();
    if let Some(root) = pyenv_root() {
        let mut versions: Vec<PathBuf> =
            std::fs::read_dir(root.join("versions")).into_iter().flatten().flatten().map(|e| e.path()).collect();
        versions.sort();
        for dir in versions {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let exe = dir.join("bin/python");
            if let (Some((major, minor)), true) = (major_minor(&name), exe.exists()) {
                all.push(Interpreter { label: format!("pyenv {name}"), exe, chroot: None, major, minor });
            }
        }
    }
    for (name, major, minor) in versioned_pythons(Path::new("/usr/bin")) {
        let exe = PathBuf::from("/usr/bin").join(&name);
        if !std::fs::symlink_metadata(&exe).map(|m| m.file_type().is_symlink()).unwrap_or(true) {
            all.push(Interpreter { label: format!("debian {}", exe.display()), exe, chroot: None, major, minor });
        }
    }
    let sid = sid_root();
    for (name, major, minor) in versioned_pythons(&sid.join("usr/bin")) {
        all.push(Interpreter {
            label: format!("sid-chroot {name}"),
            exe: PathBuf::from("/usr/bin").join(&name),
            chroot: Some(sid.clone()),
            major,
            minor,
        });
    }
    all.sort_by_key(|i| (i.major, i.minor, i.chroot.is_some()));
    all
}

pub fn supported_interpreters() -> Vec<Interpreter> {
    let all: Vec<Interpreter> = interpreters().into_iter().filter(Interpreter::is_supported).collect();
    assert!(!all.is_empty(), "no Python 3.6+ interpreter found: run scripts/setup.sh");
    all
}

/// A running target script. Killed when dropped.
pub struct Target {
    pub child: Child,
    pub pid: i32,
    pub truth: Value,
    pub label: String,
    pub minor: u32,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Target {
    /// Starts tests/targets/`script` under `interp` and waits for it to print READY.
    pub fn start(interp: &Interpreter, script: &str, args: &[&str]) -> Target {
        Target::start_with_env(interp, script, args, &[])
    }

    /// As `start`, with extra environment variables for the target (LD_LIBRARY_PATH, ...).
    pub fn start_with_env(interp: &Interpreter, script: &str, args: &[&str], env: &[(&str, &Path)]) -> Target {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("leakspy-test-{}-{}", std::process::id(), n);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets").join(script);
        // Paths as the target sees them, and where those are on the host.
        let host_root = interp.chroot.clone().unwrap_or_else(|| PathBuf::from("/"));
        let inner_dir = PathBuf::from("/tmp").join(&tag);
        let host_dir = host_root.join(inner_dir.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::copy(&source, host_dir.join(script)).unwrap();
        let truth_inner = inner_dir.join("truth.json");
        let mut cmd = match &interp.chroot {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(&interp.exe);
                c
            }
            None => Command::new(&interp.exe),
        };
        cmd.arg(inner_dir.join(script)).arg(&truth_inner).args(args).envs(env.iter().copied());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {}: {e}", interp.label, interp.exe.display()));
        let pid = child.id() as i32;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        if line.trim() != "READY" {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{}: {script} did not get ready (printed {line:?}); stderr:\n{err}", interp.label);
        }
        // READY is written just before the main thread blocks; read the target once it is
        // blocked, not while its last statement is still being evaluated.
        wait_until_sleeping(pid);
        let truth_host = host_dir.join("truth.json");
        let truth = std::fs::read_to_string(&truth_host)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let _ = std::fs::remove_dir_all(&host_dir);
        Target { child, pid, truth, label: interp.label.clone(), minor: interp.minor }
    }
}

/// Waits (up to 2 s) until the process's main thread sleeps, then a little more.
fn wait_until_sleeping(pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The modes `why` is tested in: with retained sizes (the default) and paths and counts only
/// (`--no-retained`). LEAKSPY_TEST_WHY_MODE=full or =paths runs one of them only.
#[allow(dead_code)]
pub fn why_modes() -> Vec<(&'static str, Vec<&'static str>)> {
    let all = vec![("full", vec![]), ("paths", vec!["--no-retained"])];
    match std::env::var("LEAKSPY_TEST_WHY_MODE") {
        Ok(only) => all.into_iter().filter(|(name, _)| *name == only).collect(),
        Err(_) => all,
    }
}

/// The report without what only the full mode computes (retained sizes, the graph's summary),
/// for comparing the two modes' paths and counts.
#[allow(dead_code)]
pub fn without_retained(report: &Value) -> Value {
    match report {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.contains("retained") && k.as_str() != "graph" && k.as_str() != "largest")
                .map(|(k, v)| (k.clone(), without_retained(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_retained).collect()),
        other => other.clone(),
    }
}

pub fn leakspy(args: &[&str]) -> Output {
    Command::new(LEAKSPY).args(args).output().expect("run leakspy")
}

/// Runs leakspy with `args` (which ask for `--json`) and parses what it printed; a failure as
/// one line naming the command, its exit code and its stderr.
pub fn leakspy_json(args: &[&str]) -> Result<Value, String> {
    let out = leakspy(args);
    if !out.status.success() {
        return Err(format!(
            "leakspy {}: exit {:?}: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("leakspy {}: bad JSON: {e}", args.join(" ")))
}

/// Runs `leakspy snapshot PID --json` and parses the census.
pub fn snapshot_json(pid: i32) -> Result<Value, String> {
    leakspy_json(&["snapshot", &pid.to_string(), "--json"])
}

/// Runs `capture` (a dump, a gcore) once the target has settled: `probe`, a reading of the live
/// target without timings, gives the same before and after it. A target's threads may still be
/// settling into their blocking calls when it says READY (a 3.14 target interned a string
/// between a dump and the `--pause` snapshot after it); up to five tries, the last capture kept.
pub fn capture_settled<T>(
    probe: impl Fn() -> Result<Value, String>,
    mut capture: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    std::thread::sleep(Duration::from_millis(300));
    let mut tries = 0;
    loop {
        tries += 1;
        let before = probe();
        let captured = capture()?;
        if tries == 5 || (before.is_ok() && before == probe()) {
            return Ok(captured);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The oldest and the newest interpreter present: the two ends of the layouts we support.
pub fn oldest_and_newest() -> Vec<Interpreter> {
    let all = supported_interpreters();
    let mut ends = vec![all[0].clone()];
    if all.len() > 1 {
        ends.push(all[all.len() - 1].clone());
    }
    ends
}

/// The newest interpreter that runs on the host (not in the chroot).
pub fn newest_host_python() -> Interpreter {
    supported_interpreters().into_iter().rev().find(|i| i.chroot.is_none()).expect("a host python 3")
}

/// The count a census gives for a type, if it lists it.
pub fn type_count(census: &Value, name: &str) -> Option<u64> {
    census["types"].as_array()?.iter().find(|t| t["type"] == name).and_then(|t| t["count"].as_u64())
}

/// The types named as growing (metric "count") in a list of suspects, in rank order.
pub fn count_suspects(suspects: &Value) -> Vec<String> {
    suspects
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|s| s["metric"] == "count")
                .filter_map(|s| s["type"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A CPU-bound process for as long as this lives: the loaded host of production, where
/// leakspy and its target compete for the cores.
pub struct CpuHog(Child);

impl CpuHog {
    pub fn start() -> CpuHog {
        CpuHog(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("start a CPU hog"))
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where scripts/setup.sh puts the real libraries from PyPI (tests/requirements.txt).
pub fn libs_root() -> PathBuf {
    std::env::var_os("LEAKSPY_LIBS_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/leakspy/libs"))
}

/// An interpreter that has the tests' libraries from PyPI, and the environment a target needs
/// to find them.
#[derive(Debug, Clone)]
pub struct LibraryPython {
    pub interp: Interpreter,
    pub env: Vec<(&'static str, PathBuf)>,
}

impl LibraryPython {
    pub fn start(&self, script: &str, args: &[&str]) -> Target {
        let env: Vec<(&str, &Path)> = self.env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        Target::start_with_env(&self.interp, script, args, &env)
    }

    /// True if every module in `modules` imports under this interpreter.
    fn imports(&self, modules: &[&str]) -> bool {
        let code = format!("import {}", modules.join(", "));
        let mut cmd = match &self.interp.chroot {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(&self.interp.exe);
                c
            }
            None => Command::new(&self.interp.exe),
        };
        cmd.args(["-c", &code]).envs(self.env.iter().map(|(k, v)| (*k, v))).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }
}

/// Every interpreter with the tests' libraries installed under which all of `modules` import:
/// pyenv virtual environments (the interpreter's own libpython, so leakspy reads them like the
/// plain interpreter) and the chroot's site directories. Prints, once per call, which
/// interpreters were left out and why, so a skip is never silent.
pub fn library_pythons(modules: &[&str]) -> Vec<LibraryPython> {
    let root = libs_root();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for interp in supported_interpreters() {
        let candidate = match &interp.chroot {
            None => {
                let version = interp.label.strip_prefix("pyenv ").unwrap_or_default();
                let python = root.join(format!("venv-{version}/bin/python"));
                (!version.is_empty() && python.exists()).then(|| LibraryPython {
                    interp: Interpreter { label: format!("{} (venv)", interp.label), exe: python, ..interp.clone() },
                    env: Vec::new(),
                })
            }
            Some(chroot) => {
                let site = PathBuf::from(format!("/opt/leakspy-libs-{}.{}", interp.major, interp.minor));
                chroot
                    .join(site.strip_prefix("/").unwrap())
                    .exists()
                    .then(|| LibraryPython { interp: interp.clone(), env: vec![("PYTHONPATH", site)] })
            }
        };
        match candidate {
            Some(lib) if lib.imports(modules) => found.push(lib),
            Some(lib) => missing.push(format!("{}: {} do not import", lib.interp.label, modules.join(", "))),
            None => {}
        }
    }
    if !missing.is_empty() {
        println!("interpreters without these libraries (skipped): {}", missing.join("; "));
    }
    if found.is_empty() {
        println!(
            "no interpreter has {} from PyPI: run scripts/setup.sh (it needs PyPI to be reachable); skipping",
            modules.join(", ")
        );
    }
    found
}

/// Runs `each` for every interpreter present, `width` of them at a time (they load each other,
/// as the processes of a busy host do, and the suite takes less time), and gathers the
/// problems each reports.
pub fn per_interpreter(width: usize, each: &(dyn Fn(&Interpreter) -> Vec<String> + Sync)) -> Vec<String> {
    let queue = std::sync::Mutex::new(supported_interpreters());
    let next = || queue.lock().ok().and_then(|mut q| q.pop());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..width)
            .map(|_| {
                scope.spawn(|| {
                    let mut problems = Vec::new();
                    while let Some(interp) = next() {
                        problems.extend(each(&interp));
                    }
                    problems
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("an interpreter's run panicked")).collect()
    })
}
