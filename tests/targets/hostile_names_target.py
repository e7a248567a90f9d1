"""Integration-test target: a process whose names attack the terminal and the shell.

Usage: python hostile_names_target.py TRUTH_PATH MARKER [EXTRA...]

Everything leakspy shows of a process is named by that process. This one names its types
(markup included, for the HTML report),
a module, a function, a file, a dict key, an attribute and a thread with escape sequences
(window title OSC 0, clear screen CSI 2J, clipboard OSC 52, 8-bit C1 CSI/OSC), newlines
and carriage returns that would forge table lines, bidirectional overrides and zero-width
characters, backslashes that would fake escapes, and shell syntax that would run
`touch MARKER` if a suggested command were pasted unquoted. MARKER is a path that must never
be created; EXTRA arguments only make the command line hostile too.

The state, built before READY:
- HOSTILE_TYPES: one class per name (module __main__, one slot), N_INSTANCES
  instances each, held in INSTANCES[name] (a dict keyed by the type's own name), so each
  type's path is sys.modules['__main__'].__dict__['INSTANCES'][<name>][*].
- GROWER: a class whose name combines all the attacks; a daemon thread adds one instance to
  GROWN every GROW_PERIOD seconds (up to MAX_GROWN): the one leak suspect.
- A module named MODULE_NAME registered in sys.modules, with a class Inside (__module__ is
  the module's name) whose instances its global KEEP holds.
- AttrHeld instances held by the attribute ATTR_NAME of the global HOLDER, and KeyHeld
  instances held under the key KEY_NAME of the global dict REG.
- N_CLOSURES closures of a function compiled from HOSTILE_FILE, each with the
  __qualname__ CLOSURE_QUALNAME, held in CLOSURES (leakspy's closures finding).
- A thread whose kernel name (comm) is THREAD_COMM, set from inside it through
  /proc/thread-self/comm or prctl(PR_SET_NAME), with sys.settrace(tracer) where
  tracer.__qualname__ is TRACER_QUALNAME; it runs `worker` (compiled from HOSTILE_FILE),
  whose local `keep` holds the FrameHeld instances, and blocks forever.
- gc.garbage holds one instance of the first hostile type.

Truth: {"pid", "python_version", "marker", "types": [{"name", "shown", "path"}] for the
hostile types, the grower, Inside, AttrHeld and KeyHeld ("shown" is repr(name) without its
quotes, what a terminal must show, or null where repr would quote differently; "path" the
expected path as `why --json` renders it, or null), "grower", "closure_qualname",
"closure_file", "closure_line", "closure_qualname_shown", "closure_file_shown",
"tracer_qualname", "tracer_shown", "thread_comm" (as read back, or null where it could not
be set or read), "thread_comm_shown", "garbage_type"}.

Once built, the process writes the truth JSON to TRUTH_PATH, writes b"READY\\n" to fd 1 and
blocks in os.read(0, 1) in the main thread; it exits as soon as that returns.

Python 3.6 to 3.15; uses only sys, os, gc, json, threading, time and types (ctypes if
/proc/thread-self is missing).
"""

import gc
import json
import os
import sys
import threading
import time
import types

N_INSTANCES = 120
N_CLOSURES = 1500
GROW_PERIOD = 0.005
MAX_GROWN = 200000

TRUTH_PATH = sys.argv[1]
MARKER = sys.argv[2]
SHELL = "$(touch %s)`touch %s`" % (MARKER, MARKER)

HOSTILE_TYPES = [
    "Title\x1b]0;pwned\x07",
    "Clear\x1b[2J\x1b[3J\x1b[H",
    "Clip\x1b]52;c;cHduZWQ=\x07",
    "Forged\n      99,999          99,999  __main__.Innocent",
    "Carriage\rReturn\x1b[K",
    "Evil\u202etxt.exe\u2066x\u2069",
    "Zero\u200bWidth\u200d\ufeff",
    "C1\x9b2J\x9d0;t\x9c",
    "Back\\x1bslash\\",
    "Shell" + SHELL + ";echo;",
    "Quote'\"" + SHELL,
    # Markup for the HTML report: a script element, an attribute broken out of, an entity.
    "Html<script>alert(1)</script>",
    "Attr\"><img src=x onerror=alert(2)>&amp;",
]
GROWER = "Grow\x1b]0;pwned\x07" + SHELL + "'\"\n\u202e\\"
MODULE_NAME = "mod\x1b[31m\u202e\n"
ATTR_NAME = "attr\x1b]0;x\x07\r"
KEY_NAME = "key\x1b[2J\n\u202e\\"
HOSTILE_FILE = "/srv/\x1b]0;file\x07\u202eyp.py"
CLOSURE_QUALNAME = "on\x1b[2Jevent\n\u202e"
TRACER_QUALNAME = "tracer\x1b[5m\u202e"
THREAD_COMM = b"T\x1b]0;pw\x07\n\xe2\x80\xae"   # 12 bytes: the kernel keeps 15

INSTANCES = {}
GROWN = []
CLOSURES = []
REG = {}
THREAD_TRUTH = {}
BLOCK = threading.Lock()
BLOCK.acquire()


def make_class(name, module="__main__"):
    # One slot and no __dict__: the instances are GC-tracked on every version (up to 3.7 a
    # class without a slot or a __dict__ is not) and no dict grows with them.
    return type(name, (object,), {"__slots__": ("ref",), "__module__": module})


class Holder(object):
    pass


class AttrHeld(object):
    __slots__ = ("ref",)


class KeyHeld(object):
    __slots__ = ("ref",)


class FrameHeld(object):
    __slots__ = ("ref",)


HOLDER = Holder()

# Code whose file name is hostile: the closures' factory and the worker thread's body.
SOURCE = """
def make_handler(n):
    def on_event(event):
        return (n, event)
    return on_event


def worker(ready, block, set_name, tracer, make):
    set_name()
    import sys
    sys.settrace(tracer)
    keep = make()
    ready.set()
    block.acquire()
"""
NAMESPACE = {}
exec(compile(SOURCE, HOSTILE_FILE, "exec"), NAMESPACE)


def shown(text):
    """What a terminal must show for `text`: repr() without its quotes, where leakspy's
    escaping and Python's agree (repr quotes with " when the text holds a ')."""
    r = repr(text)
    return r[1:-1] if r[0] == "'" and "'" not in text else None


def tracer(frame, event, arg):
    return None


tracer.__qualname__ = TRACER_QUALNAME


def set_comm():
    """Sets this thread's kernel name; the name as read back, or None."""
    try:
        fd = os.open("/proc/thread-self/comm", os.O_WRONLY)
        try:
            os.write(fd, THREAD_COMM)
        finally:
            os.close(fd)
    except OSError:
        try:
            import ctypes
            ctypes.CDLL(None).prctl(15, ctypes.c_char_p(THREAD_COMM), 0, 0, 0)
        except Exception:
            return None
    try:
        fd = os.open("/proc/thread-self/comm", os.O_RDONLY)
        try:
            return os.read(fd, 64).decode("utf-8").strip()
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError):
        return None


def start_worker():
    ready = threading.Event()

    def set_name():
        THREAD_TRUTH["comm"] = set_comm()

    def make():
        return [FrameHeld() for _ in range(N_INSTANCES)]

    t = threading.Thread(target=NAMESPACE["worker"], args=(ready, BLOCK, set_name, tracer, make))
    t.daemon = True
    t.start()
    if not ready.wait(30):
        os.write(2, b"worker did not start\n")
        os._exit(1)


def grow(grower):
    while len(GROWN) < MAX_GROWN:
        GROWN.append(grower())
        time.sleep(GROW_PERIOD)


def type_truth(name, path):
    return {"name": name, "shown": shown(name), "path": path}


def main():
    truth_types = []
    for name in HOSTILE_TYPES:
        cls = make_class(name)
        INSTANCES[name] = [cls() for _ in range(N_INSTANCES)]
        path = "sys.modules['__main__'].__dict__['INSTANCES'][%s][*]" % repr(name)
        truth_types.append(type_truth("__main__." + name, path if shown(name) is not None else None))
    gc.garbage.append(INSTANCES[HOSTILE_TYPES[0]][0])

    module = types.ModuleType(MODULE_NAME)
    sys.modules[MODULE_NAME] = module
    module.Inside = make_class("Inside", MODULE_NAME)
    module.KEEP = [module.Inside() for _ in range(N_INSTANCES)]
    truth_types.append(type_truth(MODULE_NAME + ".Inside",
                                  "sys.modules[%s].__dict__['KEEP'][*]" % repr(MODULE_NAME)))

    setattr(HOLDER, ATTR_NAME, [AttrHeld() for _ in range(N_INSTANCES)])
    truth_types.append(type_truth("__main__.AttrHeld",
                                  "sys.modules['__main__'].__dict__['HOLDER'].%s[*]" % shown(ATTR_NAME)))
    REG[KEY_NAME] = [KeyHeld() for _ in range(N_INSTANCES)]
    truth_types.append(type_truth("__main__.KeyHeld",
                                  "sys.modules['__main__'].__dict__['REG'][%s][*]" % repr(KEY_NAME)))

    for i in range(N_CLOSURES):
        f = NAMESPACE["make_handler"](i)
        f.__qualname__ = CLOSURE_QUALNAME
        CLOSURES.append(f)

    start_worker()
    grower = make_class(GROWER)
    t = threading.Thread(target=grow, args=(grower,))
    t.daemon = True
    t.start()
    while not GROWN:
        time.sleep(0.001)
    truth_types.append(type_truth("__main__." + GROWER, None))

    truth = {
        "pid": os.getpid(),
        "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "marker": MARKER,
        "types": truth_types,
        "grower": "__main__." + GROWER,
        "closure_qualname": CLOSURE_QUALNAME,
        "closure_file": HOSTILE_FILE,
        "closure_line": CLOSURES[0].__code__.co_firstlineno,
        "closure_qualname_shown": shown(CLOSURE_QUALNAME),
        "closure_file_shown": shown(HOSTILE_FILE),
        "tracer_qualname": TRACER_QUALNAME,
        "tracer_shown": shown(TRACER_QUALNAME),
        "thread_comm": THREAD_TRUTH.get("comm"),
        "thread_comm_shown": shown(THREAD_TRUTH["comm"]) if THREAD_TRUTH.get("comm") else None,
        "garbage_type": "__main__." + HOSTILE_TYPES[0],
    }
    data = json.dumps(truth, sort_keys=True, indent=1).encode("utf-8")
    tmp = TRUTH_PATH + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, TRUTH_PATH)
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
