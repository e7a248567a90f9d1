"""Integration-test target: a stable set of objects inside a heap that never stops changing.

Usage:
    python churn_target.py TRUTH_PATH [THREADS]

The process creates a stable set (LeakspyStable instances in a global list, and
LeakspyStableCycle instances linked into reference cycles), then starts THREADS (default 3)
daemon threads that allocate and free objects without pause: lists, dicts, LeakspyChurn
instances, and LeakspyChurnCycle pairs that only the cyclic GC can free, with a low GC
threshold, so that collections run all the time and objects keep moving between the
generation lists. One more thread starts short-lived threads without pause, as
thread-per-request servers, threading.Timer and shrinking thread pools do: thread states are
created, linked, unlinked and freed all the time while leakspy reads the thread list. It writes the truth {"pid", "python_version", "stable": {TYPE: COUNT}},
prints READY on stdout and blocks in os.read(0, 1) in the main thread; it exits as soon as
that returns (a byte on stdin, or stdin closed).

leakspy reads this process while it runs, so its census is not a consistent snapshot: the
tests check that the walk survives the churn (no crash, no endless loop, torn links counted)
and that the stable types, which nothing frees or allocates after READY, are counted exactly.

Python 3.6 compatible. Uses only sys, gc, os, json, time and threading, which the Debian -minimal
interpreters have.
"""

import sys
import gc
import os
import json
import threading
import time

N_STABLE = 5000        # LeakspyStable instances, held by a global list
N_CYCLE_RINGS = 300    # rings of LeakspyStableCycle...
RING_SIZE = 3          # ...of this many nodes; only each ring's first node is held directly
DEFAULT_THREADS = 3


class LeakspyStable(object):
    """Lives from before READY to the exit; nothing else creates or frees instances."""

    def __init__(self, i):
        self.index = i


class LeakspyStableCycle(object):
    """Nodes of reference cycles that stay reachable: the GC traverses them in every full
    collection but must never free them."""

    def __init__(self, i):
        self.index = i
        self.next = None


class LeakspyChurn(object):
    """Allocated and freed by the churn threads (plain refcounting frees them)."""

    def __init__(self, i):
        self.index = i
        self.items = [i]


class LeakspyChurnCycle(object):
    """Allocated in pairs that reference each other: garbage only the cyclic GC frees."""

    def __init__(self):
        self.other = None


STABLE = []
STABLE_CYCLE_HEADS = []


def build_stable():
    for i in range(N_STABLE):
        STABLE.append(LeakspyStable(i))
    for r in range(N_CYCLE_RINGS):
        ring = [LeakspyStableCycle(r * RING_SIZE + k) for k in range(RING_SIZE)]
        for k in range(RING_SIZE):
            ring[k].next = ring[(k + 1) % RING_SIZE]
        # Only the head is held from outside the ring; the other nodes are alive through
        # the cycle alone.
        STABLE_CYCLE_HEADS.append(ring[0])


def count_instances(cls):
    """How many live tracked instances of `cls` there are (a check of our own numbers)."""
    n = 0
    for o in gc.get_objects():
        if type(o) is cls:
            n += 1
    return n


def churn():
    """Allocates and frees without pause, forever. Each round makes garbage of every kind:
    objects freed by refcounting (lists, dicts, LeakspyChurn) and cycles that wait for the
    GC (LeakspyChurnCycle pairs, a self-referencing list)."""
    n = 0
    while True:
        batch = [LeakspyChurn(n + k) for k in range(40)]
        table = {}
        for k in range(20):
            table[k] = [k, n]
        a = LeakspyChurnCycle()
        b = LeakspyChurnCycle()
        a.other = b
        b.other = a
        loop = []
        loop.append(loop)
        del batch, table, a, b, loop
        n += 1


def short_lived(n):
    """A thread's whole life: a little work, a short wait (as a request's I/O would), then
    exit (its thread state is unlinked and freed)."""
    scratch = [LeakspyChurn(n + k) for k in range(5)]
    time.sleep(0.002)
    del scratch


def spawn_threads():
    """Starts threads that exit at once, forever, a few alive at any time: the thread list
    changes under every read of it."""
    n = 0
    alive = []
    while True:
        t = threading.Thread(target=short_lived, args=(n,))
        t.daemon = True
        t.start()
        alive.append(t)
        if len(alive) >= 16:
            alive.pop(0).join()
        n += 1


def write_file_atomically(path, data):
    """Writes via a temporary name and a rename, with raw fds: no io objects are created,
    and a reader never sees a half-written truth."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2) or (len(args) == 2 and not args[1].isdigit()):
        os.write(2, b"usage: churn_target.py TRUTH_PATH [THREADS]\n")
        sys.exit(2)
    truth_path = args[0]
    threads = int(args[1]) if len(args) == 2 else DEFAULT_THREADS

    build_stable()
    gc.collect()
    stable = {
        "__main__.LeakspyStable": N_STABLE,
        "__main__.LeakspyStableCycle": N_CYCLE_RINGS * RING_SIZE,
    }
    # The truth is what we built; check that the interpreter agrees before anything churns.
    for cls in (LeakspyStable, LeakspyStableCycle):
        name = "__main__." + cls.__qualname__
        if count_instances(cls) != stable[name]:
            os.write(2, ("churn_target.py: %s: %d alive, %d built\n"
                         % (name, count_instances(cls), stable[name])).encode())
            sys.exit(3)

    # Collections as often as possible: generation 0 after every 100 net allocations, and
    # the older generations after a few of the younger ones.
    gc.set_threshold(100, 5, 5)
    for i in range(threads):
        t = threading.Thread(target=churn, name="leakspy-churn-%d" % i)
        t.daemon = True  # the process exits without waiting for them
        t.start()
    spawner = threading.Thread(target=spawn_threads, name="leakspy-spawner")
    spawner.daemon = True
    spawner.start()

    truth = {
        "pid": os.getpid(),
        "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "threads": threads,
        "stable": stable,
    }
    write_file_atomically(truth_path, (json.dumps(truth, sort_keys=True) + "\n").encode())
    os.write(1, b"READY\n")
    # Block on stdin with a raw read (sys.stdin would create io objects on first use); the
    # read releases the GIL, so the churn threads run all the time we block.
    os.read(0, 1)
    # Exit at once: finalizing the interpreter under running daemon threads is slow at best.
    os._exit(0)


if __name__ == "__main__":
    main()
