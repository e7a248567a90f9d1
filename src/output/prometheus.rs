//! The node_exporter textfile-collector format: gauges per type for the top types plus an
//! `(other)` bucket, so that label cardinality stays bounded however many types a heap has.

use crate::heap::census::{Census, TypeCount};
use std::fmt::Write;

/// Label values may hold anything a type name or command line holds. The exposition format
/// escapes exactly three characters in them (backslash, double quote, line feed) and takes
/// every other character as it is: a carriage return or an ESC is part of the value, and only
/// a raw line feed could end the sample's line. So the names stay exact here, and are not
/// escaped for a terminal: this output is for a collector, not a person.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A short, stable name for the `process` label: the program and the script or module it
/// runs ("python3 app.py", "python3 -m gunicorn"), not the whole command line, whose
/// arguments would make every restart a new series.
fn process_name(cmdline: &str) -> String {
    let base = |word: &str| word.rsplit('/').next().unwrap_or(word).to_string();
    let mut words = cmdline.split_whitespace();
    let Some(program) = words.next() else { return String::new() };
    let mut name = base(program);
    while let Some(word) = words.next() {
        match word {
            "-m" => return format!("{name} -m {}", words.next().unwrap_or("")),
            "-c" => return format!("{name} -c"),
            // Interpreter options that take a value.
            "-X" | "-W" | "-Q" => {
                words.next();
                continue;
            }
            _ => {}
        }
        if !word.starts_with('-') {
            name = format!("{name} {}", base(word));
            break;
        }
    }
    name
}

pub fn render(census: &Census, top: usize) -> String {
    render_many(std::slice::from_ref(census), top)
}

/// One process's part of the output: its labels, its shown types and the rest.
struct Part<'a> {
    census: &'a Census,
    common: String,
    shown: Vec<&'a TypeCount>,
    rest: Vec<&'a TypeCount>,
}

/// Several processes (a server's workers) in one file, each metric family once with a series
/// per process. The same `top` types are shown for every process (those with the most objects
/// over all of them), so that the label set stays at `top` + 1 types per process however the
/// workers' heaps differ.
pub fn render_many(censuses: &[Census], top: usize) -> String {
    let mut totals: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for t in censuses.iter().flat_map(|c| &c.types) {
        *totals.entry(t.name.as_str()).or_default() += t.count;
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let shown_names: std::collections::HashSet<&str> = ranked.iter().take(top).map(|(name, _)| *name).collect();
    let parts: Vec<Part> = censuses
        .iter()
        .map(|census| {
            let process = census.process.as_ref().map_or(String::new(), |p| process_name(&p.cmdline));
            let common = format!(
                "pid=\"{}\",process=\"{}\",python_version=\"{}\"",
                census.pid,
                escape(&process),
                escape(&census.python_version)
            );
            let mut types: Vec<&TypeCount> = census.types.iter().collect();
            types.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
            let (shown, rest) = types.into_iter().partition(|t| shown_names.contains(t.name.as_str()));
            Part { census, common, shown, rest }
        })
        .collect();

    let mut out = String::new();
    // `other`: whether a sum over the remaining types means anything (retained sizes overlap).
    let mut per_type = |name: &str, help: &str, value: &dyn Fn(&TypeCount) -> Option<u64>, other: bool| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for part in &parts {
            for t in &part.shown {
                if let Some(v) = value(t) {
                    let _ = writeln!(out, "{name}{{{},type=\"{}\"}} {v}", part.common, escape(&t.name));
                }
            }
            if other && !part.rest.is_empty() {
                let sum: u64 = part.rest.iter().copied().filter_map(value).sum();
                let _ = writeln!(out, "{name}{{{},type=\"(other)\"}} {sum}", part.common);
            }
        }
    };
    let graph = censuses.iter().any(|c| c.graph.is_some());
    let objects_help = if graph {
        "Live objects per type, tracked by the GC or not (top types; the rest in type=\"(other)\")."
    } else {
        "Live GC-tracked objects per type (top types; the rest in type=\"(other)\")."
    };
    per_type("leakspy_objects", objects_help, &|t| Some(t.count), true);
    per_type("leakspy_refcount_sum", "Sum of the refcounts of the objects of a type.", &|t| Some(t.refcount_sum), true);
    // Only in a census taken with --all (from the heap graph).
    if graph {
        per_type("leakspy_object_bytes", "sys.getsizeof summed over the objects of a type.", &|t| t.size_bytes, true);
        per_type(
            "leakspy_retained_bytes",
            "Memory freed if every object of the type went (top types only: these overlap).",
            &|t| t.retained_bytes,
            false,
        );
    }
    type Total = fn(&Census) -> f64;
    let totals: [(&str, &str, Total); 5] = [
        ("leakspy_objects_total", "All live GC-tracked objects.", |c| c.objects_total as f64),
        ("leakspy_types_total", "Distinct types among them.", |c| c.types.len() as f64),
        ("leakspy_census_duration_seconds", "Time the census took.", |c| c.duration_ms / 1000.0),
        ("leakspy_torn_links", "List links that changed during the read.", |c| c.torn_links as f64),
        ("leakspy_process_resident_bytes", "Resident set size of the target.", |c| {
            c.process.as_ref().map_or(0, |p| p.rss_bytes) as f64
        }),
    ];
    for (name, help, value) in totals {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for part in &parts {
            let _ = writeln!(out, "{name}{{{}}} {}", part.common, value(part.census));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::census::tests::census_with;

    #[test]
    fn process_names_are_short_and_stable() {
        assert_eq!(process_name("/usr/bin/python3 -u /srv/app/main.py --port 80"), "python3 main.py");
        assert_eq!(process_name("python3 -X dev -m gunicorn app:wsgi"), "python3 -m gunicorn");
        assert_eq!(process_name("/usr/bin/uwsgi"), "uwsgi");
        assert_eq!(process_name(""), "");
    }

    #[test]
    fn top_types_an_other_bucket_and_escaping() {
        let c = census_with(&[("a\"b\\c", 10, 11), ("dict", 5, 6), ("x", 1, 1), ("y", 2, 2)]);
        let text = render(&c, 2);
        assert!(
            text.contains("leakspy_objects{pid=\"1\",process=\"\",python_version=\"3.11.7\",type=\"a\\\"b\\\\c\"} 10")
        );
        assert!(text.contains("type=\"(other)\"} 3\n"));
        assert!(!text.contains("type=\"x\""));
        assert!(text.contains("leakspy_objects_total{pid=\"1\",process=\"\",python_version=\"3.11.7\"} 18"));
        assert!(!text.contains("leakspy_object_bytes"), "sizes only come with --all");
    }

    #[test]
    fn several_processes_share_the_type_set_and_each_family_is_written_once() {
        let mut a = census_with(&[("Order", 100, 100), ("dict", 50, 50), ("x", 1, 1)]);
        let mut b = census_with(&[("Order", 90, 90), ("tuple", 60, 60), ("dict", 5, 5)]);
        a.pid = 11;
        b.pid = 12;
        let text = render_many(&[a, b], 2);
        assert_eq!(text.matches("# TYPE leakspy_objects gauge").count(), 1, "{text}");
        assert_eq!(text.matches("# TYPE leakspy_objects_total gauge").count(), 1, "{text}");
        // Order (190) and tuple (60) over both; dict (55) goes to (other) in each.
        assert!(text.contains("leakspy_objects{pid=\"11\",process=\"\",python_version=\"3.11.7\",type=\"Order\"} 100"));
        assert!(text.contains("leakspy_objects{pid=\"12\",process=\"\",python_version=\"3.11.7\",type=\"tuple\"} 60"));
        assert!(
            text.contains("leakspy_objects{pid=\"11\",process=\"\",python_version=\"3.11.7\",type=\"(other)\"} 51")
        );
        assert!(text.contains("leakspy_objects{pid=\"12\",process=\"\",python_version=\"3.11.7\",type=\"(other)\"} 5"));
        assert!(!text.contains("type=\"dict\""), "{text}");
        assert!(text.contains("leakspy_objects_total{pid=\"12\""));
    }

    #[test]
    fn a_graph_census_adds_sizes_and_retained_sizes_without_summing_overlaps() {
        let mut c = census_with(&[("list", 10, 10), ("dict", 5, 5), ("str", 1, 1)]);
        for (t, size) in c.types.iter_mut().zip([800, 400, 50]) {
            t.size_bytes = Some(size);
            t.retained_bytes = Some(size * 2);
        }
        c.graph = Some(crate::heap::census::GraphTotals {
            objects: 16,
            untracked: 1,
            references: 20,
            frames: 1,
            size_bytes: 1250,
            unreachable: 0,
            truncated: false,
            skipped_threads: 0,
            duration_ms: 1.0,
        });
        let text = render(&c, 2);
        assert!(
            text.contains("leakspy_object_bytes{pid=\"1\",process=\"\",python_version=\"3.11.7\",type=\"list\"} 800")
        );
        assert!(
            text.contains("leakspy_object_bytes{pid=\"1\",process=\"\",python_version=\"3.11.7\",type=\"(other)\"} 50")
        );
        assert!(
            text.contains("leakspy_retained_bytes{pid=\"1\",process=\"\",python_version=\"3.11.7\",type=\"dict\"} 800")
        );
        assert!(
            !text.contains("leakspy_retained_bytes{pid=\"1\",process=\"\",python_version=\"3.11.7\",type=\"(other)\"")
        );
    }

    /// A label value read back as the exposition format's parsers read it.
    fn unescape(value: &str) -> String {
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => panic!("dangling backslash in {value:?}"),
            }
        }
        out
    }

    #[test]
    fn hostile_names_stay_on_their_line_and_exact() {
        let names = [
            "m.Fake\"} 1\nleakspy_objects{type=\"forged\"} 999",
            "m.\x1b]0;pwned\x07\r\x1b[2J",
            "m.back\\slash\\n\u{202e}",
        ];
        let c = census_with(&[(names[0], 3, 3), (names[1], 2, 2), (names[2], 1, 1)]);
        let text = render(&c, 10);
        let mut found = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line:?}");
            assert!(series.starts_with("leakspy_") && series.ends_with('}'), "{line:?}");
            if let Some(start) = series.find(",type=\"") {
                found.push(unescape(&series[start + 7..series.len() - 2]));
            }
        }
        for name in names {
            assert!(found.iter().any(|f| f == name), "{name:?} not read back from:\n{text}");
        }
        assert!(!text.contains("type=\"forged\"} 999\n"));
    }
}
