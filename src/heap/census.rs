//! A census: per type, how many GC-tracked objects are alive and the sum of their refcounts.
//! Plain data, serialisable, the unit everything over time is built from.

use super::details::{FunctionGroup, OpenClosed, Watched, WatchedObjects, read_details};
use super::pools::ObjectIndex;
use super::walk::{ObjectHeader, WalkLimits, WalkStats, Walker};
use crate::analysis::findings::Finding;
use crate::cpython::layout::ObjectLayout;
use crate::cpython::objects::type_name;
use crate::cpython::process::{PythonProcess, read_error};
use crate::cpython::pymalloc::read_pymalloc;
use crate::cpython::stacks::{ThreadStack, read_stacks};
use crate::cpython::state::{GcInfo, ThreadInfo, gc_info, threads};
use crate::error::LeakspyError;
use crate::memory::RemoteMemory;
use crate::memory::proc_info::{Descriptors, MemoryPart, MemorySplit, ProcessInfo};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::time::{Instant, SystemTime};

/// Bumped when a field changes meaning or disappears; adding fields does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub name: String,
    pub count: u64,
    /// Sum of refcounts of the mortal objects of this type.
    pub refcount_sum: u64,
    /// Immortal objects (3.12+) are counted in `count` but not in `refcount_sum`.
    pub immortal: u64,
    /// With `--all` (from the heap graph): how many of `count` the GC does not track (str,
    /// int, untracked tuples and dicts), found through references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untracked: Option<u64>,
    /// With `--all`: sys.getsizeof summed over the objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// With `--all`: refcounts no object or frame in the heap explains (native code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_refs: Option<u64>,
    /// With `--all`: memory freed if every object of the type went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct BulkRead {
    pub bytes_scanned: u64,
    pub pools: u64,
    /// Object headers indexed.
    pub indexed: u64,
    /// Objects the walk took from the index instead of reading them.
    pub hits: u64,
    /// The index stopped at its memory bound (12 % of the target's resident memory); the
    /// objects past it were read one by one.
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct IoStats {
    pub reads: u64,
    pub bytes_read: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationCount {
    pub interpreter: i64,
    pub generation: String,
    pub objects: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Census {
    pub schema_version: u32,
    pub pid: i32,
    pub python_version: String,
    /// Where the version was read: "Py_Version", "PY_VERSION string" or "file name" (then
    /// the patch level is unknown and shown as 0).
    #[serde(default)]
    pub python_version_source: String,
    pub python_binary: String,
    /// RFC 3339, UTC, when the read started.
    pub timestamp: String,
    pub duration_ms: f64,
    pub objects_total: u64,
    pub immortal_total: u64,
    pub interpreters: u64,
    /// False unless the target was paused during the read: a running target may change
    /// under the walk, and `torn_links` says how much that showed.
    pub consistent: bool,
    /// With --pause: how long the target's threads were stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// With --pause: the bytes copied while they were (what the target had written of its
    /// writable memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_bytes: Option<u64>,
    pub torn_links: u64,
    pub resynced_objects: u64,
    pub broken_lists: u64,
    /// Objects whose type could not be read (freed or being rewritten during the walk).
    pub unreadable_objects: u64,
    /// Threads left out of `threads` because they exited (or started) under the read.
    #[serde(default)]
    pub skipped_threads: u64,
    /// Interpreters left out because one was created or torn down under the read.
    #[serde(default)]
    pub skipped_interpreters: u64,
    /// Whole reads started again because the target changed under them (a list head
    /// relinked, a freed interpreter followed); each retry reads from scratch.
    #[serde(default)]
    pub retries: u32,
    /// Where pymalloc's pools were read in bulk: what that read and how much of the walk it
    /// served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkRead>,
    /// What reading the target cost: requests made and bytes read (from the memory layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
    /// The walk hit its object limit; counts are a lower bound.
    pub truncated: bool,
    /// A GC collection was running during the read (explains torn links).
    pub gc_collecting: bool,
    pub generations: Vec<GenerationCount>,
    /// Who the process is (start time, command line, host, RSS): filled in by the commands,
    /// absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// Sorted by count, largest first.
    pub types: Vec<TypeCount>,
    /// GC settings and statistics per GC state (one per interpreter from 3.9).
    #[serde(default)]
    pub gc: Vec<GcInfo>,
    /// Threads of every interpreter, with their tracing and profiling hooks.
    #[serde(default)]
    pub threads: Vec<ThreadInfo>,
    /// What each thread is running: its Python stack, innermost frame last, with lines and
    /// the GIL's holder.
    #[serde(default)]
    pub stacks: Vec<ThreadStack>,
    /// Functions and bound methods grouped by the code they run, most numerous first.
    #[serde(default)]
    pub functions: Vec<FunctionGroup>,
    /// Descriptors of the process next to its Python file and socket objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The process's memory split (filled in by the commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySplit>,
    /// Sentences a person can act on, each naming its evidence.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// With `--all`: the heap graph the per-type sizes and references came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphTotals>,
    /// Read back from an `attach` recording: seconds since sampling began, as `attach` timed
    /// the sample (its line writes the field, next to the census). A report places the
    /// samples by it, so that its rates are the summary's to the digit.
    #[serde(default, skip_serializing)]
    pub elapsed_s: Option<f64>,
    /// Read from a core file or image, not a live process: which, and when it was dumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreSource>,
}

/// Where a census read from a file came from. `timestamp` of such a census is the time of the
/// dump (so a history places it where the process was), and `read_at` when leakspy read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CoreSource {
    /// The file as the user named it.
    pub file: String,
    /// "leakspy image" (with leakspy's note) or "core" (a kernel core or gdb's gcore).
    pub kind: String,
    pub compressed: bool,
    /// When the process was dumped (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumped_at: Option<String>,
    /// Where `dumped_at` comes from: "leakspy note" (the dump's own clock) or "core file
    /// mtime" (when the file was last written: the dump, unless it was copied without -p).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumped_at_source: Option<String>,
    pub read_at: String,
    /// Bytes of the process's memory the file holds.
    pub bytes_held: u64,
    /// Threads the core lists (one NT_PRSTATUS note each).
    pub threads: u64,
    /// The host the process ran on, where the image says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Files the core names that were read from this machine for what it left out (read-only
    /// data such as type names), and where they were found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_used: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphTotals {
    /// Objects found: GC-tracked and not.
    pub objects: u64,
    pub untracked: u64,
    pub references: u64,
    /// Threads' frames read as roots.
    pub frames: u64,
    pub size_bytes: u64,
    /// Objects reachable from no module and no frame.
    pub unreachable: u64,
    /// Discovery stopped at the object limit: counts are lower bounds.
    pub truncated: bool,
    /// Threads whose frames could not be read (they exited under the read).
    #[serde(default)]
    pub skipped_threads: u64,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors: Option<Descriptors>,
    /// `_io.FileIO` objects (under every open() file), by whether their descriptor is open.
    pub file_objects: OpenClosed,
    pub socket_objects: OpenClosed,
}

/// Per-type totals while counting; type objects are resolved once per address.
#[derive(Default)]
struct Tally {
    by_type_addr: FxHashMap<u64, Option<usize>>,
    by_name: FxHashMap<String, usize>,
    types: Vec<TypeCount>,
    immortal_total: u64,
    unreadable: u64,
    /// Per type slot (parallel to `types`), whether its objects get a second look.
    watched_slots: Vec<Option<Watched>>,
    /// Per type slot, tp_basicsize as read (0 if unreadable): the object-bytes estimate.
    basic_sizes: Vec<u64>,
    watched: WatchedObjects,
}

impl Tally {
    fn add(&mut self, mem: &mut dyn RemoteMemory, process: &PythonProcess, object: ObjectHeader) {
        let slot = match self.by_type_addr.get(&object.type_addr) {
            Some(slot) => *slot,
            None => {
                let slot = match type_name(mem, &process.layout, object.type_addr) {
                    Ok(name) => {
                        let watched = Watched::for_type(&name);
                        if watched == Some(Watched::Function) {
                            self.watched.function_type = Some(object.type_addr);
                        }
                        let slot = *self.by_name.entry(name.clone()).or_insert_with(|| {
                            self.types.push(TypeCount {
                                name,
                                count: 0,
                                refcount_sum: 0,
                                immortal: 0,
                                ..TypeCount::default()
                            });
                            self.watched_slots.push(watched);
                            let basic = mem.read_u64(object.type_addr + process.layout.graph.tp_basicsize as u64);
                            // A size over pymalloc's largest arena is not a basic size.
                            self.basic_sizes.push(basic.ok().filter(|&b| b < 1 << 20).unwrap_or(0));
                            self.types.len() - 1
                        });
                        Some(slot)
                    }
                    Err(_) => None,
                };
                self.by_type_addr.insert(object.type_addr, slot);
                slot
            }
        };
        let Some(slot) = slot else {
            self.unreadable += 1;
            return;
        };
        if let Some(kind) = self.watched_slots[slot] {
            self.watched.add(kind, object.addr);
        }
        let entry = &mut self.types[slot];
        entry.count += 1;
        match refcount(&process.layout.object, object.refcnt_word) {
            Some(rc) => entry.refcount_sum += rc,
            None => {
                entry.immortal += 1;
                self.immortal_total += 1;
            }
        }
    }
}

/// The refcount, or `None` for an immortal object.
pub(crate) fn refcount(layout: &ObjectLayout, word: u64) -> Option<u64> {
    let low = word as u32;
    if layout.has_immortal && (low as i32) < 0 {
        return None;
    }
    Some(if layout.refcnt_size == 4 { low as u64 } else { word })
}

/// Takes one census of the target's GC-tracked objects, without stopping it.
pub fn take_census(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    limits: WalkLimits,
) -> Result<Census, LeakspyError> {
    let started = Instant::now();
    // Each census reads the target as it is now, not as an earlier sample saw it.
    mem.invalidate();
    let io_before = mem.io();
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let listed = process.interpreters(mem)?;
    let interpreters = listed.interpreters;
    let states = process.gc_states(mem, &interpreters)?;

    // The mappings as they are now (arenas come and go), and pymalloc's pools read in bulk
    // where the heap is large enough for that to beat following the lists through the cache.
    let maps = process.current_maps();
    let rss = process.rss().unwrap_or_else(|| maps.writable_bytes());
    let index = ObjectIndex::build(mem, &process.layout, &maps, rss);
    let mut walker = Walker::new(&process.layout, limits).with_index(index.as_ref());
    let mut tally = Tally::default();
    let mut generations = Vec::new();
    let mut objects_total = 0;
    for state in &states {
        for list in &state.lists {
            let objects = walker
                .walk(mem, list.head, &mut |mem, h| tally.add(mem, process, h))
                .map_err(|e| read_error(process.pid, e))?;
            objects_total += objects;
            generations.push(GenerationCount {
                interpreter: list.interpreter_id,
                generation: list.generation.clone(),
                objects,
            });
        }
    }
    let WalkStats { torn_links, resynced, broken_lists, in_collection, truncated, index_hits } = walker.stats;
    let elsewhere = index.as_ref().map_or((0, 0), |i| (i.stats.reads_elsewhere, i.stats.bytes_elsewhere));
    let bulk = index.as_ref().map(|i| BulkRead {
        bytes_scanned: i.stats.bytes_scanned,
        pools: i.stats.pools,
        indexed: i.stats.entries,
        hits: index_hits,
        full: i.stats.full,
    });
    drop(index);

    let details = read_details(process, mem, &tally.watched);
    // pymalloc's accounting, read right after the walk so that both describe the same moment
    // as nearly as a running target allows.
    let pymalloc = read_pymalloc(process, mem);
    let gc_head = process.layout.gc_head.size as u64;
    let basic_bytes: u64 = tally.types.iter().zip(&tally.basic_sizes).map(|(t, &b)| t.count * (b + gc_head)).sum();
    let memory = MemorySplit {
        pymalloc_missing: pymalloc.as_ref().err().map(ToString::to_string),
        pymalloc: pymalloc.ok(),
        object_bytes: Some(MemoryPart { bytes: basic_bytes, estimate: true, what: String::new() }),
        ..MemorySplit::default()
    };
    let gc = gc_info(process, mem, &interpreters, &states)?;
    let (threads, skipped_threads) = threads(process, mem, &interpreters)?;
    // A stack that cannot be read (the thread moved on) is left out, not an error.
    let stacks = read_stacks(process, mem, &interpreters, &threads, false).map(|(s, _)| s).unwrap_or_default();
    let mut types = tally.types;
    types.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    Ok(Census {
        schema_version: SCHEMA_VERSION,
        pid: process.pid,
        python_version: process.version.to_string(),
        python_version_source: process.version_source.to_string(),
        python_binary: process.binary.path.clone(),
        timestamp,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        objects_total: objects_total - tally.unreadable,
        immortal_total: tally.immortal_total,
        interpreters: interpreters.len() as u64,
        consistent: false,
        paused_ms: None,
        paused_bytes: None,
        torn_links,
        resynced_objects: resynced,
        broken_lists,
        unreadable_objects: tally.unreadable,
        skipped_threads,
        skipped_interpreters: listed.skipped,
        retries: 0,
        bulk,
        io: Some(IoStats {
            reads: mem.io().reads - io_before.reads + elsewhere.0,
            bytes_read: mem.io().bytes - io_before.bytes + elsewhere.1,
        })
        .filter(|io| io.reads > 0),
        truncated,
        gc_collecting: in_collection > 0 || states.iter().any(|s| s.collecting),
        generations,
        process: None,
        types,
        gc,
        threads,
        stacks,
        functions: details.functions,
        resources: Some(Resources { descriptors: None, file_objects: details.files, socket_objects: details.sockets }),
        memory: Some(memory),
        findings: Vec::new(),
        elapsed_s: None,
        core: None,
        graph: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A census with only the given (type, count, refcount sum) rows, for analysis tests.
    pub(crate) fn census_with(types: &[(&str, u64, u64)]) -> Census {
        Census {
            schema_version: SCHEMA_VERSION,
            pid: 1,
            python_version: "3.11.7".into(),
            python_version_source: "Py_Version".into(),
            python_binary: "python".into(),
            timestamp: "2026-11-26T10:00:00.000Z".into(),
            duration_ms: 1.0,
            objects_total: types.iter().map(|t| t.1).sum(),
            immortal_total: 0,
            interpreters: 1,
            consistent: false,
            paused_ms: None,
            paused_bytes: None,
            torn_links: 0,
            resynced_objects: 0,
            broken_lists: 0,
            unreadable_objects: 0,
            skipped_threads: 0,
            skipped_interpreters: 0,
            retries: 0,
            bulk: None,
            io: None,
            truncated: false,
            gc_collecting: false,
            generations: Vec::new(),
            process: None,
            gc: Vec::new(),
            threads: Vec::new(),
            stacks: Vec::new(),
            functions: Vec::new(),
            resources: None,
            memory: None,
            findings: Vec::new(),
            graph: None,
            elapsed_s: None,
            core: None,
            types: types
                .iter()
                .map(|(name, count, refs)| TypeCount {
                    name: name.to_string(),
                    count: *count,
                    refcount_sum: *refs,
                    ..TypeCount::default()
                })
                .collect(),
        }
    }

    fn object_layout(refcnt_size: usize, has_immortal: bool) -> ObjectLayout {
        ObjectLayout { ob_refcnt: 0, ob_type: 8, refcnt_size, has_immortal }
    }

    #[test]
    fn refcounts_follow_the_version_rules() {
        // 3.11: the whole word, no immortals.
        assert_eq!(refcount(&object_layout(8, false), 0xFFFF_FFFF), Some(0xFFFF_FFFF));
        // 3.12/3.13: immortal when the low half is negative as i32.
        assert_eq!(refcount(&object_layout(8, true), 0xFFFF_FFFF), None);
        assert_eq!(refcount(&object_layout(8, true), 7), Some(7));
        // 3.14: a 32-bit count; the upper half holds flags and must be ignored.
        assert_eq!(refcount(&object_layout(4, true), 0x0001_0000_0000_0005), Some(5));
        assert_eq!(refcount(&object_layout(4, true), 0xC000_0000), None);
    }
}
