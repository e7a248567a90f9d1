//! The live view of `attach` on a terminal, and the summary printed when sampling ends.

use super::suspects::{detail_lines, short};
use crate::analysis::findings::Finding;
use crate::analysis::series::{Series, Suspect};
use crate::heap::census::Census;
use crate::heap::holders::GraphPass;
use crate::history::WhyRecord;
use crate::text::sparkline::sparkline;
use crate::text::{human_bytes, shell, signed, terminal, thousands};
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveSort {
    /// Largest change since the first sample first.
    Growth,
    Count,
    Refs,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Where sampling stands, for the live view's header.
pub struct SamplingStatus<'a> {
    pub elapsed: Duration,
    pub rss: Option<u64>,
    /// A census takes longer than the interval.
    pub behind: bool,
    /// Samples that could not be taken so far, and the last one's error.
    pub skipped: u64,
    pub last_skip: Option<&'a str>,
    /// The terminal's width, when known: suspect rows get a sparkline if it fits.
    pub columns: Option<usize>,
}

/// Characters of a sparkline: in the live view's suspect rows and the summary.
const SPARK_WIDTH: usize = 24;

/// A type's counts over the kept samples as a sparkline (empty for a type never seen).
fn spark(series: &Series, name: &str) -> String {
    let values: Vec<f64> = series.counts_of(name).map(|c| c.iter().map(|&v| v as f64).collect()).unwrap_or_default();
    sparkline(&values, SPARK_WIDTH)
}

pub fn render_live(census: &Census, series: &Series, status: &SamplingStatus, top: usize, sort: LiveSort) -> String {
    let SamplingStatus { elapsed, rss, behind, skipped, last_skip, columns } = *status;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leakspy  PID {}  Python {}  sample {}  elapsed {}  census {:.0} ms  RSS {}  objects {}   (Ctrl-C to stop)",
        census.pid,
        census.python_version,
        series.samples_taken,
        clock(elapsed),
        census.duration_ms,
        rss.map_or("?".into(), mib),
        thousands(census.objects_total),
    );
    if let Some(line) = census.memory.as_ref().and_then(crate::output::table::memory_line) {
        let _ = writeln!(out, "{line}");
    }
    if behind {
        let _ = writeln!(out, "note: a census takes longer than --interval; sampling back to back");
    }
    if let (1.., Some(error)) = (skipped, last_skip) {
        let _ = writeln!(out, "note: {skipped} samples skipped so far; the last because: {}", terminal::message(error));
    }
    if census.torn_links > 0 {
        let _ =
            writeln!(out, "note: {} torn links in this sample (the target changed during the read)", census.torn_links);
    }
    let suspects = series.suspects();
    let mut rows = series.changes();
    match sort {
        LiveSort::Growth => rows.sort_by(|a, b| b.since_first.cmp(&a.since_first).then_with(|| b.count.cmp(&a.count))),
        LiveSort::Count => rows.sort_by_key(|r| std::cmp::Reverse(r.count)),
        LiveSort::Refs => rows.sort_by_key(|r| std::cmp::Reverse(r.refcount_sum)),
    }
    let _ = writeln!(
        out,
        "\n  {:<48} {:>12} {:>10} {:>9} {:>10} {:>14}",
        "TYPE", "COUNT", "+FIRST", "+LAST", "/MIN", "REFCOUNT SUM"
    );
    for row in rows.iter().take(top) {
        let suspect = suspects.iter().find(|s| s.name == row.name);
        let part = suspects.iter().flat_map(|s| &s.parts).find(|p| p.name == row.name);
        let (mark, rate) = match (suspect, part) {
            (Some(s), _) => ("!", format!("{:.0}", s.growth_per_minute)),
            (None, Some(p)) => ("~", format!("{:.0}", p.growth_per_minute)),
            (None, None) => (" ", String::new()),
        };
        let name = terminal::name_within(&row.name, 48);
        let _ = writeln!(
            out,
            "{mark} {:<48} {:>12} {:>10} {:>9} {:>10} {:>14}",
            name,
            thousands(row.count),
            signed(row.since_first),
            signed(row.since_previous),
            rate,
            thousands(row.refcount_sum)
        );
    }
    if !suspects.is_empty() {
        let _ = writeln!(out, "\n! leak suspects (steady growth; ~ marks their parts):");
        for s in suspects.iter().take(5) {
            let line = format!("!   {}", short(&s.name, &s.functions, &s.parts));
            let fits = columns.is_some_and(|c| line.chars().count() + 2 + SPARK_WIDTH <= c);
            let line = if fits { format!("{line}  {}", spark(series, &s.name)) } else { line };
            let _ = writeln!(out, "{line}");
        }
    }
    for f in &census.findings {
        let _ = writeln!(out, "* {}", f.message);
    }
    out
}

pub fn render_summary(
    series: &Series,
    suspects: &[Suspect],
    findings: &[Finding],
    pass: &GraphPass,
    ended_because: &str,
    skips: (u64, Option<&str>),
    pid: Option<i32>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nSampling ended ({ended_because}) after {} samples.", series.samples_taken);
    if let (skipped @ 1.., Some(error)) = skips {
        let _ = writeln!(out, "{skipped} samples were skipped; the last because: {}", terminal::message(error));
    }
    if series.overlapping_collection > 0 {
        let _ = writeln!(
            out,
            "{} samples overlapped a garbage collection in the target and counted fewer objects: left out of the trends.",
            series.overlapping_collection
        );
    }
    if series.overlapping_kept > 0 {
        let _ = writeln!(
            out,
            "{} samples overlapped a garbage collection but counted as many objects as the samples before: kept.",
            series.overlapping_kept
        );
    }
    if let Some(g) = series.memory_growth() {
        let signed_mib = |bytes: f64| format!("{:+.1} MiB", bytes / (1024.0 * 1024.0));
        let arenas =
            g.pymalloc_arenas_per_minute.map_or(String::new(), |a| format!(", pymalloc arenas {}", signed_mib(a)));
        let _ = writeln!(
            out,
            "Memory per minute: RSS {}{arenas}, native (estimate) {}.",
            signed_mib(g.rss_per_minute),
            signed_mib(g.native_per_minute)
        );
    }
    for f in findings {
        let _ = writeln!(out, "* {}", f.message);
    }
    if suspects.is_empty() {
        let _ = writeln!(out, "No leak suspects: no type grew steadily over the series.");
        return out;
    }
    let _ = writeln!(out, "Leak suspects, the leaking type first with what each instance brings along:");
    for s in suspects {
        let what = if s.metric == "count" { "objects" } else { "references (count flat)" };
        let _ = writeln!(
            out,
            "  {}: +{:.0} {what}/min ({} added, {} now), confidence {:.0}% over {} samples  {}",
            terminal::name(&s.name),
            s.growth_per_minute,
            signed(s.added),
            thousands(s.now),
            s.confidence * 100.0,
            s.samples,
            spark(series, &s.name)
        );
        for line in detail_lines(&s.functions, &s.parts) {
            let _ = writeln!(out, "      {line}");
        }
    }
    let grouping = match (pass.ran, &pass.skipped_because, &pass.error) {
        (true, _, _) => format!(
            "Parts grouped from the heap graph (the references of {} objects, read in {:.0} ms) and by growth.",
            thousands(pass.objects_read),
            pass.duration_ms
        ),
        (false, _, Some(error)) => {
            format!("Parts grouped by growth only: the heap graph could not be read ({}).", terminal::message(error))
        }
        (false, Some(why), None) => format!("Parts grouped by growth only ({why})."),
        (false, None, None) => "Parts grouped by growth only.".into(),
    };
    if suspects.iter().any(|s| !s.parts.is_empty()) || pass.ran {
        let _ = writeln!(out, "{grouping}");
    }
    // The next question is who holds them: while the process runs, that can be answered.
    if let (Some(pid), Some(top)) = (pid, suspects.first()) {
        let _ = writeln!(out, "Who holds them: {}", why_command(pid, &top.name));
    }
    out
}

/// Paths shown per suspect in the summary's "who holds them" (the recording has them all).
const WHY_PATHS_SHOWN: usize = 3;

/// What `attach --why-top` read: per suspect, its instances, what they retain, and the paths
/// that hold most of them. Type names come from the target (`terminal::name`); paths were
/// escaped when they were worded.
pub fn render_why_summary(whys: &[WhyRecord], skipped_because: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(why_not) = skipped_because {
        let _ = writeln!(out, "Who holds them was not read: {}.", terminal::message(why_not));
    }
    for w in whys {
        let (Some(name), Some(e)) = (&w.report.type_name, &w.report.explanation) else { continue };
        let _ = writeln!(
            out,
            "Who holds {} {}: {} retained (freed if they all went)",
            thousands(e.instances),
            terminal::name(name),
            human_bytes(e.retained_bytes)
        );
        for p in e.paths.iter().take(WHY_PATHS_SHOWN) {
            let _ = writeln!(out, "  {} via {}", thousands(p.count), p.path);
        }
        if e.paths.len() > WHY_PATHS_SHOWN {
            let _ = writeln!(out, "  ... and {} more paths", e.paths.len() - WHY_PATHS_SHOWN);
        }
        if e.unreachable > 0 {
            let _ = writeln!(out, "  {} reachable from no module or frame", thousands(e.unreachable));
        }
    }
    out
}

/// Longest type argument a suggested command carries: past it (a generated name of
/// kilobytes), the command says where to take the name from instead.
const MAX_COMMAND_ARGUMENT: usize = 1000;

/// The `leakspy why` command for a type, to copy into a shell: the name quoted so that the
/// shell passes it exactly and runs nothing in it (`shell::quote`), and shown without any
/// character a terminal acts on. A name that no command line can carry (a NUL) or that is
/// too long to copy is shown escaped, with where to get it exactly.
pub fn why_command(pid: i32, type_name: &str) -> String {
    match shell::quote(type_name) {
        // `--type=` keeps a name that starts with "-" from reading as an option.
        Some(quoted) if quoted.len() <= MAX_COMMAND_ARGUMENT => {
            let separator = if type_name.starts_with('-') { "=" } else { " " };
            format!("leakspy why {pid} --type{separator}{quoted}")
        }
        quoted => {
            let why = match quoted {
                Some(_) => format!("the name is {} bytes long", type_name.len()),
                None => "the name holds a NUL character, which no command line can carry".into(),
            };
            format!(
                "leakspy why {pid} --type NAME, with NAME exactly as `leakspy snapshot {pid} --json` gives it \
                 ({why}; it starts {})",
                terminal::name_within(type_name, 60)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::terminal::is_unsafe;

    fn suspect(name: &str) -> Suspect {
        Suspect {
            name: name.into(),
            metric: "count",
            growth_per_minute: 600.0,
            added: 100,
            now: 150,
            confidence: 0.99,
            samples: 8,
            parts: Vec::new(),
            functions: Vec::new(),
        }
    }

    #[test]
    fn the_summary_shows_names_escaped_and_suggests_a_quoted_command() {
        let hostile = "m.\x1b]0;pwned\x07$(touch /tmp/x)'\n";
        let summary = render_summary(
            &Series::default(),
            &[suspect(hostile), suspect("__main__.Order")],
            &[],
            &GraphPass::default(),
            "sample count reached",
            (1, Some("changed under \x1b[2J every read")),
            Some(42),
        );
        assert!(!summary.chars().any(|c| c != '\n' && is_unsafe(c)), "{summary}");
        assert!(summary.contains(r"  m.\x1b]0;pwned\x07$(touch /tmp/x)'\n: +600 objects/min"), "{summary}");
        assert!(summary.contains(r"the last because: changed under \x1b[2J every read"), "{summary}");
        assert!(
            summary.contains(r"Who holds them: leakspy why 42 --type $'m.\x1b]0;pwned\x07$(touch /tmp/x)\'\x0a'"),
            "{summary}"
        );
    }

    #[test]
    fn parts_are_marked_in_the_live_view_and_listed_in_the_summary() {
        use crate::heap::census::tests::census_with;
        let mut series = Series::default();
        let mut census = census_with(&[]);
        for i in 0..20u64 {
            census = census_with(&[
                ("dict", 5000 + 10 * i, 9000),
                ("__main__.Invoice", 100 + 10 * i, 200),
                ("list", 300 + (i * 7919) % 5, 300),
            ]);
            series.push(i as f64, &census);
        }
        let status = SamplingStatus {
            elapsed: Duration::from_secs(20),
            rss: None,
            behind: false,
            skipped: 0,
            last_skip: None,
            columns: None,
        };
        let screen = render_live(&census, &series, &status, 10, LiveSort::Growth);
        let row = |name: &str| screen.lines().find(|l| l.contains(name)).unwrap_or_default().to_string();
        assert!(row("__main__.Invoice").starts_with("! "), "{screen}");
        assert!(row("dict").starts_with("~ "), "{screen}");
        assert!(row("list").starts_with("  "), "{screen}");
        assert!(screen.contains("__main__.Invoice (each with 1 dict)"), "{screen}");

        let pass =
            GraphPass { ran: true, objects_read: 1200, graph_objects: 9000, duration_ms: 12.0, ..GraphPass::default() };
        let summary = render_summary(&series, &series.suspects(), &[], &pass, "interrupted", (0, None), Some(7));
        assert!(summary.contains("  __main__.Invoice: +600 objects/min"), "{summary}");
        assert!(summary.contains("      each with 1 dict\n"), "{summary}");
        assert!(summary.contains("Parts grouped from the heap graph (the references of 1,200 objects"), "{summary}");
        assert!(summary.contains("Who holds them: leakspy why 7 --type __main__.Invoice"), "{summary}");
    }

    #[test]
    fn suggested_commands_quote_only_what_needs_it() {
        assert_eq!(why_command(7, "__main__.Order"), "leakspy why 7 --type __main__.Order");
        assert_eq!(why_command(7, "f.<locals>.C"), "leakspy why 7 --type 'f.<locals>.C'");
        assert_eq!(why_command(7, "-x"), "leakspy why 7 --type=-x");
        let nul = why_command(7, "a\0b");
        assert!(nul.starts_with("leakspy why 7 --type NAME,") && nul.contains(r"it starts a\x00b"), "{nul}");
        let long = why_command(7, &"L".repeat(5000));
        assert!(long.contains("5000 bytes long") && long.len() < 300, "{long}");
    }
}
