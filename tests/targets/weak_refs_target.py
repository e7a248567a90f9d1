"""Integration-test target: objects held strongly in one place and weakly in others, and
held by containers that keep their items outside the object, for `leakspy why`.

Usage: python weak_refs_target.py TRUTH_PATH

Each case below is a class whose instances have exactly one strong holder (a list, a deque,
a queue's deque, a WeakKeyDictionary's dict, a numpy object array) and, for some, weak
references beside it (weakref.ref, WeakValueDictionary, WeakSet, a blinker signal's weak
receivers). The truth says, per case, the holder's address and type, how many weak
references point at the instances, and what the holder retains: the bytes of every object
that would go with it, computed here from gc.get_referents (which does not list a weak
reference's referent) and refcounts (an object some other holder also references stays).
numpy arrays are not traversed by the GC: the cases through them give the holder only.

Python 3.6+ (no f-strings). numpy, pandas and blinker are optional: cases through them are
left out (and named in "skipped") where they do not import.
"""
import asyncio
import collections
import gc
import json
import os
import queue
import sys
import weakref
import xml.etree.ElementTree as ElementTree

N = 300


class Payload(object):
    """Holds a list of unique floats and a unique str: memory that goes with its holder."""

    def __init__(self, i):
        self.values = [float(i) + 0.25 * k for k in range(8)]
        self.label = "payload-%d-%s" % (i, "x" * (i % 7))


class Strong(Payload):
    pass


class Cached(Payload):
    pass


class Member(Payload):
    pass


class KeyObj(object):
    pass


class Value(Payload):
    pass


class Job(Payload):
    pass


class Task(Payload):
    pass


class Message(Payload):
    pass


class Row(Payload):
    pass


class Listener(Payload):
    def __call__(self, sender, **kw):
        return None


# A list of weak references to a list's items: the list is the holder, the weak references
# retain nothing.
STRONG = [Strong(i) for i in range(N)]
STRONG_REFS = [weakref.ref(o) for o in STRONG]
# A weak-value cache next to the real store.
STORE = [Cached(i) for i in range(N)]
CACHE = weakref.WeakValueDictionary()
for i, o in enumerate(STORE):
    CACHE["k%d" % i] = o
# A weak set next to the real holder.
MEMBERS = [Member(i) for i in range(N)]
SEEN = weakref.WeakSet(MEMBERS)
# WeakKeyDictionary: keys weak (held by KEYS), values strong (held by the dictionary only).
KEYS = [KeyObj() for _ in range(N)]
ATTACHED = weakref.WeakKeyDictionary()
for i, k in enumerate(KEYS):
    ATTACHED[k] = Value(i)
# Out-of-line containers.
JOBS = collections.deque(Job(i) for i in range(N))
TASKS = queue.Queue()
for i in range(N):
    TASKS.put(Task(i))
LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)
MESSAGES = asyncio.Queue()
for i in range(N):
    MESSAGES.put_nowait(Message(i))
# No loop variable may hold a case's object: it would be a second holder.
del i, o, k

# Children of an Element live in its out-of-line `extra->children` array, which leakspy does
# not decode: they must be reported as held by that Element, not by native code.
class Node(ElementTree.Element):
    pass


TREE = ElementTree.Element("root")
for i in range(N):
    TREE.append(Node("n"))

skipped = []
try:
    import pandas

    FRAME = pandas.DataFrame({"row": [Row(i) for i in range(N)], "n": list(range(N))})
except ImportError:
    FRAME = None
    skipped.append("pandas")
try:
    import blinker

    # A weak event registry (blinker's default) beside the strong holder: the dispatch
    # collection, a deque.
    REQUEST_DONE = blinker.Signal("request-done")
    DISPATCH = collections.deque()
    for i in range(N):
        listener = Listener(i)
        DISPATCH.append(listener)
        REQUEST_DONE.connect(listener)
    del listener, i
except ImportError:
    DISPATCH = None
    skipped.append("blinker")


def count_inside(members):
    """How many references each object gets from the members (a function of its own, so that
    no loop variable outlives it and adds to a refcount)."""
    inside = collections.Counter()
    for o in members.values():
        for r in gc.get_referents(o):
            inside[id(r)] += 1
    return inside


# Classes and modules are held by their modules and sys.modules, never by a case's holder:
# the search does not go through them (a class leads to every module's globals).
OUTSIDE = (type, type(sys))


def retained(holder):
    """The bytes that would be freed if `holder` went: every object reachable from it through
    gc.get_referents whose references all come from inside that set (fixpoint), sizes by
    sys.getsizeof."""
    members = {}
    stack = [holder]
    while stack:
        o = stack.pop()
        if id(o) in members or isinstance(o, OUTSIDE):
            continue
        members[id(o)] = o
        stack.extend(gc.get_referents(o))
    # A fresh object held the same way as the members are held here: its refcount is what
    # this function adds to every member's.
    probe = object()
    members[id(probe)] = probe
    del probe
    changed = True
    while changed:
        changed = False
        inside = count_inside(members)
        base = None
        for key, o in members.items():
            if type(o) is object and not gc.get_referents(o) and key not in inside:
                base = sys.getrefcount(o)
                break
        drop = []
        for key, o in members.items():
            if o is holder or type(o) is object:
                continue
            if sys.getrefcount(o) - base > inside[key]:
                drop.append(key)
        for key in drop:
            del members[key]
            changed = True
        if changed:
            # Drop what only dropped objects reached: recompute from the holder.
            keep = {}
            stack = [holder]
            while stack:
                o = stack.pop()
                if id(o) in keep or id(o) not in members:
                    continue
                keep[id(o)] = o
                stack.extend(gc.get_referents(o))
            for key, o in members.items():
                if type(o) is object and key not in keep:
                    keep[key] = o
            members = keep
    return sum(sys.getsizeof(o) for o in members.values() if type(o) is not object)


def label(t):
    return t.__module__ + "." + t.__qualname__


def case(cls, holder, weak_refs, with_retained=True):
    row = {
        "type": label(cls),
        "count": N,
        "holder": "%#x" % id(holder),
        "holder_type": label(type(holder)) if type(holder).__module__ != "builtins" else type(holder).__name__,
        "weak_refs": weak_refs,
    }
    if with_retained:
        row["retained_bytes"] = retained(holder)
    return row


def owner(array):
    """The array that owns an array's buffer (a view's base, followed)."""
    while array.base is not None and not array.flags.owndata:
        array = array.base
    return array


cases = {
    "weakref": case(Strong, STRONG, N),
    "WeakValueDictionary": case(Cached, STORE, N),
    "WeakSet": case(Member, MEMBERS, N),
    "WeakKeyDictionary values": case(Value, ATTACHED.data, 0),
    "deque": case(Job, JOBS, 0),
    "queue.Queue": case(Task, TASKS.queue, 0),
    "asyncio.Queue": case(Message, MESSAGES._queue, 0),
}
if FRAME is not None:
    column = FRAME["row"].values
    cases["pandas object column"] = case(Row, owner(column), 0, with_retained=False)
    del column
if DISPATCH is not None:
    cases["blinker weak receivers"] = case(Listener, DISPATCH, N)

# 3.12+ keep a static builtin type's namespace per interpreter: the dict behind
# vars(int) must be reachable from a root, not garbage.
opaque = {"type": label(Node), "count": N, "holder": "%#x" % id(TREE), "holder_type": label(type(TREE))}

static_dicts = {"%#x" % id(gc.get_referents(vars(t))[0]): t.__name__ for t in (int, dict, object)}

truth = {"pid": os.getpid(), "cases": cases, "opaque": opaque, "static_dicts": static_dicts, "skipped": skipped}
path = sys.argv[1]
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, json.dumps(truth).encode())
os.close(fd)
os.rename(path + ".tmp", path)
del truth, cases
os.write(1, b"READY\n")
os.read(0, 1)
os._exit(0)
