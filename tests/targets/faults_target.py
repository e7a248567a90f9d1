"""Integration-test target for reads that fail: a quiet heap with a known census and threads
blocked in known functions, so that a test can make chosen reads of it fail (a thread state,
a frame, a type, an object) and check what leakspy makes of the rest.

Usage:
    python faults_target.py TRUTH_PATH

Builds N_STABLE LeakspyFaultStable instances in a global list and N_WORKERS threads, each
blocked in worker() holding N_HELD LeakspyFaultHeld instances in a local. Writes the truth
{"pid", "stable": {TYPE: COUNT}, "held_type", "held_per_worker", "workers",
"stable_type_addr", "stable_addrs"} (addresses as id() gives them), prints READY and blocks
in os.read(0, 1). Python 3.6 compatible; only sys, os, json, threading.
"""

import sys
import os
import json
import threading

N_STABLE = 2000
N_WORKERS = 3
N_HELD = 40


class LeakspyFaultStable(object):
    def __init__(self, i):
        self.index = i


class LeakspyFaultHeld(object):
    pass


STABLE = [LeakspyFaultStable(i) for i in range(N_STABLE)]
started = threading.Semaphore(0)
release = threading.Event()


def worker():
    held = [LeakspyFaultHeld() for _ in range(N_HELD)]  # only this frame holds them
    started.release()
    release.wait()
    return held


def main():
    truth_path = sys.argv[1]
    for i in range(N_WORKERS):
        t = threading.Thread(target=worker, name="leakspy-fault-%d" % i)
        t.daemon = True
        t.start()
    for _ in range(N_WORKERS):
        started.acquire()
    truth = {
        "pid": os.getpid(),
        "stable": {"__main__.LeakspyFaultStable": N_STABLE},
        "held_type": "__main__.LeakspyFaultHeld",
        "held_per_worker": N_HELD,
        "workers": N_WORKERS,
        "stable_type_addr": id(LeakspyFaultStable),
        "stable_addrs": [id(o) for o in STABLE[:10]],
    }
    tmp = truth_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(truth))
    os.rename(tmp, truth_path)
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
