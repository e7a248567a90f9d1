//! What /proc says about a process besides its memory: enough to tell one run of a program
//! from the next in a history file (PID, start time, command line, host) and its RSS.
//!
//! remoteprocess gives the executable's path (`exe_path`) and, in `pause`, the thread list;
//! what it does not read is read here: the start time, the executable's device and inode,
//! AT_RANDOM, RSS, descriptors (and the pagemap, in `live`).

use super::live::LiveProcess;
use super::{RemoteMemory, u64_at};
use crate::cpython::pymalloc::PymallocStats;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProcessInfo {
    /// RFC 3339 UTC start time: with the PID, tells a restarted service from the same one.
    pub start_time: String,
    pub cmdline: String,
    pub hostname: String,
    pub rss_bytes: u64,
}

impl ProcessInfo {
    pub fn read(pid: i32) -> ProcessInfo {
        ProcessInfo {
            start_time: start_time_epoch(pid)
                .map(|secs| {
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                        .to_string()
                })
                .unwrap_or_default(),
            cmdline: cmdline(pid).unwrap_or_default(),
            hostname: hostname(),
            rss_bytes: rss_bytes(pid).unwrap_or(0),
        }
    }
}

/// The path of the target's executable (/proc/PID/exe), from remoteprocess; the kernel adds
/// ` (deleted)` when the file was replaced on disk. `None` once the process is gone (or for
/// a kernel thread).
pub fn exe_path(pid: i32) -> Option<String> {
    remoteprocess::Process::new(pid).ok()?.exe().ok()
}

/// The command line with NULs as spaces, as `ps` shows it. Not remoteprocess's `cmdline`,
/// which fails on an argument that is not UTF-8 and drops empty ones: a history record must
/// name the process whatever its arguments are.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(text.trim_end_matches('\0').replace('\0', " "))
}

/// What makes a process the one leakspy attached to. A PID is reused once its process exits,
/// and exec() puts another program (or a fresh interpreter: uWSGI reloads so) under the same
/// PID and start time: either would have leakspy follow stale addresses, or merge two
/// processes into one series. So before every sample the start time, the executable and the
/// 16 random bytes the kernel gives each exec (AT_RANDOM) are compared; the last tell an exec
/// of the same non-PIE binary apart even where nothing is mapped elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    start_ticks: Option<u64>,
    /// Device and inode of the executable.
    exe: Option<(u64, u64)>,
    exec_random: Option<[u8; 16]>,
}

/// What became of the process an identity was taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    Same,
    Gone,
    /// The PID now belongs to another process, or the process ran exec().
    Replaced,
}

impl ProcessIdentity {
    pub fn read(pid: i32) -> ProcessIdentity {
        ProcessIdentity { start_ticks: start_ticks(pid), exe: exe_identity(pid), exec_random: exec_random(pid) }
    }

    pub fn check(&self, pid: i32) -> Sameness {
        if start_ticks(pid).is_none() {
            return Sameness::Gone;
        }
        // A part that could not be read (a process in the middle of exec, a momentary
        // failure) proves nothing either way: only parts read both times are compared.
        let now = ProcessIdentity::read(pid);
        fn differs<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            matches!((a, b), (Some(x), Some(y)) if x != y)
        }
        let replaced = now.start_ticks != self.start_ticks
            || differs(&now.exe, &self.exe)
            || differs(&now.exec_random, &self.exec_random);
        if !replaced {
            Sameness::Same
        } else if has_exited(pid) {
            // An exiting process loses its memory and executable before its stat.
            Sameness::Gone
        } else {
            Sameness::Replaced
        }
    }
}

/// The 16 random bytes at AT_RANDOM (from /proc/PID/auxv), on the stack exec() built.
fn exec_random(pid: i32) -> Option<[u8; 16]> {
    const AT_RANDOM: u64 = 25;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let addr = auxv.chunks_exact(16).find(|e| u64_at(e, 0) == AT_RANDOM).map(|e| u64_at(e, 8))?;
    let mut bytes = [0u8; 16];
    LiveProcess::new(pid).read(addr, &mut bytes).ok()?;
    Some(bytes)
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn exe_identity(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Gone, a zombie, dead, or on its way out: the process has exited even if its parent has not
/// reaped it. A user process that is exiting has already lost its executable link.
pub fn has_exited(pid: i32) -> bool {
    let zombie_or_gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(true);
    zombie_or_gone || (exe_path(pid).is_none() && !is_kernel_thread(pid))
}

/// PF_KTHREAD in the flags field of /proc/PID/stat.
pub fn is_kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name: state is the first, flags the seventh.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The kernel's name for a process (/proc/PID/comm).
pub fn command_name(pid: i32) -> Option<String> {
    Some(std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_string())
}

/// Boot time plus the start time in clock ticks from /proc/PID/stat (field 22).
fn start_time_epoch(pid: i32) -> Option<u64> {
    let ticks = start_ticks(pid)?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(boot + ticks / hz)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Resident set size; `None` once the process is gone.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page_size)
}

/// Memory the system can still give without swapping (MemAvailable).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors by kind, from /proc/PID/fd.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Descriptors {
    pub total: u64,
    pub regular_files: u64,
    pub sockets: u64,
    pub pipes: u64,
    pub other: u64,
    /// The soft RLIMIT_NOFILE of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

pub fn descriptors(pid: i32) -> Option<Descriptors> {
    let mut d = Descriptors::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy();
        d.total += 1;
        if target.starts_with("socket:") {
            d.sockets += 1;
        } else if target.starts_with("pipe:") {
            d.pipes += 1;
        } else if target.starts_with('/') && !target.starts_with("/dev/") {
            d.regular_files += 1;
        } else {
            d.other += 1;
        }
    }
    d.limit = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    });
    Some(d)
}

/// Where the process's resident memory is: /proc/PID/smaps_rollup's split, pymalloc's own
/// accounting, and from them the parts a person asks about (live objects, pymalloc's free
/// space, memory outside pymalloc).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemorySplit {
    pub rss_bytes: u64,
    pub anonymous_bytes: u64,
    pub file_bytes: u64,
    pub swap_bytes: u64,
    /// pymalloc's arenas, pools and blocks as `sys._debugmallocstats()` counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pymalloc: Option<PymallocStats>,
    /// Why `pymalloc` is absent ("pymalloc state not found (stripped binary)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pymalloc_missing: Option<String>,
    /// Bytes held by live Python objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_bytes: Option<MemoryPart>,
    /// Resident bytes outside pymalloc and outside the files mapped (interpreter, extension
    /// modules' code): what malloc and C code hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_bytes: Option<MemoryPart>,
}

/// A figure of the split with how it was arrived at: measured, or an estimate that says what
/// it includes and leaves out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryPart {
    pub bytes: u64,
    pub estimate: bool,
    pub what: String,
}

/// How the live objects' bytes were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectBytes {
    /// sys.getsizeof summed over every object of the heap graph (`--all`).
    Summed(u64),
    /// GC-tracked objects at their types' basic sizes (and GC headers).
    BasicSizes(u64),
}

impl MemorySplit {
    /// Adds pymalloc's state (or why it is missing) and the parts derived from it.
    pub fn add_python_parts(&mut self, pymalloc: Result<PymallocStats, String>, objects: Option<ObjectBytes>) {
        match pymalloc {
            Ok(stats) => self.pymalloc = Some(stats),
            Err(why) => self.pymalloc_missing = Some(why),
        }
        self.object_bytes = objects.map(|o| match o {
            ObjectBytes::Summed(bytes) => MemoryPart {
                bytes,
                estimate: false,
                what: "sys.getsizeof summed over every object (GC-tracked or not)".into(),
            },
            ObjectBytes::BasicSizes(bytes) => MemoryPart {
                bytes,
                estimate: true,
                what: "estimate: GC-tracked objects at their types' basic sizes; untracked objects (str, int, \
                       bytes) and variable parts (list items, dict tables) are not counted (--all sums them)"
                    .into(),
            },
        });
        let arenas = self.pymalloc.as_ref().map_or(0, |p| p.arena_bytes);
        self.native_bytes = (self.rss_bytes > 0).then(|| MemoryPart {
            bytes: self.rss_bytes.saturating_sub(arenas).saturating_sub(self.file_bytes),
            estimate: true,
            what: if self.pymalloc.is_some() {
                "estimate: RSS minus pymalloc's arenas minus file-backed pages (the interpreter's and extension \
                 modules' code); includes objects over 512 bytes and buffers from malloc, C extensions' memory, \
                 thread stacks and malloc's own free space"
                    .into()
            } else {
                "estimate: RSS minus file-backed pages (pymalloc's arenas unknown, so included)".into()
            },
        });
    }

    /// The three parts a person asks about, adding up to the RSS: live objects, pymalloc's
    /// free space, and the rest (malloc, C extensions, code). `None` without pymalloc's state.
    pub fn parts(&self) -> Option<SplitParts> {
        let pymalloc = self.pymalloc.as_ref()?;
        let (objects, objects_exact) = match &self.object_bytes {
            Some(part) if !part.estimate => (part.bytes, true),
            _ => (pymalloc.used_bytes, false),
        };
        let free = pymalloc.empty_bytes;
        Some(SplitParts {
            rss: self.rss_bytes,
            objects,
            objects_exact,
            pymalloc_free: free,
            empty_fraction: pymalloc.empty_fraction(),
            other: self.rss_bytes.saturating_sub(objects).saturating_sub(free),
        })
    }
}

/// RSS = objects + pymalloc_free + other. `objects` is the sum of sizes with `--all`
/// (`objects_exact`), else the bytes of pymalloc's blocks in use (small objects and their parts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitParts {
    pub rss: u64,
    pub objects: u64,
    pub objects_exact: bool,
    pub pymalloc_free: u64,
    pub empty_fraction: f64,
    pub other: u64,
}

pub fn memory_split(pid: i32) -> Option<MemorySplit> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let rss = field("Rss:");
    let anonymous = field("Anonymous:");
    Some(MemorySplit {
        rss_bytes: rss,
        anonymous_bytes: anonymous,
        file_bytes: rss.saturating_sub(anonymous),
        swap_bytes: field("Swap:"),
        ..MemorySplit::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_under_the_same_pid_is_a_replacement() {
        let me = std::process::id() as i32;
        assert_eq!(ProcessIdentity::read(me).check(me), Sameness::Same);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; exec sleep 5"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Right after exec, its auxiliary vector may not be readable yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut before = ProcessIdentity::read(pid);
        while before.exec_random.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            before = ProcessIdentity::read(pid);
        }
        assert!(before.exec_random.is_some() && before.exe.is_some(), "{before:?}");
        assert_eq!(before.check(pid), Sameness::Same);
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while before.check(pid) == Sameness::Same && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(before.check(pid), Sameness::Replaced);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(before.check(pid), Sameness::Gone);
    }

    #[test]
    fn describes_this_process() {
        let me = std::process::id() as i32;
        let info = ProcessInfo::read(me);
        assert!(info.start_time.ends_with('Z'), "{info:?}");
        assert!(!info.cmdline.is_empty());
        assert!(info.rss_bytes > 0);
        let fds = descriptors(me).unwrap();
        assert!(fds.total >= 3 && fds.limit.is_some(), "{fds:?}");
        let split = memory_split(me).unwrap();
        assert!(split.rss_bytes > 0 && split.anonymous_bytes <= split.rss_bytes, "{split:?}");
    }
}
