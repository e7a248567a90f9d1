//! A second look at a few kinds of objects the census found, where the type alone does not
//! say enough: functions (which code, does it close over anything), bound methods (of which
//! function), file and socket objects (open or closed).

use crate::cpython::frames::free_variable_names;
use crate::cpython::layout::FunctionLayout;
use crate::cpython::objects::{code_location, read_str, type_name};
use crate::cpython::process::PythonProcess;
use crate::memory::{ReadError, RemoteMemory, u64_at};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Addresses kept per kind; past this, the details are about a sample and say so.
pub const MAX_WATCHED: usize = 1_000_000;
/// Function groups listed, most numerous first.
const TOP_FUNCTION_GROUPS: usize = 50;
/// Groups as large as the last one listed that are named to choose among them by name: on a
/// library heap, thousands of functions are each the only one of their code.
const MAX_TIED_NAMED: usize = 1000;
/// Captured variables read from a closure: a closure over more is generated code.
const MAX_CAPTURES: u64 = 32;
/// `__self__` types listed per group of bound methods, most frequent first.
const TOP_SELF_TYPES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Function,
    Method,
    File,
    Socket,
}

impl Watched {
    pub fn for_type(name: &str) -> Option<Watched> {
        match name {
            "function" => Some(Watched::Function),
            "method" => Some(Watched::Method),
            "_io.FileIO" => Some(Watched::File),
            "socket.socket" | "_socket.socket" | "ssl.SSLSocket" => Some(Watched::Socket),
            _ => None,
        }
    }
}

/// Addresses of watched objects, collected during the walk.
#[derive(Debug, Default)]
pub struct WatchedObjects {
    /// The address of the `function` type, to check what a bound method wraps.
    pub function_type: Option<u64>,
    pub functions: Vec<u64>,
    pub methods: Vec<u64>,
    pub files: Vec<u64>,
    pub sockets: Vec<u64>,
}

impl WatchedObjects {
    pub fn add(&mut self, kind: Watched, addr: u64) {
        let list = match kind {
            Watched::Function => &mut self.functions,
            Watched::Method => &mut self.methods,
            Watched::File => &mut self.files,
            Watched::Socket => &mut self.sockets,
        };
        if list.len() < MAX_WATCHED {
            list.push(addr);
        }
    }
}

/// Functions (and bound methods) grouped by the code they run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionGroup {
    pub qualname: String,
    pub file: String,
    pub line: u64,
    pub functions: u64,
    /// Of those, how many close over variables (have cells): closures.
    pub closures: u64,
    /// Bound methods whose function runs this code.
    pub bound_methods: u64,
    /// What a closure of this code captures: its free variables by name, with the type of
    /// the value each held in the first closure read (a leaked closure keeps these alive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<Capture>,
    /// The types of the bound methods' `__self__`, most frequent first: a leaked bound method
    /// keeps its `__self__` alive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub self_types: Vec<SelfType>,
}

/// A variable a closure captured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capture {
    pub name: String,
    /// The type of the captured value; `None` for an empty cell (assigned later, or deleted).
    #[serde(rename = "type")]
    pub type_name: Option<String>,
}

/// How many bound methods of a group are bound to instances of one type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SelfType {
    #[serde(rename = "type")]
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OpenClosed {
    pub open: u64,
    pub closed: u64,
}

#[derive(Debug, Default)]
pub struct Details {
    pub functions: Vec<FunctionGroup>,
    pub files: OpenClosed,
    pub sockets: OpenClosed,
}

/// Reads what the watched objects say. Objects freed since the walk read as garbage or fail;
/// those are skipped, since a census of a running process is a moving picture anyway.
pub fn read_details(process: &PythonProcess, mem: &mut dyn RemoteMemory, watched: &WatchedObjects) -> Details {
    let mut details = Details::default();
    // In address order: the walk found them in list order, scattered over the heap, and
    // tens of thousands of functions read in that order would fill the cache's blocks again
    // and again; sorted, each block is read once.
    let sorted = |addrs: &[u64]| {
        let mut addrs = addrs.to_vec();
        addrs.sort_unstable();
        addrs
    };
    let watched = &WatchedObjects {
        function_type: watched.function_type,
        functions: sorted(&watched.functions),
        methods: sorted(&watched.methods),
        files: sorted(&watched.files),
        sockets: sorted(&watched.sockets),
    };
    let c = &process.layout.containers;
    for (addrs, fd_off, out) in
        [(&watched.files, c.fileio_fd, &mut details.files), (&watched.sockets, c.socket_fd, &mut details.sockets)]
    {
        let Some(off) = fd_off else { continue };
        for addr in addrs {
            match mem.read_u32(addr + off as u64) {
                Ok(fd) if (fd as i32) >= 0 => out.open += 1,
                Ok(_) => out.closed += 1,
                Err(_) => {}
            }
        }
    }
    if let Some(f) = &process.layout.functions {
        details.functions = function_groups(process, mem, f, watched);
    }
    details
}

/// What the functions and bound methods of one code object add up to, before it is named.
#[derive(Default)]
struct CodeTally {
    functions: u64,
    closures: u64,
    bound_methods: u64,
    /// A function running the code (its qualified name is the group's).
    function: u64,
    /// A closure of the code, if any: what it captured stands for all of them.
    closure: u64,
}

impl CodeTally {
    fn total(&self) -> u64 {
        self.functions + self.bound_methods
    }
}

/// Functions and bound methods grouped by code, the most numerous groups first. Groups are
/// counted from a few batched reads and only the top ones are named (a name, a file and a
/// line are three scattered reads each): a library heap has tens of thousands of functions,
/// nearly all of them one of a kind, and reading every one's name cost more than the census.
fn function_groups(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    f: &FunctionLayout,
    watched: &WatchedObjects,
) -> Vec<FunctionGroup> {
    let mut tallies: FxHashMap<u64, CodeTally> = FxHashMap::default();
    for (&func, fields) in
        watched.functions.iter().zip(read_fields(mem, &watched.functions, [f.func_code, f.func_closure]))
    {
        let Some([code, closure]) = fields else { continue };
        let t = tallies.entry(code).or_default();
        t.functions += 1;
        t.closures += u64::from(closure != 0);
        if t.function == 0 {
            t.function = func;
        }
        if t.closure == 0 {
            t.closure = closure;
        }
    }
    // Then the methods: their function and `__self__`, then that function's type and code and
    // the `__self__`'s type, each round one batch.
    let bound = read_fields(mem, &watched.methods, [f.im_func, f.im_self]);
    let (funcs, selves): (Vec<u64>, Vec<u64>) = bound.iter().map(|b| b.map_or((0, 0), |[func, s]| (func, s))).unzip();
    let ob_type = process.layout.object.ob_type;
    let func_fields = read_fields(mem, &funcs, [ob_type, f.func_code]);
    let self_type_fields = read_fields(mem, &selves, [ob_type]);
    let mut self_types: FxHashMap<(u64, u64), u64> = FxHashMap::default();
    for ((bound, func_fields), self_type) in bound.into_iter().zip(func_fields).zip(self_type_fields) {
        let (Some([func, bound_to]), Some([func_type, code])) = (bound, func_fields) else { continue };
        // A bound built-in or callable object has no code to group by.
        if Some(func_type) != watched.function_type {
            continue;
        }
        let self_type = match (bound_to, self_type) {
            (0, _) => 0,
            (_, Some([t])) => t,
            (_, None) => continue,
        };
        let t = tallies.entry(code).or_default();
        t.bound_methods += 1;
        if t.function == 0 {
            t.function = func;
        }
        *self_types.entry((code, self_type)).or_insert(0) += 1;
    }

    // The groups ranked by size; those tied with the last one listed are named up to a bound
    // (by code address), and listed by name among themselves.
    let mut ranked: Vec<(u64, CodeTally)> = tallies.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
    let cutoff = ranked.get(TOP_FUNCTION_GROUPS - 1).map_or(0, |(_, t)| t.total());
    let named = ranked.iter().filter(|(_, t)| t.total() > cutoff).count();
    ranked.truncate(named + MAX_TIED_NAMED);
    let mut by_code: FxHashMap<u64, Vec<(u64, u64)>> = FxHashMap::default();
    for ((code, self_type), n) in self_types {
        by_code.entry(code).or_default().push((self_type, n));
    }
    let mut type_names = TypeNames::default();
    let mut list = Vec::new();
    for (code, t) in ranked {
        let Ok(mut group) = name_group(mem, process, f, t.function, code) else { continue };
        group.functions = t.functions;
        group.closures = t.closures;
        group.bound_methods = t.bound_methods;
        if t.closure != 0 {
            // One closure says what they all capture (the same variables; the values' types
            // may differ, the first one read stands for them).
            group.captures = captures(mem, process, f, code, t.closure, &mut type_names).unwrap_or_default();
        }
        let mut types = by_code.remove(&code).unwrap_or_default();
        types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (self_type, count) in types.into_iter().take(TOP_SELF_TYPES) {
            if let Some(name) = type_names.get(mem, process, self_type) {
                group.self_types.push(SelfType { name, count });
            }
        }
        list.push(group);
    }
    list.sort_by(|a, b| {
        (b.functions + b.bound_methods)
            .cmp(&(a.functions + a.bound_methods))
            .then_with(|| (&a.qualname, &a.file, a.line).cmp(&(&b.qualname, &b.file, b.line)))
    });
    list.truncate(TOP_FUNCTION_GROUPS);
    list
}

/// Objects read per batch: a few hundred KiB of fields at most.
const FIELDS_BATCH: usize = 4096;

/// The 64-bit `fields` (offsets) of each object at `addrs` (0 for none: `None`), read in
/// batched requests rather than through the cache: the objects are scattered over the heap,
/// and filling a cache block for each of tens of thousands of them cost more than the census
/// itself on a real library heap. `None` for an object whose fields could not be read.
fn read_fields<const N: usize>(mem: &mut dyn RemoteMemory, addrs: &[u64], fields: [usize; N]) -> Vec<Option<[u64; N]>> {
    let (Some(&lo), Some(&hi)) = (fields.iter().min(), fields.iter().max()) else {
        return vec![None; addrs.len()];
    };
    let len = hi - lo + 8;
    let mut out = Vec::with_capacity(addrs.len());
    let mut buf = vec![0u8; FIELDS_BATCH * len];
    for batch in addrs.chunks(FIELDS_BATCH) {
        let starts: Vec<u64> = batch.iter().map(|&a| a.wrapping_add(lo as u64)).collect();
        let pieces = &mut buf[..batch.len() * len];
        let whole = mem.read_scattered(&starts, len, pieces).unwrap_or_else(|_| vec![false; batch.len()]);
        for (k, (&addr, ok)) in batch.iter().zip(whole).enumerate() {
            let piece = &pieces[k * len..(k + 1) * len];
            out.push((addr != 0 && ok).then(|| fields.map(|off| u64_at(piece, off - lo))));
        }
    }
    out
}

/// Type names by type address, each read once.
#[derive(Default)]
struct TypeNames(FxHashMap<u64, Option<String>>);

impl TypeNames {
    fn get(&mut self, mem: &mut dyn RemoteMemory, process: &PythonProcess, type_addr: u64) -> Option<String> {
        if type_addr == 0 {
            return None;
        }
        self.0.entry(type_addr).or_insert_with(|| type_name(mem, &process.layout, type_addr).ok()).clone()
    }
}

/// The variables a closure captured: the code's free variable names paired with the cells of
/// its `__closure__` tuple, and the type of what each cell holds.
fn captures(
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    f: &FunctionLayout,
    code: u64,
    closure: u64,
    type_names: &mut TypeNames,
) -> Result<Vec<Capture>, ReadError> {
    let l = &process.layout;
    let n = mem.read_u64(closure + l.containers.ob_size as u64)?;
    if n > MAX_CAPTURES {
        return Ok(Vec::new());
    }
    let cells = mem.read_words(closure + l.graph.tuple_ob_item as u64, n as usize)?;
    let names = free_variable_names(mem, l, code, n)?;
    let mut out = Vec::new();
    for (cell, name) in cells.into_iter().zip(names) {
        let Some(name) = read_str(mem, l, name)? else { continue };
        let value = if cell == 0 { 0 } else { mem.read_u64(cell + f.cell_contents as u64)? };
        let type_addr = if value == 0 { 0 } else { mem.read_u64(value + l.object.ob_type as u64)? };
        let type_name = type_names.get(mem, process, type_addr);
        out.push(Capture { name, type_name });
    }
    Ok(out)
}

/// Of `objects` (functions, or bound methods with `bound`), those that run the code named by
/// `qualname`, `file` and `line`: what a closure or listener leak is made of, rather than every
/// function of the process. Objects that cannot be read are left out.
pub fn running_code(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    objects: &[u64],
    bound: bool,
    (qualname, file, line): (&str, &str, u64),
) -> Vec<u64> {
    let Some(f) = &process.layout.functions else { return Vec::new() };
    // Each code is named once.
    let mut wanted: FxHashMap<u64, bool> = FxHashMap::default();
    objects
        .iter()
        .copied()
        .filter(|&object| {
            let code = (|| -> Result<(u64, u64), ReadError> {
                let func = if bound { mem.read_u64(object + f.im_func as u64)? } else { object };
                Ok((func, mem.read_u64(func + f.func_code as u64)?))
            })();
            code.is_ok_and(|(func, code)| {
                *wanted.entry(code).or_insert_with(|| {
                    name_group(mem, process, f, func, code)
                        .is_ok_and(|g| g.qualname == qualname && g.file == file && g.line == line)
                })
            })
        })
        .collect()
}

/// A group's name and location: the qualified name from a function running the code (code
/// objects have one only from 3.11), the file and first line from the code.
fn name_group(
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    f: &FunctionLayout,
    func: u64,
    code: u64,
) -> Result<FunctionGroup, ReadError> {
    let l = &process.layout;
    let name_ptr = mem.read_u64(func + f.func_qualname as u64)?;
    let location = code_location(mem, l, code)?;
    Ok(FunctionGroup {
        qualname: read_str(mem, l, name_ptr)?.unwrap_or_else(|| "?".into()),
        file: location.file,
        line: location.first_line,
        ..FunctionGroup::default()
    })
}
