//! `leakspy snapshot PID`: one census, as a table or JSON, to stdout or a file.

use super::open_target;
use crate::error::LeakspyError;
use crate::heap::census::take_census;
use crate::heap::walk::WalkLimits;
use crate::output::table::{SortKey, render, sort_types};
use crate::output::write_atomic;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// PID of the Python process.
    pub pid: i32,
    /// Print the census as JSON (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// Write to FILE instead of stdout (atomically: a reader never sees half a file).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Number of types in the table.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Order of the table.
    #[arg(long, value_enum, default_value_t = SortKey::Count)]
    pub sort: SortKey,
    /// Stop walking after this many objects (a safety bound; the census says if it was hit).
    #[arg(long, default_value_t = WalkLimits::default().max_objects)]
    pub max_objects: u64,
}

pub fn run(args: SnapshotArgs) -> Result<(), LeakspyError> {
    let (process, mut mem) = open_target(args.pid)?;
    let mut census = take_census(&process, &mut mem, WalkLimits { max_objects: args.max_objects })?;
    let text = if args.json {
        sort_types(&mut census.types, args.sort);
        let mut json = serde_json::to_string_pretty(&census).map_err(anyhow::Error::from)?;
        json.push('\n');
        json
    } else {
        render(&census, args.top, args.sort)
    };
    match args.output {
        Some(path) => write_atomic(&path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}
