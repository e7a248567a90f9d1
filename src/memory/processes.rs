//! The processes leakspy can see (the host's, or a container's PID namespace): who each is,
//! whose it is and who its parent is. Selecting targets by command line, by user and by
//! descent (`--match`, `--user`, `--children`) and `leakspy ps` all start from this table.
//!
//! A process can exit between any two reads of /proc: an entry that vanishes while it is read
//! is left out, never an error.
//!
//! Not remoteprocess's process tree (`Process::child_processes`): it reads each process's
//! parent only, and fails as a whole when one entry of /proc cannot be listed; this table
//! also needs each process's owner and command line.

use std::collections::{HashMap, VecDeque};

/// One process as /proc describes it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessEntry {
    pub pid: i32,
    pub ppid: i32,
    /// Effective UID: the user `ps -o user` shows, the one whose files and memory the process
    /// can touch (a worker that dropped privileges has it set to its new user).
    pub uid: u32,
    /// Clock ticks since boot at which it started: with the PID, which process this is.
    pub start_ticks: u64,
    /// NULs as spaces, as `ps` shows it; empty for kernel threads and zombies.
    pub cmdline: String,
}

impl ProcessEntry {
    pub fn read(pid: i32) -> Option<ProcessEntry> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): the parent is field 4, the start time field 22.
        let ppid = fields.get(1)?.parse().ok()?;
        let start_ticks = fields.get(19)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1)?.parse().ok())?;
        let cmdline = super::proc_info::cmdline(pid).unwrap_or_default();
        Some(ProcessEntry { pid, ppid, uid, start_ticks, cmdline })
    }
}

/// Every process readable in /proc, by PID.
pub fn list() -> Vec<ProcessEntry> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids.into_iter().filter_map(ProcessEntry::read).collect()
}

/// The descendants of `root` in `table`, parents before their children. Each process is
/// visited once, so a table read while processes came and went (a PID reused as its own
/// ancestor's child) cannot loop.
pub fn descendants(table: &[ProcessEntry], root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in table.iter().filter(|e| e.pid != e.ppid) {
        children.entry(e.ppid).or_default().push(e.pid);
    }
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::from([root]);
    let mut queue = VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if seen.insert(child) {
                found.push(child);
                queue.push_back(child);
            }
        }
    }
    found
}

/// This process and its ancestors: a process that started leakspy (a shell running
/// `leakspy attach --match app.py`, a script around it) has the pattern in its own command
/// line, and is never what the user means.
pub fn self_and_ancestors() -> Vec<i32> {
    let mut chain = vec![std::process::id() as i32];
    // Bounded: PID 1 is every chain's end, and a chain is never longer than the table.
    for _ in 0..4096 {
        let Some(last) = chain.last().copied() else { break };
        match ProcessEntry::read(last) {
            Some(e) if e.ppid > 0 && !chain.contains(&e.ppid) => chain.push(e.ppid),
            _ => break,
        }
    }
    chain
}

/// The user leakspy runs as (effective UID).
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The name of a UID in this system's user database, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; all-zero is a valid value for it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed with it.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// "www-data (33)", or "uid 33" where the user database has no name for it (a container's
/// user seen from the host).
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} ({uid})"),
        None => format!("uid {uid}"),
    }
}

/// A user given on the command line: a UID, or a name in this system's user database.
pub fn parse_user(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(uid);
    }
    let name = std::ffi::CString::new(text).map_err(|_| "a user name cannot hold a NUL".to_string())?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; all-zero is a valid value for it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed with it.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(format!(
            "no user named {text:?} here; give a numeric UID (a container's users may not be known to the host)"
        ));
    }
    Ok(pwd.pw_uid)
}

/// Seconds since boot at which a process started (its start ticks over the clock rate), and
/// the seconds since boot now: how long it has run.
pub fn uptime_secs(start_ticks: u64) -> Option<f64> {
    let now: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((now - start_ticks as f64 / hz).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, ppid: i32) -> ProcessEntry {
        ProcessEntry { pid, ppid, uid: 0, start_ticks: 0, cmdline: String::new() }
    }

    #[test]
    fn descendants_come_parents_first_and_never_loop() {
        let table = vec![entry(1, 0), entry(10, 1), entry(11, 10), entry(12, 10), entry(13, 11), entry(20, 1)];
        assert_eq!(descendants(&table, 10), vec![11, 12, 13]);
        assert_eq!(descendants(&table, 13), Vec::<i32>::new());
        // A torn read can show a cycle (a PID reused under its own descendant): visited once.
        let torn = vec![entry(5, 6), entry(6, 5)];
        assert_eq!(descendants(&torn, 5), vec![6]);
    }

    #[test]
    fn this_process_is_read_and_users_are_named() {
        let me = ProcessEntry::read(std::process::id() as i32).expect("our own entry");
        assert_eq!(me.uid, current_uid());
        assert!(me.ppid > 0 && !me.cmdline.is_empty(), "{me:?}");
        assert!(list().iter().any(|e| e.pid == me.pid));
        let chain = self_and_ancestors();
        assert_eq!(chain[0], me.pid);
        assert!(chain.contains(&me.ppid));
        assert_eq!(parse_user("0"), Ok(0));
        assert_eq!(parse_user("root"), Ok(0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(parse_user("no-such-user-4711").unwrap_err().contains("numeric UID"));
        assert!(describe_user(4_000_000_000).starts_with("uid "));
        assert!(uptime_secs(me.start_ticks).is_some_and(|s| s >= 0.0));
    }
}
