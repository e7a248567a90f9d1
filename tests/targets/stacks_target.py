"""Target for tests/stacks.rs: three threads in known places, then the main thread blocks.

  spinner  runs `spin()`, a pure-Python loop: it holds the GIL
  locked   runs `wait_for_lock()`, blocked in lock.acquire() with a local list `held`
  napper   runs `nap()`, blocked in time.sleep() (a C call)
  main     runs `main_wait()`, blocked in os.read(0, 1)

Truth (written to TRUTH_PATH before READY): {"threads": [{"name", "ident", "native_id" (null
before 3.8), "functions" (code names outermost first, from sys._current_frames() once the
thread is where it blocks), "line" (the marked line it blocks on; for the spinner null and
"lines" the loop's lines)}], "held_size": sys.getsizeof(held), "held_len"}. Exits when stdin
gets a byte or closes. Python 3.6 to 3.15, standard library only.
"""
import json
import os
import sys
import threading
import time

SOURCE = open(__file__).read().splitlines()


def marked(tag):
    return [i + 1 for i, line in enumerate(SOURCE) if line.rstrip().endswith("# " + tag)]


def spin():
    n = 0
    while True:  # SPIN
        n += 1  # SPIN
        if n > 1000000:  # SPIN
            n = 0  # SPIN


def wait_for_lock(lock):
    held = list(range(1000))
    shared["held_size"] = sys.getsizeof(held)
    lock.acquire()  # BLOCK-LOCK
    return held


def nap():
    time.sleep(100000)  # BLOCK-NAP


def main_wait():
    os.read(0, 1)  # BLOCK-MAIN


shared = {}
lock = threading.Lock()
lock.acquire()
workers = {
    "spinner": threading.Thread(target=spin, name="spinner", daemon=True),
    "locked": threading.Thread(target=wait_for_lock, args=(lock,), name="locked", daemon=True),
    "napper": threading.Thread(target=nap, name="napper", daemon=True),
}
for t in workers.values():
    t.start()

expected_line = {"locked": marked("BLOCK-LOCK")[0], "napper": marked("BLOCK-NAP")[0]}
threads = []
for name, t in workers.items():
    # Wait until the thread is where it stays, then read its stack from inside.
    while True:
        frame = sys._current_frames().get(t.ident)
        if frame is not None and (name == "spinner" and frame.f_code.co_name == "spin"
                                  or frame.f_lineno == expected_line.get(name)):
            break
        time.sleep(0.01)
    functions = []
    while frame is not None:
        functions.append(frame.f_code.co_name)
        frame = frame.f_back
    functions.reverse()
    threads.append({
        "name": name,
        "ident": t.ident,
        "native_id": getattr(t, "native_id", None),
        "functions": functions,
        "line": expected_line.get(name),
        "lines": marked("SPIN") if name == "spinner" else None,
    })
threads.append({
    "name": "main",
    "ident": threading.main_thread().ident,
    "native_id": getattr(threading.main_thread(), "native_id", None),
    "functions": ["<module>", "main_wait"],
    "line": marked("BLOCK-MAIN")[0],
    "lines": None,
})
with open(sys.argv[1], "w") as f:
    json.dump({"threads": threads, "held_size": shared["held_size"], "held_len": 1000}, f)
os.write(1, b"READY\n")
main_wait()
