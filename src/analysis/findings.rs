//! Findings: one sentence each that a person can act on, naming its evidence, for the leak
//! causes that leave a mark in a single census. Pure functions of the census.

use crate::heap::census::Census;
use crate::text::{human_bytes, terminal, thousands};
use serde::{Deserialize, Serialize};

/// Python file or socket objects open at once before it is worth a line: a service has a
/// few dozen at most; hundreds mean they are opened and kept.
const MANY_OPEN: u64 = 100;
/// Instances of one closure before it is worth a line.
const MANY_CLOSURES: u64 = 1_000;
/// Objects waiting in generation 0, as a multiple of its threshold, before a disabled GC is
/// called out as piling up (a disabled GC with a quiet heap is still worth a line).
const PILING_FACTOR: i64 = 10;
/// pymalloc's arenas are called fragmented when at least this share of their bytes holds no
/// live block, and that is at least FRAGMENTED_BYTES: a fresh interpreter's few arenas are a
/// third empty, which is nothing to act on.
const FRAGMENTED_FRACTION: f64 = 0.5;
const FRAGMENTED_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// "gc_disabled", "gc_garbage", "trace_hook", "profile_hook", "open_files",
    /// "open_sockets", "fragmentation", "closures"; over a series "native_memory" and
    /// "pymalloc_growth".
    pub kind: String,
    /// One sentence for a person. Names from the target in it are escaped for a terminal
    /// (`text::terminal::name`); their exact text is in the census's own fields (`functions`,
    /// `threads`, `gc`).
    pub message: String,
}

fn finding(kind: &str, message: String) -> Finding {
    Finding { kind: kind.into(), message }
}

pub fn findings(census: &Census) -> Vec<Finding> {
    let mut out = Vec::new();
    for gc in &census.gc {
        let interp =
            if census.interpreters > 1 { format!(" in interpreter {}", gc.interpreter) } else { String::new() };
        if !gc.enabled {
            let young = gc.generations.first();
            let piling = young
                .map(|g| (g.count, g.threshold))
                .filter(|(count, threshold)| *count > PILING_FACTOR * threshold.max(&1));
            let evidence = match piling {
                Some((count, threshold)) => format!(
                    "{} allocations are waiting for a collection that will not come (threshold {threshold})",
                    thousands(count as u64)
                ),
                None => "nothing frees reference cycles while it is off".into(),
            };
            out.push(finding(
                "gc_disabled",
                format!("The garbage collector is disabled{interp} (gc.disable()): {evidence}; re-enable it or break the cycles."),
            ));
        }
        if gc.garbage > 0 {
            let types: Vec<String> = gc
                .garbage_types
                .iter()
                .take(3)
                .map(|(t, n)| format!("{} {}", thousands(*n), terminal::name(t)))
                .collect();
            out.push(finding(
                "gc_garbage",
                format!(
                    "gc.garbage holds {} objects{interp} ({}): the collector found them but keeps them (gc.DEBUG_SAVEALL, or uncollectable cycles); clear gc.garbage and fix the cycles.",
                    thousands(gc.garbage),
                    types.join(", ")
                ),
            ));
        }
    }
    for t in &census.threads {
        let thread = match (&t.name, t.native_thread_id) {
            (Some(name), Some(tid)) => format!("thread {tid} ({})", terminal::name(name)),
            (_, Some(tid)) => format!("thread {tid}"),
            _ => format!("thread {:#x}", t.thread_id),
        };
        for (kind, call, hook) in
            [("trace_hook", "sys.settrace", &t.trace), ("profile_hook", "sys.setprofile", &t.profile)]
        {
            if let Some(hook) = hook {
                out.push(finding(
                    kind,
                    format!(
                        "{call} is active on {thread} ({}): every call runs the hook, which slows the program and can keep frames and their locals alive; turn it off outside debugging.",
                        terminal::name(&hook.name)
                    ),
                ));
            }
        }
    }
    if let Some(r) = &census.resources {
        let fds = r.descriptors.as_ref();
        if r.file_objects.open >= MANY_OPEN {
            let regular = fds.map_or(String::new(), |d| {
                format!(
                    "; the process has {} open descriptors, {} to regular files",
                    thousands(d.total),
                    thousands(d.regular_files)
                )
            });
            out.push(finding(
                "open_files",
                format!(
                    "{} Python file objects are open and still referenced{regular}: files opened without close() or `with`; use `with open(...)`.",
                    thousands(r.file_objects.open)
                ),
            ));
        }
        if r.socket_objects.open >= MANY_OPEN {
            let sockets =
                fds.map_or(String::new(), |d| format!("; the process has {} socket descriptors", thousands(d.sockets)));
            out.push(finding(
                "open_sockets",
                format!(
                    "{} socket objects are open and still referenced{sockets}: connections that are never closed; close them or use a pool.",
                    thousands(r.socket_objects.open)
                ),
            ));
        }
    }
    if let Some(p) = census.memory.as_ref().and_then(|m| m.pymalloc.as_ref())
        && p.empty_bytes >= FRAGMENTED_BYTES
        && p.empty_fraction() >= FRAGMENTED_FRACTION
    {
        let pools: u64 = p.size_classes.iter().map(|c| c.pools).sum();
        out.push(finding(
            "fragmentation",
            format!(
                "pymalloc's {} arenas hold {} of which {} ({:.0} %) are empty blocks, while {} pools still hold {} of live blocks: freed objects' memory is held by pymalloc arenas that still hold a few live objects; it will be reused, not returned.",
                thousands(p.arenas),
                human_bytes(p.arena_bytes),
                human_bytes(p.empty_bytes),
                p.empty_fraction() * 100.0,
                thousands(pools),
                human_bytes(p.used_bytes)
            ),
        ));
    }
    for f in &census.functions {
        if f.closures >= MANY_CLOSURES {
            out.push(finding(
                "closures",
                format!(
                    "{} closures of {} ({}:{}) are alive: whatever holds them (a registry, a list of callbacks) keeps everything they capture alive too.",
                    thousands(f.closures),
                    terminal::name(&f.qualname),
                    terminal::name(&f.file),
                    f.line
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpython::state::{GcInfo, GenerationState, Hook, ThreadInfo};
    use crate::heap::census::tests::census_with;
    use crate::heap::details::FunctionGroup;

    fn gc(enabled: bool, count: i64, garbage: u64) -> GcInfo {
        GcInfo {
            interpreter: 0,
            enabled,
            collecting: false,
            generations: vec![GenerationState {
                generation: "0".into(),
                threshold: 700,
                count,
                collections: None,
                collected: None,
                uncollectable: None,
            }],
            garbage,
            garbage_types: vec![("app.Node".into(), garbage)],
        }
    }

    #[test]
    fn a_clean_census_has_no_findings() {
        let mut c = census_with(&[("dict", 10, 10)]);
        c.gc = vec![gc(true, 5, 0)];
        assert!(findings(&c).is_empty());
    }

    #[test]
    fn each_cause_is_named_with_its_evidence() {
        let mut c = census_with(&[("dict", 10, 10)]);
        c.gc = vec![gc(false, 50_000, 12)];
        c.threads = vec![ThreadInfo {
            interpreter: 0,
            thread_id: 1,
            native_thread_id: Some(42),
            name: Some("worker".into()),
            trace: Some(Hook { kind: "python".into(), name: "function tracer".into() }),
            profile: None,
        }];
        c.functions = vec![FunctionGroup {
            qualname: "make_handler.<locals>.on_event".into(),
            file: "app/events.py".into(),
            line: 31,
            functions: 40_000,
            closures: 40_000,
            bound_methods: 0,
            ..FunctionGroup::default()
        }];
        let kinds: Vec<String> = findings(&c).iter().map(|f| f.kind.clone()).collect();
        assert_eq!(kinds, ["gc_disabled", "gc_garbage", "trace_hook", "closures"]);
        let text: Vec<String> = findings(&c).into_iter().map(|f| f.message).collect();
        assert!(text[0].contains("50,000 allocations"), "{}", text[0]);
        assert!(text[1].contains("12 app.Node"), "{}", text[1]);
        assert!(text[2].contains("thread 42 (worker)") && text[2].contains("function tracer"), "{}", text[2]);
        assert!(
            text[3].contains("40,000 closures of make_handler.<locals>.on_event (app/events.py:31)"),
            "{}",
            text[3]
        );
    }

    #[test]
    fn fragmentation_is_named_when_the_arenas_are_mostly_empty() {
        use crate::cpython::pymalloc::{PymallocStats, SizeClass};
        use crate::memory::proc_info::MemorySplit;
        let with_arenas = |arena_bytes: u64, used_bytes: u64| {
            let mut c = census_with(&[("float", 10_000, 10_000)]);
            let pymalloc = PymallocStats {
                arenas: arena_bytes >> 20,
                arena_bytes,
                used_bytes,
                empty_bytes: arena_bytes - used_bytes,
                size_classes: vec![SizeClass { size: 32, pools: 2000, used_blocks: 10_000, free_blocks: 1_000_000 }],
                ..PymallocStats::default()
            };
            c.memory = Some(MemorySplit {
                rss_bytes: arena_bytes + (8 << 20),
                pymalloc: Some(pymalloc),
                ..Default::default()
            });
            findings(&c)
        };
        let fragmented = with_arenas(32 << 20, 320_000);
        assert_eq!(fragmented.len(), 1);
        assert_eq!(fragmented[0].kind, "fragmentation");
        assert!(
            fragmented[0].message.contains("32 arenas hold 32.0 MiB of which 31.7 MiB (99 %)"),
            "{}",
            fragmented[0].message
        );
        assert!(with_arenas(32 << 20, 30 << 20).is_empty(), "dense arenas");
        assert!(with_arenas(4 << 20, 1 << 20).is_empty(), "a few MiB empty is nothing to act on");
    }

    #[test]
    fn names_from_the_target_are_escaped_in_the_sentences() {
        let mut c = census_with(&[("dict", 10, 10)]);
        let mut g = gc(true, 5, 3);
        // The same name twice: once with a real ESC and BEL, once with backslashes spelling them.
        g.garbage_types = vec![("m.\x1b]0;t\x07".into(), 2), (r"m.\x1b]0;t\x07".into(), 1)];
        c.gc = vec![g];
        c.threads = vec![ThreadInfo {
            interpreter: 0,
            thread_id: 1,
            native_thread_id: Some(42),
            name: Some("w\r\n* forged".into()),
            trace: None,
            profile: Some(Hook { kind: "python".into(), name: "function \u{202e}rekaep".into() }),
        }];
        c.functions = vec![FunctionGroup {
            qualname: "f\x1b[2J".into(),
            file: "/tmp/\x1b]52;c;aGk=\x07.py".into(),
            line: 1,
            functions: 2_000,
            closures: 2_000,
            bound_methods: 0,
            ..FunctionGroup::default()
        }];
        let text: Vec<String> = findings(&c).into_iter().map(|f| f.message).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        for sentence in &text {
            assert!(!sentence.chars().any(crate::text::terminal::is_unsafe), "{sentence:?}");
        }
        assert!(text[0].contains(r"2 m.\x1b]0;t\x07"), "{}", text[0]);
        assert!(text[0].contains(r"1 m.\\x1b]0;t\\x07"), "a backslash in the name is doubled: {}", text[0]);
        assert!(
            text[1].contains(r"thread 42 (w\r\n* forged)") && text[1].contains(r"function \u202erekaep"),
            "{}",
            text[1]
        );
        assert!(text[2].contains(r"closures of f\x1b[2J (/tmp/\x1b]52;c;aGk=\x07.py:1)"), "{}", text[2]);
    }
}
