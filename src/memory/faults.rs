//! A memory source that fails or lies on chosen reads, around a real one: how the tests show
//! that every read a running target can tear (a thread state, a frame, a type, an object) is
//! retried or skipped, and that a real layout mismatch is still told apart from a torn read.
//!
//! A running target tears reads in two ways, and each fault imitates one: the address is no
//! longer mapped (a freed block returned to the system), or it is mapped but holds something
//! else (a freed block reused). A fault can heal after some reads (a thread that finished
//! exiting, a list relinked) or last (a layout that really differs).

use super::{ReadError, RemoteMemory};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The read fails as if the bytes were not mapped.
    Unmapped,
    /// The read succeeds with these bytes repeated over the faulty range.
    Garbage(u8),
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// Target addresses whose reads the fault affects (any read overlapping them).
    pub range: Range<u64>,
    pub kind: FaultKind,
    /// Reads the fault affects before it heals; `None`: it never heals.
    pub remaining: Option<u64>,
}

impl Fault {
    /// A fault that lasts.
    pub fn lasting(range: Range<u64>, kind: FaultKind) -> Fault {
        Fault { range, kind, remaining: None }
    }

    /// A fault that affects the first `reads` reads of its range, then heals.
    pub fn healing(range: Range<u64>, kind: FaultKind, reads: u64) -> Fault {
        Fault { range, kind, remaining: Some(reads) }
    }
}

pub struct FaultyMemory<M> {
    pub inner: M,
    pub faults: Vec<Fault>,
    /// Reads a fault affected, in all.
    pub hits: u64,
}

impl<M: RemoteMemory> FaultyMemory<M> {
    pub fn new(inner: M, faults: Vec<Fault>) -> FaultyMemory<M> {
        FaultyMemory { inner, faults, hits: 0 }
    }
}

impl<M: RemoteMemory> RemoteMemory for FaultyMemory<M> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = addr.saturating_add(buf.len() as u64);
        let hit = self.faults.iter_mut().find(|f| f.range.start < end && addr < f.range.end && f.remaining != Some(0));
        let Some(fault) = hit else { return self.inner.read(addr, buf) };
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
        }
        self.hits += 1;
        match fault.kind {
            FaultKind::Unmapped => Err(ReadError::Unmapped { addr, len: buf.len() }),
            FaultKind::Garbage(byte) => {
                let (start, stop) = (fault.range.start.max(addr), fault.range.end.min(end));
                self.inner.read(addr, buf)?;
                buf[(start - addr) as usize..(stop - addr) as usize].fill(byte);
                Ok(())
            }
        }
    }

    fn invalidate(&mut self) {
        self.inner.invalidate();
    }

    fn changes_under_reads(&self) -> bool {
        self.inner.changes_under_reads()
    }

    fn populated(&mut self, addr: u64, len: u64) -> Option<bool> {
        self.inner.populated(addr, len)
    }

    fn populated_runs(&mut self, start: u64, end: u64) -> Option<Vec<std::ops::Range<u64>>> {
        self.inner.populated_runs(start, end)
    }

    fn io(&self) -> super::IoCounters {
        self.inner.io()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory that is a plain byte array starting at address 0x1000.
    struct Bytes(Vec<u8>);

    impl RemoteMemory for Bytes {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            let start = addr.checked_sub(0x1000).ok_or(ReadError::Unmapped { addr, len: buf.len() })? as usize;
            let bytes = self.0.get(start..start + buf.len()).ok_or(ReadError::Unmapped { addr, len: buf.len() })?;
            buf.copy_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn faults_hit_overlapping_reads_and_heal() {
        let faults = vec![
            Fault::healing(0x1008..0x1010, FaultKind::Unmapped, 2),
            Fault::lasting(0x1014..0x1016, FaultKind::Garbage(0xAA)),
        ];
        let mut mem = FaultyMemory::new(Bytes((0..64).collect()), faults);
        assert!(mem.read_u64(0x1004).is_err(), "overlaps the first fault");
        assert!(mem.read_u64(0x100c).is_err());
        assert_eq!(mem.read_u64(0x1008).unwrap(), u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]), "healed");
        let mut buf = [0u8; 8];
        mem.read(0x1010, &mut buf).unwrap();
        assert_eq!(buf, [16, 17, 18, 19, 0xAA, 0xAA, 22, 23]);
        assert_eq!(mem.read_u32(0x1000).unwrap(), u32::from_le_bytes([0, 1, 2, 3]), "outside every fault");
        assert_eq!(mem.hits, 3);
    }
}
