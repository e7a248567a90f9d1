//! Reading the heap: walking the GC lists of a running process and counting what is on them.

pub mod address_set;
pub mod census;
pub mod compact;
pub mod details;
pub mod dominators;
pub mod explain;
pub mod graph;
pub mod graph_census;
pub mod holders;
pub mod memory_use;
pub mod pools;
pub mod reach;
pub mod referents;
pub mod retained;
pub mod walk;
