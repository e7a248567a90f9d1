//! A CPython process: its binary, version and layout, found once per attach, and its
//! interpreters and GC lists, read fresh for every sample because the target keeps running.

use super::binary::{PythonBinary, PythonVersion, find_python};
use super::layout::{GC_LINK_FLAG_BITS, GcLocation, InterpretersHead, Layout, candidate_layouts, supported_minors};
use crate::error::{LeakspyError, ptrace_scope};
use crate::memory::maps::MemoryMap;
use crate::memory::{ReadError, RemoteMemory};

/// `_Py_DebugOffsets` starts with this cookie on 3.13+.
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// More interpreters than this in one process means the list is corrupt or we misread it.
const MAX_INTERPRETERS: usize = 4096;
/// How often a GC list head is re-read before a layout is rejected.
const PROBE_ATTEMPTS: usize = 5;
/// Threads to step through when checking that an interpreter's threads point back to it.
const MAX_THREADS_CHECKED: usize = 64;

#[derive(Debug)]
pub struct PythonProcess {
    pub pid: i32,
    pub version: PythonVersion,
    pub binary: PythonBinary,
    pub layout: Layout,
    pub maps: MemoryMap,
    /// Where the version came from, for the record: a symbol, a string, the file name.
    pub version_source: &'static str,
}

#[derive(Debug, Clone)]
pub struct Interpreter {
    pub addr: u64,
    pub id: i64,
}

/// One GC generation list to walk.
#[derive(Debug, Clone)]
pub struct GcList {
    /// "0", "1", "2" or "permanent".
    pub generation: String,
    pub interpreter_id: i64,
    /// Address of the list head (a PyGC_Head inside the GC state, not an object).
    pub head: u64,
}

/// The GC state of one interpreter (or of the process, before 3.9).
#[derive(Debug, Clone)]
pub struct GcState {
    pub interpreter_id: i64,
    pub lists: Vec<GcList>,
    /// A collection was running while we read: expect torn links.
    pub collecting: bool,
}

/// Maps a failed read during discovery to what the user should hear.
pub fn read_error(pid: i32, e: ReadError) -> LeakspyError {
    match e {
        ReadError::ProcessGone => LeakspyError::ProcessExited { pid },
        ReadError::Denied(err) => {
            LeakspyError::PermissionDenied { pid, detail: err.to_string(), ptrace_scope: ptrace_scope() }
        }
        other => LeakspyError::Other(anyhow::anyhow!("reading process {pid}: {other}")),
    }
}

impl PythonProcess {
    /// Identifies the target: does it exist, may we read it, is it CPython, which version.
    pub fn inspect(pid: i32, mem: &mut dyn RemoteMemory) -> Result<PythonProcess, LeakspyError> {
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(LeakspyError::NoSuchProcess { pid });
        }
        let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LeakspyError::NoSuchProcess { pid },
            std::io::ErrorKind::PermissionDenied => LeakspyError::PermissionDenied {
                pid,
                detail: format!("cannot read /proc/{pid}/maps ({e})"),
                ptrace_scope: ptrace_scope(),
            },
            _ => LeakspyError::Other(anyhow::anyhow!("reading /proc/{pid}/maps: {e}")),
        })?;
        let maps = MemoryMap::parse(&maps_text);
        if maps.mappings.is_empty() {
            if is_exiting(pid) {
                return Err(LeakspyError::ProcessExited { pid });
            }
            // Kernel threads have no memory map either.
            return Err(LeakspyError::NotPython { pid, detail: "it has no memory mappings (a kernel thread)".into() });
        }
        let binary = find_python(pid, &maps)?;
        let (version, version_source) = detect_version(pid, mem, &binary)?;
        let unsupported =
            |detail: String| LeakspyError::UnsupportedVersion { pid, version: version.to_string(), detail };
        if version.major != 3 {
            return Err(unsupported("leakspy reads CPython 3.6 to 3.15".into()));
        }
        let candidates = candidate_layouts(version.minor, version.patch)
            .map_err(|e| LeakspyError::Other(anyhow::anyhow!("built-in offsets: {e}")))?;
        if candidates.is_empty() {
            let known: Vec<String> = supported_minors().map(|m| format!("3.{m}")).collect();
            return Err(unsupported(format!("offset tables exist for {}", known.join(", "))));
        }
        // Layouts can change within a minor version; the first table the target agrees with wins.
        let mut rejected = Vec::new();
        for layout in candidates {
            let headers = layout.headers_version();
            let process =
                PythonProcess { pid, version, binary: binary.clone(), layout, maps: maps.clone(), version_source };
            match process.verify_layout(mem) {
                Ok(()) => return Ok(process),
                Err(LeakspyError::LayoutMismatch { detail, .. }) => {
                    rejected.push(format!("with the table from {headers} headers, {detail}"))
                }
                Err(other) => return Err(other),
            }
        }
        Err(LeakspyError::LayoutMismatch { pid, version: version.to_string(), detail: rejected.join("; ") })
    }

    fn mismatch(&self, detail: String) -> LeakspyError {
        LeakspyError::LayoutMismatch { pid: self.pid, version: self.version.to_string(), detail }
    }

    /// Checks the layout against the target: its own `_Py_DebugOffsets` (3.13+), a valid
    /// interpreter list, and GC list heads that link back to themselves. The last catches
    /// changes the debug offsets do not describe (3.13.18 moved the generations by 4 bytes).
    fn verify_layout(&self, mem: &mut dyn RemoteMemory) -> Result<(), LeakspyError> {
        self.check_debug_offsets(mem)?;
        let interpreters = self.interpreters(mem)?;
        // A list head is rewritten for an instant when an object is linked in or out; a few
        // tries tell a moving list from a wrong offset.
        let mut last_problem = String::new();
        for _ in 0..PROBE_ATTEMPTS {
            let states = self.gc_states(mem, &interpreters[..1])?;
            match states.iter().flat_map(|s| &s.lists).find_map(|list| self.list_head_problem(mem, list.head)) {
                None => return Ok(()),
                Some(problem) => last_problem = problem,
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(self.mismatch(last_problem))
    }

    /// Why the PyGC_Head at `head` is not the head of a circular list, if it is not.
    fn list_head_problem(&self, mem: &mut dyn RemoteMemory, head: u64) -> Option<String> {
        let g = &self.layout.gc_head;
        let mut link = |at: u64, off: usize| mem.read_u64(at + off as u64).map(|p| p & !GC_LINK_FLAG_BITS).ok();
        let (next, prev) = (link(head, g.next), link(head, g.prev));
        let linked_back = match (next, prev) {
            (Some(next), Some(prev)) => link(next, g.prev) == Some(head) && link(prev, g.next) == Some(head),
            _ => false,
        };
        (!linked_back).then(|| format!("the GC list head at {head:#x} does not link back to itself"))
    }

    fn runtime(&self) -> Option<u64> {
        self.binary.symbol("_PyRuntime")
    }

    /// On 3.13+ the target describes its own layout in `_Py_DebugOffsets`; a table that
    /// disagrees on a field we follow would make us read garbage, so that is an error.
    fn check_debug_offsets(&self, mem: &mut dyn RemoteMemory) -> Result<(), LeakspyError> {
        let (Some(runtime), false) = (self.runtime(), self.layout.debug_offsets.is_empty()) else {
            return Ok(());
        };
        let mut cookie = [0u8; 8];
        mem.read(runtime, &mut cookie).map_err(|e| read_error(self.pid, e))?;
        if &cookie != DEBUG_COOKIE {
            return Err(self.mismatch("_PyRuntime does not start with the _Py_DebugOffsets cookie".into()));
        }
        let mut disagreements = Vec::new();
        for check in &self.layout.debug_offsets {
            let actual = mem.read_u64(runtime + check.at as u64).map_err(|e| read_error(self.pid, e))?;
            if actual != check.expected {
                disagreements.push(format!(
                    "{} is {} in the target but {} in leakspy's table",
                    check.name, actual, check.expected
                ));
            }
        }
        if disagreements.is_empty() {
            Ok(())
        } else {
            Err(self.mismatch(format!("_Py_DebugOffsets disagrees: {}", disagreements.join("; "))))
        }
    }

    /// Every interpreter in the runtime's list, each checked: its threads must point back at it.
    pub fn interpreters(&self, mem: &mut dyn RemoteMemory) -> Result<Vec<Interpreter>, LeakspyError> {
        let l = &self.layout.interp;
        let head_ptr = match l.head {
            InterpretersHead::Runtime(off) => self.runtime().map(|r| r + off as u64),
            InterpretersHead::Symbol => self.binary.symbol("interp_head"),
        }
        .ok_or_else(|| LeakspyError::NotPython {
            pid: self.pid,
            detail: format!("{} lacks the symbol that anchors the interpreter list", self.binary.path),
        })?;
        let mut addr = mem.read_u64(head_ptr).map_err(|e| read_error(self.pid, e))?;
        let mut found = Vec::new();
        while addr != 0 && found.len() < MAX_INTERPRETERS {
            if let Err(why) = self.validate_interpreter(mem, addr) {
                if found.is_empty() {
                    return Err(LeakspyError::LayoutMismatch {
                        pid: self.pid,
                        version: self.version.to_string(),
                        detail: format!("the main interpreter at {addr:#x} does not look like one: {why}"),
                    });
                }
                // A later interpreter being created or torn down right now: keep what we have.
                break;
            }
            let id = match l.id {
                Some(off) => mem.read_u64(addr + off as u64).map_err(|e| read_error(self.pid, e))? as i64,
                None => found.len() as i64,
            };
            found.push(Interpreter { addr, id });
            addr = mem.read_u64(addr + l.next as u64).map_err(|e| read_error(self.pid, e))?;
            if found.iter().any(|i| i.addr == addr) {
                break;
            }
        }
        if found.is_empty() {
            return Err(LeakspyError::NotPython {
                pid: self.pid,
                detail: "the interpreter list is empty: Python has not started yet or is shutting down".into(),
            });
        }
        Ok(found)
    }

    fn validate_interpreter(&self, mem: &mut dyn RemoteMemory, addr: u64) -> Result<(), String> {
        let l = &self.layout.interp;
        if !addr.is_multiple_of(8) || !self.maps.is_readable(addr, 8) {
            return Err("not a readable, aligned address".into());
        }
        let mut tstate = mem.read_u64(addr + l.threads_head as u64).map_err(|e| e.to_string())?;
        let mut checked = 0;
        while tstate != 0 && checked < MAX_THREADS_CHECKED {
            let back = mem.read_u64(tstate + l.tstate_interp as u64).map_err(|e| e.to_string())?;
            if back != addr {
                return Err(format!("its thread {tstate:#x} points to interpreter {back:#x}"));
            }
            tstate = mem.read_u64(tstate + l.tstate_next as u64).map_err(|e| e.to_string())?;
            checked += 1;
        }
        Ok(())
    }

    /// The GC lists to walk: one state per interpreter from 3.9, one per process before.
    pub fn gc_states(
        &self,
        mem: &mut dyn RemoteMemory,
        interpreters: &[Interpreter],
    ) -> Result<Vec<GcState>, LeakspyError> {
        let gc = &self.layout.gc;
        let main_id = interpreters.first().map_or(0, |i| i.id);
        let bases: Vec<(i64, u64)> = match gc.location {
            GcLocation::Interpreter(off) => interpreters.iter().map(|i| (i.id, i.addr + off as u64)).collect(),
            GcLocation::Runtime(off) => vec![(main_id, self.runtime().unwrap_or(0) + off as u64)],
            GcLocation::Generation0Symbol => {
                let sym = self.binary.symbol("_PyGC_generation0").ok_or_else(|| LeakspyError::NotPython {
                    pid: self.pid,
                    detail: format!("{} lacks _PyGC_generation0", self.binary.path),
                })?;
                let gen0 = mem.read_u64(sym).map_err(|e| read_error(self.pid, e))?;
                vec![(main_id, gen0 - gc.generation_head as u64)]
            }
        };
        let mut states = Vec::new();
        for (interpreter_id, state) in bases {
            let mut lists: Vec<GcList> = (0..gc.generation_count)
                .map(|i| GcList {
                    generation: i.to_string(),
                    interpreter_id,
                    head: state + (gc.generations + i * gc.generation_size + gc.generation_head) as u64,
                })
                .collect();
            if let Some(off) = gc.permanent_generation {
                lists.push(GcList {
                    generation: "permanent".into(),
                    interpreter_id,
                    head: state + (off + gc.generation_head) as u64,
                });
            }
            let collecting = match gc.collecting {
                Some(off) => mem.read_u32(state + off as u64).map_err(|e| read_error(self.pid, e))? != 0,
                None => false,
            };
            states.push(GcState { interpreter_id, lists, collecting });
        }
        Ok(states)
    }
}

/// True for a zombie or dead process: it has exited, even if its parent has not reaped it.
fn is_exiting(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(true)
}

/// The exact version: `Py_Version` (3.11+), else PY_VERSION in the binary's data, and last
/// the file name.
fn detect_version(
    pid: i32,
    mem: &mut dyn RemoteMemory,
    binary: &PythonBinary,
) -> Result<(PythonVersion, &'static str), LeakspyError> {
    if let Some(addr) = binary.symbol("Py_Version") {
        let hex = mem.read_u32(addr).map_err(|e| read_error(pid, e))?;
        return Ok((PythonVersion::from_hex(hex as u64), "Py_Version"));
    }
    if let Some(v) = binary.embedded_version {
        return Ok((v, "PY_VERSION string"));
    }
    if let Some((major, minor)) = binary.name_version {
        return Ok((PythonVersion { major, minor, patch: 0 }, "file name"));
    }
    Err(LeakspyError::UnsupportedVersion {
        pid,
        version: "unknown".into(),
        detail: format!("could not tell the Python version of {}", binary.path),
    })
}
