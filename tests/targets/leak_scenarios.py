"""Integration-test target: a "server" that leaks (or does not leak) in a known way.

Usage:
    python leak_scenarios.py TRUTH_PATH SCENARIO

SCENARIO is one of the leak scenarios

    cycles      reference cycles of CycleNode objects pile up because automatic GC is disabled
    cache       a module-level list and dict of CachedResponse objects grow without bound
    files       files are opened (mode "r") and their readers kept in a global list, never
                closed (_io.TextIOWrapper, _io.BufferedReader, _io.FileIO and the text
                decoders grow; see FilesScenario for why not plain open())
    closures    closures capturing a large payload are kept in a global registry
                (function and cell objects grow)
    del_cycles  cycles of Finalizable objects whose __del__ resurrects self into a global list

or one of the controls, which must NOT look like leaks

    churn       heavy churn through a bounded buffer (deque(maxlen=500))
    lru         a bounded LRU cache (2000 entries) that fills during ~1.5 s, then stays full
    sawtooth    a list that grows to ~3000 objects over ~1 s, is cleared, and again

In every scenario the main thread serves "requests" at about 200 per second (time.sleep(0.005)
between requests). Each request creates and drops about 50 unrelated objects (dicts, lists,
tuples, Request instances): that churn is the noise leakspy must see through. In the leak
scenarios each request also leaks 1 to 3 objects of the leaking type (files: a few per
second, see FILES_PER_SECOND).

Before serving, the script writes TRUTH_PATH (atomically: TRUTH_PATH.tmp then rename) as JSON

    {"pid": ..., "scenario": ..., "leaking_types": [...]}

where leaking_types lists the type names that are acceptable answers for leakspy's top leak
suspect, named like leakspy names types (`qualname` for builtins, else `module.qualname`);
it is [] for the controls. Then it prints READY on stdout.

The process ends when its stdin is closed (or receives a byte), and by itself after
MAX_RUNTIME seconds.

Debugging: with LEAKSPY_SCENARIO_DEBUG=1 in the environment, every second (or every N seconds
with LEAKSPY_SCENARIO_DEBUG=N) the script counts GC-tracked objects per type
(gc.get_objects()) and prints to stderr the counts of the scenario's watched types and the
types that grew the most since the first count.

Constraints: Python 3.6 to 3.15 (no f-strings, no walrus, no positional-only parameters),
and only modules of Debian's python3.X-minimal (sys, gc, os, io, codecs, json, threading,
time, collections; all checked present in the sid chroot's python3.13/3.14/3.15).
"""

import sys
import gc
import os
import io
import codecs
import json
import threading
import time
import collections

MAX_RUNTIME = 600.0          # seconds; the process exits by itself after that
REQUEST_SLEEP = 0.005        # between two requests: about 200 requests per second


def debug_interval():
    """LEAKSPY_SCENARIO_DEBUG: unset, empty or 0: no debug output; 1: a report every second;
    any other number: a report every that many seconds (e.g. 0.3, to see sawtooth teeth)."""
    value = os.environ.get("LEAKSPY_SCENARIO_DEBUG", "").strip()
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        seconds = 1.0
    return seconds if seconds > 0 else None


DEBUG_INTERVAL = debug_interval()

# files: keep the number of simultaneously open files well under 400 for the first two
# minutes (3 per second -> 360 after 120 s), and never above FILES_MAX_OPEN. Once that many
# are open, the scenario keeps leaking the _io objects but closes their descriptors.
FILES_PER_SECOND = 3.0
FILES_MAX_OPEN = 390

# closures: each handler captures its own 10 KB payload for the first CLOSURE_OWN_PAYLOADS
# handlers (about 40 MB), then a shared one, so that a target forgotten for ten minutes does
# not eat gigabytes. The GC-tracked objects leaked per handler are the same either way.
CLOSURE_PAYLOAD_SIZE = 10 * 1024
CLOSURE_OWN_PAYLOADS = 4000

LRU_CAPACITY = 2000
LRU_FILL_SECONDS = 1.5
CHURN_BUFFER_LEN = 500
SAWTOOTH_PEAK = 3000
SAWTOOTH_PERIOD = 1.0

USAGE = ("usage: leak_scenarios.py TRUTH_PATH SCENARIO\n"
         "  SCENARIO: cycles cache files closures del_cycles | churn lru sawtooth\n")


def type_name(t):
    """leakspy's naming rule: `qualname` if the module is builtins, else `module.qualname`."""
    module = getattr(t, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return t.__qualname__
    return module + "." + t.__qualname__


# ---------------------------------------------------------------------------------------------
# The unrelated per-request churn, common to every scenario.
# ---------------------------------------------------------------------------------------------

class Request(object):
    """A request object with an instance dict, created and dropped ~10 times per request."""

    def __init__(self, number, path):
        self.number = number
        self.path = path
        self.headers = {"host": "localhost", "x-request": number}
        self.args = [number, path]


def serve_request(number):
    """Creates and drops about 50 tracked objects; returns a small int so work is not elided.

    Nothing here forms a reference cycle: the cycles scenario runs with automatic GC disabled
    and must leak only its CycleNode objects.
    """
    total = 0
    requests = []
    for i in range(10):
        req = Request(number, "/item/%d" % i)          # Request (+ its dict on 3.6-3.10)
        requests.append(req)
        params = {"id": i, "req": req}                 # dict
        values = [i, number, params]                   # list
        pair = (values, params)                        # tuple (tracked: holds containers)
        total += len(pair[0]) + len(req.args)
    del requests[:]
    return total


# ---------------------------------------------------------------------------------------------
# Leak scenarios. Each is a class with `leaking` (the type objects named in the truth) and
# `request(number, elapsed)`, called once per request (elapsed: seconds since READY).
#
# The leaking classes use __slots__: with an instance __dict__, 3.6-3.10 (separate dict
# objects) and 3.14+ (every dict tracked) would leak one `dict` per object as well, and the
# type with the largest growth would be a tie between `dict` and the real culprit.
# ---------------------------------------------------------------------------------------------

class CycleNode(object):
    __slots__ = ("peer", "payload")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


class CyclesScenario(object):
    """Each request builds a ring of 2 or 3 CycleNode objects and drops it; GC is disabled."""

    def __init__(self):
        gc.disable()
        self.leaking = [CycleNode]

    def request(self, number, elapsed):
        size = 2 + (number & 1)
        nodes = [CycleNode(number * 10 + i) for i in range(size)]
        for i in range(size):
            nodes[i].peer = nodes[(i + 1) % size]
        # dropping `nodes` leaves an unreachable ring that only the collector could free


class CachedResponse(object):
    __slots__ = ("key", "body", "status")

    def __init__(self, key, body, status):
        self.key = key
        self.body = body
        self.status = status


RESPONSE_CACHE = {}     # cache: key -> CachedResponse, never evicted
RESPONSE_LOG = []       # cache: every CachedResponse ever served, never trimmed


class CacheScenario(object):
    """Each request caches one response in the dict and logs another in the list."""

    def __init__(self):
        self.leaking = [CachedResponse]

    def request(self, number, elapsed):
        key = "/item/%d" % number
        RESPONSE_CACHE[key] = CachedResponse(key, "body-%d" % number, 200)
        RESPONSE_LOG.append(CachedResponse(key, None, 304))


OPEN_FILES = []         # files: every reader ever opened, never closed
READERS_PER_FILE = 2


class FilesScenario(object):
    """Opens FILES_PER_SECOND files per second (mode "r") and keeps them in OPEN_FILES.

    Each file is opened once (one _io.FileIO, one descriptor) and read through
    READERS_PER_FILE text readers (each a TextIOWrapper over its own BufferedReader over the
    shared FileIO). Why not simply open(path, "r"): on 3.14+ every dict is GC-tracked, and
    open() leaves two instance dicts per file (FileIO.name, TextIOWrapper.mode), so `dict`
    would grow twice as fast as any _io type and be the top suspect. A FileIO keeps one
    dict ({"name": ...}); two readers per file make the _io wrappers grow twice as fast as
    that. Each TextIOWrapper also leaks its decoder(s), at the same rate as the wrappers:
    those are named in the truth as acceptable answers too.
    """

    def __init__(self):
        self.leaking = [io.TextIOWrapper, io.BufferedReader, io.FileIO,
                        codecs.getincrementaldecoder("utf-8"), io.IncrementalNewlineDecoder]
        self.path = os.devnull if os.path.exists(os.devnull) else os.path.abspath(__file__)
        self.opened = 0
        self.open_count = 0

    def request(self, number, elapsed):
        due = int(elapsed * FILES_PER_SECOND) + 1
        while self.opened < due:
            self.opened += 1
            raw = io.FileIO(self.path, "r")
            for _ in range(READERS_PER_FILE):
                OPEN_FILES.append(io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8"))
            if self.open_count >= FILES_MAX_OPEN:
                raw.close()     # the objects still leak; the descriptor does not
            else:
                self.open_count += 1


HANDLER_REGISTRY = []   # closures: every handler ever made, never unregistered
SHARED_PAYLOAD = b"\0" * CLOSURE_PAYLOAD_SIZE


def make_handler(payload, route, request_number):
    """Returns a closure over three variables: one function, three cells (and one tuple)."""

    def handler(extra):
        return len(payload) + len(route) + request_number + extra

    return handler


class ClosuresScenario(object):
    """Each request registers one handler closure capturing a 10 KB payload."""

    def __init__(self):
        self.leaking = [type(make_handler), type(make_handler(b"", "", 0).__closure__[0])]
        self.made = 0

    def request(self, number, elapsed):
        if self.made < CLOSURE_OWN_PAYLOADS:
            payload = bytes(bytearray(CLOSURE_PAYLOAD_SIZE))   # a fresh 10 KB object
        else:
            payload = SHARED_PAYLOAD
        self.made += 1
        HANDLER_REGISTRY.append(make_handler(payload, "/item/%d" % number, number))


RESURRECTED = []        # del_cycles: where Finalizable.__del__ puts self back


class Finalizable(object):
    __slots__ = ("peer", "number")

    def __init__(self, number):
        self.peer = None
        self.number = number

    def __del__(self):
        # Run by the collector (PEP 442, 3.4+) when the cycle is found unreachable: the object
        # resurrects itself, so the collector cannot free the cycle, and since __del__ runs
        # only once per object it never will.
        RESURRECTED.append(self)


class DelCyclesScenario(object):
    """Each request drops a ring of 2 or 3 Finalizable objects; GC stays enabled."""

    def __init__(self):
        gc.enable()
        self.leaking = [Finalizable]

    def request(self, number, elapsed):
        size = 2 + (number & 1)
        objs = [Finalizable(number * 10 + i) for i in range(size)]
        for i in range(size):
            objs[i].peer = objs[(i + 1) % size]


# ---------------------------------------------------------------------------------------------
# Controls: lots of allocation, bounded (or periodically reset) working sets. `leaking` is
# empty; `watch` names the types the debug output follows.
# ---------------------------------------------------------------------------------------------

class ChurnItem(object):
    __slots__ = ("number", "data")

    def __init__(self, number, data):
        self.number = number
        self.data = data


class ChurnScenario(object):
    """20 items per request through a deque(maxlen=500): the buffer is full within 0.2 s."""

    def __init__(self):
        self.leaking = []
        self.watch = [ChurnItem]
        self.buffer = collections.deque(maxlen=CHURN_BUFFER_LEN)

    def request(self, number, elapsed):
        for i in range(20):
            self.buffer.append(ChurnItem(number, [i, number]))


class LruEntry(object):
    __slots__ = ("key", "value")

    def __init__(self, key, value):
        self.key = key
        self.value = value


class LruScenario(object):
    """An LRU cache of LRU_CAPACITY entries, full after LRU_FILL_SECONDS, then evicting."""

    def __init__(self):
        self.leaking = []
        self.watch = [LruEntry]
        self.cache = collections.OrderedDict()
        self.next_key = 0

    def put(self, value):
        key = self.next_key
        self.next_key += 1
        self.cache[key] = LruEntry(key, value)
        while len(self.cache) > LRU_CAPACITY:
            self.cache.popitem(last=False)

    def request(self, number, elapsed):
        # Filling: insert enough to follow a straight line to LRU_CAPACITY at LRU_FILL_SECONDS
        # whatever the request rate. Full: 3 misses (insert + evict) and one hit per request.
        if elapsed < LRU_FILL_SECONDS:
            due = min(LRU_CAPACITY, int(LRU_CAPACITY * elapsed / LRU_FILL_SECONDS) + 1)
            while self.next_key < due:
                self.put(["value", self.next_key])
        else:
            for _ in range(3):
                self.put(["value", self.next_key])
        if self.cache:
            hit = self.next_key - 1 - (number * 7919) % len(self.cache)
            entry = self.cache.get(hit)
            if entry is not None:
                self.cache.move_to_end(hit)


class SawtoothItem(object):
    __slots__ = ("number", "data")

    def __init__(self, number, data):
        self.number = number
        self.data = data


class SawtoothScenario(object):
    """A list following SAWTOOTH_PEAK * (phase within SAWTOOTH_PERIOD), cleared every period."""

    def __init__(self):
        self.leaking = []
        self.watch = [SawtoothItem]
        self.items = []
        self.period = 0

    def request(self, number, elapsed):
        period = int(elapsed / SAWTOOTH_PERIOD)
        if period != self.period:
            self.period = period
            del self.items[:]
        phase = elapsed / SAWTOOTH_PERIOD - period
        due = min(SAWTOOTH_PEAK, int(SAWTOOTH_PEAK * phase) + 1)
        while len(self.items) < due:
            self.items.append(SawtoothItem(len(self.items), (number, [number])))


SCENARIOS = {
    "cycles": CyclesScenario,
    "cache": CacheScenario,
    "files": FilesScenario,
    "closures": ClosuresScenario,
    "del_cycles": DelCyclesScenario,
    "churn": ChurnScenario,
    "lru": LruScenario,
    "sawtooth": SawtoothScenario,
}


# ---------------------------------------------------------------------------------------------
# Plumbing.
# ---------------------------------------------------------------------------------------------

def write_file_atomically(path, data):
    """Writes bytes to path + ".tmp" with raw fds, then renames it to path."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def watch_stdin():
    """Daemon thread: the process ends as soon as stdin is closed (or has a byte)."""
    try:
        os.read(0, 1)
    except OSError:
        pass
    os._exit(0)


class DebugCounter(object):
    """LEAKSPY_SCENARIO_DEBUG: per-type census of GC-tracked objects, printed every second."""

    def __init__(self, scenario_name, watched):
        self.scenario_name = scenario_name
        self.watched = [type_name(t) for t in watched]
        self.baseline = None
        self.names = {}

    def census(self):
        counts = {}
        names = self.names
        for obj in gc.get_objects():
            t = type(obj)
            name = names.get(t)
            if name is None:
                name = names[t] = type_name(t)
            counts[name] = counts.get(name, 0) + 1
        return counts

    def report(self, elapsed, requests):
        counts = self.census()
        if self.baseline is None:
            self.baseline = counts
        growth = sorted(((n - self.baseline.get(name, 0), name) for name, n in counts.items()),
                        reverse=True)[:4]
        line = "[%s %s] t=%5.1f req=%6d | %s | top growth: %s\n" % (
            self.scenario_name, sys.version.split()[0], elapsed, requests,
            " ".join("%s=%d" % (name, counts.get(name, 0)) for name in self.watched),
            " ".join("%s%+d" % (name, d) for d, name in growth))
        sys.stderr.write(line)
        sys.stderr.flush()


def main(argv):
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        sys.stderr.write(USAGE)
        return 2
    truth_path, scenario_name = argv
    scenario = SCENARIOS[scenario_name]()

    truth = {
        "pid": os.getpid(),
        "scenario": scenario_name,
        "leaking_types": [type_name(t) for t in scenario.leaking],
    }
    write_file_atomically(truth_path, json.dumps(truth).encode("utf-8"))

    watcher = threading.Thread(target=watch_stdin, name="stdin-watcher")
    watcher.daemon = True
    watcher.start()

    debug = None
    if DEBUG_INTERVAL is not None:
        debug = DebugCounter(scenario_name, scenario.leaking or scenario.watch)

    os.write(1, b"READY\n")

    start = time.monotonic()
    next_report = 0.0
    number = 0
    checksum = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= MAX_RUNTIME:
            break
        checksum += serve_request(number)
        scenario.request(number, elapsed)
        number += 1
        if debug is not None and elapsed >= next_report:
            debug.report(elapsed, number)
            next_report += DEBUG_INTERVAL
        time.sleep(REQUEST_SLEEP)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
