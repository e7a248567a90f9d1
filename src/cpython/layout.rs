//! CPython's struct layouts, per minor version, as data.
//!
//! The tables in python_offsets/ are generated from each version's real headers by
//! scripts/gen_offsets.py and compiled into the binary. This module turns a table into typed
//! layouts. It is the one place that knows how versions differ in *shape* (where the GC state
//! lives, which dict-keys format is used); it decides that from which keys a table has, never
//! from the version number, so a new version needs a new table, not new branches.

use rustc_hash::FxHashMap;

/// Every table, named like its file: `3.X` is the table for a minor version, `3.X.Y` a
/// variant generated from another patch release's headers where the layout changed within
/// the minor version (3.13.18 aligned PyGC_Head differently from 3.13.0).
const TABLES: &[(&str, &str)] = &[
    ("3.6", include_str!("../../python_offsets/3.6.toml")),
    ("3.7", include_str!("../../python_offsets/3.7.toml")),
    ("3.8", include_str!("../../python_offsets/3.8.toml")),
    ("3.9", include_str!("../../python_offsets/3.9.toml")),
    ("3.10", include_str!("../../python_offsets/3.10.toml")),
    ("3.11", include_str!("../../python_offsets/3.11.toml")),
    ("3.12", include_str!("../../python_offsets/3.12.toml")),
    ("3.13", include_str!("../../python_offsets/3.13.toml")),
    ("3.13.18", include_str!("../../python_offsets/3.13.18.toml")),
    ("3.14", include_str!("../../python_offsets/3.14.toml")),
    ("3.15", include_str!("../../python_offsets/3.15.toml")),
];

fn table_minor(name: &str) -> Option<u32> {
    name.split('.').nth(1)?.parse().ok()
}

pub fn supported_minors() -> impl Iterator<Item = u32> {
    let mut minors: Vec<u32> = TABLES.iter().filter_map(|(name, _)| table_minor(name)).collect();
    minors.dedup();
    minors.into_iter()
}

/// The layouts that may fit CPython 3.`minor`.`patch`, most likely first: tables generated
/// from the nearest patch release at or below it, then the ones above. The caller verifies
/// each against the target and keeps the first that fits.
pub fn candidate_layouts(minor: u32, patch: u32) -> Result<Vec<Layout>, String> {
    let mut layouts = TABLES
        .iter()
        .filter(|(name, _)| table_minor(name) == Some(minor))
        .map(|(name, text)| {
            OffsetTable::parse(text)
                .and_then(|t| Layout::from_table(minor, &t))
                .map_err(|e| format!("python_offsets/{name}.toml: {e}"))
        })
        .collect::<Result<Vec<Layout>, String>>()?;
    layouts.sort_by_key(|l| {
        let header_patch = l.headers_patch();
        if header_patch <= patch { (0, patch - header_patch) } else { (1, header_patch - patch) }
    });
    Ok(layouts)
}

/// Raw `key = value` pairs of one table.
#[derive(Debug, Clone)]
pub struct OffsetTable {
    values: FxHashMap<String, u64>,
}

impl OffsetTable {
    pub fn parse(text: &str) -> Result<OffsetTable, String> {
        let mut values = FxHashMap::default();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) =
                line.split_once('=').ok_or_else(|| format!("line {}: expected `key = value`", lineno + 1))?;
            let value: u64 =
                value.trim().parse().map_err(|_| format!("line {}: `{}` is not a number", lineno + 1, value.trim()))?;
            values.insert(key.trim().to_string(), value);
        }
        Ok(OffsetTable { values })
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.values.get(key).copied()
    }

    fn need(&self, key: &str) -> Result<usize, String> {
        self.get(key).map(|v| v as usize).ok_or_else(|| format!("offset table lacks `{key}`"))
    }

    fn opt(&self, key: &str) -> Option<usize> {
        self.get(key).map(|v| v as usize)
    }

    /// (name, value) of every key `prefix.name`, by name.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, usize)> {
        let mut found: Vec<(String, usize)> = self
            .values
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.strip_prefix('.')?.to_string(), *v as usize)))
            .collect();
        found.sort();
        found
    }
}

#[derive(Debug, Clone)]
pub struct ObjectLayout {
    pub ob_refcnt: usize,
    pub ob_type: usize,
    /// 8 up to 3.13; 4 from 3.14, where the upper half of the word holds flags.
    pub refcnt_size: usize,
    /// 3.12+: refcounts whose low 32 bits are negative as i32 mark immortal objects.
    pub has_immortal: bool,
}

#[derive(Debug, Clone)]
pub struct TypeLayout {
    pub tp_name: usize,
    pub tp_flags: usize,
    pub tp_base: usize,
    pub tp_dict: usize,
    pub ht_qualname: usize,
}

#[derive(Debug, Clone)]
pub struct GcHeadLayout {
    pub size: usize,
    pub next: usize,
    pub prev: usize,
}

/// The low two bits of `_gc_next`/`_gc_prev` carry flags (collecting, finalized,
/// unreachable, the incremental collector's space bit). Only two: list heads inside the GC
/// state can be merely 4-byte aligned (Debian's 3.13.18 declares PyGC_Head with 4-byte
/// alignment, putting generations[1] at an address ending in 4).
pub const GC_LINK_FLAG_BITS: u64 = 0b11;

/// Where the GC state (the generation lists) is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcLocation {
    /// 3.9+: each interpreter has its own, at this offset in PyInterpreterState.
    Interpreter(usize),
    /// 3.7, 3.8: one per process, at this offset in _PyRuntime.
    Runtime(usize),
    /// 3.6: the generations array itself, pointed to by the global `_PyGC_generation0`.
    Generation0Symbol,
}

#[derive(Debug, Clone)]
pub struct GcLayout {
    pub location: GcLocation,
    pub state_size: Option<usize>,
    /// Offset of generations[0] in the GC state (0 for 3.6's bare array).
    pub generations: usize,
    pub generation_count: usize,
    pub generation_size: usize,
    pub generation_head: usize,
    pub generation_count_field: usize,
    pub permanent_generation: Option<usize>,
    pub enabled: Option<usize>,
    pub collecting: Option<usize>,
    pub generation_threshold: usize,
    /// Offset of the `gc.garbage` list in the GC state (3.7+); 3.6 is read through the gc
    /// module's namespace instead.
    pub garbage: Option<usize>,
    pub stats: Option<GcStatsLayout>,
}

impl GcLayout {
    /// The heads of the GC lists of the GC state at `state`, with their generation's name:
    /// each generation's, then the permanent one (3.7+).
    pub fn list_heads(&self, state: u64) -> impl Iterator<Item = (String, u64)> + '_ {
        let head = move |at: usize| state + (at + self.generation_head) as u64;
        (0..self.generation_count)
            .map(move |i| (i.to_string(), head(self.generations + i * self.generation_size)))
            .chain(self.permanent_generation.map(|off| ("permanent".to_string(), head(off))))
    }
}

/// Per-generation collection statistics (gc.get_stats()): where the entry of each generation
/// is, and the counters' offsets in an entry.
#[derive(Debug, Clone)]
pub struct GcStatsLayout {
    pub placement: GcStatsPlacement,
    /// Size of one `gc_generation_stats` entry.
    pub entry_size: usize,
    pub collections: usize,
    pub collected: usize,
    pub uncollectable: usize,
}

#[derive(Debug, Clone)]
pub enum GcStatsPlacement {
    /// 3.7-3.14: an array of entries, one per generation, at this offset in the GC state.
    Array { offset: usize },
    /// 3.15: the GC state holds a pointer (at `pointer`) to one ring buffer of cumulative
    /// entries per generation (young, then old[0], old[1]); the newest entry, whose index is
    /// an int8 next to the ring, holds the totals.
    Rings {
        pointer: usize,
        young_items: usize,
        young_index: usize,
        old_items: usize,
        old_index: usize,
        old_stride: usize,
    },
}

/// What the heap graph needs: object sizes, where containers keep their items and where
/// instances keep their attributes.
#[derive(Debug, Clone)]
pub struct GraphLayout {
    /// sizeof(PyTypeObject): how much of a static type object is its own (a static type's
    /// metatype says the size of a heap type).
    pub type_size: usize,
    pub tp_basicsize: usize,
    pub tp_itemsize: usize,
    pub tp_dictoffset: usize,
    pub ht_cached_keys: usize,
    pub tuple_ob_item: usize,
    pub set_table: usize,
    pub set_mask: usize,
    pub set_entry_size: usize,
    /// Offset of the values array in a split dict's values (0 before 3.13).
    pub dictvalues_values: usize,
    pub instance_attributes: InstanceAttributes,
    /// Pointer fields a path can name (`.__closure__`, `.cell_contents`): the conservative
    /// scan finds every pointer, these say which attribute a found one is.
    pub named_fields: Vec<NamedField>,
    pub members: MemberLayout,
    pub weakref: WeakrefLayout,
    /// Where an object keeps the head of its weak references' list (a borrowed pointer).
    pub tp_weaklistoffset: usize,
    pub deque: DequeLayout,
    /// 3.12+: the interpreter's state of the static builtin types.
    pub static_types: Option<StaticTypesLayout>,
    pub numpy: NumpyLayout,
    /// Words of built-in objects that are no reference whatever they hold: (type, offset).
    pub not_references: Vec<(&'static str, usize)>,
}

/// PyWeakReference: `wr_object` refers to the referent without keeping it alive,
/// `wr_callback` is a strong reference, `wr_prev`/`wr_next` link the referent's weak
/// references (borrowed).
#[derive(Debug, Clone, Copy)]
pub struct WeakrefLayout {
    pub wr_object: usize,
    pub wr_callback: usize,
    pub wr_prev: usize,
    pub wr_next: usize,
}

/// `collections.deque` (private to Modules/_collectionsmodule.c, declared in
/// scripts/gen_offsets.py): items in a linked list of blocks of `block_len` slots, from
/// `leftblock` at slot `leftindex`, ob_size of them.
#[derive(Debug, Clone, Copy)]
pub struct DequeLayout {
    pub leftblock: usize,
    pub leftindex: usize,
    pub block_data: usize,
    pub block_len: usize,
    pub block_rightlink: usize,
}

/// 3.12+ `interp->types.builtins`: per static builtin type (int, dict, object...) the
/// interpreter keeps the type's `__dict__` and `__subclasses__` dict, which are then roots of
/// the heap graph (no type object points at them).
#[derive(Debug, Clone, Copy)]
pub struct StaticTypesLayout {
    /// Offset of the array in the interpreter state, and of the count of its used entries.
    pub array: usize,
    pub count: usize,
    pub max: usize,
    pub entry_size: usize,
    pub tp_dict: usize,
    pub tp_subclasses: usize,
}

/// numpy's ndarray and dtype objects, the fields `why` reads to follow an object array's
/// items. Not CPython's, so not in python_offsets/: numpy's public `PyArrayObject_fields`
/// (numpy/ndarraytypes.h) has kept data, nd, dimensions, strides, base and descr at these
/// offsets since numpy 1.7 (still so in 2.x), and `PyArray_Descr` kind and type_num too
/// (2.0 changed the fields after type_num only). On a 64-bit build.
#[derive(Debug, Clone, Copy)]
pub struct NumpyLayout {
    pub data: usize,
    pub nd: usize,
    pub dimensions: usize,
    pub base: usize,
    pub descr: usize,
    pub flags: usize,
    /// NPY_ARRAY_OWNDATA: the array owns its buffer (and the references in it).
    pub owndata_flag: u32,
    pub descr_kind: usize,
    /// 'O': the elements are object pointers.
    pub object_kind: u8,
    /// Dimensions read from one array: numpy's own limit (NPY_MAXDIMS, 64 in 2.x).
    pub max_dims: usize,
}

pub const NUMPY: NumpyLayout = NumpyLayout {
    data: 16,
    nd: 24,
    dimensions: 32,
    base: 48,
    descr: 56,
    flags: 64,
    owndata_flag: 0x0004,
    descr_kind: 24,
    object_kind: b'O',
    max_dims: 64,
};

/// PyMemberDef, the entries of tp_members: how a type exposes object fields as attributes
/// (`__slots__`, a function's `__globals__`), which names what the conservative scan finds.
#[derive(Debug, Clone)]
pub struct MemberLayout {
    pub tp_members: usize,
    pub size: usize,
    pub type_: usize,
    pub offset: usize,
    /// Member types that hold an object pointer.
    pub object_types: [u32; 2],
}

/// A pointer field of the objects of one built-in type, as Python spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedField {
    /// Type name as reported (`function`); `type` stands for every type object.
    pub type_name: &'static str,
    pub offset: usize,
    /// Index in [`FIELD_NAMES`].
    pub name: u8,
}

/// (type, table key, attribute) of every named field, in the order of [`FIELD_NAMES`].
const NAMED_FIELDS: &[(&str, &str, &str)] = &[
    ("function", "func.func_globals", "__globals__"),
    ("function", "func.func_code", "__code__"),
    ("function", "func.func_closure", "__closure__"),
    ("function", "func.func_defaults", "__defaults__"),
    ("function", "func.func_kwdefaults", "__kwdefaults__"),
    ("function", "func.func_dict", "__dict__"),
    ("function", "func.func_name", "__name__"),
    ("function", "func.func_qualname", "__qualname__"),
    ("function", "func.func_module", "__module__"),
    ("cell", "cell.ob_ref", "cell_contents"),
    ("method", "method.im_func", "__func__"),
    ("method", "method.im_self", "__self__"),
    ("type", "type.tp_base", "__base__"),
    ("type", "type.tp_bases", "__bases__"),
    ("type", "type.tp_mro", "__mro__"),
    ("frame", "frame.f_back", "f_back"),
    ("frame", "frame.f_code", "f_code"),
    ("frame", "frame.f_locals", "f_locals"),
];

/// The attribute name of a [`NamedField`].
pub fn field_name(index: u8) -> &'static str {
    NAMED_FIELDS.get(index as usize).map_or("?", |f| f.2)
}

fn named_fields(t: &OffsetTable) -> Vec<NamedField> {
    NAMED_FIELDS
        .iter()
        .enumerate()
        .filter_map(|(i, (type_name, key, _))| Some(NamedField { type_name, offset: t.opt(key)?, name: i as u8 }))
        .collect()
}

/// Where an instance's attributes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAttributes {
    /// 3.6-3.10: a `__dict__` pointer at the type's tp_dictoffset.
    DictOffset,
    /// 3.11+, types with Py_TPFLAGS_MANAGED_DICT: a dict pointer `dict_before` bytes before
    /// the object or, until that dict exists, a values array whose keys are the type's cached
    /// keys: 3.11 keeps its pointer `values_before` bytes before the object, 3.12 in the dict
    /// pointer's place tagged with bit 0, 3.13+ inline after the object (Py_TPFLAGS_INLINE_VALUES).
    Managed { managed_flag: u64, dict_before: usize, values: ManagedValues },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedValues {
    Before(usize),
    Tagged,
    Inline { inline_flag: u64 },
}

/// Thread state fields for the threads report.
#[derive(Debug, Clone)]
pub struct ThreadLayout {
    pub thread_id: usize,
    pub native_thread_id: Option<usize>,
    pub c_tracefunc: usize,
    pub c_profilefunc: usize,
    pub c_traceobj: usize,
    pub c_profileobj: usize,
}

/// What sys.getsizeof needs beyond the graph layout: the fields each built-in `__sizeof__`
/// reads, and what `_PySys_GetSizeOf` adds for the words CPython keeps before an object.
#[derive(Debug, Clone)]
pub struct SizesLayout {
    pub gc_head: u64,
    /// 3.11+: type flags whose objects carry two more words before them (managed dict,
    /// 3.12+ also managed weakref). `None` before 3.11, where only the GC header counts.
    pub preheader_flags: Option<u64>,
    /// 3.11/3.12 count the pre-header of static type objects too.
    pub static_type_preheader: bool,
    pub heaptype_size: u64,
    pub type_size: u64,
    /// int: where the digits start, the fewest digits counted, and (3.12+) the tag word
    /// holding the digit count.
    pub long_digits: u64,
    pub int_min_digits: u64,
    pub long_lv_tag: Option<usize>,
    pub str_object_size: u64,
    pub str_utf8_length: usize,
    pub str_utf8: usize,
    /// Up to 3.11: the wchar_t buffer and its length.
    pub str_wstr: Option<(usize, usize)>,
    pub ma_used: usize,
    pub dk_refcnt: usize,
    pub dk_usable: usize,
    pub list_allocated: usize,
    pub set_smalltable: usize,
    pub bytearray_alloc: usize,
    /// 3.15: a bytearray's buffer is a bytes object of this header size.
    pub bytearray_bytes_header: Option<u64>,
    pub code_extra: usize,
    pub code_extra_header: u64,
    /// Up to 3.10: cells that are also arguments, and (3.8-3.10) the opcache and co_code.
    pub code_cell2arg: Option<usize>,
    pub code_opcache: Option<(usize, usize, usize)>,
    /// 3.11+: where a frame object's and a generator's interpreter frame is.
    pub frame_f_frame: Option<usize>,
    pub gen_gi_iframe: Option<usize>,
    pub deque_leftindex: usize,
    pub odict_first: usize,
    pub odict_fast_nodes_size: usize,
}

/// Where threads' call stacks are: the roots of the heap graph besides module globals.
#[derive(Debug, Clone)]
pub enum FrameLayout {
    /// 3.6-3.10: frames are PyFrameObjects (GC-tracked), linked from the thread state by
    /// f_back; locals named by co_varnames, then co_cellvars, then co_freevars.
    Objects {
        tstate_frame: usize,
        f_back: usize,
        f_code: usize,
        f_locals: usize,
        f_localsplus: usize,
        co_nlocals: usize,
        co_varnames: usize,
        co_cellvars: usize,
        co_freevars: usize,
        co_stacksize: usize,
    },
    /// 3.11+: _PyInterpreterFrame structs on the thread's data stack, not objects; locals
    /// named by co_localsplusnames, then the value stack up to its top.
    Interpreter {
        current_frame: CurrentFrame,
        previous: usize,
        code: usize,
        f_locals: usize,
        localsplus: usize,
        stack_top: StackTop,
        co_nlocalsplus: usize,
        co_localsplusnames: usize,
        co_stacksize: usize,
    },
}

/// Where the thread state points at the innermost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentFrame {
    /// 3.13+: tstate->current_frame.
    Direct(usize),
    /// 3.11/3.12: tstate->cframe->current_frame.
    ViaCFrame { cframe: usize, current_frame: usize },
}

/// Where a frame's value stack ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackTop {
    /// 3.11-3.13: an int, the index of the top in localsplus.
    Index(usize),
    /// 3.14+: a pointer past the top entry.
    Pointer(usize),
}

/// Function, code and bound-method fields, to group functions by where they were defined.
#[derive(Debug, Clone)]
pub struct FunctionLayout {
    pub func_code: usize,
    pub func_closure: usize,
    pub func_qualname: usize,
    pub co_name: usize,
    pub co_filename: usize,
    pub co_firstlineno: usize,
    pub im_func: usize,
    /// A bound method's `__self__`: what a leaked bound method keeps alive.
    pub im_self: usize,
    /// A cell's `cell_contents`: what a closure captured.
    pub cell_contents: usize,
}

/// Where containers keep their items and where I/O objects keep their descriptor.
#[derive(Debug, Clone)]
pub struct ContainerLayout {
    pub ob_size: usize,
    pub list_ob_item: usize,
    pub fileio_fd: Option<usize>,
    pub socket_fd: Option<usize>,
    pub module_dict: usize,
    /// `sys.modules`, in the interpreter state.
    pub interp_modules: Option<usize>,
}

/// Where the list of interpreters starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterpretersHead {
    /// 3.7+: a field of _PyRuntime.
    Runtime(usize),
    /// 3.6: the static `interp_head` in pystate.c (found in .symtab).
    Symbol,
}

#[derive(Debug, Clone)]
pub struct InterpreterLayout {
    pub head: InterpretersHead,
    pub next: usize,
    pub id: Option<usize>,
    pub threads_head: usize,
    pub tstate_next: usize,
    pub tstate_interp: usize,
    /// Object pointers the interpreter state (and _PyRuntime) holds outside any module, by
    /// field name: roots of the heap graph (codec registry, interned strings...).
    pub roots: Vec<(String, usize)>,
    pub runtime_roots: Vec<(String, usize)>,
}

#[derive(Debug, Clone)]
pub struct UnicodeLayout {
    pub length: usize,
    pub state: usize,
    pub ascii_size: usize,
    pub compact_size: usize,
    /// Legacy (non-compact) strs: the pointer to their characters.
    pub data: usize,
}

/// The two dict-keys formats: 3.6-3.10 store the table size, 3.11+ its log2 and a kind.
#[derive(Debug, Clone)]
pub enum DictKeysFormat {
    SizeField { dk_size: usize },
    Log2 { dk_log2_size: usize, dk_log2_index_bytes: usize, dk_kind: usize, unicode_entry_size: usize },
}

#[derive(Debug, Clone)]
pub struct DictLayout {
    pub ma_keys: usize,
    pub ma_values: usize,
    pub dk_nentries: usize,
    pub dk_indices: usize,
    pub entry_size: usize,
    pub format: DictKeysFormat,
}

/// A field that 3.13+ targets publish about themselves in `_Py_DebugOffsets`, paired with the
/// value our table expects; a mismatch means we would follow the wrong pointers.
#[derive(Debug, Clone)]
pub struct DebugOffsetCheck {
    pub name: String,
    /// Offset of the value inside `_Py_DebugOffsets` (which starts `_PyRuntime`).
    pub at: usize,
    pub expected: u64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub minor: u32,
    /// PY_VERSION_HEX of the headers the table came from.
    pub headers_version_hex: Option<u64>,
    pub object: ObjectLayout,
    pub type_: TypeLayout,
    pub gc_head: GcHeadLayout,
    pub gc: GcLayout,
    pub interp: InterpreterLayout,
    pub unicode: UnicodeLayout,
    pub dict: DictLayout,
    pub threads: ThreadLayout,
    pub functions: Option<FunctionLayout>,
    pub frames: Option<FrameLayout>,
    pub sizes: SizesLayout,
    pub graph: GraphLayout,
    pub containers: ContainerLayout,
    /// pymalloc's pools, where the interpreter keeps its small objects; `None` where the
    /// table lacks them.
    pub pools: Option<PoolLayout>,
    /// pymalloc's own accounting (the arena table and its counters); `None` where the table
    /// lacks it.
    pub obmalloc: Option<ObmallocLayout>,
    /// What `leakspy stacks` needs beyond the frames: lines and the GIL's holder.
    pub stacks: Option<StackLayout>,
    pub debug_offsets: Vec<DebugOffsetCheck>,
}

/// pymalloc's pools: POOL_SIZE-aligned runs of equal-size blocks, each starting with a header
/// that says the block size and how far the pool has been carved. Its invariants (the last
/// block's offset follows from the size class) are what tells a pool from other memory.
#[derive(Debug, Clone)]
pub struct PoolLayout {
    pub pool_size: u64,
    /// Blocks are multiples of this; size class `i` holds blocks of `(i + 1) * alignment`.
    pub alignment: u64,
    /// Largest request pymalloc serves; larger objects come from malloc, outside pools.
    pub small_request_threshold: u64,
    pub header_size: u64,
    pub count: usize,
    pub freeblock: usize,
    pub szidx: usize,
    pub nextoffset: usize,
    pub maxnextoffset: usize,
    /// Py_TPFLAGS_HAVE_GC: the objects of such a type start after a PyGC_Head.
    pub have_gc_flag: u64,
}

/// How a code object maps instruction offsets to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTableFormat {
    /// 3.6-3.9 co_lnotab: (bytes, lines) increments.
    Lnotab,
    /// 3.10 co_linetable: (bytes, lines) increments, -128 lines for "no line".
    Linetable310,
    /// 3.11+ location table (Objects/locations.md): entries of code units with line deltas.
    Locations,
}

/// Where a frame's current instruction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionPosition {
    /// 3.6-3.10: the frame object's f_lasti (an int), in units of `unit` bytes.
    Lasti { offset: usize, unit: u64 },
    /// 3.11+: a pointer into the code object's co_code_adaptive (3.11/3.12 prev_instr, 3.13+
    /// instr_ptr).
    Pointer { offset: usize, code_adaptive: usize },
}

/// Where the GIL's state (locked, last holder) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilLocation {
    /// 3.6: statics `gil_locked` and `gil_last_holder` (found in .symtab).
    Statics,
    /// 3.7-3.11: in _PyRuntime.
    Runtime { locked: usize, last_holder: usize },
    /// 3.12+: the interpreter state points to it.
    Interpreter { pointer: usize, locked: usize, last_holder: usize },
}

#[derive(Debug, Clone)]
pub struct StackLayout {
    pub format: LineTableFormat,
    pub co_linetable: usize,
    pub bytes_sval: usize,
    pub position: InstructionPosition,
    pub gil: Option<GilLocation>,
}

/// Where pymalloc keeps its arena table and counters, which `sys._debugmallocstats()` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObmallocLocation {
    /// 3.6-3.11: file statics of Objects/obmalloc.c (`arenas`, `maxarenas`, ...), found in
    /// .symtab; a stripped binary does not have them.
    Statics,
    /// 3.12: a `struct _obmalloc_state` inside each interpreter state, at this offset.
    Interpreter(usize),
    /// 3.13+: the interpreter state points to its (or the main interpreter's) state from here.
    InterpreterPointer(usize),
}

/// Offsets in `struct _obmalloc_state` (3.12+) of the arena table and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObmallocStateOffsets {
    pub arenas: usize,
    pub maxarenas: usize,
    pub narenas_currently_allocated: usize,
    pub ntimes_arena_allocated: usize,
    pub narenas_highwater: usize,
}

/// `struct arena_object`: one entry of the arena table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaObjectLayout {
    pub size: usize,
    pub address: usize,
    pub pool_address: usize,
    pub nfreepools: usize,
    pub ntotalpools: usize,
}

#[derive(Debug, Clone)]
pub struct ObmallocLayout {
    pub location: ObmallocLocation,
    /// Set with the interpreter locations; the statics are symbols of their own.
    pub state: Option<ObmallocStateOffsets>,
    pub arena_size: u64,
    pub arena: ArenaObjectLayout,
    pub pools: PoolLayout,
}

impl Layout {
    /// The patch release whose headers produced this table.
    pub fn headers_patch(&self) -> u32 {
        self.headers_version_hex.map_or(0, |hex| ((hex >> 8) & 0xff) as u32)
    }

    /// "3.13.18", for messages.
    pub fn headers_version(&self) -> String {
        format!("3.{}.{}", self.minor, self.headers_patch())
    }

    pub fn from_table(minor: u32, t: &OffsetTable) -> Result<Layout, String> {
        let gc_location = if let Some(off) = t.opt("interp.gc") {
            GcLocation::Interpreter(off)
        } else if let Some(off) = t.opt("runtime.gc") {
            GcLocation::Runtime(off)
        } else {
            GcLocation::Generation0Symbol
        };
        let head = match t.opt("runtime.interpreters_head") {
            Some(off) => InterpretersHead::Runtime(off),
            None => InterpretersHead::Symbol,
        };
        let format = match t.opt("dictkeys.dk_log2_size") {
            Some(dk_log2_size) => DictKeysFormat::Log2 {
                dk_log2_size,
                dk_log2_index_bytes: t.need("dictkeys.dk_log2_index_bytes")?,
                dk_kind: t.need("dictkeys.dk_kind")?,
                unicode_entry_size: t.need("dictkeys.unicode_entry_size")?,
            },
            None => DictKeysFormat::SizeField { dk_size: t.need("dictkeys.dk_size")? },
        };
        Ok(Layout {
            minor,
            headers_version_hex: t.get("version.hex"),
            object: ObjectLayout {
                ob_refcnt: t.need("object.ob_refcnt")?,
                ob_type: t.need("object.ob_type")?,
                refcnt_size: t.need("object.refcnt_size")?,
                has_immortal: t.get("object.immortal") == Some(1),
            },
            type_: TypeLayout {
                tp_name: t.need("type.tp_name")?,
                tp_flags: t.need("type.tp_flags")?,
                tp_base: t.need("type.tp_base")?,
                tp_dict: t.need("type.tp_dict")?,
                ht_qualname: t.need("heaptype.ht_qualname")?,
            },
            gc_head: GcHeadLayout {
                size: t.need("gc_head.size")?,
                next: t.need("gc_head.next")?,
                prev: t.need("gc_head.prev")?,
            },
            gc: GcLayout {
                location: gc_location,
                state_size: t.opt("gc_state.size"),
                generations: t.opt("gc_state.generations").unwrap_or(0),
                generation_count: t.opt("gc_state.generation_count").unwrap_or(3),
                generation_size: t.need("gc_generation.size")?,
                generation_head: t.need("gc_generation.head")?,
                generation_count_field: t.need("gc_generation.count")?,
                permanent_generation: t.opt("gc_state.permanent_generation"),
                enabled: t.opt("gc_state.enabled"),
                collecting: t.opt("gc_state.collecting"),
                generation_threshold: t.need("gc_generation.threshold")?,
                garbage: t.opt("gc_state.garbage"),
                stats: gc_stats_layout(t),
            },
            interp: InterpreterLayout {
                head,
                next: t.need("interp.next")?,
                id: t.opt("interp.id"),
                threads_head: t.need("interp.threads_head")?,
                tstate_next: t.need("tstate.next")?,
                tstate_interp: t.need("tstate.interp")?,
                roots: t.with_prefix("roots.interp"),
                runtime_roots: t.with_prefix("roots.runtime"),
            },
            unicode: UnicodeLayout {
                length: t.need("unicode.length")?,
                state: t.need("unicode.state")?,
                ascii_size: t.need("unicode.ascii_size")?,
                compact_size: t.need("unicode.compact_size")?,
                data: t.need("unicode.data")?,
            },
            dict: DictLayout {
                ma_keys: t.need("dict.ma_keys")?,
                ma_values: t.need("dict.ma_values")?,
                dk_nentries: t.need("dictkeys.dk_nentries")?,
                dk_indices: t.need("dictkeys.dk_indices")?,
                entry_size: t.need("dictkeys.entry_size")?,
                format,
            },
            threads: ThreadLayout {
                thread_id: t.need("tstate.thread_id")?,
                native_thread_id: t.opt("tstate.native_thread_id"),
                c_tracefunc: t.need("tstate.c_tracefunc")?,
                c_profilefunc: t.need("tstate.c_profilefunc")?,
                c_traceobj: t.need("tstate.c_traceobj")?,
                c_profileobj: t.need("tstate.c_profileobj")?,
            },
            functions: function_layout(t),
            frames: frame_layout(t),
            sizes: sizes_layout(t)?,
            graph: GraphLayout {
                type_size: t.need("type.size")?,
                tp_basicsize: t.need("type.tp_basicsize")?,
                tp_itemsize: t.need("type.tp_itemsize")?,
                tp_dictoffset: t.need("type.tp_dictoffset")?,
                ht_cached_keys: t.need("heaptype.ht_cached_keys")?,
                tuple_ob_item: t.need("tuple.ob_item")?,
                set_table: t.need("set.table")?,
                set_mask: t.need("set.mask")?,
                set_entry_size: t.need("set.entry_size")?,
                dictvalues_values: t.opt("dictvalues.values").unwrap_or(0),
                instance_attributes: instance_attributes(t)?,
                named_fields: named_fields(t),
                members: MemberLayout {
                    tp_members: t.need("type.tp_members")?,
                    size: t.need("member.size")?,
                    type_: t.need("member.type")?,
                    offset: t.need("member.offset")?,
                    object_types: [t.need("member.t_object")? as u32, t.need("member.t_object_ex")? as u32],
                },
                weakref: WeakrefLayout {
                    wr_object: t.need("weakref.wr_object")?,
                    wr_callback: t.need("weakref.wr_callback")?,
                    wr_prev: t.need("weakref.wr_prev")?,
                    wr_next: t.need("weakref.wr_next")?,
                },
                tp_weaklistoffset: t.need("type.tp_weaklistoffset")?,
                deque: DequeLayout {
                    leftblock: t.need("deque.leftblock")?,
                    leftindex: t.need("deque.leftindex")?,
                    block_data: t.need("deque_block.data")?,
                    block_len: t.need("deque_block.len")?,
                    block_rightlink: t.need("deque_block.rightlink")?,
                },
                static_types: static_types_layout(t),
                numpy: NUMPY,
                not_references: t.opt("code.co_unique_id").map(|o| ("code", o)).into_iter().collect(),
            },
            containers: ContainerLayout {
                ob_size: t.need("varobject.ob_size")?,
                list_ob_item: t.need("list.ob_item")?,
                fileio_fd: t.opt("fileio.fd"),
                socket_fd: t.opt("socket.sock_fd"),
                module_dict: t.need("module.md_dict")?,
                interp_modules: t.opt("interp.modules"),
            },
            pools: pool_layout(t),
            obmalloc: obmalloc_layout(t),
            stacks: stack_layout(t),
            debug_offsets: debug_offset_checks(t),
        })
    }
}

fn static_types_layout(t: &OffsetTable) -> Option<StaticTypesLayout> {
    Some(StaticTypesLayout {
        array: t.opt("static_types.builtins")?,
        count: t.opt("static_types.count")?,
        max: t.get("static_types.max")? as usize,
        entry_size: t.opt("static_types.entry_size")?,
        tp_dict: t.opt("static_types.tp_dict")?,
        tp_subclasses: t.opt("static_types.tp_subclasses")?,
    })
}

fn pool_layout(t: &OffsetTable) -> Option<PoolLayout> {
    Some(PoolLayout {
        pool_size: t.get("obmalloc.pool_size")?,
        alignment: t.get("obmalloc.alignment")?,
        small_request_threshold: t.get("obmalloc.small_request_threshold")?,
        header_size: t.get("pool_header.size")?,
        count: t.opt("pool_header.count")?,
        freeblock: t.opt("pool_header.freeblock")?,
        szidx: t.opt("pool_header.szidx")?,
        nextoffset: t.opt("pool_header.nextoffset")?,
        maxnextoffset: t.opt("pool_header.maxnextoffset")?,
        have_gc_flag: t.get("flags.have_gc")?,
    })
}

/// Lines and the GIL: the line-table format is declared in the table; where the current
/// instruction is follows from which frame fields the table has.
fn stack_layout(t: &OffsetTable) -> Option<StackLayout> {
    let format = match t.get("code.linetable_format")? {
        1 => LineTableFormat::Lnotab,
        2 => LineTableFormat::Linetable310,
        3 => LineTableFormat::Locations,
        _ => return None,
    };
    let position = if let Some(offset) = t.opt("frame.f_lasti").filter(|_| t.opt("tstate.frame").is_some()) {
        InstructionPosition::Lasti { offset, unit: t.get("frame.lasti_unit")? }
    } else {
        let offset = t.opt("iframe.instr_ptr").or_else(|| t.opt("iframe.prev_instr"))?;
        InstructionPosition::Pointer { offset, code_adaptive: t.opt("code.co_code_adaptive")? }
    };
    let gil = if t.get("gil.statics") == Some(1) {
        Some(GilLocation::Statics)
    } else if let Some(pointer) = t.opt("interp.ceval_gil") {
        Some(GilLocation::Interpreter { pointer, locked: t.opt("gil.locked")?, last_holder: t.opt("gil.last_holder")? })
    } else {
        match (t.opt("runtime.gil_locked"), t.opt("runtime.gil_last_holder")) {
            (Some(locked), Some(last_holder)) => Some(GilLocation::Runtime { locked, last_holder }),
            _ => None,
        }
    };
    Some(StackLayout {
        format,
        co_linetable: t.opt("code.co_linetable")?,
        bytes_sval: t.opt("bytes.ob_sval")?,
        position,
        gil,
    })
}

/// pymalloc's accounting: statics found by symbol (tables with `obmalloc.statics`), or the
/// interpreter's obmalloc state, embedded or behind a pointer (`interp.obmalloc_is_pointer`).
fn obmalloc_layout(t: &OffsetTable) -> Option<ObmallocLayout> {
    let (location, state) = if t.get("obmalloc.statics") == Some(1) {
        (ObmallocLocation::Statics, None)
    } else {
        let offset = t.opt("interp.obmalloc")?;
        let location = if t.get("interp.obmalloc_is_pointer")? == 1 {
            ObmallocLocation::InterpreterPointer(offset)
        } else {
            ObmallocLocation::Interpreter(offset)
        };
        let state = ObmallocStateOffsets {
            arenas: t.opt("obmalloc_state.arenas")?,
            maxarenas: t.opt("obmalloc_state.maxarenas")?,
            narenas_currently_allocated: t.opt("obmalloc_state.narenas_currently_allocated")?,
            ntimes_arena_allocated: t.opt("obmalloc_state.ntimes_arena_allocated")?,
            narenas_highwater: t.opt("obmalloc_state.narenas_highwater")?,
        };
        (location, Some(state))
    };
    Some(ObmallocLayout {
        location,
        state,
        arena_size: t.get("obmalloc.arena_size")?,
        arena: ArenaObjectLayout {
            size: t.opt("arena_object.size")?,
            address: t.opt("arena_object.address")?,
            pool_address: t.opt("arena_object.pool_address")?,
            nfreepools: t.opt("arena_object.nfreepools")?,
            ntotalpools: t.opt("arena_object.ntotalpools")?,
        },
        pools: pool_layout(t)?,
    })
}

/// Where the statistics are: an array in the GC state, or (tables with `gc_stats.young_*`
/// keys, 3.15) ring buffers behind a pointer. 3.6 keeps them in a static: not read.
fn gc_stats_layout(t: &OffsetTable) -> Option<GcStatsLayout> {
    let offset = t.opt("gc_state.generation_stats")?;
    let placement = match t.opt("gc_stats.young_items") {
        Some(young_items) => GcStatsPlacement::Rings {
            pointer: offset,
            young_items,
            young_index: t.opt("gc_stats.young_index")?,
            old_items: t.opt("gc_stats.old_items")?,
            old_index: t.opt("gc_stats.old_index")?,
            old_stride: t.opt("gc_stats.old_stride")?,
        },
        None => GcStatsPlacement::Array { offset },
    };
    Some(GcStatsLayout {
        placement,
        entry_size: t.opt("gc_state.generation_stats_size")?,
        collections: t.opt("gc_stats.collections")?,
        collected: t.opt("gc_stats.collected")?,
        uncollectable: t.opt("gc_stats.uncollectable")?,
    })
}

fn instance_attributes(t: &OffsetTable) -> Result<InstanceAttributes, String> {
    let Some(managed_flag) = t.get("flags.managed_dict") else { return Ok(InstanceAttributes::DictOffset) };
    let values = if let Some(inline_flag) = t.get("flags.inline_values") {
        ManagedValues::Inline { inline_flag }
    } else if t.get("managed.tagged_values") == Some(1) {
        ManagedValues::Tagged
    } else {
        ManagedValues::Before(t.need("managed.values_before")?)
    };
    Ok(InstanceAttributes::Managed { managed_flag, dict_before: t.need("managed.dict_before")?, values })
}

fn function_layout(t: &OffsetTable) -> Option<FunctionLayout> {
    Some(FunctionLayout {
        func_code: t.opt("func.func_code")?,
        func_closure: t.opt("func.func_closure")?,
        func_qualname: t.opt("func.func_qualname")?,
        co_name: t.opt("code.co_name")?,
        co_filename: t.opt("code.co_filename")?,
        co_firstlineno: t.opt("code.co_firstlineno")?,
        im_func: t.opt("method.im_func")?,
        im_self: t.opt("method.im_self")?,
        cell_contents: t.opt("cell.ob_ref")?,
    })
}

fn sizes_layout(t: &OffsetTable) -> Result<SizesLayout, String> {
    let code_opcache = match (t.opt("code.co_opcache"), t.opt("code.co_opcache_size"), t.opt("code.co_code")) {
        (Some(cache), Some(size), Some(code)) => Some((cache, size, code)),
        _ => None,
    };
    let str_wstr = match (t.opt("unicode.wstr"), t.opt("unicode.wstr_length")) {
        (Some(wstr), Some(len)) => Some((wstr, len)),
        _ => None,
    };
    Ok(SizesLayout {
        gc_head: t.need("gc_head.size")? as u64,
        preheader_flags: t.get("flags.preheader"),
        static_type_preheader: t.get("sizeof.static_type_preheader") == Some(1),
        heaptype_size: t.need("heaptype.size")? as u64,
        type_size: t.need("type.size")? as u64,
        long_digits: t.need("long.ob_digit")? as u64,
        int_min_digits: t.get("sizeof.int_min_digits").unwrap_or(0),
        long_lv_tag: t.opt("long.lv_tag"),
        str_object_size: t.need("unicode.object_size")? as u64,
        str_utf8_length: t.need("unicode.utf8_length")?,
        str_utf8: t.need("unicode.utf8")?,
        str_wstr,
        ma_used: t.need("dict.ma_used")?,
        dk_refcnt: t.need("dictkeys.dk_refcnt")?,
        dk_usable: t.need("dictkeys.dk_usable")?,
        list_allocated: t.need("list.allocated")?,
        set_smalltable: t.need("set.smalltable")?,
        bytearray_alloc: t.need("bytearray.ob_alloc")?,
        bytearray_bytes_header: t.opt("bytearray.ob_bytes_object").and(t.get("bytes.header_size")),
        code_extra: t.need("code.co_extra")?,
        code_extra_header: t.get("sizeof.code_extra_header").unwrap_or(8),
        code_cell2arg: t.opt("code.co_cell2arg"),
        code_opcache,
        frame_f_frame: t.opt("frame.f_frame"),
        gen_gi_iframe: t.opt("gen.gi_iframe"),
        deque_leftindex: t.need("deque.leftindex")?,
        odict_first: t.need("odict.od_first")?,
        odict_fast_nodes_size: t.need("odict.od_fast_nodes_size")?,
    })
}

fn frame_layout(t: &OffsetTable) -> Option<FrameLayout> {
    if let Some(tstate_frame) = t.opt("tstate.frame") {
        return Some(FrameLayout::Objects {
            tstate_frame,
            f_back: t.opt("frame.f_back")?,
            f_code: t.opt("frame.f_code")?,
            f_locals: t.opt("frame.f_locals")?,
            f_localsplus: t.opt("frame.f_localsplus")?,
            co_nlocals: t.opt("code.co_nlocals")?,
            co_varnames: t.opt("code.co_varnames")?,
            co_cellvars: t.opt("code.co_cellvars")?,
            co_freevars: t.opt("code.co_freevars")?,
            co_stacksize: t.opt("code.co_stacksize")?,
        });
    }
    let current_frame = match t.opt("tstate.current_frame") {
        Some(off) => CurrentFrame::Direct(off),
        None => {
            CurrentFrame::ViaCFrame { cframe: t.opt("tstate.cframe")?, current_frame: t.opt("cframe.current_frame")? }
        }
    };
    let stack_top = match t.opt("iframe.stackpointer") {
        Some(off) => StackTop::Pointer(off),
        None => StackTop::Index(t.opt("iframe.stacktop")?),
    };
    Some(FrameLayout::Interpreter {
        current_frame,
        previous: t.opt("iframe.previous")?,
        code: t.opt("iframe.code")?,
        f_locals: t.opt("iframe.f_locals")?,
        localsplus: t.opt("iframe.localsplus")?,
        stack_top,
        co_nlocalsplus: t.opt("code.co_nlocalsplus")?,
        co_localsplusnames: t.opt("code.co_localsplusnames")?,
        co_stacksize: t.opt("code.co_stacksize")?,
    })
}

/// Pairs each `_Py_DebugOffsets` field the table locates with the table's own value for it.
fn debug_offset_checks(t: &OffsetTable) -> Vec<DebugOffsetCheck> {
    // Only fields leakspy follows: whole-struct sizes differ between builds of one patch
    // release (Debian's 3.15 is built with the JIT, which adds fields) without moving them.
    const PAIRS: &[(&str, &str)] = &[
        ("runtime_state.interpreters_head", "runtime.interpreters_head"),
        ("interpreter_state.next", "interp.next"),
        ("interpreter_state.threads_head", "interp.threads_head"),
        ("interpreter_state.gc", "interp.gc"),
        ("thread_state.interp", "tstate.interp"),
        ("thread_state.next", "tstate.next"),
        ("gc.size", "gc_state.size"),
        ("gc.collecting", "gc_state.collecting"),
    ];
    PAIRS
        .iter()
        .filter_map(|(debug_key, table_key)| {
            Some(DebugOffsetCheck {
                name: debug_key.to_string(),
                at: t.opt(&format!("debug_offsets.{debug_key}"))?,
                expected: t.get(table_key)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checked_in_table_builds_a_layout() {
        assert_eq!(supported_minors().collect::<Vec<_>>(), (6..=15).collect::<Vec<_>>());
        for minor in supported_minors() {
            for layout in candidate_layouts(minor, 0).unwrap_or_else(|e| panic!("3.{minor}: {e}")) {
                assert_eq!(layout.minor, minor);
                assert!(layout.gc_head.size >= 16, "3.{minor}");
                if minor >= 13 {
                    assert!(!layout.debug_offsets.is_empty(), "3.{minor} has _Py_DebugOffsets");
                }
            }
        }
    }

    #[test]
    fn the_nearest_patch_release_at_or_below_comes_first() {
        let order =
            |patch| candidate_layouts(13, patch).unwrap().iter().map(Layout::headers_version).collect::<Vec<_>>();
        assert_eq!(order(0), ["3.13.0", "3.13.18"]);
        assert_eq!(order(17), ["3.13.0", "3.13.18"]);
        assert_eq!(order(20), ["3.13.18", "3.13.0"]);
        assert!(candidate_layouts(99, 0).unwrap().is_empty());
    }

    #[test]
    fn the_version_differences_come_from_the_tables() {
        let l = |m| candidate_layouts(m, 0).unwrap().remove(0);
        assert_eq!(l(6).gc.location, GcLocation::Generation0Symbol);
        assert_eq!(l(6).interp.head, InterpretersHead::Symbol);
        assert!(matches!(l(8).gc.location, GcLocation::Runtime(_)));
        assert_eq!(l(11).gc.location, GcLocation::Interpreter(648));
        assert_eq!(l(14).gc.location, GcLocation::Interpreter(7408));
        assert!(matches!(l(10).dict.format, DictKeysFormat::SizeField { .. }));
        assert!(matches!(l(11).dict.format, DictKeysFormat::Log2 { .. }));
        assert!(!l(11).object.has_immortal && l(12).object.has_immortal);
        assert_eq!(l(14).object.refcnt_size, 4);
        assert!(matches!(l(10).frames, Some(FrameLayout::Objects { .. })));
        let stack_top = |m| match l(m).frames {
            Some(FrameLayout::Interpreter { stack_top, .. }) => Some(stack_top),
            _ => None,
        };
        assert!(matches!(stack_top(11), Some(StackTop::Index(_))));
        assert!(matches!(stack_top(14), Some(StackTop::Pointer(_))));
        assert!(l(11).graph.named_fields.iter().any(|f| field_name(f.name) == "cell_contents"));
        let obmalloc = |m| l(m).obmalloc.map(|o| o.location);
        assert_eq!(obmalloc(6), Some(ObmallocLocation::Statics));
        assert_eq!(obmalloc(11), Some(ObmallocLocation::Statics));
        assert!(matches!(obmalloc(12), Some(ObmallocLocation::Interpreter(_))));
        assert!(matches!(obmalloc(13), Some(ObmallocLocation::InterpreterPointer(_))));
        assert!(matches!(obmalloc(15), Some(ObmallocLocation::InterpreterPointer(_))));
        assert_eq!(l(9).obmalloc.map(|o| o.arena_size), Some(256 << 10));
        for m in 6..=15 {
            assert!(l(m).stacks.is_some(), "3.{m} has what stacks need");
        }
        let format = |m| l(m).stacks.map(|s| (s.format, s.gil.is_some()));
        assert_eq!(format(9), Some((LineTableFormat::Lnotab, true)));
        assert_eq!(format(10), Some((LineTableFormat::Linetable310, true)));
        assert_eq!(format(11), Some((LineTableFormat::Locations, true)));
        assert!(matches!(l(6).stacks.and_then(|s| s.gil), Some(GilLocation::Statics)));
        assert!(matches!(l(14).stacks.and_then(|s| s.gil), Some(GilLocation::Interpreter { .. })));
        assert_eq!(l(10).obmalloc.map(|o| o.arena_size), Some(1 << 20));
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert!(OffsetTable::parse("a = b").is_err());
        assert!(OffsetTable::parse("novalue").is_err());
        assert!(Layout::from_table(11, &OffsetTable::parse("pointer_size = 8").unwrap()).is_err());
    }
}
