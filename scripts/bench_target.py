# Benchmark target for scripts/bench.py. Runs under every interpreter from 3.6 to 3.15, so it is
# Python 3.6-compatible and imports only sys, gc, os, time, json (present in every build,
# including the minimal Debian chroot).
#
#   bench_target.py N [R]   build about N GC-tracked objects, time an in-process census and an
#                           in-process graph (gc.get_referents of every object) R times each,
#                           print {"census_s": median, "referents_s": median, ...} on one line,
#                           block on stdin.
#   bench_target.py --cpu [N]  build N resident objects (default 0), then a CPU-bound loop that
#                           prints {"ops_per_s": ...} for every 1-second window until stdin closes.
import gc
import json
import os
import sys
import time


class Slotted(object):
    # __slots__ instances are always GC-tracked (they can hold references) and have no __dict__,
    # so each one adds exactly one tracked object.
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


def build(n):
    """About n tracked objects in total, counting what the interpreter already tracks."""
    shared = []  # one list that tuples and dicts point to, so they stay tracked
    keep = [shared]
    todo = max(0, n - len(gc.get_objects()) - 2)
    for i in range(todo):
        k = i & 3
        if k == 0:
            keep.append(Slotted(i, None))
        elif k == 1:
            keep.append([i])  # lists are always tracked
        elif k == 2:
            keep.append({"v": i, "l": shared})  # a dict of atoms only would be untracked
        else:
            keep.append((i, shared))  # a tuple of atoms only gets untracked by the GC
    return keep


def census():
    """What in-process tools do: one pass over gc.get_objects(), grouped by qualified type name."""
    counts = {}
    for o in gc.get_objects():
        t = type(o)
        key = "%s.%s" % (t.__module__, t.__qualname__)
        counts[key] = counts.get(key, 0) + 1
    return counts


def referents():
    """The in-process heap graph objgraph-like tools build: every tracked object's referents."""
    edges = 0
    for o in gc.get_objects():
        edges += len(gc.get_referents(o))
    return edges


def median_time(fn, passes):
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def stdin_closed():
    """Non-blocking check: the parent closed our stdin (or died), so we should exit."""
    try:
        os.read(0, 1)  # b"" at end of file; a byte also means "stop"
        return True
    except BlockingIOError:
        return False


def emit(obj):
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        os._exit(0)  # nobody listens any more: leave quietly


def cpu_loop():
    os.set_blocking(0, False)
    ops, start = 0, time.monotonic()
    while True:
        # One batch: pure Python arithmetic plus small short-lived allocations (which also
        # drive the generational GC, as a real workload does).
        x = 0
        for i in range(2000):
            x = (x + i * i) % 1000003
            pair = [i, x]
            d = {"i": i}
            x += len(pair) + len(d)
        ops += 2000
        now = time.monotonic()
        if now - start >= 1.0:
            emit({"ops_per_s": ops / (now - start), "t": now})
            if stdin_closed():
                return
            ops, start = 0, time.monotonic()


def main():
    args = sys.argv[1:]
    if args and args[0] == "--cpu":
        keep = build(int(args[1]) if len(args) > 1 else 0)
        cpu_loop()
        del keep
        return
    n = int(args[0])
    passes = int(args[1]) if len(args) > 1 else 3
    gc.disable()  # building millions of objects with the GC on is needlessly slow
    keep = build(n)
    gc.collect()  # leave no garbage for leakspy to count that the census would not
    emit({"census_s": median_time(census, passes), "referents_s": median_time(referents, passes),
          "tracked": len(gc.get_objects()),
          "pid": os.getpid(), "python": sys.version.split()[0]})
    os.read(0, 1)  # block until the benchmark closes our stdin
    del keep


if __name__ == "__main__":
    main()
