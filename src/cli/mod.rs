//! The commands: argument types and the loops that drive the rooms below. With output/, the
//! only code that prints.

pub mod attach;
pub mod snapshot;

use crate::cpython::process::PythonProcess;
use crate::error::LeakspyError;
use crate::memory::live::LiveProcess;

/// Opens a target for reading and identifies its interpreter.
pub fn open_target(pid: i32) -> Result<(PythonProcess, LiveProcess), LeakspyError> {
    let mut mem = LiveProcess::new(pid);
    let process = PythonProcess::inspect(pid, &mut mem)?;
    Ok((process, mem))
}

/// The target's resident set size, for the live header; `None` once it is gone.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page_size.max(4096) as u64)
}
