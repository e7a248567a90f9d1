//! History files: one census per line (JSON Lines), appended by cron runs or `attach --record`,
//! read back by `diff` and `trend`.
//!
//! Appends take an exclusive lock and write each line with one write, so concurrent runs never
//! interleave; a failed write is cut back, so only a crash can leave a partial last line, which
//! readers skip with a warning, as they skip any other line that is not a census.

use crate::heap::census::Census;
use crate::heap::explain::WhyReport;
use crate::memory::proc_info::ProcessInfo;
use crate::output::files::AppendFile;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Appends one census as one line, under an exclusive lock; a failed append leaves the file
/// as it was (see `output::files::AppendFile`).
pub fn append(path: &Path, census: &Census) -> Result<()> {
    let mut line = crate::text::terminal::json(serde_json::to_string(census)?);
    line.push('\n');
    AppendFile::open(path)?.append(line.as_bytes())
}

/// Lines of a history file that were not census records, for one warning each.
#[derive(Debug, Default)]
pub struct Skipped {
    pub lines: Vec<String>,
}

impl Skipped {
    pub fn warn(&self, path: &Path) {
        for line in &self.lines {
            // A line's error can quote the line, which holds what a target named.
            eprintln!("leakspy: warning: {}", crate::text::terminal::message(&format!("{}: {line}", path.display())));
        }
    }
}

/// Who holds a suspect's instances, as `attach --why-top` read it at the end of sampling and
/// appended to the recording (one line, after the censuses): the report shows its paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhyRecord {
    /// Always true: tells this line from a census.
    pub why: bool,
    pub pid: i32,
    /// RFC 3339, UTC, when the heap graph was read.
    pub timestamp: String,
    /// Who the process is: with the PID, matches the record to its run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    #[serde(flatten)]
    pub report: WhyReport,
}

/// Which growing types' instances held which, as `attach`'s graph pass read it at the end of
/// sampling (appended to the recording before the `why` records): with it, `leakspy report`
/// groups the suspects' parts as attach did, not by growth alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HoldsRecord {
    /// Always true: tells this line from a census.
    pub holds_record: bool,
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    pub holds: Vec<crate::heap::holders::Hold>,
}

/// A line of a history file that is not a census but is leakspy's own.
pub enum Extra {
    Why(Box<WhyRecord>),
    Holds(HoldsRecord),
}

/// Calls `each` with every census record of the file, in order. Summary lines written by
/// `attach`, `why` and holds records are passed over; anything else that is not a census is reported
/// in `Skipped`.
pub fn for_each_record(path: &Path, each: impl FnMut(Census)) -> Result<Skipped> {
    for_each_entry(path, each, |_| {})
}

/// As [`for_each_record`], with the `why` records (`attach --why-top`) given to `extra`.
pub fn for_each_entry(path: &Path, mut each: impl FnMut(Census), mut extra: impl FnMut(Extra)) -> Result<Skipped> {
    let file = std::fs::File::open(path).with_context(|| format!("opening history file {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut skipped = Skipped::default();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        let complete = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Census>(text) {
            Ok(census) => each(census),
            Err(_) if !complete => {
                skipped.lines.push(format!("line {number}: incomplete last line (a write was interrupted), skipped"))
            }
            Err(_) if text.contains("\"summary\":true") => {}
            Err(_) if text.contains("\"why\":true") => match serde_json::from_str::<WhyRecord>(text) {
                Ok(why) => extra(Extra::Why(Box::new(why))),
                Err(e) => skipped.lines.push(format!("line {number}: not a why record ({e}), skipped")),
            },
            Err(_) if text.contains("\"holds_record\":true") => match serde_json::from_str::<HoldsRecord>(text) {
                Ok(holds) => extra(Extra::Holds(holds)),
                Err(e) => skipped.lines.push(format!("line {number}: not a holds record ({e}), skipped")),
            },
            Err(e) => skipped.lines.push(format!("line {number}: not a census record ({e}), skipped")),
        }
    }
    Ok(skipped)
}

/// Which record of a file: `FILE` (a snapshot, or the last record of a history),
/// `FILE@N` (1-based; negative counts from the end: -1 is the last) or `FILE@TIME` (the last
/// record at or before an RFC 3339 time).
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Last,
    Index(i64),
    AtOrBefore(SystemTime),
}

pub fn parse_reference(text: &str) -> Result<(PathBuf, Selector)> {
    if let Some((path, sel)) = text.rsplit_once('@')
        && !Path::new(text).exists()
    {
        let selector = if let Ok(n) = sel.parse::<i64>() {
            if n == 0 {
                bail!("{text}: records are numbered from 1 (or from -1 at the end)");
            }
            Selector::Index(n)
        } else {
            Selector::AtOrBefore(parse_time(sel)?)
        };
        return Ok((PathBuf::from(path), selector));
    }
    Ok((PathBuf::from(text), Selector::Last))
}

/// RFC 3339 (`2026-11-26T10:00:00Z`, or without zone meaning UTC) or a duration ago (`2h`).
pub fn parse_time(text: &str) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(SystemTime::now() - ago);
    }
    bail!("{text:?} is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a duration ago (2h, 30m)")
}

pub fn census_time(census: &Census) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(census.timestamp.trim_end_matches('Z')).ok()
}

/// Loads the selected record. A file holding one pretty-printed census (`snapshot --json
/// -o FILE`) is read as a whole.
pub fn load(text: &str) -> Result<Census> {
    let (path, selector) = parse_reference(text)?;
    if selector == Selector::Last {
        let whole = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        if let Ok(census) = serde_json::from_str::<Census>(&whole) {
            return Ok(census);
        }
    }
    // The last `depth` matching records: the selected one is the oldest of them.
    let depth = match selector {
        Selector::Index(n) if n < 0 => n.unsigned_abs() as usize,
        _ => 1,
    };
    let mut ring = std::collections::VecDeque::with_capacity(depth);
    let mut count = 0i64;
    let skipped = for_each_record(&path, |census| {
        count += 1;
        let matches = match &selector {
            Selector::Last => true,
            Selector::Index(n) => *n < 0 || count == *n,
            Selector::AtOrBefore(t) => census_time(&census).is_some_and(|ct| ct <= *t),
        };
        if matches {
            if ring.len() == depth {
                ring.pop_front();
            }
            ring.push_back(census);
        }
    })?;
    skipped.warn(&path);
    let found = if ring.len() == depth { ring.pop_front() } else { None };
    found.with_context(|| format!("{text}: no such record ({count} census records in {})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(parse_reference("h.jsonl").unwrap(), (PathBuf::from("h.jsonl"), Selector::Last));
        assert_eq!(parse_reference("h.jsonl@-2").unwrap(), (PathBuf::from("h.jsonl"), Selector::Index(-2)));
        assert_eq!(parse_reference("h.jsonl@3").unwrap(), (PathBuf::from("h.jsonl"), Selector::Index(3)));
        assert!(matches!(parse_reference("h@2026-11-26T10:00:00Z").unwrap().1, Selector::AtOrBefore(_)));
        assert!(parse_reference("h@0").is_err());
        assert!(parse_reference("h@yesterday-ish").is_err());
    }
}
