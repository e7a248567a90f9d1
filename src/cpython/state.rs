//! Interpreter state beyond the heap: GC settings and statistics, `gc.garbage`, and each
//! thread with the tracing and profiling hooks set on it. Each of these marks a known cause
//! of leaks, and each can be read from outside.

use super::layout::{GcStatsLayout, GcStatsPlacement};
use super::objects::{MODULES_LOOKUP_ENTRIES, dict_get, read_str, type_name};
use super::process::{GcState, Interpreter, PythonProcess, read_error};
use crate::error::LeakspyError;
use crate::memory::{ReadError, RemoteMemory};
use serde::{Deserialize, Serialize};

/// `gc.garbage` items whose types are listed (the length is always exact).
const MAX_GARBAGE_ITEMS_READ: u64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationState {
    pub generation: String,
    /// Collect when `count` exceeds this (gc.get_threshold()).
    pub threshold: i64,
    /// Allocations (gen 0) or collections of the younger generation (gen 1, 2) since the last
    /// collection of this one (gc.get_count()).
    pub count: i64,
    /// gc.get_stats(): collections run, objects collected, uncollectable objects found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncollectable: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GcInfo {
    pub interpreter: i64,
    /// False after gc.disable() or gc.set_threshold(0): cycles are never collected. (3.6 has
    /// no readable flag; there it is inferred from the young generation's count.)
    pub enabled: bool,
    pub collecting: bool,
    pub generations: Vec<GenerationState>,
    /// len(gc.garbage), and its items per type (from at most 10,000 of them).
    pub garbage: u64,
    pub garbage_types: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hook {
    /// "python" for a Python function or callable object, "c" for a C-level hook
    /// (coverage's C tracer, profilers written in C).
    pub kind: String,
    /// The Python callable's type and qualified name where it can be read.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThreadInfo {
    pub interpreter: i64,
    pub thread_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_thread_id: Option<u64>,
    /// The kernel's name for the thread (/proc/PID/task/TID/comm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// sys.settrace()
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Hook>,
    /// sys.setprofile()
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Hook>,
}

fn i32_at(mem: &mut dyn RemoteMemory, addr: u64) -> Result<i64, ReadError> {
    Ok(mem.read_u32(addr)? as i32 as i64)
}

/// Reads the GC settings and statistics of each GC state.
pub fn gc_info(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
    states: &[GcState],
) -> Result<Vec<GcInfo>, LeakspyError> {
    let gc = &process.layout.gc;
    let err = |e| read_error(process.pid, e);
    let mut out = Vec::new();
    for state in states {
        let mut generations = Vec::new();
        for (i, list) in state.lists.iter().enumerate().take(gc.generation_count) {
            let generation = list.head - gc.generation_head as u64;
            let mut g = GenerationState {
                generation: list.generation.clone(),
                threshold: i32_at(mem, generation + gc.generation_threshold as u64).map_err(err)?,
                count: i32_at(mem, generation + gc.generation_count_field as u64).map_err(err)?,
                collections: None,
                collected: None,
                uncollectable: None,
            };
            if let Some(stats) = &gc.stats {
                let at = stats_entry(mem, state.base, stats, i).map_err(err)?;
                g.collections = Some(mem.read_u64(at + stats.collections as u64).map_err(err)? as i64);
                g.collected = Some(mem.read_u64(at + stats.collected as u64).map_err(err)? as i64);
                g.uncollectable = Some(mem.read_u64(at + stats.uncollectable as u64).map_err(err)? as i64);
            }
            generations.push(g);
        }
        // gc.set_threshold(0) turns automatic collection off as surely as gc.disable().
        let young = generations.first().map_or((0, 1), |g| (g.count, g.threshold));
        let enabled = young.1 > 0
            && match gc.enabled {
                Some(off) => i32_at(mem, state.base + off as u64).map_err(err)? != 0,
                // 3.6 keeps the flag in a static; but an enabled collector runs as soon as the
                // young generation's count passes its threshold, so a count far past it means
                // the collector is off.
                None => young.0 <= 2 * young.1,
            };
        let list = match gc.garbage {
            Some(off) => mem.read_u64(state.base + off as u64).map_err(err)?,
            None => garbage_from_gc_module(process, mem, interpreters).map_err(err)?,
        };
        let (garbage, garbage_types) = list_item_types(process, mem, list).map_err(err)?;
        out.push(GcInfo {
            interpreter: state.interpreter_id,
            enabled,
            collecting: state.collecting,
            generations,
            garbage,
            garbage_types,
        });
    }
    Ok(out)
}

/// Address of generation `generation`'s statistics entry.
fn stats_entry(
    mem: &mut dyn RemoteMemory,
    state: u64,
    stats: &GcStatsLayout,
    generation: usize,
) -> Result<u64, ReadError> {
    Ok(match stats.placement {
        GcStatsPlacement::Array { offset } => state + (offset + generation * stats.entry_size) as u64,
        GcStatsPlacement::Rings { pointer, young_items, young_index, old_items, old_index, old_stride } => {
            let rings = mem.read_u64(state + pointer as u64)?;
            let (items, index) = match generation {
                0 => (young_items, young_index),
                g => (old_items + (g - 1) * old_stride, old_index + (g - 1) * old_stride),
            };
            let newest = mem.read_u8(rings + index as u64)? as i8;
            rings + items as u64 + (newest.max(0) as usize * stats.entry_size) as u64
        }
    })
}

/// `sys.modules['gc'].garbage` of the main interpreter, or NULL if gc was never imported
/// (then nothing can have put anything in gc.garbage).
fn garbage_from_gc_module(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
) -> Result<u64, ReadError> {
    let c = &process.layout.containers;
    let (Some(main), Some(modules_off)) = (interpreters.first(), c.interp_modules) else { return Ok(0) };
    let modules = mem.read_u64(main.addr + modules_off as u64)?;
    let Some(gc_module) = dict_get(mem, &process.layout, modules, "gc", MODULES_LOOKUP_ENTRIES)? else { return Ok(0) };
    let namespace = mem.read_u64(gc_module + c.module_dict as u64)?;
    Ok(dict_get(mem, &process.layout, namespace, "garbage", MODULES_LOOKUP_ENTRIES)?.unwrap_or(0))
}

/// The length of a list object and its items per type name (from the first items).
fn list_item_types(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    list: u64,
) -> Result<(u64, Vec<(String, u64)>), ReadError> {
    if list == 0 {
        return Ok((0, Vec::new()));
    }
    let c = &process.layout.containers;
    let len = mem.read_u64(list + c.ob_size as u64)?;
    let items = mem.read_u64(list + c.list_ob_item as u64)?;
    let mut types: Vec<(String, u64)> = Vec::new();
    for i in 0..len.min(MAX_GARBAGE_ITEMS_READ) {
        // An item removed from the list under the read (the program emptying gc.garbage) is
        // left out of the per-type counts; the length stays as read.
        let name = (|| -> Result<String, ReadError> {
            let item = mem.read_u64(items + 8 * i)?;
            let ob_type = mem.read_u64(item + process.layout.object.ob_type as u64)?;
            type_name(mem, &process.layout, ob_type)
        })();
        let name = match name {
            Ok(name) => name,
            Err(e) if e.is_torn() => continue,
            Err(e) => return Err(e),
        };
        match types.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => types.push((name, 1)),
        }
    }
    types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok((len, types))
}

/// Every thread of every interpreter, with its hooks, and how many threads were skipped:
/// threads exit while we read them, and one that is gone by the time its fields are read is
/// left out, not an error.
pub fn threads(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
) -> Result<(Vec<ThreadInfo>, u64), LeakspyError> {
    let l = &process.layout;
    let t = &l.threads;
    let mut out = Vec::new();
    let mut skipped = 0;
    for interp in interpreters {
        let listed = process.thread_states(mem, interp)?;
        skipped += listed.skipped;
        for tstate in listed.states {
            let read = (|| -> Result<ThreadInfo, ReadError> {
                let native_thread_id = match t.native_thread_id {
                    Some(off) => Some(mem.read_u64(tstate + off as u64)?),
                    None => None,
                };
                // A core's threads are not this machine's: no name to read.
                let name = native_thread_id
                    .filter(|_| process.live)
                    .and_then(|tid| std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", process.pid)).ok())
                    .map(|n| n.trim().to_string());
                Ok(ThreadInfo {
                    interpreter: interp.id,
                    thread_id: mem.read_u64(tstate + t.thread_id as u64)?,
                    native_thread_id,
                    name,
                    trace: hook(process, mem, tstate, t.c_tracefunc, t.c_traceobj)?,
                    profile: hook(process, mem, tstate, t.c_profilefunc, t.c_profileobj)?,
                })
            })();
            match read {
                Ok(info) => out.push(info),
                Err(e) if e.is_torn() => skipped += 1,
                Err(e) => return Err(read_error(process.pid, e)),
            }
        }
    }
    Ok((out, skipped))
}

/// A hook is set when its C function pointer is; sys.settrace/setprofile install CPython's
/// own trampoline with the Python callable as the object argument.
fn hook(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    tstate: u64,
    func_off: usize,
    obj_off: usize,
) -> Result<Option<Hook>, ReadError> {
    if mem.read_u64(tstate + func_off as u64)? == 0 {
        return Ok(None);
    }
    let obj = mem.read_u64(tstate + obj_off as u64)?;
    if obj == 0 {
        return Ok(Some(Hook { kind: "c".into(), name: "a C-level hook".into() }));
    }
    Ok(Some(Hook { kind: "python".into(), name: callable_name(process, mem, obj)? }))
}

/// "function app.tracing.trace_calls" or just the type for other callables.
pub fn callable_name(process: &PythonProcess, mem: &mut dyn RemoteMemory, obj: u64) -> Result<String, ReadError> {
    let ob_type = mem.read_u64(obj + process.layout.object.ob_type as u64)?;
    let type_name = type_name(mem, &process.layout, ob_type)?;
    if let (Some(f), "function") = (&process.layout.functions, type_name.as_str()) {
        let qualname_ptr = mem.read_u64(obj + f.func_qualname as u64)?;
        let qualname = read_str(mem, &process.layout, qualname_ptr)?;
        return Ok(format!("function {}", qualname.unwrap_or_else(|| "?".into())));
    }
    Ok(format!("{type_name} object"))
}
