"""Integration-test target: a "server" that leaks through a real library from PyPI (or does
not leak, for the controls), with what the leak is according to the target itself.

Usage:
    python library_leaks.py TRUTH_PATH SCENARIO

Leaks (each request leaks one of something, through the library's own API):

    orm          SQLAlchemy: every request adds an Invoice (a mapped class) to a session that
                 is never committed, flushed or expunged (the session's pending set grows).
                 Leaking type: __main__.Invoice; its parts include SQLAlchemy's InstanceState.
    signal       blinker: every request connects the bound method `on_done` of a new
                 RequestTimer to a signal, strongly (weak=False), and never disconnects it.
                 Leaking type: __main__.RequestTimer; its parts include the bound methods
                 (`RequestTimer.on_done`, __self__ a RequestTimer).
    hooks        requests: every request appends a closure (`on_request.<locals>.timed`,
                 capturing `route` and `started`) to a long-lived Session's response hooks.
                 No network traffic: the hooks are only registered. Leaking type: function,
                 named by that closure.
    hooks_bound  requests: every request appends the bound method `record` of one long-lived
                 Audit object to a Session's response hooks (a new bound method object each
                 time). Leaking type: method, named `Audit.record` with __self__ __main__.Audit.
    lru          functools.lru_cache(maxsize=None) on a method: every request makes a new
                 PriceList and asks it for a quote; the cache keeps (self, sku) -> prices, so
                 every PriceList stays alive. Leaking type: __main__.PriceList.
    logging      logging.handlers.BufferingHandler with a capacity never reached: every
                 request logs one line, whose LogRecord the handler keeps. Leaking type:
                 logging.LogRecord.

Controls (the same libraries, bounded; nothing may be called a leak):

    orm_commit   SQLAlchemy: every request adds an Invoice, commits and closes the session.
    lru_bounded  lru_cache(maxsize=256) on the same method: full within 1.5 s, then evicting.
    logging_flush  logging.handlers.MemoryHandler(capacity=200) flushing into a NullHandler.
    signal_weak  blinker: receivers connected weakly (the default), dropped after the request.

In every scenario the main thread serves "requests" at about 200 per second, each making and
dropping some unrelated objects (the churn leakspy must see through).

Before serving, the script writes TRUTH_PATH (atomically) as JSON:

    {"pid", "scenario", "python_version", "libraries": {name: version},
     "leaking_types": [acceptable top suspects, named as leakspy names types],
     "parts": [types that must be listed among the top suspect's parts],
     "function": null or {"qualname", "file", "line", "captures": [names], "self_type"}}

`function` is what a closure or bound-method leak must be named by (read from the objects
themselves: __code__.co_filename, co_firstlineno, __qualname__, co_freevars). Then it prints
READY and serves until its stdin is closed (or MAX_RUNTIME).

Python 3.6+ (no f-strings); the libraries come from tests/requirements.txt.
"""

import sys
import gc
import os
import json
import threading
import time
import functools
import logging
import logging.handlers

MAX_RUNTIME = 600.0
REQUEST_SLEEP = 0.005


def type_name(t):
    module = getattr(t, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return t.__qualname__
    return module + "." + t.__qualname__


def function_truth(func, self_type=None):
    code = func.__code__
    return {
        "qualname": func.__qualname__,
        "file": code.co_filename,
        "line": code.co_firstlineno,
        "captures": list(code.co_freevars),
        "self_type": type_name(self_type) if self_type is not None else None,
    }


class Request(object):
    """Unrelated per-request churn: an instance with a dict, made and dropped."""

    def __init__(self, number, path):
        self.number = number
        self.path = path
        self.headers = {"host": "localhost", "x-request": number}


def serve_request(number):
    total = 0
    for i in range(8):
        req = Request(number, "/item/%d" % i)
        params = {"id": i, "req": req}
        values = [i, number, params]
        total += len(values) + len(req.headers)
    return total


# --- SQLAlchemy -------------------------------------------------------------------------------

# Mapped classes must be defined at module level to be named `__main__.Invoice`; SQLAlchemy is
# imported only by the scenarios that use it.
if len(sys.argv) > 2 and sys.argv[2].startswith("orm"):
    import sqlalchemy
    from sqlalchemy import Column, Integer, String, Float, create_engine
    from sqlalchemy.orm import Session
    try:
        from sqlalchemy.orm import declarative_base
    except ImportError:
        from sqlalchemy.ext.declarative import declarative_base

    Base = declarative_base()

    class Invoice(Base):
        __tablename__ = "invoices"
        id = Column(Integer, primary_key=True)
        customer = Column(String(64))
        amount = Column(Float)


class OrmScenario(object):
    def __init__(self, commit):
        from sqlalchemy.orm.state import InstanceState
        self.Invoice = Invoice
        self.engine = create_engine("sqlite://")
        Base.metadata.create_all(self.engine)
        self.Session = Session
        self.commit = commit
        self.session = Session(self.engine) if not commit else None
        self.libraries = {"sqlalchemy": sqlalchemy.__version__}
        self.leaking = [] if commit else [Invoice]
        self.parts = [] if commit else [InstanceState]
        self.function = None

    def holder(self):
        # The session's pending objects: SQLAlchemy keeps added, uncommitted ones there.
        return None if self.commit else self.session._new

    def request(self, number, elapsed):
        invoice = self.Invoice(customer="customer-%d" % (number % 97), amount=number * 1.5)
        if self.commit:
            session = self.Session(self.engine)
            try:
                session.add(invoice)
                session.commit()
            finally:
                session.close()
        else:
            self.session.add(invoice)


# --- blinker ----------------------------------------------------------------------------------

class RequestTimer(object):
    def __init__(self, number):
        self.number = number
        self.started = time.monotonic()

    def on_done(self, sender, **extra):
        return time.monotonic() - self.started


class SignalScenario(object):
    def __init__(self, weak):
        import blinker
        self.signal = blinker.Namespace().signal("request-finished")
        self.weak = weak
        self.libraries = {"blinker": getattr(blinker, "__version__", "?")}
        self.leaking = [] if weak else [RequestTimer]
        self.parts = [] if weak else [type(RequestTimer(0).on_done)]
        self.function = None if weak else function_truth(RequestTimer.on_done, RequestTimer)

    def holder(self):
        return None if self.weak else self.signal.receivers

    def request(self, number, elapsed):
        timer = RequestTimer(number)
        self.signal.connect(timer.on_done, weak=self.weak)


# --- requests ---------------------------------------------------------------------------------

def on_request(route, started):
    def timed(response, *args, **kwargs):
        response.elapsed_ms = (time.monotonic() - started) * 1000.0
        response.route = route
        return response
    return timed


class Audit(object):
    def __init__(self):
        self.seen = 0

    def record(self, response, *args, **kwargs):
        self.seen += 1
        return response


class HooksScenario(object):
    def __init__(self, bound):
        import requests
        self.session = requests.Session()
        self.libraries = {"requests": requests.__version__}
        self.bound = bound
        self.audit = Audit()
        self.parts = []
        if bound:
            self.leaking = [type(self.audit.record)]
            self.function = function_truth(Audit.record, Audit)
        else:
            self.leaking = [type(on_request)]
            self.function = function_truth(on_request("/", 0.0))

    def holder(self):
        return self.session.hooks["response"]

    def request(self, number, elapsed):
        if self.bound:
            self.session.hooks["response"].append(self.audit.record)
        else:
            self.session.hooks["response"].append(on_request("/item/%d" % number, time.monotonic()))


# --- functools.lru_cache ----------------------------------------------------------------------

class PriceList(object):
    def __init__(self, region):
        self.region = region
        self.currency = "EUR"

    def quote(self, sku):
        return [sku, len(self.region) * 1.25, self.currency]


class LruScenario(object):
    def __init__(self, maxsize):
        self.libraries = {}
        PriceList.quote = functools.lru_cache(maxsize=maxsize)(PriceList.quote)
        self.leaking = [] if maxsize else [PriceList]
        self.parts = []
        self.function = None
        self.maxsize = maxsize

    def holder(self):
        # The cache's own dict, which Python code cannot name: the wrapper's referent that is
        # not its __dict__.
        wrapper = PriceList.quote
        if self.maxsize:
            return None
        return next(r for r in gc.get_referents(wrapper) if type(r) is dict and r is not wrapper.__dict__)

    def request(self, number, elapsed):
        prices = PriceList("region-%d" % (number % 13))
        prices.quote("sku-%d" % (number % 7))


# --- logging ----------------------------------------------------------------------------------

class LoggingScenario(object):
    def __init__(self, flush):
        self.libraries = {}
        self.logger = logging.getLogger("app.requests")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        if flush:
            handler = logging.handlers.MemoryHandler(200, flushLevel=logging.CRITICAL,
                                                     target=logging.NullHandler())
        else:
            handler = logging.handlers.BufferingHandler(10 ** 9)
        self.logger.addHandler(handler)
        self.leaking = [] if flush else [logging.LogRecord]
        self.parts = []
        self.function = None
        self.flush = flush

    def holder(self):
        return None if self.flush else self.logger.handlers[0].buffer

    def request(self, number, elapsed):
        self.logger.info("served %s in %.3f ms", "/item/%d" % number, elapsed)


SCENARIOS = {
    "orm": lambda: OrmScenario(commit=False),
    "signal": lambda: SignalScenario(weak=False),
    "hooks": lambda: HooksScenario(bound=False),
    "hooks_bound": lambda: HooksScenario(bound=True),
    "lru": lambda: LruScenario(maxsize=None),
    "logging": lambda: LoggingScenario(flush=False),
    "orm_commit": lambda: OrmScenario(commit=True),
    "lru_bounded": lambda: LruScenario(maxsize=256),
    "logging_flush": lambda: LoggingScenario(flush=True),
    "signal_weak": lambda: SignalScenario(weak=True),
}


def holder_truth(holder):
    """The holder's type and address, without keeping a reference to it (a local of main()
    would be a path of its own)."""
    if holder is None:
        return None
    return {"type": type_name(type(holder)), "address": hex(id(holder))}


def write_file_atomically(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def watch_stdin():
    try:
        os.read(0, 1)
    except OSError:
        pass
    os._exit(0)


def main(argv):
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        sys.stderr.write("usage: library_leaks.py TRUTH_PATH SCENARIO (%s)\n" % " ".join(sorted(SCENARIOS)))
        return 2
    truth_path, name = argv
    scenario = SCENARIOS[name]()
    # Warm up: the first requests fill the libraries' own caches (compiled statements,
    # mapper configuration), which is not what the test is about.
    for number in range(20):
        serve_request(number)
    truth = {
        "pid": os.getpid(),
        "scenario": name,
        "python_version": sys.version.split()[0],
        "libraries": scenario.libraries,
        "leaking_types": [type_name(t) for t in scenario.leaking],
        "parts": [type_name(t) for t in scenario.parts],
        "function": scenario.function,
        # The container that holds the leaking objects strongly (where their paths fan out):
        # what `why` must name as their holder.
        "holder": holder_truth(scenario.holder()),
    }
    write_file_atomically(truth_path, json.dumps(truth).encode("utf-8"))
    watcher = threading.Thread(target=watch_stdin, name="stdin-watcher")
    watcher.daemon = True
    watcher.start()
    os.write(1, b"READY\n")
    start = time.monotonic()
    number = 0
    while time.monotonic() - start < MAX_RUNTIME:
        elapsed = time.monotonic() - start
        serve_request(number)
        scenario.request(number, elapsed)
        number += 1
        time.sleep(REQUEST_SLEEP)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
