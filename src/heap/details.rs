//! A second look at a few kinds of objects the census found, where the type alone does not
//! say enough: functions (which code, does it close over anything), bound methods (of which
//! function), file and socket objects (open or closed).

use crate::cpython::frames::free_variable_names;
use crate::cpython::layout::FunctionLayout;
use crate::cpython::objects::{code_location, read_str, type_name};
use crate::cpython::process::PythonProcess;
use crate::memory::{ReadError, RemoteMemory};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Addresses kept per kind; past this, the details are about a sample and say so.
pub const MAX_WATCHED: usize = 1_000_000;
/// Function groups listed, most numerous first.
const TOP_FUNCTION_GROUPS: usize = 50;
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
        let mut groups: FxHashMap<u64, FunctionGroup> = FxHashMap::default();
        let mut type_names = TypeNames::default();
        for func in &watched.functions {
            let read = (|| -> Result<(u64, u64), ReadError> {
                let code = mem.read_u64(func + f.func_code as u64)?;
                let closure = mem.read_u64(func + f.func_closure as u64)?;
                ensure_group(&mut groups, mem, process, f, *func, code)?;
                Ok((code, closure))
            })();
            if let Ok((code, closure)) = read {
                let g = groups.get_mut(&code).expect("inserted by ensure_group");
                g.functions += 1;
                g.closures += u64::from(closure != 0);
                if closure != 0 && g.captures.is_empty() {
                    // One closure says what they all capture (the same variables; the values'
                    // types may differ, the first one read stands for them).
                    g.captures = captures(mem, process, f, code, closure, &mut type_names).unwrap_or_default();
                }
            }
        }
        let mut self_types: FxHashMap<(u64, u64), u64> = FxHashMap::default();
        for method in &watched.methods {
            let read = (|| -> Result<(u64, u64), ReadError> {
                let func = mem.read_u64(method + f.im_func as u64)?;
                let func_type = mem.read_u64(func + process.layout.object.ob_type as u64)?;
                if Some(func_type) != watched.function_type {
                    // A bound built-in or callable object: no code to group by.
                    return Err(ReadError::Implausible { addr: func, what: "a Python function" });
                }
                let code = mem.read_u64(func + f.func_code as u64)?;
                ensure_group(&mut groups, mem, process, f, func, code)?;
                let bound_to = mem.read_u64(method + f.im_self as u64)?;
                let self_type = match bound_to {
                    0 => 0,
                    addr => mem.read_u64(addr + process.layout.object.ob_type as u64)?,
                };
                Ok((code, self_type))
            })();
            if let Ok((code, self_type)) = read {
                groups.get_mut(&code).expect("inserted by ensure_group").bound_methods += 1;
                *self_types.entry((code, self_type)).or_insert(0) += 1;
            }
        }
        let mut by_code: FxHashMap<u64, Vec<(u64, u64)>> = FxHashMap::default();
        for ((code, self_type), n) in self_types {
            by_code.entry(code).or_default().push((self_type, n));
        }
        for (code, mut types) in by_code {
            types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let Some(g) = groups.get_mut(&code) else { continue };
            for (self_type, count) in types.into_iter().take(TOP_SELF_TYPES) {
                if let Some(name) = type_names.get(mem, process, self_type) {
                    g.self_types.push(SelfType { name, count });
                }
            }
        }
        let mut list: Vec<FunctionGroup> = groups.into_values().collect();
        list.sort_by(|a, b| {
            (b.functions + b.bound_methods)
                .cmp(&(a.functions + a.bound_methods))
                .then_with(|| a.qualname.cmp(&b.qualname))
        });
        list.truncate(TOP_FUNCTION_GROUPS);
        details.functions = list;
    }
    details
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

/// Reads the name and location of the code object at `code` once. The qualified name comes
/// from the function (code objects have one only from 3.11).
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
    let mut groups: FxHashMap<u64, FunctionGroup> = FxHashMap::default();
    let mut wanted: FxHashMap<u64, bool> = FxHashMap::default();
    objects
        .iter()
        .copied()
        .filter(|&object| {
            let code = (|| -> Result<u64, ReadError> {
                let func = if bound { mem.read_u64(object + f.im_func as u64)? } else { object };
                let code = mem.read_u64(func + f.func_code as u64)?;
                ensure_group(&mut groups, mem, process, f, func, code)?;
                Ok(code)
            })();
            code.is_ok_and(|code| {
                *wanted.entry(code).or_insert_with(|| {
                    groups.get(&code).is_some_and(|g| g.qualname == qualname && g.file == file && g.line == line)
                })
            })
        })
        .collect()
}

fn ensure_group(
    groups: &mut FxHashMap<u64, FunctionGroup>,
    mem: &mut dyn RemoteMemory,
    process: &PythonProcess,
    f: &FunctionLayout,
    func: u64,
    code: u64,
) -> Result<(), ReadError> {
    if groups.contains_key(&code) {
        return Ok(());
    }
    let l = &process.layout;
    let name_ptr = mem.read_u64(func + f.func_qualname as u64)?;
    let location = code_location(mem, l, code)?;
    let group = FunctionGroup {
        qualname: read_str(mem, l, name_ptr)?.unwrap_or_else(|| "?".into()),
        file: location.file,
        line: location.first_line,
        ..FunctionGroup::default()
    };
    groups.insert(code, group);
    Ok(())
}
