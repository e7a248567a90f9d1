use clap::{Parser, Subcommand};
use leakspy::cpython::process::PythonProcess;
use leakspy::error::LeakspyError;
use leakspy::heap::census::take_census;
use leakspy::heap::walk::WalkLimits;
use leakspy::memory::live::LiveProcess;
use leakspy::output::table::{SortKey, render, sort_types};
use leakspy::output::write_atomic;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "leakspy",
    version,
    about = "Find what grows in a live CPython process, from outside, without stopping it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Count the live GC-tracked objects of a running Python process, per type.
    Snapshot(SnapshotArgs),
}

#[derive(clap::Args)]
struct SnapshotArgs {
    /// PID of the Python process.
    pid: i32,
    /// Print the census as JSON (schema in the README).
    #[arg(long)]
    json: bool,
    /// Write to FILE instead of stdout (atomically: a reader never sees half a file).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Number of types in the table.
    #[arg(long, default_value_t = 25)]
    top: usize,
    /// Order of the table.
    #[arg(long, value_enum, default_value_t = SortKey::Count)]
    sort: SortKey,
    /// Stop walking after this many objects (a safety bound; the census says if it was hit).
    #[arg(long, default_value_t = WalkLimits::default().max_objects)]
    max_objects: u64,
}

fn snapshot(args: SnapshotArgs) -> Result<(), LeakspyError> {
    let mut mem = LiveProcess::new(args.pid);
    let process = PythonProcess::inspect(args.pid, &mut mem)?;
    let mut census = take_census(
        &process,
        &mut mem,
        WalkLimits {
            max_objects: args.max_objects,
        },
    )?;
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot(args),
    };
    if let Err(e) = result {
        let message = match &e {
            LeakspyError::Other(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        eprintln!("leakspy: error: {message}");
        std::process::exit(e.exit_code());
    }
}
