"""Integration-test target: a process whose cyclic collector runs almost all the time.

Usage:
    python collecting_target.py TRUTH_PATH

A daemon thread calls gc.collect() without pause over a heap of reference cycles that stay
reachable (LeakspyKept rings), so a reader from outside nearly always finds a full collection
under way: the collector has moved the objects it examines from the generation lists to a list
of its own, and a census that walks only the generation lists can miss most of the heap.
Another thread adds one LeakspyGrown instance to a global list every 5 ms: the one leak.

Writes the truth {"pid", "python_version", "stable": {TYPE: COUNT}, "grower": TYPE}, prints
READY and blocks in os.read(0, 1) in the main thread. Python 3.6 compatible.
"""

import gc
import json
import os
import sys
import threading
import time

RINGS = 20000
RING_SIZE = 3


class LeakspyKept(object):
    """Nodes of reachable cycles: every full collection traverses them, none frees them."""

    def __init__(self):
        self.next = None


class LeakspyGrown(object):
    pass


KEPT = []
GROWN = []


def collect_forever():
    while True:
        gc.collect()


def grow():
    while True:
        GROWN.append(LeakspyGrown())
        time.sleep(0.005)


def main():
    for _ in range(RINGS):
        ring = [LeakspyKept() for _ in range(RING_SIZE)]
        for a, b in zip(ring, ring[1:] + ring[:1]):
            a.next = b
        KEPT.append(ring[0])
    truth = {
        "pid": os.getpid(),
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "stable": {"__main__.LeakspyKept": RINGS * RING_SIZE},
        "grower": "__main__.LeakspyGrown",
    }
    with open(sys.argv[1], "w") as f:
        json.dump(truth, f)
    for target in (collect_forever, grow):
        t = threading.Thread(target=target)
        t.daemon = True
        t.start()
    os.write(1, b"READY\n")
    os.read(0, 1)


if __name__ == "__main__":
    main()
