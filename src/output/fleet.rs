//! `attach` over several processes on a terminal: the live table (per type the total over the
//! processes sampled now, and per process, or the one growing most), and the summary (suspects
//! across processes and per process, and the processes that came and went).

use super::live::{LiveSort, why_command};
use crate::analysis::fleet::SharedSuspect;
use crate::analysis::series::{Suspect, TypeChange};
use crate::text::{signed, terminal, thousands};
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

/// Processes shown in columns of their own; with more, one column names the one growing most.
const MAX_PROCESS_COLUMNS: usize = 4;
/// Processes listed one line each in the summary; the rest are counted (`--json` has all).
const MAX_PROCESS_LINES: usize = 20;

/// One process sampled now, as the live table shows it.
pub struct ProcessView {
    pub pid: i32,
    pub is_master: bool,
    /// Per type at its latest sample (see `Series::changes`).
    pub changes: Vec<TypeChange>,
    pub suspects: Vec<Suspect>,
    pub samples: usize,
}

/// Where sampling stands, for the header.
pub struct FleetStatus<'a> {
    pub elapsed: Duration,
    pub round: u64,
    pub python_versions: &'a [String],
    /// Processes that appeared after the start, and that exited or were replaced.
    pub came: usize,
    pub went: usize,
    /// The slowest census of the last round, in ms.
    pub slowest_census_ms: f64,
    pub behind: bool,
    pub skipped: u64,
    /// Samples a process needs before a steady climb can be called.
    pub samples_to_call: usize,
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Per type over the processes: the total count, the total change since each one's first
/// sample, and how many call it a suspect.
struct Row {
    name: String,
    count: u64,
    since_first: i64,
    refcount_sum: u64,
    growing_in: usize,
    /// Per process (in the order of the views): change since its first sample.
    per_process: Vec<Option<i64>>,
}

fn rows(processes: &[ProcessView]) -> Vec<Row> {
    let mut by_name: HashMap<&str, Row> = HashMap::new();
    for (i, p) in processes.iter().enumerate() {
        for c in &p.changes {
            let row = by_name.entry(c.name.as_str()).or_insert_with(|| Row {
                name: c.name.clone(),
                count: 0,
                since_first: 0,
                refcount_sum: 0,
                growing_in: 0,
                per_process: vec![None; processes.len()],
            });
            row.count += c.count;
            row.since_first += c.since_first;
            row.refcount_sum += c.refcount_sum;
            row.per_process[i] = Some(c.since_first);
        }
        for s in p.suspects.iter().filter(|s| s.metric == "count") {
            if let Some(row) = by_name.get_mut(s.name.as_str()) {
                row.growing_in += 1;
            }
        }
    }
    by_name.into_values().collect()
}

pub fn render_fleet_live(processes: &[ProcessView], status: &FleetStatus, top: usize, sort: LiveSort) -> String {
    let mut out = String::new();
    let workers = processes.iter().filter(|p| !p.is_master).count();
    let _ = writeln!(
        out,
        "leakspy  {} processes ({} workers)  Python {}  round {}  elapsed {}  slowest census {:.0} ms  came {}  went {}   (Ctrl-C to stop)",
        processes.len(),
        workers,
        status.python_versions.join(", "),
        status.round,
        clock(status.elapsed),
        status.slowest_census_ms,
        status.came,
        status.went,
    );
    if status.behind {
        let _ = writeln!(out, "note: a round of censuses takes longer than --interval; sampling back to back");
    }
    if status.skipped > 0 {
        let _ =
            writeln!(out, "note: {} samples skipped so far (the targets changed under every retry)", status.skipped);
    }
    let mut rows = rows(processes);
    match sort {
        LiveSort::Growth => rows.sort_by(|a, b| {
            b.growing_in.cmp(&a.growing_in).then(b.since_first.cmp(&a.since_first)).then(b.count.cmp(&a.count))
        }),
        LiveSort::Count => rows.sort_by_key(|r| std::cmp::Reverse(r.count)),
        LiveSort::Refs => rows.sort_by_key(|r| std::cmp::Reverse(r.refcount_sum)),
    }
    let columns = processes.len() <= MAX_PROCESS_COLUMNS;
    let _ = write!(out, "\n  {:<44} {:>12} {:>10} {:>7}", "TYPE", "TOTAL", "+FIRST", "GROWS");
    if columns {
        for p in processes {
            let label = format!("{}{}", if p.is_master { "m " } else { "" }, p.pid);
            let _ = write!(out, " {label:>11}");
        }
    } else {
        let _ = write!(out, " {:>22}", "MOST GROWTH (PID)");
    }
    let _ = writeln!(out);
    for row in rows.iter().take(top) {
        let mark = if row.growing_in > 0 { "!" } else { " " };
        let grows = if row.growing_in > 0 { format!("{}/{}", row.growing_in, workers.max(1)) } else { String::new() };
        let _ = write!(
            out,
            "{mark} {:<44} {:>12} {:>10} {:>7}",
            terminal::name_within(&row.name, 44),
            thousands(row.count),
            signed(row.since_first),
            grows
        );
        if columns {
            for change in &row.per_process {
                let _ = write!(out, " {:>11}", change.map_or(String::new(), signed));
            }
        } else if let Some((i, most)) =
            row.per_process.iter().enumerate().filter_map(|(i, c)| c.map(|c| (i, c))).max_by_key(|(_, c)| *c)
        {
            let _ = write!(out, " {:>22}", format!("{} ({})", signed(most), processes[i].pid));
        }
        let _ = writeln!(out);
    }
    let needed = status.samples_to_call;
    let judged = processes.iter().filter(|p| p.samples >= needed).count();
    if judged < processes.len() {
        let _ = writeln!(
            out,
            "\n{} of {} processes have fewer than {needed} samples: not judged yet",
            processes.len() - judged,
            processes.len()
        );
    }
    out
}

/// How a sampled process's series ended, for the summary.
pub struct ProcessOutcome {
    pub pid: i32,
    pub is_master: bool,
    pub cmdline: String,
    pub samples: usize,
    pub judged: bool,
    /// "running", "exited", "replaced", or the error that ended it.
    pub ended: String,
    pub suspects: Vec<Suspect>,
}

/// Counts for the summary's first lines.
pub struct FleetTotals<'a> {
    pub ended_because: &'a str,
    pub rounds: u64,
    pub elapsed: Duration,
    pub at_start: usize,
    pub came: usize,
    pub exited: usize,
    pub replaced: usize,
    pub skipped: u64,
    pub samples_to_call: usize,
}

fn rate(r: f64) -> String {
    thousands(r.round().max(0.0) as u64)
}

/// "`Order` grows in 3 of 3 workers, +1,500/min each (median; 1,200 to 1,800), 4,500 added".
pub fn shared_sentence(s: &SharedSuspect) -> String {
    let what = if s.metric == "count" { "objects" } else { "references (count flat)" };
    let mut line = format!(
        "{} grows in {} of {} {}, +{} {what}/min each",
        terminal::name(&s.name),
        s.growing_in,
        s.judged,
        s.counted_as,
        rate(s.growth_per_minute)
    );
    if s.pids.len() > 1 {
        let _ = write!(line, " (median; {} to {})", rate(s.growth_per_minute_min), rate(s.growth_per_minute_max));
    }
    let _ = write!(line, ", {} added", signed(s.added));
    if !s.masters.is_empty() {
        let masters: Vec<String> = s.masters.iter().map(i32::to_string).collect();
        let _ = write!(line, "; also in the master ({})", masters.join(", "));
    }
    line
}

pub fn render_fleet_summary(totals: &FleetTotals, shared: &[SharedSuspect], processes: &[ProcessOutcome]) -> String {
    let mut out = String::new();
    let went = totals.exited + totals.replaced;
    let _ = writeln!(
        out,
        "\nSampling ended ({}) after {} rounds, {:.1} s: {} processes sampled ({} at the start, {} came later; {} went: {} exited, {} replaced).",
        totals.ended_because,
        totals.rounds,
        totals.elapsed.as_secs_f64(),
        processes.len(),
        totals.at_start,
        totals.came,
        went,
        totals.exited,
        totals.replaced
    );
    if totals.skipped > 0 {
        let _ = writeln!(out, "{} samples were skipped (the targets changed under every retry).", totals.skipped);
    }
    let brief = processes.iter().filter(|p| !p.judged).count();
    if brief > 0 {
        let _ = writeln!(
            out,
            "{brief} processes had fewer than {} samples, too few to call a steady climb: sample more often (--interval) to judge short-lived workers.",
            totals.samples_to_call
        );
    }
    if shared.is_empty() {
        let _ = writeln!(out, "No leak suspects: no type grew steadily in any process.");
    } else {
        let _ = writeln!(out, "Leak suspects across processes:");
        for s in shared {
            let _ = writeln!(out, "  {}", shared_sentence(s));
        }
    }
    let _ = writeln!(out, "Per process:");
    for p in processes.iter().take(MAX_PROCESS_LINES) {
        let role = if p.is_master { "master" } else { "worker" };
        let head = format!(
            "  {} {role} ({}), {} samples, {}",
            p.pid,
            terminal::name_within(&p.cmdline, 40),
            p.samples,
            terminal::message(&p.ended)
        );
        let verdict = if !p.judged {
            "too few samples to judge".to_string()
        } else if p.suspects.is_empty() {
            "no suspects".to_string()
        } else {
            p.suspects
                .iter()
                .take(3)
                .map(|s| {
                    format!(
                        "{} +{}/min ({} added, {} now)",
                        terminal::name(&s.name),
                        rate(s.growth_per_minute),
                        signed(s.added),
                        thousands(s.now)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "{head}: {verdict}");
    }
    if processes.len() > MAX_PROCESS_LINES {
        let _ = writeln!(out, "  ... and {} more (--json lists every one)", processes.len() - MAX_PROCESS_LINES);
    }
    // The next question is who holds them: a running process where the top suspect grows.
    if let Some(top) = shared.first()
        && let Some(p) = processes.iter().find(|p| p.ended == "running" && top.pids.contains(&p.pid))
    {
        let _ = writeln!(out, "Who holds them: {}", why_command(p.pid, &top.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::terminal::is_unsafe;

    fn change(name: &str, count: u64, since_first: i64) -> TypeChange {
        TypeChange { name: name.into(), count, refcount_sum: count, since_first, since_previous: 0 }
    }

    fn suspect(name: &str) -> Suspect {
        Suspect {
            name: name.into(),
            metric: "count",
            growth_per_minute: 1500.0,
            added: 300,
            now: 900,
            confidence: 0.99,
            samples: 40,
            parts: Vec::new(),
            functions: Vec::new(),
        }
    }

    #[test]
    fn the_live_table_sums_over_processes_and_shows_each() {
        let hostile = "x.\x1b[2J";
        let view = |pid, is_master, growth: i64| ProcessView {
            pid,
            is_master,
            changes: vec![change("Order", 100 + growth as u64, growth), change(hostile, 5, 0)],
            suspects: if growth > 0 { vec![suspect("Order")] } else { vec![] },
            samples: 10,
        };
        let processes = [view(10, true, 0), view(11, false, 300), view(12, false, 250)];
        let status = FleetStatus {
            elapsed: Duration::from_secs(65),
            round: 10,
            python_versions: &["3.11.7".into()],
            came: 1,
            went: 0,
            slowest_census_ms: 12.0,
            behind: false,
            skipped: 0,
            samples_to_call: 8,
        };
        let screen = render_fleet_live(&processes, &status, 10, LiveSort::Growth);
        assert!(!screen.chars().any(|c| c != '\n' && is_unsafe(c)), "{screen}");
        let order = screen.lines().find(|l| l.contains("Order")).unwrap_or_default();
        assert!(order.starts_with("! Order"), "{screen}");
        for cell in ["850", "+550", "2/2", "+300", "+250"] {
            assert!(order.contains(cell), "{cell} in {order}");
        }
        assert!(screen.contains("m 10") && screen.contains("3 processes (2 workers)"), "{screen}");
        // More processes than columns: the one growing most is named.
        let many: Vec<ProcessView> = (0..6).map(|i| view(20 + i, false, 10 * i as i64)).collect();
        let screen = render_fleet_live(&many, &status, 10, LiveSort::Growth);
        assert!(screen.contains("MOST GROWTH") && screen.contains("+50 (25)"), "{screen}");
    }

    #[test]
    fn the_summary_says_who_came_and_went_and_what_grows_where() {
        let shared = SharedSuspect {
            name: "__main__.Order".into(),
            metric: "count",
            growing_in: 3,
            judged: 3,
            counted_as: "workers",
            pids: vec![11, 12, 13],
            masters: vec![],
            growth_per_minute: 1500.0,
            growth_per_minute_min: 1200.0,
            growth_per_minute_max: 1800.0,
            added: 4500,
        };
        let outcome = |pid, ended: &str, judged| ProcessOutcome {
            pid,
            is_master: false,
            cmdline: "gunicorn: worker [app:app]".into(),
            samples: if judged { 40 } else { 3 },
            judged,
            ended: ended.into(),
            suspects: if judged { vec![suspect("__main__.Order")] } else { vec![] },
        };
        let totals = FleetTotals {
            ended_because: "interrupted",
            rounds: 40,
            elapsed: Duration::from_secs(8),
            at_start: 3,
            came: 1,
            exited: 1,
            replaced: 0,
            skipped: 0,
            samples_to_call: 8,
        };
        let text = render_fleet_summary(
            &totals,
            &[shared],
            &[
                outcome(11, "exited", true),
                outcome(12, "running", true),
                outcome(13, "running", true),
                outcome(14, "running", false),
            ],
        );
        assert!(
            text.contains("4 processes sampled (3 at the start, 1 came later; 1 went: 1 exited, 0 replaced)"),
            "{text}"
        );
        assert!(
            text.contains(
                "__main__.Order grows in 3 of 3 workers, +1,500 objects/min each (median; 1,200 to 1,800), +4,500 added"
            ),
            "{text}"
        );
        assert!(text.contains("1 processes had fewer than 8 samples"), "{text}");
        assert!(text.contains("14 worker (gunicorn: worker [app:app]), 3 samples, running: too few samples"), "{text}");
        assert!(text.contains("Who holds them: leakspy why 12 --type __main__.Order"), "{text}");
    }
}
