//! Property tests of the decoding layer on corrupted memory: a real target's memory is
//! captured once into an image, then read again and again with random words of it
//! overwritten (the words a clean census and heap graph read, with pointers into the image, small
//! integers, zeros or noise), as a corrupt or hostile target would present them. Every census
//! and heap graph of such an image must end without a panic, within its time bound and with
//! bounded allocations. The budget is fixed (cases per interpreter) so that CI time is too.

mod common;

use common::counting::{Counting, LIVE, PEAK};
use common::image::Image;
use common::*;
use leakspy::cpython::process::PythonProcess;
use leakspy::heap::census::take_census;
use leakspy::heap::graph::build;
use leakspy::heap::walk::WalkLimits;
use leakspy::memory::live::LiveProcess;
use leakspy::memory::{ReadError, RemoteMemory};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

// Counts live and peak heap bytes, so that a case can check what decoding allocated.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes one decoding of a corrupted image may allocate beyond what was live before it: what
/// the clean image needs, twice, plus this margin. A corrupt length must not make leakspy
/// allocate what it claims.
const ALLOCATION_MARGIN: usize = 32 << 20;
const MAX_TIME: Duration = Duration::from_secs(5);
const CASES: u32 = 48;

/// Records the 8-byte-aligned words a clean read touches: where corruption matters.
struct Recording<'a> {
    image: &'a mut Image,
    words: BTreeSet<u64>,
}

impl RemoteMemory for Recording<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        // Large reads (item arrays) are sampled at their start; headers and fields fully.
        let words = (buf.len() as u64).div_ceil(8).min(8);
        for w in 0..words {
            self.words.insert((addr & !7) + 8 * w);
        }
        self.image.read(addr, buf)
    }

    fn changes_under_reads(&self) -> bool {
        false
    }
}

/// What a corrupt word can be: a pointer somewhere into the image (often to another object),
/// a small integer (a length, a flag), a large but not absurd one (a length that makes a
/// reader allocate), zero, all ones, or noise.
fn corrupt_value(pointers: Vec<u64>) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => proptest::sample::select(pointers).prop_flat_map(|p| (0u64..64).prop_map(move |d| p.wrapping_add(d * 8))),
        2 => 0u64..4096,
        2 => (10u32..34).prop_map(|bits| 1u64 << bits),
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn run_cases(interp: &Interpreter) {
    let target = Target::start(interp, "graph_target.py", &[]);
    let mut live = LiveProcess::new(target.pid);
    let mut process = PythonProcess::inspect(target.pid, &mut live).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
    let mut image = Image::capture(target.pid, &process);
    drop(target);
    // The process is gone: nothing may be read from /proc under its PID any more.
    process.pid = i32::MAX;

    let mut recording = Recording { image: &mut image, words: BTreeSet::new() };
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let clean = take_census(&process, &mut recording, WalkLimits::default()).expect("a clean census of the image");
    build(&process, &mut recording).expect("a clean heap graph of the image");
    let max_allocated = 2 * PEAK.load(Ordering::Relaxed).saturating_sub(before) + ALLOCATION_MARGIN;
    let hot: Vec<u64> = recording.words.into_iter().collect();
    assert!(clean.objects_total > 1000 && hot.len() > 1000, "{}: the capture holds a heap", interp.label);
    let pointers: Vec<u64> = hot.iter().copied().step_by(7).collect();
    // Words holding small numbers are where lengths, sizes, counts and flags are: corrupting
    // those is what makes a reader loop or allocate, so half the mutations go there.
    let small: Vec<u64> =
        hot.iter().copied().filter(|&a| image.read_u64(a).is_ok_and(|v| (1..1 << 16).contains(&v))).collect();
    let position = prop_oneof![proptest::sample::select(hot.clone()), proptest::sample::select(small)];
    let mutation = (position, corrupt_value(pointers));
    let strategy = proptest::collection::vec(mutation, 1..200);
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |mutations| {
            let mut corrupt = image.clone();
            for (addr, value) in &mutations {
                corrupt.write_u64(*addr, *value);
            }
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let started = Instant::now();
            let census = take_census(&process, &mut corrupt, WalkLimits::default());
            let graph = build(&process, &mut corrupt);
            let elapsed = started.elapsed();
            let allocated = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            drop((census, graph));
            prop_assert!(elapsed < MAX_TIME, "{}: took {elapsed:?}", interp.label);
            prop_assert!(allocated < max_allocated, "{}: allocated {} MB", interp.label, allocated >> 20);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", interp.label));
    println!(
        "{}: {CASES} corrupted images decoded ({} words that a census and graph read; at most {} MB allocated)",
        interp.label,
        hot.len(),
        max_allocated >> 20
    );
}

#[test]
fn corrupted_memory_never_panics_hangs_or_balloons() {
    for interp in oldest_and_newest() {
        run_cases(&interp);
    }
}
