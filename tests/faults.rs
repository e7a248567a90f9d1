//! Fault injection at the memory layer: real targets on every interpreter, read through a
//! memory source that fails or returns garbage on chosen reads (a thread state, a frame, a
//! type, an object, the interpreter), as a running target does when it frees or relinks what
//! leakspy is reading. Each torn read must be retried or skipped and counted, never fail the
//! census; and a difference that lasts in every read (a real layout mismatch) must still be
//! refused as one.

mod common;

use common::*;
use leakspy::cpython::frames::thread_stacks;
use leakspy::cpython::process::{Interpreter as PyInterpreter, PythonProcess};
use leakspy::error::LeakspyError;
use leakspy::heap::census::{Census, take_census};
use leakspy::heap::graph::build;
use leakspy::heap::walk::WalkLimits;
use leakspy::memory::faults::{Fault, FaultKind, FaultyMemory};
use leakspy::memory::live::LiveProcess;

const GARBAGE: FaultKind = FaultKind::Garbage(0x41);

/// A faults target, its interpreter as leakspy finds it, and a clean census to compare with.
struct Setup {
    target: Target,
    process: PythonProcess,
    interp: PyInterpreter,
    clean: Census,
}

impl Setup {
    fn new(interp: &Interpreter) -> Setup {
        let target = Target::start(interp, "faults_target.py", &[]);
        let mut live = LiveProcess::new(target.pid);
        let process = PythonProcess::inspect(target.pid, &mut live).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
        let first = process.interpreters(&mut live).unwrap().interpreters[0].clone();
        let clean = take_census(&process, &mut live, WalkLimits::default()).unwrap();
        assert_eq!(clean.skipped_threads, 0, "{}", interp.label);
        Setup { target, process, interp: first, clean }
    }

    fn faulty(&self, faults: Vec<Fault>) -> FaultyMemory<LiveProcess> {
        FaultyMemory::new(LiveProcess::new(self.target.pid), faults)
    }

    fn census(&self, faults: Vec<Fault>) -> (Census, u64) {
        let mut mem = self.faulty(faults);
        let census = take_census(&self.process, &mut mem, WalkLimits::default())
            .unwrap_or_else(|e| panic!("{}: the census failed: {e}", self.target.label));
        (census, mem.hits)
    }

    /// The worker threads' states (not the main thread's, which 3.12+ keeps inside the
    /// static runtime state).
    fn worker_states(&self) -> Vec<u64> {
        let mut live = LiveProcess::new(self.target.pid);
        let states = self.process.thread_states(&mut live, &self.interp).unwrap().states;
        assert_eq!(states.len() as u64, self.target.truth["workers"].as_u64().unwrap() + 1, "{}", self.target.label);
        // New threads go to the head of the list: the main thread is the last.
        states[..states.len() - 1].to_vec()
    }

    /// Where a thread state's list links and interpreter pointer are (prev, next, interp).
    fn links_of(&self, tstate: u64) -> std::ops::Range<u64> {
        tstate..tstate + self.process.layout.interp.tstate_interp as u64 + 8
    }

    fn stable_count(&self, census: &Census) -> u64 {
        let name = "__main__.LeakspyFaultStable";
        census.types.iter().find(|t| t.name == name).map_or(0, |t| t.count)
    }

    fn n_stable(&self) -> u64 {
        self.target.truth["stable"]["__main__.LeakspyFaultStable"].as_u64().unwrap()
    }
}

#[test]
fn a_thread_state_that_stays_unreadable_is_skipped_and_counted() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let victim = s.worker_states()[1];
        let (census, hits) = s.census(vec![Fault::lasting(s.links_of(victim), FaultKind::Unmapped)]);
        assert!(hits > 0, "{}: the fault was never hit", interp.label);
        assert_eq!(census.skipped_threads, 1, "{}", interp.label);
        assert!(census.threads.len() < s.clean.threads.len(), "{}", interp.label);
        assert_eq!(s.stable_count(&census), s.n_stable(), "{}", interp.label);
        assert_eq!(census.objects_total, s.clean.objects_total, "{}", interp.label);
    }
}

#[test]
fn a_thread_state_torn_for_a_moment_is_read_again() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let faults = s.worker_states().iter().map(|&t| Fault::healing(s.links_of(t), GARBAGE, 1)).collect();
        let (census, hits) = s.census(faults);
        assert!(hits > 0, "{}", interp.label);
        assert_eq!(census.skipped_threads, 0, "{}", interp.label);
        assert_eq!(census.threads.len(), s.clean.threads.len(), "{}", interp.label);
    }
}

#[test]
fn a_frame_that_cannot_be_read_ends_only_its_own_stack() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let mut live = LiveProcess::new(s.target.pid);
        let (clean, _) = thread_stacks(&s.process, &mut live, std::slice::from_ref(&s.interp)).unwrap();
        let workers: Vec<_> = clean.iter().filter(|f| f.function == "worker").collect();
        assert_eq!(
            workers.len(),
            3,
            "{}: frames {:?}",
            interp.label,
            clean.iter().map(|f| &f.function).collect::<Vec<_>>()
        );
        let victim = workers[0];
        let mut mem = s.faulty(vec![Fault::lasting(victim.addr..victim.addr + 0x40, FaultKind::Unmapped)]);
        let (frames, skipped) = thread_stacks(&s.process, &mut mem, std::slice::from_ref(&s.interp))
            .unwrap_or_else(|e| panic!("{}: {e}", interp.label));
        assert_eq!(skipped, 0, "{}", interp.label);
        let of = |frames: &[leakspy::cpython::frames::StackFrame], thread| {
            frames.iter().filter(|f| f.thread == thread).count()
        };
        assert!(of(&frames, victim.thread) < of(&clean, victim.thread), "{}: the torn stack is cut", interp.label);
        for other in workers.iter().skip(1) {
            assert_eq!(of(&frames, other.thread), of(&clean, other.thread), "{}: other stacks intact", interp.label);
        }
        let graph = build(
            &s.process,
            &mut s.faulty(vec![Fault::lasting(victim.addr..victim.addr + 0x40, FaultKind::Unmapped)]),
        );
        assert!(graph.is_ok(), "{}: the heap graph failed: {:?}", interp.label, graph.err());
    }
}

#[test]
fn a_type_that_cannot_be_read_makes_its_objects_unreadable_not_the_census() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let ty = s.target.truth["stable_type_addr"].as_u64().unwrap();
        // Past the type's own object header, which the walk reads as the type is an object too.
        let (census, hits) = s.census(vec![Fault::lasting(ty + 16..ty + 0x200, FaultKind::Unmapped)]);
        assert!(hits > 0, "{}", interp.label);
        assert_eq!(s.stable_count(&census), 0, "{}", interp.label);
        assert_eq!(census.unreadable_objects, s.n_stable(), "{}", interp.label);
        assert_eq!(census.objects_total, s.clean.objects_total - s.n_stable(), "{}", interp.label);
    }
}

#[test]
fn an_object_torn_under_the_walk_is_counted_not_fatal() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let object = s.target.truth["stable_addrs"][5].as_u64().unwrap();
        let gc_head = object - s.process.layout.gc_head.size as u64;
        // Links overwritten (a freed block reused): the object's own header still reads, so it
        // is counted, and the walk goes round the broken link from the other end.
        let (census, _) = s.census(vec![Fault::lasting(gc_head..object, GARBAGE)]);
        assert_eq!(s.stable_count(&census), s.n_stable(), "{}", interp.label);
        assert!(census.torn_links >= 1 && census.broken_lists == 1, "{}: {census:?}", interp.label);
        assert_eq!(census.objects_total, s.clean.objects_total, "{}", interp.label);
        // The whole block gone: that one object is lost, the rest still counted.
        let (census, _) = s.census(vec![Fault::lasting(gc_head..object + 16, FaultKind::Unmapped)]);
        assert_eq!(s.stable_count(&census), s.n_stable() - 1, "{}", interp.label);
        assert!(census.torn_links >= 1, "{}", interp.label);
    }
}

#[test]
fn a_torn_interpreter_read_is_made_again() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let head = s.interp.addr + s.process.layout.interp.threads_head as u64;
        let (census, hits) = s.census(vec![Fault::healing(head..head + 8, FaultKind::Unmapped, 2)]);
        assert!(hits > 0, "{}", interp.label);
        assert_eq!(census.threads.len(), s.clean.threads.len(), "{}", interp.label);
        assert_eq!(census.skipped_interpreters + census.skipped_threads, 0, "{}", interp.label);
    }
}

/// A busy target relinks its youngest generation's list head with every allocation and
/// collection: read wrong in every read, the interpreter is still listed (its older lists
/// link back), where it once made a dump refuse the target as a layout mismatch.
#[test]
fn a_young_list_head_torn_in_every_read_still_lists_the_interpreter() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let mut live = LiveProcess::new(s.target.pid);
        let states = s.process.gc_states(&mut live, std::slice::from_ref(&s.interp)).unwrap();
        let young = states[0].lists[0].head;
        let mut mem = s.faulty(vec![Fault::lasting(young..young + 16, GARBAGE)]);
        let listed = s.process.interpreters(&mut mem).unwrap_or_else(|e| panic!("{}: {e}", interp.label));
        assert_eq!(listed.interpreters[0].addr, s.interp.addr, "{}", interp.label);
        assert_eq!(listed.skipped, 0, "{}", interp.label);
    }
}

#[test]
fn a_layout_that_differs_in_every_read_is_still_refused() {
    for interp in supported_interpreters() {
        let s = Setup::new(&interp);
        let mut live = LiveProcess::new(s.target.pid);
        let all = s.process.thread_states(&mut live, &s.interp).unwrap().states;
        let interp_field = |t: u64| {
            let at = t + s.process.layout.interp.tstate_interp as u64;
            at..at + 8
        };
        // Every thread's interpreter pointer reads wrong every time: what a wrong offset gives.
        let lasting = all.iter().map(|&t| Fault::lasting(interp_field(t), GARBAGE)).collect();
        match PythonProcess::inspect(s.target.pid, &mut s.faulty(lasting)) {
            Err(e @ LeakspyError::LayoutMismatch { .. }) => assert_eq!(e.exit_code(), 7),
            other => panic!("{}: expected a layout mismatch, got {:?}", interp.label, other.map(|p| p.version)),
        }
        // The same, torn only for the first reads: a busy target, not a wrong layout.
        let healing = all.iter().map(|&t| Fault::healing(interp_field(t), GARBAGE, 3)).collect();
        let inspected = PythonProcess::inspect(s.target.pid, &mut s.faulty(healing));
        assert!(inspected.is_ok(), "{}: {:?}", interp.label, inspected.err());
    }
}
