//! Memory of a process that is gone, or was left running elsewhere: an ELF core file, as the
//! kernel writes it on a crash, as gdb's `gcore` writes it of a live process, or as `leakspy
//! dump` writes it (a core with a note of its own, optionally zstd-compressed as a whole).
//!
//! The file is untrusted like a target: every header is bounds-checked against the file's
//! size, notes are read with a size cap, and memory is read with `pread`, never mapped, so a
//! file truncated under us reads as "unmapped", not as a SIGBUS. A page the core does not hold
//! (outside every PT_LOAD segment, or in a segment's p_memsz beyond its p_filesz) is
//! unreadable, never zeros: a kernel core or gcore leaves read-only file mappings out (their
//! content is the file's), and for those the file itself is read, once its build id has been
//! checked against the ELF header the core holds (see `FileOverlay`).

use super::maps::{Mapping, MemoryMap};
use super::target_files::{TargetFile, TargetFileError, open_in_root};
use super::{ReadError, RemoteMemory, u64_at};
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::header64::SIZEOF_EHDR;
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_CORE};
use goblin::elf::program_header::{PF_R, PF_W, PT_LOAD, PT_NOTE};
use goblin::elf::{Elf, ProgramHeader};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// More program headers than this is not a core of a real process (the kernel caps a process
/// at 65,530 mappings by default, vm.max_map_count).
const MAX_SEGMENTS: usize = 1 << 20;
/// The notes of a core: a few KB per thread plus NT_FILE; 64 MiB covers 100,000 threads.
const MAX_NOTES_BYTES: u64 = 64 << 20;
/// leakspy's own note is a JSON object of a few KB; anything larger is not ours.
const MAX_LEAKSPY_NOTE: usize = 16 << 20;
/// A compressed image is refused if it would decompress to more than this (64 GiB).
const MAX_DECOMPRESSED: u64 = 64 << 30;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRPSINFO: u32 = 3;
pub const NT_AUXV: u32 = 6;
pub const NT_FILE: u32 = 0x4649_4c45;
/// leakspy's note (owner "LEAKSPY"): see the image format in the README.
pub const NT_LEAKSPY: u32 = 0x4c53_0001;
const AT_PHDR: u64 = 3;
const AT_ENTRY: u64 = 9;

/// Cache blocks: 16 KiB, as for a live process; 2,048 of them (32 MiB at most).
const BLOCK_SIZE: usize = 16 * 1024;
const CACHE_BLOCKS: usize = 2048;

/// Why a core file cannot be read. Each is one sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot open it: {0}")]
    Open(io::Error),
    #[error("it is not an ELF file (it starts with {0})")]
    NotElf(String),
    #[error("it is an ELF file but not a core dump ({0})")]
    NotCore(String),
    #[error("it is truncated: {0}")]
    Truncated(String),
    #[error("it is corrupt: {0}")]
    Corrupt(String),
    #[error("it is a leakspy image of format {0}, newer than this leakspy reads (1): upgrade leakspy")]
    NewerFormat(u64),
    #[error("decompressing it failed: {0}")]
    Decompress(String),
}

/// One PT_LOAD segment: `filesz` bytes at `offset` in the file hold the target's memory at
/// `vaddr`; the rest of `memsz` was not dumped.
#[derive(Debug, Clone)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub offset: u64,
    pub readable: bool,
    pub writable: bool,
}

/// One entry of NT_FILE: a file mapped at `start..end` from byte `offset` of `path` (the path
/// as the dumped process's /proc/PID/maps named it).
#[derive(Debug, Clone)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

/// NT_PRPSINFO: who the process was.
#[derive(Debug, Clone, Default)]
pub struct PrPsInfo {
    pub pid: i32,
    /// The command name (16 bytes at most).
    pub fname: String,
    /// The start of the command line (80 bytes at most).
    pub psargs: String,
}

/// leakspy's own note, as `leakspy dump` writes it: everything a reader needs without the
/// target's files. Every field was checked; unknown ones are ignored.
#[derive(Debug, Clone, Default)]
pub struct LeakspyNote {
    pub pid: i32,
    pub start_time_ticks: Option<u64>,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub host: String,
    pub dumped_at_unix: Option<f64>,
    pub python_version: Option<String>,
    pub binary: String,
    pub binary_build_id: Option<String>,
    pub load_bias: u64,
    /// Absolute addresses in the target.
    pub symbols: Vec<(String, u64)>,
    pub rss_bytes: Option<u64>,
    pub writable_bytes: Option<u64>,
    pub paused_ms: Option<f64>,
    pub copied_bytes: Option<u64>,
    pub threads: Option<u64>,
}

/// A parsed core file, its memory not yet read.
#[derive(Debug)]
pub struct CoreFile {
    /// The path the user gave.
    pub path: PathBuf,
    /// The ELF file (for a compressed image, its decompressed copy in an anonymous file).
    file: File,
    len: u64,
    pub compressed: bool,
    /// Sorted by address.
    pub segments: Vec<Segment>,
    pub files: Vec<FileMapping>,
    pub prpsinfo: Option<PrPsInfo>,
    /// NT_PRSTATUS notes: one per thread.
    pub threads: usize,
    pub auxv: Vec<(u64, u64)>,
    pub leakspy: Option<LeakspyNote>,
    /// The file's modification time: when a kernel core or gcore was written.
    pub mtime: Option<std::time::SystemTime>,
}

impl CoreFile {
    pub fn open(path: &Path) -> Result<CoreFile, CoreError> {
        let file = File::open(path).map_err(CoreError::Open)?;
        let meta = file.metadata().map_err(CoreError::Open)?;
        if !meta.is_file() {
            return Err(CoreError::Open(io::Error::other("not a regular file")));
        }
        let mtime = meta.modified().ok();
        let mut magic = [0u8; 4];
        let got = file.read_at(&mut magic, 0).map_err(CoreError::Open)?;
        let (file, compressed) =
            if got == 4 && magic == ZSTD_MAGIC { (decompress(&file, meta.len())?, true) } else { (file, false) };
        let len = file.metadata().map_err(CoreError::Open)?.len();
        let mut core = CoreFile {
            path: path.to_path_buf(),
            file,
            len,
            compressed,
            segments: Vec::new(),
            files: Vec::new(),
            prpsinfo: None,
            threads: 0,
            auxv: Vec::new(),
            leakspy: None,
            mtime,
        };
        core.parse()?;
        Ok(core)
    }

    fn read_exact(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, CoreError> {
        let end = offset.checked_add(len).ok_or_else(|| CoreError::Corrupt(format!("{what} lies past 2^64")))?;
        if end > self.len {
            return Err(CoreError::Truncated(format!(
                "{what} ends at byte {end}, and the file has {} bytes",
                self.len
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(CoreError::Open)?;
        Ok(buf)
    }

    fn parse(&mut self) -> Result<(), CoreError> {
        let head = {
            let mut head = vec![0u8; SIZEOF_EHDR];
            let n = self.file.read_at(&mut head, 0).map_err(CoreError::Open)?;
            head.truncate(n);
            head
        };
        if head.len() < 4 || &head[..4] != b"\x7fELF" {
            let shown: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(CoreError::NotElf(if shown.is_empty() {
                "nothing: it is empty".into()
            } else {
                shown.join(" ")
            }));
        }
        if head.len() < SIZEOF_EHDR {
            return Err(CoreError::Truncated(format!("its ELF header is {} bytes of {SIZEOF_EHDR}", head.len())));
        }
        let header = Elf::parse_header(&head).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        // gdb writes section headers last: a file cut short may lose only them.
        let sections_end = u64::from(header.e_shnum)
            .checked_mul(u64::from(header.e_shentsize))
            .and_then(|n| n.checked_add(header.e_shoff));
        match sections_end {
            Some(end) if header.e_shnum == 0 || end <= self.len => {}
            Some(end) => {
                return Err(CoreError::Truncated(format!(
                    "its section headers end at byte {end}, and the file has {} bytes",
                    self.len
                )));
            }
            None => return Err(CoreError::Corrupt("its section header table overflows".into())),
        }
        if header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB {
            return Err(CoreError::NotCore("not a 64-bit little-endian ELF file".into()));
        }
        if header.e_type != ET_CORE {
            return Err(CoreError::NotCore(format!(
                "its ELF type is {}",
                goblin::elf::header::et_to_str(header.e_type)
            )));
        }
        if header.e_machine != EM_X86_64 {
            return Err(CoreError::NotCore(format!("of machine {}, not x86-64", header.e_machine)));
        }
        let count = usize::from(header.e_phnum);
        if count == 0 || count > MAX_SEGMENTS || usize::from(header.e_phentsize) != 56 {
            return Err(CoreError::Corrupt(format!("{count} program headers of {} bytes", header.e_phentsize)));
        }
        let table = self.read_exact(header.e_phoff, count as u64 * 56, "the program header table")?;
        let ctx = Ctx::new(Container::Big, Endian::Little);
        let headers = ProgramHeader::parse(&table, 0, count, ctx).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        let mut notes_read = 0u64;
        for ph in &headers {
            match ph.p_type {
                PT_LOAD => {
                    if ph.p_filesz > ph.p_memsz {
                        return Err(CoreError::Corrupt(format!(
                            "the segment at {:#x} holds more bytes than it maps",
                            ph.p_vaddr
                        )));
                    }
                    let end =
                        ph.p_offset.checked_add(ph.p_filesz).filter(|_| ph.p_vaddr.checked_add(ph.p_memsz).is_some());
                    match end {
                        None => return Err(CoreError::Corrupt(format!("the segment at {:#x} overflows", ph.p_vaddr))),
                        Some(end) if end > self.len => {
                            return Err(CoreError::Truncated(format!(
                                "the memory at {:#x} ends at byte {end}, and the file has {} bytes",
                                ph.p_vaddr, self.len
                            )));
                        }
                        Some(_) => {}
                    }
                    self.segments.push(Segment {
                        vaddr: ph.p_vaddr,
                        memsz: ph.p_memsz,
                        filesz: ph.p_filesz,
                        offset: ph.p_offset,
                        readable: ph.p_flags & PF_R != 0,
                        writable: ph.p_flags & PF_W != 0,
                    });
                }
                PT_NOTE => {
                    notes_read = notes_read.saturating_add(ph.p_filesz);
                    if notes_read > MAX_NOTES_BYTES {
                        return Err(CoreError::Corrupt(format!("its notes exceed {} MiB", MAX_NOTES_BYTES >> 20)));
                    }
                    let notes = self.read_exact(ph.p_offset, ph.p_filesz, "the notes segment")?;
                    self.parse_notes(&notes)?;
                }
                _ => {}
            }
        }
        self.segments.sort_by_key(|s| s.vaddr);
        if self.segments.is_empty() {
            return Err(CoreError::Corrupt("it holds no memory (no PT_LOAD segment)".into()));
        }
        Ok(())
    }

    fn parse_notes(&mut self, notes: &[u8]) -> Result<(), CoreError> {
        let mut at = 0usize;
        let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
        while at + 12 <= notes.len() {
            let word = |o: usize| u32::from_le_bytes([notes[o], notes[o + 1], notes[o + 2], notes[o + 3]]) as usize;
            let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
            let name_start = at + 12;
            let desc_start = align4(namesz).and_then(|n| name_start.checked_add(n));
            let desc_end = desc_start.and_then(|d| d.checked_add(descsz));
            let (Some(desc_start), Some(desc_end)) = (desc_start, desc_end) else {
                return Err(CoreError::Corrupt("a note's size overflows".into()));
            };
            if desc_end > notes.len() {
                return Err(CoreError::Corrupt("a note runs past the end of its segment".into()));
            }
            let name = &notes[name_start..name_start + namesz];
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            let desc = &notes[desc_start..desc_end];
            match (name, kind) {
                (b"CORE", NT_PRSTATUS) => self.threads += 1,
                (b"CORE", NT_PRPSINFO) if desc.len() >= 136 => {
                    // gdb leaves the arguments' NULs in psargs; the kernel makes them spaces.
                    let text = |b: &[u8]| {
                        let spaced: Vec<u8> = b.iter().map(|&c| if c == 0 { b' ' } else { c }).collect();
                        String::from_utf8_lossy(&spaced).trim_end().to_string()
                    };
                    self.prpsinfo = Some(PrPsInfo {
                        pid: i32::from_le_bytes([desc[24], desc[25], desc[26], desc[27]]),
                        fname: text(&desc[40..56]),
                        psargs: text(&desc[56..136]),
                    });
                }
                (b"CORE", NT_AUXV) => {
                    self.auxv = desc.chunks_exact(16).map(|p| (u64_at(p, 0), u64_at(p, 8))).collect();
                }
                (b"CORE", NT_FILE) => self.files = parse_nt_file(desc)?,
                (b"LEAKSPY", NT_LEAKSPY) => self.leakspy = Some(parse_leakspy_note(desc)?),
                _ => {}
            }
            at = align4(desc_end).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// The dumped process's PID: leakspy's note, else NT_PRPSINFO, else the first thread's.
    pub fn pid(&self) -> i32 {
        self.leakspy.as_ref().map(|n| n.pid).or(self.prpsinfo.as_ref().map(|p| p.pid)).unwrap_or(0)
    }

    /// The memory map the process had, as /proc/PID/maps would have said: the file mappings
    /// NT_FILE lists (whole, even where the core holds only their first page or none of them:
    /// gdb writes no segment for a file mapping it does not dump), then the rest of every
    /// PT_LOAD segment as anonymous memory with the segment's permissions.
    pub fn memory_map(&self) -> MemoryMap {
        let overlapping = |start: u64, end: u64| {
            self.segments.iter().filter(move |s| s.vaddr < end && start < s.vaddr.saturating_add(s.memsz))
        };
        let mut mappings: Vec<Mapping> = self
            .files
            .iter()
            .map(|f| Mapping {
                start: f.start,
                end: f.end,
                readable: true,
                writable: overlapping(f.start, f.end).any(|s| s.writable),
                shared: false,
                offset: f.offset,
                path: f.path.clone(),
            })
            .collect();
        for s in self.segments.iter().filter(|s| s.memsz > 0) {
            let end = s.vaddr.saturating_add(s.memsz);
            let mut at = s.vaddr;
            for f in self.files.iter().filter(|f| f.start < end && s.vaddr < f.end) {
                if f.start > at {
                    mappings.push(anonymous(at, f.start, s));
                }
                at = at.max(f.end);
            }
            if at < end {
                mappings.push(anonymous(at, end, s));
            }
        }
        mappings.sort_by_key(|m| m.start);
        MemoryMap { mappings }
    }

    /// The path of the main executable: the file mapped where the auxiliary vector's AT_PHDR
    /// (or AT_ENTRY) points, as the process saw it; leakspy's note says it outright.
    pub fn executable(&self) -> Option<String> {
        if let Some(note) = &self.leakspy
            && !note.exe.is_empty()
        {
            return Some(note.exe.clone());
        }
        [AT_PHDR, AT_ENTRY].iter().find_map(|&key| {
            let (_, addr) = self.auxv.iter().find(|(k, _)| *k == key)?;
            self.files.iter().find(|f| f.start <= *addr && *addr < f.end).map(|f| f.path.clone())
        })
    }

    /// The command line: leakspy's note, else NT_PRPSINFO's first 80 bytes.
    pub fn cmdline(&self) -> String {
        match (&self.leakspy, &self.prpsinfo) {
            (Some(note), _) if !note.cmdline.is_empty() => note.cmdline.join(" "),
            (_, Some(ps)) => ps.psargs.clone(),
            _ => String::new(),
        }
    }

    /// Bytes of memory the core holds.
    pub fn bytes_held(&self) -> u64 {
        self.segments.iter().map(|s| s.filesz).sum()
    }
}

fn anonymous(start: u64, end: u64, s: &Segment) -> Mapping {
    Mapping { start, end, readable: s.readable, writable: s.writable, shared: false, offset: 0, path: String::new() }
}

/// Decompresses a zstd image into an anonymous in-memory file, refusing one that would grow
/// past `MAX_DECOMPRESSED` or past the memory this machine has available.
fn decompress(file: &File, compressed_len: u64) -> Result<File, CoreError> {
    let available = crate::memory::proc_info::available_memory().unwrap_or(MAX_DECOMPRESSED);
    let limit = MAX_DECOMPRESSED.min(available);
    let mut head = vec![0u8; 18.min(compressed_len as usize)];
    file.read_exact_at(&mut head, 0).map_err(CoreError::Open)?;
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(&head)
        && size > limit
    {
        return Err(CoreError::Decompress(format!(
            "it would decompress to {size} bytes, more than the {limit} bytes allowed (64 GiB, or the memory available)"
        )));
    }
    let out = memfd()?;
    let mut decoder = zstd::stream::read::Decoder::new(file).map_err(|e| CoreError::Decompress(e.to_string()))?;
    let mut writer = io::BufWriter::new(&out);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CoreError::Decompress(e.to_string())),
        };
        total += n as u64;
        if total > limit {
            return Err(CoreError::Decompress(format!("it decompresses to more than the {limit} bytes allowed")));
        }
        writer.write_all(&buf[..n]).map_err(|e| CoreError::Decompress(e.to_string()))?;
    }
    writer.flush().map_err(|e| CoreError::Decompress(e.to_string()))?;
    drop(writer);
    Ok(out)
}

fn memfd() -> Result<File, CoreError> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated name; the descriptor returned is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"leakspy-image".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(CoreError::Decompress(format!("memfd_create: {}", io::Error::last_os_error())));
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn parse_nt_file(desc: &[u8]) -> Result<Vec<FileMapping>, CoreError> {
    let corrupt = || CoreError::Corrupt("its NT_FILE note is malformed".into());
    if desc.len() < 16 {
        return Err(corrupt());
    }
    let count = u64_at(desc, 0);
    let page = u64_at(desc, 8);
    let table_end = count.checked_mul(24).and_then(|t| t.checked_add(16)).filter(|&e| e <= desc.len() as u64);
    let Some(table_end) = table_end else { return Err(corrupt()) };
    let mut names = desc[table_end as usize..].split(|&b| b == 0);
    let mut files = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let e = 16 + i * 24;
        let (start, end, pages) = (u64_at(desc, e), u64_at(desc, e + 8), u64_at(desc, e + 16));
        let name = names.next().ok_or_else(corrupt)?;
        if end < start {
            return Err(corrupt());
        }
        files.push(FileMapping {
            start,
            end,
            offset: pages.saturating_mul(page),
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    files.sort_by_key(|f| f.start);
    Ok(files)
}

/// leakspy's note: JSON, untrusted like the rest of the file.
fn parse_leakspy_note(desc: &[u8]) -> Result<LeakspyNote, CoreError> {
    let bad = |what: &str| CoreError::Corrupt(format!("its leakspy note {what}"));
    if desc.len() > MAX_LEAKSPY_NOTE {
        return Err(bad("is larger than 16 MiB"));
    }
    let text = desc.strip_suffix(b"\0").unwrap_or(desc);
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|_| bad("is not JSON"))?;
    let obj = value.as_object().ok_or_else(|| bad("is not a JSON object"))?;
    let format = obj.get("format").and_then(|v| v.as_u64()).ok_or_else(|| bad("has no format number"))?;
    if format > 1 {
        return Err(CoreError::NewerFormat(format));
    }
    let int = |k: &str| obj.get(k).and_then(|v| v.as_u64());
    let float = |k: &str| obj.get(k).and_then(|v| v.as_f64()).filter(|f| f.is_finite());
    let string = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let pid = obj
        .get("pid")
        .and_then(|v| v.as_i64())
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| bad("has no valid pid"))?;
    let binary = string("binary").filter(|b| !b.is_empty()).ok_or_else(|| bad("names no binary"))?;
    let load_bias = int("load_bias").ok_or_else(|| bad("has no load_bias"))?;
    let mut symbols = Vec::new();
    if let Some(map) = obj.get("symbols").and_then(|v| v.as_object()) {
        for (name, addr) in map {
            let addr = addr.as_u64().ok_or_else(|| bad("has a symbol whose address is not a number"))?;
            symbols.push((name.clone(), addr));
        }
    }
    if symbols.is_empty() {
        return Err(bad("lists no symbols"));
    }
    let cmdline = obj
        .get("cmdline")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let python_version = string("python_version");
    if python_version.as_deref().is_some_and(|v| crate::cpython::binary::PythonVersion::parse(v).is_none()) {
        return Err(bad("has a python_version that is not one"));
    }
    Ok(LeakspyNote {
        pid,
        start_time_ticks: int("start_time_ticks"),
        exe: string("exe").unwrap_or_default(),
        cmdline,
        host: string("host").unwrap_or_default(),
        dumped_at_unix: float("dumped_at_unix"),
        python_version,
        binary,
        binary_build_id: string("binary_build_id")
            .filter(|b| b.len() <= 128 && b.bytes().all(|c| c.is_ascii_hexdigit())),
        load_bias,
        symbols,
        rss_bytes: int("rss_bytes"),
        writable_bytes: int("writable_bytes"),
        paused_ms: float("paused_ms"),
        copied_bytes: int("copied_bytes"),
        threads: int("threads"),
    })
}

/// Where the files a core names are found on this machine: where they were (the default),
/// under `sysroot` (a copy of the container's or the other host's root), or, for the
/// interpreter, at an explicit path.
#[derive(Debug, Clone, Default)]
pub struct FileLocations {
    pub sysroot: Option<PathBuf>,
    pub python_binary: Option<PathBuf>,
}

impl FileLocations {
    /// Opens the file the dumped process mapped at `path`. `--python-binary` stands in for the
    /// file of the same name, or for `interpreter` (the file the interpreter was looked for in)
    /// when no name matches. Under a sysroot, symbolic links are followed inside it only.
    pub fn open(&self, path: &str, is_interpreter: bool) -> Result<(TargetFile, PathBuf), TargetFileError> {
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if let Some(given) = &self.python_binary {
            let same_name =
                given.file_name().is_some_and(|n| Some(n.to_string_lossy().as_ref()) == path.rsplit('/').next());
            if same_name || is_interpreter {
                let shown = given.to_string_lossy().into_owned();
                let absolute = std::path::absolute(given).unwrap_or_else(|_| given.clone());
                let file = open_in_root(Path::new("/"), &absolute.to_string_lossy())
                    .map_err(|e| TargetFileError { path: shown, reason: e.reason })?;
                return Ok((file, absolute));
            }
        }
        match &self.sysroot {
            Some(root) => {
                // gdb names the files of a chrooted process by their host path (under the root).
                let root_text = root.to_string_lossy();
                let inside = match path.strip_prefix(root_text.trim_end_matches('/')) {
                    Some(rest) if rest.starts_with('/') => rest,
                    _ => path,
                };
                let file = open_in_root(root, inside)?;
                Ok((file, root.join(inside.trim_start_matches('/'))))
            }
            None => Ok((open_in_root(Path::new("/"), path)?, PathBuf::from(path))),
        }
    }
}

/// The GNU build id in an ELF file's notes, read through `read(offset, len)` over either the
/// file (offsets) or the process's memory (addresses from the mapped header on): program
/// headers, then each PT_NOTE. `None` when it has none or it cannot be read.
pub fn build_id(read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>, in_memory: bool) -> Option<Vec<u8>> {
    let head = read(0, SIZEOF_EHDR)?;
    let header = Elf::parse_header(&head).ok()?;
    if header.e_phentsize != 56 || header.e_phnum == 0 || header.e_phnum > 512 {
        return None;
    }
    let table = read(header.e_phoff, usize::from(header.e_phnum) * 56)?;
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let headers = ProgramHeader::parse(&table, 0, header.e_phnum.into(), ctx).ok()?;
    let first_vaddr =
        headers.iter().filter(|p| p.p_type == PT_LOAD).map(|p| p.p_vaddr.wrapping_sub(p.p_offset)).min().unwrap_or(0);
    for ph in headers.iter().filter(|p| p.p_type == PT_NOTE && p.p_filesz <= 1 << 16) {
        let at = if in_memory { ph.p_vaddr.wrapping_sub(first_vaddr & !0xfff) } else { ph.p_offset };
        let Some(notes) = read(at, ph.p_filesz as usize) else { continue };
        let mut i = 0usize;
        while i + 12 <= notes.len() {
            let w = |o: usize| u32::from_le_bytes([notes[o], notes[o + 1], notes[o + 2], notes[o + 3]]) as usize;
            let (namesz, descsz, kind) = (w(i), w(i + 4), w(i + 8));
            let desc = i + 12 + ((namesz + 3) & !3);
            let end = desc.saturating_add(descsz);
            if end > notes.len() {
                break;
            }
            if kind == 3 && namesz == 4 && &notes[i + 12..i + 16] == b"GNU\0" {
                return Some(notes[desc..end].to_vec());
            }
            i = (end + 3) & !3;
        }
    }
    None
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the bytes of one range of the dumped process's memory are.
#[derive(Debug, Clone)]
enum Source {
    /// In the core, at this file offset.
    Core(u64),
    /// In a file of the target's found on this machine (`files[idx]`), at this offset.
    File(usize, u64),
}

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    source: Source,
}

struct Block {
    addr: u64,
    /// The bytes of the block that were readable: `lo..hi` (a block may start before a
    /// segment or end after one).
    lo: usize,
    hi: usize,
    data: Box<[u8]>,
}

/// A core's memory as a `RemoteMemory`: the segments' bytes, and for read-only file mappings
/// the core left out, the files themselves (as `FileLocations` found them and the caller
/// checked them). Read through a direct-mapped cache of 16 KiB blocks filled with `pread`.
pub struct CoreMemory {
    core: std::sync::Arc<CoreFile>,
    files: Vec<std::sync::Arc<TargetFile>>,
    /// Sorted, not overlapping.
    regions: Vec<Region>,
    blocks: Vec<Block>,
}

impl CoreMemory {
    /// The core's memory alone.
    pub fn new(core: std::sync::Arc<CoreFile>) -> CoreMemory {
        let regions = core
            .segments
            .iter()
            .filter(|s| s.filesz > 0)
            .map(|s| Region { start: s.vaddr, end: s.vaddr + s.filesz, source: Source::Core(s.offset) })
            .collect();
        let blocks = (0..CACHE_BLOCKS).map(|_| Block { addr: u64::MAX, lo: 0, hi: 0, data: Box::new([]) }).collect();
        let mut mem = CoreMemory { core, files: Vec::new(), regions, blocks };
        mem.normalize();
        mem
    }

    /// Adds `file` as the content of the parts of `mapping` the core does not hold. A
    /// writable mapping is filled only if the core holds none of it: the kernel and gdb dump
    /// every private file mapping the process wrote to (it has anonymous pages), so one left
    /// out entirely still holds the file's bytes; one dumped in part is not filled.
    pub fn add_file(&mut self, mapping: &Mapping, file: std::sync::Arc<TargetFile>) {
        if mapping.writable && self.regions.iter().any(|r| r.end > mapping.start && r.start < mapping.end) {
            return;
        }
        let idx = self.files.len();
        let size = file.size();
        self.files.push(file);
        let mut gaps = Vec::new();
        let mut at = mapping.start;
        for r in self.regions.iter().filter(|r| r.end > mapping.start && r.start < mapping.end) {
            if r.start > at {
                gaps.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < mapping.end {
            gaps.push(at..mapping.end);
        }
        for gap in gaps {
            let offset = mapping.offset.saturating_add(gap.start - mapping.start);
            // Pages past the file's end fault in the process; they are not readable here.
            let end = gap.end.min(mapping.start.saturating_add(size.saturating_sub(mapping.offset)));
            if end > gap.start {
                self.regions.push(Region { start: gap.start, end, source: Source::File(idx, offset) });
            }
        }
        self.normalize();
        self.invalidate_all();
    }

    fn normalize(&mut self) {
        self.regions.sort_by_key(|r| r.start);
    }

    fn invalidate_all(&mut self) {
        for b in &mut self.blocks {
            b.addr = u64::MAX;
        }
    }

    fn region_at(&self, addr: u64) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.end <= addr);
        self.regions.get(i).filter(|r| r.start <= addr)
    }

    /// Reads as many bytes as are readable from `addr` on, uncached.
    fn read_raw(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let Some(r) = self.region_at(at) else { break };
            let n = ((r.end - at) as usize).min(buf.len() - done);
            let into = &mut buf[done..done + n];
            let ok = match r.source {
                Source::Core(offset) => self.core.file.read_exact_at(into, offset + (at - r.start)).is_ok(),
                Source::File(idx, offset) => {
                    match self.files[idx].read_at(offset.saturating_add(at - r.start), n as u64) {
                        Ok(bytes) => {
                            into.copy_from_slice(&bytes);
                            true
                        }
                        Err(_) => false,
                    }
                }
            };
            if !ok {
                break;
            }
            done += n;
        }
        done
    }

    pub fn core(&self) -> &CoreFile {
        &self.core
    }
}

impl RemoteMemory for CoreMemory {
    fn changes_under_reads(&self) -> bool {
        false
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let len = buf.len();
        if addr.checked_add(len as u64).is_none() {
            return Err(ReadError::Unmapped { addr, len });
        }
        if len > BLOCK_SIZE {
            return if self.read_raw(addr, buf) == len { Ok(()) } else { Err(ReadError::Unmapped { addr, len }) };
        }
        let mut done = 0;
        while done < len {
            let at = addr + done as u64;
            let block_addr = at & !(BLOCK_SIZE as u64 - 1);
            let slot = ((block_addr / BLOCK_SIZE as u64) as usize) % self.blocks.len();
            if self.blocks[slot].addr != block_addr {
                let mut data = std::mem::take(&mut self.blocks[slot].data);
                if data.len() != BLOCK_SIZE {
                    data = vec![0u8; BLOCK_SIZE].into_boxed_slice();
                }
                // From the first readable byte of the block on (it may start in a gap).
                let first = self.regions.partition_point(|r| r.end <= block_addr);
                let lo = match self.regions.get(first) {
                    Some(r) if r.start < block_addr + BLOCK_SIZE as u64 => r.start.saturating_sub(block_addr) as usize,
                    _ => BLOCK_SIZE,
                };
                let hi = lo + self.read_raw(block_addr + lo as u64, &mut data[lo..]);
                self.blocks[slot] = Block { addr: block_addr, lo, hi, data };
            }
            let block = &self.blocks[slot];
            let from = (at - block_addr) as usize;
            let n = (BLOCK_SIZE - from).min(len - done);
            if from < block.lo || from + n > block.hi {
                // A block holds one readable run; a leakspy image can have another one further
                // in the same block (after a gap where code or untouched memory was left out):
                // read that directly.
                if self.read_raw(at, &mut buf[done..done + n]) == n {
                    done += n;
                    continue;
                }
                return Err(ReadError::Unmapped { addr: at, len: len - done });
            }
            buf[done..done + n].copy_from_slice(&block.data[from..from + n]);
            done += n;
        }
        Ok(())
    }

    fn read_bulk(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        match self.read_raw(addr, buf) {
            0 if !buf.is_empty() => Err(ReadError::Unmapped { addr, len: buf.len() }),
            n => Ok(n),
        }
    }

    /// What the core holds is what the process had; anything else was never there to read.
    fn populated(&mut self, addr: u64, len: u64) -> Option<bool> {
        let end = addr.checked_add(len)?;
        let mut at = addr;
        while at < end {
            match self.region_at(at) {
                Some(r) => at = r.end,
                None => return Some(false),
            }
        }
        Some(true)
    }

    fn populated_runs(&mut self, start: u64, end: u64) -> Option<Vec<std::ops::Range<u64>>> {
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        let first = self.regions.partition_point(|r| r.end <= start);
        for r in self.regions[first..].iter().take_while(|r| r.start < end) {
            let run = r.start.max(start)..r.end.min(end);
            match runs.last_mut() {
                Some(last) if last.end == run.start => last.end = run.end,
                _ => runs.push(run),
            }
        }
        Some(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// A small core as `leakspy dump` writes it: a note segment (NT_FILE and leakspy's note),
    /// and one segment of two pages of which the first is present.
    fn image(format: u64) -> Vec<u8> {
        let json = format!(
            r#"{{"format":{format},"pid":4242,"start_time_ticks":7,"exe":"/usr/bin/python3.11","cmdline":["python3","app.py"],
            "host":"web-1","dumped_at_unix":1700000000.5,"python_version":"3.11.7","binary":"/usr/bin/python3.11",
            "binary_build_id":"abcd","load_bias":4096,"symbols":{{"_PyRuntime":8192,"unknown_symbol":1}},"rss_bytes":100,
            "future_field":[1,2]}}"#
        );
        let mut nt_file = Vec::new();
        for w in [1u64, 4096, 0x10000, 0x12000, 2] {
            nt_file.extend_from_slice(&w.to_le_bytes());
        }
        nt_file.extend_from_slice(b"/usr/bin/python3.11\0");
        let mut notes = note(b"CORE\0", NT_FILE, &nt_file);
        notes.extend(note(b"LEAKSPY\0", NT_LEAKSPY, json.as_bytes()));
        let phoff = 64u64;
        let notes_off = phoff + 2 * 56;
        let data_off = (notes_off + notes.len() as u64).next_multiple_of(4096);
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
        out[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |kind: u32, flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64| {
            let mut p = Vec::new();
            p.extend_from_slice(&kind.to_le_bytes());
            p.extend_from_slice(&flags.to_le_bytes());
            for w in [offset, vaddr, vaddr, filesz, memsz, 4096] {
                p.extend_from_slice(&w.to_le_bytes());
            }
            p
        };
        out.extend(ph(PT_NOTE, 0, notes_off, 0, notes.len() as u64, 0));
        out.extend(ph(PT_LOAD, PF_R | PF_W, data_off, 0x10000, 4096, 8192));
        out.extend(&notes);
        out.resize(data_off as usize, 0);
        out.extend((0..4096).map(|i| (i % 251) as u8));
        out
    }

    fn open(bytes: &[u8]) -> Result<CoreFile, CoreError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("leakspy-core-unit-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let core = CoreFile::open(&path);
        let _ = std::fs::remove_file(&path);
        core
    }

    #[test]
    fn an_image_with_leakspy_note_is_read_and_absent_pages_are_unmapped() {
        let core = std::sync::Arc::new(open(&image(1)).unwrap());
        let note = core.leakspy.as_ref().unwrap();
        assert_eq!((note.pid, note.load_bias, note.host.as_str()), (4242, 4096, "web-1"));
        assert_eq!(note.symbols.len(), 2);
        assert_eq!(core.cmdline(), "python3 app.py");
        assert_eq!(core.files[0].offset, 2 * 4096);
        let maps = core.memory_map();
        assert_eq!(maps.mappings.len(), 1);
        assert!(maps.mappings[0].writable && maps.mappings[0].path == "/usr/bin/python3.11");
        let mut mem = CoreMemory::new(core);
        let mut buf = [0u8; 4];
        mem.read(0x10000 + 251, &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 3]);
        // In p_memsz past p_filesz, across the end of the present page, outside every segment.
        assert!(matches!(mem.read(0x11000, &mut buf), Err(ReadError::Unmapped { .. })));
        assert!(matches!(mem.read(0x10ffe, &mut buf), Err(ReadError::Unmapped { .. })));
        assert!(matches!(mem.read(0xf000, &mut buf), Err(ReadError::Unmapped { .. })));
        assert_eq!(mem.populated(0x10000, 8192), Some(false));
    }

    #[test]
    fn a_newer_image_format_and_broken_notes_are_refused() {
        assert!(matches!(open(&image(2)), Err(CoreError::NewerFormat(2))));
        let mut bad = image(1);
        let at = bad.windows(9).position(|w| w == br#""format":"#).unwrap();
        bad[at + 1] = b'X';
        assert!(matches!(open(&bad), Err(CoreError::Corrupt(_))));
        let good = image(1);
        for cut in [3, 40, 64, 100, 200, good.len() - 10] {
            assert!(open(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_compressed_image_is_read_and_one_too_large_is_refused_before_decompressing() {
        let good = image(1);
        let packed = zstd::encode_all(&good[..], 3).unwrap();
        let core = open(&packed).unwrap();
        assert!(core.compressed && core.leakspy.is_some());
        // A frame header that declares 100 GiB.
        let mut bomb = ZSTD_MAGIC.to_vec();
        bomb.push(0xe0);
        bomb.extend_from_slice(&(100u64 << 30).to_le_bytes());
        bomb.extend_from_slice(&[0; 16]);
        match open(&bomb) {
            Err(CoreError::Decompress(why)) => assert!(why.contains("would decompress to"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Compressed garbage: an error, not a panic.
        let mut garbage = packed.clone();
        let mid = garbage.len() / 2;
        garbage.truncate(mid);
        assert!(open(&garbage).is_err());
    }

    /// Every byte of the headers and notes set to 0xff or 0x7f in turn: an error or a core
    /// whose memory reads without panicking, never a panic.
    #[test]
    fn damaged_headers_and_notes_never_panic() {
        let good = image(1);
        let notes_end = good.iter().rposition(|&b| b == b'}').unwrap_or(600) + 8;
        for i in 0..notes_end.min(good.len()) {
            for value in [0xffu8, 0x7f, 0x00] {
                let mut bad = good.clone();
                bad[i] = value;
                if let Ok(core) = open(&bad) {
                    let core = std::sync::Arc::new(core);
                    let _ = core.memory_map();
                    let _ = core.executable();
                    let mut mem = CoreMemory::new(core);
                    let mut buf = [0u8; 64];
                    let _ = mem.read(0x10000, &mut buf);
                    let _ = mem.read(u64::MAX - 10, &mut buf);
                }
            }
        }
    }
}
