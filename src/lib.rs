//! leakspy: find what grows in a live CPython process, from outside, without stopping it.
//!
//! The modules follow the data: `memory` (where bytes come from) -> `cpython` (what the bytes
//! mean for this interpreter) -> `heap` (walk and count) -> `output` (what the user sees).

pub mod analysis;
pub mod cli;
pub mod cpython;
pub mod error;
pub mod heap;
pub mod history;
pub mod memory;
pub mod output;
