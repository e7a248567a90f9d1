//! A second look at a few kinds of objects the census found, where the type alone does not
//! say enough: functions (which code, does it close over anything), bound methods (of which
//! function), file and socket objects (open or closed).

use crate::cpython::layout::FunctionLayout;
use crate::cpython::objects::{code_location, read_str};
use crate::cpython::process::PythonProcess;
use crate::memory::{ReadError, RemoteMemory};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Addresses kept per kind; past this, the details are about a sample and say so.
pub const MAX_WATCHED: usize = 1_000_000;
/// Function groups listed, most numerous first.
const TOP_FUNCTION_GROUPS: usize = 50;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionGroup {
    pub qualname: String,
    pub file: String,
    pub line: u64,
    pub functions: u64,
    /// Of those, how many close over variables (have cells): closures.
    pub closures: u64,
    /// Bound methods whose function runs this code.
    pub bound_methods: u64,
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
        for func in &watched.functions {
            let read = (|| -> Result<(u64, bool), ReadError> {
                let code = mem.read_u64(func + f.func_code as u64)?;
                let closure = mem.read_u64(func + f.func_closure as u64)? != 0;
                ensure_group(&mut groups, mem, process, f, *func, code)?;
                Ok((code, closure))
            })();
            if let Ok((code, closure)) = read {
                let g = groups.get_mut(&code).expect("inserted by ensure_group");
                g.functions += 1;
                g.closures += u64::from(closure);
            }
        }
        for method in &watched.methods {
            let read = (|| -> Result<u64, ReadError> {
                let func = mem.read_u64(method + f.im_func as u64)?;
                let func_type = mem.read_u64(func + process.layout.object.ob_type as u64)?;
                if Some(func_type) != watched.function_type {
                    // A bound built-in or callable object: no code to group by.
                    return Err(ReadError::Implausible { addr: func, what: "a Python function" });
                }
                let code = mem.read_u64(func + f.func_code as u64)?;
                ensure_group(&mut groups, mem, process, f, func, code)?;
                Ok(code)
            })();
            if let Ok(code) = read {
                groups.get_mut(&code).expect("inserted by ensure_group").bound_methods += 1;
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

/// Reads the name and location of the code object at `code` once. The qualified name comes
/// from the function (code objects have one only from 3.11).
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
        functions: 0,
        closures: 0,
        bound_methods: 0,
    };
    groups.insert(code, group);
    Ok(())
}
