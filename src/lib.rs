//! leakspy: find what grows in a live CPython process, from outside, without stopping it.
//!
//! The modules follow the data: `memory` (where bytes come from) -> `cpython` (what the bytes
//! mean for this interpreter) -> `heap` (walk and count) -> `analysis` -> `output` (what the user
//! sees); `text` holds the small text helpers (numbers, terminal escaping, shell quoting) that
//! the rooms share.

pub mod analysis;
pub mod cli;
pub mod cpython;
pub mod error;
pub mod heap;
pub mod history;
pub mod memory;
pub mod output;
pub mod text;
