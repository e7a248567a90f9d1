//! `leakspy snapshot`: one census, as a table, JSON or Prometheus text, to stdout, a file, or
//! appended to a history.

use super::{TargetArgs, open_target, take_census_of_process};
use crate::error::LeakspyError;
use crate::heap::walk::WalkLimits;
use crate::output::files::{Destination, parse_mode, write_output};
use crate::output::prometheus;
use crate::output::table::{SortKey, render, sort_types};
use crate::text::terminal;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// node_exporter textfile-collector format.
    Prometheus,
}

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub core_files: super::core::CoreFileArgs,
    /// Output format (default: table).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Write to FILE instead of stdout: a regular file is replaced atomically (a reader never
    /// sees half a file) keeping its owner and mode; a device or FIFO is written as it is; `-`
    /// or /dev/stdout is stdout. A symbolic link is refused.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Permissions of the file -o writes, in octal (default: those of the file it replaces, or
    /// 0600 for a new one, since a census holds command lines), e.g. 0644 for a textfile
    /// collector running as another user.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode, requires = "output")]
    pub mode: Option<u32>,
    /// Append the census as one JSON line to the history FILE (locked against concurrent
    /// runs; a new file is 0600, a failed append is undone). Prints nothing else unless
    /// --format or -o is given. A symbolic link is refused.
    #[arg(long, value_name = "FILE")]
    pub append: Option<PathBuf>,
    /// Number of types in the table, or in Prometheus output (the rest go to type="(other)").
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Order of the table.
    #[arg(long, value_enum, default_value_t = SortKey::Count)]
    pub sort: SortKey,
    /// Stop the target's threads while its memory is copied (milliseconds), for a census
    /// that is exactly consistent; decoding happens after they run again.
    #[arg(long, conflicts_with = "core")]
    pub pause: bool,
    /// Read the heap graph too: count the objects the GC does not track (str, int, bytes...),
    /// and give each type its size (sys.getsizeof), references from outside the heap and
    /// retained size. Costs about 4x a plain census in time and memory.
    #[arg(long)]
    pub all: bool,
    /// Stop walking after this many objects (a safety bound; the census says if it was hit).
    #[arg(long, default_value_t = WalkLimits::default().max_objects)]
    pub max_objects: u64,
}

pub fn run(args: SnapshotArgs) -> Result<(), LeakspyError> {
    let mut census = match &args.target.which.core {
        Some(path) => {
            if args.target.children {
                return Err(LeakspyError::Usage("--children follows live processes; a core holds one".into()));
            }
            let mut opened = super::core::open_core(path, &args.core_files)?;
            super::take_census_of_core(&mut opened, args.max_objects, args.all)?
        }
        None => {
            args.core_files.check_without_core()?;
            let selection = args.target.select()?;
            if selection.pids.len() > 1 {
                return run_several(&args, &selection.pids);
            }
            let pid = selection.pids.first().copied().unwrap_or_default();
            let (process, mut mem) = open_target(pid)?;
            if !selection.selector.follows() {
                super::fleet::note_python_children(pid);
            }
            take_census_of_process(&process, &mut mem, args.max_objects, args.pause, args.all)?
        }
    };
    sort_types(&mut census.types, args.sort);
    if let Some(history) = &args.append {
        crate::history::append(history, &census)?;
    }
    let Some(format) = format(&args) else { return Ok(()) };
    let text = match format {
        Format::Json => terminal::json(serde_json::to_string_pretty(&census).map_err(anyhow::Error::from)?) + "\n",
        Format::Table => render(&census, args.top, args.sort),
        Format::Prometheus => prometheus::render(&census, args.top),
    };
    let destination = args.output.as_deref().map_or(Destination::Stdout, Destination::from_arg);
    write_output(&destination, text.as_bytes(), args.mode)?;
    Ok(())
}

/// The output format asked for; `None` when only a history append was.
fn format(args: &SnapshotArgs) -> Option<Format> {
    match (args.format, args.json) {
        (Some(format), _) => Some(format),
        (None, true) => Some(Format::Json),
        (None, false) if args.append.is_some() && args.output.is_none() => None,
        (None, false) => Some(Format::Table),
    }
}

/// A census of each selected process (a server's master and workers), one after the other:
/// each appended to the history as its own record, JSON as one object per line, tables one
/// after the other, Prometheus as one file with a series per process. A process that exits
/// before its census (a worker recycled meanwhile) or cannot be read is left out with a note;
/// the command fails only if no census was taken.
fn run_several(args: &SnapshotArgs, pids: &[i32]) -> Result<(), LeakspyError> {
    let mut censuses = Vec::new();
    let mut first_error = None;
    for &pid in pids {
        let census = open_target(pid).and_then(|(process, mut mem)| {
            take_census_of_process(&process, &mut mem, args.max_objects, args.pause, args.all)
        });
        match census {
            Ok(mut census) => {
                sort_types(&mut census.types, args.sort);
                if let Some(history) = &args.append {
                    crate::history::append(history, &census)?;
                }
                censuses.push(census);
            }
            Err(e) => {
                eprintln!("leakspy: note: process {pid} left out: {}", terminal::message(&e.to_string()));
                first_error.get_or_insert(e);
            }
        }
    }
    if censuses.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    let Some(format) = format(args) else { return Ok(()) };
    let text = match format {
        Format::Json => {
            let mut text = String::new();
            for census in &censuses {
                text.push_str(&terminal::json(serde_json::to_string(census).map_err(anyhow::Error::from)?));
                text.push('\n');
            }
            text
        }
        Format::Table => censuses.iter().map(|c| render(c, args.top, args.sort)).collect::<Vec<_>>().join("\n"),
        Format::Prometheus => prometheus::render_many(&censuses, args.top),
    };
    let destination = args.output.as_deref().map_or(Destination::Stdout, Destination::from_arg);
    write_output(&destination, text.as_bytes(), args.mode)?;
    Ok(())
}
