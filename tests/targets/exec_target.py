"""Integration-test target: a process that replaces itself with exec() after a while, as
uWSGI and other servers do when they reload. A reader that keeps the PID must notice that the
program under it changed.

Usage:
    python exec_target.py TRUTH_PATH SECONDS

Writes the truth {"pid"}, prints READY, and SECONDS later execs a fresh interpreter (the same
executable) that sleeps for a minute. Python 3.6 compatible.
"""

import os
import sys
import json
import time


class LeakspyBeforeExec(object):
    pass


KEEP = [LeakspyBeforeExec() for _ in range(500)]


def main():
    truth_path, seconds = sys.argv[1], float(sys.argv[2])
    fd = os.open(truth_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, json.dumps({"pid": os.getpid()}).encode())
    os.close(fd)
    os.rename(truth_path + ".tmp", truth_path)
    os.write(1, b"READY\n")
    time.sleep(seconds)
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)"])


if __name__ == "__main__":
    main()
