//! The target's files are its own: leakspy reads the file a target maps, not whatever has its
//! name now, and a path is resolved inside the target's root, never out of it, and only to a
//! regular file. Real targets: one in the sid chroot (our container), one whose libpython is
//! replaced on disk while it runs.

mod common;

use common::scratch::Scratch;
use common::*;
use leakspy::memory::maps::{Mapping, MemoryMap};
use leakspy::memory::target_files::{Refusal, TargetFile, TargetFileError, open_in_root, open_mapped};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `f` on a thread and fails the test if it takes more than `limit`: what this file
/// checks includes "does not block".
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} took more than {limit:?}"))
}

/// Runs `cmd`, killed and failed if it runs longer than 10 s.
fn run_bounded(mut cmd: Command) -> Output {
    let limit = Duration::from_secs(10);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run leakspy");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for leakspy").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("leakspy's output")
}

/// `leakspy snapshot PID --json`, as root with every capability.
fn snapshot_output(pid: i32) -> Output {
    let mut cmd = Command::new(LEAKSPY);
    cmd.args(["snapshot", &pid.to_string(), "--json"]);
    run_bounded(cmd)
}

/// The same as root without CAP_SYS_ADMIN (nor CAP_CHECKPOINT_RESTORE): /proc/PID/map_files
/// is closed to it, so the file is opened by its path inside the target's root.
fn snapshot_output_by_path(pid: i32) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-sys_admin,-checkpoint_restore", "--", LEAKSPY, "snapshot", &pid.to_string()]);
    cmd.arg("--json");
    run_bounded(cmd)
}

/// The census of a run that must have succeeded.
fn census_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON census")
}

/// The census must be the target's own: same version, same number of objects.
fn assert_census_is_the_targets(census: &serde_json::Value, target: &Target, interp: &Interpreter) {
    let version = census["python_version"].as_str().unwrap_or_default();
    assert!(
        version.starts_with(&format!("{}.{}.", interp.major, interp.minor)),
        "{}: read as Python {version}",
        interp.label
    );
    assert_eq!(census["objects_total"], target.truth["objects_total"], "{}: objects_total", interp.label);
}

fn is_elf(file: TargetFile) -> bool {
    file.read_at(0, 4).map(|bytes| bytes == b"\x7fELF").unwrap_or(false)
}

/// The mapping at file offset 0 of the file whose path ends with `suffix`.
fn first_mapping(pid: i32, suffix: &str) -> Option<Mapping> {
    let maps = MemoryMap::read(pid).ok()?;
    maps.mappings.into_iter().find(|m| m.offset == 0 && m.path.ends_with(suffix))
}

fn sid_interpreter() -> Option<Interpreter> {
    let found = supported_interpreters().into_iter().rev().find(|i| i.chroot.is_some());
    if found.is_none() {
        println!("no interpreter in the sid chroot ({}): nothing to check", sid_root().display());
    }
    found
}

/// A chroot target is read through the file it maps, as before; and by its path, resolved
/// inside its real root, where map_files is not allowed.
#[test]
fn a_chroot_target_is_read_from_the_file_it_maps_or_by_path() {
    let Some(interp) = sid_interpreter() else { return };
    let target = Target::start(&interp, "census_target.py", &[]);
    assert_census_is_the_targets(&census_of(&snapshot_output(target.pid)), &target, &interp);
    assert_census_is_the_targets(&census_of(&snapshot_output_by_path(target.pid)), &target, &interp);

    let exe = interp.exe.to_str().unwrap().to_string();
    let mapping = first_mapping(target.pid, &exe).expect("the chroot's python is mapped");
    let pid = target.pid;
    let mapped = within(Duration::from_secs(2), "open_mapped", move || open_mapped(pid, &mapping));
    assert!(is_elf(mapped.expect("the mapped executable opens")));
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let by_path = within(Duration::from_secs(2), "open_in_root", move || open_in_root(&root, &exe));
    assert!(is_elf(by_path.expect("the executable opens by path inside the chroot")));
}

/// A second root standing in for a hostile container: where the chroot target's executable
/// is, a symlink to an absolute host path (which on the host is a real ELF file) or a FIFO.
/// Neither is opened; neither blocks; the errors name the target's path only.
#[test]
fn a_hostile_root_cannot_point_leakspy_at_host_files_or_block_it() {
    let Some(interp) = sid_interpreter() else { return };
    let target = Target::start(&interp, "idle_target.py", &[]);
    let exe = interp.exe.to_str().unwrap().to_string();
    assert!(first_mapping(target.pid, &exe).is_some(), "the target maps {exe}");

    let scratch = Scratch::new("files-hostile-root");
    let root = scratch.join("root");
    let planted = root.join(interp.exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    let open = |root: &Path, exe: &str| -> Result<TargetFile, TargetFileError> {
        let (root, exe) = (root.to_path_buf(), exe.to_string());
        within(Duration::from_secs(2), "open_in_root", move || open_in_root(&root, &exe))
    };

    // (a) An absolute link to the host's copy of this very executable: on the host it would
    // open and parse; inside the root it names nothing.
    let host_file = sid_root().join(interp.exe.strip_prefix("/").unwrap());
    assert!(host_file.is_file(), "{} exists on the host", host_file.display());
    std::os::unix::fs::symlink(&host_file, &planted).unwrap();
    let e = open(&root, &exe).map(is_elf).expect_err("a link out of the root must not open the host's file");
    let message = e.to_string();
    assert!(message.starts_with(&format!("{exe}: ")), "{message}");
    assert!(!message.contains(sid_root().to_str().unwrap()), "names a host path: {message}");
    assert!(matches!(e.reason, Refusal::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound), "{message}");

    // (b) A FIFO: refused at once, not waited on.
    std::fs::remove_file(&planted).unwrap();
    let fifo = CString::new(planted.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let e = open(&root, &exe).map(is_elf).expect_err("a FIFO must be refused");
    assert_eq!(e.to_string(), format!("{exe}: not a regular file (it is a FIFO)"));

    // (c) The real executable copied in: opened, so the refusals above are about what was
    // planted, not about the fake root.
    std::fs::remove_file(&planted).unwrap();
    std::fs::copy(&host_file, &planted).unwrap();
    assert!(is_elf(open(&root, &exe).expect("a regular file inside the root opens")));
}

/// A pyenv build and the libpython it links, and another version's libpython.
fn pyenv_with_libpython() -> Option<(Interpreter, PathBuf, PathBuf)> {
    let libpython = |interp: &Interpreter| -> Option<PathBuf> {
        let lib = interp.exe.parent()?.parent()?.join("lib");
        std::fs::read_dir(lib).ok()?.flatten().map(|e| e.path()).find(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&format!("libpython{}.{}", interp.major, interp.minor))
                && name.ends_with(".so.1.0")
                && !p.is_symlink()
        })
    };
    let pyenv: Vec<(Interpreter, PathBuf)> = supported_interpreters()
        .into_iter()
        .filter(|i| i.chroot.is_none() && i.label.starts_with("pyenv"))
        .filter_map(|i| libpython(&i).map(|lib| (i, lib)))
        .collect();
    let (interp, lib) = pyenv.last()?.clone();
    let (_, other) = pyenv.iter().find(|(i, _)| i.minor != interp.minor)?.clone();
    Some((interp, lib, other))
}

/// A package upgrade renames a new libpython over the one a running service maps. leakspy
/// must read the mapped one (through /proc/PID/map_files), not parse the new file as if the
/// process ran it (which read another version's symbols: "runs Python 32.114.111"); where
/// map_files is closed to it, it must say so rather than read the new file.
#[test]
fn a_library_replaced_on_disk_is_read_as_mapped() {
    let Some((interp, lib, other)) = pyenv_with_libpython() else {
        println!("no two pyenv builds with a shared libpython: nothing to check");
        return;
    };
    let scratch = Scratch::new("files-replaced");
    let copy = scratch.join(lib.file_name().unwrap());
    std::fs::copy(&lib, &copy).unwrap();
    let target = Target::start_with_env(&interp, "census_target.py", &[], &[("LD_LIBRARY_PATH", &*scratch)]);
    let copy_name = copy.to_str().unwrap();
    assert!(first_mapping(target.pid, copy_name).is_some(), "{}: the target does not map {copy_name}", interp.label);

    let incoming = scratch.join("incoming.so");
    std::fs::copy(&other, &incoming).unwrap();
    std::fs::rename(&incoming, &copy).unwrap();
    let deleted = format!("{copy_name} (deleted)");
    assert!(first_mapping(target.pid, &deleted).is_some(), "the kernel says {copy_name} was replaced");

    assert_census_is_the_targets(&census_of(&snapshot_output(target.pid)), &target, &interp);

    let out = snapshot_output_by_path(target.pid);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(&format!("{copy_name} (deleted) (replaced on disk since the target mapped it")), "{err}");
}
