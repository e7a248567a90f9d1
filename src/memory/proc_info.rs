//! What /proc says about a process besides its memory: enough to tell one run of a program
//! from the next in a history file (PID, start time, command line, host) and its RSS.

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

/// The command line with NULs as spaces, as `ps` shows it.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(text.trim_end_matches('\0').replace('\0', " "))
}

/// Boot time plus the start time in clock ticks from /proc/PID/stat (field 22).
fn start_time_epoch(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
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

/// The first process (lowest PID) other than this one whose command line contains `pattern`.
pub fn find_by_cmdline(pattern: &str) -> Option<i32> {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| cmdline(*pid).is_some_and(|c| !c.is_empty() && c.contains(pattern)))
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

/// Where the process's resident memory is, from /proc/PID/smaps_rollup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemorySplit {
    pub rss_bytes: u64,
    pub anonymous_bytes: u64,
    pub file_bytes: u64,
    pub swap_bytes: u64,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_process() {
        let me = std::process::id() as i32;
        let info = ProcessInfo::read(me);
        assert!(info.start_time.ends_with('Z'), "{info:?}");
        assert!(!info.cmdline.is_empty());
        assert!(info.rss_bytes > 0);
        assert!(find_by_cmdline("no-such-command-line-anywhere-4711").is_none());
        let fds = descriptors(me).unwrap();
        assert!(fds.total >= 3 && fds.limit.is_some(), "{fds:?}");
        let split = memory_split(me).unwrap();
        assert!(split.rss_bytes > 0 && split.anonymous_bytes <= split.rss_bytes, "{split:?}");
    }
}
