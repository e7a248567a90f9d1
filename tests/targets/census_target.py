"""Integration-test target: a Python process with a known heap, and its own ground truth.

Usage:
    python census_target.py TRUTH_PATH [--freeze] [--threads]
    python census_target.py [TRUTH_PATH] --selfcheck [--freeze] [--threads]

The process builds a deterministic heap of its own classes, counts every GC-tracked object
per type (with the sum of their true refcounts) using gc.get_objects(), writes that truth as
JSON to TRUTH_PATH, prints READY on stdout and then blocks in os.read(0, 1) until stdin has a
byte or is closed; then it exits. leakspy reads the process from outside while it blocks,
and the tests compare leakspy's census with the truth.

Truth: {"pid", "python_version", "objects_total", "immortal_total", "frozen" (null unless
--freeze), "own_types": [...], "calibration": {...}, "types": {NAME: {"count",
"refcount_sum", "immortal"}}}. NAME is `t.__qualname__` for builtins types, else
`t.__module__ + "." + t.__qualname__`. Immortal objects (3.12+) are counted in `count` and
`immortal` but not in `refcount_sum`.

For the comparison to be exact, the heap that leakspy sees while we block must be exactly the
heap we counted, refcounts included. Everything below that looks odd is there for that:

* The refcounts are read in ONE C-level pass, `list(map(sys.getrefcount, objs))`, evaluated
  inside the argument list of the final `os.read(...)` call in main()'s own frame. At that
  moment the Python stacks are the ones that will be blocked: main()'s frame is live in both
  states, `os.read` is already pushed on its value stack (and stays there during the blocking
  call), and no census frame exists at all. A census done in a helper function would inflate
  the refcounts of that function, of the module's globals dict and builtins dict (frames
  hold them up to 3.10), and of the caller's frame (f_back, 3.6), and on 3.6 the census frame
  itself is a tracked object; none of those corrections is needed here.
* The only references the census itself holds at that moment are the gc.get_objects() list
  and the one item map's iterator holds (both calibrated on probe objects of known refcount,
  see _calibrate) and the reference the map object holds to sys.getrefcount (calibrated too).
* Post-processing runs through operators (`rcs @ census` then `... ^ census`), because the
  right operand of an operator is pushed only after the left one (the measurement) is
  evaluated: nothing census-related sits on the stack while refcounts are measured.
* os.read is called as os.read(*args) with a tuple made before the count: on 3.6, a plain
  call builds a tracked (fd, 1) argument tuple that lives exactly as long as the block.
* Everything the census creates (the get_objects() list, the per-type tallies, the JSON text
  pieces) is created after gc.get_objects() and freed before READY; automatic GC is disabled
  so no collection frees, moves or untracks anything between the count and the block.
* Before the count, gc.collect() runs until the number of tracked objects is stable, and
  then gc.unfreeze() empties the permanent generation, which gc.get_objects() does not list:
  on 3.12, collections move immortal tracked objects there (see prepare()).
* The truth file is written with os.open/os.write/os.close and renamed into place (an
  io/open() file would leave tracked _io objects alive). stdin is read with os.read(0, 1),
  never sys.stdin (whose first use creates lazy objects).
* The census runs twice; the first run is a warm-up whose result is overwritten: some C
  functions keep objects they create on their first call (3.6/3.7: the keyword-name tuples of
  os.open and os.rename), and these must exist before the counted run.

--freeze (3.7+; ignored with a warning on 3.6): half the heap is built, gc.freeze() is called,
the rest is built. The census unfreezes, counts, and freezes again at the very end, when only
the counted objects are alive: then every object is in the permanent generation and `frozen`
(gc.get_freeze_count()) equals `objects_total`.

--threads: a second thread builds LeakspyThreadLocal instances kept in its locals, then blocks
forever on a lock; the census is taken once it is blocked.

--selfcheck: runs the warm-up and then two censuses, each exactly like the real path (same
code; os.read on a pipe that already holds a byte instead of stdin, READY to /dev/null, the
truth to TRUTH_PATH or a scratch file), and exits 1 listing the differences if the second
differs in any count, or in refcount_sum for own_types, or if a consistency check failed:
that proves the census left the heap exactly as it counted it. Exit 0 and one OK line else.

Python 3.6 compatible: no walrus, no match, no positional-only parameters.
"""
# Everything the script needs is imported before the heap is built, so that no import (and
# the objects it creates) happens between the census and the block.
import sys
import gc
import os
import json
import threading
import time

# ---------------------------------------------------------------------------------------------
# Options (hand-parsed: argparse would be one more module to import in the Debian -minimal
# chroot, for four flags).
# ---------------------------------------------------------------------------------------------

USAGE = "usage: census_target.py TRUTH_PATH [--freeze] [--threads] [--selfcheck]\n"


def parse_options(argv):
    """Returns (truth_path or None, freeze, threads, selfcheck)."""
    truth_path = None
    freeze = threads = selfcheck = False
    for arg in argv:
        if arg == "--freeze":
            freeze = True
        elif arg == "--threads":
            threads = True
        elif arg == "--selfcheck":
            selfcheck = True
        elif arg.startswith("-") or truth_path is not None:
            os.write(2, ("census_target.py: unexpected argument %r\n" % arg).encode() + USAGE.encode())
            sys.exit(2)
        else:
            truth_path = arg
    if truth_path is None and not selfcheck:
        os.write(2, USAGE.encode())
        sys.exit(2)
    return truth_path, freeze, threads, selfcheck


# ---------------------------------------------------------------------------------------------
# The known heap. Names are distinctive so that the tests can pick them out of a census.
# All counts are fixed: two runs of the same interpreter build the same heap.
# ---------------------------------------------------------------------------------------------

N_PLAIN = 3000     # LeakspyPlain instances
N_SLOTS = 2500     # LeakspySlots instances
N_NODES = 2000     # LeakspyNode instances, in two rings (reference cycles)
N_CLOSURES = 1500  # inner functions (each with cells) made by a factory
N_LISTS = 1200
N_DICTS = 1100
N_TUPLES = 1000
N_SETS = 900
N_THREAD_LOCAL = 1800  # LeakspyThreadLocal instances, in the second thread's locals


class LeakspyPlain(object):
    """Ordinary instances with attributes (an instance dict on versions that have one)."""

    def __init__(self, i):
        self.index = i
        self.label = "plain-%d" % i
        self.payload = [i, i + 1]  # a tracked object hanging off each instance


class LeakspySlots(object):
    """Instances without a __dict__."""

    __slots__ = ("a", "b", "c")

    def __init__(self, i):
        self.a = i
        self.b = (i, "slots")
        self.c = None


class LeakspyNode(object):
    """Nodes linked into rings: reference cycles, kept alive by a global list."""

    def __init__(self, i):
        self.index = i
        self.next = None
        self.prev = None


class LeakspyThreadLocal(object):
    """Built by the second thread (--threads) and held only by that thread's locals."""

    def __init__(self, i):
        self.index = i


class LeakspyProbe(object):
    """Calibration probe: instances exist only while calibrating, never during the count."""


def leakspy_make_closure(i):
    """A closure factory: each call returns a new function with two cells."""
    captured = [i]

    def leakspy_inner(extra):
        return captured[0] + i + extra

    return leakspy_inner


# The heap, held by module globals so that it is alive from its creation to the exit.
PLAIN = []
SLOTS = []
NODES = []
CLOSURES = []
LISTS = []
DICTS = []
TUPLES = []
SETS = []


def build_heap(part):
    """Builds half `part` (0 or 1) of every kind of object, so --freeze can freeze half."""
    def span(total):
        half = total // 2
        return range(0, half) if part == 0 else range(half, total)

    for i in span(N_PLAIN):
        PLAIN.append(LeakspyPlain(i))
    for i in span(N_SLOTS):
        SLOTS.append(LeakspySlots(i))
    ring = [LeakspyNode(i) for i in span(N_NODES)]
    for k in range(len(ring)):
        ring[k].next = ring[(k + 1) % len(ring)]
        ring[k].prev = ring[k - 1]
    NODES.extend(ring)
    for i in span(N_CLOSURES):
        CLOSURES.append(leakspy_make_closure(i))
    for i in span(N_LISTS):
        LISTS.append([i, str(i), None])
    for i in span(N_DICTS):
        DICTS.append({"key": i, "list": [i]})
    for i in span(N_TUPLES):
        TUPLES.append((i, [i]))  # holds a list, so it stays tracked through collections
    for i in span(N_SETS):
        SETS.append({i, -i - 1})


# ---------------------------------------------------------------------------------------------
# The second thread (--threads).
# ---------------------------------------------------------------------------------------------

THREAD = []  # the threading.Thread object, kept for the process's life


def leakspy_thread_main(ready, blocker):
    # These instances are referenced only from this frame's locals.
    kept = [LeakspyThreadLocal(i) for i in range(N_THREAD_LOCAL)]
    ready.release()
    # `blocker` is held by the main thread and never released: this thread blocks here for
    # the rest of the process's life, so its frames and locals do not change under the census.
    blocker.acquire()
    return kept  # never reached; keeps `kept` obviously used


def start_thread():
    ready = threading.Lock()
    ready.acquire()
    blocker = threading.Lock()
    blocker.acquire()
    t = threading.Thread(target=leakspy_thread_main, args=(ready, blocker), name="leakspy-thread")
    t.daemon = True  # the process must be able to exit while this thread is blocked
    t.start()
    THREAD.append(t)
    ready.acquire()  # the thread has built its objects...
    # ...and is now a few bytecodes away from blocking on `blocker`. It holds the GIL until it
    # blocks (releasing a lock does not drop the GIL), but sleep anyway so that it surely has.
    time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# The census.
# ---------------------------------------------------------------------------------------------

HAS_IMMORTAL = sys.version_info >= (3, 12)
# type's own getset descriptors: the same answer as `t.__module__` / `t.__qualname__`, but
# immune to a metaclass that would redefine those names.
TYPE_MODULE = type.__dict__["__module__"]
TYPE_QUALNAME = type.__dict__["__qualname__"]


def type_name(t):
    """The naming rule shared with leakspy: `qualname` for builtins, else `module.qualname`."""
    qualname = TYPE_QUALNAME.__get__(t, type(t))
    try:
        module = TYPE_MODULE.__get__(t, type(t))
    except AttributeError:
        module = None
    if not isinstance(module, str) or module == "builtins":
        return qualname
    return module + "." + qualname


def is_immortal(raw):
    """3.12+: immortal when the low 32 bits of the refcount, read as an int32, are negative.

    sys.getrefcount() returns the stored refcount unchanged for immortal objects (incref and
    decref skip them): 2**32-1 on 3.12/3.13, 3<<30 on 3.14/3.15 (whose getrefcount returns the
    32-bit count only). Mortal refcounts never come near 2**31.
    """
    return HAS_IMMORTAL and (raw & 0xFFFFFFFF) >= 0x80000000


def write_file_atomically(path, data):
    """Writes `data` to `path` via a temporary name and a rename, with raw fds only."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


class LeakspyCensus(object):
    """State and post-processing of the census; its single instance lives as long as main().

    __slots__ keeps it to one tracked object (no instance dict whose tracking could change).
    """

    __slots__ = ("objs", "freeze", "truth_path", "ready_fd", "read_args", "own_types",
                 "overhead", "func_refs", "text", "texts", "problems")

    def __init__(self, truth_path, freeze, own_types):
        self.objs = None
        self.freeze = freeze
        self.truth_path = truth_path
        self.own_types = own_types  # a tuple of str
        # Set for each round by main(): where READY goes, and os.read's arguments as a tuple
        # made before the count (see main()).
        self.ready_fd = None
        self.read_args = None
        self.overhead = None
        self.func_refs = None
        self.text = None
        self.texts = []  # the JSON text of every round
        self.problems = []  # str: consistency checks that failed

    def prepare(self):
        """Everything before gc.get_objects(): stop automatic GC, collect, calibrate."""
        gc.disable()  # no automatic collection from here on: nothing may move or die
        # Collect until the number of tracked objects no longer changes: it frees garbage
        # (which would be counted, then collected later) and untracks tuples (and, up to 3.12,
        # dicts) that hold only untracked objects. One pass is not enough: a tuple holding a
        # tuple is untracked only by the pass after the one that untracked the inner tuple,
        # if the outer one came first in the list (seen on 3.13 with --freeze).
        previous = -1
        for _ in range(50):
            gc.collect()
            tracked = len(gc.get_objects())
            if tracked == previous:
                break
            previous = tracked
        # gc.get_objects() does not list the permanent generation, so empty it into the
        # oldest one. Not only for --freeze: on 3.12, every collection moves the immortal
        # tracked objects it meets (e.g. the __mro__/__bases__ tuples of static types) into
        # the permanent generation, where leakspy sees them. (3.13+ untracks them instead.)
        # This comes after the collections, which would move them back on 3.12.
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()
        # os.read's argument tuple must not be a tracked object: os.read(*args) holds one more
        # reference to it while blocked than while we count. A tuple of ints is untracked by
        # the collections above.
        if gc.is_tracked(self.read_args):
            raise RuntimeError("census: os.read's argument tuple is still tracked")
        self.overhead, self.func_refs = self._calibrate()

    @staticmethod
    def _calibrate():
        """Measures, instead of assuming, the references the census holds while measuring.

        Returns (overhead, func_refs):
        overhead   what `list(map(sys.getrefcount, objs))` reads above an object's true
                   refcount when `objs` is a list holding the object (the list's reference,
                   the item map's iterator holds during the call, getrefcount's own argument
                   reference if it takes one): measured on probes held by exactly one other
                   list, so their true refcount is 1.
        func_refs  how many references a map object holds on its function: sys.getrefcount
                   is itself a tracked object, measured while the measuring map holds it.
        """
        holder = [LeakspyProbe() for _ in range(64)]  # each probe's only reference: true rc 1
        objs = list(holder)  # plays the part of gc.get_objects()'s list
        seen = set(list(map(sys.getrefcount, objs)))
        seen.update(list(map(sys.getrefcount, objs)))  # twice: the value must be stable
        if len(seen) != 1:
            raise RuntimeError("calibration: probes of equal refcount read as %r" % sorted(seen))
        overhead = seen.pop() - 1
        del objs, holder

        objs = [sys.getrefcount]
        plain = list(map(sys.getrefcount, objs))[0]
        idle = map(sys.getrefcount, ())  # one more map holding the function, never consumed
        extra = list(map(sys.getrefcount, objs))[0]
        del idle
        again = list(map(sys.getrefcount, objs))[0]
        if again != plain or extra <= plain:
            raise RuntimeError("calibration: unstable getrefcount refcount %d/%d/%d" % (plain, extra, again))
        return overhead, extra - plain

    def __rmatmul__(self, rcs):
        """`rcs @ census`: turns the measured refcounts into the truth (everything but
        `frozen`), then frees the get_objects() list. Runs after the measurement, so the
        objects created here are not in it."""
        objs = self.objs
        self.objs = None
        if len(rcs) != len(objs):
            raise RuntimeError("census: %d refcounts for %d objects" % (len(rcs), len(objs)))
        getrefcount = sys.getrefcount
        check_immortal = getattr(sys, "_is_immortal", None)  # 3.14+: cross-check our rule
        overhead = self.overhead
        names = {}  # id(type) -> name; the types are alive (held by objs) while we use ids
        tally = {}  # name -> [count, refcount_sum, immortal]
        immortal_total = 0
        mismatched_immortality = 0
        o = None
        for i in range(len(objs)):
            o = objs[i]
            raw = rcs[i]
            tid = id(type(o))
            name = names.get(tid)
            if name is None:
                name = names[tid] = type_name(type(o))
            entry = tally.get(name)
            if entry is None:
                entry = tally[name] = [0, 0, 0]
            entry[0] += 1
            immortal = is_immortal(raw)
            if check_immortal is not None and check_immortal(o) != immortal:
                mismatched_immortality += 1
            if immortal:
                entry[2] += 1
                immortal_total += 1
            else:
                rc = raw - overhead
                if o is getrefcount:
                    rc -= self.func_refs  # the measuring map's reference to its function
                entry[1] += rc
        del o, objs, rcs
        if mismatched_immortality:
            self.problems.append("%d objects where sys._is_immortal disagrees with the int32 rule"
                                 % mismatched_immortality)
        types = {}
        total = 0
        for name in tally:
            count, rc_sum, immortal = tally[name]
            types[name] = {"count": count, "refcount_sum": rc_sum, "immortal": immortal}
            total += count
        truth = {
            "pid": os.getpid(),
            "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
            "objects_total": total,
            "immortal_total": immortal_total,
            "own_types": list(self.own_types),
            "calibration": {"overhead": overhead, "map_function_refs": self.func_refs},
            "types": types,
        }
        # `frozen` is known only after the final freeze (in __rxor__); it is appended there.
        self.text = json.dumps(truth, sort_keys=True)
        return 0

    def __rxor__(self, _zero):
        """`0 ^ census`: the census's own objects are gone; freeze (--freeze), write the truth,
        say READY. Returns os.read()'s arguments, (fd, 1)."""
        frozen = "null"
        if self.freeze:
            gc.freeze()  # everything alive now is exactly what was counted
            frozen = "%d" % gc.get_freeze_count()
        text = self.text[:-1] + ', "frozen": ' + frozen + "}"
        self.text = None
        self.texts.append(text)
        write_file_atomically(self.truth_path, (text + "\n").encode())
        os.write(self.ready_fd, b"READY\n")
        return self.read_args


# ---------------------------------------------------------------------------------------------
# Self-check: compare two censuses.
# ---------------------------------------------------------------------------------------------

def compare(first_text, second_text):
    """Differences between two truths: any count, refcount sums of our own types, totals."""
    a = json.loads(first_text)
    b = json.loads(second_text)
    diffs = []
    notes = []
    for key in ("objects_total", "immortal_total", "frozen"):
        if a[key] != b[key]:
            diffs.append("%s: %r -> %r" % (key, a[key], b[key]))
    zero = {"count": 0, "refcount_sum": 0, "immortal": 0}
    for name in sorted(set(a["types"]) | set(b["types"])):
        ta = a["types"].get(name, zero)
        tb = b["types"].get(name, zero)
        if ta["count"] != tb["count"] or ta["immortal"] != tb["immortal"]:
            diffs.append("%s: count %d -> %d, immortal %d -> %d"
                         % (name, ta["count"], tb["count"], ta["immortal"], tb["immortal"]))
        elif ta["refcount_sum"] != tb["refcount_sum"]:
            line = "%s: refcount_sum %d -> %d" % (name, ta["refcount_sum"], tb["refcount_sum"])
            (diffs if name in a["own_types"] else notes).append(line)
    return a, diffs, notes


def selfcheck_report(census, threads):
    # texts[0] is the warm-up; texts[1] is what the real path would write; texts[2] counts
    # the heap that texts[1]'s census left behind.
    first, diffs, notes = compare(census.texts[1], census.texts[2])
    _, warmup_diffs, warmup_notes = compare(census.texts[0], census.texts[1])
    problems = list(census.problems)
    if first["frozen"] is not None and first["frozen"] != first["objects_total"]:
        problems.append("frozen %d != objects_total %d" % (first["frozen"], first["objects_total"]))
    for name in first["own_types"]:
        if name not in first["types"]:
            problems.append("own type %s missing from the census" % name)
    expected = {"__main__.LeakspyPlain": N_PLAIN, "__main__.LeakspySlots": N_SLOTS,
                "__main__.LeakspyNode": N_NODES}
    if threads:
        expected["__main__.LeakspyThreadLocal"] = N_THREAD_LOCAL
    for name in expected:
        got = first["types"].get(name, {"count": 0})["count"]
        if got != expected[name]:
            problems.append("%s: counted %d, built %d" % (name, got, expected[name]))
    status = "OK" if not diffs and not problems else "FAIL"
    lines = ["selfcheck %s python %s: objects_total=%d immortal_total=%d frozen=%s "
             "overhead=%d map_function_refs=%d types=%d"
             % (status, first["python_version"], first["objects_total"], first["immortal_total"],
                first["frozen"], first["calibration"]["overhead"],
                first["calibration"]["map_function_refs"], len(first["types"]))]
    lines += ["  DIFF " + d for d in diffs]
    lines += ["  PROBLEM " + p for p in problems]
    lines += ["  note (not an own type) " + n for n in notes]
    lines += ["  warm-up left (expected, before the counted round) " + d
              for d in warmup_diffs + warmup_notes]
    os.write(1, ("\n".join(lines) + "\n").encode())
    return status == "OK"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def main():
    truth_path, freeze, threads, selfcheck = parse_options(sys.argv[1:])
    if freeze and not hasattr(gc, "freeze"):
        os.write(2, b"census_target.py: gc.freeze needs Python 3.7+; --freeze ignored\n")
        freeze = False
    scratch_truth = truth_path is None  # --selfcheck without TRUTH_PATH
    if scratch_truth:
        truth_path = "/tmp/leakspy-selfcheck-%d.json" % os.getpid()

    build_heap(0)
    if freeze:
        gc.freeze()
    build_heap(1)
    own = [LeakspyPlain, LeakspySlots, LeakspyNode, LeakspyCensus]
    if threads:
        start_thread()
        own.append(LeakspyThreadLocal)
    census = LeakspyCensus(truth_path, freeze, tuple(type_name(c) for c in own))
    del own

    # Rounds. Every round runs the same code; only the fds differ. All rounds but the real
    # one read from a pipe that already holds a byte (os.read returns at once) and send READY
    # to /dev/null. The first round is a warm-up: some C functions create objects on their
    # first call and keep them (e.g. on 3.6/3.7 the keyword-name tuples that os.open and
    # os.rename build the first time they parse their arguments); the warm-up makes them
    # exist before the counted round. --selfcheck then runs two more rounds and compares
    # them; the real path runs one, reading stdin and telling READY on stdout.
    rounds = 3 if selfcheck else 2
    feed_r, feed_w = os.pipe()
    os.write(feed_w, b"x" * rounds)
    devnull = os.open(os.devnull, os.O_WRONLY)

    done = 0
    while done < rounds:
        real = not selfcheck and done == rounds - 1
        census.ready_fd = 1 if real else devnull
        census.read_args = (0 if real else feed_r, 1)
        census.prepare()
        census.objs = gc.get_objects()
        # The measurement, the post-processing and the block, in one statement (see the
        # module docstring): `os.read` is pushed first; then the refcounts are read, with no
        # census frame alive; then `@` and `^` hand them to the census object, whose __rxor__
        # writes the truth and READY and returns os.read's argument tuple (fd, 1), passed
        # with * so that the call does not build a new tuple: on 3.6, os.read takes
        # METH_VARARGS and a call with plain arguments would build a tracked (fd, 1) tuple
        # that lives exactly as long as the block.
        os.read(*((list(map(sys.getrefcount, census.objs)) @ census) ^ census))
        done += 1

    if selfcheck:
        ok = selfcheck_report(census, threads)
        if scratch_truth:
            os.unlink(truth_path)
        os._exit(0 if ok else 1)
    # stdin had a byte or was closed: leave at once, without finalizing (a blocked daemon
    # thread and nothing buffered: os._exit is both safe and quick).
    os._exit(0)


if __name__ == "__main__":
    main()
