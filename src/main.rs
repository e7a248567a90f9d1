use clap::{Parser, Subcommand};
use leakspy::cli::{attach, history, ps, report, snapshot, why};
use leakspy::error::LeakspyError;

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
    Snapshot(snapshot::SnapshotArgs),
    /// Sample a running Python process repeatedly and show which types grow.
    Attach(attach::AttachArgs),
    /// Start a Python program and attach to it: `leakspy run -- python app.py`.
    Run(attach::RunArgs),
    /// Compare two recorded censuses, per type.
    Diff(history::DiffArgs),
    /// Name leak suspects over a history file, one series per process run.
    Trend(history::TrendArgs),
    /// List the Python processes this user may read, as a tree (masters and their workers).
    Ps(ps::PsArgs),
    /// Show who holds objects (paths from module globals and threads' frames), their sizes and
    /// what they retain; without --type or --address, the objects that retain the most.
    Why(why::WhyArgs),
    /// Write one self-contained HTML report (charts, suspects, findings, who holds them) of
    /// recordings and history files: `leakspy report rec.jsonl -o report.html`.
    Report(report::ReportArgs),
}

/// Large buffers (the heap graph's arrays, grown as objects are found) are mapped on their own
/// instead of carved from the main heap: glibc's adaptive threshold otherwise moves them into
/// the heap after the first free, where each growth leaves a hole that is never returned, and
/// leakspy's peak memory doubles.
fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    map_large_allocations();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot::run(args),
        Command::Attach(args) => attach::run_attach(args),
        Command::Run(args) => attach::run_program(args),
        Command::Diff(args) => history::run_diff(args),
        Command::Trend(args) => history::run_trend(args),
        Command::Why(args) => why::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Report(args) => report::run(args),
    };
    if let Err(e) = result {
        let message = match &e {
            LeakspyError::Other(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        // Errors can carry the target's text (the path of a mapped file, a name): nothing in
        // them reaches the terminal raw.
        eprintln!("leakspy: error: {}", leakspy::text::terminal::message(&message));
        std::process::exit(e.exit_code());
    }
}
