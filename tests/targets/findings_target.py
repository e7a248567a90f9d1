"""Integration-test target: a Python process showing one known abnormality, with its truth.

Usage:
    python findings_target.py TRUTH_PATH CAUSE

CAUSE is one of:

  gc_disabled  gc.disable(), then 100,000 pairs of CycleNode instances that reference each
               other (200,000 objects) are made and dropped: nothing collects them, and
               gc.get_count()[0] ends far above the gen-0 threshold.
  garbage      gc.set_debug(gc.DEBUG_SAVEALL), 500 two-object cycles of Saved instances are
               dropped and gc.collect() moves them into gc.garbage.
  hooks        two threads besides the main one: "traced" sets sys.settrace(leak_tracer) and
               sys.setprofile(leak_profiler), then blocks on a lock forever; "quiet" just
               blocks. The main thread sets no hook.
  files        300 open(os.devnull, "r") file objects that are never closed, plus 50 opened
               and closed, all kept in the global list FILES.
  sockets      150 socket.socket(AF_INET, SOCK_STREAM) objects, never connected nor closed,
               plus 20 closed ones, all kept in the global list SOCKETS. Exit code 3 if the
               socket module is missing.
  closures     5000 closures made by make_handler(name) (each an inner function on_event
               holding `name` and its own 1 KB bytes), kept in the global dict REGISTRY.
  native       native memory from libc malloc (ctypes), 2 MB every 0.1 s, each block
               memset so that its pages are resident, never freed, and no Python object
               surviving: RSS grows by about 20 MB/s while the GC-tracked objects stay flat.
               Exit code 3 if ctypes is missing. The growth stops (the loop then only
               sleeps) once FINDINGS_NATIVE_CAP_MB (default 4096) MB are allocated, so that a
               target nobody stops cannot eat the machine.
  clean        the control: an ordinary heap of a few thousand dicts, lists and instances,
               GC enabled, no hooks, no files or sockets of ours.

Once its state is built, the process writes the truth JSON to TRUTH_PATH (written to
TRUTH_PATH + ".tmp" with os.open/os.write, then renamed: open()/io would create file
objects), writes b"READY\\n" to fd 1 and blocks in os.read(0, 1) in the main thread; it exits
(status 0) as soon as that returns: a byte on stdin, or stdin closed. For `native` the main
thread keeps allocating and a daemon thread does the os.read(0, 1) and the exit.

Truth: {"pid", "cause", "python_version", "gc_enabled", "gc_threshold", "gc_count", "gc_stats",
"garbage" (len(gc.garbage)), "garbage_types" ({TYPE: count} of gc.garbage), "threads" (one
{"name", "native_id" (null before 3.8), "ident", "trace", "profile"} per Python thread, main
first; trace/profile are the __name__ of the thread's hook function, or null), "open_files",
"closed_files", "open_sockets", "closed_sockets" (counts of the file/socket objects the
script made; the standard streams are not counted), "closures", "closure_qualname",
"closure_file", "closure_line" (of the registered inner function, read from the object; null
unless cause is `closures`)}. TYPE is `t.__qualname__` for builtins types, else
`t.__module__ + "." + t.__qualname__`.

With FINDINGS_TARGET_DEBUG=1 in the environment, `native` prints once a second on stderr
the MB allocated so far, VmRSS (from /proc/self/status, or ru_maxrss where /proc is not
mounted, e.g. in a chroot) and len(gc.get_objects()).

Python 3.6 to 3.15. Uses only sys, os, gc, json, threading and time, plus socket and ctypes
for their own causes (the Debian -minimal interpreters may lack them).
"""

import sys
import os
import gc
import json
import threading
import time

CAUSES = ("gc_disabled", "garbage", "hooks", "files", "sockets", "closures", "native", "clean")

N_CYCLE_PAIRS = 100000      # gc_disabled: 2 * N_CYCLE_PAIRS CycleNode instances
N_SAVED_CYCLES = 500        # garbage: cycles of two Saved instances
N_OPEN_FILES = 300
N_CLOSED_FILES = 50
N_OPEN_SOCKETS = 150
N_CLOSED_SOCKETS = 20
N_CLOSURES = 5000
CLOSURE_PAYLOAD = 1024      # bytes captured by each closure
NATIVE_CHUNK = 2 * 1024 * 1024
NATIVE_PERIOD = 0.1         # seconds between two chunks
NATIVE_DEFAULT_CAP_MB = 4096

# The state of each cause lives in these globals for as long as the process.
FILES = []
SOCKETS = []
REGISTRY = {}
CLEAN_HEAP = []
THREAD_INFO = []            # one truth record per thread, in start order (main first)
BLOCK = threading.Lock()    # acquired once here: the blocked threads wait on it forever
BLOCK.acquire()


class CycleNode(object):
    """gc_disabled: instances live in pairs that only the cyclic GC could free."""

    def __init__(self):
        self.peer = None


class Saved(object):
    """garbage: cycles of these end up in gc.garbage (DEBUG_SAVEALL)."""

    def __init__(self, i):
        self.index = i
        self.peer = None


class Record(object):
    """clean: ordinary instances of an ordinary heap."""

    def __init__(self, i):
        self.index = i
        self.label = "record-%d" % i
        self.tags = [i, i + 1]


def leak_tracer(frame, event, arg):
    """hooks: the trace function of the "traced" thread (global tracing only)."""
    return None


def leak_profiler(frame, event, arg):
    """hooks: the profile function of the "traced" thread."""
    return None


def make_handler(name):
    """closures: returns an inner function holding `name` and its own 1 KB of bytes."""
    payload = name.encode("ascii").ljust(CLOSURE_PAYLOAD, b".")

    def on_event(event):
        return (name, len(payload), event)

    return on_event


def type_name(t):
    if t.__module__ == "builtins":
        return t.__qualname__
    return "%s.%s" % (t.__module__, t.__qualname__)


def hook_name(f):
    if f is None:
        return None
    return getattr(f, "__name__", None) or repr(f)


def native_id():
    get = getattr(threading, "get_native_id", None)   # 3.8+
    return get() if get is not None else None


def thread_record():
    """The truth record of the calling thread, hooks included (read in the thread itself:
    sys.gettrace()/sys.getprofile() only see the current thread)."""
    return {
        "name": threading.current_thread().name,
        "native_id": native_id(),
        "ident": threading.get_ident(),
        "trace": hook_name(sys.gettrace()),
        "profile": hook_name(sys.getprofile()),
    }


def start_thread(name, body):
    """Starts a daemon thread that runs body(ready): body must append the thread's record to
    THREAD_INFO and set `ready`; returns once it has done so."""
    ready = threading.Event()
    t = threading.Thread(target=body, args=(ready,), name=name)
    t.daemon = True
    t.start()
    if not ready.wait(30):
        os.write(2, ("thread %s did not start\n" % name).encode())
        os._exit(1)
    return t


def fail(code, message):
    os.write(2, (message + "\n").encode())
    sys.exit(code)


# ---- the causes: each builds its state; the ones with extra truth return it ----

def build_gc_disabled():
    gc.disable()
    for _ in range(N_CYCLE_PAIRS):
        a = CycleNode()
        b = CycleNode()
        a.peer = b
        b.peer = a
    del a, b
    count, threshold = gc.get_count()[0], gc.get_threshold()[0]
    if count < 10 * max(threshold, 1):
        fail(1, "gc_disabled: gen-0 count %d not far above the threshold %d"
             % (count, threshold))
    return {}


def build_garbage():
    gc.collect()                # whatever was collectable before is not ours: free it
    del gc.garbage[:]
    gc.set_debug(gc.DEBUG_SAVEALL)
    for i in range(N_SAVED_CYCLES):
        a = Saved(2 * i)
        b = Saved(2 * i + 1)
        a.peer = b
        b.peer = a
    del a, b
    gc.collect()
    return {}


def hooks_traced(ready):
    sys.settrace(leak_tracer)
    sys.setprofile(leak_profiler)
    record = thread_record()    # reads the hooks back: they are set before the truth
    if record["trace"] != "leak_tracer" or record["profile"] != "leak_profiler":
        os.write(2, b"traced: hooks not set\n")
        os._exit(1)
    THREAD_INFO.append(record)
    ready.set()
    BLOCK.acquire()             # forever


def hooks_quiet(ready):
    THREAD_INFO.append(thread_record())
    ready.set()
    BLOCK.acquire()             # forever


def build_hooks():
    start_thread("traced", hooks_traced)
    start_thread("quiet", hooks_quiet)
    return {}


def build_files():
    for _ in range(N_OPEN_FILES):
        FILES.append(open(os.devnull, "r"))
    for _ in range(N_CLOSED_FILES):
        f = open(os.devnull, "r")
        f.close()
        FILES.append(f)
    return {
        "open_files": sum(1 for f in FILES if not f.closed),
        "closed_files": sum(1 for f in FILES if f.closed),
    }


def build_sockets():
    try:
        import socket
    except ImportError:
        fail(3, "socket module unavailable")
    for _ in range(N_OPEN_SOCKETS):
        SOCKETS.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    for _ in range(N_CLOSED_SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.close()
        SOCKETS.append(s)
    return {
        "open_sockets": sum(1 for s in SOCKETS if s.fileno() != -1),
        "closed_sockets": sum(1 for s in SOCKETS if s.fileno() == -1),
    }


def build_closures():
    for i in range(N_CLOSURES):
        name = "handler-%d" % i
        REGISTRY[name] = make_handler(name)
    sample = REGISTRY["handler-0"]
    return {
        "closures": len(REGISTRY),
        "closure_qualname": sample.__qualname__,
        "closure_file": sample.__code__.co_filename,
        "closure_line": sample.__code__.co_firstlineno,
    }


def build_clean():
    for i in range(2000):
        CLEAN_HEAP.append(Record(i))
        CLEAN_HEAP.append({"index": i, "name": "item-%d" % i, "values": [i, -i]})
        CLEAN_HEAP.append([i, str(i), (i, i * 2)])
    return {}


def read_stdin_then_exit(ready):
    THREAD_INFO.append(thread_record())
    ready.set()
    os.read(0, 1)
    os._exit(0)


def build_native():
    try:
        import ctypes
    except ImportError:
        fail(3, "ctypes unavailable")
    libc = ctypes.CDLL(None)
    malloc = libc.malloc
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    memset = ctypes.memset
    # One small call of each before the truth, so that whatever ctypes keeps from a first
    # call already exists when the tracked objects are counted.
    p = malloc(64)
    memset(p, 0x5A, 64)
    start_thread("stdin-reader", read_stdin_then_exit)
    return {}, (malloc, memset)


def native_rss_kb():
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY)
    except OSError:
        import resource
        return "maxrss %d kB" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    for line in data.split(b"\n"):
        if line.startswith(b"VmRSS:"):
            return "VmRSS %s" % line.split(b":", 1)[1].strip().decode()
    return "VmRSS ?"


def native_loop(malloc, memset):
    """Runs forever in the main thread: 2 MB of resident native memory every 0.1 s. Only
    ints, floats and ctypes' short-lived call temporaries are created: nothing tracked by the
    GC survives an iteration."""
    debug = bool(os.environ.get("FINDINGS_TARGET_DEBUG"))
    cap = int(os.environ.get("FINDINGS_NATIVE_CAP_MB", NATIVE_DEFAULT_CAP_MB)) * 1024 * 1024
    allocated = 0
    n = 0
    start = time.time()
    while True:
        if allocated + NATIVE_CHUNK <= cap:
            p = malloc(NATIVE_CHUNK)
            if p:
                memset(p, 0x5A, NATIVE_CHUNK)
                allocated += NATIVE_CHUNK
            p = None
        n += 1
        if debug and n % 10 == 0:
            os.write(2, ("native: t=%.1fs allocated=%d MB %s gc_objects=%d\n"
                         % (time.time() - start, allocated // (1024 * 1024), native_rss_kb(),
                            len(gc.get_objects()))).encode())
        delay = start + n * NATIVE_PERIOD - time.time()
        if delay > 0:
            time.sleep(delay)


# ---- truth ----

def write_truth(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def make_truth(cause, extra):
    garbage_types = {}
    for o in gc.garbage:
        name = type_name(type(o))
        garbage_types[name] = garbage_types.get(name, 0) + 1
    threads = list(THREAD_INFO)
    known = set(r["ident"] for r in THREAD_INFO)
    for t in threading.enumerate():         # none expected: threads we did not start
        if t.ident not in known:
            threads.append({"name": t.name, "native_id": getattr(t, "native_id", None),
                            "ident": t.ident, "trace": None, "profile": None})
    truth = {
        "pid": os.getpid(),
        "cause": cause,
        "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "gc_enabled": gc.isenabled(),
        "gc_threshold": list(gc.get_threshold()),
        "garbage": len(gc.garbage),
        "garbage_types": garbage_types,
        "threads": threads,
        "open_files": 0,
        "closed_files": 0,
        "open_sockets": 0,
        "closed_sockets": 0,
        "closures": 0,
        "closure_qualname": None,
        "closure_file": None,
        "closure_line": None,
    }
    truth.update(extra)
    # gc.get_stats(): collections, collected, uncollectable per generation (3.4+).
    truth["gc_stats"] = gc.get_stats()
    truth["gc_count"] = list(gc.get_count())    # last, as close to READY as we can
    return truth


def main():
    args = sys.argv[1:]
    if len(args) != 2 or args[1] not in CAUSES:
        fail(2, "usage: findings_target.py TRUTH_PATH {%s}" % "|".join(CAUSES))
    truth_path, cause = args

    THREAD_INFO.append(thread_record())     # the main thread, which never sets a hook
    native = None
    if cause == "native":
        extra, native = build_native()
    else:
        extra = globals()["build_" + cause]()
    if cause not in ("gc_disabled", "garbage"):
        gc.collect()            # a tidy generation 0 (gc_disabled/garbage built their own)

    truth = make_truth(cause, extra)
    write_truth(truth_path, json.dumps(truth, sort_keys=True, indent=1).encode("utf-8"))
    del truth, extra
    os.write(1, b"READY\n")

    if native is not None:
        native_loop(*native)    # never returns; the stdin-reader thread exits the process
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
