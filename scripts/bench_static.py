"""The static (musl) binary against the glibc one, on the same target at the same moment.

    bash scripts/bench-static.sh [--size 1000000] [--runs 7] [--python PYTHON]

Starts scripts/bench_target.py with about SIZE GC-tracked objects, then runs `leakspy snapshot
--json` (the census: reads and small allocations) and `leakspy snapshot --all --json` (the heap
graph: large arrays grown as objects are found, where an allocator shows) with each binary,
alternating, RUNS times each, and prints the median wall time and peak RSS of each. The target
blocks while it is read, so every run sees the same heap. Must run as root, like leakspy.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(binary, args):
    """Wall seconds and peak RSS (KiB) of one leakspy run, from the kernel's accounting."""
    started = time.monotonic()
    proc = subprocess.Popen([binary] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0:
        sys.exit("%s %s failed: %s" % (binary, " ".join(args), err))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--glibc", default=str(REPO / "target/release/leakspy"))
    ap.add_argument("--static", default=str(REPO / "target/x86_64-unknown-linux-musl/release/leakspy"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another build to time alongside (an allocator tried, say)")
    args = ap.parse_args()
    target = subprocess.Popen([args.python, str(REPO / "scripts/bench_target.py"), str(args.size), "1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        target.stdout.readline()  # the in-process timings: the target is built and blocks
        pid = str(target.pid)
        builds = [("glibc", args.glibc), ("static musl", args.static)] + [
            tuple(a.split("=", 1)) for a in args.also]
        results = {}
        for label, mode in [("census", ["snapshot", pid, "--json"]), ("graph", ["snapshot", pid, "--all", "--json"])]:
            for _ in range(args.runs):
                for name, binary in builds:  # alternating: a busy moment hits both alike
                    results.setdefault((label, name), []).append(run_once(binary, mode))
        print("Python %s, %d objects, %d runs each, medians:" % (
            subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True).stdout.strip(), args.size, args.runs))
        # CPU time is what the build changes; wall time also holds what else the machine does.
        print("%-8s %-12s %8s %8s %8s %12s" % ("what", "build", "wall s", "CPU s", "min CPU", "peak RSS MiB"))
        for (label, name), runs in results.items():
            cpu = [c for _, c, _ in runs]
            print("%-8s %-12s %8.3f %8.3f %8.3f %12.1f" % (
                label, name, statistics.median(w for w, _, _ in runs), statistics.median(cpu), min(cpu),
                statistics.median(r for _, _, r in runs) / 1024))
    finally:
        target.kill()
        target.wait()


if __name__ == "__main__":
    main()
