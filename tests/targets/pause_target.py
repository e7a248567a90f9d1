"""Integration-test target for --pause: a process whose writable memory is mostly reserved and
never written, which a copy of whole mappings would pay for in full.

Usage:
    python pause_target.py TRUTH_PATH MODE

MODE:
  threads      300 idle threads, each with its own (mostly untouched) stack;
  reservation  an anonymous mapping of 4 GiB, never written.
Builds N_STABLE LeakspyPauseStable instances, writes the truth {"pid", "mode", "stable"},
prints READY and blocks in os.read(0, 1). Python 3.6 compatible.
"""

import sys
import os
import json
import mmap
import threading

N_STABLE = 3000


class LeakspyPauseStable(object):
    def __init__(self, i):
        self.index = i


STABLE = [LeakspyPauseStable(i) for i in range(N_STABLE)]
KEEP = []


def idle_threads(n):
    started = threading.Semaphore(0)
    release = threading.Event()

    def idle():
        started.release()
        release.wait()

    for i in range(n):
        t = threading.Thread(target=idle, name="idle-%d" % i)
        t.daemon = True
        t.start()
    for i in range(n):
        started.acquire()


def main():
    truth_path, mode = sys.argv[1], sys.argv[2]
    if mode == "threads":
        idle_threads(300)
    elif mode == "reservation":
        KEEP.append(mmap.mmap(-1, 4 << 30))
    truth = {"pid": os.getpid(), "mode": mode, "stable": {"__main__.LeakspyPauseStable": N_STABLE}}
    fd = os.open(truth_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, json.dumps(truth).encode())
    os.close(fd)
    os.rename(truth_path + ".tmp", truth_path)
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
