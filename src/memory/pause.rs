//! `--pause`: a consistent copy of the target's memory, taken with every thread stopped, for
//! only as long as the copy takes.
//!
//! Threads are stopped with PTRACE_SEIZE + PTRACE_INTERRUPT, which (unlike SIGSTOP) is
//! invisible to the target and undone by the kernel itself if leakspy dies: a traced process
//! whose tracer exits is detached and continues. Decoding happens after the threads run again,
//! from the copy.

use super::live::LiveProcess;
use super::maps::MemoryMap;
use super::{ReadError, RemoteMemory};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest wait for all threads to stop; a thread in uninterruptible sleep may never do so.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads may start while we stop the others: list them again, this many times at most.
const MAX_THREAD_ROUNDS: usize = 10;

/// Every thread of a process, stopped until this is dropped.
pub struct Pause {
    stopped: Vec<i32>,
}

fn ptrace(request: libc::c_uint, tid: i32) -> std::io::Result<()> {
    // SAFETY: these requests (SEIZE, INTERRUPT, DETACH) take no pointers from us.
    let rc = unsafe {
        libc::ptrace(request, tid, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>())
    };
    if rc == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn thread_ids(pid: i32) -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

impl Pause {
    pub fn freeze(pid: i32) -> Result<Pause, ReadError> {
        let mut pause = Pause { stopped: Vec::new() };
        for _ in 0..MAX_THREAD_ROUNDS {
            let tids = thread_ids(pid).map_err(|_| ReadError::ProcessGone)?;
            let new: Vec<i32> = tids.into_iter().filter(|t| !pause.stopped.contains(t)).collect();
            if new.is_empty() {
                return Ok(pause);
            }
            for tid in new {
                match ptrace(libc::PTRACE_SEIZE, tid).and_then(|_| ptrace(libc::PTRACE_INTERRUPT, tid)) {
                    Ok(()) => pause.stopped.push(tid),
                    // The thread ended meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                        return Err(ReadError::Denied(e));
                    }
                    Err(e) => return Err(ReadError::Io(e)),
                }
                pause.wait_stopped(tid)?;
            }
        }
        Ok(pause)
    }

    /// Waits, bounded, for the interrupt to stop `tid` (or for it to report a stop it was
    /// already in, such as SIGSTOP).
    fn wait_stopped(&self, tid: i32) -> Result<(), ReadError> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if rc == tid {
                return Ok(());
            }
            if rc == -1 {
                let e = std::io::Error::last_os_error();
                return if e.raw_os_error() == Some(libc::ECHILD) { Ok(()) } else { Err(ReadError::Io(e)) };
            }
            if Instant::now() > deadline {
                return Err(ReadError::Io(std::io::Error::other(format!(
                    "thread {tid} did not stop within {STOP_TIMEOUT:?} (uninterruptible sleep?)"
                ))));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        for tid in &self.stopped {
            let _ = ptrace(libc::PTRACE_DETACH, *tid);
        }
    }
}

/// The target's writable memory as copied during a pause; reads elsewhere (read-only code and
/// data, which cannot change) go to the live process.
pub struct CopiedMemory<'a> {
    regions: BTreeMap<u64, Vec<u8>>,
    live: &'a mut LiveProcess,
}

impl<'a> CopiedMemory<'a> {
    /// Copies every writable mapping; unreadable parts (guard pages) are left out.
    pub fn copy(live: &'a mut LiveProcess, maps: &MemoryMap) -> Result<CopiedMemory<'a>, ReadError> {
        let mut regions = BTreeMap::new();
        for m in maps.mappings.iter().filter(|m| m.writable && m.readable && !m.path.starts_with("[v")) {
            let mut data = vec![0u8; (m.end - m.start) as usize];
            match live.read_uncached(m.start, &mut data) {
                Ok(n) => {
                    data.truncate(n);
                    regions.insert(m.start, data);
                }
                Err(ReadError::Unmapped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(CopiedMemory { regions, live })
    }
}

impl RemoteMemory for CopiedMemory<'_> {
    fn changes_under_reads(&self) -> bool {
        false
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if let Some((start, data)) = self.regions.range(..=addr).next_back() {
            let offset = (addr - start) as usize;
            if let Some(bytes) = data.get(offset..offset + buf.len()) {
                buf.copy_from_slice(bytes);
                return Ok(());
            }
        }
        self.live.read(addr, buf)
    }
}
