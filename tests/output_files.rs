//! The files leakspy writes as root (`snapshot -o`, `--append`, `attach --record`), against
//! another user's planted links and files, devices, FIFOs, stdout, kept modes and owners, and a
//! full disk.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user that plays the other user (nobody, as tests/errors.rs uses).
const OTHER_UID: u32 = 65534;

fn scratch(name: &str, mode: u32) -> scratch::Scratch {
    let dir = scratch::Scratch::new(&format!("files-{name}"));
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("leakspy: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Runs leakspy, failing the test if it has not finished within 60 s (a FIFO open that waits
/// for a reader would hang it).
fn leakspy_within(args: &[&str]) -> Output {
    let mut child =
        Command::new(LEAKSPY).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run leakspy");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("leakspy {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs a shell script as the other user.
fn as_other_user(script: &str) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script])
        .output()
        .expect("setpriv");
    assert!(out.status.success(), "{script}: {}", stderr_of(&out));
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn uid_gid(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// Every line of a history parses as a census of `pid`; how many there are.
fn census_lines(path: &Path, pid: i32) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:.200}"));
        assert_eq!(record["pid"], pid);
    }
    assert!(text.ends_with('\n'));
    text.lines().count()
}

#[test]
fn planted_links_and_files_in_a_shared_directory_change_nothing() {
    let target = Target::start(&newest_host_python(), "idle_target.py", &[]);
    let pid = target.pid.to_string();
    let shared = scratch("shared", 0o1777);
    let private = scratch("private", 0o755);
    let victim = private.join("victim");
    std::fs::write(&victim, "root's own file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The other user plants: links at the temporary names the old code used (.NAME.PID.tmp)
    // for the PIDs to come, links at final names, files and a FIFO of their own, readable
    // and writable by all.
    let next = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or_else(std::process::id)
        + 1;
    let guesses = 2000;
    as_other_user(&format!(
        "cd {dir} && for i in $(seq {next} {last}); do ln -s {victim} .census.prom.$i.tmp; done && \
         ln -s {victim} linked.prom && ln -s {victim} linked.jsonl && \
         echo planted > owned.prom && echo planted > owned.jsonl && chmod 666 owned.prom owned.jsonl && \
         mkfifo -m 666 pipe.prom",
        dir = s(&shared),
        victim = s(&victim),
        last = next + guesses - 1,
    ));
    let planted = guesses as usize + 5;
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), planted);

    // The planted temporary names do not matter: the temporary name is random.
    let census = shared.join("census.prom");
    let out = leakspy_within(&["snapshot", &pid, "--format", "prometheus", "-o", s(&census)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(std::fs::read_to_string(&census).unwrap().contains("leakspy_objects_total"));
    let meta = std::fs::symlink_metadata(&census).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600), "a new file: root's, 0600");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), planted + 1, "no temporary file left");
    for i in next..next + guesses {
        let link = shared.join(format!(".census.prom.{i}.tmp"));
        assert_eq!(std::fs::read_link(&link).unwrap(), victim, "planted link {i} untouched");
    }

    // A link at the final name is refused, for -o, --append and --record.
    let linked = shared.join("linked.prom");
    let out = leakspy_within(&["snapshot", &pid, "-o", s(&linked)]);
    assert_one_line_error(&out, "is a symbolic link");
    assert!(stderr_of(&out).contains("readlink -f"), "says what to do: {}", stderr_of(&out));
    let linked_history = shared.join("linked.jsonl");
    assert_one_line_error(&leakspy_within(&["snapshot", &pid, "--append", s(&linked_history)]), "is a symbolic link");
    let out = leakspy_within(&["attach", &pid, "--samples", "1", "--json", "--record", s(&linked_history)]);
    assert_one_line_error(&out, "is a symbolic link");
    for link in [&linked, &linked_history] {
        assert_eq!(std::fs::read_link(link).unwrap(), victim);
    }

    // A file or FIFO of the other user's is neither written nor taken over (its owner and
    // mode 666 would hand them the census).
    for name in ["owned.prom", "pipe.prom"] {
        let out = leakspy_within(&["snapshot", &pid, "-o", s(&shared.join(name))]);
        assert_one_line_error(&out, "belongs to user 65534");
    }
    let owned_history = shared.join("owned.jsonl");
    assert_one_line_error(&leakspy_within(&["snapshot", &pid, "--append", s(&owned_history)]), "belongs to user 65534");
    for name in ["owned.prom", "owned.jsonl"] {
        let path = shared.join(name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "planted\n", "{name}");
        assert_eq!((uid_gid(&path).0, mode_of(&path)), (OTHER_UID, 0o666), "{name}");
    }
    assert!(std::fs::metadata(shared.join("pipe.prom")).unwrap().file_type().is_fifo());

    // A root-owned file under a second name in the shared directory (what a hard link makes,
    // where protected_hardlinks is off) is not appended to.
    let hard = shared.join("hard.jsonl");
    std::fs::hard_link(&victim, &hard).unwrap();
    assert_one_line_error(&leakspy_within(&["snapshot", &pid, "--append", s(&hard)]), "hard links");

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own file\n", "the victim is untouched");
    assert_eq!(mode_of(&victim), 0o644);
}

/// Puts the machine's /dev/null, /dev/stdout and /dev/stderr back if a regression replaced
/// them with regular files (as leakspy once did): other work shares this machine.
struct DevGuard;

impl Drop for DevGuard {
    fn drop(&mut self) {
        if !std::fs::symlink_metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device()) {
            let _ = std::fs::remove_file("/dev/null");
            let _ = Command::new("mknod").args(["-m", "666", "/dev/null", "c", "1", "3"]).status();
        }
        for (link, fd) in [("/dev/stdout", 1), ("/dev/stderr", 2)] {
            if !std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(link);
                let _ = std::os::unix::fs::symlink(format!("/proc/self/fd/{fd}"), link);
            }
        }
    }
}

#[test]
fn devices_fifos_and_stdout_are_written_as_they_are() {
    let target = Target::start(&newest_host_python(), "idle_target.py", &[]);
    let pid = target.pid.to_string();
    let dir = scratch("devices", 0o755);
    // First a private node of the null device: a regression replaces that one, and the test
    // stops before it touches the machine's /dev/null.
    let made = Command::new("mknod").args(["-m", "666", s(&dir.join("null")), "c", "1", "3"]).status().unwrap();
    assert!(made.success(), "mknod");
    let _restore = DevGuard;
    for null in [s(&dir.join("null")), "/dev/null"] {
        let before = std::fs::metadata(null).unwrap();
        assert!(before.file_type().is_char_device());
        let out = leakspy_within(&["snapshot", &pid, "--json", "-o", null]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(out.stdout.is_empty());
        let after = std::fs::metadata(null).unwrap();
        assert!(after.file_type().is_char_device(), "{null} is still a device");
        assert_eq!((after.rdev(), after.ino()), (before.rdev(), before.ino()), "{null} is the same device");
    }

    for stdout in ["-", "/dev/stdout"] {
        let out = leakspy_within(&["snapshot", &pid, "--json", "-o", stdout]);
        assert!(out.status.success(), "{stdout}: {}", stderr_of(&out));
        let census: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(census["pid"], target.pid, "-o {stdout}");
    }
    // Other links to streams (like /dev/stderr) are refused, with the way to stdout in the message.
    let stderr_link = dir.join("stderr");
    std::os::unix::fs::symlink("/proc/self/fd/2", &stderr_link).unwrap();
    assert_one_line_error(&leakspy_within(&["snapshot", &pid, "-o", s(&stderr_link)]), "for stdout, use -o -");
    assert!(std::fs::symlink_metadata(&stderr_link).unwrap().file_type().is_symlink());

    let fifo = dir.join("census.pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // No reader: an error at once, not a wait.
    assert_one_line_error(&leakspy_within(&["snapshot", &pid, "--json", "-o", s(&fifo)]), "nobody reads");
    // With a reader, the census goes down the pipe.
    let reader = Command::new("cat").arg(&fifo).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = leakspy_within(&["snapshot", &pid, "--json", "-o", s(&fifo)]);
        if out.status.success() {
            break;
        }
        // cat may not have opened its end yet.
        assert!(stderr_of(&out).contains("nobody reads") && Instant::now() < deadline, "{}", stderr_of(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = reader.wait_with_output().unwrap();
    let census: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(census["pid"], target.pid);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");

    // A history must be a regular file: a device would swallow it, a FIFO block it.
    for history in [s(&dir.join("null")), s(&fifo)] {
        let out = leakspy_within(&["snapshot", &pid, "--append", history]);
        assert_one_line_error(&out, "not a regular file");
    }
    assert!(std::fs::metadata(dir.join("null")).unwrap().file_type().is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn modes_and_owners_are_kept_and_new_files_are_private() {
    let target = Target::start(&newest_host_python(), "idle_target.py", &[]);
    let pid = target.pid.to_string();
    // Only root writes this directory: a file owned by someone else was put there on purpose.
    let dir = scratch("modes", 0o755);

    let new = dir.join("new.json");
    let out = leakspy_within(&["snapshot", &pid, "--json", "-o", s(&new)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((mode_of(&new), uid_gid(&new)), (0o600, (0, 0)), "a new output file is root's, 0600");

    // A 0600 file of another user's keeps its mode and owner when it is replaced.
    let kept = dir.join("kept.json");
    std::fs::write(&kept, "old").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&kept, OTHER_UID, OTHER_UID);
    let inode_before = std::fs::metadata(&kept).unwrap().ino();
    let out = leakspy_within(&["snapshot", &pid, "--json", "-o", s(&kept)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let census: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    assert_eq!(census["pid"], target.pid);
    assert_ne!(std::fs::metadata(&kept).unwrap().ino(), inode_before, "replaced, not rewritten");
    assert_eq!((mode_of(&kept), uid_gid(&kept)), (0o600, (OTHER_UID, OTHER_UID)));

    // A 0644 file stays 0644; --mode sets the mode whatever the umask.
    let wide = dir.join("wide.prom");
    std::fs::write(&wide, "old").unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = leakspy_within(&["snapshot", &pid, "--format", "prometheus", "-o", s(&wide)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode_of(&wide), 0o644);
    let chosen = dir.join("chosen.prom");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("umask 077; exec {LEAKSPY} snapshot {pid} --format prometheus --mode 0664 -o {}", s(&chosen)),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode_of(&chosen), 0o664);
    let out = leakspy_within(&["snapshot", &pid, "--mode", "4755", "-o", s(&chosen)]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", stderr_of(&out));

    // A new history is 0600; appends keep an existing history's mode and owner.
    let history = dir.join("history.jsonl");
    let out = leakspy_within(&["snapshot", &pid, "--append", s(&history)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((mode_of(&history), uid_gid(&history)), (0o600, (0, 0)));
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o640)).unwrap();
    chown(&history, OTHER_UID, OTHER_UID);
    let out = leakspy_within(&["snapshot", &pid, "--append", s(&history)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((mode_of(&history), uid_gid(&history)), (0o640, (OTHER_UID, OTHER_UID)));
    assert_eq!(census_lines(&history, target.pid), 2);

    let record = dir.join("record.jsonl");
    let out = leakspy_within(&["attach", &pid, "--samples", "1", "--json", "--record", s(&record)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode_of(&record), 0o600, "a new record file is 0600");
}

/// A small tmpfs, unmounted (and its mount point removed) when dropped.
struct SmallFs(scratch::Scratch);

impl SmallFs {
    /// None (with the reason printed) where this test may not mount.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = scratch("tmpfs", 0o755);
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(&dir)]).output();
        match out {
            Ok(out) if out.status.success() => Some(SmallFs(dir)),
            Ok(out) => {
                println!("cannot mount a tmpfs here ({}): skipping the full-disk test", stderr_of(&out).trim());
                None
            }
            Err(e) => {
                println!("cannot run mount ({e}): skipping the full-disk test");
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // The mount point itself goes with the scratch directory, after this.
        let _ = Command::new("umount").arg(&*self.0).status();
    }
}

/// Writes to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let page = [b'x'; 4096];
    while file.write_all(&page).is_ok() {}
    while file.write_all(b"x").is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_failed_append_leaves_the_history_as_it_was() {
    let Some(fs) = SmallFs::mount("256k") else { return };
    let target = Target::start(&newest_host_python(), "idle_target.py", &[]);
    let pid = target.pid.to_string();
    let history = fs.0.join("history.jsonl");
    let record = fs.0.join("record.jsonl");
    let out = leakspy_within(&["snapshot", &pid, "--append", s(&history)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = leakspy_within(&["attach", &pid, "--samples", "1", "--json", "--record", s(&record)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let filler = fs.0.join("filler");
    fill(&filler);

    // The history's last page has room for part of a line: the write starts, then fails.
    let size = std::fs::metadata(&history).unwrap().len();
    println!("history: {size} bytes, {} free in its last page", (4096 - size % 4096) % 4096);
    let before = std::fs::read(&history).unwrap();
    let out = leakspy_within(&["snapshot", &pid, "--append", s(&history)]);
    assert_one_line_error(&out, "No space left on device");
    assert!(stderr_of(&out).contains("undone"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(&history).unwrap(), before, "the history is unchanged, byte for byte");

    // attach --record: the same, and attach still prints its summary before the error.
    let record_before = std::fs::read(&record).unwrap();
    let out =
        leakspy_within(&["attach", &pid, "--samples", "3", "--interval", "0.2", "--json", "--record", s(&record)]);
    assert_one_line_error(&out, "No space left on device");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["ended_because"], "error");
    assert_eq!(std::fs::read(&record).unwrap(), record_before, "the record file is unchanged, byte for byte");

    // Space again: the next records are whole lines after the old ones.
    std::fs::remove_file(&filler).unwrap();
    let out = leakspy_within(&["snapshot", &pid, "--append", s(&history)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(census_lines(&history, target.pid), 2);
    let out = leakspy_within(&["attach", &pid, "--samples", "1", "--json", "--record", s(&record)]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(census_lines(&record, target.pid), 2);
    let report = leakspy_within(&["trend", s(&history), "--json"]);
    assert!(!stderr_of(&report).contains("skipped"), "trend skips no line: {}", stderr_of(&report));
}
