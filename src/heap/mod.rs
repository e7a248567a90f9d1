//! Reading the heap: walking the GC lists of a running process and counting what is on them.

pub mod census;
pub mod walk;
