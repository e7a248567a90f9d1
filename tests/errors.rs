//! Every failure a user can cause: one clear line on stderr, a distinct exit code, no panic.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("leakspy: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn modern_python() -> Interpreter {
    supported_interpreters().into_iter().find(|i| i.chroot.is_none()).expect("a host python 3")
}

#[test]
fn no_such_pid() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert_one_line_error(&leakspy(&["snapshot", &pid.to_string()]), 3, "no process with PID");
    assert_one_line_error(&leakspy(&["snapshot", "0"]), 3, "no process with PID");
}

#[test]
fn not_a_python_process() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let out = leakspy(&["snapshot", &child.id().to_string()]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_one_line_error(&out, 5, "is not a CPython process");
}

#[test]
fn unsupported_versions_are_named() {
    let old: Vec<Interpreter> = interpreters().into_iter().filter(|i| !i.is_supported()).collect();
    if old.is_empty() {
        println!("no interpreter older than 3.6 on this machine: nothing to check");
    }
    for interp in old {
        let target = Target::start(&interp, "idle_target.py", &[]);
        let out = leakspy(&["snapshot", &target.pid.to_string()]);
        assert_one_line_error(&out, 6, &format!("runs Python {}.{}", interp.major, interp.minor));
    }
}

#[test]
fn permission_denied_explains_ptrace() {
    // The target runs as root; leakspy as nobody may not read it, whatever ptrace_scope says.
    let target = Target::start(&modern_python(), "idle_target.py", &[]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", LEAKSPY, "snapshot", &target.pid.to_string()])
        .output()
        .expect("setpriv");
    assert_one_line_error(&out, 4, "permission denied");
    let err = stderr_of(&out);
    assert!(err.contains("ptrace_scope") && err.contains("CAP_SYS_PTRACE"), "{err}");
}

#[test]
fn output_file_is_written_whole_or_not_at_all() {
    let target = Target::start(&modern_python(), "idle_target.py", &[]);
    let dir = std::env::temp_dir().join(format!("leakspy-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("census.json");
    let out = leakspy(&["snapshot", &target.pid.to_string(), "--json", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let census: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(census["pid"], target.pid);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
    let missing = dir.join("no/such/dir/census.json");
    let out = leakspy(&["snapshot", &target.pid.to_string(), "-o", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("creating"), "{}", stderr_of(&out));
    assert!(!missing.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Kills targets at varied moments while leakspy reads them: every run must end with a census
/// or one of the "gone" errors, never a panic or a hang.
#[test]
fn target_exiting_mid_read_is_reported_not_a_crash() {
    let interp = modern_python();
    for i in 0..30u64 {
        let target = Target::start(&interp, "census_target.py", &[]);
        let run = Command::new(LEAKSPY)
            .args(["snapshot", &target.pid.to_string(), "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(i * 300));
        drop(target);
        let out = run.wait_with_output().unwrap();
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(3) | Some(8)), "run {i}: exit {code:?}: {}", stderr_of(&out));
        if code != Some(0) {
            assert_eq!(stderr_of(&out).trim_end().lines().count(), 1, "{}", stderr_of(&out));
        }
    }
}

/// A process has one tracer: with a debugger or strace attached, --pause cannot stop it, and
/// the user must hear who holds it, not "permission denied, run as root".
#[test]
fn a_target_already_traced_names_its_tracer() {
    let target = Target::start(&modern_python(), "idle_target.py", &[]);
    // This test thread becomes the tracer, as strace or gdb would.
    // SAFETY: PTRACE_SEIZE takes no pointers; the target is our own child and is killed below.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            target.pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    assert_eq!(rc, 0, "seize: {}", std::io::Error::last_os_error());
    let out = leakspy(&["snapshot", &target.pid.to_string(), "--pause"]);
    assert_one_line_error(&out, 4, &format!("is already traced by process {}", std::process::id()));
    // Without --pause nothing needs ptrace: the census is read as usual.
    assert!(leakspy(&["snapshot", &target.pid.to_string()]).status.success());
}
