"""Integration-test target for `leakspy dump`: numpy arrays, whose type (numpy.ndarray) is a
static type of an extension module, its name in the module's read-only data. An image must
carry those pages for the census read from it to name the type.

Usage: python image_numpy_target.py TRUTH_PATH
Writes {"arrays": N} to TRUTH_PATH, prints READY and blocks until stdin has a byte or closes.
"""

import json
import os
import sys

import numpy

ARRAYS = [numpy.arange(16) for _ in range(321)]

with open(sys.argv[1], "w") as f:
    json.dump({"arrays": len(ARRAYS)}, f)
print("READY", flush=True)
os.read(0, 1)
