//! What `sys.getsizeof` reports for an object, computed from outside: the object's own
//! memory as its type's `__sizeof__` counts it, plus the GC header and the other words
//! CPython keeps before it. Each rule mirrors one built-in `__sizeof__`; the fields it reads
//! and the per-version constants come from the offset tables ([`SizesLayout`]).
//!
//! Like sys.getsizeof, this is the object's own size: what it points to (a list's items, an
//! instance's values array before 3.13's inline values, a type's shared keys) is counted
//! where CPython counts it, or not at all.

use super::layout::{DictKeysFormat, FrameLayout, Layout, SizesLayout};
use super::objects::{NAMESPACE_LOOKUP_ENTRIES, StrHeader, dict_get_str, str_header, type_name};
use crate::memory::{ReadError, RemoteMemory};

const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
const TPFLAGS_HAVE_GC: u64 = 1 << 14;
/// Items of one `collections.deque` block, and the block's size (64 items, 2 links).
const DEQUE_BLOCK_ITEMS: u64 = 64;
const DEQUE_BLOCK_BYTES: u64 = 66 * 8;
/// Size of an OrderedDict's node (key, hash, prev, next).
const ODICT_NODE_BYTES: u64 = 32;

/// Which built-in `__sizeof__` an object's type uses: the first one on its base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// `object.__sizeof__`: basicsize plus itemsize times ob_size.
    Default,
    List,
    Int,
    Str,
    ByteArray,
    Dict,
    OrderedDict,
    Set,
    Type,
    Code,
    Frame,
    /// 3.11+ generators, coroutines and async generators count their embedded frame.
    Generator,
    Deque,
}

/// The rule for instances of a type, given its base chain (`base_chain`): the first type that
/// leakspy knows, unless one before it defines its own `__sizeof__` (a C extension's or a
/// Python method), whose result cannot be computed from outside: then the default rule.
pub fn size_rule(mem: &mut dyn RemoteMemory, layout: &Layout, bases: &[u64]) -> Result<SizeRule, ReadError> {
    for &t in bases {
        let rule = match type_name(mem, layout, t)?.as_str() {
            "list" => Some(SizeRule::List),
            "int" | "bool" => Some(SizeRule::Int),
            "str" => Some(SizeRule::Str),
            "bytearray" => Some(SizeRule::ByteArray),
            "dict" | "frozendict" => Some(SizeRule::Dict),
            "collections.OrderedDict" => Some(SizeRule::OrderedDict),
            "set" | "frozenset" => Some(SizeRule::Set),
            "type" => Some(SizeRule::Type),
            "code" => Some(SizeRule::Code),
            "frame" => Some(SizeRule::Frame),
            "generator" | "coroutine" | "async_generator" if layout.sizes.gen_gi_iframe.is_some() => {
                Some(SizeRule::Generator)
            }
            "collections.deque" => Some(SizeRule::Deque),
            _ => None,
        };
        if let Some(rule) = rule {
            return Ok(rule);
        }
        // Another type defining __sizeof__ (object's, an extension's, a Python method): the
        // default is what leakspy can compute.
        let dict = mem.read_u64(t + layout.type_.tp_dict as u64)?;
        if dict_get_str(mem, layout, dict, "__sizeof__", NAMESPACE_LOOKUP_ENTRIES)?.is_some() {
            return Ok(SizeRule::Default);
        }
    }
    Ok(SizeRule::Default)
}

/// What the size rules need to know of an object's type.
pub struct SizeClass {
    pub rule: SizeRule,
    pub flags: u64,
    pub basicsize: u64,
    pub itemsize: u64,
}

/// sys.getsizeof of the object at `addr`.
pub fn shallow_size(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64, t: &SizeClass) -> Result<u64, ReadError> {
    let s = &layout.sizes;
    let read = |mem: &mut dyn RemoteMemory, off: usize| mem.read_u64(addr + off as u64);
    let ob_size = |mem: &mut dyn RemoteMemory| Ok::<i64, ReadError>(read(mem, layout.containers.ob_size)? as i64);
    let own = match t.rule {
        SizeRule::Default => default_size(t, ob_size(mem)?),
        SizeRule::List => t.basicsize + 8 * read(mem, s.list_allocated)?,
        SizeRule::Int => match s.long_lv_tag {
            Some(tag) => t.basicsize + t.itemsize * (read(mem, tag)? >> 3).max(1),
            None => s.long_digits + 4 * ob_size(mem)?.unsigned_abs().max(s.int_min_digits),
        },
        SizeRule::Str => str_size(mem, layout, addr)?,
        SizeRule::ByteArray => {
            let alloc = read(mem, s.bytearray_alloc)?;
            match s.bytearray_bytes_header {
                Some(header) if alloc > 0 => t.basicsize + header + alloc,
                Some(_) => t.basicsize,
                None => t.basicsize + alloc,
            }
        }
        SizeRule::Dict => dict_size(mem, layout, addr, t.basicsize)?,
        SizeRule::OrderedDict => {
            let fast_nodes = read(mem, s.odict_fast_nodes_size)?;
            let nodes = if read(mem, s.odict_first)? != 0 { ODICT_NODE_BYTES * read(mem, s.ma_used)? } else { 0 };
            dict_size(mem, layout, addr, t.basicsize)? + 8 * fast_nodes + nodes
        }
        SizeRule::Set => {
            let table = read(mem, layout.graph.set_table)?;
            let external = table != addr + s.set_smalltable as u64;
            t.basicsize
                + if external {
                    (read(mem, layout.graph.set_mask)? + 1) * layout.graph.set_entry_size as u64
                } else {
                    0
                }
        }
        SizeRule::Type => {
            let own_flags = read(mem, layout.type_.tp_flags)?;
            if own_flags & TPFLAGS_HEAPTYPE == 0 {
                // A static type: sizeof(PyTypeObject), and a pre-header only where 3.11/3.12 add it.
                let header = if s.static_type_preheader { preheader(s, t.flags) } else { 0 };
                return Ok(s.type_size + header);
            }
            let keys = read(mem, layout.graph.ht_cached_keys)?;
            s.heaptype_size + if keys != 0 { keys_size(mem, layout, keys)? } else { 0 }
        }
        SizeRule::Code => {
            let n = ob_size(mem)?;
            code_size(mem, layout, addr, t, n)?
        }
        SizeRule::Frame => match s.frame_f_frame {
            Some(f_frame) => {
                let frame = read(mem, f_frame)?;
                t.basicsize + 8 * interpreter_frame_slots(mem, layout, frame)?
            }
            None => t.basicsize + 8 * object_frame_extras(mem, layout, addr)?.saturating_sub(1),
        },
        SizeRule::Generator => {
            let frame = addr + s.gen_gi_iframe.unwrap_or(0) as u64;
            t.basicsize + 8 * interpreter_frame_slots(mem, layout, frame)?
        }
        SizeRule::Deque => {
            let left = read(mem, s.deque_leftindex)?;
            let blocks = (left + ob_size(mem)?.unsigned_abs()).div_ceil(DEQUE_BLOCK_ITEMS);
            t.basicsize + DEQUE_BLOCK_BYTES * blocks
        }
    };
    Ok(own + preheader(s, t.flags))
}

fn default_size(t: &SizeClass, ob_size: i64) -> u64 {
    if t.itemsize == 0 {
        return t.basicsize;
    }
    // object.__sizeof__ multiplies the signed ob_size without abs().
    (t.basicsize as i64).saturating_add(ob_size.saturating_mul(t.itemsize as i64)).max(0) as u64
}

/// What sys.getsizeof adds before the object: the GC header for GC types and, from 3.11,
/// the managed dict and weakref words.
fn preheader(s: &SizesLayout, type_flags: u64) -> u64 {
    let gc = if type_flags & TPFLAGS_HAVE_GC != 0 { s.gc_head } else { 0 };
    let managed = match s.preheader_flags {
        Some(mask) if type_flags & mask != 0 => 16,
        _ => 0,
    };
    gc + managed
}

/// `_PyDict_SizeOf`: the dict, its values array if split, its keys if it owns them.
fn dict_size(mem: &mut dyn RemoteMemory, layout: &Layout, dict: u64, basicsize: u64) -> Result<u64, ReadError> {
    let d = &layout.dict;
    let s = &layout.sizes;
    let keys = mem.read_u64(dict + d.ma_keys as u64)?;
    let values = mem.read_u64(dict + d.ma_values as u64)?;
    let mut size = basicsize;
    if keys == 0 {
        return Ok(size);
    }
    if values != 0 {
        let usable = match d.format {
            DictKeysFormat::SizeField { dk_size } => mem.read_u64(keys + dk_size as u64)? * 2 / 3,
            DictKeysFormat::Log2 { .. } => {
                mem.read_u64(keys + d.dk_nentries as u64)? + mem.read_u64(keys + s.dk_usable as u64)?
            }
        };
        size += 8 * usable;
    }
    if mem.read_u64(keys + s.dk_refcnt as u64)? as i64 == 1 {
        size += keys_size(mem, layout, keys)?;
    }
    Ok(size)
}

/// `_PyDict_KeysSize`: header, index table, entries.
fn keys_size(mem: &mut dyn RemoteMemory, layout: &Layout, keys: u64) -> Result<u64, ReadError> {
    let d = &layout.dict;
    Ok(match d.format {
        DictKeysFormat::SizeField { dk_size } => {
            let n = mem.read_u64(keys + dk_size as u64)?;
            let index_width = match n {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x1_0000..=0xffff_ffff => 4,
                _ => 8,
            };
            d.dk_indices as u64 + index_width * n + d.entry_size as u64 * (n * 2 / 3)
        }
        DictKeysFormat::Log2 { dk_log2_size, dk_log2_index_bytes, dk_kind, unicode_entry_size } => {
            let mut byte = |off: usize| mem.read_u8(keys + off as u64).map(u32::from);
            let (log2_size, log2_index_bytes, kind) = (byte(dk_log2_size)?, byte(dk_log2_index_bytes)?, byte(dk_kind)?);
            if log2_size > 40 || log2_index_bytes > 43 {
                return Ok(0);
            }
            let entry = if kind == 0 { d.entry_size } else { unicode_entry_size } as u64;
            d.dk_indices as u64 + (1u64 << log2_index_bytes) + ((1u64 << log2_size) * 2 / 3) * entry
        }
    })
}

/// `unicode.__sizeof__`: the struct and its characters, and the UTF-8 (and before 3.12,
/// wchar_t) copies made on demand.
fn str_size(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64) -> Result<u64, ReadError> {
    let u = &layout.unicode;
    let s = &layout.sizes;
    let StrHeader { length, kind, compact, ascii, ready, data } = str_header(mem, layout, addr)?;
    let mut size = match (compact, ascii) {
        (true, true) => u.ascii_size as u64 + length + 1,
        (true, false) => u.compact_size as u64 + (length + 1) * kind,
        (false, _) => s.str_object_size + if data != 0 { (length + 1) * kind } else { 0 },
    };
    if let Some((wstr_off, wstr_length_off)) = s.str_wstr {
        let wstr = mem.read_u64(addr + wstr_off as u64)?;
        if wstr != 0 && (!ready || wstr != data) {
            let wstr_len = if compact && ascii { length } else { mem.read_u64(addr + wstr_length_off as u64)? };
            size += (wstr_len + 1) * 4;
        }
    }
    if !(compact && ascii) {
        let utf8 = mem.read_u64(addr + s.str_utf8 as u64)?;
        if utf8 != 0 && utf8 != data {
            size += mem.read_u64(addr + s.str_utf8_length as u64)? + 1;
        }
    }
    Ok(size)
}

/// `code.__sizeof__`: the object (3.11+ with its bytecode inline), co_extra's entries, and
/// before 3.11 the cell-to-argument map and (3.8-3.10) the opcache.
fn code_size(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    code: u64,
    t: &SizeClass,
    ob_size: i64,
) -> Result<u64, ReadError> {
    let s = &layout.sizes;
    let mut size = if t.itemsize > 0 { default_size(t, ob_size).next_multiple_of(8) } else { t.basicsize };
    let extra = mem.read_u64(code + s.code_extra as u64)?;
    if extra != 0 {
        size += s.code_extra_header + 8 * mem.read_u64(extra)?;
    }
    if let Some(cell2arg_off) = s.code_cell2arg
        && mem.read_u64(code + cell2arg_off as u64)? != 0
        && let Some(FrameLayout::Objects { co_cellvars, .. }) = layout.frames
    {
        size += 8 * tuple_len_at(mem, layout, code + co_cellvars as u64)?;
    }
    if let Some((opcache, opcache_size, co_code)) = s.code_opcache
        && mem.read_u64(code + opcache as u64)? != 0
    {
        let bytecode = mem.read_u64(code + co_code as u64)?;
        let code_len = mem.read_u64(bytecode + layout.containers.ob_size as u64)?;
        let entries = u64::from(mem.read_u8(code + opcache_size as u64)?);
        size += code_len / 2 + entries * 32;
    }
    Ok(size)
}

/// The length of the tuple a field at `field` points to (0 for NULL).
fn tuple_len_at(mem: &mut dyn RemoteMemory, layout: &Layout, field: u64) -> Result<u64, ReadError> {
    let tuple = mem.read_u64(field)?;
    if tuple == 0 {
        return Ok(0);
    }
    mem.read_u64(tuple + layout.containers.ob_size as u64)
}

/// 3.6-3.10 frame objects: locals, cells, free variables and stack slots of the code.
fn object_frame_extras(mem: &mut dyn RemoteMemory, layout: &Layout, frame: u64) -> Result<u64, ReadError> {
    let Some(FrameLayout::Objects { f_code, co_nlocals, co_cellvars, co_freevars, co_stacksize, .. }) = layout.frames
    else {
        return Ok(0);
    };
    let code = mem.read_u64(frame + f_code as u64)?;
    let nlocals = u64::from(mem.read_u32(code + co_nlocals as u64)?);
    let stack = u64::from(mem.read_u32(code + co_stacksize as u64)?);
    let cells = tuple_len_at(mem, layout, code + co_cellvars as u64)?;
    let frees = tuple_len_at(mem, layout, code + co_freevars as u64)?;
    Ok(nlocals + stack + cells + frees)
}

/// 3.11+: the slots of the interpreter frame at `frame` (locals plus stack of its code).
fn interpreter_frame_slots(mem: &mut dyn RemoteMemory, layout: &Layout, frame: u64) -> Result<u64, ReadError> {
    let Some(FrameLayout::Interpreter { code, co_nlocalsplus, co_stacksize, .. }) = layout.frames else {
        return Ok(0);
    };
    // 3.14+ tags the code reference in its low bits.
    let code_addr = mem.read_u64(frame + code as u64)? & !7;
    if code_addr == 0 {
        return Ok(0);
    }
    let nlocals = u64::from(mem.read_u32(code_addr + co_nlocalsplus as u64)?);
    let stack = u64::from(mem.read_u32(code_addr + co_stacksize as u64)?);
    Ok(nlocals + stack)
}
