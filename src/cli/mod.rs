//! The commands: argument types and the loops that drive the rooms below. With output/, the
//! only code that prints.

pub mod attach;
pub mod core;
pub mod dump;
pub mod fleet;
pub mod history;
pub mod install;
pub mod ps;
pub mod report;
pub mod select;
pub mod snapshot;
pub mod stacks;
pub mod why;

use crate::analysis::findings::findings;
use crate::cpython::process::{PythonProcess, read_error, retry_transient};
use crate::error::LeakspyError;
use crate::heap::census::{Census, take_census};
use crate::heap::graph::build;
use crate::heap::graph_census::apply_graph;
use crate::heap::walk::WalkLimits;
use crate::memory::live::LiveProcess;
use crate::memory::maps::MemoryMap;
use crate::memory::pause::{CopiedMemory, CopyArena, Pause};
use crate::memory::proc_info::{MemorySplit, ObjectBytes, ProcessInfo, available_memory, descriptors, memory_split};
use crate::memory::{ReadError, RemoteMemory};
use crate::text::human_bytes;
use std::time::Instant;

/// leakspy's command line. The one definition that parses arguments, and that the shell
/// completions and the man pages are generated from (`leakspy completions`, `leakspy man`), so
/// the three never disagree.
#[derive(clap::Parser)]
#[command(
    name = "leakspy",
    version,
    about = "Find what grows in a live CPython process, from outside, without stopping it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
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
    /// Write a memory image of a Python process (an ELF core, zstd-compressed) to read later or
    /// elsewhere: its threads are stopped only while its memory is copied.
    Dump(dump::DumpArgs),
    /// Show what each thread is running: its Python stack with lines, thread ids, names and
    /// the GIL's holder; --locals adds each frame's variables with types and sizes.
    Stacks(stacks::StacksArgs),
    /// Write one self-contained HTML report (charts, suspects, findings, who holds them) of
    /// recordings and history files: `leakspy report rec.jsonl -o report.html`.
    Report(report::ReportArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(install::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(install::ManArgs),
}

/// Which process to read: cron jobs rarely know a PID, so a PID file or a command-line match
/// will do too; pre-fork servers are several processes (see `select`).
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    pub which: Which,
    /// Also every Python process descended from the one selected (a server's workers, a
    /// multiprocessing pool), whatever user they run as; `attach` follows those that appear.
    #[arg(long)]
    pub children: bool,
    /// With --match: select processes of this user (a name or a UID; repeatable) instead of
    /// the user leakspy runs as.
    #[arg(long = "user", value_name = "NAME|UID", value_parser = crate::memory::processes::parse_user)]
    pub users: Vec<u32>,
    /// With --match: select matching processes of any user.
    #[arg(long, conflicts_with = "users")]
    pub all_users: bool,
}

/// The process (or processes) named: exactly one of these.
#[derive(clap::Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// PID of the Python process.
    pub pid: Option<i32>,
    /// Read the PID from FILE (as daemons and systemd's PIDFile= write it).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<std::path::PathBuf>,
    /// Every Python process whose command line contains PATTERN, of the user leakspy runs as
    /// (see --user); processes that are not Python (a shell wrapper) are passed over.
    #[arg(long = "match", value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// Read a core file instead of a process (`snapshot` and `why`): a kernel core dump, gdb's
    /// gcore, or a leakspy image (zstd-compressed or not).
    #[arg(long, value_name = "FILE")]
    pub core: Option<std::path::PathBuf>,
}

/// Opens a target for reading and identifies its interpreter.
pub fn open_target(pid: i32) -> Result<(PythonProcess, LiveProcess), LeakspyError> {
    let mut mem = LiveProcess::new(pid);
    let process = PythonProcess::inspect(pid, &mut mem)?;
    mem.fit_cache_to(process.maps.writable_bytes());
    Ok((process, mem))
}

/// A census with the process's identity attached, as every command records it. A read that
/// the running target tore (a list relinked, a freed object followed) is made again, a few
/// times, before it is an error. With `pause`, the target's threads are stopped while its
/// writable memory is copied, and the census is decoded from that copy after they run again.
pub fn take_census_of_process(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    max_objects: u64,
    pause: bool,
    all: bool,
) -> Result<Census, LeakspyError> {
    let limits = WalkLimits { max_objects };
    let (mut census, retries) =
        if pause { paused_census(process, mem, limits, all)? } else { live_census(process, mem, limits, all)? };
    census.retries = retries;
    census.process = Some(ProcessInfo::read(process.pid));
    if let Some(resources) = census.resources.as_mut() {
        resources.descriptors = descriptors(process.pid);
    }
    census.memory = complete_memory_split(memory_split(process.pid), &mut census);
    census.findings = findings(&census);
    Ok(census)
}

/// A census of a core file or image, stamped with the dumped process's identity and the time
/// of the dump. Nothing changes under the read, so it is read once; its memory split is left
/// out (a core records no RSS breakdown), as are open descriptors.
pub fn take_census_of_core(opened: &mut core::OpenedCore, max_objects: u64, all: bool) -> Result<Census, LeakspyError> {
    let limits = WalkLimits { max_objects };
    let mut census = take_census_with(&opened.process, &mut opened.mem, limits, all)?;
    // Every thread was stopped while the kernel, gdb or leakspy dump wrote it.
    census.consistent = true;
    if let Some(note) = &opened.mem.core().leakspy {
        census.paused_ms = note.paused_ms;
        census.paused_bytes = note.copied_bytes;
    }
    census.memory = None;
    core::stamp(&mut census, opened);
    census.findings = findings(&census);
    Ok(census)
}

/// The process's memory split now, with what the census read of pymalloc and of the objects'
/// sizes (summed over the heap graph with `--all`, estimated from basic sizes without).
fn complete_memory_split(split: Option<MemorySplit>, census: &mut Census) -> Option<MemorySplit> {
    let read = census.memory.take().unwrap_or_default();
    let mut split = split?;
    let pymalloc = match (read.pymalloc, read.pymalloc_missing) {
        (Some(stats), _) => Ok(stats),
        (None, why) => Err(why.unwrap_or_else(|| "pymalloc state not read".into())),
    };
    let objects = match &census.graph {
        Some(graph) => Some(ObjectBytes::Summed(graph.size_bytes)),
        None => read.object_bytes.map(|part| ObjectBytes::BasicSizes(part.bytes)),
    };
    split.add_python_parts(pymalloc, objects);
    Some(split)
}

/// Censuses taken again when the target's collector ran during the read.
const COLLECTION_RETRIES: u32 = 2;

/// A census of the running target, read again if the target changed under the read, and
/// again (twice at most, 5 then 10 ms later) if its collector ran meanwhile: a collection
/// moves the objects it examines to a list of its own, and a census that misses them can be
/// low by up to 90 %. One that overlaps every time is returned marked (`gc_collecting`), and
/// the series over time leave it out.
fn live_census(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    limits: WalkLimits,
    all: bool,
) -> Result<(Census, u32), LeakspyError> {
    let (mut census, mut retries) = retry_transient(true, |_| take_census_with(process, mem, limits, all))?;
    for k in 0..COLLECTION_RETRIES {
        if !census.gc_collecting {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5 << k));
        let (again, more) = retry_transient(true, |_| take_census_with(process, mem, limits, all))?;
        census = again;
        retries += more + 1;
    }
    Ok((census, retries))
}

/// Pauses taken at most for one `--pause` census.
pub(super) const PAUSE_ATTEMPTS: u32 = 4;

/// A census from a copy taken with the target stopped. Nothing changes under the decoding,
/// but a thread can be stopped between the two writes that relink a list, or while its
/// collector has objects on a list of its own: the copy then shows a torn link or misses
/// those objects. Such a copy is taken again (the next pause falls elsewhere), and the
/// cleanest one is kept.
fn paused_census(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    limits: WalkLimits,
    all: bool,
) -> Result<(Census, u32), LeakspyError> {
    let pid = process.pid;
    let mut best: Option<(Census, u32)> = None;
    for attempt in 0..PAUSE_ATTEMPTS {
        // The destination, allocated and faulted in while the target still runs.
        let arena = CopyArena::prepare(mem, &MemoryMap::read(pid).map_err(|_| LeakspyError::ProcessExited { pid })?);
        let started = Instant::now();
        let frozen = Pause::freeze(pid).map_err(|e| read_error(pid, e))?;
        // The mappings as they are while stopped: none can appear or go until the threads run.
        let copy = MemoryMap::read(pid)
            .map_err(|_| ReadError::ProcessGone)
            .and_then(|maps| CopiedMemory::copy(mem, &maps, arena));
        hold_pause_for_tests();
        drop(frozen);
        let paused_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut copy = copy.map_err(|e| read_error(pid, e))?;
        let bytes_copied = copy.bytes_copied;
        let mut census = match take_census_with(process, &mut copy, limits, all) {
            Ok(census) => census,
            Err(e) if e.is_transient() && attempt + 1 < PAUSE_ATTEMPTS => continue,
            // An earlier copy with a flaw beats none.
            Err(e) => return best.ok_or(e),
        };
        census.consistent = true;
        census.paused_ms = Some(paused_ms);
        census.paused_bytes = Some(bytes_copied);
        let flaws = census_flaws(&census);
        if flaws == 0 {
            return Ok((census, attempt));
        }
        if best.as_ref().is_none_or(|(b, _)| census_flaws(b) > flaws) {
            best = Some((census, attempt));
        }
    }
    best.ok_or_else(|| LeakspyError::TargetChanged {
        pid,
        attempts: PAUSE_ATTEMPTS,
        detail: "every paused copy read as torn".into(),
    })
}

/// How much a census shows of a target caught mid-change: 0 for a clean picture.
pub(super) fn census_flaws(census: &Census) -> u64 {
    census.torn_links
        + census.broken_lists
        + census.unreadable_objects
        + census.skipped_threads
        + census.skipped_interpreters
        + u64::from(census.gc_collecting)
}

/// The heap graph needs about this many bytes per byte of the target's resident memory
/// (measured by scripts/bench.sh: 1.3-1.6 on heaps of small objects; a margin on top).
const GRAPH_BYTES_PER_TARGET_BYTE: f64 = 1.7;

/// A paths-only `why` (no dominator tree, no retained sizes) needs about this share of the
/// full analysis's memory: the dominator tree's working arrays are the rest of the peak.
const PATHS_ONLY_SHARE: f64 = 0.6;
/// Memory left to the rest of the machine when deciding whether retained sizes fit.
const MEMORY_MARGIN: u64 = 256 << 20;

/// Why `why` should leave retained sizes out, if it should: the full analysis (graph and
/// dominator tree) would not fit in MemAvailable minus a margin, and the paths alone would.
/// LEAKSPY_TEST_MEM_AVAILABLE (bytes) stands in for MemAvailable in tests.
pub fn retained_would_not_fit(process: &PythonProcess) -> Option<String> {
    let available =
        std::env::var("LEAKSPY_TEST_MEM_AVAILABLE").ok().and_then(|v| v.parse().ok()).or_else(available_memory)?;
    paths_only_reason(process.rss()?, available)
}

fn paths_only_reason(target_rss: u64, available: u64) -> Option<String> {
    let full = (target_rss as f64 * GRAPH_BYTES_PER_TARGET_BYTE) as u64;
    let usable = available.saturating_sub(MEMORY_MARGIN);
    (full > usable).then(|| {
        format!(
            "the heap graph with retained sizes of a process of {} may need about {}, and {} is available: \
             paths and counts only (about {})",
            human_bytes(target_rss),
            human_bytes(full),
            human_bytes(available),
            human_bytes((full as f64 * PATHS_ONLY_SHARE) as u64)
        )
    })
}

/// Says, on stderr, when the heap graph may not fit in the memory this machine has free: the
/// graph is built anyway, but the user learns why the machine starts swapping or leakspy is
/// killed.
pub fn warn_if_graph_may_not_fit(process: &PythonProcess) {
    if let (Some(rss), Some(available)) = (process.rss(), available_memory())
        && let Some(warning) = graph_memory_warning(rss, available)
    {
        eprintln!("{warning}");
    }
}

fn graph_memory_warning(target_rss: u64, available: u64) -> Option<String> {
    let needed = (target_rss as f64 * GRAPH_BYTES_PER_TARGET_BYTE) as u64;
    (needed > available).then(|| {
        format!(
            "leakspy: warning: the heap graph of a process of {} may need about {}, and {} is available; \
             if leakspy runs out of memory, run it where there is more, or use a plain snapshot",
            human_bytes(target_rss),
            human_bytes(needed),
            human_bytes(available)
        )
    })
}

/// The census, and with `all` the heap graph's view of it (untracked objects, sizes,
/// external references, retained sizes).
pub(super) fn take_census_with(
    process: &PythonProcess,
    mem: &mut dyn RemoteMemory,
    limits: WalkLimits,
    all: bool,
) -> Result<Census, LeakspyError> {
    let mut census = take_census(process, mem, limits)?;
    if all {
        warn_if_graph_may_not_fit(process);
        let started = Instant::now();
        let graph = build(process, mem)?;
        apply_graph(&mut census, &graph, started);
    }
    Ok(census)
}

/// Test hook: LEAKSPY_TEST_HOLD_PAUSE_MS keeps the target stopped that long, so that a test can
/// kill leakspy mid-pause and check that the target runs on.
pub(crate) fn hold_pause_for_tests() {
    if let Some(ms) = std::env::var("LEAKSPY_TEST_HOLD_PAUSE_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_may_not_fit_is_announced() {
        assert_eq!(graph_memory_warning(1 << 30, 8 << 30), None);
        let warning = graph_memory_warning(4 << 30, 2 << 30).unwrap_or_default();
        assert!(warning.contains("of 4.0 GiB may need about 6.8 GiB, and 2.0 GiB is available"), "{warning}");
    }

    #[test]
    fn retained_sizes_are_left_out_only_when_they_would_not_fit() {
        assert_eq!(paths_only_reason(1 << 30, 8 << 30), None);
        let reason = paths_only_reason(4 << 30, 6 << 30).unwrap_or_default();
        assert!(reason.contains("paths and counts only"), "{reason}");
    }
}
