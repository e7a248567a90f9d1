//! `--pause`: a consistent copy of the target's memory, taken with every thread stopped, for
//! only as long as the copy takes.
//!
//! Threads are stopped with PTRACE_SEIZE + PTRACE_INTERRUPT, which (unlike SIGSTOP) is
//! invisible to the target and undone by the kernel itself if leakspy dies: a traced process
//! whose tracer exits is detached and continues. Decoding happens after the threads run again,
//! from the copy.
//!
//! The threads are listed by remoteprocess (py-spy's crate), but stopped here rather than by
//! its `Process::lock`, which does the same PTRACE_SEIZE + PTRACE_INTERRUPT but waits for
//! each stop without a bound (a thread in uninterruptible sleep would hang leakspy) and
//! fails on a target the user had already stopped (its group-stop is reported as a
//! PTRACE_EVENT_STOP with SIGSTOP, which the lock treats as unexpected; tests/pause.rs
//! `an_already_stopped_target_stays_stopped`). See the README's "Why libc here".

use super::live::{LiveProcess, PAGE_SIZE, direct_read};
use super::maps::Mapping;
use super::maps::MemoryMap;
use super::{ReadError, ReadInto, RemoteMemory};
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

/// glibc declares ptrace's request an unsigned int and musl (the static binary) an int; libc's
/// PTRACE_* constants have the matching type in each.
#[cfg(target_env = "musl")]
type PtraceRequest = libc::c_int;
#[cfg(not(target_env = "musl"))]
type PtraceRequest = libc::c_uint;

fn ptrace(request: PtraceRequest, tid: i32) -> std::io::Result<()> {
    // SAFETY: these requests (SEIZE, INTERRUPT, DETACH) take no pointers from us.
    let rc = unsafe {
        libc::ptrace(request, tid, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>())
    };
    if rc == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// The target's threads now, from remoteprocess (/proc/PID/task); `None` once it is gone.
pub fn thread_ids(pid: i32) -> Option<Vec<i32>> {
    let threads = remoteprocess::Process::new(pid).ok()?.threads().ok()?;
    Some(threads.iter().filter_map(|t| t.id().ok()).collect())
}

impl Pause {
    /// Stops every thread: all are seized and interrupted first, then all waited for, so the
    /// stops happen together and the target's first stopped thread waits for no other's
    /// round trip.
    pub fn freeze(pid: i32) -> Result<Pause, ReadError> {
        let mut pause = Pause { stopped: Vec::new() };
        for _ in 0..MAX_THREAD_ROUNDS {
            let tids = thread_ids(pid).ok_or(ReadError::ProcessGone)?;
            let new: Vec<i32> = tids.into_iter().filter(|t| !pause.stopped.contains(t)).collect();
            if new.is_empty() {
                return Ok(pause);
            }
            let mut interrupted = Vec::with_capacity(new.len());
            for tid in new {
                match ptrace(libc::PTRACE_SEIZE, tid).and_then(|_| ptrace(libc::PTRACE_INTERRUPT, tid)) {
                    Ok(()) => {
                        pause.stopped.push(tid);
                        interrupted.push(tid);
                    }
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
            }
            wait_stopped(&mut interrupted)?;
        }
        Ok(pause)
    }
}

/// Waits, bounded, for the interrupts to stop every thread of `tids` (or for each to report a
/// stop it was already in, such as SIGSTOP). Polled, not blocking: a thread in
/// uninterruptible sleep must not hang leakspy. The poll is short because a stop usually
/// takes microseconds, and every one of them is spent with the target stopped.
fn wait_stopped(tids: &mut Vec<i32>) -> Result<(), ReadError> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut failed = None;
        tids.retain(|&tid| {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if rc == -1 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ECHILD) {
                    failed = Some(e);
                }
            }
            rc == 0
        });
        if let Some(e) = failed {
            return Err(ReadError::Io(e));
        }
        let Some(&tid) = tids.first() else { return Ok(()) };
        if Instant::now() > deadline {
            return Err(ReadError::Io(std::io::Error::other(format!(
                "thread {tid} did not stop within {STOP_TIMEOUT:?} (uninterruptible sleep?)"
            ))));
        }
        std::thread::sleep(Duration::from_micros(20));
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
    /// The copied bytes, which `Contents::Copied` regions point into.
    arena: Vec<u8>,
    live: &'a mut LiveProcess,
    /// Bytes copied while the target was stopped.
    pub bytes_copied: u64,
}

struct Region {
    range: Range<u64>,
    contents: Contents,
}

enum Contents {
    /// At this offset of the arena.
    Copied(usize),
    /// Anonymous memory the target never wrote.
    Zeros,
    /// Read from the process when asked (see above).
    Live,
}

/// Bytes copied per read: a mapping larger than the kernel's limit for one read (2 GiB) is
/// never cut short, and a page that cannot be read costs only itself.
const COPY_PIECE: usize = 64 << 20;
/// Copies smaller than this are made by one thread: a second one would cost more to start
/// than it saves.
const PARALLEL_ABOVE: usize = 8 << 20;

/// Where a paused copy goes, allocated and written to (so that its pages exist) while the
/// target still runs: faulting in a destination page by page inside the pause cost as much as
/// the copy itself. Sized from what the target had written just before, with room for growth;
/// a copy that needs more grows it, inside the pause.
///
/// Also what the target had written just before, per mapping (/proc/PID/pagemap, read before
/// the stop): inside the pause only the pages not populated then are looked up again, a
/// tenth of the pagemap read on a dense heap.
pub struct CopyArena {
    bytes: Vec<u8>,
    known: Vec<Known>,
}

/// A mapping copied in a pause and the runs of pages populated in it before the stop.
struct Known {
    mapping: Mapping,
    /// Sorted, within the mapping; `None` where pagemap could not be read.
    runs: Option<Vec<Range<u64>>>,
}

impl CopyArena {
    pub fn prepare(live: &mut LiveProcess, maps: &MemoryMap) -> CopyArena {
        let known: Vec<Known> = maps
            .mappings
            .iter()
            .filter(|m| copied_in_pause(m))
            .map(|m| Known { mapping: m.clone(), runs: live.populated_runs(m.start, m.end) })
            .collect();
        let written: u64 = known
            .iter()
            .map(|k| match &k.runs {
                Some(runs) => runs.iter().map(|r| r.end - r.start).sum(),
                None => k.mapping.end - k.mapping.start,
            })
            .sum();
        let len = (written + written / 8 + (1 << 20)) as usize;
        let mut bytes = Vec::with_capacity(len);
        // Written, not only allocated: a fresh allocation is untouched zero pages.
        bytes.resize(len, 1u8);
        CopyArena { bytes, known }
    }
}

/// The pages of `m` populated now, with the target stopped: those populated before the
/// stop, plus whatever pagemap says of the rest now (a page can be populated between the
/// look before and the stop, never while stopped). A known page the target released since
/// (MADV_DONTNEED, a mapping replaced by one alike) is read all the same: it reads as what
/// it now holds, zeros or the file's bytes. Known runs count only from a mapping of the
/// same file at the same file offsets (or both anonymous), whatever its bounds now: a heap
/// that grew or merged with a neighbour keeps what was learnt of it.
fn populated_now(known: &[Known], live: &mut LiveProcess, m: &Mapping) -> Vec<Range<u64>> {
    let k = known.partition_point(|k| k.mapping.end <= m.start);
    let same = |k: &&Known| {
        k.mapping.path == m.path
            && (!m.is_file() || k.mapping.offset.wrapping_sub(k.mapping.start) == m.offset.wrapping_sub(m.start))
    };
    let known: Vec<Range<u64>> = known[k..]
        .iter()
        .take_while(|k| k.mapping.start < m.end)
        .filter(same)
        .flat_map(|k| k.runs.iter().flatten())
        .filter_map(|r| {
            let clipped = r.start.max(m.start)..r.end.min(m.end);
            (clipped.start < clipped.end).then_some(clipped)
        })
        .collect();
    // The rest, looked up now; where pagemap cannot be read, copied whole.
    let mut found = Vec::new();
    let mut look = |from: u64, to: u64| {
        found.extend(live.populated_runs(from, to).unwrap_or_else(|| std::iter::once(from..to).collect()))
    };
    let mut at = m.start;
    for r in &known {
        if r.start > at {
            look(at, r.start);
        }
        at = r.end;
    }
    if at < m.end {
        look(at, m.end);
    }
    merge_runs(known, found)
}

/// The union of two sorted lists of disjoint runs (disjoint from each other too), as a sorted
/// list with touching runs joined.
fn merge_runs(a: Vec<Range<u64>>, b: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut all = a;
    all.extend(b);
    all.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Private writable mappings are copied; the rest is read from the process (see above).
fn copied_in_pause(m: &Mapping) -> bool {
    m.readable && m.writable && !m.shared && !m.path.starts_with("[v")
}

/// One read of the copy: `len` bytes of the target at `addr` into the arena at `at`.
#[derive(Clone, Copy)]
struct Job {
    addr: u64,
    at: usize,
    len: usize,
}

impl<'a> CopiedMemory<'a> {
    /// Copies what the target wrote of its private writable mappings, into `arena`, on two
    /// threads when there is enough to copy. Call with the target stopped.
    pub fn copy(live: &'a mut LiveProcess, maps: &MemoryMap, arena: CopyArena) -> Result<CopiedMemory<'a>, ReadError> {
        let CopyArena { bytes: mut arena, known } = arena;
        // What goes where: every readable mapping, its written runs as jobs into the arena.
        let mut layout: Vec<(Range<u64>, Option<Job>, Contents)> = Vec::new();
        let mut used = 0usize;
        for m in maps.mappings.iter().filter(|m| m.readable && !m.path.starts_with("[v")) {
            if !copied_in_pause(m) {
                layout.push((m.start..m.end, None, Contents::Live));
                continue;
            }
            let unwritten = || if m.is_file() { Contents::Live } else { Contents::Zeros };
            let runs = populated_now(&known, live, m);
            let mut at = m.start;
            for run in runs {
                if run.start > at {
                    layout.push((at..run.start, None, unwritten()));
                }
                let mut addr = run.start;
                while addr < run.end {
                    let len = ((run.end - addr) as usize).min(COPY_PIECE);
                    layout.push((addr..addr + len as u64, Some(Job { addr, at: used, len }), Contents::Copied(used)));
                    used += len;
                    addr += len as u64;
                }
                at = run.end;
            }
            if at < m.end {
                layout.push((at..m.end, None, unwritten()));
            }
        }
        if arena.len() < used {
            arena.resize(used, 0);
        }
        let jobs: Vec<Job> = layout.iter().filter_map(|(_, job, _)| *job).collect();
        let read = copy_jobs(live, &jobs, &mut arena[..used])?;
        // Regions: the copied parts of each job as read (a short read leaves a hole), the
        // rest as laid out.
        let mut regions = Vec::with_capacity(layout.len());
        let mut pieces = read.into_iter().peekable();
        let mut bytes_copied = 0;
        for (range, job, contents) in layout {
            if job.is_none() {
                regions.push(Region { range, contents });
                continue;
            }
            while let Some(&(addr, at, len)) = pieces.peek().filter(|(addr, ..)| range.contains(addr)) {
                regions.push(Region { range: addr..addr + len as u64, contents: Contents::Copied(at) });
                bytes_copied += len as u64;
                pieces.next();
            }
        }
        Ok(CopiedMemory { regions, arena, live, bytes_copied })
    }

    fn region_at(&self, addr: u64) -> Option<&Region> {
        let k = self.regions.partition_point(|r| r.range.end <= addr);
        self.regions.get(k).filter(|r| r.range.contains(&addr))
    }
}

/// Runs the jobs (whose destinations lie one after the other in `dest`, which starts at arena
/// offset 0), split over two threads by bytes when worth it; returns the pieces read as
/// (address, arena offset, length), in job order.
fn copy_jobs(live: &mut LiveProcess, jobs: &[Job], dest: &mut [u8]) -> Result<Vec<(u64, usize, usize)>, ReadError> {
    let total: usize = jobs.iter().map(|j| j.len).sum();
    let pid = live.pid();
    if total < PARALLEL_ABOVE || !live.reads_directly() {
        return jobs.iter().try_fold(Vec::new(), |mut out, job| {
            copy_job(job, &mut dest[job.at..job.at + job.len], &mut |addr, buf| live.read_bulk(addr, buf), &mut out)?;
            Ok(out)
        });
    }
    let (first, second) = halves(jobs, total);
    let (dest_first, dest_second) = dest.split_at_mut(second[0].at);
    let run = |jobs: &[Job], dest: &mut [u8], base: usize| -> Result<Vec<(u64, usize, usize)>, ReadError> {
        let mut out = Vec::new();
        for job in jobs {
            let at = job.at - base;
            copy_job(job, &mut dest[at..at + job.len], &mut |addr, buf| direct_read(pid, addr, buf), &mut out)?;
        }
        Ok(out)
    };
    let base = second[0].at;
    let (a, b) = std::thread::scope(|scope| {
        let other = scope.spawn(|| run(&second, dest_second, base));
        let mine = run(&first, dest_first, 0);
        (mine, other.join().unwrap_or_else(|_| Err(ReadError::Io(std::io::Error::other("copy thread panicked")))))
    });
    let mut out = a?;
    out.extend(b?);
    Ok(out)
}

/// The jobs cut in two lists of equal bytes (to the page), the job at the middle cut in two:
/// the pause lasts as long as the slower thread. (Both threads taking 2 MiB slices from one
/// queue balanced them better but copied slower: 27.3 against 25.2 ms for 151 MiB, likely
/// each thread's reads no longer running through memory in order.) `total` is their sum, at
/// least two pages; neither list is empty.
fn halves(jobs: &[Job], total: usize) -> (Vec<Job>, Vec<Job>) {
    let half = total / 2 / PAGE_SIZE as usize * PAGE_SIZE as usize;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut sum = 0;
    for job in jobs {
        let take = half.saturating_sub(sum).min(job.len);
        if take > 0 {
            first.push(Job { len: take, ..*job });
        }
        if take < job.len {
            second.push(Job { addr: job.addr + take as u64, at: job.at + take, len: job.len - take });
        }
        sum += job.len;
    }
    (first, second)
}

/// Copies one job with `read`; a page that cannot be read (a file mapping past the file's end)
/// is left out, and the copy goes on after it.
fn copy_job(
    job: &Job,
    dest: &mut [u8],
    read: &mut ReadInto,
    out: &mut Vec<(u64, usize, usize)>,
) -> Result<(), ReadError> {
    let mut done = 0;
    while done < job.len {
        let n = match read(job.addr + done as u64, &mut dest[done..]) {
            Ok(n) => n,
            Err(e) if e.is_torn() => 0,
            Err(e) => return Err(e),
        };
        if n > 0 {
            out.push((job.addr + done as u64, job.at + done, n));
        }
        // Past what was read; if the read stopped short, past the page that stopped it.
        done += if done + n == job.len { n } else { (n / PAGE_SIZE as usize + 1) * PAGE_SIZE as usize };
    }
    Ok(())
}

/// What a piece of a paused copy holds, for a writer that saves the copy (`leakspy dump`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// Copied while the target was stopped: `CopiedMemory::copied` gives the bytes.
    Copied,
    /// Anonymous memory the target never wrote: zeros.
    Zeros,
    /// Not copied: read from the process when asked (read-only, shared, or a file mapping's
    /// pages the target never wrote).
    Live,
}

impl CopiedMemory<'_> {
    /// Every readable range of the pause, in address order, with what it holds.
    pub fn pieces(&self) -> impl Iterator<Item = (Range<u64>, PieceKind)> + '_ {
        self.regions.iter().map(|r| {
            let kind = match r.contents {
                Contents::Copied(_) => PieceKind::Copied,
                Contents::Zeros => PieceKind::Zeros,
                Contents::Live => PieceKind::Live,
            };
            (r.range.clone(), kind)
        })
    }

    /// The bytes copied for `range`, if it lies within one copied piece.
    pub fn copied(&self, range: Range<u64>) -> Option<&[u8]> {
        let region = self.region_at(range.start)?;
        let Contents::Copied(at) = region.contents else { return None };
        if range.end > region.range.end || range.end < range.start {
            return None;
        }
        let from = at + (range.start - region.range.start) as usize;
        self.arena.get(from..from + (range.end - range.start) as usize)
    }
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
                Contents::Copied(at) => buf[done..done + n].copy_from_slice(&self.arena[at + from..at + from + n]),
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
        let maps = MemoryMap::anonymous(base, base + len as u64);
        let mut live = LiveProcess::new(std::process::id() as i32);
        let arena = CopyArena::prepare(&mut live, &maps);
        let mut copy = CopiedMemory::copy(&mut live, &maps, arena).unwrap();
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

    /// Pagemap is read before the stop and only its gaps again inside the pause: a page the
    /// target writes between the two is copied all the same, one it released meanwhile reads
    /// as the zeros it now holds, and a mapping that grew (a heap's brk, a neighbour merged
    /// into it; here: looked at when half as long) keeps its known pages and has its new part
    /// looked up.
    #[test]
    fn pages_written_after_the_look_before_the_stop_are_copied() {
        let page = PAGE_SIZE as usize;
        let len = 64 * page;
        // Unmapped below; only its own pages are written or released.
        let base = crate::memory::anonymous_pages(len);
        let addr = base as u64;
        // SAFETY (each write below): within the mapping above.
        unsafe {
            *(base as *mut u64) = 0x1111;
            *(base.add(10 * page) as *mut u64) = 0x2222;
        }
        let mut live = LiveProcess::new(std::process::id() as i32);
        // Looked at as two pages of a mapping half as long.
        let before = MemoryMap::anonymous(addr, addr + len as u64 / 2);
        let arena = CopyArena::prepare(&mut live, &before);
        unsafe {
            *(base.add(5 * page) as *mut u64) = 0x3333;
            *(base.add(40 * page) as *mut u64) = 0x4444;
            libc::madvise(base.add(10 * page).cast(), page, libc::MADV_DONTNEED);
        }
        let now = MemoryMap::anonymous(addr, addr + len as u64);
        let mut copy = CopiedMemory::copy(&mut live, &now, arena).unwrap();
        assert_eq!(copy.read_u64(addr).unwrap(), 0x1111);
        assert_eq!(copy.read_u64(addr + 5 * PAGE_SIZE).unwrap(), 0x3333, "written after the look");
        assert_eq!(copy.read_u64(addr + 40 * PAGE_SIZE).unwrap(), 0x4444, "in the part that grew");
        assert_eq!(copy.read_u64(addr + 10 * PAGE_SIZE).unwrap(), 0, "released after the look");
        assert_eq!(copy.read_u64(addr + 20 * PAGE_SIZE).unwrap(), 0, "never written");
        drop(copy);
        // SAFETY: unmaps the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base.cast(), len) };
    }

    /// A copy large enough for two threads, in runs longer than a slice and not aligned to one:
    /// every page written is copied to its place, the holes read as zeros.
    #[test]
    fn two_threads_copy_every_written_page_to_its_place() {
        let page = PAGE_SIZE as usize;
        let len = 6000 * page;
        // Unmapped below; only its own pages are written or released.
        let base = crate::memory::anonymous_pages(len);
        let written = |k: usize| k % 1000 >= 10;
        for k in (0..6000).filter(|&k| written(k)) {
            // SAFETY: page k of the mapping above.
            unsafe { *(base.add(k * page) as *mut u64) = k as u64 + 1 };
        }
        let addr = base as u64;
        let maps = MemoryMap::anonymous(addr, addr + len as u64);
        let mut live = LiveProcess::new(std::process::id() as i32);
        live.read_bulk(addr + 10 * PAGE_SIZE, &mut [0u8; 8]).unwrap();
        assert!(live.reads_directly(), "process_vm_readv works here: the two-thread path runs");
        let arena = CopyArena::prepare(&mut live, &maps);
        let mut copy = CopiedMemory::copy(&mut live, &maps, arena).unwrap();
        assert_eq!(copy.bytes_copied, (0..6000).filter(|&k| written(k)).count() as u64 * PAGE_SIZE);
        for k in 0..6000u64 {
            let want = if written(k as usize) { k + 1 } else { 0 };
            assert_eq!(copy.read_u64(addr + k * PAGE_SIZE).unwrap(), want, "page {k}");
        }
        drop(copy);
        // SAFETY: unmaps the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base.cast(), len) };
    }
}
