//! Output: human tables and files. The only place (with main.rs) that prints.

pub mod dot;
pub mod files;
pub mod fleet;
pub mod html;
pub mod image;
pub mod live;
pub mod prometheus;
pub mod ps;
pub mod report;
pub mod suspects;
pub mod svg;
pub mod table;
