//! A target whose collector runs almost all the time (a thread calling gc.collect() without
//! pause over a heap of reachable cycles). A census that overlaps a collection can miss the
//! objects the collector has moved to a list of its own: it is taken again, and one that still
//! overlaps is marked (`gc_collecting`). The series that judge growth leave out a marked sample
//! that counted fewer objects than the samples before it, and keep one that did not, so that
//! even a target that collects all the time can be judged.

mod common;

use common::*;
use serde_json::Value;

const SNAPSHOTS: usize = 12;
const SAMPLES: usize = 30;
/// Unmarked samples that are certainly enough to call a steady climb (the trend test needs
/// fewer; `analysis::fleet` checks that bound).
const ENOUGH_TO_JUDGE: u64 = 12;

#[test]
fn censuses_overlapping_a_collection_are_retried_marked_and_left_out_of_trends() {
    let problems = per_interpreter(3, &|interp| {
        let target = Target::start(interp, "collecting_target.py", &[]);
        let (stable, grower) =
            ("__main__.LeakspyKept", target.truth["grower"].as_str().unwrap_or_default().to_string());
        let expected = target.truth["stable"][stable].as_u64();
        let pid = target.pid.to_string();
        let what = &target.label;
        let mut problems = Vec::new();
        let (mut marked, mut marked_exact, mut retried) = (0, 0, 0);
        for _ in 0..SNAPSHOTS {
            let census = match snapshot_json(target.pid) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{what}: snapshot failed: {e}"));
                    continue;
                }
            };
            retried += u64::from(census["retries"].as_u64() > Some(0));
            if census["gc_collecting"] == true {
                marked += 1;
                marked_exact += u32::from(type_count(&census, stable) == expected);
            } else if type_count(&census, stable) != expected {
                problems.push(format!(
                    "{what}: an unmarked census counts {:?} {stable}, the target {expected:?}",
                    type_count(&census, stable)
                ));
            }
        }
        // The attack is reproduced: the reads did meet collections under way.
        if retried == 0 {
            problems.push(format!("{what}: no census met a collection: the target does not collect all the time"));
        }

        let out = leakspy(&["attach", &pid, "--samples", &SAMPLES.to_string(), "--interval", "0.05", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let Some(summary) = lines.last().filter(|s| s["summary"] == true) else {
            problems.push(format!("{what}: attach printed no summary: {}", String::from_utf8_lossy(&out.stderr)));
            return problems;
        };
        let overlapping = lines.iter().filter(|l| l["sample"].is_u64() && l["gc_collecting"] == true).count();
        let suspects = count_suspects(&summary["suspects"]);
        let (left_out, kept) = (summary["overlapping_collection"].as_u64(), summary["overlapping_kept"].as_u64());
        println!(
            "{what}: {marked} of {SNAPSHOTS} snapshots marked after retries ({retried} retried, {marked_exact} marked ones exact); attach: {overlapping} of {} samples overlapping ({kept:?} kept), suspects {suspects:?}",
            summary["samples"]
        );
        if left_out.zip(kept).map(|(l, k)| l + k) != Some(overlapping as u64) {
            problems.push(format!(
                "{what}: {overlapping} marked samples; the summary: {left_out:?} left out, {kept:?} kept"
            ));
        }
        if suspects.iter().any(|s| s == stable) {
            problems.push(format!("{what}: the stable cycles are a suspect: {suspects:?}"));
        }
        let usable = summary["samples"].as_u64().unwrap_or(0).saturating_sub(left_out.unwrap_or(0));
        if usable >= ENOUGH_TO_JUDGE && suspects.first() != Some(&grower) {
            problems.push(format!("{what}: {usable} usable samples and the leak is not the top suspect: {suspects:?}"));
        }
        problems
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
