//! `--pause`: a consistent copy of the target's memory, taken with every thread stopped, for
//! only as long as the copy takes.
//!
//! Threads are stopped with PTRACE_SEIZE + PTRACE_INTERRUPT, which (unlike SIGSTOP) is
//! invisible to the target and undone by the kernel itself if leakspy dies: a traced process
//! whose tracer exits is detached and continues. Decoding happens after the threads run again,
//! from the copy.

use super::live::{LiveProcess, PAGE_SIZE};
use super::maps::MemoryMap;
use super::{ReadError, RemoteMemory};
use std::ops::Range;
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
                        return Err(match tracer_of(pid, tid) {
                            Some(tracer) => ReadError::AlreadyTraced { tracer },
                            None => ReadError::Denied(e),
                        });
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

/// The process tracing a thread, if another one does: then ptrace fails with EPERM even for
/// root, and the user must hear who holds it, not "run as root". TracerPid names the tracing
/// thread; its Tgid is the process a user knows (the debugger, strace).
fn tracer_of(pid: i32, tid: i32) -> Option<i32> {
    let field = |path: String, name: &str| -> Option<i32> {
        let status = std::fs::read_to_string(path).ok()?;
        status.lines().find_map(|l| l.strip_prefix(name))?.trim().parse().ok()
    };
    let thread = field(format!("/proc/{pid}/task/{tid}/status"), "TracerPid:").filter(|&t| t != 0)?;
    let tracer = field(format!("/proc/{thread}/status"), "Tgid:").unwrap_or(thread);
    (tracer != std::process::id() as i32).then_some(tracer)
}

impl Drop for Pause {
    fn drop(&mut self) {
        for tid in &self.stopped {
            let _ = ptrace(libc::PTRACE_DETACH, *tid);
        }
    }
}

/// The target's writable memory as copied during a pause. Only what the target wrote is
/// copied: a thread's 8 MiB stack of which it used 20 KiB, a reservation of gigabytes never
/// touched, cost what they hold, not their size.
/// - Private anonymous memory (the heap, arenas, stacks): the pages the target wrote are
///   copied; the others read as the zeros they are.
/// - Private file mappings (a library's .data): the pages written are copied; the others still
///   hold the file's bytes, and are read from the process (unchanged while it ran, unless it
///   writes them first: such pages hold no Python objects, only a library's static data).
/// - Shared mappings (shared memory, shared files) and read-only ones (code, constants) are
///   read from the process: other processes can write shared memory whatever leakspy
///   stops, and read-only memory cannot change.
pub struct CopiedMemory<'a> {
    /// Sorted, non-overlapping: every readable mapping of the pause, in pieces.
    regions: Vec<Region>,
    live: &'a mut LiveProcess,
    /// Bytes copied while the target was stopped.
    pub bytes_copied: u64,
}

struct Region {
    range: Range<u64>,
    contents: Contents,
}

enum Contents {
    Copied(Vec<u8>),
    /// Anonymous memory the target never wrote.
    Zeros,
    /// Read from the process when asked (see above).
    Live,
}

/// Bytes copied per read: a mapping larger than the kernel's limit for one read (2 GiB) is
/// never cut short, and a page that cannot be read costs only itself.
const COPY_PIECE: usize = 64 << 20;

impl<'a> CopiedMemory<'a> {
    /// Copies what the target wrote of its private writable mappings (while it is stopped).
    pub fn copy(live: &'a mut LiveProcess, maps: &MemoryMap) -> Result<CopiedMemory<'a>, ReadError> {
        let mut regions = Vec::new();
        let mut bytes_copied = 0;
        for m in maps.mappings.iter().filter(|m| m.readable && !m.path.starts_with("[v")) {
            if !m.writable || m.shared {
                regions.push(Region { range: m.start..m.end, contents: Contents::Live });
                continue;
            }
            let unwritten = if m.is_file() { Contents::Live } else { Contents::Zeros };
            let runs = live.populated_runs(m.start, m.end).unwrap_or_else(|| std::iter::once(m.start..m.end).collect());
            let mut at = m.start;
            for run in runs {
                if run.start > at {
                    regions.push(Region { range: at..run.start, contents: unwritten.same() });
                }
                bytes_copied += copy_run(live, run.clone(), &mut regions)?;
                at = run.end;
            }
            if at < m.end {
                regions.push(Region { range: at..m.end, contents: unwritten });
            }
        }
        Ok(CopiedMemory { regions, live, bytes_copied })
    }

    fn region_at(&self, addr: u64) -> Option<&Region> {
        let k = self.regions.partition_point(|r| r.range.end <= addr);
        self.regions.get(k).filter(|r| r.range.contains(&addr))
    }
}

impl Contents {
    /// The same kind of contents for another range (Zeros or Live; nothing copied).
    fn same(&self) -> Contents {
        match self {
            Contents::Zeros => Contents::Zeros,
            _ => Contents::Live,
        }
    }
}

/// Copies `run` in pieces; a page that cannot be read (a file mapping past the file's end) is
/// left out, and the copy goes on after it. Returns the bytes copied.
fn copy_run(live: &mut LiveProcess, run: Range<u64>, regions: &mut Vec<Region>) -> Result<u64, ReadError> {
    let mut copied = 0;
    let mut at = run.start;
    while at < run.end {
        let len = ((run.end - at) as usize).min(COPY_PIECE);
        let mut data = vec![0u8; len];
        let n = match live.read_bulk(at, &mut data) {
            Ok(n) => n,
            Err(e) if e.is_torn() => 0,
            Err(e) => return Err(e),
        };
        if n > 0 {
            data.truncate(n);
            regions.push(Region { range: at..at + n as u64, contents: Contents::Copied(data) });
            copied += n as u64;
        }
        // Past what was read; if the read stopped short, past the page that stopped it.
        at += if n == len { n as u64 } else { (n as u64 / PAGE_SIZE + 1) * PAGE_SIZE };
    }
    Ok(copied)
}

impl RemoteMemory for CopiedMemory<'_> {
    fn changes_under_reads(&self) -> bool {
        false
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = addr.checked_add(buf.len() as u64).ok_or(ReadError::Unmapped { addr, len: buf.len() })?;
        let mut at = addr;
        while at < end {
            let done = (at - addr) as usize;
            let Some(region) = self.region_at(at) else {
                return Err(ReadError::Unmapped { addr: at, len: buf.len() - done });
            };
            let n = (region.range.end.min(end) - at) as usize;
            let from = (at - region.range.start) as usize;
            match &region.contents {
                Contents::Copied(data) => buf[done..done + n].copy_from_slice(&data[from..from + n]),
                Contents::Zeros => buf[done..done + n].fill(0),
                Contents::Live => self.live.read(at, &mut buf[done..done + n])?,
            }
            at += n as u64;
        }
        Ok(())
    }

    /// Pages the target never wrote are known from the copy: they are the zero regions.
    fn populated(&mut self, addr: u64, len: u64) -> Option<bool> {
        let end = addr.checked_add(len)?;
        let mut at = addr;
        while at < end {
            let region = self.region_at(at)?;
            match region.contents {
                Contents::Zeros => return Some(false),
                Contents::Copied(_) => at = region.range.end,
                Contents::Live => return None,
            }
        }
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::maps::Mapping;

    /// A mapping of 2.5 GiB of which two pages were written, one past 2 GiB: the copy holds
    /// exactly those pages (the kernel's 2 GiB limit on one read does not cut it short), and
    /// everything else reads as the zeros it is.
    #[test]
    fn a_copy_holds_what_was_written_past_two_gib_and_nothing_else() {
        let len: usize = 5 << 29;
        // SAFETY: a fresh private anonymous mapping, unmapped below; two of its pages are
        // written through the pointer mmap returned, within its length.
        let base = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u64) = 0x1111;
            *((p as *mut u8).add(9 << 28) as *mut u64) = 0x2222;
            p as u64
        };
        let maps = MemoryMap {
            mappings: vec![Mapping {
                start: base,
                end: base + len as u64,
                readable: true,
                writable: true,
                shared: false,
                offset: 0,
                path: String::new(),
            }],
        };
        let mut live = LiveProcess::new(std::process::id() as i32);
        let mut copy = CopiedMemory::copy(&mut live, &maps).unwrap();
        assert_eq!(copy.bytes_copied, 2 * PAGE_SIZE);
        assert_eq!(copy.read_u64(base).unwrap(), 0x1111);
        assert_eq!(copy.read_u64(base + (9 << 28)).unwrap(), 0x2222);
        assert_eq!(copy.read_u64(base + (1 << 30)).unwrap(), 0, "never written: zeros");
        let mut across = [0xffu8; 16];
        copy.read(base + PAGE_SIZE - 8, &mut across).unwrap();
        assert_eq!(across[..8], 0u64.to_le_bytes()[..]);
        assert_eq!(copy.populated(base, 16), Some(true));
        assert_eq!(copy.populated(base, 2 * PAGE_SIZE), Some(false));
        assert!(copy.read_u64(base + len as u64).is_err(), "outside every mapping of the pause");
        drop(copy);
        // SAFETY: unmaps the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
    }
}
