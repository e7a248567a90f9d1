"""Integration-test target: objects held in known places, for `leakspy why`.

Usage: python graph_target.py TRUTH_PATH

Each class below is held in exactly one way, so the shortest path from the module globals
(or the absence of one) is known. The truth lists, per class, how many instances there are
and the path leakspy should print (`[*]` stands for the index or key that varies).
"""
import os
import sys
import threading
import json


class Order(object):
    def __init__(self, n):
        self.n = n


class Invoice(object):
    pass


class Record(object):
    def __init__(self, msg):
        self.msg = msg


class Handler(object):
    def __init__(self):
        self.level = 0
        self.buffer = []


class Logger(object):
    def __init__(self, name):
        self.name = name
        self.handlers = [Handler()]


class Plugin(object):
    pass


class Registry(object):
    instances = []


class Local(object):
    pass


class Pinned(object):
    pass


class Item(object):
    pass


class Inventory(object):
    __slots__ = ("items",)


class Pending(object):
    pass


def consumer():
    batch = [Pending() for _ in range(60)]  # held by the suspended generator's frame
    yield len(batch)
    yield batch


class CodecState(object):
    pass


def register_codec():
    """A codec search function that keeps state alive: only the interpreter's codec registry
    (a root outside every module) holds it."""
    import codecs

    states = [CodecState() for _ in range(30)]

    def search(name):
        return None if states else None

    codecs.register(search)


class Payload(object):
    def __init__(self, n):
        self.n = n


def make_handler(payload):
    def handle():
        return payload  # the closure's cell keeps the payload alive

    return handle


REQUESTS = [Order(i) for i in range(3000)]
BY_CUSTOMER = {"c%d" % c: [Invoice() for _ in range(50)] for c in range(4)}
LOG = Logger("svc")
for i in range(700):
    LOG.handlers[0].buffer.append(Record("line %d" % i))
Registry.instances.extend(Plugin() for _ in range(120))
register_codec()
PIPELINE = consumer()
next(PIPELINE)
STOCK = Inventory()
STOCK.items = [Item() for _ in range(80)]
HANDLERS = {"on_save": [make_handler(Payload(i)) for i in range(150)]}
# A container whose contents only it holds: it retains itself and them.
BLOBS = [bytes(5000 + i) for i in range(100)]
# Objects the GC does not track, for the census of everything (`snapshot --all`).
FLOATS = [i + 0.5 for i in range(2000)]
NAMES = ["name-%d" % i for i in range(3000)]
BIG_INTS = [10 ** 30 + i for i in range(1000)]

started = threading.Event()


def worker():
    keep = [Local() for _ in range(250)]  # only this frame holds them
    started.set()
    threading.Event().wait()
    return keep


threading.Thread(target=worker, daemon=True).start()
started.wait()

# Objects kept alive only by a reference taken from C (as a leaking extension would).
pinned_count = 0
try:
    import ctypes

    for _ in range(90):
        p = Pinned()
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(p))
        pinned_count += 1
    del p
except ImportError:
    pass



class Slotted(object):
    __slots__ = ("a", "b")


class Wide(object):
    def __init__(self):
        for k in range(40):
            setattr(self, "attr%d" % k, k)


class DictSub(dict):
    pass


class Point(object):
    def __init__(self, x):
        self.x = x
        self.y = x


def counter():
    yield 1
    yield 2


def sized_objects():
    """Objects of every kind whose sys.getsizeof leakspy computes, grouped by kind."""
    closure = make_handler(1.5)
    started = counter()
    next(started)
    materialized = Point(7)
    materialized.__dict__  # noqa: B018 - makes the instance's dict (3.11+ keep values only)
    shrunk = {i: i for i in range(50)}
    for i in range(40):
        del shrunk[i]
    kinds = {
        "list": [[], [1, 2, 3], list(range(1000)), [x for x in range(37)]],
        "tuple": [(), (1, 2), tuple(range(50)), (None, "x")],
        "dict": [{}, {"a": 1}, {i: i for i in range(100)}, {"k%d" % i: i for i in range(300)},
                 materialized.__dict__, shrunk, DictSub(a=1)],
        "set": [set(), {1, 2, 3}, set(range(100)), frozenset(range(20))],
        "str": ["abc" * 10, u"\u00e9" * 20, u"\u20ac" * 20, u"\U0001F600" * 5, ""],
        "bytes": [b"", b"x" * 100],
        "bytearray": [bytearray(), bytearray(100)],
        "int": [0, 1, 2 ** 100, -(2 ** 70), True],
        "float and complex": [1.5, 1j],
        "function, cell, method": [closure, closure.__closure__[0], LOG.__init__],
        "type": [Order, Wide, int, Slotted],
        "module": [sys],
        "code": [worker.__code__, make_handler.__code__],
        "frame": [sys._getframe()],
        "generator": [started],
        "instances": [Point(1), Slotted(), Wide(), materialized, DictSub()],
    }
    try:
        import collections

        kinds["deque and OrderedDict"] = [collections.deque(range(200)), collections.deque(),
                                          collections.OrderedDict((i, i) for i in range(50))]
    except ImportError:
        pass
    return kinds


SIZED = sized_objects()


class Neighbour(object):
    pass


def named_beside_a_type(classes):
    """Classes whose names' characters fill a pymalloc block, each name followed (nearly
    always) by the item array of a list whose first item is the Neighbour type, the next
    block of the same size. A class's tp_name points at its name's characters: a reader that
    takes the word found there for an object reads a Neighbour (the characters its refcount,
    which 3.14 reads from the low half alone, where they look plausible). Neighbour has no
    instance but these phantoms, so `snapshot --all` must count none."""
    header = sys.getsizeof("") - 1
    alignment = 16 if sys.version_info >= (3, 8) else 8
    block = (header + 8 + alignment - 1) // alignment * alignment
    digits = block - header - 2  # the name's length fills the block with its NUL
    held = []
    for i in range(classes):
        name = ("N%0" + str(digits) + "d") % i
        items = [Neighbour] * (block // 8)
        held.append((type(name, (object,), {}), items))
    return held


NEIGHBOURS = named_beside_a_type(300)


def type_label(t):
    module = getattr(t, "__module__", "builtins")
    qualname = getattr(t, "__qualname__", t.__name__)
    return qualname if module == "builtins" else module + "." + qualname


def reachable_census():
    """Per type: objects, their sys.getsizeof sum, and how many the GC does not track, over
    every tracked object and every untracked one reachable from them (gc.get_referents)."""
    import gc

    per_type = {}
    seen = set()
    stack = gc.get_objects()
    skip = {id(per_type), id(seen), id(stack)}
    while stack:
        o = stack.pop()
        if id(o) in seen or id(o) in skip:
            continue
        seen.add(id(o))
        row = per_type.setdefault(type_label(type(o)), [0, 0, 0])
        tracked = gc.is_tracked(o)
        row[0] += 1
        row[1] += sys.getsizeof(o)
        row[2] += not tracked
        stack.extend(r for r in gc.get_referents(o) if not gc.is_tracked(r))
    return per_type


M = "sys.modules['__main__'].__dict__"
# Threads are named by the kernel's id where the interpreter records it (3.11+).
if sys.version_info >= (3, 11):
    worker_thread = [t.native_id for t in threading.enumerate() if t is not threading.main_thread()][0]
else:
    worker_thread = [t.ident for t in threading.enumerate() if t is not threading.main_thread()][0]
code = worker.__code__
FRAME = "<frame worker() of thread %d (%s:%d)>" % (worker_thread, code.co_filename, code.co_firstlineno)
truth = {
    "pid": os.getpid(),
    "classes": {
        "__main__.Order": {"count": 3000, "path": M + "['REQUESTS'][*]"},
        "__main__.Invoice": {"count": 200, "path": M + "['BY_CUSTOMER'][*][*]"},
        "__main__.Record": {"count": 700, "path": M + "['LOG'].handlers[0].buffer[*]"},
        "__main__.Plugin": {"count": 120, "path": M + "['Registry'].instances[*]"},
        "__main__.Local": {"count": 250, "path": FRAME + ".f_locals['keep'][*]"},
        "__main__.Pending": {"count": 60, "path": M + "['PIPELINE'].gi_frame.f_locals['batch'][*]"},
        # encodings' search function is registered first, at start-up.
        "__main__.CodecState": {"count": 30, "path": "<interpreter 0 codec_search_path>[1].__closure__[0].cell_contents[*]"},
        "__main__.Item": {"count": 80, "path": M + "['STOCK'].items[*]"},
        "__main__.Payload": {"count": 150, "path": M + "['HANDLERS']['on_save'][*].__closure__[0].cell_contents"},
        "__main__.Pinned": {"count": pinned_count, "path": None, "external_refs": pinned_count},
    },
    "census": reachable_census(),
    "sizes": {kind: {"addresses": ["%#x" % id(o) for o in objs], "getsizeof": sum(sys.getsizeof(o) for o in objs)}
              for kind, objs in SIZED.items()},
    "blobs": {
        "address": "%#x" % id(BLOBS),
        "retained_bytes": sys.getsizeof(BLOBS) + sum(sys.getsizeof(b) for b in BLOBS),
    },
}
path = sys.argv[1]
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, json.dumps(truth).encode())
os.close(fd)
os.rename(path + ".tmp", path)
del truth  # the census's rows are not part of the heap it describes
os.write(1, b"READY\n")
os.read(0, 1)
os._exit(0)
