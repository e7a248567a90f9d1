//! Finding CPython in the target: which mapped file holds the interpreter (an executable with
//! Python linked in statically, or libpython), where it is loaded, its symbols and its version.

use crate::error::LeakspyError;
use crate::memory::maps::{Mapping, MemoryMap};
use crate::memory::target_files::{TargetFile, TargetFileError, open_mapped};
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::header64::SIZEOF_EHDR;
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB};
use goblin::elf::program_header::PT_LOAD;
use goblin::elf::section_header::{SHT_DYNSYM, SHT_SYMTAB};
use goblin::elf::sym::sym64::SIZEOF_SYM;
use goblin::elf::{Elf, ProgramHeader, SectionHeader, Symtab};
use goblin::strtab::Strtab;
use rustc_hash::FxHashMap;

/// The symbols leakspy looks up. `_PyRuntime` (3.7+) anchors everything; 3.6 has no runtime
/// struct, so its interpreter list and GC generations are found through their own globals, and
/// whether a collection runs through gcmodule.c's static `collecting`. Before 3.12, pymalloc's
/// arena table and counters are file statics of Objects/obmalloc.c (see `cpython::pymalloc`);
/// so is 3.6's GIL state (`cpython::stacks`). Statics are local symbols, in .symtab only:
/// found in unstripped builds.
pub const WANTED_SYMBOLS: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "interp_head",
    "_PyGC_generation0",
    "collecting",
    "arenas",
    "maxarenas",
    "narenas_currently_allocated",
    "ntimes_arena_allocated",
    "narenas_highwater",
    "gil_locked",
    "gil_last_holder",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PythonVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl PythonVersion {
    /// Decodes PY_VERSION_HEX (0x030B07F0 is 3.11.7 final).
    pub fn from_hex(hex: u64) -> PythonVersion {
        PythonVersion {
            major: ((hex >> 24) & 0xff) as u32,
            minor: ((hex >> 16) & 0xff) as u32,
            patch: ((hex >> 8) & 0xff) as u32,
        }
    }

    /// Parses "3.9.18", "3.9.18+" or "3.10.0rc2".
    pub fn parse(text: &str) -> Option<PythonVersion> {
        let mut parts = text.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch_text = parts.next()?;
        let digits: String = patch_text.chars().take_while(|c| c.is_ascii_digit()).collect();
        let patch = digits.parse().ok()?;
        Some(PythonVersion { major, minor, patch })
    }
}

/// The ELF file that holds the interpreter, as loaded in the target.
#[derive(Debug, Clone)]
pub struct PythonBinary {
    /// The path as the target sees it.
    pub path: String,
    /// Added to a symbol's link-time address to get its address in the target.
    pub load_bias: u64,
    symbols: FxHashMap<&'static str, u64>,
    /// PY_VERSION as found in the file's read-only data, for versions without `Py_Version`.
    pub embedded_version: Option<PythonVersion>,
    /// "3.9" from libpython3.9.so or python3.9, the last resort for the version.
    pub name_version: Option<(u32, u32)>,
}

impl PythonBinary {
    /// The symbol's address in the target.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|a| a.wrapping_add(self.load_bias))
    }

    pub fn has_runtime_symbols(&self) -> bool {
        self.symbols.contains_key("_PyRuntime") || self.symbols.contains_key("interp_head")
    }
}

/// Where the target's files are opened: a live process's through /proc (`LiveFiles`), a core
/// file's where the dump names them, under a sysroot, or at a path the user gave
/// (`memory::core::CoreFiles`). Binary discovery is the same for both: only this differs.
pub trait TargetFiles {
    /// The PID errors name.
    fn pid(&self) -> i32;
    /// The main executable's path as the target sees it, if known.
    fn executable(&self) -> Option<String>;
    /// Opens the file `mapping` maps.
    fn open(&self, mapping: &Mapping) -> Result<TargetFile, TargetFileError>;
}

/// The files of a live process, opened as `target_files::open_mapped` does.
pub struct LiveFiles(pub i32);

impl TargetFiles for LiveFiles {
    fn pid(&self) -> i32 {
        self.0
    }

    fn executable(&self) -> Option<String> {
        crate::memory::proc_info::exe_path(self.0)
    }

    fn open(&self, mapping: &Mapping) -> Result<TargetFile, TargetFileError> {
        open_mapped(self.0, mapping)
    }
}

impl PythonBinary {
    /// The interpreter as leakspy's image note describes it: symbols as absolute addresses.
    /// Only the symbols leakspy looks up are kept.
    pub fn from_note(
        path: &str,
        load_bias: u64,
        symbols: &[(String, u64)],
        version: Option<PythonVersion>,
    ) -> PythonBinary {
        let symbols = symbols
            .iter()
            .filter_map(|(name, addr)| {
                let wanted = WANTED_SYMBOLS.iter().find(|w| **w == name.as_str())?;
                Some((*wanted, addr.wrapping_sub(load_bias)))
            })
            .collect();
        let file_name = path.rsplit('/').next().unwrap_or(path);
        PythonBinary {
            path: path.to_string(),
            load_bias,
            symbols,
            embedded_version: version,
            name_version: version_from_file_name(file_name),
        }
    }
}

/// Finds the file with CPython's symbols among the target's mappings: libpython if one is
/// mapped (pyenv, embedding applications), else the main executable (Debian's static builds).
pub fn find_python(pid: i32, maps: &MemoryMap) -> Result<PythonBinary, LeakspyError> {
    find_python_in(&LiveFiles(pid), maps)
}

/// `find_python` with the files opened through `files`.
pub fn find_python_in(files: &dyn TargetFiles, maps: &MemoryMap) -> Result<PythonBinary, LeakspyError> {
    let pid = files.pid();
    let exe = files.executable().unwrap_or_default();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string();

    let mut candidates: Vec<&str> = Vec::new();
    for m in &maps.mappings {
        if m.is_file() && m.file_name().starts_with("libpython") && !candidates.contains(&m.path.as_str()) {
            candidates.push(&m.path);
        }
    }
    // An empty `exe` (the link is gone once a process starts exiting) must not match the
    // anonymous mappings, whose path is empty too.
    if let Some(m) = maps.mappings.iter().find(|m| m.path == exe || m.path.strip_suffix(" (deleted)") == Some(&exe))
        && !exe.is_empty()
        && !candidates.contains(&m.path.as_str())
    {
        candidates.push(&m.path);
    }

    let mut looked_at = Vec::new();
    let mut unreadable = Vec::new();
    for path in candidates {
        let binary = match load_binary(files, maps, path) {
            Ok(b) => b,
            Err(Rejected::Unreadable(why)) => {
                unreadable.push(format!("{path} ({why})"));
                continue;
            }
            Err(Rejected::Unsuitable(why)) => {
                looked_at.push(format!("{path} ({why})"));
                continue;
            }
        };
        if let Some((major, minor)) = binary.name_version
            && major < 3
        {
            return Err(LeakspyError::UnsupportedVersion {
                pid,
                version: format!("{major}.{minor}"),
                detail: "leakspy reads CPython 3.6 to 3.15".into(),
            });
        }
        if binary.has_runtime_symbols() {
            return Ok(binary);
        }
        looked_at.push(format!("{path} (no _PyRuntime symbol)"));
    }
    // A file leakspy could not read comes first: the interpreter may well be in it, and then
    // the other files' lack of symbols says nothing about the target.
    let detail = if !unreadable.is_empty() {
        let mut detail =
            format!("the file that would hold its interpreter could not be read: {}", unreadable.join(", "));
        if !looked_at.is_empty() {
            detail.push_str(&format!("; no interpreter symbols in {}", looked_at.join(", ")));
        }
        detail
    } else if looked_at.is_empty() {
        format!(
            "its executable is {} and no libpython is loaded; point leakspy at the Python process itself (not a shell or launcher)",
            if exe.is_empty() { "unknown" } else { &exe }
        )
    } else {
        format!(
            "no CPython interpreter symbols found in {}; is this CPython (not PyPy), and not a free-threaded or stripped-of-.dynsym build?",
            looked_at.join(", ")
        )
    };
    Err(LeakspyError::NotPython { pid, detail })
}

/// Why a candidate file gave no interpreter. A file leakspy could not (or would not) open
/// gets its own sentence: it says nothing about whether the target is CPython.
enum Rejected {
    Unreadable(String),
    Unsuitable(String),
}

fn load_binary(files: &dyn TargetFiles, maps: &MemoryMap, path: &str) -> Result<PythonBinary, Rejected> {
    let first = maps
        .mappings
        .iter()
        .find(|m| m.path == path && m.offset == 0)
        .ok_or_else(|| Rejected::Unsuitable("no mapping at file offset 0".into()))?;
    // The file the process maps, not whatever has its name now, opened without following
    // the target's symlinks out of its root: see memory::target_files.
    let file = files.open(first).map_err(|e| Rejected::Unreadable(e.reason.to_string()))?;
    let name_version = version_from_file_name(first.file_name());
    let parsed = parsed_file(&file, first.file_name(), Depth::Full, || {
        let elf = read_elf(&file, Depth::Full)?;
        let embedded_version = rodata_version(&elf.rodata, name_version);
        Ok(ParsedFile { symbols: elf.symbols, first_load_vaddr: elf.first_load_vaddr, embedded_version })
    })
    .map_err(|e| match e {
        ElfError::Read(e) => Rejected::Unreadable(format!("cannot read the file: {e}")),
        ElfError::Parse(e) => Rejected::Unsuitable(format!("not a readable ELF file: {e}")),
    })?;
    let load_bias = first.start.wrapping_sub(parsed.first_load_vaddr & !0xfff);
    Ok(PythonBinary {
        path: path.to_string(),
        load_bias,
        symbols: parsed.symbols.clone(),
        embedded_version: parsed.embedded_version,
        name_version,
    })
}

/// True if the file mapped at offset 0 by `mapping` exports one of CPython's anchor symbols
/// in its dynamic symbol table: a cheap test (the dynamic table only, no .symtab or .rodata)
/// that tells a program with Python linked in (whatever its name) from the rest, for listing
/// and selecting processes across a host. Every CPython build leakspy reads exports them there
/// (extension modules link against them); an unreadable file is not Python for this purpose.
pub fn exports_python_symbols(pid: i32, mapping: &crate::memory::maps::Mapping) -> bool {
    let Ok(file) = open_mapped(pid, mapping) else { return false };
    parsed_file(&file, mapping.file_name(), Depth::DynamicOnly, || {
        let elf = read_elf(&file, Depth::DynamicOnly)?;
        Ok(ParsedFile { symbols: elf.symbols, first_load_vaddr: elf.first_load_vaddr, embedded_version: None })
    })
    .is_ok_and(|parsed| !parsed.symbols.is_empty())
}

/// What leakspy keeps of a parsed ELF file.
#[derive(Debug)]
struct ParsedFile {
    symbols: FxHashMap<&'static str, u64>,
    first_load_vaddr: u64,
    embedded_version: Option<PythonVersion>,
}

/// How much of an ELF file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Depth {
    /// Headers and the dynamic symbol table only.
    DynamicOnly,
    /// Both symbol tables and .rodata (PY_VERSION).
    Full,
}

/// (device, inode, size, mtime), the file name (the version in it filters .rodata), depth.
type FileKey = ((u64, u64, u64, i128), String, Depth);

/// Files parsed at most this many at a time; past it the cache starts again. A host runs a
/// few Python builds; a pre-fork server's workers (and each worker that replaces one) all map
/// the same one, and `ps` looks at every process's executable.
const MAX_CACHED_FILES: usize = 256;

/// ELF files parsed so far, by the identity of the file: the same file (same inode, size and
/// modification time) gives the same symbols, so the tens of milliseconds a libpython takes to
/// parse are spent once per file, not once per process. A file replaced or rewritten has
/// another identity and is parsed anew.
static PARSED: std::sync::Mutex<Option<FxHashMap<FileKey, std::sync::Arc<ParsedFile>>>> = std::sync::Mutex::new(None);

fn parsed_file(
    file: &TargetFile,
    file_name: &str,
    depth: Depth,
    parse: impl FnOnce() -> Result<ParsedFile, ElfError>,
) -> Result<std::sync::Arc<ParsedFile>, ElfError> {
    let key = (file.identity()?, file_name.to_string(), depth);
    if let Some(found) = PARSED.lock().ok().and_then(|cache| cache.as_ref()?.get(&key).cloned()) {
        return Ok(found);
    }
    // Parsed outside the lock: threads sampling other processes do not wait for it.
    let parsed = std::sync::Arc::new(parse()?);
    if let Ok(mut cache) = PARSED.lock() {
        let cache = cache.get_or_insert_with(FxHashMap::default);
        if cache.len() >= MAX_CACHED_FILES {
            cache.clear();
        }
        cache.insert(key, parsed.clone());
    }
    Ok(parsed)
}

/// What leakspy needs of an ELF file: the wanted symbols' link-time addresses, where the
/// first loadable segment was linked, and the read-only data (for PY_VERSION).
struct ElfParts {
    symbols: FxHashMap<&'static str, u64>,
    first_load_vaddr: u64,
    rodata: Vec<u8>,
}

enum ElfError {
    Read(std::io::Error),
    Parse(String),
}

impl From<std::io::Error> for ElfError {
    fn from(e: std::io::Error) -> ElfError {
        ElfError::Read(e)
    }
}

impl From<goblin::error::Error> for ElfError {
    fn from(e: goblin::error::Error) -> ElfError {
        ElfError::Parse(e.to_string())
    }
}

/// Reads only the parts of the file it needs (headers, symbol and string tables, .rodata),
/// each with a bounded read: a few MB of a 20-30 MB libpython, never the whole file.
fn read_elf(file: &TargetFile, depth: Depth) -> Result<ElfParts, ElfError> {
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let header = Elf::parse_header(&file.read_at(0, SIZEOF_EHDR as u64)?)?;
    if header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err(ElfError::Parse("not a 64-bit little-endian ELF file".into()));
    }
    let table = |offset: u64, count: u16, entry: u16| file.read_at(offset, u64::from(count) * u64::from(entry));
    let program_headers = ProgramHeader::parse(
        &table(header.e_phoff, header.e_phnum, header.e_phentsize)?,
        0,
        header.e_phnum.into(),
        ctx,
    )?;
    let first_load_vaddr = program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .map(|ph| ph.p_vaddr.wrapping_sub(ph.p_offset))
        .min()
        .unwrap_or(0);
    // (parse_from: the table was read on its own, so it starts at offset 0 of its buffer.)
    let sections = match header.e_shnum {
        0 => Vec::new(),
        n => SectionHeader::parse_from(&table(header.e_shoff, n, header.e_shentsize)?, 0, n.into(), ctx)?,
    };
    let section_bytes = |sh: &SectionHeader| file.read_at(sh.sh_offset, sh.sh_size);
    let names = match sections.get(usize::from(header.e_shstrndx)) {
        Some(sh) => section_bytes(sh)?,
        None => Vec::new(),
    };
    let names = Strtab::parse(&names, 0, names.len(), 0)?;

    let mut symbols = FxHashMap::default();
    // .dynsym first: a stripped binary has only it, and it agrees with .symtab where both are.
    let tables: &[u32] = if depth == Depth::Full { &[SHT_DYNSYM, SHT_SYMTAB] } else { &[SHT_DYNSYM] };
    for &sh_type in tables {
        for sh in sections.iter().filter(|sh| sh.sh_type == sh_type) {
            let Some(strings) = sections.get(sh.sh_link as usize) else { continue };
            let (syms, strings) = (section_bytes(sh)?, section_bytes(strings)?);
            let strtab = Strtab::parse(&strings, 0, strings.len(), 0)?;
            let syms = Symtab::parse(&syms, 0, syms.len() / SIZEOF_SYM, ctx)?;
            for sym in syms.iter().filter(|sym| sym.st_value != 0) {
                if let Some(name) = strtab.get_at(sym.st_name)
                    && let Some(wanted) = WANTED_SYMBOLS.iter().find(|w| **w == without_lto_suffix(name))
                {
                    symbols.entry(*wanted).or_insert(sym.st_value);
                }
            }
        }
    }
    let rodata = match sections.iter().find(|sh| names.get_at(sh.sh_name) == Some(".rodata")) {
        Some(sh) if depth == Depth::Full => section_bytes(sh)?,
        _ => Vec::new(),
    };
    Ok(ElfParts { symbols, first_load_vaddr, rodata })
}

/// A file static renamed by link-time optimisation (`arenas.lto_priv.0`) under its own name.
/// Called for every symbol of the binary: names without a dot (most) are not searched.
fn without_lto_suffix(name: &str) -> &str {
    if !name.contains('.') {
        return name;
    }
    name.split_once(".lto_priv.").map_or(name, |(base, _)| base)
}

/// "python3.11", "libpython3.9m.so.1.0", "libpython3.14.so" -> (3, 11) ...
fn version_from_file_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("lib").unwrap_or(name).strip_prefix("python")?;
    let mut parts = rest.splitn(2, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_text: String = parts.next()?.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major, minor_text.parse().ok()?))
}

/// Looks for PY_VERSION ("3.9.18") in .rodata; when the file name gave a minor version, only
/// a string of that minor is accepted. The linker merges string literals that are the tail of
/// a longer one, so PY_VERSION is often the end of another string (the build directory,
/// ".../Python-3.8.18"): NUL-terminated tails count too.
fn rodata_version(rodata: &[u8], name_version: Option<(u32, u32)>) -> Option<PythonVersion> {
    rodata.split(|&b| b == 0).find_map(|string| version_suffix(string, name_version))
}

/// The version at the end of `string`, e.g. "3.8.18" in "Python-3.8.18" (but not "13.8.1").
fn version_suffix(string: &[u8], name_version: Option<(u32, u32)>) -> Option<PythonVersion> {
    let tail_start = string.len().saturating_sub(12);
    (tail_start..string.len()).find_map(|i| {
        let tail = &string[i..];
        let boundary = i == 0 || !(string[i - 1].is_ascii_digit() || string[i - 1] == b'.');
        if !boundary
            || !tail.starts_with(b"3.")
            || !tail.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'+')
        {
            return None;
        }
        let v = PythonVersion::parse(std::str::from_utf8(tail).ok()?)?;
        name_version.is_none_or(|(major, minor)| (major, minor) == (v.major, v.minor)).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names_and_strings() {
        assert_eq!(version_from_file_name("libpython3.9.so.1.0"), Some((3, 9)));
        assert_eq!(version_from_file_name("libpython3.6m.so.1.0"), Some((3, 6)));
        assert_eq!(version_from_file_name("python3.11"), Some((3, 11)));
        assert_eq!(version_from_file_name("libpython2.7.so.1.0"), Some((2, 7)));
        assert_eq!(version_from_file_name("uwsgi"), None);
        let v = PythonVersion::parse("3.10.0rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (3, 10, 0));
        assert_eq!(PythonVersion::from_hex(0x030B07F0).to_string(), "3.11.7");
        assert!(PythonVersion::parse("3.x").is_none());
        let found = |s: &[u8], name| version_suffix(s, name).map(|v| v.to_string());
        assert_eq!(found(b"/tmp/build/Python-3.8.18", Some((3, 8))).as_deref(), Some("3.8.18"));
        assert_eq!(found(b"3.9.18+", None).as_deref(), Some("3.9.18"));
        assert_eq!(found(b"Python-3.8.18", Some((3, 9))), None);
        assert_eq!(found(b"libfoo-13.8.1", None), None);
        assert_eq!(found(b"f-string: only in Python 3.8 and greater", None), None);
    }
}
