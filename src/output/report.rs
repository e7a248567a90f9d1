//! Reports over recorded censuses: `diff` and `trend`, as text and as JSON documents.

use super::suspects::detail_lines;
use crate::analysis::culprits::{CodeSuspect, Part};
use crate::analysis::diff::CensusDiff;
use crate::analysis::runs::{RunInfo, Runs};
use crate::text::sparkline::sparkline;
use crate::text::{signed, terminal, thousands};
use serde::Serialize;
use std::fmt::Write;

/// The text of `diff`. Everything from the history files is shown through `terminal::name`:
/// the files hold what the targets named.
pub fn render_diff(d: &CensusDiff, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "From {} (PID {}) to {} (PID {}): {} objects",
        terminal::name(&d.from_timestamp),
        d.from_pid,
        terminal::name(&d.to_timestamp),
        d.to_pid,
        signed(d.objects_total_change)
    );
    if d.from_pid != d.to_pid {
        let _ =
            writeln!(out, "note: different processes (a restart?): changes include everything a new process builds");
    }
    for (title, status) in [("Grew or shrank", "changed"), ("New types", "new"), ("Vanished types", "vanished")] {
        let rows: Vec<_> = d.types.iter().filter(|t| t.status == status).collect();
        if rows.is_empty() {
            continue;
        }
        let _ =
            writeln!(out, "\n{title}:\n{:>12} {:>12} {:>12} {:>14}  TYPE", "BEFORE", "AFTER", "CHANGE", "REFCOUNT CHG");
        for t in rows.iter().take(top) {
            let _ = writeln!(
                out,
                "{:>12} {:>12} {:>12} {:>14}  {}",
                thousands(t.count_before),
                thousands(t.count_after),
                signed(t.count_change),
                signed(t.refcount_change),
                terminal::name(&t.name)
            );
        }
        if rows.len() > top {
            let _ = writeln!(out, "{:>12} ({} more)", "", rows.len() - top);
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct TrendSuspect {
    #[serde(rename = "type")]
    pub name: String,
    pub metric: &'static str,
    pub growth_per_hour: f64,
    pub growth_per_day: f64,
    pub added: i64,
    pub now: u64,
    pub confidence: f64,
    pub samples: usize,
    /// Types grouped under this one (its parts and holders), as in `attach`'s summary, by
    /// growth and bound methods' `__self__` (no heap graph: the history holds censuses only).
    /// Their rates are per minute.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<CodeSuspect>,
    /// The type's counts over the run's samples, drawn for a terminal (not in the JSON).
    #[serde(skip)]
    pub sparkline: String,
}

/// Characters of a suspect's sparkline in `trend`.
const SPARK_WIDTH: usize = 24;

#[derive(Debug, Serialize)]
pub struct TrendRun {
    #[serde(flatten)]
    pub info: RunInfo,
    pub samples: usize,
    pub suspects: Vec<TrendSuspect>,
    /// The memory split's change per hour (bytes: RSS, pymalloc's arenas, the native estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_per_hour: Option<MemoryPerHour>,
}

#[derive(Debug, Serialize)]
pub struct MemoryPerHour {
    pub rss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pymalloc_arenas: Option<f64>,
    pub native: f64,
}

#[derive(Debug, Serialize)]
pub struct TrendReport {
    pub runs: Vec<TrendRun>,
    pub skipped_lines: usize,
}

pub fn trend_report(runs: &Runs, skipped_lines: usize) -> TrendReport {
    TrendReport {
        runs: runs
            .runs
            .iter()
            .map(|run| TrendRun {
                info: run.info.clone(),
                samples: run.series.samples_taken,
                memory_per_hour: run.series.memory_growth().map(|g| MemoryPerHour {
                    rss: g.rss_per_minute * 60.0,
                    pymalloc_arenas: g.pymalloc_arenas_per_minute.map(|a| a * 60.0),
                    native: g.native_per_minute * 60.0,
                }),
                suspects: run
                    .suspects()
                    .into_iter()
                    .map(|s| TrendSuspect {
                        sparkline: sparkline(
                            &run.series
                                .counts_of(&s.name)
                                .map(|c| c.iter().map(|&v| v as f64).collect::<Vec<_>>())
                                .unwrap_or_default(),
                            SPARK_WIDTH,
                        ),
                        growth_per_hour: s.growth_per_minute * 60.0,
                        growth_per_day: s.growth_per_minute * 60.0 * 24.0,
                        name: s.name,
                        metric: s.metric,
                        added: s.added,
                        now: s.now,
                        confidence: s.confidence,
                        samples: s.samples,
                        parts: s.parts,
                        functions: s.functions,
                    })
                    .collect(),
            })
            .collect(),
        skipped_lines,
    }
}

/// The text of `trend`: the runs' identities (host, command line) and the suspects' names
/// come from the history file, and are shown through `terminal::name`.
pub fn render_trend(report: &TrendReport, source: &str) -> String {
    let mut out = String::new();
    if report.runs.is_empty() {
        let _ = writeln!(out, "{source}: no census records in the selected window");
    }
    for run in &report.runs {
        let _ = writeln!(
            out,
            "PID {} on {} ({}), Python {}, started {}\n  {} samples from {} to {}",
            run.info.pid,
            if run.info.hostname.is_empty() { "?".into() } else { terminal::name(&run.info.hostname) },
            terminal::name(&run.info.cmdline),
            terminal::name(&run.info.python_version),
            terminal::name(&run.info.start_time),
            run.samples,
            terminal::name(&run.info.first_timestamp),
            terminal::name(&run.info.last_timestamp)
        );
        if let Some(m) = &run.memory_per_hour {
            let signed_mib = |bytes: f64| format!("{:+.1} MiB", bytes / (1024.0 * 1024.0));
            let arenas = m.pymalloc_arenas.map_or(String::new(), |a| format!(", pymalloc arenas {}", signed_mib(a)));
            let _ = writeln!(
                out,
                "  memory per hour: RSS {}{arenas}, native (estimate) {}",
                signed_mib(m.rss),
                signed_mib(m.native)
            );
        }
        if let Some(previous) = run.info.restart_of {
            let _ = writeln!(out, "  the process restarted (previously PID {previous}): a new series starts here");
        }
        if run.samples < crate::analysis::trend::MIN_SAMPLES {
            let _ = writeln!(out, "  too few samples for a trend (need {})", crate::analysis::trend::MIN_SAMPLES);
        } else if run.suspects.is_empty() {
            let _ = writeln!(out, "  no leak suspects: no type grew steadily");
        }
        for s in &run.suspects {
            let what = if s.metric == "count" { "objects" } else { "references, count flat" };
            let _ = writeln!(
                out,
                "  ! {}: {:+.0}/hour, {:+.0}/day {what} ({} over the series, {} now), confidence {:.0}%  {}",
                terminal::name(&s.name),
                s.growth_per_hour,
                s.growth_per_day,
                signed(s.added),
                thousands(s.now),
                s.confidence * 100.0,
                s.sparkline
            );
            for line in detail_lines(&s.functions, &s.parts) {
                let _ = writeln!(out, "      {line}");
            }
        }
        let _ = writeln!(out);
    }
    if report.skipped_lines > 0 {
        let _ = writeln!(out, "{} lines of {source} were not census records (see warnings)", report.skipped_lines);
    }
    out
}
