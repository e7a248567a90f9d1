//! Knowing CPython: which binary, which version, which struct layout, which interpreters and
//! where their GC lists are. Offsets stop here; the heap walker above sees addresses of list
//! heads and a [`layout::Layout`] it uses only through typed fields.

pub mod binary;
pub mod discover;
pub mod frames;
pub mod layout;
pub mod objects;
pub mod process;
pub mod pymalloc;
pub mod sizes;
pub mod stacks;
pub mod state;
