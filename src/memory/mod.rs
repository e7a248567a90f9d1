//! Where bytes come from. Everything above this module asks "give me these bytes at this
//! address" and does not know whether they come from a live process or (later) a core file.

pub mod core;
pub mod faults;
pub mod live;
pub mod maps;
pub mod pause;
pub mod proc_info;
pub mod processes;
pub mod target_files;

use std::io;

/// Why a read failed. The difference matters to the caller: an unmapped address in a running
/// target is a stale or torn pointer (skip it), a vanished process ends the sample, and a
/// denied read is a configuration problem the user must fix.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("address {addr:#x} (+{len}) is not readable in the target")]
    Unmapped { addr: u64, len: usize },
    /// Readable, but not what it claims to be: a pointer to something that is not a type, a
    /// length over memory the target never wrote. Torn or corrupt, like an unmapped address.
    #[error("the data at {addr:#x} is not {what} (torn or corrupt)")]
    Implausible { addr: u64, what: &'static str },
    #[error("the target process is gone")]
    ProcessGone,
    #[error("reading the target's memory was denied: {0}")]
    Denied(io::Error),
    /// Stopping the target needs ptrace, and a process has one tracer at most.
    #[error("the target is already traced by process {tracer}")]
    AlreadyTraced { tracer: i32 },
    #[error("reading the target's memory failed: {0}")]
    Io(io::Error),
}

/// Claimed ranges larger than this have their pages checked before they are read.
const CHECK_POPULATED_ABOVE: u64 = 1 << 20;
/// No single object claims more than this (16 GiB): a list of two billion items.
const MAX_CLAIMED_BYTES: u64 = 1 << 34;
const CLAIMED_PIECE: usize = 1 << 20;
/// Word arrays up to this long are read into a buffer on the stack.
const SMALL_WORDS: usize = 64;

impl ReadError {
    /// True if the target's data could not be trusted at this moment (a stale or corrupt
    /// pointer, a torn length): skip it or read again. False for what ends the read: the
    /// process gone, access denied, an I/O failure.
    pub fn is_torn(&self) -> bool {
        matches!(self, ReadError::Unmapped { .. } | ReadError::Implausible { .. })
    }
}

/// Reads target memory into a buffer, past any cache: as many bytes as are readable from an
/// address on (for bulk copies and scans, which may run on several threads).
pub type ReadInto<'a> = dyn FnMut(u64, &mut [u8]) -> Result<usize, ReadError> + 'a;

/// What a source has read from the target so far: requests (syscalls) and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub reads: u64,
    pub bytes: u64,
}

/// A source of target memory. `&mut self` because real sources cache.
pub trait RemoteMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError>;

    /// Forgets anything cached, so that the next read sees the target's memory as it is now.
    fn invalidate(&mut self) {}

    /// True if the memory may change between two reads: a running process. A copy taken
    /// while the target was stopped (or a core file) says false: what reads torn there stays
    /// torn, so nothing above retries it.
    fn changes_under_reads(&self) -> bool {
        true
    }

    fn read_u64(&mut self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&mut self, addr: u64) -> Result<u32, ReadError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u8(&mut self, addr: u64) -> Result<u8, ReadError> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    /// The PID to read with `live::direct_read` from other threads, where that reads the same
    /// memory as this source (a live process read with process_vm_readv).
    fn direct_reads(&self) -> Option<i32> {
        None
    }

    /// Requests made to the target and bytes read so far (zero for sources that do not read
    /// a process).
    fn io(&self) -> IoCounters {
        IoCounters::default()
    }

    /// The runs of pages in `[start, end)` the target has written, where the source can tell.
    fn populated_runs(&mut self, _start: u64, _end: u64) -> Option<Vec<std::ops::Range<u64>>> {
        None
    }

    /// Reads a large range for a scan, past any cache; the count of bytes read from `addr`
    /// on, short where an unreadable page begins.
    fn read_bulk(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read(addr, buf).map(|()| buf.len())
    }

    /// Reads `len` bytes at each of `addrs` into consecutive `len`-byte pieces of `out`, past
    /// any cache; per address, whether its piece was read whole (an unreadable one is left as
    /// it was). Sources that can read many places in one request do (process_vm_readv takes
    /// up to 1,024 of them): pymalloc's pool headers are a few dozen bytes every 16 KiB.
    fn read_scattered(&mut self, addrs: &[u64], len: usize, out: &mut [u8]) -> Result<Vec<bool>, ReadError> {
        scattered_one_by_one(self, addrs, len, out)
    }

    /// Whether every page of `len` bytes at `addr` holds data the target wrote (present in
    /// memory or swapped out), where the source can tell (`None` where it cannot).
    fn populated(&mut self, _addr: u64, _len: u64) -> Option<bool> {
        None
    }

    /// Reads `len` bytes whose size the target claims: an item array, a dict's entries. The
    /// claim is checked before anything is allocated for it: a real array of this size was
    /// written by the target, so its pages are populated; one laid over memory never touched
    /// (a crafted length, or a torn one) would make leakspy read and hold gigabytes for
    /// nothing. So the cost of reading stays proportional to the target's real memory.
    fn read_claimed(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        if len > MAX_CLAIMED_BYTES || (len > CHECK_POPULATED_ABOVE && self.populated(addr, len) == Some(false)) {
            return Err(ReadError::Implausible {
                addr,
                what: "an array the target wrote (its length is torn or crafted)",
            });
        }
        if len <= CLAIMED_PIECE as u64 {
            let mut out = vec![0u8; len as usize];
            self.read(addr, &mut out)?;
            return Ok(out);
        }
        // Grown piece by piece as reads succeed: where the source cannot tell which pages are
        // populated, a false length costs one piece, not an allocation of the claimed size.
        let mut out = Vec::with_capacity(CLAIMED_PIECE);
        let mut piece = vec![0u8; CLAIMED_PIECE];
        while (out.len() as u64) < len {
            let n = ((len - out.len() as u64) as usize).min(CLAIMED_PIECE);
            self.read(addr + out.len() as u64, &mut piece[..n])?;
            out.extend_from_slice(&piece[..n]);
        }
        Ok(out)
    }

    /// `count` consecutive 64-bit words (pointers of an item array, a frame's slots), `count`
    /// as the target claims it (see `read_claimed`).
    fn read_words(&mut self, addr: u64, count: usize) -> Result<Vec<u64>, ReadError> {
        // Most arrays are a few words (a tuple, a small dict's entries, a block of a list's
        // items): read on the stack, so that the words are the only allocation.
        let mut small = [0u8; SMALL_WORDS * 8];
        let raw = match small.get_mut(..count.saturating_mul(8)) {
            Some(bytes) => {
                self.read(addr, bytes)?;
                &*bytes
            }
            None => &self.read_claimed(addr, (count as u64).saturating_mul(8))?,
        };
        Ok(raw.chunks_exact(8).map(|w| u64_at(w, 0)).collect())
    }

    /// Reads a NUL-terminated C string of at most `max` bytes; `None` when no NUL is found,
    /// which for a type name means the pointer is not what we think it is.
    fn read_c_string(&mut self, addr: u64, max: usize) -> Result<Option<String>, ReadError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            // Never read across a 4 KiB page we were not asked for: the string may end just
            // before an unmapped page.
            let to_page_end = 4096 - ((addr as usize + out.len()) % 4096);
            let n = chunk.len().min(to_page_end);
            self.read(addr + out.len() as u64, &mut chunk[..n])?;
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(Some(String::from_utf8_lossy(&out).into_owned()));
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok(None)
    }
}

/// `read_scattered` as one `read_bulk` per address.
pub fn scattered_one_by_one<M: RemoteMemory + ?Sized>(
    mem: &mut M,
    addrs: &[u64],
    len: usize,
    out: &mut [u8],
) -> Result<Vec<bool>, ReadError> {
    let mut whole = Vec::with_capacity(addrs.len());
    for (&addr, piece) in addrs.iter().zip(out.chunks_exact_mut(len.max(1))) {
        match mem.read_bulk(addr, piece) {
            Ok(n) => whole.push(n == len),
            Err(e) if e.is_torn() => whole.push(false),
            Err(e) => return Err(e),
        }
    }
    Ok(whole)
}

/// Little-endian field access into a buffer already copied from the target.
pub fn u64_at(buf: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[offset..offset + 8]);
    u64::from_le_bytes(b)
}

pub fn u32_at(buf: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// A fresh private anonymous mapping of `len` bytes, for tests that need memory of their own
/// with pages written or left untouched; the test unmaps it.
#[cfg(test)]
pub(crate) fn anonymous_pages(len: usize) -> *mut u8 {
    // SAFETY: a new mapping, at an address the kernel picks: nothing else is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}
