//! pymalloc's own accounting, read from outside the way `sys._debugmallocstats()` reads it
//! from inside: the arena table (one entry per arena slot, an address of 0 for slots not in
//! use), each allocated arena's carved pools, and each pool's header (its size class and how
//! many of its blocks are handed out).
//!
//! Where the table lives differs by version, and the layout layer says where (file statics
//! up to 3.11, found by symbol; the interpreter's obmalloc state from 3.12, embedded in 3.12
//! and behind a pointer from 3.13). A binary stripped of its .symtab (Debian's static
//! python3.11) does not say where the statics are: then the state is reported as not found,
//! never guessed.
//!
//! Everything read is untrusted: the table's length, every arena's pool range and every
//! pool's size class are checked against what pymalloc can produce before they are used.

use super::layout::{ArenaObjectLayout, ObmallocLayout, ObmallocLocation, PoolLayout};
use super::process::PythonProcess;
use crate::memory::{ReadError, RemoteMemory, u32_at, u64_at};
use serde::{Deserialize, Serialize};

/// More arena slots than this (at 256 KiB an arena, 4 TiB) is a torn or misread table.
const MAX_ARENA_SLOTS: u64 = 1 << 24;

/// One size class, counted as `sys._debugmallocstats()` prints it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SizeClass {
    /// Block size in bytes.
    pub size: u64,
    /// Pools of this class in use (holding at least one block).
    pub pools: u64,
    pub used_blocks: u64,
    /// Blocks of those pools not handed out (on the free list or never carved).
    pub free_blocks: u64,
}

/// pymalloc's state summed over the obmalloc states read (one per interpreter that has its
/// own from 3.12; one per process before).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PymallocStats {
    /// Arenas allocated now (`# arenas allocated current`).
    pub arenas: u64,
    /// Arenas ever allocated (`# arenas allocated total`) and the most held at once.
    pub arenas_allocated_total: u64,
    pub arenas_highwater: u64,
    pub arena_size: u64,
    /// `arenas * arena_size`: what pymalloc holds from the system (not all of it resident).
    pub arena_bytes: u64,
    /// Bytes in blocks handed out (`# bytes in allocated blocks`).
    pub used_bytes: u64,
    /// Bytes in blocks of used pools not handed out (`# bytes in available blocks`).
    pub free_block_bytes: u64,
    /// Pools with no block in use, in allocated arenas (`# unused pools`), and their bytes.
    pub unused_pools: u64,
    pub unused_pool_bytes: u64,
    /// Bytes lost to pool headers, to quantization and to arena alignment.
    pub overhead_bytes: u64,
    /// Everything in the arenas that holds no live block: `arena_bytes - used_bytes`.
    pub empty_bytes: u64,
    /// Size classes with at least one pool in use, smallest first.
    pub size_classes: Vec<SizeClass>,
    /// obmalloc states read (interpreters with their own allocator state, 3.12+).
    pub states: u64,
    /// Arenas whose pool range read as impossible (changed under the read): left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_arenas: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PymallocStats {
    /// The share of the arenas' bytes that holds no live block, 0..=1.
    pub fn empty_fraction(&self) -> f64 {
        if self.arena_bytes == 0 { 0.0 } else { self.empty_bytes as f64 / self.arena_bytes as f64 }
    }
}

/// Why pymalloc's state could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PymallocMissing {
    #[error("pymalloc state not found (stripped binary)")]
    Stripped,
    #[error("pymalloc state not known for this version (no offsets)")]
    NoLayout,
    #[error("pymalloc not in use (no arena table: PYTHONMALLOC=malloc, mimalloc or another allocator)")]
    NotInUse,
    #[error("pymalloc state unreadable: {0}")]
    Unreadable(String),
}

/// Where one obmalloc state's fields are in the target.
struct StateAddrs {
    arenas: u64,
    maxarenas: u64,
    total: u64,
    highwater: u64,
}

/// Reads pymalloc's state now.
pub fn read_pymalloc(process: &PythonProcess, mem: &mut dyn RemoteMemory) -> Result<PymallocStats, PymallocMissing> {
    let layout = process.layout.obmalloc.as_ref().ok_or(PymallocMissing::NoLayout)?;
    let unreadable = |e: ReadError| PymallocMissing::Unreadable(e.to_string());
    let states = match layout.location {
        ObmallocLocation::Statics => {
            let symbol = |name| process.binary.symbol(name).ok_or(PymallocMissing::Stripped);
            vec![StateAddrs {
                arenas: symbol("arenas")?,
                maxarenas: symbol("maxarenas")?,
                total: symbol("ntimes_arena_allocated")?,
                highwater: symbol("narenas_highwater")?,
            }]
        }
        ObmallocLocation::Interpreter(_) | ObmallocLocation::InterpreterPointer(_) => {
            let offsets = layout.state.ok_or(PymallocMissing::NoLayout)?;
            let interpreters = process.interpreters(mem).map_err(|e| PymallocMissing::Unreadable(e.to_string()))?;
            let mut bases: Vec<u64> = Vec::new();
            for interp in &interpreters.interpreters {
                let base = match layout.location {
                    ObmallocLocation::InterpreterPointer(off) => {
                        mem.read_u64(interp.addr + off as u64).map_err(unreadable)?
                    }
                    ObmallocLocation::Interpreter(off) => interp.addr + off as u64,
                    ObmallocLocation::Statics => continue,
                };
                // Interpreters sharing the main interpreter's allocator point to one state.
                if base != 0 && !bases.contains(&base) {
                    bases.push(base);
                }
            }
            bases
                .into_iter()
                .map(|base| StateAddrs {
                    arenas: base + offsets.arenas as u64,
                    maxarenas: base + offsets.maxarenas as u64,
                    total: base + offsets.ntimes_arena_allocated as u64,
                    highwater: base + offsets.narenas_highwater as u64,
                })
                .collect()
        }
    };
    let mut stats = PymallocStats { arena_size: layout.arena_size, ..PymallocStats::default() };
    let classes = (layout.pools.small_request_threshold / layout.pools.alignment) as usize;
    let mut per_class = vec![SizeClass::default(); classes];
    for (k, class) in per_class.iter_mut().enumerate() {
        class.size = (k as u64 + 1) * layout.pools.alignment;
    }
    for state in &states {
        let table = mem.read_u64(state.arenas).map_err(unreadable)?;
        let slots = u64::from(mem.read_u32(state.maxarenas).map_err(unreadable)?);
        if table == 0 || slots == 0 {
            continue;
        }
        if slots > MAX_ARENA_SLOTS {
            return Err(PymallocMissing::Unreadable(format!("{slots} arena slots (torn or misread)")));
        }
        stats.states += 1;
        stats.arenas_allocated_total += mem.read_u64(state.total).map_err(unreadable)?;
        stats.arenas_highwater += mem.read_u64(state.highwater).map_err(unreadable)?;
        let raw = mem.read_claimed(table, slots * layout.arena.size as u64).map_err(unreadable)?;
        for entry in raw.chunks_exact(layout.arena.size) {
            count_arena(mem, layout, &read_arena(entry, &layout.arena), &mut stats, &mut per_class)?;
        }
    }
    if stats.states == 0 {
        return Err(PymallocMissing::NotInUse);
    }
    stats.arena_bytes = stats.arenas * layout.arena_size;
    let p = &layout.pools;
    let overhead = p.header_size.next_multiple_of(p.alignment);
    for class in &per_class {
        stats.used_bytes += class.used_blocks * class.size;
        stats.free_block_bytes += class.free_blocks * class.size;
        stats.overhead_bytes += class.pools * (overhead + (p.pool_size - overhead) % class.size);
    }
    stats.unused_pool_bytes = stats.unused_pools * p.pool_size;
    stats.empty_bytes = stats.arena_bytes.saturating_sub(stats.used_bytes);
    stats.size_classes = per_class.into_iter().filter(|c| c.pools > 0).collect();
    Ok(stats)
}

struct Arena {
    address: u64,
    pool_address: u64,
    nfreepools: u32,
}

fn read_arena(entry: &[u8], a: &ArenaObjectLayout) -> Arena {
    Arena {
        address: u64_at(entry, a.address),
        pool_address: u64_at(entry, a.pool_address),
        nfreepools: u32_at(entry, a.nfreepools),
    }
}

/// Adds one arena slot: its unused pools, and each carved pool's blocks by size class.
fn count_arena(
    mem: &mut dyn RemoteMemory,
    layout: &ObmallocLayout,
    arena: &Arena,
    stats: &mut PymallocStats,
    per_class: &mut [SizeClass],
) -> Result<(), PymallocMissing> {
    if arena.address == 0 {
        return Ok(());
    }
    let p: &PoolLayout = &layout.pools;
    // Pools start at the first pool boundary in the arena (the rest is lost to alignment).
    let base = arena.address.next_multiple_of(p.pool_size);
    let end = arena.address.saturating_add(layout.arena_size);
    let max_pools = layout.arena_size / p.pool_size;
    if arena.pool_address < base || arena.pool_address > end || u64::from(arena.nfreepools) > max_pools {
        stats.skipped_arenas += 1;
        return Ok(());
    }
    stats.arenas += 1;
    stats.unused_pools += u64::from(arena.nfreepools);
    if base != arena.address {
        stats.overhead_bytes += p.pool_size;
    }
    let classes = per_class.len() as u32;
    // Every carved pool's header, in one request where the source can.
    let pools: Vec<u64> = (base..arena.pool_address).step_by(p.pool_size as usize).collect();
    let len = p.header_size as usize;
    let mut headers = vec![0u8; pools.len() * len];
    let whole =
        mem.read_scattered(&pools, len, &mut headers).map_err(|e| PymallocMissing::Unreadable(e.to_string()))?;
    // A pool pymalloc carved is mapped; one that could not be read was released under the
    // read, and counts as holding nothing.
    for (header, _) in headers.chunks_exact(len).zip(&whole).filter(|(_, whole)| **whole) {
        let count = u64::from(u32_at(header, p.count));
        let szidx = u32_at(header, p.szidx);
        if count > 0 && szidx < classes {
            let class = &mut per_class[szidx as usize];
            let capacity = (p.pool_size - p.header_size.next_multiple_of(p.alignment)) / class.size;
            class.pools += 1;
            class.used_blocks += count.min(capacity);
            class.free_blocks += capacity.saturating_sub(count);
        }
    }
    Ok(())
}
