//! Writing a leakspy memory image: an ELF64 core file (ET_CORE, x86-64), so that gdb and other
//! tools open it as they open a kernel core or a gcore. The layout is the kernel's: the ELF
//! header, the program headers, one PT_NOTE segment with the notes, then the memory segments
//! (PT_LOAD), each starting on a page boundary of the file.
//!
//! Nothing here reads the target: the caller gives the notes and the segments' bytes.

use std::io::{self, Write};

/// Page size of the file layout: PT_LOAD contents start on such a boundary, as in kernel cores.
const FILE_ALIGN: u64 = 4096;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
/// e_phnum is 16 bits and 0xffff means "see section header 0" (PN_XNUM), which not every
/// reader follows: the writer keeps to fewer segments (the caller merges them).
pub const MAX_SEGMENTS: usize = 0xfff0;

const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// The note types, as the reader knows them: what is written is what is read.
pub use crate::memory::core::{NT_AUXV, NT_FILE, NT_LEAKSPY, NT_PRPSINFO, NT_PRSTATUS};

/// One ELF note.
pub struct Note {
    /// The owner, without its NUL ("CORE", "LEAKSPY").
    pub owner: &'static str,
    pub kind: u32,
    pub desc: Vec<u8>,
}

/// Part of a segment's contents.
pub enum Chunk<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    Zeros(u64),
}

impl Chunk<'_> {
    fn len(&self) -> u64 {
        match self {
            Chunk::Borrowed(b) => b.len() as u64,
            Chunk::Owned(b) => b.len() as u64,
            Chunk::Zeros(n) => *n,
        }
    }
}

/// One PT_LOAD segment: target memory at `vaddr`, its contents the chunks one after the other.
pub struct Segment<'a> {
    pub vaddr: u64,
    pub flags: u32,
    pub chunks: Vec<Chunk<'a>>,
}

impl Segment<'_> {
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The notes as the PT_NOTE segment holds them: name and descriptor each padded to 4 bytes.
fn encode_notes(notes: &[Note]) -> Vec<u8> {
    let mut out = Vec::new();
    for note in notes {
        let name_len = note.owner.len() + 1;
        out.extend_from_slice(&(name_len as u32).to_le_bytes());
        out.extend_from_slice(&(note.desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&note.kind.to_le_bytes());
        out.extend_from_slice(note.owner.as_bytes());
        out.push(0);
        out.resize(align(out.len() as u64, 4) as usize, 0);
        out.extend_from_slice(&note.desc);
        out.resize(align(out.len() as u64, 4) as usize, 0);
    }
    out
}

/// A core file laid out, ready to be written: its size is known before a byte is written (for
/// zstd's frame header, and the report).
pub struct CoreLayout<'a> {
    notes: Vec<u8>,
    segments: Vec<Segment<'a>>,
    /// File offset of each segment's contents.
    offsets: Vec<u64>,
    pub total_bytes: u64,
}

impl<'a> CoreLayout<'a> {
    pub fn new(notes: &[Note], segments: Vec<Segment<'a>>) -> io::Result<CoreLayout<'a>> {
        if segments.len() > MAX_SEGMENTS {
            return Err(io::Error::other(format!(
                "{} memory segments: more than an ELF core can list ({MAX_SEGMENTS})",
                segments.len()
            )));
        }
        let notes = encode_notes(notes);
        let headers_end = EHDR_SIZE + PHDR_SIZE * (segments.len() as u64 + 1);
        let mut at = align(headers_end + notes.len() as u64, FILE_ALIGN);
        let mut offsets = Vec::with_capacity(segments.len());
        for segment in &segments {
            offsets.push(at);
            at = align(at + segment.len(), FILE_ALIGN);
        }
        // The last segment is not padded: the file ends with its last byte.
        let total_bytes = match (segments.last(), offsets.last()) {
            (Some(s), Some(&o)) => o + s.len(),
            _ => headers_end + notes.len() as u64,
        };
        Ok(CoreLayout { notes, segments, offsets, total_bytes })
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Writes the whole file; `progress` is called with the bytes written after each segment.
    pub fn write(&self, out: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> io::Result<()> {
        let phnum = self.segments.len() as u64 + 1;
        let notes_offset = EHDR_SIZE + PHDR_SIZE * phnum;
        let mut header = Vec::with_capacity(notes_offset as usize);
        header.extend_from_slice(b"\x7fELF");
        // 64-bit, little-endian, version 1, System V ABI, padding.
        header.extend_from_slice(&[2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        header.extend_from_slice(&ET_CORE.to_le_bytes());
        header.extend_from_slice(&EM_X86_64.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes()); // e_version
        header.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        header.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
        header.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        header.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        header.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        header.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        header.extend_from_slice(&(phnum as u16).to_le_bytes());
        header.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        header.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        header.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        let mut phdr = |p_type: u32, flags: u32, offset: u64, vaddr: u64, size: u64, align: u64| {
            header.extend_from_slice(&p_type.to_le_bytes());
            header.extend_from_slice(&flags.to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            header.extend_from_slice(&vaddr.to_le_bytes());
            header.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
            header.extend_from_slice(&size.to_le_bytes()); // p_filesz
            header.extend_from_slice(&size.to_le_bytes()); // p_memsz
            header.extend_from_slice(&align.to_le_bytes());
        };
        phdr(PT_NOTE, 0, notes_offset, 0, self.notes.len() as u64, 4);
        for (segment, &offset) in self.segments.iter().zip(&self.offsets) {
            phdr(PT_LOAD, segment.flags, offset, segment.vaddr, segment.len(), FILE_ALIGN);
        }
        out.write_all(&header)?;
        out.write_all(&self.notes)?;
        let mut written = notes_offset + self.notes.len() as u64;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let zeros = |out: &mut dyn Write, mut n: u64| -> io::Result<()> {
            while n > 0 {
                let k = n.min(ZEROS.len() as u64);
                out.write_all(&ZEROS[..k as usize])?;
                n -= k;
            }
            Ok(())
        };
        for (segment, &offset) in self.segments.iter().zip(&self.offsets) {
            zeros(out, offset - written)?;
            for chunk in &segment.chunks {
                match chunk {
                    Chunk::Borrowed(b) => out.write_all(b)?,
                    Chunk::Owned(b) => out.write_all(b)?,
                    Chunk::Zeros(n) => zeros(out, *n)?,
                }
            }
            written = offset + segment.len();
            progress(written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_lays_out_notes_and_page_aligned_segments() {
        let notes = [Note { owner: "LEAKSPY", kind: NT_LEAKSPY, desc: b"{\"format\":1}".to_vec() }];
        let data = vec![7u8; 5000];
        let segments = vec![
            Segment { vaddr: 0x1000, flags: PF_R | PF_W, chunks: vec![Chunk::Borrowed(&data)] },
            Segment { vaddr: 0x9000, flags: PF_R, chunks: vec![Chunk::Zeros(10), Chunk::Owned(vec![1, 2, 3])] },
        ];
        let layout = CoreLayout::new(&notes, segments).unwrap();
        let mut out = Vec::new();
        layout.write(&mut out, &mut |_| {}).unwrap();
        assert_eq!(out.len() as u64, layout.total_bytes);
        let elf = goblin::elf::Elf::parse(&out).unwrap();
        assert_eq!(elf.header.e_type, ET_CORE);
        let loads: Vec<_> = elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD).collect();
        assert_eq!(loads.len(), 2);
        assert_eq!((loads[0].p_vaddr, loads[0].p_filesz, loads[0].p_offset % FILE_ALIGN), (0x1000, 5000, 0));
        let at = loads[1].p_offset as usize;
        assert_eq!(&out[at..at + 13], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        let note = elf.iter_note_headers(&out).unwrap().next().unwrap().unwrap();
        assert_eq!((note.name, note.n_type, note.desc), ("LEAKSPY", NT_LEAKSPY, &b"{\"format\":1}"[..]));
    }
}
