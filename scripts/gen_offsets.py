#!/usr/bin/env python3
"""Generate python_offsets/3.X[.Y].toml: CPython struct offsets, measured from real headers.

leakspy reads a live interpreter's memory from outside, so it must know where fields sit in
CPython's structs for every supported minor version. Rather than transcribing layouts by hand
(and getting padding, bitfields or #ifdefs wrong), this script writes a small C program that
includes that version's headers with Py_BUILD_CORE (the runtime, interpreter and GC state
structs are internal), prints `key = value` lines using offsetof/sizeof, compiles it with gcc
and runs it.

Which fields exist changes from version to version. Instead of a hand-kept per-version list,
each key has one or more C expressions to try; the program is compiled, gcc's error lines are
mapped back to the keys that caused them, those keys move on to their next expression (or are
dropped), and the build is retried. A key absent from a version's file means "no such field".

Every header set found is measured. A minor version's primary table, python_offsets/3.X.toml,
comes from its preferred header set (pyenv's build up to 3.13, the Debian sid chroot from
3.14). Layouts can change within a minor version (3.13.18 aligned PyGC_Head, moving fields of
the GC state), so any other header set of that minor whose values differ from the primary's
in any key (PY_VERSION_HEX aside) gets a variant table named by its exact version,
python_offsets/3.X.Y.toml. One that agrees with the primary gets no file.

    python3 scripts/gen_offsets.py             regenerate every table whose headers exist
                                               (and delete variants that are no longer needed)
    python3 scripts/gen_offsets.py --check     compare each checked-in table with what its own
                                               headers give, exit 1 on a difference, a missing
                                               variant or an unneeded one
    python3 scripts/gen_offsets.py --only 3.11 limit to one minor version

A table whose headers are not installed on this machine is skipped, never deleted.

Needs only gcc and this file; run with the system python3.
"""

import argparse
import collections
import difflib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "python_offsets"
MINORS = range(6, 16)
MULTIARCH = "x86_64-linux-gnu"

# Trailing comment for values that come from layouts declared below rather than from headers.
DECLARED = '"declared, not from installed headers"'


def off(struct, member):
    return f"offsetof({struct}, {member})"


def size(struct):
    return f"sizeof({struct})"


RT, IS, TS = "_PyRuntimeState", "PyInterpreterState", "PyThreadState"
GC, DO = "struct _gc_runtime_state", "_Py_DebugOffsets"
IF = "_PyInterpreterFrame"
GEN, OLD_GEN = "struct gc_generation", "struct leakspy_gc_generation"
DK, OLD_DK = "PyDictKeysObject", "struct leakspy_dictkeys"
STATS, OLD_STATS = "struct gc_stats", "struct leakspy_gc_generation_stats"
OLD_POOL = "struct leakspy_pool_header"
OLD_ARENA = "struct leakspy_arena_object"
# The gc_stats.* counters are offsets in one entry; from 3.15 entries sit in ring buffers.
STATS_NOTE = (f"sizeof((({GC} *)0)->generation_stats) == sizeof(void *)"
              ' ? "in each entry of the gc_stats rings" : ""')

# (key, alternatives) in output order. An alternative is a C expression, or (expression,
# C string expression for a trailing comment). The first alternative that compiles wins.
KEYS = [
    ("pointer_size", ["sizeof(void *)"]),
    ("version.hex", ["PY_VERSION_HEX"]),
    ("object.ob_refcnt", [off("PyObject", "ob_refcnt")]),
    ("object.ob_type", [off("PyObject", "ob_type")]),
    # 3.14+ splits the refcount word: a 32-bit count, then overflow and flag fields.
    ("object.refcnt_size", ["sizeof(((PyObject *)0)->ob_refcnt)"]),
    # Only "does the macro exist": an undefined name fails to compile and the key is dropped.
    ("object.immortal", ["((void)_Py_IMMORTAL_INITIAL_REFCNT, 1)",
                         "((void)_Py_IMMORTAL_REFCNT, 1)"]),
    ("varobject.ob_size", [off("PyVarObject", "ob_size")]),
    *[(f"type.{m}", [off("PyTypeObject", m)])
      for m in ("tp_name", "tp_basicsize", "tp_itemsize", "tp_flags", "tp_base", "tp_dict",
                "tp_mro")],
    ("type.size", [size("PyTypeObject")]),
    *[(f"heaptype.{m}", [off("PyHeapTypeObject", m)])
      for m in ("ht_name", "ht_qualname", "ht_module")],
    # 3.6/3.7: a union of a `gc` struct and a long double; 3.8+: two uintptr_t words.
    ("gc_head.size", [size("PyGC_Head")]),
    ("gc_head.next", [off("PyGC_Head", "_gc_next"), off("PyGC_Head", "gc.gc_next")]),
    ("gc_head.prev", [off("PyGC_Head", "_gc_prev"), off("PyGC_Head", "gc.gc_prev")]),
    # 3.6 keeps struct gc_generation private to Modules/gcmodule.c: declared below.
    ("gc_generation.size", [size(GEN), (size(OLD_GEN), DECLARED)]),
    *[(f"gc_generation.{m}", [off(GEN, m), (off(OLD_GEN, m), DECLARED)])
      for m in ("head", "threshold", "count")],
    # struct _gc_runtime_state: in _PyRuntimeState for 3.7/3.8, per interpreter from 3.9.
    # 3.6 has no such struct (module-level statics in gcmodule.c), so these drop out.
    ("gc_state.size", [size(GC)]),
    ("gc_state.enabled", [off(GC, "enabled")]),
    ("gc_state.debug", [off(GC, "debug")]),
    # Free-threaded builds have young/old[2] instead; these headers are the default build.
    ("gc_state.generations", [off(GC, "generations")]),
    ("gc_state.generation_count", ["NUM_GENERATIONS", ("LEAKSPY_NUM_GENERATIONS", DECLARED)]),
    ("gc_state.permanent_generation", [off(GC, "permanent_generation")]),
    # 3.15 turned the inline generation_stats[] array into a pointer: say so in the file.
    ("gc_state.generation_stats", [(off(GC, "generation_stats"),
                                    f"sizeof((({GC} *)0)->generation_stats) == sizeof(void *)"
                                    ' ? "a pointer here, not an array" : ""')]),
    ("gc_state.generation_stats_size", [size("struct gc_generation_stats")]),
    ("gc_state.collecting", [off(GC, "collecting")]),
    ("gc_state.garbage", [off(GC, "garbage")]),
    ("gc_state.callbacks", [off(GC, "callbacks")]),
    ("runtime.interpreters_head", [off(RT, "interpreters.head")]),
    ("runtime.interpreters_main", [off(RT, "interpreters.main")]),
    ("runtime.gc", [off(RT, "gc")]),
    ("runtime.size", [size(RT)]),
    ("interp.next", [off(IS, "next")]),
    ("interp.id", [off(IS, "id")]),
    ("interp.threads_head", [off(IS, "threads.head"), off(IS, "tstate_head")]),
    ("interp.gc", [off(IS, "gc")]),
    # 3.12 moved sys.modules into the `imports` sub-struct.
    ("interp.modules", [off(IS, "modules"), (off(IS, "imports.modules"), '"imports.modules"')]),
    ("interp.sysdict", [off(IS, "sysdict")]),
    ("interp.size", [size(IS)]),
    *[(f"tstate.{m}", [off(TS, m)])
      for m in ("prev", "next", "interp", "thread_id", "native_thread_id", "c_profilefunc",
                "c_tracefunc", "c_profileobj", "c_traceobj")],
    *[(f"unicode.{m}", [off("PyASCIIObject", m)]) for m in ("length", "hash", "state")],
    ("unicode.ascii_size", [size("PyASCIIObject")]),
    ("unicode.compact_size", [size("PyCompactUnicodeObject")]),
    *[(f"dict.{m}", [off("PyDictObject", m)]) for m in ("ma_used", "ma_keys", "ma_values")],
    ("dict.size", [size("PyDictObject")]),
    # Up to 3.10 the dict-keys structs live in Objects/dict-common.h (not installed): the
    # header expression fails (incomplete type) and the declared mirror is used instead.
    ("dictkeys.dk_size", [off(DK, "dk_size"), (off(OLD_DK, "dk_size"), DECLARED)]),
    ("dictkeys.dk_log2_size", [off(DK, "dk_log2_size")]),
    ("dictkeys.dk_log2_index_bytes", [off(DK, "dk_log2_index_bytes")]),
    ("dictkeys.dk_kind", [off(DK, "dk_kind")]),
    ("dictkeys.dk_nentries", [off(DK, "dk_nentries"), (off(OLD_DK, "dk_nentries"), DECLARED)]),
    ("dictkeys.dk_indices", [off(DK, "dk_indices"), (off(OLD_DK, "dk_indices"), DECLARED)]),
    ("dictkeys.entry_size", [size("PyDictKeyEntry"),
                             (size("struct leakspy_dictkeyentry"), DECLARED)]),
    ("dictkeys.unicode_entry_size", [size("PyDictUnicodeEntry")]),
    # 3.13+: where, inside _Py_DebugOffsets (the start of _PyRuntime), the target itself
    # records each value. leakspy reads those and compares them with this table.
    ("debug_offsets.version", [off(DO, "version")]),
    *[(f"debug_offsets.{m}", [off(DO, m)])
      for m in ("runtime_state.size", "runtime_state.interpreters_head",
                "interpreter_state.size", "interpreter_state.next",
                "interpreter_state.threads_head", "interpreter_state.gc",
                "thread_state.interp", "thread_state.next", "gc.size", "gc.collecting")],
    # Containers: where a list's and a tuple's item pointers start. 3.14 put a cached hash
    # (ob_hash) in front of the tuple's items.
    ("list.ob_item", [off("PyListObject", "ob_item")]),
    ("list.allocated", [off("PyListObject", "allocated")]),
    ("tuple.ob_item", [off("PyTupleObject", "ob_item")]),
    # Functions, code objects, bound methods and cells: where a function was defined.
    *[(f"func.{m}", [off("PyFunctionObject", m)])
      for m in ("func_globals", "func_code", "func_closure", "func_name", "func_qualname",
                "func_module")],
    # co_qualname is 3.11+. Python.h of 3.6-3.8 does not include code.h: see PUBLIC_HEADERS.
    *[(f"code.{m}", [off("PyCodeObject", m)])
      for m in ("co_filename", "co_name", "co_qualname", "co_firstlineno")],
    *[(f"method.{m}", [off("PyMethodObject", m)]) for m in ("im_func", "im_self")],
    ("cell.ob_ref", [off("PyCellObject", "ob_ref")]),
    # Named references on `why` paths (func.__defaults__, type.__bases__, ...).
    *[(f"func.{m}", [off("PyFunctionObject", m)]) for m in ("func_defaults", "func_kwdefaults", "func_dict")],
    ("type.tp_bases", [off("PyTypeObject", "tp_bases")]),
    # tp_members: the object fields a type exposes as attributes (__slots__, a function's
    # __globals__, a method's __self__), each a PyMemberDef with a name, a type and an offset.
    ("type.tp_members", [off("PyTypeObject", "tp_members")]),
    ("member.size", [size("PyMemberDef")]),
    ("member.type", [off("PyMemberDef", "type")]),
    ("member.offset", [off("PyMemberDef", "offset")]),
    ("member.t_object", ["T_OBJECT", "Py_T_OBJECT"]),
    ("member.t_object_ex", ["T_OBJECT_EX", "Py_T_OBJECT_EX"]),
    # Threads' frames, roots of the heap graph. 3.6-3.10: PyFrameObjects (GC-tracked) from
    # tstate->frame, locals named by co_varnames + co_cellvars + co_freevars. 3.11+: frames
    # are _PyInterpreterFrame structs on the thread's data stack, reached through
    # tstate->cframe->current_frame (3.11/3.12) or tstate->current_frame (3.13+), locals named
    # by co_localsplusnames; 3.14 made their slots tagged _PyStackRefs.
    ("tstate.frame", [off(TS, "frame")]),
    ("tstate.cframe", [off(TS, "cframe")]),
    ("cframe.current_frame", [off("_PyCFrame", "current_frame")]),
    ("tstate.current_frame", [off(TS, "current_frame")]),
    *[(f"frame.{m}", [off("PyFrameObject", m)]) for m in ("f_back", "f_code", "f_locals", "f_localsplus")],
    ("iframe.previous", [off(IF, "previous")]),
    ("iframe.code", [off(IF, "f_code"), off(IF, "f_executable")]),
    ("iframe.f_locals", [off(IF, "f_locals")]),
    ("iframe.localsplus", [off(IF, "localsplus")]),
    ("iframe.stacktop", [off(IF, "stacktop")]),
    ("iframe.stackpointer", [off(IF, "stackpointer")]),
    *[(f"code.{m}", [off("PyCodeObject", m)])
      for m in ("co_nlocalsplus", "co_localsplusnames", "co_nlocals", "co_varnames", "co_cellvars",
                "co_freevars", "co_stacksize")],
    # struct gc_generation_stats: the element of gc_state.generation_stats up to 3.14 (3.6: of
    # a static array in Modules/gcmodule.c, declared below). 3.15 keeps a pointer there to a
    # struct gc_stats of per-generation ring buffers whose entries are this struct, grown
    # (timestamps first, so the counters moved); the gc_stats.young_*/old_* keys locate them.
    *[(f"gc_stats.{m}", [(off("struct gc_generation_stats", m), STATS_NOTE),
                         (off(OLD_STATS, m), DECLARED)])
      for m in ("collections", "collected", "uncollectable")],
    # 3.15+ only, offsets in struct gc_stats (what gc_state.generation_stats points to).
    # Generation 0 has the young ring, generation 1 + i the ring old[i]. Each ring is an
    # array of struct gc_generation_stats (gc_state.generation_stats_size bytes each) and an
    # int8_t index of its newest entry; entries are cumulative (each starts as a copy of the
    # one before), so the newest one holds the generation's totals.
    ("gc_stats.size", [size(STATS)]),
    ("gc_stats.young_items", [off(STATS, "young.items")]),
    ("gc_stats.young_index", [off(STATS, "young.index")]),
    ("gc_stats.young_slots", ["GC_YOUNG_STATS_SIZE"]),
    ("gc_stats.old_items", [off(STATS, "old[0].items")]),
    ("gc_stats.old_index", [off(STATS, "old[0].index")]),
    ("gc_stats.old_stride", [size("struct gc_old_stats_buffer")]),
    ("gc_stats.old_slots", ["GC_OLD_STATS_SIZE"]),
    ("gc_stats.index_size", [f"sizeof((({STATS} *)0)->young.index)"]),
    ("gc_stats.update_seq", [off(STATS, "update_seq")]),
    # Object structs private to extension modules (Modules/_io/fileio.c,
    # Modules/socketmodule.h), declared below.
    ("fileio.fd", [(off("struct leakspy_fileio", "fd"), DECLARED)]),
    ("socket.sock_fd", [(off("struct leakspy_socket", "sock_fd"), DECLARED)]),
    # Module objects: where a module keeps its namespace (3.6 has no other way to gc.garbage
    # than the gc module's dict). Private to Objects/moduleobject.c before 3.12.
    ("module.md_dict", [off("PyModuleObject", "md_dict"), (off("struct leakspy_module", "md_dict"), DECLARED)]),
    # The heap graph: where instances keep their attributes. 3.6-3.10: a __dict__ pointer at
    # tp_dictoffset. 3.11+: "managed" dicts before the object and, until the dict is made,
    # values arrays whose keys are the type's cached keys (3.13+: inline after the object).
    ("type.tp_dictoffset", [off("PyTypeObject", "tp_dictoffset")]),
    ("heaptype.ht_cached_keys", [off("PyHeapTypeObject", "ht_cached_keys")]),
    ("flags.managed_dict", ["Py_TPFLAGS_MANAGED_DICT"]),
    ("flags.inline_values", ["Py_TPFLAGS_INLINE_VALUES"]),
    ("dictvalues.values", [off("PyDictValues", "values")]),
    ("managed.dict_before", [("LEAKSPY_MANAGED_DICT_BEFORE", DECLARED)]),
    ("managed.values_before", [("LEAKSPY_MANAGED_VALUES_BEFORE", DECLARED)]),
    ("managed.tagged_values", [("LEAKSPY_TAGGED_VALUES", DECLARED)]),
    ("set.table", [off("PySetObject", "table")]),
    ("set.mask", [off("PySetObject", "mask")]),
    ("set.entry_size", [size("setentry")]),
    # sys.getsizeof, computed from outside (src/cpython/sizes.rs): the fields each built-in
    # __sizeof__ reads, and what _PySys_GetSizeOf adds before the object.
    ("flags.preheader", ["Py_TPFLAGS_PREHEADER", "Py_TPFLAGS_MANAGED_DICT"]),
    ("flags.have_gc", ["Py_TPFLAGS_HAVE_GC"]),
    # pymalloc: objects up to SMALL_REQUEST_THRESHOLD bytes live in pools of same-size blocks.
    # A census reads whole pools in a few large reads instead of each object on its own
    # (src/heap/pools.rs). Private to Objects/obmalloc.c before 3.12: declared below.
    ("obmalloc.pool_size", ["POOL_SIZE", ("LEAKSPY_POOL_SIZE", DECLARED)]),
    ("obmalloc.alignment", ["ALIGNMENT", ("LEAKSPY_ALIGNMENT", DECLARED)]),
    ("obmalloc.small_request_threshold", ["SMALL_REQUEST_THRESHOLD", ("LEAKSPY_SMALL_REQUEST_THRESHOLD", DECLARED)]),
    ("pool_header.size", [size("struct pool_header"), (size(OLD_POOL), DECLARED)]),
    *[(f"pool_header.{m}", [off("struct pool_header", f), (off(OLD_POOL, f), DECLARED)])
      for m, f in (("count", "ref.count"), ("freeblock", "freeblock"), ("szidx", "szidx"),
                   ("nextoffset", "nextoffset"), ("maxnextoffset", "maxnextoffset"))],
    # pymalloc's own state, for the memory split (src/memory/pymalloc.rs): the arena table
    # and its counters, as sys._debugmallocstats() reads them. Statics of Objects/obmalloc.c
    # before 3.12 (found by symbol: obmalloc.statics); 3.12 embeds the state in the
    # interpreter state, 3.13+ point to it from there (interp.obmalloc_is_pointer).
    ("obmalloc.arena_size", ["ARENA_SIZE", ("LEAKSPY_ARENA_SIZE", DECLARED)]),
    ("obmalloc.statics", [("LEAKSPY_OBMALLOC_STATICS", DECLARED)]),
    ("interp.obmalloc", [off(IS, "obmalloc")]),
    ("interp.obmalloc_is_pointer",
     [f"__builtin_types_compatible_p(__typeof__((({IS} *)0)->obmalloc), struct _obmalloc_state *)"]),
    *[(f"obmalloc_state.{m}", [off("struct _obmalloc_state", f"mgmt.{m}")])
      for m in ("arenas", "maxarenas", "narenas_currently_allocated", "ntimes_arena_allocated",
                "narenas_highwater")],
    ("arena_object.size", [size("struct arena_object"), (size(OLD_ARENA), DECLARED)]),
    *[(f"arena_object.{m}", [off("struct arena_object", m), (off(OLD_ARENA, m), DECLARED)])
      for m in ("address", "pool_address", "nfreepools", "ntotalpools")],
    # `leakspy stacks`: the line a frame is at (its last instruction and the code's line
    # table; the table's format is declared: lnotab up to 3.9, 3.10's line table, the 3.11+
    # location table) and which thread holds the GIL (statics up to 3.6, _PyRuntime's
    # ceval.gil 3.7-3.11, the interpreter's ceval.gil pointer from 3.12).
    ("frame.f_lasti", [off("PyFrameObject", "f_lasti")]),
    ("frame.lasti_unit", [("LEAKSPY_LASTI_UNIT", DECLARED)]),
    ("iframe.prev_instr", [off(IF, "prev_instr")]),
    ("iframe.instr_ptr", [off(IF, "instr_ptr")]),
    ("code.co_code_adaptive", [off("PyCodeObject", "co_code_adaptive")]),
    ("code.co_linetable", [off("PyCodeObject", "co_linetable"), off("PyCodeObject", "co_lnotab")]),
    ("code.linetable_format", [("LEAKSPY_LINETABLE_FORMAT", DECLARED)]),
    ("bytes.ob_sval", [off("PyBytesObject", "ob_sval")]),
    ("gil.statics", [("LEAKSPY_GIL_STATICS", DECLARED)]),
    ("runtime.gil_last_holder", [off(RT, "ceval.gil.last_holder")]),
    ("runtime.gil_locked", [off(RT, "ceval.gil.locked")]),
    ("interp.ceval_gil", [off(IS, "ceval.gil")]),
    ("gil.last_holder", [off("struct _gil_runtime_state", "last_holder")]),
    ("gil.locked", [off("struct _gil_runtime_state", "locked")]),
    ("sizeof.static_type_preheader", [("LEAKSPY_STATIC_TYPE_PREHEADER", DECLARED)]),
    ("sizeof.int_min_digits", [("LEAKSPY_INT_MIN_DIGITS", DECLARED)]),
    ("sizeof.code_extra_header", [("LEAKSPY_CODE_EXTRA_HEADER", DECLARED)]),
    ("heaptype.size", [size("PyHeapTypeObject")]),
    ("long.ob_digit", [off("PyLongObject", "ob_digit"), off("PyLongObject", "long_value.ob_digit")]),
    ("long.lv_tag", [off("PyLongObject", "long_value.lv_tag")]),
    ("unicode.object_size", [size("PyUnicodeObject")]),
    ("unicode.data", [off("PyUnicodeObject", "data")]),
    ("unicode.utf8_length", [off("PyCompactUnicodeObject", "utf8_length")]),
    ("unicode.utf8", [off("PyCompactUnicodeObject", "utf8")]),
    ("unicode.wstr", [off("PyASCIIObject", "wstr")]),
    ("unicode.wstr_length", [off("PyCompactUnicodeObject", "wstr_length")]),
    ("dictkeys.dk_refcnt", [off(DK, "dk_refcnt"), (off(OLD_DK, "dk_refcnt"), DECLARED)]),
    ("dictkeys.dk_usable", [off(DK, "dk_usable"), (off(OLD_DK, "dk_usable"), DECLARED)]),
    ("set.smalltable", [off("PySetObject", "smalltable")]),
    ("bytearray.ob_alloc", [off("PyByteArrayObject", "ob_alloc")]),
    # 3.15 backs a bytearray with a bytes object, whose size __sizeof__ adds.
    ("bytearray.ob_bytes_object", [off("PyByteArrayObject", "ob_bytes_object")]),
    ("bytes.header_size", [off("PyBytesObject", "ob_sval") + " + 1"]),
    ("code.co_extra", [off("PyCodeObject", "co_extra")]),
    ("code.co_cell2arg", [off("PyCodeObject", "co_cell2arg")]),
    ("code.co_opcache", [off("PyCodeObject", "co_opcache")]),
    ("code.co_opcache_size", [off("PyCodeObject", "co_opcache_size")]),
    ("code.co_code", [off("PyCodeObject", "co_code")]),
    ("frame.f_frame", [off("PyFrameObject", "f_frame")]),
    ("gen.gi_iframe", [off("PyGenObject", "gi_iframe")]),
    # Private to Modules/_collectionsmodule.c and Objects/odictobject.c: declared below.
    ("deque.leftindex", [("LEAKSPY_DEQUE_LEFTINDEX", DECLARED)]),
    # A deque's items live in a linked list of blocks of 64 slots (leftlink, data[64],
    # rightlink), from leftblock[leftindex] on, ob_size of them: read exactly by `why`.
    ("deque.leftblock", [("LEAKSPY_DEQUE_LEFTBLOCK", DECLARED)]),
    ("deque_block.data", [("LEAKSPY_DEQUE_BLOCK_DATA", DECLARED)]),
    ("deque_block.len", [("LEAKSPY_DEQUE_BLOCKLEN", DECLARED)]),
    ("deque_block.rightlink", [("LEAKSPY_DEQUE_BLOCK_RIGHTLINK", DECLARED)]),
    # Weak references: wr_object keeps nothing alive (not an edge for paths or retained
    # sizes), wr_callback does; wr_prev/wr_next link the referent's weakrefs (borrowed), and
    # tp_weaklistoffset is where an object keeps the head of that list (borrowed too).
    *[(f"weakref.{m}", [off("PyWeakReference", m)]) for m in ("wr_object", "wr_callback", "wr_prev", "wr_next")],
    ("type.tp_weaklistoffset", [off("PyTypeObject", "tp_weaklistoffset")]),
    # Words of objects that hold no reference and may hold anything: 3.14+ code objects'
    # _co_unique_id is set only by free-threaded builds, and keeps whatever the memory held
    # before (often a pointer to a live object) in the others.
    ("code.co_unique_id", [off("PyCodeObject", "_co_unique_id")]),
    # 3.12+: static builtin types (int, dict, ...) keep their __dict__ and __subclasses__
    # per interpreter, in the interpreter's types state: roots of the heap graph.
    ("static_types.builtins", [off(IS, "types.builtins.initialized"), off(IS, "types.builtins")]),
    ("static_types.count", [off(IS, "types.builtins.num_initialized"), off(IS, "types.num_builtins_initialized")]),
    ("static_types.max", ["_Py_MAX_MANAGED_STATIC_BUILTIN_TYPES", "_Py_MAX_STATIC_BUILTIN_TYPES"]),
    ("static_types.entry_size", [size("managed_static_type_state"), size("static_builtin_state")]),
    ("static_types.tp_dict", [off("managed_static_type_state", "tp_dict"), off("static_builtin_state", "tp_dict")]),
    ("static_types.tp_subclasses", [off("managed_static_type_state", "tp_subclasses"),
                                    off("static_builtin_state", "tp_subclasses")]),
    ("odict.od_first", [("LEAKSPY_ODICT_FIRST", DECLARED)]),
    ("odict.od_fast_nodes_size", [("LEAKSPY_ODICT_FAST_NODES_SIZE", DECLARED)]),
    # Objects the interpreter itself holds, outside any module: roots of the heap graph, so
    # that what only they keep alive is not reported as held by native code. 3.12 keeps the
    # interned strings in _PyRuntime, 3.13+ per interpreter; before, in a static.
    ("roots.interp.codec_search_path", [off(IS, "codec_search_path"), off(IS, "codecs.search_path")]),
    ("roots.interp.codec_search_cache", [off(IS, "codec_search_cache"), off(IS, "codecs.search_cache")]),
    ("roots.interp.codec_error_registry", [off(IS, "codec_error_registry"), off(IS, "codecs.error_registry")]),
    ("roots.interp.dict", [off(IS, "dict")]),
    ("roots.interp.builtins_copy", [off(IS, "builtins_copy")]),
    ("roots.interp.audit_hooks", [off(IS, "audit_hooks")]),
    ("roots.interp.before_forkers", [off(IS, "before_forkers")]),
    ("roots.interp.after_forkers_parent", [off(IS, "after_forkers_parent")]),
    ("roots.interp.after_forkers_child", [off(IS, "after_forkers_child")]),
    ("roots.interp.interned_strings", [off(IS, "cached_objects.interned_strings")]),
    ("roots.runtime.interned_strings", [off(RT, "cached_objects.interned_strings")]),
    # 3.12+: _Py_GlobalMonitors, one byte per sys.monitoring event: the bitmask of the tools
    # that turned it on globally (sys.setprofile/settrace are tools too from 3.12).
    ("interp.monitors", [off(IS, "monitors")]),
]

# Internal headers holding the structs above. __has_include picks whichever exist in the
# version at hand (3.7: internal/pystate.h; 3.8: pycore_pystate.h; 3.9+: pycore_runtime.h...).
INTERNAL_HEADERS = ["pystate.h", "pycore_pystate.h", "pycore_runtime.h", "pycore_interp.h",
                    "pycore_gc.h", "pycore_dict.h", "pycore_debug_offsets.h", "pycore_frame.h",
                    "pycore_interpframe_structs.h", "pycore_obmalloc.h"]

# Public headers that Python.h does not include in every version (3.6-3.8: code.h;
# frameobject.h declares PyFrameObject up to 3.10; structmember.h PyMemberDef up to 3.11).
PUBLIC_HEADERS = ["code.h", "frameobject.h", "structmember.h"]

# Layouts no installed header provides, declared for exactly the versions that need them.
DECLARATIONS = """
#if PY_VERSION_HEX < 0x03070000
/* Mirrors Modules/gcmodule.c of CPython 3.6. */
struct leakspy_gc_generation { PyGC_Head head; int threshold; int count; };
#define LEAKSPY_NUM_GENERATIONS 3
struct leakspy_gc_generation_stats {
    Py_ssize_t collections; Py_ssize_t collected; Py_ssize_t uncollectable;
};
#endif
#if PY_VERSION_HEX < 0x030B0000
/* Mirrors Objects/dict-common.h of CPython 3.6-3.10. */
struct leakspy_dictkeyentry { Py_hash_t me_hash; PyObject *me_key; PyObject *me_value; };
struct leakspy_dictkeys {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;              /* dict_lookup_func: a function pointer */
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
#if PY_VERSION_HEX < 0x03070000
    union { int8_t as_1[8]; int16_t as_2[4]; int32_t as_4[2]; int64_t as_8[1]; } dk_indices;
#else
    char dk_indices[];
#endif
};
#endif
/* Where 3.11+ keep an instance's managed __dict__ (and 3.11/3.12 its values array): words
   before the object, defined by macros in Include/internal/pycore_object.h, not as fields. */
#if PY_VERSION_HEX >= 0x030B0000
#define LEAKSPY_MANAGED_DICT_BEFORE 24     /* ((PyObject **)obj)-3 */
#endif
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define LEAKSPY_MANAGED_VALUES_BEFORE 32   /* 3.11: ((PyDictValues **)obj)-4 */
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#define LEAKSPY_TAGGED_VALUES 1            /* 3.12: PyDictOrValues, values tagged with bit 0 */
#endif
/* sys.getsizeof: what _PySys_GetSizeOf (Python/sysmodule.c) adds for a static type object
   (3.11/3.12 add the type's pre-header to every class; 3.6-3.10 ask tp_is_gc, 3.13+ skip it),
   the fewest digits int.__sizeof__ counts (3.11+ count zero as one digit), and the header
   code.__sizeof__ adds to co_extra's (3.6 counts the entries only). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define LEAKSPY_STATIC_TYPE_PREHEADER 1
#else
#define LEAKSPY_STATIC_TYPE_PREHEADER 0
#endif
#if PY_VERSION_HEX >= 0x030B0000
#define LEAKSPY_INT_MIN_DIGITS 1
#else
#define LEAKSPY_INT_MIN_DIGITS 0
#endif
#if PY_VERSION_HEX >= 0x03070000
#define LEAKSPY_CODE_EXTRA_HEADER 8
#else
#define LEAKSPY_CODE_EXTRA_HEADER 0
#endif
#if PY_VERSION_HEX < 0x030C0000
/* Mirrors Objects/obmalloc.c of CPython 3.6-3.11 (64-bit builds): the pool header, pools of
   16 KiB from 3.10 (USE_LARGE_POOLS with the radix tree) and 4 KiB before. */
struct leakspy_pool_header {
    union { void *_padding; unsigned int count; } ref;
    void *freeblock;
    struct leakspy_pool_header *nextpool;
    struct leakspy_pool_header *prevpool;
    unsigned int arenaindex;
    unsigned int szidx;
    unsigned int nextoffset;
    unsigned int maxnextoffset;
};
#define LEAKSPY_SMALL_REQUEST_THRESHOLD 512
#if PY_VERSION_HEX >= 0x030A0000
#define LEAKSPY_POOL_SIZE 16384
#define LEAKSPY_ARENA_SIZE (1 << 20)
#else
#define LEAKSPY_POOL_SIZE 4096
#define LEAKSPY_ARENA_SIZE (1 << 18)
#endif
/* The arena table and its counters are file statics (`arenas`, `maxarenas`,
   `narenas_currently_allocated`, ...): found through .symtab. */
#define LEAKSPY_OBMALLOC_STATICS 1
struct leakspy_arena_object {
    uintptr_t address;
    void *pool_address;
    unsigned int nfreepools;
    unsigned int ntotalpools;
    struct leakspy_pool_header *freepools;
    struct leakspy_arena_object *nextarena;
    struct leakspy_arena_object *prevarena;
};
/* 16 from 3.8 (bpo-27987), and in the 3.6 and 3.7 releases the tables come from (3.6.15 and
   3.7.16 print "in 32 size classes" in sys._debugmallocstats()): the change was backported.
   Releases before the backport aligned to 8. */
#define LEAKSPY_ALIGNMENT 16
#endif
/* Line tables: 1 = co_lnotab (3.6-3.9, f_lasti in bytes), 2 = 3.10's co_linetable (f_lasti
   in code units), 3 = the location table (3.11+, Objects/locations.md). */
#if PY_VERSION_HEX < 0x030A0000
#define LEAKSPY_LINETABLE_FORMAT 1
#define LEAKSPY_LASTI_UNIT 1
#elif PY_VERSION_HEX < 0x030B0000
#define LEAKSPY_LINETABLE_FORMAT 2
#define LEAKSPY_LASTI_UNIT 2
#else
#define LEAKSPY_LINETABLE_FORMAT 3
#endif
/* 3.6 keeps the GIL's state in statics of Python/ceval_gil.h (gil_locked, gil_last_holder). */
#if PY_VERSION_HEX < 0x03070000
#define LEAKSPY_GIL_STATICS 1
#endif
/* dequeobject (Modules/_collectionsmodule.c): PyObject_VAR_HEAD, leftblock, rightblock,
   leftindex; PyODictObject (Objects/odictobject.c): PyDictObject, od_first, od_last,
   od_fast_nodes, od_fast_nodes_size. The same in every version. */
#define LEAKSPY_DEQUE_LEFTINDEX (sizeof(PyVarObject) + 2 * sizeof(void *))
#define LEAKSPY_DEQUE_LEFTBLOCK sizeof(PyVarObject)
/* block (Modules/_collectionsmodule.c): leftlink, data[BLOCKLEN], rightlink; BLOCKLEN 64. */
#define LEAKSPY_DEQUE_BLOCKLEN 64
#define LEAKSPY_DEQUE_BLOCK_DATA sizeof(void *)
#define LEAKSPY_DEQUE_BLOCK_RIGHTLINK ((1 + LEAKSPY_DEQUE_BLOCKLEN) * sizeof(void *))
#define LEAKSPY_ODICT_FIRST sizeof(PyDictObject)
#define LEAKSPY_ODICT_FAST_NODES_SIZE (sizeof(PyDictObject) + 3 * sizeof(void *))
/* Mirrors the start of PyModuleObject in Objects/moduleobject.c. */
struct leakspy_module { PyObject_HEAD PyObject *md_dict; };
/* Mirrors the start of `fileio` in Modules/_io/fileio.c (the _io.FileIO object). */
struct leakspy_fileio { PyObject_HEAD int fd; };
/* Mirrors the start of PySocketSockObject in Modules/socketmodule.h: SOCKET_T is int on Unix. */
struct leakspy_socket { PyObject_HEAD int sock_fd; };
"""


# One installed set of headers: `inc` holds Python.h, `label` is how the file names it.
HeaderSet = collections.namedtuple("HeaderSet", "minor origin label inc")


def pyenv_root():
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    return Path.home() / ".pyenv"


def pyenv_headers(minor):
    root = pyenv_root()
    builds = [p for p in (root / "versions").glob(f"3.{minor}.*")
              if re.fullmatch(rf"3\.{minor}\.\d+", p.name)]  # skip 3.13.0t and the like
    for build in sorted(builds, key=lambda p: int(p.name.split(".")[2]), reverse=True):
        for inc in (build / f"include/python3.{minor}", build / f"include/python3.{minor}m"):
            if (inc / "Python.h").exists() and (inc / "pyconfig.h").exists():
                # The label is written into the file, so keep it independent of this machine.
                label = f"$(pyenv root)/versions/{build.name}/include/{inc.name}"
                return HeaderSet(minor, "pyenv", label, inc)
    return None


def sid_headers(minor):
    root = Path(os.environ.get("LEAKSPY_SID_ROOT", "/var/lib/leakspy/sid"))
    inc = root / "usr/include" / f"python3.{minor}"
    if not (inc / "Python.h").exists() or not (inc / "internal").is_dir():
        return None
    label = f"${{LEAKSPY_SID_ROOT:-/var/lib/leakspy/sid}}/usr/include/python3.{minor}"
    return HeaderSet(minor, "sid", label, inc)


def header_sets(minor):
    """The set 3.X.toml is generated from (None if absent), and the others found, which get a
    variant table where they disagree with it."""
    found = {"pyenv": pyenv_headers(minor), "sid": sid_headers(minor)}
    primary = "pyenv" if minor <= 13 else "sid"
    return found[primary], [h for o, h in found.items() if o != primary and h]


def c_program(keys):
    """The C source, and which key each source line belongs to."""
    lines = ["/* Written by scripts/gen_offsets.py; compiled, run and deleted. */",
             "#define Py_BUILD_CORE 1", "#include <stddef.h>", "#include <stdio.h>",
             "#include <stdint.h>", '#include "Python.h"']
    for h in PUBLIC_HEADERS:
        lines += [f'#if __has_include("{h}")', f'#  include "{h}"', "#endif"]
    for h in INTERNAL_HEADERS:
        lines += [f'#if __has_include("internal/{h}")', f'#  include "internal/{h}"', "#endif"]
    lines += DECLARATIONS.strip().splitlines()
    line_of = {}
    # One function per key, so that gcc reports each undeclared name on every key using it.
    for i, (key, expr, note) in enumerate(keys):
        line_of[len(lines) + 1] = key
        lines.append(f'static void k{i}(void) {{ const char *n = {note}; '
                     f'printf("%s = %llu%s%s\\n", "{key}", (unsigned long long)({expr}), '
                     '*n ? "  # " : "", n); }')
    lines.append("int main(void) {")
    lines.append('    printf("python_version = %s\\n", PY_VERSION);')
    lines += [f"    k{i}();" for i in range(len(keys))]
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n", line_of


def measure(hs):
    """Compile and run the probe for one header set: (PY_VERSION, [(key, value, comment)])."""
    choice = {key: 0 for key, _ in KEYS}  # index of the alternative being tried, per key
    with tempfile.TemporaryDirectory(prefix="gen_offsets.") as tmp:
        tmp = Path(tmp)
        flags = [f"-I{hs.inc}"]
        if hs.origin == "sid":
            # Debian's pyconfig.h is a wrapper including <x86_64-linux-gnu/python3.X/pyconfig.h>.
            # Expose just that multiarch directory: -I on the chroot's usr/include would also
            # put its libc headers in front of the host compiler's own.
            shim = tmp / "shim"
            shim.mkdir()
            (shim / MULTIARCH).symlink_to(hs.inc.parent / MULTIARCH)
            flags.append(f"-I{shim}")
        while True:
            keys = []
            for key, alts in KEYS:
                if choice[key] < len(alts):
                    alt = alts[choice[key]]
                    expr, note = alt if isinstance(alt, tuple) else (alt, '""')
                    keys.append((key, expr, note))
            src, line_of = c_program(keys)
            (tmp / "probe.c").write_text(src)
            cc = subprocess.run(["gcc", "-w", "-o", str(tmp / "probe"), str(tmp / "probe.c"),
                                 *flags], capture_output=True, text=True)
            if cc.returncode == 0:
                break
            failed = {line_of.get(int(n)) for n in
                      re.findall(r"^[^:\n]*probe\.c:(\d+):\d+: error:", cc.stderr, re.M)}
            if not failed or None in failed:
                # An error outside the key lines (in a header, in the declarations): a real
                # problem with this header set, not a missing field.
                sys.exit(f"gen_offsets: 3.{hs.minor} ({hs.label}) does not compile:\n{cc.stderr}")
            for key in failed:
                choice[key] += 1
        run = subprocess.run([str(tmp / "probe")], capture_output=True, text=True, check=True)
    values, version = [], None
    for line in run.stdout.splitlines():
        key, _, rest = line.partition(" = ")
        if key == "python_version":
            version = rest
        else:
            value, _, comment = rest.partition("  # ")
            values.append((key, int(value), comment))
    return version, values


def render(hs, version, values, variant):
    out = [f"# CPython 3.{hs.minor} struct offsets for x86_64, generated by scripts/gen_offsets.py",
           f"# from {hs.label} (Python {version}). Do not edit: regenerate."]
    if variant:
        # Only this header set's own version goes in: the file must not depend on the primary
        # headers, so that it can be checked on a machine that lacks them.
        out.append(f"# A variant of 3.{hs.minor}.toml for this patch release, "
                   "whose headers give different values.")
    for key, value, comment in values:
        out.append(f"{key} = {value}" + (f"  # {comment}" if comment else ""))
    return "\n".join(out) + "\n"


def variant_path(minor, version):
    """python_offsets/3.X.Y.toml for a PY_VERSION such as "3.13.18" or Debian's "3.13.18+"."""
    m = re.fullmatch(rf"(3\.{minor}\.\d+(?:(?:a|b|rc)\d+)?)\+?", version)
    if not m:
        sys.exit(f"gen_offsets: cannot name a 3.{minor} table after Python version {version!r}")
    return OUT_DIR / f"{m.group(1)}.toml"


def variant_files(minor):
    """The variant tables of one minor version currently in python_offsets/."""
    return sorted(p for p in OUT_DIR.glob(f"3.{minor}.*.toml")
                  if re.fullmatch(rf"3\.{minor}\.\d+\w*\.toml", p.name))


def differences(main_values, values):
    """(key, value in main, value in other) wherever two measurements disagree. PY_VERSION_HEX
    is left out: it always differs between patch releases and says nothing about layout."""
    a = {k: v for k, v, _ in main_values if k != "version.hex"}
    b = {k: v for k, v, _ in values if k != "version.hex"}
    return [(k, a.get(k, "absent"), b.get(k, "absent"))
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# A file python_offsets/ should hold: its path, its content and where that came from.
Table = collections.namedtuple("Table", "path text source")


def rel(path):
    return path.relative_to(ROOT)


def plan(minor):
    """Measure every header set of one minor version and work out the files it needs.

    Returns (tables, unneeded, notes): the tables to write or check, variant files present
    whose header set agrees with the primary one, and lines to print after the tables' status.
    Variant files whose header set is not installed only get a "skipped" note.
    """
    primary, others = header_sets(minor)
    tables, unneeded, notes, measured = [], [], [], set()
    main_values = None
    if primary is None:
        notes.append(f"python_offsets/3.{minor}.toml skipped (headers absent)")
    else:
        version, main_values = measure(primary)
        tables.append(Table(OUT_DIR / f"3.{minor}.toml",
                            render(primary, version, main_values, variant=False),
                            f"{primary.label} (Python {version})"))
    for hs in others:
        version, values = measure(hs)
        path = variant_path(minor, version)
        if path in measured:
            sys.exit(f"gen_offsets: two header sets would both write {rel(path)}")
        measured.add(path)
        source = f"{hs.label} (Python {version})"
        table = Table(path, render(hs, version, values, variant=True), source)
        if main_values is None:
            # Without the primary headers there is nothing to decide with; an existing variant
            # can still be checked against its own headers.
            if path.exists():
                tables.append(table)
            else:
                notes.append(f"{source} not compared (headers of 3.{minor}.toml absent)")
            continue
        diffs = differences(main_values, values)
        if diffs:
            notes.append(f"{source} differs from 3.{minor}.toml, hence {path.name}:")
            notes += [f"  {key}: {a} in 3.{minor}.toml, {b} in {path.name}"
                      for key, a, b in diffs]
            tables.append(table)
        else:
            notes.append(f"{source} agrees with 3.{minor}.toml, no variant needed")
            if path.exists():
                unneeded.append(path)
    for path in variant_files(minor):
        if path not in measured:
            notes.append(f"{rel(path)} skipped (headers absent)")
    return tables, unneeded, notes


def check(minor, table):
    """Compare a checked-in table with what its headers give; print a diff if they differ."""
    old = table.path.read_text() if table.path.exists() else None
    if old == table.text:
        print(f"3.{minor}: {rel(table.path)} is up to date ({table.source})")
        return True
    if old is None:
        print(f"3.{minor}: {rel(table.path)} is missing; {table.source} gives:")
    else:
        print(f"3.{minor}: {rel(table.path)} differs from what {table.source} gives:")
    sys.stdout.writelines(difflib.unified_diff(
        (old or "").splitlines(True), table.text.splitlines(True),
        f"{rel(table.path)} (checked in)", table.source))
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the checked-in files instead of writing them")
    ap.add_argument("--only", metavar="3.X", help="only this minor version")
    args = ap.parse_args()
    if platform.machine() != "x86_64":
        sys.exit("gen_offsets: the tables describe x86_64; run this on an x86_64 machine")
    if shutil.which("gcc") is None:
        sys.exit("gen_offsets: gcc not found (it compiles the offset probe)")
    minors = list(MINORS)
    if args.only:
        m = re.fullmatch(r"3\.(\d+)", args.only)
        if not m or int(m.group(1)) not in MINORS:
            sys.exit(f"gen_offsets: --only expects one of 3.{MINORS[0]} .. 3.{MINORS[-1]}")
        minors = [int(m.group(1))]

    ok = True
    for minor in minors:
        tables, unneeded, notes = plan(minor)
        if args.check:
            for table in tables:
                ok = check(minor, table) and ok
            for path in unneeded:
                ok = False
                print(f"3.{minor}: {rel(path)} is not needed: its headers agree with "
                      f"3.{minor}.toml (running the script without --check deletes it)")
        else:
            OUT_DIR.mkdir(exist_ok=True)
            for table in tables:
                table.path.write_text(table.text)
                print(f"3.{minor}: wrote {rel(table.path)} from {table.source}")
            for path in unneeded:
                path.unlink()
                print(f"3.{minor}: deleted {rel(path)}: its headers agree with 3.{minor}.toml")
        for note in notes:
            print(f"3.{minor}: {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
