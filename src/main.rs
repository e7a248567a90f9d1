use clap::Parser;
use leakspy::cli::{Cli, Command, attach, dump, history, install, ps, report, snapshot, stacks, why};
use leakspy::error::LeakspyError;

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
        Command::Stacks(args) => stacks::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Completions(args) => install::run_completions(args),
        Command::Man(args) => install::run_man(args),
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
