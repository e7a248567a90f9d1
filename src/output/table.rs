//! The human-readable census table.

use crate::heap::census::{Census, TypeCount};
use crate::memory::proc_info::MemorySplit;
use crate::text::{human_bytes, terminal, thousands};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Count,
    Refs,
    /// sys.getsizeof summed (with --all).
    Size,
    /// Memory freed if all objects of the type went (with --all).
    Retained,
}

pub fn sort_types(types: &mut [TypeCount], key: SortKey) {
    let value = |t: &TypeCount| match key {
        SortKey::Count => t.count,
        SortKey::Refs => t.refcount_sum,
        SortKey::Size => t.size_bytes.unwrap_or(0),
        SortKey::Retained => t.retained_bytes.unwrap_or(0),
    };
    types.sort_by(|a, b| value(b).cmp(&value(a)).then_with(|| a.name.cmp(&b.name)));
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
    if let Some(g) = &census.graph {
        let _ = writeln!(
            out,
            "heap graph: {} objects ({} not tracked by the GC), {} in all (sys.getsizeof), {} references, {} frames, {} unreachable; {:.0} ms",
            thousands(g.objects),
            thousands(g.untracked),
            human_bytes(g.size_bytes),
            thousands(g.references),
            thousands(g.frames),
            thousands(g.unreachable),
            g.duration_ms
        );
    }
    if let Some(line) = census.memory.as_ref().and_then(memory_line) {
        let _ = writeln!(out, "{line}");
    }
    // Names come from the target: shown escaped and bounded, and measured as shown.
    let names: Vec<String> = types.iter().take(top).map(|t| terminal::name(&t.name)).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(4).clamp(4, 60);
    let graph_columns = census.graph.is_some();
    let _ = write!(out, "\n{:>12}  {:>14}", "COUNT", "REFCOUNT SUM");
    if graph_columns {
        let _ = write!(out, "  {:>12}  {:>10}  {:>10}  {:>9}", "UNTRACKED", "SIZE", "RETAINED", "EXTERNAL");
    }
    let _ = writeln!(out, "  {:<width$}", "TYPE");
    for (t, name) in types.iter().zip(&names) {
        let immortal = if t.immortal > 0 { format!("  ({} immortal)", thousands(t.immortal)) } else { String::new() };
        let _ = write!(out, "{:>12}  {:>14}", thousands(t.count), thousands(t.refcount_sum));
        if graph_columns {
            let _ = write!(
                out,
                "  {:>12}  {:>10}  {:>10}  {:>9}",
                thousands(t.untracked.unwrap_or(0)),
                human_bytes(t.size_bytes.unwrap_or(0)),
                human_bytes(t.retained_bytes.unwrap_or(0)),
                thousands(t.external_refs.unwrap_or(0))
            );
        }
        let _ = writeln!(out, "  {name}{immortal}");
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

/// The RSS split into the three parts a person asks about, on one line: `RSS 812.0 MiB =
/// 240.0 MiB live objects + 410.0 MiB pymalloc free (63 % of arenas empty blocks) + 162.0 MiB
/// other (malloc, C extensions)`. Without `--all`, the live part is pymalloc's blocks in use
/// (small objects and their parts), said so. Without pymalloc's state, why.
pub fn memory_line(split: &MemorySplit) -> Option<String> {
    if split.rss_bytes == 0 {
        return None;
    }
    let Some(parts) = split.parts() else {
        let why = split.pymalloc_missing.as_deref().unwrap_or("pymalloc state not read");
        return Some(format!("RSS {}: {why}", human_bytes(split.rss_bytes)));
    };
    let live = if parts.objects_exact { "live objects" } else { "live small objects (pymalloc blocks in use)" };
    Some(format!(
        "RSS {} = {} {live} + {} pymalloc free ({:.0} % of arenas empty blocks) + {} other (malloc, C extensions)",
        human_bytes(parts.rss),
        human_bytes(parts.objects),
        human_bytes(parts.pymalloc_free),
        parts.empty_fraction * 100.0,
        human_bytes(parts.other)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::census::tests::census_with;
    use crate::text::terminal::{CUT_MARKER, NAME_MAX_CHARS, is_unsafe};

    #[test]
    fn hostile_type_names_stay_in_their_row() {
        let long = format!("m.{}", "L".repeat(5000));
        let c = census_with(&[
            ("__main__.Order", 30, 30),
            ("m.Fake\n     9,999           9,999  __main__.Forged", 20, 20),
            ("m.\x1b]0;pwned\x07\x1b[2J", 10, 10),
            ("m.evil\u{202e}cod.exe", 5, 5),
            (&long, 1, 1),
        ]);
        let text = render(&c, 25, SortKey::Count);
        assert!(!text.chars().any(|c| c != '\n' && is_unsafe(c)), "{text}");
        let rows: Vec<&str> = text.lines().skip_while(|l| !l.contains("TYPE")).skip(1).collect();
        assert_eq!(rows.len(), 5, "{text}");
        for row in &rows {
            let mut columns = row.split_whitespace();
            for _ in 0..2 {
                let number = columns.next().unwrap_or_default();
                assert!(number.chars().all(|c| c.is_ascii_digit() || c == ','), "{row}");
            }
        }
        assert!(rows[1].ends_with(r"m.Fake\n     9,999           9,999  __main__.Forged"), "{}", rows[1]);
        assert!(rows[2].ends_with(r"m.\x1b]0;pwned\x07\x1b[2J"), "{}", rows[2]);
        assert!(rows[3].ends_with(r"m.evil\u202ecod.exe"), "{}", rows[3]);
        let shown = rows[4].split_whitespace().last().unwrap_or_default();
        assert_eq!(shown.chars().count(), NAME_MAX_CHARS);
        assert!(shown.ends_with(CUT_MARKER));
    }

    #[test]
    fn the_memory_line_adds_up_to_the_rss() {
        use crate::cpython::pymalloc::PymallocStats;
        let mib = 1 << 20;
        let mut split = MemorySplit { rss_bytes: 812 * mib, file_bytes: 20 * mib, ..MemorySplit::default() };
        let stats = PymallocStats {
            arena_bytes: 650 * mib,
            used_bytes: 240 * mib,
            empty_bytes: 410 * mib,
            ..PymallocStats::default()
        };
        split.add_python_parts(Ok(stats), Some(crate::memory::proc_info::ObjectBytes::Summed(240 * mib)));
        assert_eq!(
            memory_line(&split).as_deref(),
            Some(
                "RSS 812.0 MiB = 240.0 MiB live objects + 410.0 MiB pymalloc free (63 % of arenas empty blocks) \
                 + 162.0 MiB other (malloc, C extensions)"
            )
        );
        assert_eq!(split.native_bytes.as_ref().map(|n| n.bytes), Some(142 * mib));
        let mut stripped = MemorySplit { rss_bytes: 8 * mib, ..MemorySplit::default() };
        stripped.add_python_parts(Err("pymalloc state not found (stripped binary)".into()), None);
        assert_eq!(memory_line(&stripped).as_deref(), Some("RSS 8.0 MiB: pymalloc state not found (stripped binary)"));
    }
}
