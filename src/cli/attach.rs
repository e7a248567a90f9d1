//! `leakspy attach PID` and `leakspy run -- CMD`: sample again and again, show what grows,
//! and name the leak suspects when sampling ends.

use super::{TargetArgs, open_target, take_census_of_process};
use crate::analysis::findings::Finding;
use crate::analysis::series::{Series, Suspect};
use crate::cpython::process::{PythonProcess, retry_transient};
use crate::error::LeakspyError;
use crate::heap::census::Census;
use crate::heap::details::running_code;
use crate::heap::explain::{Explainer, GraphSummary, WhyReport, instances_of_type};
use crate::heap::graph::{build, shortest_paths};
use crate::heap::holders::{GraphPass, Holdings, read_holdings};
use crate::heap::retained::Retention;
use crate::heap::walk::WalkLimits;
use crate::history::{HoldsRecord, WhyRecord};
use crate::memory::live::LiveProcess;
use crate::memory::proc_info::{ProcessIdentity, ProcessInfo, Sameness, available_memory, rss_bytes};
use crate::output::files::AppendFile;
use crate::output::live::{LiveSort, SamplingStatus, render_live, render_summary, render_why_summary};
use crate::text::{human_bytes, terminal, thousands};
use anyhow::Context;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long `run` waits for the new program's interpreter to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The graph pass at the end is skipped above this many GC-tracked objects (in the last
/// sample): it walks them all and keeps about [`GRAPH_PASS_BYTES_PER_OBJECT`] each (measured:
/// 4.2M objects took 1.4 s and 210 MB, against `why`'s 5.9 s and 750 MB), so at most about
/// 2 s and 250 MB that nobody asked for.
const GRAPH_PASS_MAX_OBJECTS: u64 = 5_000_000;
/// What the pass keeps per GC-tracked object (the walk's list, then the graph's per-node arrays).
const GRAPH_PASS_BYTES_PER_OBJECT: u64 = 60;
/// Growing types whose references the graph pass reads, fastest first.
const GRAPH_PASS_MAX_TYPES: usize = 16;

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Time between samples: seconds ("0.5") or with a unit ("500ms", "2s", "1m").
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many samples.
    #[arg(long)]
    pub samples: Option<u64>,
    /// JSON Lines on stdout (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    /// Also append every sample to FILE as JSON Lines (the snapshot schema), for `trend`. A new
    /// file is 0600; a symbolic link or anything but a regular file is refused.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Rows in the live table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Order of the live table.
    #[arg(long, value_enum, default_value_t = LiveSort::Growth)]
    pub sort: LiveSort,
    /// Safety bound on objects walked per sample.
    #[arg(long, default_value_t = WalkLimits::default().max_objects)]
    pub max_objects: u64,
    /// Do not read the heap graph when sampling ends (who holds whom among the growing types,
    /// to group each leak's parts under it); group them by their growth alone.
    #[arg(long)]
    pub no_graph_pass: bool,
    /// When sampling ends, while the target still runs, read who holds the instances of the
    /// top N leak suspects (as `leakspy why --type` does) and put it in the summary and the
    /// recording, for `leakspy report`. One process only (not with --match or --children).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub why_top: usize,
}

#[derive(clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err("must be a positive number of seconds".to_string()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }?;
    if parsed.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(parsed)
}

pub fn run_attach(args: AttachArgs) -> Result<(), LeakspyError> {
    let selection = args.target.select()?;
    // --match and --children select processes that come and go (a pre-fork server's workers).
    if selection.selector.follows() {
        if args.sampling.why_top > 0 {
            return Err(anyhow::anyhow!(
                "--why-top reads the heap graph of one process: give its PID (not --match or --children)"
            )
            .into());
        }
        return super::fleet::sample(selection, &args.sampling);
    }
    let pid = selection.pids.first().copied().unwrap_or_default();
    let (process, mut mem) = open_target(pid)?;
    super::fleet::note_python_children(pid);
    sample(&process, &mut mem, &args.sampling, None)
}

pub fn run_program(args: RunArgs) -> Result<(), LeakspyError> {
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
        .with_context(|| format!("starting {}", args.command[0]))?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    // The interpreter is not there at exec: libpython loads, then Python initialises.
    let opened = loop {
        match open_target(pid) {
            Ok(opened) => break Ok(opened),
            Err(e) if child.try_wait().ok().flatten().is_some() => break Err(e),
            Err(
                LeakspyError::NotPython { .. }
                | LeakspyError::LayoutMismatch { .. }
                | LeakspyError::TargetChanged { .. },
            ) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Err(e),
        }
    };
    let result = opened.and_then(|(process, mut mem)| sample(&process, &mut mem, &args.sampling, Some(&mut child)));
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

/// One JSON Lines record: a census plus where it falls in the series.
#[derive(Serialize)]
pub(super) struct SampleLine<'a> {
    pub(super) sample: u64,
    pub(super) elapsed_s: f64,
    /// Samples skipped so far (the target changed under every retry of their read).
    pub(super) skipped: u64,
    #[serde(flatten)]
    pub(super) census: &'a Census,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: bool,
    pid: i32,
    python_version: String,
    samples: u64,
    /// Samples that could not be taken, and the last one's error.
    skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_skip_error: Option<&'a str>,
    /// Samples read while the target's collector ran whose counts were low: left out of the
    /// trends.
    overlapping_collection: usize,
    /// Samples read while the collector ran that still counted every object: kept.
    overlapping_kept: usize,
    elapsed_s: f64,
    ended_because: &'a str,
    suspects: Vec<crate::analysis::series::Suspect>,
    /// The heap-graph pass that grouped the suspects' parts, or why it did not run.
    graph_pass: GraphPass,
    /// The last sample's findings, and native memory growth over the series.
    findings: Vec<Finding>,
    /// The memory split's change per minute (RSS, pymalloc's arenas, the native estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_growth: Option<crate::analysis::series::MemoryGrowth>,
    /// With --why-top: who holds the top suspects' instances (also in the recording).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    why: Vec<WhyReport>,
    /// With --why-top: why it was not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    why_skipped_because: Option<String>,
}

/// Instances traced per suspect by --why-top (as `why --sample`'s default).
const WHY_TOP_SAMPLE: usize = 10_000;
/// Largest retainers listed per suspect by --why-top.
const WHY_TOP_LARGEST: usize = 5;

/// `--why-top`: who holds the instances of the `top` leading count suspects, read from one
/// heap graph while the target still runs; or why it could not be read.
fn why_top(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    suspects: &[Suspect],
    top: usize,
    alive: bool,
    live: bool,
) -> Result<Vec<WhyRecord>, String> {
    let chosen: Vec<&Suspect> = suspects.iter().filter(|s| s.metric == "count").take(top).collect();
    if chosen.is_empty() {
        return Err("no leak suspects".into());
    }
    if !alive {
        return Err("the target is gone".into());
    }
    super::warn_if_graph_may_not_fit(process);
    let spinner = live.then(|| {
        let bar = indicatif::ProgressBar::new_spinner()
            .with_message(format!("reading who holds the instances of {} suspects", chosen.len()));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let started = Instant::now();
    let built = retry_transient(true, |_| build(process, mem));
    let result = built.map_err(|e| format!("the heap graph could not be read: {e}")).map(|(graph, _)| {
        let retention = Retention::of(&graph);
        let paths = shortest_paths(&graph);
        let summary = GraphSummary::of(&graph, started.elapsed().as_secs_f64() * 1000.0);
        let explainer = Explainer { graph: &graph, paths: &paths, retention: &retention, process };
        let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let info = ProcessInfo::read(process.pid);
        chosen
            .iter()
            .filter_map(|suspect| {
                let name = &suspect.name;
                let mut instances = instances_of_type(&graph, name);
                // A function or method suspect is a closure or listener leak of one code: its
                // instances are what is held, not every function of the process.
                if let Some(code) = suspect.functions.first() {
                    let addrs: Vec<u64> = instances.iter().map(|&i| graph.addrs[i as usize]).collect();
                    let bound = code.kind == "bound_method";
                    let running = running_code(process, mem, &addrs, bound, (&code.qualname, &code.file, code.line));
                    instances = running.iter().filter_map(|&a| graph.index_of(a)).collect();
                }
                (!instances.is_empty()).then(|| WhyRecord {
                    why: true,
                    pid: process.pid,
                    timestamp: timestamp.clone(),
                    process: Some(info.clone()),
                    report: explainer.report(
                        mem,
                        Some(name.to_string()),
                        &instances,
                        WHY_TOP_SAMPLE,
                        WHY_TOP_LARGEST,
                        summary.clone(),
                    ),
                })
            })
            .collect()
    });
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    result
}

/// Reads who holds whom among the growing types, unless there is nothing to group or the
/// heap is too large for an unasked pass; a failed read is reported, never fatal.
fn graph_pass(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    series: &Series,
    args: &SamplingArgs,
    alive: bool,
    last_objects: u64,
    live: bool,
) -> (Option<Holdings>, GraphPass) {
    let skipped = |why: String| (None, GraphPass { skipped_because: Some(why), ..GraphPass::default() });
    let (mut growing, _) = series.growing();
    if args.no_graph_pass {
        return skipped("--no-graph-pass".into());
    }
    if growing.len() < 2 {
        return skipped("fewer than two types grew: no parts to group".into());
    }
    if !alive {
        return skipped("the target is gone".into());
    }
    if last_objects > GRAPH_PASS_MAX_OBJECTS {
        return skipped(format!(
            "the heap holds {} objects, more than {} (use `leakspy why` for the graph)",
            thousands(last_objects),
            thousands(GRAPH_PASS_MAX_OBJECTS)
        ));
    }
    let needed = last_objects * GRAPH_PASS_BYTES_PER_OBJECT;
    if available_memory().is_some_and(|available| needed > available / 2) {
        return skipped(format!("it would need about {} of memory, and less is free", human_bytes(needed)));
    }
    growing.sort_by(|a, b| b.growth_per_minute.total_cmp(&a.growth_per_minute));
    let types: Vec<(String, u64)> = growing.into_iter().take(GRAPH_PASS_MAX_TYPES).map(|s| (s.name, s.now)).collect();
    let spinner = live.then(|| {
        let bar = indicatif::ProgressBar::new_spinner()
            .with_message(format!("reading who holds whom among {} growing types", types.len()));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let result = retry_transient(true, |_| read_holdings(process, mem, &types));
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    match result {
        Ok((holdings, _)) => {
            let pass = GraphPass {
                ran: true,
                objects_read: holdings.objects_read,
                graph_objects: holdings.graph_objects,
                duration_ms: holdings.duration_ms,
                ..GraphPass::default()
            };
            (Some(holdings), pass)
        }
        Err(e) => (None, GraphPass { error: Some(e.to_string()), ..GraphPass::default() }),
    }
}

pub(super) fn json_line<T: Serialize>(value: &T) -> Result<String, LeakspyError> {
    let mut line = terminal::json(serde_json::to_string(value).map_err(anyhow::Error::from)?);
    line.push('\n');
    Ok(line)
}

/// Set by Ctrl-C (once per process: the handler can only be installed once).
pub(super) fn interrupted() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let setter = flag.clone();
        let _ = ctrlc::set_handler(move || setter.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// Samples in a row that may fail before attach gives up: a minute's worth at the default
/// interval. One failed sample (a target that changed under every retry) is skipped.
pub(super) const MAX_CONSECUTIVE_SKIPS: u64 = 60;

/// Samples that could not be taken, and why the last one failed.
#[derive(Default)]
pub(super) struct Skips {
    pub(super) total: u64,
    pub(super) in_a_row: u64,
    pub(super) last_error: Option<String>,
}

/// Errors that end sampling: whatever the next sample would meet again.
pub(super) fn ends_sampling(e: &LeakspyError) -> bool {
    matches!(e, LeakspyError::PermissionDenied { .. } | LeakspyError::UnsupportedVersion { .. })
}

fn sample(
    process: &PythonProcess,
    mem: &mut LiveProcess,
    args: &SamplingArgs,
    mut child: Option<&mut Child>,
) -> Result<(), LeakspyError> {
    let stop = interrupted();
    let live = !args.json && std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout();
    let mut record = match &args.record {
        Some(path) => Some(AppendFile::open(path)?),
        None => None,
    };
    let start = Instant::now();
    let mut series = Series::default();
    let mut taken = 0u64;
    let mut skips = Skips::default();
    let mut behind = false;
    let mut warned_behind = false;
    let mut last_findings = Vec::new();
    let mut last_objects = 0;
    // Every way out of the loop prints the summary of what was sampled; an error that ended
    // it is returned after that.
    let mut failure = None;
    let identity = ProcessIdentity::read(process.pid);
    let ended_because = loop {
        if stop.load(Ordering::SeqCst) {
            break "interrupted";
        }
        if args.samples.is_some_and(|n| taken >= n) {
            break "sample count reached";
        }
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            break "duration reached";
        }
        if let Some(child) = child.as_deref_mut()
            && child.try_wait().ok().flatten().is_some()
        {
            break "target exited";
        }
        match identity.check(process.pid) {
            Sameness::Same => {}
            Sameness::Gone => break "target exited",
            Sameness::Replaced => break "target replaced (its PID now runs another process or program)",
        }
        let spinner = (taken == 0 && live).then(|| {
            let bar = indicatif::ProgressBar::new_spinner()
                .with_message(format!("reading the heap of process {}", process.pid));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let sampled_at = start.elapsed().as_secs_f64();
        let result = take_census_of_process(process, mem, args.max_objects, false, false);
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        let census = match result {
            Ok(census) => census,
            Err(LeakspyError::ProcessExited { .. } | LeakspyError::NoSuchProcess { .. }) => break "target exited",
            Err(e) if ends_sampling(&e) => {
                failure = Some(e);
                break "error";
            }
            Err(e) => {
                // A read that failed because the process exited or ran exec() under it is the
                // end of this target, not a sample to skip.
                match identity.check(process.pid) {
                    Sameness::Same => {}
                    Sameness::Gone => break "target exited",
                    Sameness::Replaced => break "target replaced (its PID now runs another process or program)",
                }
                skips.total += 1;
                skips.in_a_row += 1;
                if !live {
                    eprintln!("leakspy: note: sample skipped: {}", terminal::message(&e.to_string()));
                }
                skips.last_error = Some(e.to_string());
                if skips.in_a_row >= MAX_CONSECUTIVE_SKIPS {
                    failure = Some(e);
                    break "every sample failed";
                }
                wait_for_next(start, args.interval, taken + skips.total, &stop);
                continue;
            }
        };
        skips.in_a_row = 0;
        taken += 1;
        series.push(sampled_at, &census);
        last_findings.clone_from(&census.findings);
        last_objects = census.objects_total;
        let line =
            json_line(&SampleLine { sample: taken, elapsed_s: sampled_at, skipped: skips.total, census: &census })?;
        if let Some(file) = record.as_mut() {
            // One locked write per line, undone if it fails: the file never holds half a line.
            if let Err(e) = file.append(line.as_bytes()) {
                failure = Some(e.into());
                break "error";
            }
        }
        if live {
            let status = SamplingStatus {
                elapsed: start.elapsed(),
                rss: rss_bytes(process.pid),
                behind,
                skipped: skips.total,
                last_skip: skips.last_error.as_deref(),
                columns: terminal_columns(),
            };
            let screen = render_live(&census, &series, &status, args.top, args.sort);
            let _ = write!(stdout, "\x1b[H\x1b[2J{screen}");
        } else {
            let _ = stdout.write_all(line.as_bytes());
        }
        let _ = stdout.flush();
        behind = wait_for_next(start, args.interval, taken + skips.total, &stop);
        if behind && !live && !warned_behind {
            eprintln!(
                "leakspy: note: a census takes longer than --interval ({:?}); sampling back to back",
                args.interval
            );
            warned_behind = true;
        }
    };
    let alive = failure.is_none() && identity.check(process.pid) == Sameness::Same;
    let (holdings, pass) = graph_pass(process, mem, &series, args, alive, last_objects, live);
    let suspects = series.suspects_with(holdings.as_ref().map(|h| h.holds.as_slice()));
    last_findings.extend(series.native_growth());
    last_findings.extend(series.pymalloc_growth());
    let (whys, why_skipped_because) = match args.why_top {
        0 => (Vec::new(), None),
        n => match why_top(process, mem, &suspects, n, alive, live) {
            Ok(whys) => (whys, None),
            Err(why_not) => (Vec::new(), Some(why_not)),
        },
    };
    if let Some(file) = record.as_mut() {
        let holds = holdings.as_ref().filter(|h| !h.holds.is_empty()).map(|h| HoldsRecord {
            holds_record: true,
            pid: process.pid,
            process: Some(ProcessInfo::read(process.pid)),
            holds: h.holds.clone(),
        });
        let lines = holds.iter().map(json_line).chain(whys.iter().map(json_line));
        for line in lines {
            if let Err(e) = line.and_then(|line| Ok(file.append(line.as_bytes())?)) {
                failure.get_or_insert(e);
                break;
            }
        }
    }
    if live {
        let _ = write!(
            stdout,
            "{}",
            render_summary(
                &series,
                &suspects,
                &last_findings,
                &pass,
                ended_because,
                (skips.total, skips.last_error.as_deref()),
                (identity.check(process.pid) == Sameness::Same).then_some(process.pid),
            )
        );
        if args.why_top > 0 {
            let _ = write!(stdout, "{}", render_why_summary(&whys, why_skipped_because.as_deref()));
        }
    } else {
        let _ = stdout.write_all(
            json_line(&SummaryLine {
                summary: true,
                pid: process.pid,
                python_version: process.version.to_string(),
                samples: taken,
                skipped: skips.total,
                last_skip_error: skips.last_error.as_deref(),
                overlapping_collection: series.overlapping_collection,
                overlapping_kept: series.overlapping_kept,
                elapsed_s: start.elapsed().as_secs_f64(),
                ended_because,
                suspects,
                graph_pass: pass,
                findings: last_findings,
                memory_growth: series.memory_growth(),
                why: whys.into_iter().map(|w| w.report).collect(),
                why_skipped_because,
            })?
            .as_bytes(),
        );
    }
    let _ = stdout.flush();
    failure.map_or(Ok(()), Err)
}

/// The width of the terminal on stdout, if it is one.
fn terminal_columns() -> Option<usize> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct given; fd 1 is only read from.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// Sleeps until the next sample is due (sample `done` + 1 on the schedule), waking early for
/// Ctrl-C; true if it was already due (the census takes longer than the interval).
pub(super) fn wait_for_next(start: Instant, interval: Duration, done: u64, stop: &AtomicBool) -> bool {
    let next_due = start + interval.mul_f64(done as f64);
    let behind = Instant::now() > next_due;
    while Instant::now() < next_due && !stop.load(Ordering::SeqCst) {
        std::thread::sleep((next_due - Instant::now()).min(Duration::from_millis(50)));
    }
    behind
}
