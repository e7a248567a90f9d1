//! Suspects across processes: a pre-fork server's workers run the same code, so a leak shows
//! in each of them. Each process's series is judged on its own (growth within one worker's life
//! counts, so a worker replaced every N requests still shows its leak), and the verdicts are
//! then put side by side: a type that grows in 3 of 3 workers is a leak of the code they share;
//! one that grows in 1 of 8 is more likely one request's state.

use super::culprits::nature;
use super::series::Suspect;
use super::trend::{MIN_SAMPLES, analyse};
use serde::Serialize;

/// The fewest samples in which the trend test calls a perfectly steady climb a leak: every
/// real series needs at least this many, more when it is noisy. The test's own minimum
/// ([`MIN_SAMPLES`]) is lower, but its recent half must show the climb too. Asked of the test
/// itself, so that it stays true when the test changes.
pub fn samples_to_call() -> usize {
    (MIN_SAMPLES..256)
        .find(|&n| {
            let points: Vec<(f64, f64)> = (0..n).map(|i| (i as f64, 100.0 + 10.0 * i as f64)).collect();
            analyse(&points).is_some_and(|t| t.growing)
        })
        .unwrap_or(MIN_SAMPLES)
}

/// One process's verdict, as the fleet summary weighs it.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    pub pid: i32,
    /// The parent of other sampled processes (a gunicorn or uWSGI master, a pool's parent):
    /// it forks workers and serves nothing, so it is not counted among them.
    pub is_master: bool,
    /// Sampled long enough for the trend test to call a leak ([`samples_to_call`]).
    pub judged: bool,
    pub suspects: &'a [Suspect],
}

/// A type named as a suspect in one or more processes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SharedSuspect {
    #[serde(rename = "type")]
    pub name: String,
    pub metric: &'static str,
    /// Workers (processes other than masters) in which it grows, of those judged.
    pub growing_in: usize,
    pub judged: usize,
    /// "workers" when masters were told apart, else "processes".
    pub counted_as: &'static str,
    /// The processes in which it grows (masters included).
    pub pids: Vec<i32>,
    /// Masters in which it grows too.
    pub masters: Vec<i32>,
    /// Growth per minute in each process it grows in: the median, and the range.
    pub growth_per_minute: f64,
    pub growth_per_minute_min: f64,
    pub growth_per_minute_max: f64,
    /// Net growth over each process's series, summed.
    pub added: i64,
}

/// Puts the processes' verdicts side by side: one entry per suspect type (and metric), the
/// types growing in the most processes first, then, as within one process
/// (`culprits::nature`), the program's classes before callables and builtin containers (a
/// worker's warm-up creates functions as fast as a leak creates orders), then by growth.
pub fn across(verdicts: &[Verdict]) -> Vec<SharedSuspect> {
    let any_master = verdicts.iter().any(|v| v.is_master);
    let counted_as = if any_master { "workers" } else { "processes" };
    let judged = verdicts.iter().filter(|v| v.judged && !v.is_master).count();
    let mut shared: Vec<SharedSuspect> = Vec::new();
    let mut rates: Vec<Vec<f64>> = Vec::new();
    for v in verdicts {
        for s in v.suspects {
            let index = match shared.iter().position(|x| x.name == s.name && x.metric == s.metric) {
                Some(i) => i,
                None => {
                    shared.push(SharedSuspect {
                        name: s.name.clone(),
                        metric: s.metric,
                        growing_in: 0,
                        judged,
                        counted_as,
                        pids: Vec::new(),
                        masters: Vec::new(),
                        growth_per_minute: 0.0,
                        growth_per_minute_min: f64::INFINITY,
                        growth_per_minute_max: f64::NEG_INFINITY,
                        added: 0,
                    });
                    rates.push(Vec::new());
                    shared.len() - 1
                }
            };
            let entry = &mut shared[index];
            entry.pids.push(v.pid);
            if v.is_master {
                entry.masters.push(v.pid);
            } else {
                entry.growing_in += 1;
            }
            entry.added += s.added;
            entry.growth_per_minute_min = entry.growth_per_minute_min.min(s.growth_per_minute);
            entry.growth_per_minute_max = entry.growth_per_minute_max.max(s.growth_per_minute);
            rates[index].push(s.growth_per_minute);
        }
    }
    for (entry, mut r) in shared.iter_mut().zip(rates) {
        r.sort_by(f64::total_cmp);
        let n = r.len();
        entry.growth_per_minute = if n % 2 == 1 { r[n / 2] } else { (r[n / 2 - 1] + r[n / 2]) / 2.0 };
    }
    shared.sort_by(|a, b| {
        (b.metric == "count")
            .cmp(&(a.metric == "count"))
            .then(b.growing_in.cmp(&a.growing_in))
            .then(nature(&b.name).cmp(&nature(&a.name)))
            .then(b.growth_per_minute.total_cmp(&a.growth_per_minute))
            .then_with(|| a.name.cmp(&b.name))
    });
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspect(name: &str, rate: f64) -> Suspect {
        Suspect {
            name: name.into(),
            metric: "count",
            growth_per_minute: rate,
            added: rate as i64 / 6,
            now: 1000,
            confidence: 0.99,
            samples: 40,
            parts: Vec::new(),
            functions: Vec::new(),
        }
    }

    #[test]
    fn a_steady_climb_needs_a_few_more_samples_than_the_minimum() {
        let n = samples_to_call();
        assert!((MIN_SAMPLES..=12).contains(&n), "{n}");
    }

    #[test]
    fn a_type_growing_in_every_worker_comes_first_with_the_median_rate() {
        let order = |r| vec![suspect("Order", r)];
        let (w1, w2, w3) = (order(1200.0), order(1500.0), vec![suspect("Order", 1800.0), suspect("Tmp", 9000.0)]);
        let verdicts = [
            Verdict { pid: 10, is_master: true, judged: true, suspects: &[] },
            Verdict { pid: 11, is_master: false, judged: true, suspects: &w1 },
            Verdict { pid: 12, is_master: false, judged: true, suspects: &w2 },
            Verdict { pid: 13, is_master: false, judged: true, suspects: &w3 },
            Verdict { pid: 14, is_master: false, judged: false, suspects: &[] },
        ];
        let shared = across(&verdicts);
        assert_eq!(shared.len(), 2);
        let first = &shared[0];
        assert_eq!((first.name.as_str(), first.growing_in, first.judged, first.counted_as), ("Order", 3, 3, "workers"));
        assert_eq!(first.growth_per_minute, 1500.0);
        assert_eq!((first.growth_per_minute_min, first.growth_per_minute_max), (1200.0, 1800.0));
        assert_eq!(first.pids, vec![11, 12, 13]);
        assert_eq!((shared[1].name.as_str(), shared[1].growing_in), ("Tmp", 1));
    }

    #[test]
    fn among_types_growing_in_as_many_workers_the_program_s_class_comes_first() {
        let each = vec![suspect("function", 1044.0), suspect("prefork_app.Order", 961.0), suspect("cell", 4800.0)];
        let verdicts: Vec<Verdict> =
            (1..=3).map(|pid| Verdict { pid, is_master: false, judged: true, suspects: &each }).collect();
        let names: Vec<String> = across(&verdicts).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["prefork_app.Order", "function", "cell"]);
    }

    #[test]
    fn without_a_master_every_process_counts_and_a_master_that_grows_is_named_apart() {
        let s = vec![suspect("Order", 600.0)];
        let plain = [
            Verdict { pid: 1, is_master: false, judged: true, suspects: &s },
            Verdict { pid: 2, is_master: false, judged: true, suspects: &[] },
        ];
        let shared = across(&plain);
        assert_eq!((shared[0].growing_in, shared[0].judged, shared[0].counted_as), (1, 2, "processes"));
        let with_master = [
            Verdict { pid: 1, is_master: true, judged: true, suspects: &s },
            Verdict { pid: 2, is_master: false, judged: true, suspects: &s },
        ];
        let shared = across(&with_master);
        assert_eq!((shared[0].growing_in, shared[0].judged, shared[0].masters.clone()), (1, 1, vec![1]));
    }
}
