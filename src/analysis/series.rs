//! A census series held compactly: per type, its count and refcount sum at each sample, with
//! older samples thinned so that memory stays bounded however long leakspy runs.

use super::culprits::{CodeSuspect, Link, Member, Part, graph_links, group, nature};
use super::findings::Finding;
use super::trend::{MIN_SAMPLES, Trend, analyse};
use crate::heap::census::Census;
use crate::heap::details::FunctionGroup;
use crate::heap::holders::Hold;
use crate::text::thousands;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// Past this many samples every other one is dropped: the trend statistics thin to fewer
/// points anyway, and a day at one sample per second must not grow without bound.
const MAX_KEPT_SAMPLES: usize = 1200;
/// Code objects followed at once; past this, those missing from the newest census are
/// dropped (a census lists the 50 most numerous, so a long run meets many more).
const MAX_CODE_SERIES: usize = 400;
/// Code objects named per growing `function` or `method` suspect.
const CODE_SUSPECTS_NAMED: usize = 3;

#[derive(Debug, Default, Clone)]
struct TypeSeries {
    counts: Vec<u64>,
    refcount_sums: Vec<u64>,
}

/// Per code object (qualname, file, line): its functions, closures and bound methods at each
/// sample, so that a growing `function` or `method` type is named by the code that grows.
#[derive(Debug, Default, Clone)]
struct CodeSeries {
    functions: Vec<u64>,
    closures: Vec<u64>,
    bound_methods: Vec<u64>,
    /// As the newest census that listed it saw it (captures, `__self__` types).
    latest: FunctionGroup,
}

type CodeKey = (String, String, u64);

#[derive(Debug, Default, Clone)]
pub struct Series {
    /// Seconds since the first sample, per kept sample.
    times: Vec<f64>,
    /// The target's RSS and its GC-tracked object total, per kept sample: native growth shows
    /// as the first climbing while the second does not.
    rss: Vec<u64>,
    objects: Vec<u64>,
    /// pymalloc's arena bytes per kept sample (0 where its state was not read): a Python-level
    /// leak grows them with the objects; native growth leaves them flat.
    arenas: Vec<u64>,
    /// The native part's estimate per kept sample (RSS outside pymalloc and mapped files).
    native: Vec<u64>,
    types: FxHashMap<String, TypeSeries>,
    code: FxHashMap<CodeKey, CodeSeries>,
    /// Samples added, including those thinned out and those left out for overlapping a
    /// collection.
    pub samples_taken: usize,
    /// Samples left out of the series because the target's collector ran during their read
    /// and their object total fell below the recent samples': objects it had moved to a list
    /// of its own were not counted, so their counts are low (by up to 90 % in a full
    /// collection), not a change.
    pub overlapping_collection: usize,
    /// Samples read during a collection that still counted the objects the recent samples
    /// did: kept. A target whose collector runs nearly all the time (a heap so large that
    /// one full collection follows another) would otherwise leave no sample to judge.
    pub overlapping_kept: usize,
    /// Object totals of the last few samples, kept or not: what a sample read during a
    /// collection is checked against.
    recent_totals: std::collections::VecDeque<u64>,
}

/// Samples whose totals a sample read during a collection is compared with.
const RECENT_TOTALS: usize = 5;
/// A sample read during a collection is kept if its object total is at least this share of
/// the largest recent total: a collection that hid objects hides thousands (every object it
/// had found unreferenced so far), while the heap itself rarely shrinks by 1 % between samples.
const KEPT_TOTAL_SHARE: f64 = 0.99;

/// A type named as a probable leak.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suspect {
    #[serde(rename = "type")]
    pub name: String,
    /// What grows: "count" (more objects) or "refcount" (more references to the same objects).
    pub metric: &'static str,
    pub growth_per_minute: f64,
    /// Net change of the metric from the first to the last sample.
    pub added: i64,
    pub now: u64,
    /// 0..1: how sure the trend test is (see analysis::trend).
    pub confidence: f64,
    /// Samples the call rests on.
    pub samples: usize,
    /// Types that grow with this one as its parts (its instances hold them: a `__dict__`, a
    /// closure's cells) or holders (they hold its instances: a bound method, a key tuple).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// For `function` and `method`: the code whose closures, functions or bound methods grow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<CodeSuspect>,
}

/// The memory split's change per minute over a series (bytes; the native part an estimate).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MemoryGrowth {
    pub rss_per_minute: f64,
    /// `None` where pymalloc's state was not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pymalloc_arenas_per_minute: Option<f64>,
    pub native_per_minute: f64,
    pub minutes: f64,
}

/// Per type, what the live view and the summary show.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeChange {
    pub name: String,
    pub count: u64,
    pub refcount_sum: u64,
    pub since_first: i64,
    pub since_previous: i64,
}

impl Series {
    /// Adds a census taken `at_secs` after the first.
    pub fn push(&mut self, at_secs: f64, census: &Census) {
        let recent_max = self.recent_totals.iter().max().copied();
        if self.recent_totals.len() == RECENT_TOTALS {
            self.recent_totals.pop_front();
        }
        self.recent_totals.push_back(census.objects_total);
        if census.gc_collecting {
            let counted_all =
                recent_max.is_some_and(|max| census.objects_total as f64 >= KEPT_TOTAL_SHARE * max as f64);
            if !counted_all {
                self.samples_taken += 1;
                self.overlapping_collection += 1;
                return;
            }
            self.overlapping_kept += 1;
        }
        let index = self.times.len();
        self.times.push(at_secs);
        self.rss.push(census.memory.as_ref().map_or(0, |m| m.rss_bytes));
        self.objects.push(census.objects_total);
        self.arenas.push(census.memory.as_ref().and_then(|m| m.pymalloc.as_ref()).map_or(0, |p| p.arena_bytes));
        self.native.push(census.memory.as_ref().and_then(|m| m.native_bytes.as_ref()).map_or(0, |p| p.bytes));
        self.samples_taken += 1;
        for t in &census.types {
            let series = self.types.entry(t.name.clone()).or_default();
            // A type first seen now had no objects before.
            series.counts.resize(index, 0);
            series.refcount_sums.resize(index, 0);
            series.counts.push(t.count);
            series.refcount_sums.push(t.refcount_sum);
        }
        for series in self.types.values_mut() {
            series.counts.resize(index + 1, 0);
            series.refcount_sums.resize(index + 1, 0);
        }
        for f in &census.functions {
            let key = (f.qualname.clone(), f.file.clone(), f.line);
            let series = self.code.entry(key).or_default();
            for v in [&mut series.functions, &mut series.closures, &mut series.bound_methods] {
                v.resize(index, 0);
            }
            series.functions.push(f.functions);
            series.closures.push(f.closures);
            series.bound_methods.push(f.bound_methods);
            series.latest.clone_from(f);
        }
        // A code object missing from a census was not among its most numerous: counted as 0.
        for series in self.code.values_mut() {
            for v in [&mut series.functions, &mut series.closures, &mut series.bound_methods] {
                v.resize(index + 1, 0);
            }
        }
        if self.code.len() > MAX_CODE_SERIES {
            self.code.retain(|_, s| s.functions[index] + s.bound_methods[index] > 0);
        }
        if self.times.len() > MAX_KEPT_SAMPLES {
            self.thin();
        }
    }

    /// Keeps every other sample, and always the newest.
    fn thin(&mut self) {
        fn keep_even<T: Copy>(v: &mut Vec<T>) {
            let newest_is_odd = v.len().is_multiple_of(2);
            let newest = v.last().copied();
            *v = v.iter().step_by(2).copied().collect();
            if let (true, Some(newest)) = (newest_is_odd, newest) {
                v.push(newest);
            }
        }
        keep_even(&mut self.times);
        keep_even(&mut self.rss);
        keep_even(&mut self.objects);
        keep_even(&mut self.arenas);
        keep_even(&mut self.native);
        for s in self.types.values_mut() {
            keep_even(&mut s.counts);
            keep_even(&mut s.refcount_sums);
        }
        for s in self.code.values_mut() {
            keep_even(&mut s.functions);
            keep_even(&mut s.closures);
            keep_even(&mut s.bound_methods);
        }
    }

    /// Seconds since the first sample, per kept sample (what a chart's x axis shows).
    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// The target's RSS per kept sample (0 where a record did not carry it).
    pub fn rss(&self) -> &[u64] {
        &self.rss
    }

    /// The GC-tracked objects per kept sample.
    pub fn objects(&self) -> &[u64] {
        &self.objects
    }

    /// A type's count per kept sample.
    pub fn counts_of(&self, name: &str) -> Option<&[u64]> {
        self.types.get(name).map(|s| s.counts.as_slice())
    }

    /// The trend statistics of a type's count (`analysis::trend`), fitted line included;
    /// `None` with too few samples.
    pub fn trend_of(&self, name: &str) -> Option<Trend> {
        let counts = self.counts_of(name)?;
        let points: Vec<(f64, f64)> = self.times.iter().zip(counts).map(|(t, v)| (*t, *v as f64)).collect();
        analyse(&points)
    }

    pub fn kept_samples(&self) -> usize {
        self.times.len()
    }

    /// Count and changes per type at the latest sample.
    pub fn changes(&self) -> Vec<TypeChange> {
        let n = self.times.len();
        if n == 0 {
            return Vec::new();
        }
        self.types
            .iter()
            .map(|(name, s)| TypeChange {
                name: name.clone(),
                count: s.counts[n - 1],
                refcount_sum: s.refcount_sums[n - 1],
                since_first: s.counts[n - 1] as i64 - s.counts[0] as i64,
                since_previous: if n > 1 { s.counts[n - 1] as i64 - s.counts[n - 2] as i64 } else { 0 },
            })
            .collect()
    }

    /// The leak suspects: types whose count grows steadily, grouped into leaks (each led by the
    /// type whose instances are the leak, with the co-growing types as its parts, see
    /// `analysis::culprits`), then types whose count does not grow but whose refcount sum does
    /// (beyond what the growing objects' own references explain), ranked by growth.
    pub fn suspects(&self) -> Vec<Suspect> {
        self.suspects_with(None)
    }

    /// As [`Series::suspects`], with what the heap graph says about who holds whom among the
    /// growing types (`heap::holders`), when it was read.
    pub fn suspects_with(&self, holds: Option<&[Hold]>) -> Vec<Suspect> {
        let (by_count, mut by_refs) = self.growing();
        by_refs.sort_by(|a, b| b.growth_per_minute.total_cmp(&a.growth_per_minute).then_with(|| a.name.cmp(&b.name)));
        let members: Vec<Member> = by_count
            .into_iter()
            .map(|mut suspect| {
                suspect.functions = self.code_suspects(&suspect.name);
                let counts = self
                    .types
                    .get(&suspect.name)
                    .map_or_else(Vec::new, |t| t.counts.iter().map(|&c| c as f64).collect());
                Member { suspect, counts }
            })
            .collect();
        let mut links: Vec<Link> = holds.map(|h| graph_links(h, &members)).unwrap_or_default();
        links.extend(self_links(&members));
        let mut out = group(members, &links);
        out.extend(by_refs);
        out
    }

    /// Types whose count grows steadily, and types whose count does not but whose refcount
    /// sum does beyond what the growing objects' own references explain; unranked.
    pub fn growing(&self) -> (Vec<Suspect>, Vec<Suspect>) {
        if self.times.len() < MIN_SAMPLES {
            return (Vec::new(), Vec::new());
        }
        let mut by_count = Vec::new();
        let mut by_refs = Vec::new();
        for (name, s) in &self.types {
            if let Some(suspect) = self.suspect(name, "count", &s.counts) {
                by_count.push(suspect);
            } else if let Some(suspect) = self.suspect(name, "refcount", &s.refcount_sums) {
                by_refs.push(suspect);
            }
        }
        // Growing objects refer to others: every new instance holds a reference to its class,
        // every leaked closure to its globals dict. Reference growth no larger than the growth
        // of the growing objects is explained by them, not a second finding.
        let explained = by_count.iter().map(|s| s.added).sum::<i64>() as f64 * 1.1;
        by_refs.retain(|s| s.added as f64 > explained);
        (by_count, by_refs)
    }

    /// For the `function` and `method` types: the code objects whose closures, plain functions
    /// or bound methods grow, fastest first.
    fn code_suspects(&self, type_name: &str) -> Vec<CodeSuspect> {
        let mut out = Vec::new();
        for ((qualname, file, line), s) in &self.code {
            let plain: Vec<u64> = s.functions.iter().zip(&s.closures).map(|(f, c)| f.saturating_sub(*c)).collect();
            let series: Vec<(&'static str, &[u64])> = match type_name {
                "function" => vec![("closure", &s.closures), ("function", &plain)],
                "method" => vec![("bound_method", &s.bound_methods)],
                _ => Vec::new(),
            };
            for (kind, values) in series {
                let Some(g) = self.suspect(qualname, "count", values) else { continue };
                out.push(CodeSuspect {
                    qualname: qualname.clone(),
                    file: file.clone(),
                    line: *line,
                    kind,
                    growth_per_minute: g.growth_per_minute,
                    added: g.added,
                    now: g.now,
                    captures: if kind == "closure" { s.latest.captures.clone() } else { Vec::new() },
                    self_types: if kind == "bound_method" { s.latest.self_types.clone() } else { Vec::new() },
                });
            }
        }
        out.sort_by(|a, b| {
            b.growth_per_minute.total_cmp(&a.growth_per_minute).then_with(|| a.qualname.cmp(&b.qualname))
        });
        out.truncate(CODE_SUSPECTS_NAMED);
        out
    }

    /// A finding when the process's memory climbs steadily while its Python objects (and
    /// pymalloc's arenas, where read) do not: the growth is in native allocations, which no
    /// census of Python objects can show.
    pub fn native_growth(&self) -> Option<Finding> {
        let rss = self.suspect("resident memory", "rss", &self.rss)?;
        if self.suspect("objects", "objects", &self.objects).is_some()
            || self.suspect("pymalloc arenas", "bytes", &self.arenas).is_some()
        {
            return None;
        }
        let (first, last) = (self.objects.first()?, self.objects.last()?);
        let arenas = match (self.arenas.first(), self.arenas.last()) {
            (Some(&a), Some(&b)) if b > 0 => format!(" and pymalloc's arenas stayed at {}", flat_mib(a, b)),
            _ => String::new(),
        };
        Some(Finding {
            kind: "native_memory".into(),
            message: format!(
                "The process's memory grew by {:.1} MiB ({:+.1} MiB/min) while its Python objects stayed flat ({} to {}){arenas}: native allocations (C extensions, ctypes/cffi buffers, malloc fragmentation) are growing, not Python objects.",
                mib(rss.added as f64),
                mib(rss.growth_per_minute),
                first,
                last
            ),
        })
    }

    /// How the memory split moved from the first kept sample to the last, per minute; `None`
    /// with fewer than two samples or no time between them.
    pub fn memory_growth(&self) -> Option<MemoryGrowth> {
        let minutes = (self.times.last()? - self.times.first()?) / 60.0;
        if self.times.len() < 2 || minutes <= 0.0 {
            return None;
        }
        let per_minute = |v: &[u64]| match (v.first(), v.last()) {
            (Some(&a), Some(&b)) => (b as f64 - a as f64) / minutes,
            _ => 0.0,
        };
        let read_pymalloc = self.arenas.iter().any(|&a| a > 0);
        Some(MemoryGrowth {
            rss_per_minute: per_minute(&self.rss),
            pymalloc_arenas_per_minute: read_pymalloc.then(|| per_minute(&self.arenas)),
            native_per_minute: per_minute(&self.native),
            minutes,
        })
    }

    /// A finding when pymalloc's arenas climb steadily along with the Python objects: memory
    /// that grows because Python objects are kept (a Python-level leak; the suspects say which).
    pub fn pymalloc_growth(&self) -> Option<Finding> {
        let arenas = self.suspect("pymalloc arenas", "bytes", &self.arenas)?;
        let objects = self.suspect("objects", "objects", &self.objects)?;
        Some(Finding {
            kind: "pymalloc_growth".into(),
            message: format!(
                "pymalloc's arenas grew by {:.1} MiB ({:+.1} MiB/min) along with the Python objects (+{} to {}): Python objects are being kept, a Python-level leak; see the suspects for which.",
                mib(arenas.added as f64),
                mib(arenas.growth_per_minute),
                thousands(objects.added.max(0) as u64),
                thousands(objects.now)
            ),
        })
    }

    fn suspect(&self, name: &str, metric: &'static str, values: &[u64]) -> Option<Suspect> {
        let (first, last) = (*values.first()?, *values.last()?);
        // Cheap filter first: the statistics are quadratic and most types do not grow.
        if last <= first {
            return None;
        }
        let points: Vec<(f64, f64)> = self.times.iter().zip(values).map(|(t, v)| (*t, *v as f64)).collect();
        let trend = analyse(&points)?;
        trend.growing.then(|| Suspect {
            name: name.to_string(),
            metric,
            growth_per_minute: trend.slope_per_sec * 60.0,
            added: last as i64 - first as i64,
            now: last,
            confidence: trend.confidence,
            samples: trend.samples,
            parts: Vec::new(),
            functions: Vec::new(),
        })
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// "12.0 MiB" for a figure that did not move, "12.0 to 12.5 MiB" for one that moved a little.
fn flat_mib(first: u64, last: u64) -> String {
    if first == last {
        format!("{:.1} MiB", mib(first as f64))
    } else {
        format!("{:.1} to {:.1} MiB", mib(first as f64), mib(last as f64))
    }
}

/// Growing bound methods hold their `__self__`: when most of a growing method's are bound to
/// instances of a growing class, that class is the leak and the bound methods hold it (a
/// listener registered per request). Read in every census, so this needs no graph.
fn self_links(members: &[Member]) -> Vec<Link> {
    let mut links = Vec::new();
    for m in members.iter().filter(|m| m.suspect.name == "method") {
        for code in &m.suspect.functions {
            let Some(top) = code.self_types.first() else { continue };
            let bound: u64 = code.self_types.iter().map(|t| t.count).sum();
            let growing = members.iter().any(|o| o.suspect.name == top.name);
            if growing && nature(&top.name) > nature("method") && top.count * 2 >= bound {
                links.push(Link { holder: "method".into(), held: top.name.clone(), evidence: "__self__" });
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::census::tests::census_with as census;

    #[test]
    fn a_growing_type_is_named_and_a_flat_one_is_not() {
        let mut s = Series::default();
        for i in 0..20u64 {
            let wobble = (i * 7919) % 13;
            s.push(
                i as f64,
                &census(&[
                    ("Order", 100 + 10 * i, 200 + 20 * i),
                    ("dict", 500 + wobble, 900),
                    ("Conn", 50, 100 + 30 * i),
                ]),
            );
        }
        let suspects = s.suspects();
        assert_eq!(suspects.len(), 2, "{suspects:?}");
        assert_eq!((suspects[0].name.as_str(), suspects[0].metric), ("Order", "count"));
        assert!((suspects[0].growth_per_minute - 600.0).abs() < 1.0);
        assert_eq!(suspects[0].added, 190);
        assert_eq!((suspects[1].name.as_str(), suspects[1].metric), ("Conn", "refcount"));
    }

    #[test]
    fn growing_closures_and_bound_methods_are_named_by_their_code_and_grouped() {
        use crate::heap::details::{Capture, SelfType};
        let mut s = Series::default();
        for i in 0..20u64 {
            let mut c = census(&[
                ("function", 1000 + 10 * i, 2000),
                ("cell", 300 + 20 * i, 300),
                ("method", 50 + 5 * i, 50),
                ("app.Timer", 10 + 5 * i, 10),
                ("dict", 5000 + (i * 7919) % 13, 9000),
            ]);
            c.functions = vec![
                FunctionGroup {
                    qualname: "make.<locals>.handler".into(),
                    file: "app.py".into(),
                    line: 3,
                    functions: 10 * i + 4,
                    closures: 10 * i,
                    captures: vec![Capture { name: "route".into(), type_name: Some("str".into()) }],
                    ..FunctionGroup::default()
                },
                FunctionGroup {
                    qualname: "Timer.done".into(),
                    file: "app.py".into(),
                    line: 9,
                    functions: 1,
                    bound_methods: 5 * i,
                    self_types: vec![SelfType { name: "app.Timer".into(), count: 5 * i }],
                    ..FunctionGroup::default()
                },
            ];
            s.push(i as f64, &c);
        }
        let suspects = s.suspects();
        let leaders: Vec<&str> = suspects.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(leaders, vec!["app.Timer", "function"], "{suspects:#?}");
        // The bound methods hold the timers: they are its holders, named by their code.
        let method = &suspects[0].parts[0];
        assert_eq!((method.name.as_str(), method.relation, method.evidence), ("method", "holder", "__self__"));
        assert_eq!(method.functions[0].qualname, "Timer.done");
        assert_eq!(method.functions[0].self_types[0].name, "app.Timer");
        // The closures are named, with what they capture; their cells are their parts.
        let function = &suspects[1];
        assert_eq!(function.functions.len(), 1, "the 4 plain functions do not grow");
        let closure = &function.functions[0];
        assert_eq!((closure.kind, closure.qualname.as_str(), closure.line), ("closure", "make.<locals>.handler", 3));
        assert_eq!(closure.captures[0].name, "route");
        assert_eq!((function.parts[0].name.as_str(), function.parts[0].per_instance), ("cell", 2.0));
    }

    #[test]
    fn samples_read_during_a_collection_are_left_out() {
        // A type that climbs slowly, read 90 % low in every third sample (while the collector
        // held most objects on a list of its own): the low samples are left out, the values
        // shown are the real ones, and the climb is still named.
        let mut s = Series::default();
        for i in 0..30u64 {
            let mut c = census(&[("Order", if i % 3 == 2 { 100 } else { 1000 + i }, 1000)]);
            c.gc_collecting = i % 3 == 2;
            s.push(i as f64, &c);
        }
        assert_eq!((s.samples_taken, s.overlapping_collection), (30, 10));
        assert!(s.changes().iter().all(|c| c.count >= 1000), "{:?}", s.changes());
        assert_eq!(s.suspects().iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), vec!["Order"]);
    }

    #[test]
    fn samples_read_during_a_collection_that_counted_everything_are_kept() {
        // A collector that runs all the time: every sample overlaps one, most count every
        // object, every fifth hides most of them. The full ones are kept (the first has
        // nothing to be checked against), the low ones left out, and the climb is named.
        let mut s = Series::default();
        for i in 0..30u64 {
            let low = i % 5 == 4;
            let mut c = census(&[("Order", if low { 100 } else { 1000 + 10 * i }, 1000)]);
            c.objects_total = if low { 200 } else { 5000 + 10 * i };
            c.gc_collecting = true;
            s.push(i as f64, &c);
        }
        assert_eq!((s.samples_taken, s.overlapping_collection, s.overlapping_kept), (30, 7, 23));
        assert_eq!(s.suspects().iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), vec!["Order"]);
    }

    #[test]
    fn native_growth_is_rss_climbing_while_objects_stay_flat() {
        let mut native = Series::default();
        let mut python = Series::default();
        for i in 0..20u64 {
            let mut c = census(&[("dict", 100 + i % 3, 100)]);
            c.objects_total = 1000 + i % 3;
            c.memory =
                Some(crate::memory::proc_info::MemorySplit { rss_bytes: (50 + 2 * i) << 20, ..Default::default() });
            native.push(i as f64, &c);
            c.objects_total = 1000 + 500 * i;
            python.push(i as f64, &c);
        }
        let finding = native.native_growth().expect("native growth");
        assert!(finding.message.contains("grew by 38.0 MiB"), "{}", finding.message);
        assert!(python.native_growth().is_none(), "Python objects grew too: not native");
        assert!(native.pymalloc_growth().is_none(), "no arenas read, none grew");
    }

    #[test]
    fn pymalloc_growth_is_arenas_climbing_with_the_objects() {
        use crate::cpython::pymalloc::PymallocStats;
        use crate::memory::proc_info::MemorySplit;
        let (mut leak, mut native) = (Series::default(), Series::default());
        for i in 0..20u64 {
            let mut c = census(&[("dict", 100 + 500 * i, 100)]);
            c.objects_total = 1000 + 500 * i;
            let pymalloc = |arena_bytes| Some(PymallocStats { arena_bytes, ..PymallocStats::default() });
            c.memory = Some(MemorySplit {
                rss_bytes: (50 + 2 * i) << 20,
                pymalloc: pymalloc((8 + i) << 20),
                ..Default::default()
            });
            leak.push(i as f64, &c);
            c.objects_total = 1000 + i % 3;
            c.memory =
                Some(MemorySplit { rss_bytes: (50 + 2 * i) << 20, pymalloc: pymalloc(8 << 20), ..Default::default() });
            native.push(i as f64, &c);
        }
        let finding = leak.pymalloc_growth().expect("pymalloc growth");
        assert!(finding.message.contains("grew by 19.0 MiB"), "{}", finding.message);
        assert!(leak.native_growth().is_none(), "the arenas grew: not native");
        assert!(native.pymalloc_growth().is_none());
        let message = native.native_growth().expect("native growth").message;
        assert!(message.contains("pymalloc's arenas stayed at 8.0 MiB"), "{message}");
    }

    #[test]
    fn types_appearing_late_are_backfilled_and_changes_are_relative() {
        let mut s = Series::default();
        s.push(0.0, &census(&[("a", 5, 5)]));
        s.push(1.0, &census(&[("a", 7, 7), ("b", 3, 3)]));
        let mut changes = s.changes();
        changes.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(changes[0].since_first, 2);
        assert_eq!(changes[1].since_first, 3);
        assert_eq!(changes[1].since_previous, 3);
    }

    #[test]
    fn memory_stays_bounded_on_long_runs() {
        let mut s = Series::default();
        for i in 0..5000u64 {
            s.push(i as f64, &census(&[("x", i, i)]));
        }
        assert!(s.kept_samples() <= MAX_KEPT_SAMPLES);
        assert_eq!(s.samples_taken, 5000);
        assert_eq!(s.changes()[0].count, 4999, "the newest sample is always kept");
        assert_eq!(s.suspects()[0].name, "x");
    }
}
