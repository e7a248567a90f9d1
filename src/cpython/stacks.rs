//! What each thread is doing: its Python stack with the line each frame is at, which thread
//! holds the GIL, and (on request) each frame's locals with their types and sizes.
//!
//! The line comes from the frame's current instruction and its code object's line table,
//! whose format changed twice (co_lnotab up to 3.9, 3.10's co_linetable, the 3.11+ location
//! table); the layout layer says which one a version has. Tables and offsets are read from
//! the target and bounded; a table that does not decode gives no line, never a guess.

use super::frames::{StackFrame, thread_stacks};
use super::layout::{
    GilLocation, InstanceAttributes, InstructionPosition, Layout, LineTableFormat, ManagedValues, StackLayout,
};
use super::objects::{
    MODULES_LOOKUP_ENTRIES, NAMESPACE_LOOKUP_ENTRIES, base_chain, dict_entries, dict_get, keys_entries, read_str,
    split_values, type_name,
};
use super::process::{Interpreter, PythonProcess};
use super::sizes::{SizeClass, shallow_size, size_rule};
use super::state::ThreadInfo;
use crate::error::LeakspyError;
use crate::memory::{ReadError, RemoteMemory};
use serde::{Deserialize, Serialize};

/// Line tables longer than this are torn or crafted (a function of 100,000 lines has a table
/// of a few hundred KB).
const MAX_LINE_TABLE: u64 = 4 << 20;
/// Locals listed per frame.
const MAX_LOCALS: usize = 256;

/// One thread's stack, outermost frame first, innermost last (as a traceback prints it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThreadStack {
    pub interpreter: i64,
    pub thread_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_thread_id: Option<u64>,
    /// The kernel's name for the thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// threading's name for it (`threading.Thread.name`), where the thread was started by
    /// threading (or is the main thread) and the module is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_name: Option<String>,
    /// This thread held the GIL when it was read.
    pub holds_gil: bool,
    pub frames: Vec<FrameInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameInfo {
    pub function: String,
    pub file: String,
    /// The line being run; `None` where the line table did not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub first_line: u64,
    /// With `--locals`: the frame's local variables that are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locals: Option<Vec<LocalInfo>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// sys.getsizeof of the value (its own bytes, not what it refers to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Every thread's stack, in the order of `threads`, and how many threads were skipped.
pub fn read_stacks(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
    threads: &[ThreadInfo],
    with_locals: bool,
) -> Result<(Vec<ThreadStack>, u64), LeakspyError> {
    let l = &process.layout;
    let (frames, skipped) = thread_stacks(process, mem, interpreters)?;
    let holder = gil_holder(process, mem, interpreters).ok().flatten();
    let holder_id = holder.and_then(|tstate| mem.read_u64(tstate + l.threads.thread_id as u64).ok());
    // Names are a nicety: a threading module that cannot be read leaves them out.
    let python_names = python_thread_names(process, mem, interpreters).unwrap_or_default();
    let mut out = Vec::new();
    for t in threads {
        // Frames name their thread by the kernel's id where the version records it.
        let key = if l.threads.native_thread_id.is_some() { t.native_thread_id } else { Some(t.thread_id) };
        let mut infos: Vec<FrameInfo> = frames
            .iter()
            // 3.12+ entry frames run a trampoline code object named after no source file
            // (`<shim>`): not the program's code, and tracebacks do not show it.
            .filter(|f| Some(f.thread) == key && f.file != "<shim>")
            .map(|f| FrameInfo {
                function: f.function.clone(),
                file: f.file.clone(),
                line: l.stacks.as_ref().and_then(|s| current_line(mem, l, s, f)),
                first_line: f.first_line,
                locals: with_locals.then(|| frame_locals(mem, l, f)),
            })
            .collect();
        // Read innermost first; shown innermost last.
        infos.reverse();
        out.push(ThreadStack {
            interpreter: t.interpreter,
            thread_id: t.thread_id,
            native_thread_id: t.native_thread_id,
            name: t.name.clone(),
            python_name: python_names.iter().find(|(ident, _)| *ident == t.thread_id).map(|(_, n)| n.clone()),
            holds_gil: holder_id == Some(t.thread_id),
            frames: infos,
        });
    }
    Ok((out, skipped))
}

/// Threads listed from `threading._active` at most.
const MAX_THREADING_ENTRIES: u64 = 10_000;

/// (ident, name) of the threads threading knows: `sys.modules['threading']._active` maps each
/// thread's ident to its Thread object, whose `_name` attribute is the name.
fn python_thread_names(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
) -> Result<Vec<(u64, String)>, ReadError> {
    let l = &process.layout;
    let c = &l.containers;
    let (Some(main), Some(modules_off)) = (interpreters.first(), c.interp_modules) else { return Ok(Vec::new()) };
    let modules = mem.read_u64(main.addr + modules_off as u64)?;
    let Some(threading) = dict_get(mem, l, modules, "threading", MODULES_LOOKUP_ENTRIES)? else {
        return Ok(Vec::new());
    };
    let namespace = mem.read_u64(threading + c.module_dict as u64)?;
    let Some(active) = dict_get(mem, l, namespace, "_active", MODULES_LOOKUP_ENTRIES)? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for (key, thread) in dict_entries(mem, l, active)?.into_iter().take(MAX_THREADING_ENTRIES as usize) {
        let Some(ident) = small_int(mem, l, key)? else { continue };
        if let Some(name) = instance_attribute(mem, l, thread, "_name")?
            && let Some(name) = read_str(mem, l, name)?
        {
            names.push((ident, name));
        }
    }
    Ok(names)
}

/// The value of a non-negative int of at most 64 bits; `None` for any other.
fn small_int(mem: &mut dyn RemoteMemory, l: &Layout, addr: u64) -> Result<Option<u64>, ReadError> {
    let s = &l.sizes;
    let (digits, negative) = match s.long_lv_tag {
        // 3.12+: the digit count above three tag bits, the sign in the low two (2: negative).
        Some(tag) => {
            let tag = mem.read_u64(addr + tag as u64)?;
            (tag >> 3, tag & 3 == 2)
        }
        None => {
            let size = mem.read_u64(addr + l.containers.ob_size as u64)? as i64;
            (size.unsigned_abs(), size < 0)
        }
    };
    if negative || digits > 3 {
        return Ok(None);
    }
    let mut value: u128 = 0;
    for k in (0..digits).rev() {
        value = value << 30 | u128::from(mem.read_u32(addr + s.long_digits + 4 * k)? & ((1 << 30) - 1));
    }
    Ok(u64::try_from(value).ok())
}

/// An instance attribute of a plain Python object: from its `__dict__`, or from its values
/// array where the dict has not been made (3.11+, the type's cached keys naming them).
fn instance_attribute(mem: &mut dyn RemoteMemory, l: &Layout, obj: u64, name: &str) -> Result<Option<u64>, ReadError> {
    let ty = mem.read_u64(obj + l.object.ob_type as u64)?;
    let flags = mem.read_u64(ty + l.type_.tp_flags as u64)?;
    let dict = match l.graph.instance_attributes {
        InstanceAttributes::Managed { managed_flag, dict_before, values } if flags & managed_flag != 0 => {
            let slot = mem.read_u64(obj - dict_before as u64)?;
            let array = match values {
                // 3.12 stores the values pointer minus one, so that bit 0 tells it from a dict.
                ManagedValues::Tagged if slot & 1 == 1 => Some(slot + 1),
                ManagedValues::Before(before) if slot == 0 => Some(mem.read_u64(obj - before as u64)?),
                ManagedValues::Inline { inline_flag } if slot == 0 && flags & inline_flag != 0 => {
                    Some(obj + mem.read_u64(ty + l.graph.tp_basicsize as u64)?)
                }
                _ => None,
            };
            match array {
                Some(array) if array != 0 => {
                    let cached = mem.read_u64(ty + l.graph.ht_cached_keys as u64)?;
                    let keys = keys_entries(mem, l, cached)?;
                    for (key, value) in split_values(mem, l, &keys, array)? {
                        if read_str(mem, l, key)?.as_deref() == Some(name) {
                            return Ok(Some(value));
                        }
                    }
                    return Ok(None);
                }
                _ => slot,
            }
        }
        _ => match mem.read_u64(ty + l.graph.tp_dictoffset as u64)? as i64 {
            offset @ 16..=4096 => mem.read_u64(obj + offset as u64)?,
            _ => 0,
        },
    };
    if dict == 0 {
        return Ok(None);
    }
    dict_get(mem, l, dict, name, NAMESPACE_LOOKUP_ENTRIES)
}

/// The thread state holding the GIL, if it is held.
fn gil_holder(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
) -> Result<Option<u64>, ReadError> {
    let Some(gil) = process.layout.stacks.as_ref().and_then(|s| s.gil) else { return Ok(None) };
    let (locked, holder) = match gil {
        GilLocation::Statics => match (process.binary.symbol("gil_locked"), process.binary.symbol("gil_last_holder")) {
            (Some(locked), Some(holder)) => (locked, holder),
            _ => return Ok(None),
        },
        GilLocation::Runtime { locked, last_holder } => match process.runtime() {
            Some(runtime) => (runtime + locked as u64, runtime + last_holder as u64),
            None => return Ok(None),
        },
        GilLocation::Interpreter { pointer, locked, last_holder } => {
            let Some(main) = interpreters.iter().find(|i| i.id == 0).or(interpreters.first()) else {
                return Ok(None);
            };
            match mem.read_u64(main.addr + pointer as u64)? {
                0 => return Ok(None),
                state => (state + locked as u64, state + last_holder as u64),
            }
        }
    };
    if mem.read_u32(locked)? == 0 {
        return Ok(None);
    }
    Ok(Some(mem.read_u64(holder)?).filter(|&h| h != 0))
}

/// The line `frame` is at, from its current instruction and its code's line table.
fn current_line(mem: &mut dyn RemoteMemory, l: &Layout, s: &StackLayout, frame: &StackFrame) -> Option<u64> {
    let offset = match s.position {
        InstructionPosition::Lasti { offset, unit } => {
            let lasti = mem.read_u32(frame.frame_object? + offset as u64).ok()? as i32;
            // Not started yet: at its first line.
            if lasti < 0 {
                return Some(frame.first_line);
            }
            lasti as u64 * unit
        }
        InstructionPosition::Pointer { offset, code_adaptive } => {
            let at = mem.read_u64(frame.addr + offset as u64).ok()?;
            match at.checked_sub(frame.code + code_adaptive as u64) {
                Some(bytes) => bytes,
                None => return Some(frame.first_line),
            }
        }
    };
    let table = mem.read_u64(frame.code + s.co_linetable as u64).ok()?;
    let len = mem.read_u64(table + l.containers.ob_size as u64).ok()?;
    if len > MAX_LINE_TABLE {
        return None;
    }
    let bytes = mem.read_claimed(table + s.bytes_sval as u64, len).ok()?;
    match s.format {
        LineTableFormat::Lnotab => Some(lnotab_line(&bytes, frame.first_line, offset)),
        LineTableFormat::Linetable310 => linetable310_line(&bytes, frame.first_line, offset),
        LineTableFormat::Locations => locations_line(&bytes, frame.first_line, offset / 2),
    }
}

/// 3.6-3.9: pairs of (bytecode increment, line increment), the line increment signed.
fn lnotab_line(table: &[u8], first_line: u64, offset: u64) -> u64 {
    let (mut line, mut addr) = (first_line as i64, 0u64);
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    line.max(0) as u64
}

/// 3.10: pairs of (bytes covered, line increment), -128 meaning "no line" for that range.
fn linetable310_line(table: &[u8], first_line: u64, offset: u64) -> Option<u64> {
    let (mut line, mut end) = (first_line as i64, 0u64);
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        let here = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            Some(line)
        };
        if (start..end).contains(&offset) {
            return here.and_then(|l| u64::try_from(l).ok());
        }
    }
    None
}

/// 3.11+: entries of 1-8 code units each; the first byte has the top bit set, a 4-bit kind
/// and the length; the line changes by a signed varint (long and no-column forms), by 0-2
/// (one-line forms) or not at all (short forms); kind 15 has no location.
fn locations_line(table: &[u8], first_line: u64, unit: u64) -> Option<u64> {
    let mut at = 0usize;
    let mut byte = || -> Option<u8> {
        let b = *table.get(at)?;
        at += 1;
        Some(b)
    };
    let (mut line, mut addr) = (first_line as i64, 0u64);
    let varint = |byte: &mut dyn FnMut() -> Option<u8>| -> Option<u64> {
        let mut b = byte()?;
        let (mut value, mut shift) = (u64::from(b & 63), 0);
        while b & 64 != 0 {
            b = byte()?;
            shift += 6;
            if shift > 60 {
                return None;
            }
            value |= u64::from(b & 63) << shift;
        }
        Some(value)
    };
    loop {
        let head = byte()?;
        if head & 0x80 == 0 {
            return None;
        }
        let (kind, len) = ((head >> 3) & 15, u64::from(head & 7) + 1);
        let here = match kind {
            15 => None,
            13 | 14 => {
                let raw = varint(&mut byte)?;
                line += if raw & 1 == 1 { -((raw >> 1) as i64) } else { (raw >> 1) as i64 };
                if kind == 14 {
                    for _ in 0..3 {
                        varint(&mut byte)?;
                    }
                }
                Some(line)
            }
            10..=12 => {
                line += i64::from(kind - 10);
                byte()?;
                byte()?;
                Some(line)
            }
            _ => {
                byte()?;
                Some(line)
            }
        };
        if unit < addr + len {
            return here.and_then(|l| u64::try_from(l).ok());
        }
        addr += len;
    }
}

/// The frame's locals that are set: name, type and own size.
fn frame_locals(mem: &mut dyn RemoteMemory, l: &Layout, frame: &StackFrame) -> Vec<LocalInfo> {
    let slots = match frame.frame_object {
        Some(object) => super::frames::object_frame_slots(mem, l, object).unwrap_or_default(),
        None => frame.slots.clone(),
    };
    slots
        .iter()
        .filter(|s| s.kind == super::frames::SlotKind::Local && s.name != 0)
        .take(MAX_LOCALS)
        .filter_map(|s| {
            let name = read_str(mem, l, s.name).ok().flatten()?;
            let ty = mem.read_u64(s.value + l.object.ob_type as u64).ok()?;
            let type_name = type_name(mem, l, ty).ok()?;
            Some(LocalInfo { name, type_name, size: own_size(mem, l, s.value, ty).ok() })
        })
        .collect()
}

/// sys.getsizeof of one object, from its type's size rule.
fn own_size(mem: &mut dyn RemoteMemory, l: &Layout, addr: u64, ty: u64) -> Result<u64, ReadError> {
    let bases = base_chain(mem, l, ty)?;
    let class = SizeClass {
        rule: size_rule(mem, l, &bases)?,
        flags: mem.read_u64(ty + l.type_.tp_flags as u64)?,
        basicsize: mem.read_u64(ty + l.graph.tp_basicsize as u64)?,
        itemsize: mem.read_u64(ty + l.graph.tp_itemsize as u64)?,
    };
    shallow_size(mem, l, addr, &class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_lines() {
        // Line 10 at 0, +1 line at byte 6, +2 lines at byte 14, -1 line (a loop) at byte 20.
        let table = [6, 1, 8, 2, 6, 0xff];
        let line = |offset| lnotab_line(&table, 10, offset);
        assert_eq!((line(0), line(5), line(6), line(13), line(14), line(20), line(99)), (10, 10, 11, 11, 13, 12, 12));
    }

    #[test]
    fn linetable_310_lines() {
        // Bytes 0-3 on line 10 (+0), 4-9 on line 12 (+2), 10-11 no line, 12-15 on line 11 (-1).
        let table = [4, 0, 6, 2, 2, 0x80, 4, 0xff];
        let line = |offset| linetable310_line(&table, 10, offset);
        assert_eq!(
            (line(0), line(4), line(9), line(10), line(12), line(16)),
            (Some(10), Some(12), Some(12), None, Some(11), None)
        );
    }

    #[test]
    fn location_table_lines() {
        // A short form (kind 0, 2 units, line +0), a one-line form (kind 11: +1, 1 unit), a
        // no-column form (kind 13, 3 units, line -1 as svarint 3), a long form (kind 14, 1 unit,
        // line +5 as svarint 10, then three varints, one of two bytes), no location (kind 15).
        let table = [
            0x80 | 1,
            0x05,
            0x80 | (11 << 3),
            3,
            9,
            0x80 | (13 << 3) | 2,
            3,
            0x80 | (14 << 3),
            10,
            0,
            0x41,
            0x01,
            4,
            0x80 | (15 << 3),
        ];
        let line = |unit| locations_line(&table, 20, unit);
        assert_eq!(
            (line(0), line(1), line(2), line(3), line(5), line(6), line(7), line(8)),
            (Some(20), Some(20), Some(21), Some(20), Some(20), Some(25), None, None)
        );
        assert_eq!(locations_line(&[0x05], 1, 0), None, "an entry must start with the top bit");
    }
}
