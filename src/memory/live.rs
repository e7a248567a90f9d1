//! Memory of a live process, read without stopping it.
//!
//! A heap walk touches millions of small objects. One syscall each would cost more than the
//! walk itself, so reads go through a cache of 16 KiB blocks filled by `process_vm_readv`
//! (falling back to /proc/PID/mem where that syscall is unavailable). The cache is
//! direct-mapped and bounded, so leakspy's memory stays far below the target's however big the
//! heap is. libc is called directly rather than through a wrapper crate because filling a
//! block needs the byte count of a partial read (a block may end in an unmapped page), which
//! the wrappers turn into an error.

use super::{IoCounters, ReadError, RemoteMemory, u64_at};
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
    blocks: Vec<Block>,
    mem_file: Option<File>,
    /// /proc/PID/pagemap, opened the first time a large claimed range is checked; `None`
    /// inside when it cannot be opened (then claims are not checked).
    pagemap: Option<Option<File>>,
    io: IoCounters,
    /// Set once process_vm_readv turns out to be unavailable (ENOSYS, or EPERM under some
    /// seccomp profiles), so that every later read goes straight to /proc/PID/mem.
    use_mem_file: bool,
}

impl LiveProcess {
    pub fn new(pid: i32) -> LiveProcess {
        LiveProcess::with_cache_blocks(pid, DEFAULT_BLOCKS)
    }

    pub fn with_cache_blocks(pid: i32, blocks: usize) -> LiveProcess {
        let blocks = (0..blocks.max(1))
            .map(|_| Block { addr: u64::MAX, valid: 0, data: Vec::new().into_boxed_slice() })
            .collect();
        LiveProcess { pid, blocks, mem_file: None, pagemap: None, io: IoCounters::default(), use_mem_file: false }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True once process_vm_readv has worked for this target: then other threads may read it
    /// the same way (`direct_read`), which has no state to share.
    pub fn reads_directly(&self) -> bool {
        !self.use_mem_file && self.io.reads > 0
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
        let mut entries = vec![0u8; 8 * 4096];
        let (mut page, last) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
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
        let n = self.read_raw_uncounted(addr, buf)?;
        self.io.reads += 1;
        self.io.bytes += n as u64;
        Ok(n)
    }

    fn read_raw_uncounted(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        if !self.use_mem_file {
            match process_vm_read(self.pid, addr, buf) {
                Ok(n) => return Ok(n),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                    // Fall through to /proc/PID/mem, which some setups allow when the syscall
                    // is filtered; if it is denied too, that error is the one reported.
                    self.use_mem_file = true;
                }
                Err(e) => return Err(classify(self.pid, addr, buf.len(), e)),
            }
        }
        if self.mem_file.is_none() {
            let file =
                File::open(format!("/proc/{}/mem", self.pid)).map_err(|e| classify(self.pid, addr, buf.len(), e))?;
            self.mem_file = Some(file);
        }
        let file = self.mem_file.as_ref().expect("opened above");
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                // Bytes already read before an unmapped page are a valid partial read.
                Err(_) if done > 0 => break,
                Err(e) => return Err(classify(self.pid, addr, buf.len(), e)),
            }
        }
        Ok(done)
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
        if self.use_mem_file || len == 0 {
            return super::scattered_one_by_one(self, addrs, len, out);
        }
        let mut whole = vec![false; addrs.len()];
        let mut next = 0;
        while next < addrs.len() {
            let batch = (addrs.len() - next).min(IOV_MAX);
            let pieces = &mut out[next * len..(next + batch) * len];
            // A failure on the first piece is an error, not a short read: that piece is read
            // alone below, which tells why.
            let n = process_vm_read_scattered(self.pid, &addrs[next..next + batch], len, pieces).unwrap_or_default();
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

/// One process_vm_readv, uncached and stateless, for threads that copy in parallel: as many
/// bytes as are readable from `addr` on.
pub fn direct_read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
    process_vm_read(pid, addr, buf).map_err(|e| classify(pid, addr, buf.len(), e))
}

fn process_vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` describes `buf`, which is valid for writes of its length for the whole
    // call; the remote iovec is only interpreted by the kernel in the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Remote iovecs per process_vm_readv (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// One process_vm_readv of `len` bytes at each of `addrs` (at most IOV_MAX) into consecutive
/// pieces of `out`: the bytes read, which stop at the first piece that could not be read.
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
        mem.pid = i32::MAX;
        assert!(matches!(mem.read(base + 4 * BLOCK_SIZE as u64, &mut buf), Err(ReadError::ProcessGone)));
        mem.pid = me;
        mem.read(base + 48, &mut buf).unwrap();
        let start = (base - data.as_ptr() as u64) as usize + 48;
        assert_eq!(&buf[..], &data[start..start + 16]);
    }

    #[test]
    fn claims_over_memory_never_written_are_refused_before_anything_is_allocated() {
        // 8 MiB reserved, one page written: what a crafted or torn length over an untouched
        // mapping looks like.
        let len = 8 << 20;
        // SAFETY: a fresh private anonymous mapping, unmapped below; only its first page is
        // written, through the pointer mmap returned.
        let base = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u8) = 7;
            p as u64
        };
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

    #[test]
    fn unmapped_addresses_are_errors_not_panics() {
        let mut mem = LiveProcess::new(std::process::id() as i32);
        let mut buf = [0u8; 16];
        assert!(matches!(mem.read(8, &mut buf), Err(ReadError::Unmapped { .. })));
        assert!(mem.read(u64::MAX - 4, &mut buf).is_err());
    }
}
