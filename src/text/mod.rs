//! Small text helpers shared by the analysis room's sentences and the output room: numbers as
//! people read them, names read from the target made safe to show on a terminal, and words
//! quoted for a shell, names made safe in HTML and DOT, series drawn as sparklines. Pure functions,
//! no I/O, depending on no other room, so that any room that words something for a person
//! (the heap's paths, analysis's findings, output) uses them.

pub mod dot;
pub mod html;
pub mod numbers;
pub mod shell;
pub mod sparkline;
pub mod terminal;

pub use numbers::{human_bytes, signed, thousands};
