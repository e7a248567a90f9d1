"""Integration-test target: a sub-interpreter holding objects of its own.

Usage: python subinterp_target.py TRUTH_PATH

leakspy must walk every interpreter in the runtime's list, not only the main one. This
creates a second interpreter (the private _xxsubinterpreters module, renamed _interpreters in
3.13), builds 1234 instances of a class there, keeps them alive in that interpreter's
__main__, writes the truth, prints READY and blocks until stdin closes.
"""
import json
import os
import sys

SUB_INSTANCES = 1234

try:
    import _xxsubinterpreters as interpreters
    run = interpreters.run_string
except ImportError:
    import _interpreters as interpreters
    run = interpreters.exec

sub = interpreters.create()
failure = run(sub, "class LeakspySub:\n    pass\nkeep = [LeakspySub() for _ in range(%d)]\n" % SUB_INSTANCES)
if failure is not None:  # 3.13+ returns an error description instead of raising
    sys.exit("the sub-interpreter failed: %r" % (failure,))

# The sub-interpreter's id (an InterpreterID up to 3.12, an int from 3.13; the main one is
# 0): paths from its roots are labelled with it.
truth = {"pid": os.getpid(), "interpreters": 2, "sub_type": "__main__.LeakspySub", "sub_instances": SUB_INSTANCES,
         "sub_id": int(sub)}
path = sys.argv[1]
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, json.dumps(truth).encode())
os.close(fd)
os.rename(path + ".tmp", path)
os.write(1, b"READY\n")
os.read(0, 1)
os._exit(0)
