//! Memory of a live process, read without stopping it.
//!
//! A heap walk touches millions of small objects. One syscall each would cost more than the
//! walk itself, so reads go through a cache of 16 KiB blocks, each filled by one read through
//! read-process-memory (py-spy's crate: process_vm_readv, falling back to /proc/PID/mem where
//! that syscall is unavailable). The cache is direct-mapped and bounded, so leakspy's memory
//! stays far below the target's however big the heap is.
//!
//! The crate reads all or nothing: a read that runs into an unmapped page (a block that
//! straddles the end of a mapping) is an error without the count of bytes read. Such a read
//! is split (`readable_prefix`): halves of the unread part are read until the first
//! unreadable page is found, which costs a few reads at a mapping's edge and nothing
//! elsewhere.
//!
//! libc is still called for what the crate cannot do (see the README's design notes, "Why
//! libc here"): reading many places in one process_vm_readv (`read_scattered`). The pagemap's
//! per-page flags, which neither crate reads, come from /proc/PID/pagemap.

use super::{IoCounters, ReadError, RemoteMemory, u64_at};
use read_process_memory::{CopyAddress, ProcessHandle};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A pymalloc pool (3.10+): most objects are read through the pools' index (heap::pools), so
/// what comes through the cache is scattered (large objects, functions' fields): a larger
/// block would mostly read bytes nobody asked for.
const BLOCK_SIZE: usize = 16 * 1024;
/// 1,024 blocks of 16 KiB: 16 MiB at most, enough to keep the dense parts of a large heap hot.
const DEFAULT_BLOCKS: usize = 1024;
/// The cache is never smaller than this (2 MiB), however small the heap.
const MIN_BLOCKS: usize = 128;

struct Block {
    /// Block-aligned address this slot holds, or `u64::MAX` when empty.
    addr: u64,
    /// How many bytes from `addr` were readable when the block was filled.
    valid: usize,
    data: Box<[u8]>,
}

pub struct LiveProcess {
    pid: i32,
    handle: ProcessHandle,
    blocks: Vec<Block>,
    /// /proc/PID/pagemap, opened the first time a large claimed range is checked; `None`
    /// inside when it cannot be opened (then claims are not checked).
    pagemap: Option<Option<File>>,
    io: IoCounters,
    /// Set once a many-place process_vm_readv is refused (ENOSYS, or EPERM under some seccomp
    /// profiles): scattered reads then go one by one through the crate, which falls back to
    /// /proc/PID/mem by itself.
    no_scattered: bool,
}

/// On Linux a handle is the PID itself: making one cannot fail.
fn handle(pid: i32) -> ProcessHandle {
    ProcessHandle::try_from(pid).unwrap_or_else(|_| unreachable!("a Linux process handle is its PID"))
}

impl LiveProcess {
    pub fn new(pid: i32) -> LiveProcess {
        LiveProcess::with_cache_blocks(pid, DEFAULT_BLOCKS)
    }

    pub fn with_cache_blocks(pid: i32, blocks: usize) -> LiveProcess {
        let blocks = (0..blocks.max(1))
            .map(|_| Block { addr: u64::MAX, valid: 0, data: Vec::new().into_boxed_slice() })
            .collect();
        LiveProcess { pid, handle: handle(pid), blocks, pagemap: None, io: IoCounters::default(), no_scattered: false }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True once a read has worked for this target: then other threads may read it the same
    /// way (`direct_read`), which has no state to share.
    pub fn reads_directly(&self) -> bool {
        self.io.reads > 0
    }

    /// Sizes the cache to a quarter of the target's writable memory (within the default
    /// bounds), so that reading a small process never costs more memory than it uses.
    pub fn fit_cache_to(&mut self, writable_bytes: u64) {
        let blocks = (writable_bytes / 4 / BLOCK_SIZE as u64) as usize;
        self.blocks.truncate(blocks.clamp(MIN_BLOCKS, DEFAULT_BLOCKS));
    }

    /// Calls `visit(page address, populated)` for each page of `[start, end)` in order, until
    /// it returns false. 8 bytes of /proc/PID/pagemap per page, read 32 KiB at a time.
    fn for_each_page(&mut self, start: u64, end: u64, visit: &mut dyn FnMut(u64, bool) -> bool) -> Option<()> {
        let pid = self.pid;
        let file = self.pagemap.get_or_insert_with(|| File::open(format!("/proc/{pid}/pagemap")).ok()).as_ref()?;
        let (mut page, last) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
        // No larger than the range: a paused copy looks up hundreds of small gaps.
        let mut entries = vec![0u8; 8 * (last.saturating_sub(page) as usize).min(4096)];
        while page < last {
            let n = ((last - page) as usize).min(entries.len() / 8);
            file.read_exact_at(&mut entries[..8 * n], page * 8).ok()?;
            for (k, entry) in entries[..8 * n].chunks_exact(8).enumerate() {
                let populated = u64_at(entry, 0) & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0;
                if !visit((page + k as u64) * PAGE_SIZE, populated) {
                    return Some(());
                }
            }
            page += n as u64;
        }
        Some(())
    }

    /// Reads as many bytes as are readable from `addr` on, up to `buf.len()`.
    fn read_raw(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let (handle, io) = (&self.handle, &mut self.io);
        readable_prefix(handle, addr, buf, io).map_err(|e| classify(self.pid, addr, buf.len(), e))
    }
}

/// x86_64's page size, the only one leakspy reads.
pub const PAGE_SIZE: u64 = 4096;
/// Pagemap entry bits: the page is in memory, or in swap (either way the target wrote it).
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_SWAPPED: u64 = 1 << 62;

impl LiveProcess {
    /// The `N` bytes at `addr` when the cache already holds them in one block: the heap walks
    /// read mostly single words from hot blocks, and a fixed-size copy is a plain load where
    /// the general path calls `memcpy` (which musl, in the static build, does slowly for a
    /// few bytes).
    #[inline]
    fn cached<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let block_addr = addr & !(BLOCK_SIZE as u64 - 1);
        let in_block = (addr - block_addr) as usize;
        let block = &self.blocks[((block_addr / BLOCK_SIZE as u64) as usize) % self.blocks.len()];
        if block.addr != block_addr || in_block + N > block.valid {
            return None;
        }
        block.data.get(in_block..in_block + N)?.try_into().ok()
    }
}

impl RemoteMemory for LiveProcess {
    fn read_u64(&mut self, addr: u64) -> Result<u64, ReadError> {
        match self.cached::<8>(addr) {
            Some(bytes) => Ok(u64::from_le_bytes(bytes)),
            None => {
                let mut b = [0u8; 8];
                self.read(addr, &mut b)?;
                Ok(u64::from_le_bytes(b))
            }
        }
    }

    fn read_u32(&mut self, addr: u64) -> Result<u32, ReadError> {
        match self.cached::<4>(addr) {
            Some(bytes) => Ok(u32::from_le_bytes(bytes)),
            None => {
                let mut b = [0u8; 4];
                self.read(addr, &mut b)?;
                Ok(u32::from_le_bytes(b))
            }
        }
    }

    fn direct_reads(&self) -> Option<i32> {
        self.reads_directly().then_some(self.pid)
    }

    fn io(&self) -> IoCounters {
        self.io
    }

    /// From /proc/PID/pagemap: the pages present or swapped.
    fn populated_runs(&mut self, start: u64, end: u64) -> Option<Vec<std::ops::Range<u64>>> {
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        self.for_each_page(start, end, &mut |page, populated| {
            if populated {
                match runs.last_mut() {
                    Some(run) if run.end == page => run.end += PAGE_SIZE,
                    _ => runs.push(page..page + PAGE_SIZE),
                }
            }
            true
        })?;
        Some(runs)
    }

    fn read_bulk(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read_raw(addr, buf)
    }

    /// Up to IOV_MAX pieces per process_vm_readv; the kernel stops at the first piece it
    /// cannot read, which is then read on its own (to tell a bad address from a gone
    /// process) and the request goes on after it.
    fn read_scattered(&mut self, addrs: &[u64], len: usize, out: &mut [u8]) -> Result<Vec<bool>, ReadError> {
        if self.no_scattered || len == 0 {
            return super::scattered_one_by_one(self, addrs, len, out);
        }
        let mut whole = vec![false; addrs.len()];
        let mut next = 0;
        while next < addrs.len() {
            let batch = (addrs.len() - next).min(IOV_MAX);
            let pieces = &mut out[next * len..(next + batch) * len];
            // A failure on the first piece is an error, not a short read: that piece is read
            // alone below, which tells why.
            let n = match process_vm_read_scattered(self.pid, &addrs[next..next + batch], len, pieces) {
                Ok(n) => n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                    // The syscall is filtered: the rest one by one, through the crate's
                    // /proc/PID/mem fallback (which tells a denied read apart).
                    self.no_scattered = true;
                    let (addrs, out) = (&addrs[next..], &mut out[next * len..]);
                    let rest = super::scattered_one_by_one(self, addrs, len, out)?;
                    whole[next..].copy_from_slice(&rest);
                    return Ok(whole);
                }
                Err(_) => 0,
            };
            self.io.reads += 1;
            self.io.bytes += n as u64;
            let done = n / len;
            whole[next..next + done].iter_mut().for_each(|w| *w = true);
            next += done;
            if done < batch {
                // The piece the kernel stopped at, on its own.
                let piece = &mut out[next * len..(next + 1) * len];
                whole[next] = match self.read_raw(addrs[next], piece) {
                    Ok(n) => n == len,
                    Err(e) if e.is_torn() => false,
                    Err(e) => return Err(e),
                };
                next += 1;
            }
        }
        Ok(whole)
    }

    /// From /proc/PID/pagemap, 8 bytes per page: whether each page is present or swapped.
    /// A page neither was never written: an anonymous mapping reads there as zeros.
    fn populated(&mut self, addr: u64, len: u64) -> Option<bool> {
        let end = addr.checked_add(len)?;
        let mut all = true;
        self.for_each_page(addr, end, &mut |_, populated| {
            all &= populated;
            all
        })?;
        Some(all)
    }

    fn invalidate(&mut self) {
        for block in &mut self.blocks {
            block.addr = u64::MAX;
        }
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr.checked_add(done as u64).ok_or(ReadError::Unmapped { addr, len: buf.len() })?;
            let block_addr = at & !(BLOCK_SIZE as u64 - 1);
            let in_block = (at - block_addr) as usize;
            let n = (BLOCK_SIZE - in_block).min(buf.len() - done);
            let slot = ((block_addr / BLOCK_SIZE as u64) as usize) % self.blocks.len();
            if self.blocks[slot].addr != block_addr {
                let mut data = std::mem::take(&mut self.blocks[slot].data);
                if data.len() != BLOCK_SIZE {
                    data = vec![0u8; BLOCK_SIZE].into_boxed_slice();
                }
                // A failed fill (first page unmapped) is not yet an error: the bytes asked
                // for may lie in a later, mapped part of the block; the direct read below
                // decides.
                let valid = match self.read_raw(block_addr, &mut data) {
                    Ok(valid) => valid,
                    Err(ReadError::Unmapped { .. }) => 0,
                    Err(e) => {
                        // The slot gave up its buffer: it must not claim to hold a block.
                        self.blocks[slot] = Block { addr: u64::MAX, valid: 0, data };
                        return Err(e);
                    }
                };
                self.blocks[slot] = Block { addr: block_addr, valid, data };
            }
            let block = &self.blocks[slot];
            if in_block + n <= block.valid {
                buf[done..done + n].copy_from_slice(&block.data[in_block..in_block + n]);
            } else {
                // The block is only partly readable (a mapping edge inside it): read exactly
                // what was asked, uncached.
                let got = self.read_raw(at, &mut buf[done..done + n])?;
                if got < n {
                    return Err(ReadError::Unmapped { addr, len: buf.len() });
                }
            }
            done += n;
        }
        Ok(())
    }
}

/// One read through read-process-memory, uncached and stateless, for threads that copy in
/// parallel: as many bytes as are readable from `addr` on.
pub fn direct_read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
    readable_prefix(&handle(pid), addr, buf, &mut IoCounters::default()).map_err(|e| classify(pid, addr, buf.len(), e))
}

/// How a failed read through the crate ended.
enum Failed {
    /// Nothing was read: the first page is not mapped (process_vm_readv's EFAULT).
    FirstPage(io::Error),
    /// Some leading part may have been readable: the crate reports a short process_vm_readv
    /// as UnexpectedEof without its count, and /proc/PID/mem (its fallback) fails with EIO
    /// at the first unmapped page whatever it read before.
    Somewhere(io::Error),
    /// Not about addresses: the process is gone, access is denied.
    Other(io::Error),
}

/// One read through the crate. Counted in `io` when it reads (failed reads are not, as
/// before the crate: the counters say what was read).
fn copy(handle: &ProcessHandle, addr: u64, buf: &mut [u8], io: &mut IoCounters) -> Result<(), Failed> {
    match handle.copy_address(addr as usize, buf) {
        Ok(()) => {
            io.reads += 1;
            io.bytes += buf.len() as u64;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Failed::Somewhere(e)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EFAULT) => Err(Failed::FirstPage(e)),
            Some(libc::EIO) => Err(Failed::Somewhere(e)),
            _ => Err(Failed::Other(e)),
        },
    }
}

/// Reads as many bytes as are readable from `addr` on, up to `buf.len()`, through the crate.
/// A read that fails part way is split: the unread part is halved at a page boundary (an
/// unreadable page is where a mapping ends), so finding the end of what is readable takes
/// log2(pages) more reads, each of bytes not read yet. At a 16 KiB block's edge that is two.
fn readable_prefix(handle: &ProcessHandle, addr: u64, buf: &mut [u8], io: &mut IoCounters) -> io::Result<usize> {
    let first = match copy(handle, addr, buf, io) {
        Ok(()) => return Ok(buf.len()),
        Err(Failed::FirstPage(e) | Failed::Other(e)) => return Err(e),
        Err(Failed::Somewhere(e)) => e,
    };
    // Invariant: `buf[..lo]` holds the bytes at `addr`, and reading up to `hi` fails.
    let (mut lo, mut hi) = (0usize, buf.len());
    loop {
        // The page boundaries strictly between lo and hi; the middle one is tried next.
        let first_boundary = ((addr + lo as u64) / PAGE_SIZE + 1) * PAGE_SIZE;
        let last_boundary = (addr + hi as u64 - 1) / PAGE_SIZE * PAGE_SIZE;
        if first_boundary > last_boundary {
            break;
        }
        let pages = (last_boundary - first_boundary) / PAGE_SIZE;
        let mid = (first_boundary + pages / 2 * PAGE_SIZE - addr) as usize;
        match copy(handle, addr + lo as u64, &mut buf[lo..mid], io) {
            Ok(()) => lo = mid,
            Err(Failed::FirstPage(_) | Failed::Somewhere(_)) => hi = mid,
            Err(Failed::Other(e)) => return Err(e),
        }
    }
    if lo == 0 { Err(first) } else { Ok(lo) }
}

/// Remote iovecs per process_vm_readv (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// One process_vm_readv of `len` bytes at each of `addrs` (at most IOV_MAX) into consecutive
/// pieces of `out`: the bytes read, which stop at the first piece that could not be read.
/// libc, not read-process-memory: the crate reads one place per call, which for pymalloc's
/// pool headers would be 1,024 syscalls where this is one.
fn process_vm_read_scattered(pid: i32, addrs: &[u64], len: usize, out: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: addrs.len() * len };
    let remote: Vec<libc::iovec> =
        addrs.iter().map(|&a| libc::iovec { iov_base: a as usize as *mut libc::c_void, iov_len: len }).collect();
    assert!(out.len() >= addrs.len() * len && remote.len() <= IOV_MAX);
    // SAFETY: `local` describes the first `addrs.len() * len` bytes of `out` (checked above),
    // valid for writes for the whole call; the remote iovecs are only interpreted by the
    // kernel in the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as libc::c_ulong, 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Turns an OS error into what it means for the caller; a vanished process is told apart from a
/// bad address by looking at /proc, because both can surface as ESRCH or EIO.
fn classify(pid: i32, addr: u64, len: usize, e: io::Error) -> ReadError {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return ReadError::ProcessGone;
    }
    match e.raw_os_error() {
        Some(libc::ESRCH) => ReadError::ProcessGone,
        Some(libc::EPERM) | Some(libc::EACCES) => ReadError::Denied(e),
        Some(libc::EFAULT) | Some(libc::EIO) | Some(libc::EINVAL) => ReadError::Unmapped { addr, len },
        // The crate's word for a read that stopped at an unmapped page.
        _ if e.kind() == io::ErrorKind::UnexpectedEof => ReadError::Unmapped { addr, len },
        _ => ReadError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_reads_take_many_places_at_once_and_skip_unreadable_ones() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let base = data.as_ptr() as u64;
        let mut mem = LiveProcess::new(std::process::id() as i32);
        let mut addrs: Vec<u64> = (0..2000u64).map(|k| base + (k % 64) * 48).collect();
        // An address nothing is mapped at, in the middle of the second batch.
        addrs[1500] = 8;
        let mut out = vec![0u8; addrs.len() * 48];
        let before = mem.io().reads;
        let whole = mem.read_scattered(&addrs, 48, &mut out).unwrap();
        assert_eq!(whole.iter().filter(|w| !**w).count(), 1);
        assert!(!whole[1500]);
        for (k, piece) in out.chunks_exact(48).enumerate().filter(|(k, _)| *k != 1500) {
            let at = (k % 64) * 48;
            assert_eq!(piece, &data[at..at + 48], "piece {k}");
        }
        // Two batches, and the rest of the second after the piece that stopped it (read alone,
        // which fails: failed reads are not counted).
        assert_eq!(mem.io().reads - before, 3);
    }

    #[test]
    fn reads_own_memory_through_the_cache_across_block_edges() {
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE)).map(|i| (i % 251) as u8).collect();
        let mut mem = LiveProcess::with_cache_blocks(std::process::id() as i32, 2);
        let base = data.as_ptr() as u64;
        let mut buf = vec![0u8; BLOCK_SIZE + 100];
        let start = BLOCK_SIZE - 50;
        mem.read(base + start as u64, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[start..start + buf.len()]);
        assert_eq!(mem.read_u8(base + 7).unwrap(), 7);
    }

    #[test]
    fn a_failed_fill_leaves_the_cache_consistent() {
        // Seen when a target exited mid-walk: a fill that failed with "process gone" left its
        // slot naming the block it held before, with no buffer, and the next read of that
        // block indexed an empty slice.
        let data: Vec<u8> = (0..(8 * BLOCK_SIZE)).map(|i| (i % 253) as u8).collect();
        let base = (data.as_ptr() as u64 + BLOCK_SIZE as u64 - 1) & !(BLOCK_SIZE as u64 - 1);
        let me = std::process::id() as i32;
        let mut mem = LiveProcess::with_cache_blocks(me, 4);
        let mut buf = [0u8; 16];
        mem.read(base, &mut buf).unwrap();
        // A block that maps to the same slot, read while the "target" is gone.
        (mem.pid, mem.handle) = (i32::MAX, handle(i32::MAX));
        assert!(matches!(mem.read(base + 4 * BLOCK_SIZE as u64, &mut buf), Err(ReadError::ProcessGone)));
        (mem.pid, mem.handle) = (me, handle(me));
        mem.read(base + 48, &mut buf).unwrap();
        let start = (base - data.as_ptr() as u64) as usize + 48;
        assert_eq!(&buf[..], &data[start..start + 16]);
    }

    #[test]
    fn claims_over_memory_never_written_are_refused_before_anything_is_allocated() {
        // 8 MiB reserved, one page written: what a crafted or torn length over an untouched
        // mapping looks like.
        let len = 8 << 20;
        // Unmapped below; only its first page is written.
        let p = crate::memory::anonymous_pages(len);
        // SAFETY: the first byte of the mapping just made.
        unsafe { *p = 7 };
        let base = p as u64;
        let mut mem = LiveProcess::new(std::process::id() as i32);
        assert_eq!(mem.populated(base, PAGE_SIZE), Some(true));
        assert_eq!(mem.populated(base, len as u64), Some(false));
        assert!(matches!(mem.read_claimed(base, len as u64), Err(ReadError::Implausible { .. })));
        // Small claims are read without the check, and real ones pass it.
        assert_eq!(mem.read_claimed(base, 16).unwrap()[0], 7);
        let real = vec![1u8; 4 << 20];
        assert_eq!(mem.read_claimed(real.as_ptr() as u64, real.len() as u64).unwrap(), real);
        // SAFETY: unmaps the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
    }

    /// The crate reads all or nothing; a read across the end of a mapping still returns what
    /// is readable, to the byte, whether it starts on a page boundary or not, and a block
    /// that straddles the edge still serves the readable part from the cache.
    #[test]
    fn reads_across_a_mapping_end_return_what_is_readable() {
        let pages = 7usize;
        let len = pages * PAGE_SIZE as usize;
        // SAFETY: a fresh private anonymous mapping of 8 pages, written through the pointer
        // mmap returned within its first 7 pages; its last page is unmapped at once, and the
        // rest below.
        let base = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len + PAGE_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            for k in 0..len {
                *(p as *mut u8).add(k) = (k % 249) as u8;
            }
            assert_eq!(libc::munmap((p as *mut u8).add(len).cast(), PAGE_SIZE as usize), 0);
            p as u64
        };
        let me = std::process::id() as i32;
        for start in [0usize, 100, PAGE_SIZE as usize, 5 * PAGE_SIZE as usize + 7] {
            let mut buf = vec![0u8; len + 3 * PAGE_SIZE as usize];
            let n = direct_read(me, base + start as u64, &mut buf).unwrap();
            assert_eq!(n, len - start, "from {start}");
            assert!(buf[..n].iter().enumerate().all(|(k, &b)| b == ((start + k) % 249) as u8));
        }
        assert!(matches!(direct_read(me, base + len as u64, &mut [0u8; 8]), Err(ReadError::Unmapped { .. })));
        let mut mem = LiveProcess::new(me);
        let last = base + len as u64 - 8;
        assert_eq!(mem.read_u64(last).unwrap().to_le_bytes()[0], ((len - 8) % 249) as u8);
        assert!(mem.read(last, &mut [0u8; 16]).is_err(), "past the end");
        // SAFETY: unmaps the rest of the mapping made above, which nothing else refers to.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
    }

    #[test]
    fn unmapped_addresses_are_errors_not_panics() {
        let mut mem = LiveProcess::new(std::process::id() as i32);
        let mut buf = [0u8; 16];
        assert!(matches!(mem.read(8, &mut buf), Err(ReadError::Unmapped { .. })));
        assert!(mem.read(u64::MAX - 4, &mut buf).is_err());
    }
}
