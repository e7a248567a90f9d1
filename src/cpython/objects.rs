//! Typed reads of CPython objects: type names, str contents, dict entries. Every length and
//! pointer read here comes from a process that keeps running, so each is bounded and checked.

use super::layout::{DictKeysFormat, Layout};
use crate::memory::{ReadError, RemoteMemory, u32_at, u64_at};

/// Py_TPFLAGS_HEAPTYPE: the type was allocated at run time (a `class` statement or
/// PyType_FromSpec), so its qualified name and module live in the type object and its dict
/// rather than in the C string tp_name. The bit has not changed since Python 2.
const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
/// Py_TPFLAGS_TYPE_SUBCLASS: set on `type` and every metaclass since 3.0.
const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;
/// Py_TPFLAGS_UNICODE_SUBCLASS: set on str and its subclasses since 3.0; checked before a
/// pointer is decoded as a str, since a dict value can be anything.
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;

/// Longest str leakspy decodes: names and keys, not data.
const MAX_NAME_CHARS: u64 = 4096;
/// More entries than this (4M, ~100 MB of entries) is a torn pointer, not a dict.
const MAX_DICT_ENTRIES: u64 = 1 << 22;
/// Entries of a class namespace searched for `__module__` and `__sizeof__`: a class body
/// puts `__module__` first, and `type()` appends it after the given namespace, which is
/// small in practice.
pub const NAMESPACE_LOOKUP_ENTRIES: u64 = 1024;
/// Entries of `sys.modules` searched for a module.
pub const MODULES_LOOKUP_ENTRIES: u64 = 1 << 16;

/// The name under which a type is reported everywhere: `qualname` for builtins, else
/// `module.qualname`, the way Python code would spell it.
pub fn type_name(mem: &mut dyn RemoteMemory, layout: &Layout, type_addr: u64) -> Result<String, ReadError> {
    let t = &layout.type_;
    // A type's own type is `type` or a metaclass: its flags say so. Anything else behind an
    // object's ob_type is a freed object's garbage or a crafted pointer, not a name to report.
    let metatype = mem.read_u64(type_addr + layout.object.ob_type as u64)?;
    if metatype == 0 || mem.read_u64(metatype + t.tp_flags as u64)? & TPFLAGS_TYPE_SUBCLASS == 0 {
        return Err(ReadError::Implausible { addr: type_addr, what: "a type object" });
    }
    let flags = mem.read_u64(type_addr + t.tp_flags as u64)?;
    if flags & TPFLAGS_HEAPTYPE != 0 {
        let qualname_ptr = mem.read_u64(type_addr + t.ht_qualname as u64)?;
        let qualname = read_str(mem, layout, qualname_ptr)?;
        if let Some(qualname) = qualname {
            let dict = mem.read_u64(type_addr + t.tp_dict as u64)?;
            let module = dict_get_str(mem, layout, dict, "__module__", NAMESPACE_LOOKUP_ENTRIES)?;
            return Ok(match module {
                Some(module) if module != "builtins" => format!("{module}.{qualname}"),
                _ => qualname,
            });
        }
    }
    // Static types: tp_name is "module.qualname", or just the name for builtins.
    let name_ptr = mem.read_u64(type_addr + t.tp_name as u64)?;
    let name =
        mem.read_c_string(name_ptr, 512)?.ok_or(ReadError::Implausible { addr: name_ptr, what: "a type name" })?;
    Ok(name.strip_prefix("builtins.").map(str::to_string).unwrap_or(name))
}

/// What a str's header says (PEP 393): its length, character width and where the characters
/// are.
pub struct StrHeader {
    pub length: u64,
    /// Bytes per character: 1, 2 or 4 (0 for a not-yet-ready legacy str before 3.12).
    pub kind: u64,
    pub compact: bool,
    pub ascii: bool,
    /// Up to 3.11: the canonical representation exists (a legacy str may have only wstr).
    pub ready: bool,
    pub data: u64,
}

/// The header of the str at `addr` (which the caller knows to be a str).
pub fn str_header(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64) -> Result<StrHeader, ReadError> {
    let u = &layout.unicode;
    let mut header = vec![0u8; u.compact_size.max(u.data + 8)];
    mem.read(addr, &mut header)?;
    let state = u32_at(&header, u.state);
    // The state bitfield has kept these positions since PEP 393 (3.3): interned:2, kind:3,
    // compact:1, ascii:1, then ready (up to 3.11; statically_allocated from 3.12).
    let (compact, ascii) = ((state >> 5) & 1 == 1, (state >> 6) & 1 == 1);
    Ok(StrHeader {
        length: u64_at(&header, u.length),
        kind: u64::from((state >> 2) & 7),
        compact,
        ascii,
        ready: (state >> 7) & 1 == 1,
        data: match (compact, ascii) {
            (true, true) => addr + u.ascii_size as u64,
            (true, false) => addr + u.compact_size as u64,
            // Legacy (non-compact) strings keep their characters behind a pointer.
            (false, _) => u64_at(&header, u.data),
        },
    })
}

/// The contents of a str object; `None` if `addr` is NULL or the object is not a plausible
/// str (a stale pointer read mid-update).
pub fn read_str(mem: &mut dyn RemoteMemory, layout: &Layout, addr: u64) -> Result<Option<String>, ReadError> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return Ok(None);
    }
    let ob_type = mem.read_u64(addr + layout.object.ob_type as u64)?;
    if ob_type == 0 || mem.read_u64(ob_type + layout.type_.tp_flags as u64)? & TPFLAGS_UNICODE_SUBCLASS == 0 {
        return Ok(None);
    }
    let StrHeader { length, kind, data, .. } = str_header(mem, layout, addr)?;
    if length > MAX_NAME_CHARS || !matches!(kind, 1 | 2 | 4) {
        return Ok(None);
    }
    let mut bytes = vec![0u8; (length * kind) as usize];
    mem.read(data, &mut bytes)?;
    let text = match kind {
        1 => bytes.iter().map(|&b| b as char).collect(),
        2 => char::decode_utf16(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    };
    Ok(Some(text))
}

/// A type and its bases up to `object` (tp_base), at most 64: deeper is a torn chain.
pub fn base_chain(mem: &mut dyn RemoteMemory, layout: &Layout, type_addr: u64) -> Result<Vec<u64>, ReadError> {
    const MAX_BASES: usize = 64;
    let mut chain = Vec::new();
    let mut t = type_addr;
    while t != 0 && chain.len() < MAX_BASES {
        chain.push(t);
        t = mem.read_u64(t + layout.type_.tp_base as u64)?;
    }
    Ok(chain)
}

/// Where a code object's function was defined.
pub struct CodeLocation {
    pub name: String,
    pub file: String,
    pub first_line: u64,
}

/// co_name, co_filename and co_firstlineno of a code object ("?" where unreadable).
pub fn code_location(mem: &mut dyn RemoteMemory, l: &Layout, code: u64) -> Result<CodeLocation, ReadError> {
    let Some(f) = &l.functions else {
        return Ok(CodeLocation { name: "?".into(), file: "?".into(), first_line: 0 });
    };
    let mut str_at = |field: usize| -> Result<String, ReadError> {
        let ptr = mem.read_u64(code + field as u64)?;
        Ok(read_str(mem, l, ptr)?.unwrap_or_else(|| "?".into()))
    };
    let name = str_at(f.co_name)?;
    let file = str_at(f.co_filename)?;
    Ok(CodeLocation { name, file, first_line: u64::from(mem.read_u32(code + f.co_firstlineno as u64)?) })
}

/// (key, value) object pointers of a dict, combined or split (instance dicts sharing their
/// keys keep the values in a separate array).
pub fn dict_entries(mem: &mut dyn RemoteMemory, layout: &Layout, dict: u64) -> Result<Vec<(u64, u64)>, ReadError> {
    dict_entries_upto(mem, layout, dict, MAX_DICT_ENTRIES)
}

/// The first `max` entries of a dict, for lookups that expect their key early.
fn dict_entries_upto(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    dict: u64,
    max: u64,
) -> Result<Vec<(u64, u64)>, ReadError> {
    if dict == 0 {
        return Ok(Vec::new());
    }
    let d = &layout.dict;
    let keys = mem.read_u64(dict + d.ma_keys as u64)?;
    let values = mem.read_u64(dict + d.ma_values as u64)?;
    let entries = keys_entries_upto(mem, layout, keys, max)?;
    if values == 0 {
        return Ok(entries.into_iter().filter(|(k, v)| *k != 0 && *v != 0).collect());
    }
    split_values(mem, layout, &entries, values)
}

/// Pairs the keys of shared (split) keys with the values array at `values` (a split dict's
/// ma_values, or an instance's values array before its __dict__ exists).
pub fn split_values(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    entries: &[(u64, u64)],
    values: u64,
) -> Result<Vec<(u64, u64)>, ReadError> {
    let values = mem.read_words(values + layout.graph.dictvalues_values as u64, entries.len())?;
    Ok(entries.iter().zip(values).map(|((k, _), v)| (*k, v)).filter(|(k, v)| *k != 0 && *v != 0).collect())
}

/// (key, value) pointers of the entries of a dict-keys object, in insertion order; values are
/// NULL in split keys.
pub fn keys_entries(mem: &mut dyn RemoteMemory, layout: &Layout, keys: u64) -> Result<Vec<(u64, u64)>, ReadError> {
    keys_entries_upto(mem, layout, keys, MAX_DICT_ENTRIES)
}

fn keys_entries_upto(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    keys: u64,
    max: u64,
) -> Result<Vec<(u64, u64)>, ReadError> {
    if keys == 0 {
        return Ok(Vec::new());
    }
    let d = &layout.dict;
    let nentries = mem.read_u64(keys + d.dk_nentries as u64)?;
    let (index_bytes, entry_size) = match d.format {
        DictKeysFormat::SizeField { dk_size } => {
            let size = mem.read_u64(keys + dk_size as u64)?;
            if size > MAX_DICT_ENTRIES * 2 {
                return Ok(Vec::new());
            }
            let width = match size {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x1_0000..=0xffff_ffff => 4,
                _ => 8,
            };
            (size * width, d.entry_size as u64)
        }
        DictKeysFormat::Log2 { dk_log2_index_bytes, dk_kind, unicode_entry_size, .. } => {
            let log2_index_bytes = mem.read_u8(keys + dk_log2_index_bytes as u64)?;
            let kind = mem.read_u8(keys + dk_kind as u64)?;
            if log2_index_bytes > 32 {
                return Ok(Vec::new());
            }
            // DICT_KEYS_GENERAL (0) entries carry the hash; unicode and split ones do not.
            let entry = if kind == 0 { d.entry_size } else { unicode_entry_size };
            (1u64 << log2_index_bytes, entry as u64)
        }
    };
    if nentries > MAX_DICT_ENTRIES {
        return Ok(Vec::new());
    }
    let entries_at = keys + d.dk_indices as u64 + index_bytes;
    let raw = mem.read_claimed(entries_at, nentries.min(max) * entry_size)?;
    // Both entry formats end with (key, value): {hash, key, value} or {key, value}.
    let key_at = entry_size as usize - 16;
    Ok(raw.chunks_exact(entry_size as usize).map(|e| (u64_at(e, key_at), u64_at(e, key_at + 8))).collect())
}

/// The object stored under the str key `wanted` among the first `max` entries, if any. Str
/// hashes are salted per process, so a lookup from outside is a scan; the bound keeps a dict
/// that claims millions of entries from costing more than the few that real lookups need.
pub fn dict_get(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    dict: u64,
    wanted: &str,
    max: u64,
) -> Result<Option<u64>, ReadError> {
    for (key, value) in dict_entries_upto(mem, layout, dict, max)? {
        if read_str(mem, layout, key)?.as_deref() == Some(wanted) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The str value stored under the str key `wanted` among the first `max` entries, if any.
pub fn dict_get_str(
    mem: &mut dyn RemoteMemory,
    layout: &Layout,
    dict: u64,
    wanted: &str,
    max: u64,
) -> Result<Option<String>, ReadError> {
    match dict_get(mem, layout, dict, wanted, max)? {
        Some(value) => read_str(mem, layout, value),
        None => Ok(None),
    }
}
