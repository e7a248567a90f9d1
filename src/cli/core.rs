//! Opening a core file or a leakspy image as the target of `snapshot` and `why`: the core's
//! memory map and files feed the same binary discovery a live process's /proc does, and what
//! /proc would have said of the process (its command line, its dump time) comes from the core.

use crate::cpython::binary::{PythonBinary, PythonVersion, TargetFiles, find_python_in};
use crate::cpython::process::PythonProcess;
use crate::error::LeakspyError;
use crate::heap::census::{Census, CoreSource};
use crate::memory::RemoteMemory;
use crate::memory::core::{CoreFile, CoreMemory, FileLocations, build_id, hex};
use crate::memory::maps::{Mapping, MemoryMap};
use crate::memory::proc_info::ProcessInfo;
use crate::memory::target_files::{TargetFile, TargetFileError};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where to find the files a core names (only with --core).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CoreFileArgs {
    /// With --core: look for the files the core names (the python binary, libpython,
    /// extension modules) under DIR, a copy of the root of the machine or container the
    /// process ran in, instead of at the same paths on this machine.
    #[arg(long, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// With --core: the python executable or libpython the dumped process ran, where it is on
    /// this machine (its build id is checked against the core's).
    #[arg(long, value_name = "PATH")]
    pub python_binary: Option<PathBuf>,
}

impl CoreFileArgs {
    /// Refuses --sysroot and --python-binary without --core: they say where a core's files
    /// are, and a live process's are read through /proc.
    pub fn check_without_core(&self) -> Result<(), LeakspyError> {
        if self.sysroot.is_some() || self.python_binary.is_some() {
            return Err(LeakspyError::Usage(
                "--sysroot and --python-binary say where a core's files are: use them with --core FILE".into(),
            ));
        }
        Ok(())
    }
}

/// A core opened for reading: the interpreter found in it, its memory, and what it says about
/// the process.
pub struct OpenedCore {
    pub process: PythonProcess,
    pub mem: CoreMemory,
    pub source: CoreSource,
    pub info: ProcessInfo,
}

/// The files of a dumped process, found through `FileLocations`; remembers where each was
/// found.
struct CoreFiles<'a> {
    core: &'a CoreFile,
    locations: &'a FileLocations,
    /// No file of the core has the name --python-binary has: it stands in for whichever file
    /// the interpreter is looked for in.
    binary_for_any: bool,
    maps: &'a MemoryMap,
    /// The core's memory alone (no file filling its gaps), to read build ids from.
    ids: RefCell<CoreMemory>,
    found: RefCell<Vec<(String, PathBuf)>>,
    /// Files found whose build id could not be checked, and why.
    unverified: RefCell<Vec<(PathBuf, String)>>,
    /// The first file found that is another build than the process ran: (file, detail).
    mismatch: RefCell<Option<(String, String)>>,
}

impl TargetFiles for CoreFiles<'_> {
    fn pid(&self) -> i32 {
        self.core.pid()
    }

    fn executable(&self) -> Option<String> {
        self.core.executable()
    }

    /// Opens the file, and refuses one whose build id differs from the one the core holds
    /// for it: the mismatch is kept for the error, which names both files.
    fn open(&self, mapping: &Mapping) -> Result<TargetFile, TargetFileError> {
        let (file, found) = self.locations.open(&mapping.path, self.binary_for_any)?;
        let mut mem = self.ids.borrow_mut();
        match compare_build_ids(&mut mem, self.maps, &mapping.path, &file) {
            BuildIds::Differ { in_core, in_file } => {
                let detail = format!(
                    "the process ran {} with build id {in_core}, and {} has build id {in_file}",
                    mapping.path,
                    found.display()
                );
                self.mismatch.borrow_mut().get_or_insert((found.display().to_string(), detail));
                return Err(TargetFileError {
                    path: mapping.path.clone(),
                    reason: crate::memory::target_files::Refusal::Io(std::io::Error::other("another build")),
                });
            }
            BuildIds::Unknown(why) => self.unverified.borrow_mut().push((found.clone(), why)),
            BuildIds::Same => {}
        }
        self.found.borrow_mut().push((mapping.path.clone(), found));
        Ok(file)
    }
}

fn bad_core(path: &Path, detail: impl std::fmt::Display) -> LeakspyError {
    LeakspyError::BadCore { path: path.display().to_string(), detail: detail.to_string() }
}

/// Opens `path` (a kernel core, a gcore, or a leakspy image) and identifies its interpreter.
pub fn open_core(path: &Path, args: &CoreFileArgs) -> Result<OpenedCore, LeakspyError> {
    let core = Arc::new(CoreFile::open(path).map_err(|e| bad_core(path, e))?);
    let pid = core.pid();
    let maps = core.memory_map();
    let locations = FileLocations { sysroot: args.sysroot.clone(), python_binary: args.python_binary.clone() };
    let mut mem = CoreMemory::new(core.clone());
    let mut files_used = Vec::new();
    let (binary, recorded_rss) = match &core.leakspy {
        Some(note) => {
            let version = note.python_version.as_deref().and_then(PythonVersion::parse);
            (PythonBinary::from_note(&note.binary, note.load_bias, &note.symbols, version), note.rss_bytes)
        }
        None => {
            let (binary, found, file) = find_interpreter(&core, &maps, &locations, path)?;
            files_used = add_files(&maps, &locations, &mut mem, &binary, (&found, file));
            (binary, None)
        }
    };
    let process = PythonProcess::inspect_core(pid, maps, binary, &mut mem, recorded_rss).map_err(|e| match e {
        LeakspyError::NotPython { detail, .. } => {
            LeakspyError::CoreNotPython { path: path.display().to_string(), pid, detail }
        }
        other => other,
    })?;
    let (dumped_at, dumped_at_source) = match (core.leakspy.as_ref().and_then(|n| n.dumped_at_unix), core.mtime) {
        (Some(secs), _) if secs >= 0.0 => {
            (Some(rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))), Some("leakspy note"))
        }
        (_, Some(mtime)) => (Some(rfc3339(mtime)), Some("core file mtime")),
        _ => (None, None),
    };
    let note = core.leakspy.as_ref();
    let source = CoreSource {
        file: path.display().to_string(),
        kind: if note.is_some() { "leakspy image" } else { "core" }.into(),
        compressed: core.compressed,
        dumped_at,
        dumped_at_source: dumped_at_source.map(str::to_string),
        read_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        bytes_held: core.bytes_held(),
        threads: core.threads as u64,
        host: note.map(|n| n.host.clone()).filter(|h| !h.is_empty()),
        files_used,
    };
    let info = ProcessInfo {
        start_time: note
            .and_then(|n| n.start_time_ticks)
            .and_then(|t| start_time(t, &n_host(note)))
            .unwrap_or_default(),
        cmdline: core.cmdline(),
        hostname: note.map(|n| n.host.clone()).unwrap_or_default(),
        rss_bytes: recorded_rss.unwrap_or(0),
    };
    Ok(OpenedCore { process, mem, source, info })
}

fn n_host(note: Option<&crate::memory::core::LeakspyNote>) -> String {
    note.map(|n| n.host.clone()).unwrap_or_default()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The start time of a process dumped on this host from its start in clock ticks after boot
/// (field 22 of /proc/PID/stat); unknown for another host, whose boot time we do not know.
fn start_time(ticks: u64, host: &str) -> Option<String> {
    if host != crate::memory::proc_info::hostname() {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(btime + ticks / hz)))
}

/// Finds the interpreter's file as for a live process, each file found checked against the
/// build id in the ELF header the core holds of it.
fn find_interpreter(
    core: &Arc<CoreFile>,
    maps: &MemoryMap,
    locations: &FileLocations,
    path: &Path,
) -> Result<(PythonBinary, PathBuf, Arc<TargetFile>), LeakspyError> {
    let binary_for_any = locations.python_binary.as_ref().is_some_and(|given| {
        let name = given.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        !core.files.iter().any(|f| f.path.rsplit('/').next() == Some(name.as_str()))
    });
    let files = CoreFiles {
        core,
        locations,
        binary_for_any,
        maps,
        ids: RefCell::new(CoreMemory::new(core.clone())),
        found: RefCell::new(Vec::new()),
        unverified: RefCell::new(Vec::new()),
        mismatch: RefCell::new(None),
    };
    let found_binary = find_python_in(&files, maps);
    if let Some((file, detail)) = files.mismatch.borrow_mut().take()
        && found_binary.is_err()
    {
        return Err(LeakspyError::CoreBuildIdMismatch { core: path.display().to_string(), file, detail });
    }
    let binary = found_binary.map_err(|e| match e {
        LeakspyError::NotPython { detail, .. } if detail.contains("could not be read") => {
            LeakspyError::CoreFileMissing { path: path.display().to_string(), detail }
        }
        LeakspyError::NotPython { pid, detail } => {
            LeakspyError::CoreNotPython { path: path.display().to_string(), pid, detail }
        }
        other => other,
    })?;
    let found = files
        .found
        .borrow()
        .iter()
        .rev()
        .find(|(p, _)| *p == binary.path)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| PathBuf::from(&binary.path));
    if let Some((_, why)) = files.unverified.borrow().iter().find(|(f, _)| *f == found) {
        eprintln!(
            "leakspy: warning: cannot verify that {} is the file the process ran ({why}); reading on",
            found.display()
        );
    }
    let (file, _) = locations
        .open(&binary.path, binary_for_any)
        .map_err(|e| LeakspyError::CoreFileMissing { path: path.display().to_string(), detail: e.to_string() })?;
    Ok((binary, found, Arc::new(file)))
}

enum BuildIds {
    Same,
    Unknown(String),
    Differ { in_core: String, in_file: String },
}

/// The build id of `target_path` as the core's memory holds its ELF header, against `file`'s.
fn compare_build_ids(mem: &mut CoreMemory, maps: &MemoryMap, target_path: &str, file: &TargetFile) -> BuildIds {
    let Some(first) = maps.mappings.iter().find(|m| m.path == target_path && m.offset == 0) else {
        return BuildIds::Unknown("the core has no mapping of its first page".into());
    };
    let base = first.start;
    let in_core = build_id(
        &mut |at, len| {
            let mut buf = vec![0u8; len];
            mem.read(base.checked_add(at)?, &mut buf).ok().map(|()| buf)
        },
        true,
    );
    let in_file = build_id(&mut |at, len| file.read_at(at, len as u64).ok(), false);
    match (in_core, in_file) {
        (Some(a), Some(b)) if a == b => BuildIds::Same,
        (Some(a), Some(b)) => BuildIds::Differ { in_core: hex(&a), in_file: hex(&b) },
        (None, _) => BuildIds::Unknown("the core does not hold its ELF header's build id".into()),
        (Some(_), None) => BuildIds::Unknown("the file has no build id".into()),
    }
}

/// Gives the core's memory the read-only file mappings it left out (type names live in the
/// read-only data of python, libpython and extension modules), from the files found on this
/// machine whose build id matches the core's. Returns where each file used was found.
fn add_files(
    maps: &MemoryMap,
    locations: &FileLocations,
    mem: &mut CoreMemory,
    interpreter: &PythonBinary,
    (interpreter_found, interpreter_file): (&Path, Arc<TargetFile>),
) -> Vec<String> {
    let mut used = Vec::new();
    let mut missing = Vec::new();
    let mut paths: Vec<&str> = maps
        .mappings
        .iter()
        .filter(|m| m.is_file() && mem.populated(m.start, m.end - m.start) == Some(false))
        .map(|m| m.path.as_str())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    // Build ids are read from the core alone, before any file fills a gap.
    let mut checked = Vec::new();
    for path in paths {
        if path == interpreter.path {
            checked.push((path.to_string(), interpreter_file.clone(), interpreter_found.to_path_buf()));
            continue;
        }
        // Only an ELF file whose build id equals the one the core holds is read: the core is
        // untrusted, and a path it names could be any file of this machine (/etc/shadow),
        // whose bytes would then be printed as type names. Files without a build id (locale
        // archives) hold no type names anyway.
        match locations.open(path, false) {
            Ok((file, found)) => match compare_build_ids(mem, maps, path, &file) {
                BuildIds::Same => checked.push((path.to_string(), Arc::new(file), found)),
                BuildIds::Differ { .. } => missing.push(format!("{path} (another build)")),
                BuildIds::Unknown(_) => {}
            },
            Err(_) => missing.push(path.to_string()),
        }
    }
    for (path, file, found) in checked {
        for m in maps.mappings.iter().filter(|m| m.path == path) {
            mem.add_file(m, file.clone());
        }
        used.push(found.display().to_string());
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(3).map(String::as_str).collect();
        eprintln!(
            "leakspy: note: {} file(s) the core names were not found on this machine ({}{}): names of types \
             defined there read as unreadable (give --sysroot)",
            missing.len(),
            shown.join(", "),
            if missing.len() > 3 { ", ..." } else { "" }
        );
    }
    used
}

/// Stamps a census read from a core with what the core says of the process and its dump.
pub fn stamp(census: &mut Census, opened: &OpenedCore) {
    if let Some(dumped_at) = &opened.source.dumped_at {
        census.timestamp = dumped_at.clone();
    }
    census.process = Some(opened.info.clone());
    census.core = Some(opened.source.clone());
    if let Some(resources) = census.resources.as_mut() {
        // Open descriptors are not in a core.
        resources.descriptors = None;
    }
}
