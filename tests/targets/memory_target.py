"""Target for tests/memory_split.rs: builds a heap of the shape asked for, prints
sys._debugmallocstats() to stderr (pymalloc's own count of its arenas, pools and blocks: the
ground truth), then prints READY and blocks without allocating, so that the allocator's state
leakspy reads is the one printed.

    memory_target.py TRUTH quiet        a small heap
    memory_target.py TRUTH fragmented   1M floats allocated, all but every 100th freed: each
                                        pool keeps a few live blocks, the arenas stay
    memory_target.py TRUTH dense        the same floats, all kept (the control)
    memory_target.py TRUTH native       grows bytearrays over 512 bytes (malloc, not pymalloc)
                                        every 50 ms while objects stay flat
"""
import gc
import os
import signal
import sys
import time

mode = sys.argv[2]
gc.disable()
keep = None
if mode in ("fragmented", "dense"):
    floats = [float(i) for i in range(1000000)]
    keep = floats[::100] if mode == "fragmented" else floats
    del floats
elif mode == "native":
    buffers = [bytearray(1024) for _ in range(64)]

ready = b"READY\n"
write = os.write
pause = signal.pause
if mode == "native":
    sleep = time.sleep
    write(1, ready)
    step = 0
    while True:
        # Each buffer grows in place through realloc: the objects stay the same 64.
        buffers[step % 64].extend(bytes(65536))
        step += 1
        sleep(0.05)
sys._debugmallocstats()
write(1, ready)
while True:
    pause()
