"""Target for tests/memory_split.rs: builds a heap of the shape asked for, prints
sys._debugmallocstats() on stderr (pymalloc's own count of its arenas, pools and blocks: the
ground truth), then writes READY and blocks without allocating anything, so that the
allocator's state leakspy reads is the one printed.

    memory_target.py TRUTH quiet        a small heap (the control)
    memory_target.py TRUTH fragmented   1M floats allocated, all but every 100th freed: each
                                        pool keeps a few live blocks, so the arenas stay
    memory_target.py TRUTH dense        the same 1M floats, all kept (the control)
    memory_target.py TRUTH leak         keeps 5,000 more small lists every 0.1 s (up to 2M):
                                        GC-tracked objects and pymalloc's arenas grow together;
                                        prints no statistics

TRUTH is not written: the statistics on stderr are the truth. Python 3.6 to 3.15, standard
library only.
"""
import os
import signal
import sys
import time

mode = sys.argv[2]
keep = None
if mode in ("fragmented", "dense"):
    floats = [float(i) for i in range(1000000)]
    keep = floats[::100] if mode == "fragmented" else floats
    del floats

ready = b"READY\n"
write = os.write
if mode == "leak":
    keep = []
    write(1, ready)
    while True:
        if len(keep) < 2000000:
            keep.extend([[i] for i in range(5000)])
        time.sleep(0.1)

pause = signal.pause
sys._debugmallocstats()
write(1, ready)
while True:
    pause()
