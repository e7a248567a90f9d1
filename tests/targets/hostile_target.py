"""Integration-test target: a process that corrupts its own objects with ctypes the way an
attacker (or a buggy C extension) could, to make a reader from outside do unbounded work.
leakspy must stay bounded in time and memory and report what it could read.

Usage:
    python hostile_target.py TRUTH_PATH MODE OFFSETS_JSON

OFFSETS_JSON holds the struct offsets leakspy uses for this interpreter (the test takes them
from leakspy's own tables), so that the target writes exactly the fields leakspy reads.
MODE is one of:
  huge_lists   20 lists that claim 2**26 items each over an untouched 512 MB mapping;
  fake_keys    300 classes whose namespace dict points at a fake keys object claiming 4M
               entries over an untouched mapping;
  thread_loop  the thread list made circular (the last thread state links to the first);
  frame_loop   a blocked thread's outermost frame linked back to its innermost one;
  not_a_type   one object whose ob_type points at a list, not a type.
Writes the truth {"pid", "mode", "stable": {TYPE: COUNT}, "threads"}, prints READY and
blocks in os.read(0, 1). The collector is disabled first: it would trip over the same
corruption. Python 3.6 compatible; uses ctypes, mmap, threading.
"""

import sys
import os
import gc
import json
import mmap
import ctypes
import threading

N_STABLE = 1000


class LeakspyHostileStable(object):
    def __init__(self, i):
        self.index = i


STABLE = [LeakspyHostileStable(i) for i in range(N_STABLE)]
KEEP = []  # what must stay alive for the corruption to stay in place


def u64(addr):
    return ctypes.c_uint64.from_address(addr)


def untouched_mapping(size):
    """An anonymous mapping nobody writes: its pages are never populated."""
    m = mmap.mmap(-1, size)
    KEEP.append(m)
    view = ctypes.c_char.from_buffer(m)
    KEEP.append(view)
    return ctypes.addressof(view)


def huge_lists(off):
    zero = untouched_mapping(512 << 20)
    for i in range(20):
        victim = [0]
        KEEP.append(victim)
        base = id(victim)
        u64(base + off["list_ob_item"]).value = zero
        u64(base + off["ob_size"]).value = 1 << 26
        u64(base + off["list_ob_item"] + 8).value = 1 << 26  # allocated


def fake_keys(off):
    region = untouched_mapping(256 << 20)
    sample = type("Sample", (object,), {"a": 1, "b": 2})
    KEEP.append(sample)
    real_dict = u64(id(sample) + off["tp_dict"]).value
    real_keys = u64(real_dict + off["ma_keys"]).value
    # The fake keys object: a real header (written: one page populated), lying about its size.
    ctypes.memmove(region, real_keys, off["dk_indices"])
    u64(region + off["dk_nentries"]).value = 1 << 22
    if off.get("dk_size") is not None:
        u64(region + off["dk_size"]).value = 1 << 23
    else:
        ctypes.c_uint8.from_address(region + off["dk_log2_index_bytes"]).value = 25
        ctypes.c_uint8.from_address(region + off["dk_kind"]).value = 1
    for i in range(300):
        cls = type("Crafted%d" % i, (object,), {"x": i})
        KEEP.append(cls)
        dict_addr = u64(id(cls) + off["tp_dict"]).value
        u64(dict_addr + off["ma_keys"]).value = region


def thread_states():
    api = ctypes.pythonapi
    api.PyThreadState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_Head.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    states = []
    t = api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Head())
    while t:
        states.append(t)
        t = api.PyThreadState_Next(t)
    return states


def blocked_threads(n):
    started = threading.Semaphore(0)

    def blocked():
        started.release()
        threading.Event().wait()

    for i in range(n):
        t = threading.Thread(target=blocked, name="blocked-%d" % i)
        t.daemon = True
        t.start()
    for i in range(n):
        started.acquire()


def thread_loop(off):
    blocked_threads(2)
    states = thread_states()
    u64(states[-1] + off["tstate_next"]).value = states[0]


def innermost_frame(off, tstate):
    if off.get("tstate_frame") is not None:
        return u64(tstate + off["tstate_frame"]).value
    if off.get("current_frame") is not None:
        return u64(tstate + off["current_frame"]).value
    cframe = u64(tstate + off["cframe"]).value
    return u64(cframe + off["cframe_current_frame"]).value


def frame_loop(off):
    ident = {}
    ready = threading.Event()

    def looped():
        ident["id"] = threading.get_ident()
        ready.set()
        threading.Event().wait()

    t = threading.Thread(target=looped, name="looped")
    t.daemon = True
    t.start()
    ready.wait()
    # Let the thread block inside wait() before its frames are rewritten.
    import time
    time.sleep(0.2)
    tstate = [s for s in thread_states() if u64(s + off["thread_id"]).value == ident["id"]][0]
    back = off["frame_back"]
    innermost = frame = innermost_frame(off, tstate)
    while u64(frame + back).value:
        frame = u64(frame + back).value
    u64(frame + back).value = innermost


def not_a_type(off):
    victim = LeakspyHostileStable(-2)
    not_a_type_object = [1, 2, 3]
    KEEP.extend([victim, not_a_type_object])
    u64(id(victim) + off["ob_type"]).value = id(not_a_type_object)


def main():
    truth_path, mode, offsets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    gc.disable()
    {"huge_lists": huge_lists, "fake_keys": fake_keys, "thread_loop": thread_loop,
     "frame_loop": frame_loop, "not_a_type": not_a_type}[mode](offsets)
    truth = {
        "pid": os.getpid(),
        "mode": mode,
        "stable": {"__main__.LeakspyHostileStable": N_STABLE},
        "threads": threading.active_count(),
    }
    fd = os.open(truth_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, json.dumps(truth).encode())
    os.close(fd)
    os.rename(truth_path + ".tmp", truth_path)
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
