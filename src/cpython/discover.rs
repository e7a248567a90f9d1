//! Is this process Python, and which? A cheap answer for every process on a host (`leakspy
//! ps`, `--match`, following new workers), short of the full inspection a census needs.
//!
//! Most processes are not Python, and must be told apart without parsing every executable on
//! the machine: a process is looked at closer only if it loads a libpython, or its executable
//! is named python*, or exports CPython's symbols in its dynamic table (an embedding program
//! under another name). Parsed files are cached by identity (see `binary`), so a server's
//! workers, all mapping one interpreter, cost one parse. The version then comes from the same
//! place a census takes it from (`Py_Version` in memory, PY_VERSION, the file name), which
//! also proves that this user may read the process.

use super::binary::{PythonVersion, exports_python_symbols, find_python};
use super::process::detect_version;
use crate::error::LeakspyError;
use crate::memory::RemoteMemory;
use crate::memory::live::LiveProcess;
use crate::memory::maps::MemoryMap;

/// What a look at a process found.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// CPython (supported or not: Python 2 is Python, and reading it fails with its own error).
    Python { version: PythonVersion, binary: String },
    /// Not CPython, and why.
    NotPython(String),
    /// Python or not, this user may not look at it (another user's process, without root).
    Unreadable(String),
    /// It exited meanwhile.
    Gone,
}

impl Probe {
    pub fn is_python(&self) -> bool {
        matches!(self, Probe::Python { .. })
    }
}

/// Looks at process `pid`: see the module's documentation.
pub fn probe(pid: i32) -> Probe {
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(text) => MemoryMap::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Gone,
        Err(e) => return Probe::Unreadable(format!("cannot read /proc/{pid}/maps ({e})")),
    };
    if maps.mappings.is_empty() {
        return Probe::NotPython("it has no memory map (a kernel thread, or exiting)".into());
    }
    let exe = crate::memory::proc_info::exe_path(pid);
    let exe = exe.as_deref().map(|e| e.strip_suffix(" (deleted)").unwrap_or(e).to_string());
    let exe_name = exe.as_deref().map(|e| e.rsplit('/').next().unwrap_or(e)).unwrap_or("");
    let loads_libpython = maps.mappings.iter().any(|m| m.is_file() && m.file_name().starts_with("libpython"));
    let candidate = loads_libpython
        || exe_name.starts_with("python")
        || exe.as_deref().is_some_and(|exe| {
            maps.mappings
                .iter()
                .find(|m| m.offset == 0 && m.path.strip_suffix(" (deleted)").unwrap_or(&m.path) == exe)
                .is_some_and(|m| exports_python_symbols(pid, m))
        });
    if !candidate {
        return Probe::NotPython(format!(
            "{} loads no libpython and has no CPython symbols",
            exe.as_deref().unwrap_or("its executable")
        ));
    }
    let binary = match find_python(pid, &maps) {
        Ok(binary) => binary,
        Err(LeakspyError::UnsupportedVersion { version, .. }) => {
            // Python 2: Python, and a census will say it is not supported.
            let version =
                PythonVersion::parse(&format!("{version}.0")).unwrap_or(PythonVersion { major: 2, minor: 0, patch: 0 });
            return Probe::Python { version, binary: exe.unwrap_or_default() };
        }
        Err(LeakspyError::NotPython { detail, .. }) if detail.contains("could not be read") => {
            return Probe::Unreadable(detail);
        }
        Err(LeakspyError::NotPython { detail, .. }) => return Probe::NotPython(detail),
        Err(e) => return Probe::Unreadable(e.to_string()),
    };
    let mut mem = LiveProcess::with_cache_blocks(pid, 1);
    let version = match detect_version(pid, &mut mem, &binary) {
        Ok((version, _)) => version,
        Err(e) => return unreadable(pid, e),
    };
    // Before 3.11 the version came from the file: read one word of the interpreter's state to
    // know that this user may read the process at all.
    let anchor = ["_PyRuntime", "interp_head", "_PyGC_generation0"].iter().find_map(|s| binary.symbol(s));
    if let Some(addr) = anchor
        && let Err(e) = mem.read_u64(addr)
    {
        return unreadable(pid, crate::cpython::process::read_error(pid, e));
    }
    Probe::Python { version, binary: binary.path }
}

fn unreadable(pid: i32, e: LeakspyError) -> Probe {
    match e {
        LeakspyError::ProcessExited { .. } | LeakspyError::NoSuchProcess { .. } => Probe::Gone,
        LeakspyError::PermissionDenied { .. } => {
            Probe::Unreadable(format!("reading process {pid}'s memory was denied"))
        }
        other => Probe::Unreadable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_is_not_python_says_so() {
        // This test binary: Rust, no libpython.
        match probe(std::process::id() as i32) {
            Probe::NotPython(why) => assert!(why.contains("loads no libpython"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(probe(i32::MAX), Probe::Gone);
    }
}
