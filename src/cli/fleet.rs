//! `leakspy attach --match PATTERN` and `--children`: sampling several processes (a pre-fork
//! server's master and workers, a multiprocessing pool) as they come and go.
//!
//! Each round samples every process alive, in parallel on the machine's cores (each census is
//! timed on its own), after scanning for processes that joined the selection (a worker that
//! replaced one recycled after `--max-requests`). Each process keeps a series of its own,
//! judged on its own: a leak shows as growth within each worker's life, however short its life
//! is once it has the trend test's minimum of samples. A process that exits, or whose PID
//! now holds another process or program (the identity check), ends its series and keeps it;
//! the summary says how many came and went, and which types grow in how many of them.

use super::attach::{
    MAX_CONSECUTIVE_SKIPS, SampleLine, SamplingArgs, Skips, ends_sampling, interrupted, json_line, wait_for_next,
};
use super::open_target;
use super::select::Selection;
use super::take_census_of_process;
use crate::analysis::findings::Finding;
use crate::analysis::fleet::{SharedSuspect, Verdict, across, samples_to_call};
use crate::analysis::series::{Series, Suspect};
use crate::cpython::process::PythonProcess;
use crate::error::LeakspyError;
use crate::heap::census::Census;
use crate::memory::live::LiveProcess;
use crate::memory::proc_info::{ProcessIdentity, Sameness};
use crate::memory::processes::{self, ProcessEntry};
use crate::output::files::AppendFile;
use crate::output::fleet::{
    FleetStatus, FleetTotals, ProcessOutcome, ProcessView, render_fleet_live, render_fleet_summary,
};
use crate::text::terminal;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Processes sampled at once: each holds a read cache of up to 16 MiB and a series.
const MAX_PROCESSES: usize = 256;
/// Rounds a process that joined the selection may fail to open (its interpreter still
/// starting: a spawned pool worker) before it is given up on.
const OPEN_ATTEMPTS: u32 = 50;
/// Processes whose series ended that the summary keeps (each as its verdict, a few hundred
/// bytes): a day of workers recycled every minute.
const MAX_ENDED: usize = 10_000;

/// How a process's series ended.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Exited,
    Replaced,
    Failed(String),
}

/// One sampled process.
struct Member {
    pid: i32,
    ppid: i32,
    cmdline: String,
    python_version: String,
    identity: ProcessIdentity,
    /// The interpreter and a reader, while the process is sampled; dropped when it ends.
    reader: Option<(PythonProcess, LiveProcess)>,
    series: Series,
    /// The newest census, held back from the series until the process is seen alive after
    /// it: a process that exits tears its heap down first (module dicts cleared, objects
    /// freed), and a census read then would end its series with a fall that says nothing
    /// about its life.
    held: Option<(f64, Census)>,
    taken: u64,
    skips: Skips,
    came_later: bool,
    first_at: Option<f64>,
    last_at: Option<f64>,
    ending: Option<Ending>,
    last_findings: Vec<Finding>,
    /// Decided when the series ended (or at the end of sampling).
    verdict: Option<Vec<Suspect>>,
    judged: bool,
    /// The last round's census, taken on a sampling thread.
    result: Option<(f64, Result<Census, LeakspyError>)>,
}

impl Member {
    fn open(pid: i32, came_later: bool) -> Result<Member, LeakspyError> {
        let identity = ProcessIdentity::read(pid);
        let (process, mem) = open_target(pid)?;
        let entry = ProcessEntry::read(pid);
        Ok(Member {
            pid,
            ppid: entry.as_ref().map_or(0, |e| e.ppid),
            cmdline: entry.map(|e| e.cmdline).unwrap_or_default(),
            python_version: process.version.to_string(),
            identity,
            reader: Some((process, mem)),
            series: Series::default(),
            held: None,
            taken: 0,
            skips: Skips::default(),
            came_later,
            first_at: None,
            last_at: None,
            ending: None,
            last_findings: Vec::new(),
            verdict: None,
            judged: false,
            result: None,
        })
    }

    fn alive(&self) -> bool {
        self.ending.is_none()
    }

    /// Ends the series: the verdict is decided now and the reader and series let go. The
    /// census held back is dropped if the process exited or was replaced (it may have been
    /// read during its teardown), and kept otherwise.
    fn end(&mut self, ending: Ending) {
        if matches!(ending, Ending::Failed(_)) {
            self.commit_held();
        }
        self.held = None;
        self.conclude();
        self.ending = Some(ending);
        self.reader = None;
        self.series = Series::default();
    }

    fn commit_held(&mut self) {
        if let Some((at, census)) = self.held.take() {
            self.series.push(at, &census);
        }
    }

    /// Takes in a new census; the one held back before it goes into the series.
    fn add(&mut self, at: f64, census: Census) {
        self.commit_held();
        self.held = Some((at, census));
    }

    fn conclude(&mut self) {
        if self.verdict.is_none() {
            self.commit_held();
            self.judged = self.series.kept_samples() >= samples_to_call();
            self.verdict = Some(self.series.suspects());
            self.last_findings.extend(self.series.native_growth());
        }
    }

    fn ended_text(&self) -> String {
        match &self.ending {
            None => "running".into(),
            Some(Ending::Exited) => "exited".into(),
            Some(Ending::Replaced) => "replaced".into(),
            Some(Ending::Failed(e)) => format!("error: {e}"),
        }
    }
}

/// A process's summary line in JSON Lines: the single-process summary's fields, and where it
/// stands among the others.
#[derive(Serialize)]
struct ProcessSummaryLine<'a> {
    summary: bool,
    pid: i32,
    ppid: i32,
    role: &'static str,
    cmdline: &'a str,
    python_version: &'a str,
    samples: u64,
    skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_skip_error: Option<&'a str>,
    overlapping_collection: usize,
    overlapping_kept: usize,
    /// Seconds after the start of sampling of its first and last sample.
    first_sample_s: Option<f64>,
    last_sample_s: Option<f64>,
    came_later: bool,
    ended_because: String,
    /// Enough samples for the trend test.
    judged: bool,
    suspects: &'a [Suspect],
    findings: &'a [Finding],
}

/// The last line: the fleet's summary.
#[derive(Serialize)]
struct FleetSummaryLine<'a> {
    summary: bool,
    fleet: bool,
    processes: usize,
    at_start: usize,
    came: usize,
    went: usize,
    exited: usize,
    replaced: usize,
    judged: usize,
    /// Samples a process needs for a steady climb to be called (see `samples_to_call`).
    min_samples: usize,
    rounds: u64,
    samples: u64,
    skipped: u64,
    elapsed_s: f64,
    ended_because: &'a str,
    suspects: &'a [SharedSuspect],
}

/// Says on stderr when a process given alone has Python processes under it: a server's master
/// serves nothing, and the user who gave its PID most likely wants its workers.
pub fn note_python_children(pid: i32) {
    let table = processes::list();
    let python: Vec<i32> = processes::descendants(&table, pid)
        .into_iter()
        .filter(|child| crate::cpython::discover::probe(*child).is_python())
        .collect();
    if !python.is_empty() {
        let shown: Vec<String> = python.iter().take(8).map(i32::to_string).collect();
        eprintln!(
            "leakspy: note: process {pid} has {} Python processes under it ({}{}): its workers? add --children to read them too",
            python.len(),
            shown.join(", "),
            if python.len() > 8 { ", ..." } else { "" }
        );
    }
}

/// What joined the selection and could not be opened yet, by PID and start time.
#[derive(Default)]
struct Joining {
    attempts: HashMap<(i32, u64), u32>,
}

pub fn sample(selection: Selection, args: &SamplingArgs) -> Result<(), LeakspyError> {
    let Selection { pids, mut selector } = selection;
    let stop = interrupted();
    let live = !args.json && std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout();
    let mut record = match &args.record {
        Some(path) => Some(AppendFile::open(path)?),
        None => None,
    };
    let mut members: Vec<Member> = Vec::new();
    let mut first_error = None;
    let spinner = live.then(|| {
        let bar = indicatif::ProgressBar::new_spinner()
            .with_message(format!("opening {} processes", pids.len().min(MAX_PROCESSES)));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    if pids.len() > MAX_PROCESSES {
        eprintln!(
            "leakspy: note: {} processes selected; sampling the first {MAX_PROCESSES} (narrow --match to read the others)",
            pids.len()
        );
    }
    for &pid in pids.iter().take(MAX_PROCESSES) {
        match Member::open(pid, false) {
            Ok(m) => members.push(m),
            Err(LeakspyError::ProcessExited { .. } | LeakspyError::NoSuchProcess { .. }) => {}
            Err(e) => {
                eprintln!("leakspy: note: process {pid} is not sampled: {}", terminal::message(&e.to_string()));
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    if members.is_empty() {
        return Err(first_error.unwrap_or(LeakspyError::ProcessExited { pid: pids.first().copied().unwrap_or(0) }));
    }
    let at_start = members.len();
    let mut joining = Joining::default();
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut behind = false;
    let mut warned_behind = false;
    let mut failure = None;
    let ended_because = loop {
        if stop.load(Ordering::SeqCst) {
            break "interrupted";
        }
        if args.samples.is_some_and(|n| rounds >= n) {
            break "sample count reached";
        }
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            break "duration reached";
        }
        for m in members.iter_mut().filter(|m| m.alive()) {
            match m.identity.check(m.pid) {
                Sameness::Same => {}
                Sameness::Gone => m.end(Ending::Exited),
                Sameness::Replaced => m.end(Ending::Replaced),
            }
        }
        if rounds > 0 {
            follow(&mut selector, &mut members, &mut joining, live);
        }
        if !members.iter().any(Member::alive) {
            break "every target exited";
        }
        sample_round(&mut members, args.max_objects, start);
        rounds += 1;
        let mut slowest = 0f64;
        for m in members.iter_mut() {
            let Some((at, result)) = m.result.take() else { continue };
            let census = match result {
                Ok(census) => census,
                Err(LeakspyError::ProcessExited { .. } | LeakspyError::NoSuchProcess { .. }) => {
                    m.end(Ending::Exited);
                    continue;
                }
                Err(e) if ends_sampling(&e) => {
                    m.end(Ending::Failed(e.to_string()));
                    continue;
                }
                Err(e) => {
                    // Failed because the process exited or ran exec() under the read: its end.
                    match m.identity.check(m.pid) {
                        Sameness::Same => {}
                        Sameness::Gone => {
                            m.end(Ending::Exited);
                            continue;
                        }
                        Sameness::Replaced => {
                            m.end(Ending::Replaced);
                            continue;
                        }
                    }
                    m.skips.total += 1;
                    m.skips.in_a_row += 1;
                    if !live {
                        eprintln!(
                            "leakspy: note: sample of process {} skipped: {}",
                            m.pid,
                            terminal::message(&e.to_string())
                        );
                    }
                    m.skips.last_error = Some(e.to_string());
                    if m.skips.in_a_row >= MAX_CONSECUTIVE_SKIPS {
                        m.end(Ending::Failed(format!("every sample failed: {e}")));
                    }
                    continue;
                }
            };
            m.skips.in_a_row = 0;
            m.taken += 1;
            m.first_at.get_or_insert(at);
            m.last_at = Some(at);
            slowest = slowest.max(census.duration_ms);
            m.last_findings.clone_from(&census.findings);
            let line =
                json_line(&SampleLine { sample: m.taken, elapsed_s: at, skipped: m.skips.total, census: &census })?;
            m.add(at, census);
            if let Some(file) = record.as_mut()
                && let Err(e) = file.append(line.as_bytes())
            {
                failure = Some(e.into());
            }
            if !live {
                let _ = stdout.write_all(line.as_bytes());
            }
        }
        if failure.is_some() {
            break "error";
        }
        if live {
            let screen = live_screen(&members, start, rounds, slowest, behind, at_start, args);
            let _ = write!(stdout, "\x1b[H\x1b[2J{screen}");
        }
        let _ = stdout.flush();
        forget_oldest_ended(&mut members);
        behind = wait_for_next(start, args.interval, rounds, &stop);
        if behind && !live && !warned_behind {
            eprintln!(
                "leakspy: note: a round of censuses takes longer than --interval ({:?}); sampling back to back",
                args.interval
            );
            warned_behind = true;
        }
    };
    for m in members.iter_mut() {
        m.conclude();
    }
    let masters = masters(&members);
    let verdicts: Vec<Verdict> = members
        .iter()
        .map(|m| Verdict {
            pid: m.pid,
            is_master: masters.contains(&m.pid),
            judged: m.judged,
            suspects: m.verdict.as_deref().unwrap_or_default(),
        })
        .collect();
    let shared = across(&verdicts);
    let exited = members.iter().filter(|m| m.ending == Some(Ending::Exited)).count();
    let replaced = members.iter().filter(|m| m.ending == Some(Ending::Replaced)).count();
    let came = members.iter().filter(|m| m.came_later).count();
    if live {
        let outcomes: Vec<ProcessOutcome> = members
            .iter()
            .map(|m| ProcessOutcome {
                pid: m.pid,
                is_master: masters.contains(&m.pid),
                cmdline: m.cmdline.clone(),
                samples: m.taken as usize,
                judged: m.judged,
                ended: m.ended_text(),
                suspects: m.verdict.clone().unwrap_or_default(),
            })
            .collect();
        let totals = FleetTotals {
            ended_because,
            rounds,
            elapsed: start.elapsed(),
            at_start,
            came,
            exited,
            replaced,
            skipped: members.iter().map(|m| m.skips.total).sum(),
            samples_to_call: samples_to_call(),
        };
        let _ = write!(stdout, "{}", render_fleet_summary(&totals, &shared, &outcomes));
    } else {
        for m in &members {
            let line = json_line(&ProcessSummaryLine {
                summary: true,
                pid: m.pid,
                ppid: m.ppid,
                role: if masters.contains(&m.pid) { "master" } else { "worker" },
                cmdline: &m.cmdline,
                python_version: &m.python_version,
                samples: m.taken,
                skipped: m.skips.total,
                last_skip_error: m.skips.last_error.as_deref(),
                overlapping_collection: m.series.overlapping_collection,
                overlapping_kept: m.series.overlapping_kept,
                first_sample_s: m.first_at,
                last_sample_s: m.last_at,
                came_later: m.came_later,
                ended_because: m.ended_text(),
                judged: m.judged,
                suspects: m.verdict.as_deref().unwrap_or_default(),
                findings: &m.last_findings,
            })?;
            let _ = stdout.write_all(line.as_bytes());
        }
        let line = json_line(&FleetSummaryLine {
            summary: true,
            fleet: true,
            processes: members.len(),
            at_start,
            came,
            went: exited + replaced,
            exited,
            replaced,
            judged: members.iter().filter(|m| m.judged).count(),
            min_samples: samples_to_call(),
            rounds,
            samples: members.iter().map(|m| m.taken).sum(),
            skipped: members.iter().map(|m| m.skips.total).sum(),
            elapsed_s: start.elapsed().as_secs_f64(),
            ended_because,
            suspects: &shared,
        })?;
        let _ = stdout.write_all(line.as_bytes());
    }
    let _ = stdout.flush();
    failure.map_or(Ok(()), Err)
}

/// Processes that are the parent of another sampled process: a server's master or a pool's
/// parent, which forks workers and serves nothing itself.
fn masters(members: &[Member]) -> std::collections::HashSet<i32> {
    let parents: std::collections::HashSet<i32> = members.iter().filter(|m| m.ppid != m.pid).map(|m| m.ppid).collect();
    members.iter().map(|m| m.pid).filter(|pid| parents.contains(pid)).collect()
}

/// Scans for processes that joined the selection and opens them; a process whose interpreter
/// is not up yet (a spawned worker still starting) is tried again next round.
fn follow(selector: &mut super::select::Selector, members: &mut Vec<Member>, joining: &mut Joining, live: bool) {
    if !selector.follows() {
        return;
    }
    let scan = selector.scan();
    for pid in scan.pids {
        if members.iter().any(|m| m.alive() && m.pid == pid) {
            continue;
        }
        if members.iter().filter(|m| m.alive()).count() >= MAX_PROCESSES {
            break;
        }
        let Some(start_ticks) = ProcessEntry::read(pid).map(|e| e.start_ticks) else { continue };
        let key = (pid, start_ticks);
        let attempts = joining.attempts.entry(key).or_insert(0);
        if *attempts >= OPEN_ATTEMPTS {
            continue;
        }
        *attempts += 1;
        match Member::open(pid, true) {
            Ok(m) => {
                joining.attempts.remove(&key);
                members.push(m);
            }
            Err(
                LeakspyError::NotPython { .. }
                | LeakspyError::LayoutMismatch { .. }
                | LeakspyError::TargetChanged { .. },
            ) if *attempts < OPEN_ATTEMPTS => {}
            Err(LeakspyError::ProcessExited { .. } | LeakspyError::NoSuchProcess { .. }) => {}
            Err(e) => {
                *attempts = OPEN_ATTEMPTS;
                if !live {
                    eprintln!("leakspy: note: process {pid} is not sampled: {}", terminal::message(&e.to_string()));
                }
            }
        }
    }
    if joining.attempts.len() > 4096 {
        joining.attempts.retain(|(pid, _), _| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// Takes one census of every process alive, spread over the machine's cores; each census is
/// timed where it is taken, so that a slow one does not shift the others' times.
fn sample_round(members: &mut [Member], max_objects: u64, start: Instant) {
    let mut alive: Vec<&mut Member> = members.iter_mut().filter(|m| m.alive()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(alive.len()).max(1);
    let per_thread = alive.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for chunk in alive.chunks_mut(per_thread.max(1)) {
            scope.spawn(move || {
                for m in chunk.iter_mut() {
                    let Some((process, mem)) = m.reader.as_mut() else { continue };
                    let at = start.elapsed().as_secs_f64();
                    let result = take_census_of_process(process, mem, max_objects, false, false);
                    m.result = Some((at, result));
                }
            });
        }
    });
}

/// Keeps the summary's memory bounded over days of recycled workers: the oldest ended
/// processes are forgotten past [`MAX_ENDED`].
fn forget_oldest_ended(members: &mut Vec<Member>) {
    let ended = members.iter().filter(|m| !m.alive()).count();
    if ended > MAX_ENDED {
        let mut excess = ended - MAX_ENDED;
        members.retain(|m| {
            if excess > 0 && !m.alive() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

fn live_screen(
    members: &[Member],
    start: Instant,
    rounds: u64,
    slowest_census_ms: f64,
    behind: bool,
    at_start: usize,
    args: &SamplingArgs,
) -> String {
    let masters = masters(members);
    let views: Vec<ProcessView> = members
        .iter()
        .filter(|m| m.alive())
        .map(|m| ProcessView {
            pid: m.pid,
            is_master: masters.contains(&m.pid),
            changes: m.series.changes(),
            suspects: m.series.suspects(),
            samples: m.series.kept_samples(),
        })
        .collect();
    let mut versions: Vec<String> = members.iter().filter(|m| m.alive()).map(|m| m.python_version.clone()).collect();
    versions.sort();
    versions.dedup();
    let status = FleetStatus {
        elapsed: start.elapsed(),
        round: rounds,
        python_versions: &versions,
        came: members.len().saturating_sub(at_start),
        went: members.iter().filter(|m| !m.alive()).count(),
        slowest_census_ms,
        behind,
        skipped: members.iter().map(|m| m.skips.total).sum(),
        samples_to_call: samples_to_call(),
    };
    render_fleet_live(&views, &status, args.top, args.sort)
}
