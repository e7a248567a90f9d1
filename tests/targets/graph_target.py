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
HANDLERS = {"on_save": [make_handler(Payload(i)) for i in range(150)]}
# A container whose contents only it holds: it retains itself and them.
BLOBS = [bytes(5000 + i) for i in range(100)]

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
        "__main__.Payload": {"count": 150, "path": M + "['HANDLERS']['on_save'][*].__closure__[0].cell_contents"},
        "__main__.Pinned": {"count": pinned_count, "path": None, "external_refs": pinned_count},
    },
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
os.write(1, b"READY\n")
os.read(0, 1)
os._exit(0)
