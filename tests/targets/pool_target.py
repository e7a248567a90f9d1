"""Integration-test target: a multiprocessing.Pool whose workers leak, as a batch service
keeping a per-task cache in each worker would.

Usage:
    python pool_target.py TRUTH_PATH [MAX_TASKS_PER_CHILD]

Starts a pool of 3 worker processes (the fork start method, on every version: 3.14 defaults
to forkserver, whose workers would see this module as __mp_main__). A feeder thread submits
small batches of tasks without end, about 150 tasks a second; each task keeps an Order in
its worker's module-level list. With MAX_TASKS_PER_CHILD, each worker is replaced after that
many tasks (maxtasksperchild), like a server's --max-requests. Writes the truth {"pid",
"workers", "leaking_type"}, prints READY and blocks in os.read(0, 1); exits when stdin has a
byte or is closed.
"""

import json
import multiprocessing
import os
import sys
import threading
import time
import warnings


class Order(object):
    def __init__(self, number):
        self.number = number
        self.note = "task %d" % number


KEPT = []


def handle(number):
    KEPT.append(Order(number))
    return number


def feed(pool, stop):
    number = 0
    while not stop.is_set():
        pool.map(handle, range(number, number + 15))
        number += 15
        time.sleep(0.1)


def main():
    # Forking while the pool's threads run is what Pool(maxtasksperchild) does on every
    # version; 3.12+ warns about it.
    warnings.simplefilter("ignore", DeprecationWarning)
    max_tasks = int(sys.argv[2]) if len(sys.argv) > 2 else None
    pool = multiprocessing.get_context("fork").Pool(3, maxtasksperchild=max_tasks)
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(pool, stop))
    feeder.daemon = True
    feeder.start()
    truth = {"pid": os.getpid(), "workers": 3, "leaking_type": "__main__.Order"}
    with open(sys.argv[1], "w") as f:
        json.dump(truth, f)
    os.write(1, b"READY\n")
    try:
        os.read(0, 1)
    except KeyboardInterrupt:
        pass
    stop.set()
    pool.terminate()


if __name__ == "__main__":
    main()
