# -*- coding: utf-8 -*-
"""Integration-test target: a Python process that does nothing but wait.

Usage:
    python idle_target.py

Prints READY on stdout, then blocks in os.read(0, 1) until stdin has a byte or is closed,
and exits. Used for the tests that need a live Python process but no particular heap: an
unsupported version (it runs on Python 2.7 as well as 3.x), and the error paths (permission
denied, process gone, ...).

Written for Python 2.7 and 3.x alike: no f-strings, no print function, no keyword-only
arguments. b"..." is a str on 2.7 and bytes on 3.x, and os.write/os.read take it either way.
"""

import os


def main():
    # Raw fds, not sys.stdout/sys.stdin: nothing buffered to flush, nothing to set up.
    os.write(1, b"READY\n")
    try:
        os.read(0, 1)
    except KeyboardInterrupt:
        # Ctrl-C when run by hand: leave quietly.
        pass


if __name__ == "__main__":
    main()
