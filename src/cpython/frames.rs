//! Threads' call stacks, read from outside: the roots of the heap graph besides the module
//! globals. An object that only a running function's local variable holds is reachable from
//! no module, and its refcount is not explained by any object in the heap; naming the frame
//! and the variable is the answer to "who holds it".

use super::layout::{CurrentFrame, FrameLayout, Layout, StackTop};
use super::objects::{CodeLocation, code_location, type_name};
use super::process::{Interpreter, PythonProcess, read_error};
use crate::error::LeakspyError;
use crate::memory::{ReadError, RemoteMemory};
use std::ops::Range;

/// Frames read per thread: deeper is a torn `previous` chain (CPython's default recursion
/// limit is 1,000).
const MAX_DEPTH: usize = 10_000;
/// Local and stack slots of one frame: more is a torn count.
const MAX_SLOTS: u64 = 1 << 16;

/// One frame of a thread's stack.
#[derive(Debug, Clone)]
pub struct StackFrame {
    /// The id of the interpreter whose thread runs it.
    pub interpreter: i64,
    /// The kernel's thread id where the version records it, else Python's thread ident.
    pub thread: u64,
    /// The thread state the stack was read from.
    pub tstate: u64,
    /// The frame's code object.
    pub code: u64,
    /// Where the frame is: the frame object (3.6-3.10) or the interpreter frame (3.11+).
    pub addr: u64,
    pub function: String,
    pub file: String,
    pub first_line: u64,
    /// 3.6-3.10: the PyFrameObject, a GC-tracked object whose own references are the locals.
    pub frame_object: Option<u64>,
    /// 3.11+: what the frame holds, since the frame is not an object.
    pub slots: Vec<FrameSlot>,
}

/// A reference held by a frame: a named local (or cell) variable or a value-stack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSlot {
    pub value: u64,
    /// The variable's name (a str object), or 0 for a value-stack entry or `f_locals`.
    pub name: u64,
    pub kind: SlotKind,
    /// False for 3.14+ stack references that do not own a reference (deferred or borrowed):
    /// they keep nothing alive and do not count in the refcount.
    pub owned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Local,
    Stack,
    FLocals,
}

/// Every frame of every thread of every interpreter, innermost first per thread, and how
/// many threads were skipped (exited under the read).
pub fn thread_stacks(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    interpreters: &[Interpreter],
) -> Result<(Vec<StackFrame>, u64), LeakspyError> {
    let l = &process.layout;
    let Some(frames) = &l.frames else { return Ok((Vec::new(), 0)) };
    let mut out = Vec::new();
    let mut skipped = 0;
    for interp in interpreters {
        let listed = process.thread_states(mem, interp)?;
        skipped += listed.skipped;
        for tstate in listed.states {
            let thread = match l.threads.native_thread_id {
                Some(off) => mem.read_u64(tstate + off as u64),
                None => mem.read_u64(tstate + l.threads.thread_id as u64),
            };
            let thread = match thread {
                Ok(thread) => thread,
                Err(e) if e.is_torn() => {
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(read_error(process.pid, e)),
            };
            // A frame that cannot be read (the thread moved on mid-read) ends that thread's
            // stack, not the whole answer.
            let first = out.len();
            let _ = read_stack(mem, l, frames, tstate, thread, &mut out);
            for frame in &mut out[first..] {
                frame.interpreter = interp.id;
            }
        }
    }
    Ok((out, skipped))
}

fn read_stack(
    mem: &mut dyn RemoteMemory,
    l: &Layout,
    frames: &FrameLayout,
    tstate: u64,
    thread: u64,
    out: &mut Vec<StackFrame>,
) -> Result<(), ReadError> {
    let mut frame = match *frames {
        FrameLayout::Objects { tstate_frame, .. } => mem.read_u64(tstate + tstate_frame as u64)?,
        FrameLayout::Interpreter { current_frame: CurrentFrame::Direct(off), .. } => {
            mem.read_u64(tstate + off as u64)?
        }
        FrameLayout::Interpreter { current_frame: CurrentFrame::ViaCFrame { cframe, current_frame }, .. } => {
            match mem.read_u64(tstate + cframe as u64)? {
                0 => 0,
                cframe => mem.read_u64(cframe + current_frame as u64)?,
            }
        }
    };
    // Every frame followed, shims included: a `previous` link back to one of them is a torn
    // (or crafted) loop, and the stack ends there.
    let mut followed = rustc_hash::FxHashSet::default();
    while frame != 0 && followed.len() < MAX_DEPTH && followed.insert(frame) {
        let (code, next, frame_object) = match *frames {
            FrameLayout::Objects { f_back, f_code, .. } => {
                (mem.read_u64(frame + f_code as u64)?, mem.read_u64(frame + f_back as u64)?, Some(frame))
            }
            // 3.14+ holds the code as a tagged stack reference; objects are 16-byte aligned.
            FrameLayout::Interpreter { previous, code, .. } => {
                (mem.read_u64(frame + code as u64)? & !7, mem.read_u64(frame + previous as u64)?, None)
            }
        };
        // 3.11+ shim and trampoline frames (entry frames, C-stack frames) carry no code
        // object or one with no locals: skipped, their `previous` followed.
        if code != 0 && is_code(mem, l, code)? {
            let CodeLocation { name: function, file, first_line } = code_location(mem, l, code)?;
            let slots = match frame_object {
                Some(_) => Vec::new(),
                None => interpreter_frame_slots(mem, l, frames, frame, code)?,
            };
            out.push(StackFrame {
                interpreter: 0,
                thread,
                tstate,
                code,
                addr: frame,
                function,
                file,
                first_line,
                frame_object,
                slots,
            });
        }
        frame = next;
    }
    Ok(())
}

fn is_code(mem: &mut dyn RemoteMemory, l: &Layout, addr: u64) -> Result<bool, ReadError> {
    let ob_type = mem.read_u64(addr + l.object.ob_type as u64)?;
    Ok(ob_type != 0 && type_name(mem, l, ob_type)? == "code")
}

/// A 3.11+ frame's locals (named by co_localsplusnames), its value stack and its f_locals.
fn interpreter_frame_slots(
    mem: &mut dyn RemoteMemory,
    l: &Layout,
    frames: &FrameLayout,
    frame: u64,
    code: u64,
) -> Result<Vec<FrameSlot>, ReadError> {
    Ok(interpreter_frame_locals(mem, l, frames, frame, code)?.0)
}

/// 3.11+ generators, coroutines and async generators keep their frame inside the object:
/// its locals and value stack, and the byte range of the object they were read from (so that
/// the conservative scan of the rest does not count them again).
pub fn generator_frame_slots(
    mem: &mut dyn RemoteMemory,
    l: &Layout,
    generator: u64,
) -> Result<(Vec<FrameSlot>, Range<u64>), ReadError> {
    let (Some(frames @ FrameLayout::Interpreter { code, localsplus, .. }), Some(gi_iframe)) =
        (&l.frames, l.sizes.gen_gi_iframe)
    else {
        return Ok((Vec::new(), 0..0));
    };
    let frame = generator + gi_iframe as u64;
    let code_addr = mem.read_u64(frame + *code as u64)? & !7;
    if code_addr == 0 || !is_code(mem, l, code_addr)? {
        return Ok((Vec::new(), 0..0));
    }
    let (mut slots, used) = interpreter_frame_locals(mem, l, frames, frame, code_addr)?;
    slots.retain(|s| s.kind != SlotKind::FLocals);
    let start = (gi_iframe + *localsplus) as u64;
    Ok((slots, start..start + 8 * used))
}

/// A 3.11+ frame's slots and how many words of localsplus were read.
fn interpreter_frame_locals(
    mem: &mut dyn RemoteMemory,
    l: &Layout,
    frames: &FrameLayout,
    frame: u64,
    code: u64,
) -> Result<(Vec<FrameSlot>, u64), ReadError> {
    let FrameLayout::Interpreter {
        f_locals,
        localsplus,
        stack_top,
        co_nlocalsplus,
        co_localsplusnames,
        co_stacksize,
        ..
    } = *frames
    else {
        return Ok((Vec::new(), 0));
    };
    let nlocals = u64::from(mem.read_u32(code + co_nlocalsplus as u64)?);
    let stack_size = u64::from(mem.read_u32(code + co_stacksize as u64)?);
    let base = frame + localsplus as u64;
    // The stack top is saved when the frame calls out (where a blocked thread always is);
    // a value outside [locals, locals + stacksize] means it was not, and only locals are read.
    let top = match stack_top {
        StackTop::Index(off) => (mem.read_u32(frame + off as u64)? as i32) as i64,
        StackTop::Pointer(off) => {
            let pointer = mem.read_u64(frame + off as u64)?;
            if pointer < base { -1 } else { ((pointer - base) / 8) as i64 }
        }
    };
    let used = if top >= nlocals as i64 && top as u64 <= nlocals + stack_size { top as u64 } else { nlocals };
    if used > MAX_SLOTS {
        return Ok((Vec::new(), 0));
    }
    let words = mem.read_words(base, used as usize)?;
    let names = tuple_at(mem, l, code + co_localsplusnames as u64, nlocals)?;
    let mut slots = Vec::new();
    for (k, word) in words.into_iter().enumerate() {
        // 3.14+ tags stack references in the low bits: 0 owns a reference, 1 does not, 2 and
        // 3 are not pointers (3.15 tagged ints). Older versions store plain pointers.
        let (value, owned) = match word & 3 {
            0 => (word, true),
            1 => (word & !3, false),
            _ => continue,
        };
        if value == 0 {
            continue;
        }
        let (name, kind) = match names.get(k) {
            Some(&name) => (name, SlotKind::Local),
            None => (0, SlotKind::Stack),
        };
        slots.push(FrameSlot { value, name, kind, owned });
    }
    let locals_dict = mem.read_u64(frame + f_locals as u64)?;
    if locals_dict != 0 {
        slots.push(FrameSlot { value: locals_dict, name: 0, kind: SlotKind::FLocals, owned: true });
    }
    Ok((slots, used))
}

/// A 3.6-3.10 frame object's locals, cells and free variables, named.
pub fn object_frame_slots(mem: &mut dyn RemoteMemory, l: &Layout, frame: u64) -> Result<Vec<FrameSlot>, ReadError> {
    let Some(FrameLayout::Objects { f_code, f_localsplus, co_nlocals, co_varnames, co_cellvars, co_freevars, .. }) =
        l.frames
    else {
        return Ok(Vec::new());
    };
    let code = mem.read_u64(frame + f_code as u64)?;
    let mut names = tuple_at(mem, l, code + co_varnames as u64, MAX_SLOTS)?;
    names.truncate(u64::from(mem.read_u32(code + co_nlocals as u64)?) as usize);
    for tuple_off in [co_cellvars, co_freevars] {
        names.extend(tuple_at(mem, l, code + tuple_off as u64, MAX_SLOTS)?);
    }
    Ok(mem
        .read_words(frame + f_localsplus as u64, names.len())?
        .into_iter()
        .zip(names)
        .filter(|(value, _)| *value != 0)
        .map(|(value, name)| FrameSlot { value, name, kind: SlotKind::Local, owned: true })
        .collect())
}

/// The names (str objects) of a code object's free variables, the last `count` of them: the
/// variables a closure over this code captures, in the order of its `__closure__` cells.
/// 3.6-3.10 keep them in co_freevars; 3.11+ at the end of co_localsplusnames.
pub fn free_variable_names(
    mem: &mut dyn RemoteMemory,
    l: &Layout,
    code: u64,
    count: u64,
) -> Result<Vec<u64>, ReadError> {
    let mut names = match l.frames {
        Some(FrameLayout::Objects { co_freevars, .. }) => tuple_at(mem, l, code + co_freevars as u64, MAX_SLOTS)?,
        Some(FrameLayout::Interpreter { co_nlocalsplus, co_localsplusnames, .. }) => {
            let n = u64::from(mem.read_u32(code + co_nlocalsplus as u64)?);
            tuple_at(mem, l, code + co_localsplusnames as u64, n.min(MAX_SLOTS))?
        }
        None => Vec::new(),
    };
    if names.len() as u64 >= count {
        Ok(names.split_off(names.len() - count as usize))
    } else {
        // A torn or foreign code object: the names cannot be matched to the cells.
        Ok(Vec::new())
    }
}

/// The items (at most `max`) of the tuple a field at `field` points to; empty for NULL.
fn tuple_at(mem: &mut dyn RemoteMemory, l: &Layout, field: u64, max: u64) -> Result<Vec<u64>, ReadError> {
    let tuple = mem.read_u64(field)?;
    if tuple == 0 {
        return Ok(Vec::new());
    }
    let len = mem.read_u64(tuple + l.containers.ob_size as u64)?.min(max);
    mem.read_words(tuple + l.graph.tuple_ob_item as u64, len as usize)
}
