//! A frozen copy of a target's readable memory: a memory source that is not the process, for
//! tests that read a heap many times over (the fuzzer corrupts it, the graph-memory test
//! measures what building its graph allocates).

use leakspy::cpython::process::PythonProcess;
use leakspy::memory::live::LiveProcess;
use leakspy::memory::{ReadError, RemoteMemory};

/// A frozen copy of a process's readable memory.
#[derive(Clone)]
pub struct Image {
    pub regions: Vec<(u64, Vec<u8>)>,
}

impl Image {
    pub fn capture(pid: i32, process: &PythonProcess) -> Image {
        let mut live = LiveProcess::new(pid);
        let mut regions = Vec::new();
        for m in process.maps.mappings.iter().filter(|m| m.readable && !m.path.starts_with("[v")) {
            for run in live.populated_runs(m.start, m.end).unwrap_or_default() {
                let mut data = vec![0u8; (run.end - run.start) as usize];
                if let Ok(n) = live.read_bulk(run.start, &mut data) {
                    data.truncate(n);
                    regions.push((run.start, data));
                }
            }
        }
        regions.sort_by_key(|r| r.0);
        Image { regions }
    }

    fn locate(&self, addr: u64) -> Option<(usize, usize)> {
        let k = self.regions.partition_point(|(start, _)| *start <= addr).checked_sub(1)?;
        let (start, data) = &self.regions[k];
        let offset = (addr - start) as usize;
        (offset < data.len()).then_some((k, offset))
    }

    /// Overwrites the word at `addr`, if the image holds it.
    pub fn write_u64(&mut self, addr: u64, value: u64) {
        if let Some((k, offset)) = self.locate(addr)
            && let Some(word) = self.regions[k].1.get_mut(offset..offset + 8)
        {
            word.copy_from_slice(&value.to_le_bytes());
        }
    }
}

impl RemoteMemory for Image {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let unmapped = ReadError::Unmapped { addr, len: buf.len() };
        let (k, offset) = self.locate(addr).ok_or(unmapped)?;
        let bytes =
            self.regions[k].1.get(offset..offset + buf.len()).ok_or(ReadError::Unmapped { addr, len: buf.len() })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn changes_under_reads(&self) -> bool {
        false
    }
}
