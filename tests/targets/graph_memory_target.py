# -*- coding: utf-8 -*-
"""Integration-test target: a heap of millions of small objects for the heap graph's memory
bound (tests/graph_memory.rs).

Usage:
    python graph_memory_target.py TRUTH_PATH N

Builds N instances of a class with __slots__, each holding a str of its own (not tracked by
the GC) and a float, in one global list: about 3N graph nodes. Writes the truth (N) to
TRUTH_PATH, prints READY and blocks on stdin.
"""

import json
import os
import sys


class Node(object):
    __slots__ = ("name", "weight")

    def __init__(self, i):
        self.name = "node-%d" % i
        self.weight = i * 0.5


def main():
    truth_path, count = sys.argv[1], int(sys.argv[2])
    global NODES
    NODES = [Node(i) for i in range(count)]
    with open(truth_path + ".tmp", "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "count": count}) + "\n")
    os.rename(truth_path + ".tmp", truth_path)
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
