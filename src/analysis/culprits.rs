//! Which of the types that grow together is the leak, and which are its parts.
//!
//! A leaking object rarely grows alone: an instance brings its `__dict__` (a separate `dict`
//! up to 3.10 and from 3.14, or once materialised), the lists and dicts in its attributes; a
//! leaked closure brings its cells and closure tuple; a registered listener brings the bound
//! method that holds it. Ranked by growth, those parts come first (a `dict` per instance grows
//! as fast as the instances, three cells per closure three times as fast), and the type the
//! user wrote comes second to seventh. So co-growing suspects are grouped, and each group is
//! named by the type whose instances are the leak, with the others as its parts.
//!
//! Evidence, strongest first:
//! - **Links**: instances of one suspect type hold instances of another (read from the heap
//!   graph at the end of `attach`, see `heap::holders`), or bound methods that grow are bound
//!   to instances of a growing type (their `__self__`, read in every census).
//! - **The types' nature**: classes of the program and of extension modules are what a person
//!   recognises; callables (functions, bound methods) name code; the builtin containers every
//!   object owns (`dict`, `list`, `tuple`, `set`, `cell`, weak references) are parts. When a
//!   container holds a class instance (a cache's key tuple), the instance is still the leak,
//!   and the container is listed as what holds it.
//! - **Growth that moves together**: a container type with no link, whose count follows a
//!   suspect's (fitted against it, the ratio near a whole number or a simple fraction, most of
//!   its growth explained), is listed as that suspect's part.
//!
//! Groups are ranked by the nature of their leading type, then by how many objects the group
//! adds per minute.

use super::series::Suspect;
use crate::heap::details::{Capture, SelfType};
use crate::heap::holders::Hold;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// A part's rate must be this close (in objects per instance of the suspect, divided by the
/// fraction's denominator) to a whole number or simple fraction of its suspect's rate to be
/// grouped with it by growth alone.
const FRACTION_TOLERANCE: f64 = 0.1;
/// Two suspects a container follows this nearly as well fit it equally: an ORM's mapped
/// instances and their instance states grow one for one, and a sample taken between the
/// making of one and of the other moves each fit by a few thousandths; the program's own
/// class then takes the container, not whichever the sampling favoured.
const TIED_FIT: f64 = FRACTION_TOLERANCE / 4.0;
/// ...and the fitted line through its counts against the suspect's must leave scatter of at
/// most this fraction of the part's growth: the two grew together, sample by sample.
const MAX_UNEXPLAINED: f64 = 0.25;
/// A link from the graph counts when at least this fraction of each side's growth takes part
/// in it (a single registry holding every instance is not a part of anything).
const LINK_SHARE: f64 = 0.5;
/// Points used to fit one series against another (the pairwise fit is quadratic).
const MAX_FIT_POINTS: usize = 120;

/// What a type is, for choosing which of several co-growing types is the leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nature {
    /// A builtin container that every object owns some of: `dict`, `list`, `tuple`, `cell`...
    Part,
    /// Runs code: a function, a bound method, a generator; named by that code.
    Callable,
    /// A class of the program, a library or an extension module: what a person recognises.
    Domain,
}

/// Builtin callables (named by the code they run, not parts of an instance).
const CALLABLES: &[&str] = &[
    "function",
    "method",
    "builtin_function_or_method",
    "method-wrapper",
    "generator",
    "coroutine",
    "async_generator",
    "functools.partial",
];

/// Containers of the standard library that are named with a module but are parts as much as
/// `dict` is.
const DOTTED_PARTS: &[&str] = &[
    "collections.deque",
    "collections.OrderedDict",
    "collections.defaultdict",
    "weakref.ReferenceType",
    "weakref.ProxyType",
    "weakref.CallableProxyType",
    "weakref.KeyedRef",
    "types.SimpleNamespace",
];

pub fn nature(type_name: &str) -> Nature {
    if CALLABLES.contains(&type_name) {
        Nature::Callable
    } else if !type_name.contains('.') || DOTTED_PARTS.contains(&type_name) {
        // Builtins are named by their qualname alone: `dict`, `cell`, `weakref`.
        Nature::Part
    } else {
        Nature::Domain
    }
}

/// A type grouped with a suspect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Part {
    #[serde(rename = "type")]
    pub name: String,
    /// Objects of this type per instance of the suspect, from their growth rates (1: one
    /// each; 0.5: one per two).
    pub per_instance: f64,
    pub growth_per_minute: f64,
    pub added: i64,
    pub now: u64,
    /// "part": instances of the type it is grouped under hold these (a `__dict__`, a
    /// closure's cells); "holder": these hold them (a bound method's `__self__`, a key tuple).
    pub relation: &'static str,
    /// The type it is a part or holder of, when that is not the suspect itself but one of its
    /// parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// What grouped it: "graph" (references read from the heap), "__self__" (bound methods'
    /// targets) or "growth" (its count follows the suspect's).
    pub evidence: &'static str,
    /// For `function` and `method`: which code the growing ones run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<CodeSuspect>,
}

/// Functions or bound methods of one code object that grow: a closure or listener leak named
/// by the function, where it is defined and what it keeps alive.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CodeSuspect {
    pub qualname: String,
    pub file: String,
    pub line: u64,
    /// "closure", "function" or "bound_method".
    pub kind: &'static str,
    pub growth_per_minute: f64,
    pub added: i64,
    pub now: u64,
    /// For closures: the captured variables and their values' types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<Capture>,
    /// For bound methods: the types of their `__self__`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub self_types: Vec<SelfType>,
}

/// A count suspect and its series (counts at the series' kept samples).
#[derive(Debug, Clone)]
pub struct Member {
    pub suspect: Suspect,
    pub counts: Vec<f64>,
}

/// Instances of `holder` hold instances of `held`.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub holder: String,
    pub held: String,
    /// "graph" or "__self__".
    pub evidence: &'static str,
}

/// The links the graph shows among the suspects: those in which at least half of the holder's
/// growth takes part, holding as many distinct objects (half the smaller of the two growths:
/// the held type may grow for other holders too, as dicts do). A module's namespace holding
/// every function, every function holding the same globals, or one session dict holding every
/// pending object, is not a part relation; an instance holding its own dict is.
pub fn graph_links(holds: &[Hold], members: &[Member]) -> Vec<Link> {
    let added: FxHashMap<&str, f64> =
        members.iter().map(|m| (m.suspect.name.as_str(), m.suspect.added.max(1) as f64)).collect();
    holds
        .iter()
        .filter(|h| h.holder != h.held)
        .filter(|h| match (added.get(h.holder.as_str()), added.get(h.held.as_str())) {
            (Some(holder), Some(held)) => {
                h.holders as f64 >= LINK_SHARE * holder && h.held_objects as f64 >= LINK_SHARE * holder.min(*held)
            }
            _ => false,
        })
        .map(|h| Link { holder: h.holder.clone(), held: h.held.clone(), evidence: "graph" })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Parent {
    of: usize,
    relation: &'static str,
    evidence: &'static str,
}

/// Groups count suspects into leaks: each returned suspect is a leading type with its parts,
/// ranked by nature, then by the objects the group adds per minute.
pub fn group(members: Vec<Member>, links: &[Link]) -> Vec<Suspect> {
    let n = members.len();
    let index: FxHashMap<&str, usize> = members.iter().enumerate().map(|(i, m)| (m.suspect.name.as_str(), i)).collect();
    let natures: Vec<Nature> = members.iter().map(|m| nature(&m.suspect.name)).collect();
    let rate = |i: usize| members[i].suspect.growth_per_minute;
    let name = |i: usize| members[i].suspect.name.as_str();

    // Each type's candidates to be grouped under: a type that holds it (it is a part of that
    // type), unless it is the one of higher nature (then it is listed as the other's holder).
    let mut candidates: Vec<Vec<Parent>> = vec![Vec::new(); n];
    for link in links {
        let (Some(&a), Some(&b)) = (index.get(link.holder.as_str()), index.get(link.held.as_str())) else {
            continue;
        };
        if a == b {
            continue;
        }
        if natures[a] >= natures[b] {
            candidates[b].push(Parent { of: a, relation: "part", evidence: link.evidence });
        } else {
            candidates[a].push(Parent { of: b, relation: "holder", evidence: link.evidence });
        }
    }
    // Best first: being held (a part) over holding, then the leader's nature, evidence read
    // from the heap, the faster-growing leader, and the name for a stable answer.
    let mut parent: Vec<Option<Parent>> = candidates
        .iter()
        .map(|list| {
            list.iter().copied().max_by(|x, y| {
                (x.relation == "part", natures[x.of], x.evidence == "graph")
                    .cmp(&(y.relation == "part", natures[y.of], y.evidence == "graph"))
                    .then_with(|| rate(x.of).total_cmp(&rate(y.of)))
                    .then_with(|| name(y.of).cmp(name(x.of)))
            })
        })
        .collect();
    break_cycles(&mut parent, &natures, &members);

    // Containers that nothing links: grouped with the suspect whose growth they follow.
    for x in 0..n {
        if parent[x].is_some() || natures[x] != Nature::Part {
            continue;
        }
        let mut choice: Option<(usize, f64)> = None;
        for p in 0..n {
            if p == x || parent[p].is_some() || natures[p] == Nature::Part {
                continue;
            }
            let Some(error) = follows(&members[x], &members[p]) else { continue };
            let better = match choice {
                None => true,
                Some((q, e)) => {
                    (if (error - e).abs() <= TIED_FIT { std::cmp::Ordering::Equal } else { error.total_cmp(&e) })
                        .then_with(|| prefer_program(name(p), name(q)))
                        .then_with(|| rate(q).total_cmp(&rate(p)))
                        .then_with(|| name(p).cmp(name(q)))
                        .is_lt()
                }
            };
            if better {
                choice = Some((p, error));
            }
        }
        if let Some((p, _)) = choice {
            parent[x] = Some(Parent { of: p, relation: "part", evidence: "growth" });
        }
    }

    // A type held both by the leading type and by one of its parts (an ORM instance's dict,
    // and the dicts of its instance state) is listed as the leading type's own part.
    let root_of = |parent: &[Option<Parent>], mut x: usize| {
        for _ in 0..n {
            match parent[x] {
                Some(p) => x = p.of,
                None => break,
            }
        }
        x
    };
    for x in 0..n {
        let root = root_of(&parent, x);
        if parent[x].is_some_and(|p| p.of != root && p.relation == "part")
            && let Some(direct) = candidates[x].iter().find(|c| c.of == root && c.relation == "part")
        {
            parent[x] = Some(*direct);
        }
    }

    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (x, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[p.of].push(x);
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for root in (0..n).filter(|&i| parent[i].is_none()) {
        let mut parts = Vec::new();
        let mut stack = children[root].clone();
        while let Some(x) = stack.pop() {
            parts.push(x);
            stack.extend(children[x].iter().copied());
        }
        groups.push((root, parts));
    }
    let total = |g: &(usize, Vec<usize>)| rate(g.0) + g.1.iter().map(|&p| rate(p)).sum::<f64>();
    groups.sort_by(|a, b| {
        natures[b.0]
            .cmp(&natures[a.0])
            .then_with(|| total(b).total_cmp(&total(a)))
            .then_with(|| name(a.0).cmp(name(b.0)))
    });
    let mut out = Vec::with_capacity(groups.len());
    for (root, mut parts) in groups {
        parts.sort_by(|&a, &b| {
            // Parts of the suspect itself first, then its holders, then parts of parts.
            let key = |x: usize| {
                let p = parent[x].expect("a part has a parent");
                (p.of != root, p.relation == "holder")
            };
            key(a).cmp(&key(b)).then_with(|| rate(b).total_cmp(&rate(a))).then_with(|| name(a).cmp(name(b)))
        });
        let root_rate = rate(root);
        let mut suspect = members[root].suspect.clone();
        suspect.parts = parts
            .into_iter()
            .map(|x| {
                let p = parent[x].expect("a part has a parent");
                let s = &members[x].suspect;
                Part {
                    name: s.name.clone(),
                    per_instance: round2(if root_rate > 0.0 { s.growth_per_minute / root_rate } else { 0.0 }),
                    growth_per_minute: s.growth_per_minute,
                    added: s.added,
                    now: s.now,
                    relation: p.relation,
                    of: (p.of != root).then(|| name(p.of).to_string()),
                    evidence: p.evidence,
                    functions: s.functions.clone(),
                }
            })
            .collect();
        out.push(suspect);
    }
    out
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `__main__` classes first: the program's own code, where a tie between two of the same nature
/// is broken (an ORM's instance state grows exactly as the mapped class does).
fn prefer_program(a: &str, b: &str) -> std::cmp::Ordering {
    b.starts_with("__main__.").cmp(&a.starts_with("__main__."))
}

/// Parent links can form cycles (two classes that refer to each other, each holding the
/// other): in each, the type most likely to be the leak becomes a leading type.
fn break_cycles(parent: &mut [Option<Parent>], natures: &[Nature], members: &[Member]) {
    let n = parent.len();
    for start in 0..n {
        let mut path = Vec::new();
        let mut x = start;
        while let Some(p) = parent[x] {
            if let Some(pos) = path.iter().position(|&y| y == x) {
                let cycle: Vec<usize> = path[pos..].to_vec();
                let head = cycle
                    .iter()
                    .copied()
                    .min_by(|&a, &b| {
                        natures[b]
                            .cmp(&natures[a])
                            .then_with(|| prefer_program(&members[a].suspect.name, &members[b].suspect.name))
                            // The holder of many grows slower than what it holds.
                            .then_with(|| {
                                members[a].suspect.growth_per_minute.total_cmp(&members[b].suspect.growth_per_minute)
                            })
                            .then_with(|| members[a].suspect.name.cmp(&members[b].suspect.name))
                    })
                    .expect("a cycle has members");
                parent[head] = None;
                break;
            }
            if path.len() > n {
                break;
            }
            path.push(x);
            x = p.of;
        }
    }
}

/// Whether `part`'s count follows `leader`'s: fitted against it, the slope is near a whole
/// number or simple fraction and explains most of the part's growth. Returns how far the
/// slope is from that fraction (relative), for choosing between leaders.
pub fn follows(part: &Member, leader: &Member) -> Option<f64> {
    let n = part.counts.len().min(leader.counts.len());
    if n < 2 || leader.suspect.growth_per_minute <= 0.0 {
        return None;
    }
    let step = n.div_ceil(MAX_FIT_POINTS).max(1);
    let points: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (leader.counts[i], part.counts[i])).collect();
    let mut slopes = Vec::new();
    for (i, (x1, y1)) in points.iter().enumerate() {
        for (x2, y2) in &points[i + 1..] {
            if x2 != x1 {
                slopes.push((y2 - y1) / (x2 - x1));
            }
        }
    }
    let slope = median(slopes)?;
    let ratio = part.suspect.growth_per_minute / leader.suspect.growth_per_minute;
    // The fit over the counts and the ratio of the growth rates must agree: both say how many
    // of the part come with each new instance.
    if slope <= 0.0 || (slope - ratio).abs() > 0.25 * ratio {
        return None;
    }
    let intercept = median(points.iter().map(|(x, y)| y - slope * x).collect())?;
    let residuals: Vec<f64> = points.iter().map(|(x, y)| (y - intercept - slope * x).abs()).collect();
    let scatter = 1.4826 * median(residuals)?;
    if scatter > MAX_UNEXPLAINED * part.suspect.added.max(1) as f64 {
        return None;
    }
    simple_fraction(ratio).map(|(_, _, error)| error)
}

/// The whole number or simple fraction p/q (q up to 3, and below 4 when not whole) nearest
/// `ratio`, if it is within [`FRACTION_TOLERANCE`] / q objects of it: (p, q, distance). The
/// tolerance is absolute, in objects per instance: 2.97 dicts per instance is three, 1.33 is
/// four per three, but 1.6 is neither, and 37.4 is not a whole number of anything.
pub fn simple_fraction(ratio: f64) -> Option<(u64, u64, f64)> {
    if !ratio.is_finite() || ratio <= 0.0 {
        return None;
    }
    for q in 1..=3u64 {
        let p = (ratio * q as f64).round();
        let value = p / q as f64;
        if p < 1.0 || (q > 1 && value >= 4.0) {
            continue;
        }
        let distance = (ratio - value).abs();
        if distance <= FRACTION_TOLERANCE / q as f64 {
            return Some((p as u64, q, distance));
        }
    }
    None
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    Some(values[mid])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, per_sample: f64, noise: f64) -> Member {
        let counts: Vec<f64> =
            (0..40).map(|i| 1000.0 + per_sample * i as f64 + noise * (((i * 7919) % 13) as f64 - 6.0)).collect();
        Member {
            suspect: Suspect {
                name: name.into(),
                metric: "count",
                growth_per_minute: per_sample * 300.0,
                added: (per_sample * 39.0) as i64,
                now: counts[39] as u64,
                confidence: 1.0,
                samples: 40,
                parts: Vec::new(),
                functions: Vec::new(),
            },
            counts,
        }
    }

    fn link(holder: &str, held: &str) -> Link {
        Link { holder: holder.into(), held: held.into(), evidence: "graph" }
    }

    fn names(s: &Suspect) -> Vec<(&str, f64, &str)> {
        s.parts.iter().map(|p| (p.name.as_str(), p.per_instance, p.relation)).collect()
    }

    #[test]
    fn natures() {
        assert_eq!(nature("dict"), Nature::Part);
        assert_eq!(nature("weakref.ReferenceType"), Nature::Part);
        assert_eq!(nature("function"), Nature::Callable);
        assert_eq!(nature("__main__.Invoice"), Nature::Domain);
        assert_eq!(nature("_io.TextIOWrapper"), Nature::Domain);
    }

    #[test]
    fn simple_fractions() {
        assert_eq!(simple_fraction(1.02).map(|f| (f.0, f.1)), Some((1, 1)));
        assert_eq!(simple_fraction(2.95).map(|f| (f.0, f.1)), Some((3, 1)));
        assert_eq!(simple_fraction(0.5).map(|f| (f.0, f.1)), Some((1, 2)));
        assert_eq!(simple_fraction(1.34).map(|f| (f.0, f.1)), Some((4, 3)));
        assert_eq!(simple_fraction(7.05).map(|f| (f.0, f.1)), Some((7, 1)));
        assert_eq!(simple_fraction(1.6), None);
        assert_eq!(simple_fraction(37.4), None);
        assert_eq!(simple_fraction(0.74), None);
        assert_eq!(simple_fraction(0.1), None);
        assert_eq!(simple_fraction(0.0), None);
    }

    #[test]
    fn an_instance_leads_its_dict_and_list_by_growth_alone() {
        // The case: dict grows as fast as the instances (and first by name order).
        let grouped = group(
            vec![member("dict", 10.0, 3.0), member("__main__.Invoice", 10.0, 0.0), member("list", 10.0, 2.0)],
            &[],
        );
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!(grouped[0].name, "__main__.Invoice");
        assert_eq!(names(&grouped[0]), vec![("dict", 1.0, "part"), ("list", 1.0, "part")]);
        assert!(grouped[0].parts.iter().all(|p| p.evidence == "growth"));
    }

    #[test]
    fn a_closure_leads_its_cells_and_tuple() {
        let grouped =
            group(vec![member("cell", 20.0, 4.0), member("function", 10.0, 1.0), member("tuple", 10.0, 3.0)], &[]);
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!(grouped[0].name, "function");
        assert_eq!(names(&grouped[0]), vec![("cell", 2.0, "part"), ("tuple", 1.0, "part")]);
    }

    #[test]
    fn a_container_growing_at_an_unrelated_rate_stays_apart() {
        let grouped = group(vec![member("__main__.Invoice", 10.0, 0.0), member("dict", 16.0, 1.0)], &[]);
        assert_eq!(grouped.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["__main__.Invoice", "dict"]);
        assert!(grouped[0].parts.is_empty());
    }

    #[test]
    fn a_container_whose_growth_does_not_follow_stays_apart() {
        // Same average rate, but all of it in one jump in the middle: not grown together.
        let mut jump = member("list", 10.0, 0.0);
        jump.counts = (0..40).map(|i| if i < 20 { 1000.0 } else { 1390.0 }).collect();
        let grouped = group(vec![member("__main__.Invoice", 10.0, 0.0), jump], &[]);
        assert_eq!(grouped.len(), 2, "{grouped:?}");
    }

    #[test]
    fn the_graph_decides_between_types_of_one_nature() {
        // TextIOWrapper holds BufferedReader holds FileIO holds dict: one group, led by the
        // outermost holder, although FileIO's rate matches dict's best.
        let members = vec![
            member("_io.BufferedReader", 20.0, 0.0),
            member("_io.FileIO", 10.0, 0.0),
            member("_io.TextIOWrapper", 20.0, 0.0),
            member("dict", 10.0, 1.0),
        ];
        let links = [
            link("_io.TextIOWrapper", "_io.BufferedReader"),
            link("_io.BufferedReader", "_io.FileIO"),
            link("_io.FileIO", "dict"),
        ];
        let grouped = group(members, &links);
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!(grouped[0].name, "_io.TextIOWrapper");
        let parts = &grouped[0].parts;
        assert_eq!(parts[0].name, "_io.BufferedReader");
        assert_eq!(parts[0].of, None);
        let file = parts.iter().find(|p| p.name == "_io.FileIO").unwrap();
        assert_eq!((file.per_instance, file.of.as_deref()), (0.5, Some("_io.BufferedReader")));
    }

    #[test]
    fn a_container_holding_an_instance_is_its_holder_and_a_bound_method_too() {
        // lru_cache keys: tuple (self, arg) holds each PriceList; a listener's bound method
        // holds its RequestTimer. The class leads; the holders are listed as such.
        let members = vec![
            member("tuple", 10.0, 0.0),
            member("__main__.PriceList", 10.0, 0.0),
            member("method", 5.0, 0.0),
            member("__main__.RequestTimer", 5.0, 0.0),
        ];
        let links = [
            link("tuple", "__main__.PriceList"),
            Link { holder: "method".into(), held: "__main__.RequestTimer".into(), evidence: "__self__" },
        ];
        let grouped = group(members, &links);
        assert_eq!(grouped.len(), 2, "{grouped:?}");
        assert_eq!(grouped[0].name, "__main__.PriceList");
        assert_eq!(names(&grouped[0]), vec![("tuple", 1.0, "holder")]);
        assert_eq!(grouped[1].name, "__main__.RequestTimer");
        assert_eq!(names(&grouped[1]), vec![("method", 1.0, "holder")]);
        assert_eq!(grouped[1].parts[0].evidence, "__self__");
    }

    #[test]
    fn a_type_held_by_the_leader_and_by_its_part_is_the_leader_s_own_part() {
        // An ORM instance holds its dict and its instance state; the state holds two dicts of
        // its own: the dicts are listed as the instance's, three per instance.
        let members = vec![
            member("__main__.Invoice", 10.0, 0.0),
            member("sqlalchemy.orm.state.InstanceState", 10.0, 0.0),
            member("dict", 30.0, 2.0),
        ];
        let links = [
            link("__main__.Invoice", "sqlalchemy.orm.state.InstanceState"),
            link("sqlalchemy.orm.state.InstanceState", "dict"),
            link("__main__.Invoice", "dict"),
        ];
        let grouped = group(members, &links);
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        let dict = grouped[0].parts.iter().find(|p| p.name == "dict").unwrap();
        assert_eq!((dict.per_instance, dict.of.as_deref()), (3.0, None));
    }

    #[test]
    fn containers_following_the_program_s_class_and_a_library_s_equally_go_to_the_program_s() {
        // `trend` of an ORM leak (no graph): the instance states grow as the mapped instances,
        // which a sample taken between the two puts a little behind. The containers follow
        // both; the bound method is the state's by its __self__.
        let members = vec![
            member("__main__.Invoice", 9.98, 0.0),
            member("sqlalchemy.orm.state.InstanceState", 10.0, 0.0),
            member("dict", 30.0, 0.0),
            member("set", 10.0, 0.0),
            member("weakref.ReferenceType", 10.0, 0.0),
            member("method", 10.0, 0.0),
        ];
        let links =
            [Link { holder: "method".into(), held: "sqlalchemy.orm.state.InstanceState".into(), evidence: "__self__" }];
        let grouped = group(members, &links);
        assert_eq!(grouped[0].name, "__main__.Invoice", "{grouped:?}");
        let parts: Vec<&str> = grouped[0].parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(parts, ["dict", "set", "weakref.ReferenceType"]);
    }

    #[test]
    fn two_classes_holding_each_other_are_led_by_the_program_s() {
        let members =
            vec![member("sqlalchemy.orm.state.InstanceState", 10.0, 0.0), member("__main__.Invoice", 10.0, 0.0)];
        let links = [
            link("__main__.Invoice", "sqlalchemy.orm.state.InstanceState"),
            link("sqlalchemy.orm.state.InstanceState", "__main__.Invoice"),
        ];
        let grouped = group(members, &links);
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!(grouped[0].name, "__main__.Invoice");
    }

    #[test]
    fn classes_lead_over_callables_and_containers() {
        let grouped =
            group(vec![member("set", 37.0, 0.0), member("function", 30.0, 0.0), member("app.Order", 1.3, 0.0)], &[]);
        assert_eq!(grouped.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["app.Order", "function", "set"]);
    }

    #[test]
    fn graph_links_need_a_share_of_both_sides_growth() {
        let members = vec![member("function", 10.0, 0.0), member("dict", 10.0, 0.0)];
        // A module namespace holds every function: few dicts, not a part relation.
        let namespace = Hold { holder: "dict".into(), held: "function".into(), holders: 3, held_objects: 900 };
        // Every function holds its globals: one dict held, not a part either.
        let globals = Hold { holder: "function".into(), held: "dict".into(), holders: 1390, held_objects: 1 };
        assert!(graph_links(&[namespace, globals], &members).is_empty());
        let own = Hold { holder: "function".into(), held: "dict".into(), holders: 390, held_objects: 390 };
        assert_eq!(graph_links(&[own], &members).len(), 1);
    }
}
