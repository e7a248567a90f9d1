//! The human-readable census table.

use crate::heap::census::{Census, TypeCount};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Count,
    Refs,
}

pub fn sort_types(types: &mut [TypeCount], key: SortKey) {
    match key {
        SortKey::Count => types.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name))),
        SortKey::Refs => types.sort_by(|a, b| b.refcount_sum.cmp(&a.refcount_sum).then_with(|| a.name.cmp(&b.name))),
    }
}

/// Groups digits so that 1234567 reads as 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A change with its sign: +1,204, -3, 0.
pub fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{}", thousands(n as u64))
    } else if n < 0 {
        format!("-{}", thousands(n.unsigned_abs()))
    } else {
        "0".into()
    }
}

pub fn render(census: &Census, top: usize, sort: SortKey) -> String {
    let mut types = census.types.clone();
    sort_types(&mut types, sort);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "PID {}  Python {}  {} GC-tracked objects in {} types, read in {:.1} ms",
        census.pid,
        census.python_version,
        thousands(census.objects_total),
        thousands(census.types.len() as u64),
        census.duration_ms
    );
    let gens: Vec<String> = census
        .generations
        .iter()
        .map(|g| {
            let interp = if census.interpreters > 1 { format!("i{}:", g.interpreter) } else { String::new() };
            format!("{interp}gen {} {}", g.generation, thousands(g.objects))
        })
        .collect();
    let _ = writeln!(out, "{}", gens.join("  "));
    let width = types.iter().take(top).map(|t| t.name.len()).max().unwrap_or(4).clamp(4, 60);
    let _ = writeln!(out, "\n{:>12}  {:>14}  {:<width$}", "COUNT", "REFCOUNT SUM", "TYPE");
    for t in types.iter().take(top) {
        let immortal = if t.immortal > 0 { format!("  ({} immortal)", thousands(t.immortal)) } else { String::new() };
        let _ = writeln!(out, "{:>12}  {:>14}  {}{}", thousands(t.count), thousands(t.refcount_sum), t.name, immortal);
    }
    if types.len() > top {
        let rest: u64 = types.iter().skip(top).map(|t| t.count).sum();
        let _ = writeln!(out, "{:>12}  {:>14}  ({} more types)", thousands(rest), "", types.len() - top);
    }
    if !census.findings.is_empty() {
        let _ = writeln!(out, "\nFindings:");
        for f in &census.findings {
            let _ = writeln!(out, "  * {}", f.message);
        }
    }
    let mut notes = Vec::new();
    if census.immortal_total > 0 {
        notes.push(format!("{} immortal objects counted, not in refcount sums", thousands(census.immortal_total)));
    }
    if census.torn_links > 0 || census.unreadable_objects > 0 {
        notes.push(format!(
            "the target changed during the read: {} torn links, {} unreadable objects, {} recovered by walking backwards (counts may be off by about that much)",
            census.torn_links, census.unreadable_objects, census.resynced_objects
        ));
    }
    if census.gc_collecting {
        notes.push("a garbage collection was running during the read".into());
    }
    if census.truncated {
        notes.push("the walk stopped at --max-objects: counts are a lower bound".into());
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
