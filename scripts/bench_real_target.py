# Benchmark target for scripts/bench.py: a heap made by real libraries, as production heaps
# are, instead of objects allocated one after the other. Needs the libraries of
# tests/requirements.txt (scripts/setup.sh installs them into /var/lib/leakspy/libs).
# Python 3.6-compatible.
#
#   bench_real_target.py SCALE [R]   build the heap (SCALE 1 is about 1.1M GC-tracked objects),
#                                    time an in-process census and graph R times each, print one
#                                    JSON line, block on stdin.
#
# The heap: pandas frames with object columns (lists and dicts in cells), an SQLAlchemy ORM
# session holding thousands of mapped objects with relationships, pydantic models, and the
# ast of the standard library's own sources (a parser's tree). Between the parts, objects are
# allocated and freed in a shuffled order, so that what the GC lists link is scattered over
# the arenas as in a long-running service, not laid out in allocation order.
import ast
import gc
import json
import os
import random
import sys
import time

KEEP = []


def shuffle_churn(n, rng):
    """Allocate n small objects, free a random half: later allocations land in the holes."""
    junk = [[i] if i % 2 else {"i": i} for i in range(n)]
    rng.shuffle(junk)
    del junk[: n // 2]
    KEEP.append(junk)


def pandas_part(scale, rng):
    import pandas as pd
    rows = int(60000 * scale)
    frame = pd.DataFrame({
        "id": range(rows),
        "tags": [["t%d" % (i % 7), i] for i in range(rows)],
        "meta": [{"k": i % 13, "v": [i]} for i in range(rows)],
        "name": ["n%d" % i for i in range(rows)],
    })
    KEEP.append(frame)


def orm_part(scale, rng):
    from sqlalchemy import Column, ForeignKey, Integer, String, create_engine
    from sqlalchemy.orm import relationship, sessionmaker
    try:
        from sqlalchemy.orm import declarative_base
    except ImportError:
        from sqlalchemy.ext.declarative import declarative_base
    Base = declarative_base()

    class Customer(Base):
        __tablename__ = "customer"
        id = Column(Integer, primary_key=True)
        name = Column(String)
        orders = relationship("Order", back_populates="customer")

    class Order(Base):
        __tablename__ = "orders"
        id = Column(Integer, primary_key=True)
        customer_id = Column(Integer, ForeignKey("customer.id"))
        note = Column(String)
        customer = relationship("Customer", back_populates="orders")

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = sessionmaker(bind=engine)()
    customers = [Customer(name="c%d" % i) for i in range(int(4000 * scale))]
    for i in range(int(20000 * scale)):
        Order(note="o%d" % i, customer=customers[rng.randrange(len(customers))])
    session.add_all(customers)
    KEEP.append((session, customers))


def pydantic_part(scale, rng):
    from typing import Dict, List
    import pydantic

    class Item(pydantic.BaseModel):
        name: str
        price: float
        tags: List[str]
        attrs: Dict[str, int]

    KEEP.append([Item(name="i%d" % i, price=i * 0.5, tags=["a", "b%d" % (i % 9)], attrs={"n": i})
                 for i in range(int(30000 * scale))])


def ast_part(scale, rng):
    stdlib = os.path.dirname(os.__file__)
    names = sorted(f for f in os.listdir(stdlib) if f.endswith(".py"))
    rng.shuffle(names)
    budget = int(600000 * scale)  # ast nodes, roughly
    trees = []
    for name in names:
        try:
            with open(os.path.join(stdlib, name), "rb") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, ValueError, OSError):
            continue
        trees.append(tree)
        budget -= sum(1 for _ in ast.walk(tree))
        if budget <= 0:
            break
    KEEP.append(trees)


def census():
    counts = {}
    for o in gc.get_objects():
        t = type(o)
        counts[t] = counts.get(t, 0) + 1
    return counts


def referents():
    n = 0
    for o in gc.get_objects():
        n += len(gc.get_referents(o))
    return n


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    scale = float(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rng = random.Random(42)
    for part in (pandas_part, orm_part, pydantic_part, ast_part):
        shuffle_churn(int(100000 * scale), rng)
        part(scale, rng)
    gc.collect()
    line = {
        "objects": len(gc.get_objects()),
        "types": len(census()),
        "census_s": median_time(census, runs),
        "referents_s": median_time(referents, runs),
        "pid": os.getpid(),
    }
    print(json.dumps(line), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
