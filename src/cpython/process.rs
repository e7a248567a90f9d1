//! A CPython process: its binary, version and layout, found once per attach, and its
//! interpreters and GC lists, read fresh for every sample because the target keeps running.

use super::binary::{PythonBinary, PythonVersion, find_python};
use super::layout::{GC_LINK_FLAG_BITS, GcLocation, InterpretersHead, Layout, candidate_layouts, supported_minors};
use crate::error::{LeakspyError, ptrace_scope};
use crate::memory::maps::MemoryMap;
use crate::memory::proc_info::{has_exited, is_kernel_thread};
use crate::memory::{ReadError, RemoteMemory};

/// `_Py_DebugOffsets` starts with this cookie on 3.13+.
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// More interpreters than this in one process means the list is corrupt or we misread it.
const MAX_INTERPRETERS: usize = 4096;
/// How often a GC list head or a thread list is re-read before a layout is rejected.
const PROBE_ATTEMPTS: usize = 20;
/// How often a whole read (finding the interpreter, a census, the heap graph) is made
/// again when the target changed under it: 2 to 32 ms apart, 62 ms of waiting in all.
const READ_ATTEMPTS: u32 = 6;
/// How often a census re-reads a list that broke under the read (interpreters, threads).
const LIST_ATTEMPTS: usize = 5;
/// Threads listed per interpreter; more means a corrupt list.
const MAX_THREADS: usize = 10_000;

#[derive(Debug)]
pub struct PythonProcess {
    pub pid: i32,
    pub version: PythonVersion,
    pub binary: PythonBinary,
    pub layout: Layout,
    pub maps: MemoryMap,
    /// Where the version came from, for the record: a symbol, a string, the file name.
    pub version_source: &'static str,
    /// False for a core file or image: `pid` names the dumped process, and nothing about it is
    /// read from /proc (a process of that PID here now, if any, is another one).
    pub live: bool,
    /// For a core: the resident size it records (leakspy's note), if any.
    pub recorded_rss: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Interpreter {
    pub addr: u64,
    pub id: i64,
}

/// The interpreters of a process as read now; `skipped` is 1 when the list broke under
/// every read (an interpreter created or torn down meanwhile) and its rest was left out.
#[derive(Debug, Clone)]
pub struct Interpreters {
    pub interpreters: Vec<Interpreter>,
    pub skipped: u64,
}

/// The thread states of one interpreter as read now; `skipped` is 1 when the list broke
/// under every read (threads exiting meanwhile) and its rest was left out.
#[derive(Debug, Clone, Default)]
pub struct ThreadStates {
    pub states: Vec<u64>,
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct ThreadList {
    states: Vec<u64>,
    /// The read reached the end of the list.
    complete: bool,
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
    /// Address of the GC state (for 3.6, of the generations array).
    pub base: u64,
    pub lists: Vec<GcList>,
    /// A collection was running while we read: expect torn links.
    pub collecting: bool,
}

/// Maps a failed read during discovery to what the user should hear.
pub fn read_error(pid: i32, e: ReadError) -> LeakspyError {
    match e {
        ReadError::ProcessGone => LeakspyError::ProcessExited { pid },
        ReadError::AlreadyTraced { tracer } => LeakspyError::AlreadyTraced {
            pid,
            tracer,
            tracer_name: crate::memory::proc_info::command_name(tracer).unwrap_or_else(|| "gone".into()),
        },
        ReadError::Denied(err) => {
            LeakspyError::PermissionDenied { pid, detail: err.to_string(), ptrace_scope: ptrace_scope() }
        }
        torn @ (ReadError::Unmapped { .. } | ReadError::Implausible { .. }) => {
            LeakspyError::TargetChanged { pid, attempts: 1, detail: torn.to_string() }
        }
        io @ ReadError::Io(_) => LeakspyError::Other(anyhow::anyhow!("reading process {pid}: {io}")),
    }
}

impl PythonProcess {
    /// Identifies the target: does it exist, may we read it, is it CPython, which version.
    pub fn inspect(pid: i32, mem: &mut dyn RemoteMemory) -> Result<PythonProcess, LeakspyError> {
        let inspected = retry_transient(mem.changes_under_reads(), |_| {
            mem.invalidate();
            Self::inspect_running(pid, mem)
        })
        .map(|(process, _)| process);
        match inspected {
            // A process that exits while we look at it fails in many odd ways (files gone,
            // maps half-read); say what really happened.
            Err(LeakspyError::NotPython { .. } | LeakspyError::LayoutMismatch { .. } | LeakspyError::Other(_))
                if has_exited(pid) =>
            {
                Err(LeakspyError::ProcessExited { pid })
            }
            other => other,
        }
    }

    fn inspect_running(pid: i32, mem: &mut dyn RemoteMemory) -> Result<PythonProcess, LeakspyError> {
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
            // Only kernel threads and processes that are exiting have no memory map.
            return Err(if is_kernel_thread(pid) {
                LeakspyError::NotPython { pid, detail: "it is a kernel thread".into() }
            } else {
                LeakspyError::ProcessExited { pid }
            });
        }
        let binary = find_python(pid, &maps)?;
        Self::identify(pid, maps, binary, mem, true)
    }

    /// Identifies the interpreter of a core file or image, whose memory map and interpreter
    /// file were found from the core (see `cli::open_core`): the same checks as for a live
    /// process, on memory that does not change.
    pub fn inspect_core(
        pid: i32,
        maps: MemoryMap,
        binary: PythonBinary,
        mem: &mut dyn RemoteMemory,
        recorded_rss: Option<u64>,
    ) -> Result<PythonProcess, LeakspyError> {
        let mut process = Self::identify(pid, maps, binary, mem, false)?;
        process.recorded_rss = recorded_rss;
        Ok(process)
    }

    /// The version and layout of the interpreter in `binary`, checked against the target.
    fn identify(
        pid: i32,
        maps: MemoryMap,
        binary: PythonBinary,
        mem: &mut dyn RemoteMemory,
        live: bool,
    ) -> Result<PythonProcess, LeakspyError> {
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
            let process = PythonProcess {
                pid,
                version,
                binary: binary.clone(),
                layout,
                maps: maps.clone(),
                version_source,
                live,
                recorded_rss: None,
            };
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

    /// Checks the layout against evidence a running target cannot fake by changing under the
    /// read: its own `_Py_DebugOffsets` (3.13+), GC list heads that link back to themselves
    /// (catches changes the debug offsets do not describe: 3.13.18 moved the generations by 4
    /// bytes), and thread states that point back at their interpreter. The last two are read
    /// several times: a busy target relinks list heads and frees exiting threads' states all
    /// the time, but a wrong offset never reads as a consistent link.
    fn verify_layout(&self, mem: &mut dyn RemoteMemory) -> Result<(), LeakspyError> {
        self.check_debug_offsets(mem)?;
        let listed = self.interpreters(mem)?;
        let first = &listed.interpreters[0];
        if !self.threads_point_back(mem, first)? {
            return Err(self.mismatch(format!(
                "in {PROBE_ATTEMPTS} reads of the thread list of the interpreter at {:#x}, no thread state \
                 pointed back to it",
                first.addr
            )));
        }
        let states = self.gc_states(mem, std::slice::from_ref(first))?;
        for list in states.iter().flat_map(|s| &s.lists) {
            if !self.list_head_links_back(mem, list.head) {
                return Err(self.mismatch(format!(
                    "the GC list head of generation {} at {:#x} does not link back to itself",
                    list.generation, list.head
                )));
            }
        }
        Ok(())
    }

    /// One consistent read of a list head's links out of a few tries is proof enough.
    fn list_head_links_back(&self, mem: &mut dyn RemoteMemory, head: u64) -> bool {
        let attempts = if mem.changes_under_reads() { PROBE_ATTEMPTS } else { 1 };
        (0..attempts).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
                mem.invalidate();
            }
            self.links_back(mem, head)
        })
    }

    /// True if some thread state of `interp`'s list points back at it (or it has none), in
    /// one of a few fresh reads. A wrong offset gives no such thread in any read; a right one
    /// gives one in nearly every read, however many threads start and exit meanwhile.
    fn threads_point_back(&self, mem: &mut dyn RemoteMemory, interp: &Interpreter) -> Result<bool, LeakspyError> {
        let attempts = if mem.changes_under_reads() { PROBE_ATTEMPTS } else { 1 };
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            mem.invalidate();
            let read = self.read_thread_list(mem, interp)?;
            if !read.states.is_empty() || read.complete {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// True if the PyGC_Head at `head` is linked to by its neighbour on either side, as the
    /// head of a circular list is.
    fn links_back(&self, mem: &mut dyn RemoteMemory, head: u64) -> bool {
        let g = &self.layout.gc_head;
        let mut link = |at: u64, off: usize| mem.read_u64(at + off as u64).map(|p| p & !GC_LINK_FLAG_BITS).ok();
        let next_back = link(head, g.next).and_then(|next| link(next, g.prev));
        let prev_forward = link(head, g.prev).and_then(|prev| link(prev, g.next));
        next_back == Some(head) || prev_forward == Some(head)
    }

    /// The memory map as it is now: read again for a live process (arenas come and go), the
    /// recorded one for a core.
    pub fn current_maps(&self) -> MemoryMap {
        if self.live { MemoryMap::read(self.pid).unwrap_or_else(|_| self.maps.clone()) } else { self.maps.clone() }
    }

    /// The resident size now (a live process), or as the core records it.
    pub fn rss(&self) -> Option<u64> {
        if self.live { crate::memory::proc_info::rss_bytes(self.pid) } else { self.recorded_rss }
    }

    pub fn runtime(&self) -> Option<u64> {
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

    /// Every interpreter in the runtime's list as it is now. An interpreter being created or
    /// torn down while we read (a sub-interpreter's state freed under the read) does not
    /// look like one: the list is read again, and what stays unreadable is skipped and
    /// counted. Fails only when the list cannot be read at all.
    pub fn interpreters(&self, mem: &mut dyn RemoteMemory) -> Result<Interpreters, LeakspyError> {
        let attempts = if mem.changes_under_reads() { LIST_ATTEMPTS } else { 1 };
        let mut best: Option<(Vec<Interpreter>, Option<String>)> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                mem.invalidate();
                std::thread::yield_now();
            }
            let (found, problem) = self.read_interpreter_list(mem)?;
            if problem.is_none() && !found.is_empty() {
                return Ok(Interpreters { interpreters: found, skipped: 0 });
            }
            if best.as_ref().is_none_or(|(b, _)| found.len() > b.len()) {
                best = Some((found, problem));
            }
        }
        let (found, problem) = best.unwrap_or_default();
        if found.is_empty() {
            return Err(match problem {
                // Nothing readable where the list starts, in every read: not a torn read.
                Some(why) => self.mismatch(format!("the interpreter list does not start with an interpreter: {why}")),
                None => LeakspyError::NotPython {
                    pid: self.pid,
                    detail: "the interpreter list is empty: Python has not started yet or is shutting down".into(),
                },
            });
        }
        Ok(Interpreters { interpreters: found, skipped: 1 })
    }

    /// One read of the interpreter list: the interpreters that look like one, and why the
    /// read stopped early, if it did.
    fn read_interpreter_list(
        &self,
        mem: &mut dyn RemoteMemory,
    ) -> Result<(Vec<Interpreter>, Option<String>), LeakspyError> {
        let l = &self.layout.interp;
        let head_ptr = match l.head {
            InterpretersHead::Runtime(off) => self.runtime().map(|r| r + off as u64),
            InterpretersHead::Symbol => self.binary.symbol("interp_head"),
        }
        .ok_or_else(|| LeakspyError::NotPython {
            pid: self.pid,
            detail: format!("{} lacks the symbol that anchors the interpreter list", self.binary.path),
        })?;
        let mut found: Vec<Interpreter> = Vec::new();
        let torn = |e: ReadError| match e {
            torn if torn.is_torn() => Ok(torn.to_string()),
            other => Err(read_error(self.pid, other)),
        };
        let mut addr = match mem.read_u64(head_ptr) {
            Ok(addr) => addr,
            Err(e) => return Ok((found, Some(torn(e)?))),
        };
        while addr != 0 {
            if found.len() >= MAX_INTERPRETERS || found.iter().any(|i| i.addr == addr) {
                return Ok((found, Some(format!("the list loops back to {addr:#x}"))));
            }
            let read = (|| -> Result<Option<(i64, u64)>, ReadError> {
                if !addr.is_multiple_of(8) || !self.looks_like_interpreter(mem, addr)? {
                    return Ok(None);
                }
                let id = match l.id {
                    Some(off) => mem.read_u64(addr + off as u64)? as i64,
                    None => found.len() as i64,
                };
                Ok(Some((id, mem.read_u64(addr + l.next as u64)?)))
            })();
            match read {
                Ok(Some((id, next))) => {
                    found.push(Interpreter { addr, id });
                    addr = next;
                }
                Ok(None) => return Ok((found, Some(format!("{addr:#x} does not look like an interpreter")))),
                Err(e) => return Ok((found, Some(torn(e)?))),
            }
        }
        Ok((found, None))
    }

    /// A cheap check that `addr` holds an interpreter state: one of its GC list heads links
    /// back (3.9+, where the GC state is inside the interpreter), else its first thread points
    /// back at it. Freed or half-built memory passes neither. Any list will do: a busy target
    /// relinks the youngest generation's head with every allocation and collection, and a
    /// read of it alone failed five times running under churn; the older ones rarely move.
    fn looks_like_interpreter(&self, mem: &mut dyn RemoteMemory, addr: u64) -> Result<bool, ReadError> {
        let l = &self.layout;
        if let GcLocation::Interpreter(off) = l.gc.location {
            return Ok(l.gc.list_heads(addr + off as u64).any(|(_, head)| self.links_back(mem, head)));
        }
        let first = mem.read_u64(addr + l.interp.threads_head as u64)?;
        Ok(first == 0 || mem.read_u64(first + l.interp.tstate_interp as u64)? == addr)
    }

    /// The thread states of an interpreter, in list order, as they are now. Threads start and
    /// exit all the time in servers: a state being unlinked or freed under the read breaks
    /// the list, which is then read again (fresh, not from the cache); what stays unreadable
    /// is skipped and counted, never an error.
    pub fn thread_states(
        &self,
        mem: &mut dyn RemoteMemory,
        interp: &Interpreter,
    ) -> Result<ThreadStates, LeakspyError> {
        let attempts = if mem.changes_under_reads() { LIST_ATTEMPTS } else { 1 };
        let mut best = ThreadList::default();
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::yield_now();
            }
            mem.invalidate();
            let read = self.read_thread_list(mem, interp)?;
            if read.complete {
                return Ok(ThreadStates { states: read.states, skipped: 0 });
            }
            if read.states.len() >= best.states.len() {
                best = read;
            }
        }
        Ok(ThreadStates { states: best.states, skipped: 1 })
    }

    /// One read of a thread list: the states that point back at `interp`, up to the first
    /// that does not (or cannot be read, or was seen before).
    fn read_thread_list(&self, mem: &mut dyn RemoteMemory, interp: &Interpreter) -> Result<ThreadList, LeakspyError> {
        let l = &self.layout.interp;
        let mut list = ThreadList::default();
        let mut read = || -> Result<(), ReadError> {
            let mut tstate = mem.read_u64(interp.addr + l.threads_head as u64)?;
            while tstate != 0 {
                if list.states.len() >= MAX_THREADS
                    || !tstate.is_multiple_of(8)
                    || list.states.contains(&tstate)
                    || mem.read_u64(tstate + l.tstate_interp as u64)? != interp.addr
                {
                    return Ok(());
                }
                list.states.push(tstate);
                tstate = mem.read_u64(tstate + l.tstate_next as u64)?;
            }
            list.complete = true;
            Ok(())
        };
        match read() {
            Ok(()) => Ok(list),
            Err(e) if e.is_torn() => Ok(list),
            Err(e) => Err(read_error(self.pid, e)),
        }
    }

    /// The GC lists to walk: one state per interpreter from 3.9, one per process before.
    pub fn gc_states(
        &self,
        mem: &mut dyn RemoteMemory,
        interpreters: &[Interpreter],
    ) -> Result<Vec<GcState>, LeakspyError> {
        let gc = &self.layout.gc;
        let main_id = interpreters.first().map_or(0, |i| i.id);
        // 3.6 keeps its collector's state in globals of gcmodule.c rather than in a struct.
        let mut collecting_global = None;
        let bases: Vec<(i64, u64)> = match gc.location {
            GcLocation::Interpreter(off) => interpreters.iter().map(|i| (i.id, i.addr + off as u64)).collect(),
            GcLocation::Runtime(off) => vec![(main_id, self.runtime().unwrap_or(0) + off as u64)],
            GcLocation::Generation0Symbol => {
                let sym = self.binary.symbol("_PyGC_generation0").ok_or_else(|| LeakspyError::NotPython {
                    pid: self.pid,
                    detail: format!("{} lacks _PyGC_generation0", self.binary.path),
                })?;
                let gen0 = mem.read_u64(sym).map_err(|e| read_error(self.pid, e))?;
                collecting_global = self.binary.symbol("collecting");
                vec![(main_id, gen0 - gc.generation_head as u64)]
            }
        };
        let mut states = Vec::new();
        for (interpreter_id, state) in bases {
            let lists: Vec<GcList> =
                gc.list_heads(state).map(|(generation, head)| GcList { generation, interpreter_id, head }).collect();
            let collecting_flag = gc.collecting.map(|off| state + off as u64).or(collecting_global);
            let collecting = match collecting_flag {
                Some(addr) => mem.read_u32(addr).map_err(|e| read_error(self.pid, e))? != 0,
                None => false,
            };
            states.push(GcState { interpreter_id, base: state, lists, collecting });
        }
        Ok(states)
    }
}

/// Reads of a live target that failed only because it changed under them are made again, a
/// little later each time; `read` gets the attempt number. Returns what the last attempt
/// gave, with the number of retries it took.
pub fn retry_transient<T>(
    changes_under_reads: bool,
    mut read: impl FnMut(u32) -> Result<T, LeakspyError>,
) -> Result<(T, u32), LeakspyError> {
    let attempts = if changes_under_reads { READ_ATTEMPTS } else { 1 };
    let mut attempt = 0;
    loop {
        match read(attempt) {
            Ok(value) => return Ok((value, attempt)),
            Err(LeakspyError::TargetChanged { pid, detail, .. }) if attempt + 1 >= attempts => {
                return Err(LeakspyError::TargetChanged { pid, attempts, detail });
            }
            Err(e) if e.is_transient() => {
                std::thread::sleep(std::time::Duration::from_millis(2 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The exact version: `Py_Version` (3.11+), else PY_VERSION in the binary's data, and last
/// the file name.
pub(crate) fn detect_version(
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
