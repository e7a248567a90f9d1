"""leakspy benchmark: census time against the in-process census and the raw-copy floor, peak RSS,
scaling with heap size, and the slowdown `leakspy attach` causes. Run through scripts/bench.sh
(which builds the release binary first). Must run as root, like leakspy itself.

    scripts/bench.sh [--sizes 100k,1m,5m] [--interpreters 3.6,3.11,3.15|all] [--runs 5]
                     [--slowdown-seconds 10] [--no-slowdown]
"""
import argparse
import ctypes
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SRC = REPO / "scripts" / "bench_target.py"
CHILDREN = []  # every process we start, so that any exit path can end them (see cleanup)


# ---------------------------------------------------------------- interpreters (as the tests find them)
def find_interpreters():
    """(label, (major, minor), argv prefix, chroot root or None): pyenv builds, then the sid chroot."""
    found = []
    root = os.environ.get("PYENV_ROOT")
    if not root:
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        except OSError:
            root = str(Path.home() / ".pyenv")
    for d in sorted(Path(root or "/nonexistent", "versions").glob("3.*")):
        m = re.match(r"3\.(\d+)\.", d.name + ".")
        if m and (d / "bin/python").exists() and int(m.group(1)) >= 6:
            found.append(("pyenv " + d.name, (3, int(m.group(1))), [str(d / "bin/python")], None))
    sid = Path(os.environ.get("LEAKSPY_SID_ROOT", "/var/lib/leakspy/sid"))
    for exe in sorted((sid / "usr/bin").glob("python3.*")):
        m = re.fullmatch(r"python3\.(\d+)", exe.name)
        if m:
            found.append(("sid " + exe.name, (3, int(m.group(1))),
                          ["chroot", str(sid), "/usr/bin/" + exe.name], sid))
    found.sort(key=lambda i: (i[1], i[3] is not None))  # pyenv first within a version
    return found


def select_interpreters(found, spec):
    if spec == "all":
        return found
    if spec is None:  # default: the oldest, pyenv 3.11, the newest
        picks = [found[0]] + [i for i in found if i[1] == (3, 11) and i[3] is None][:1] + [found[-1]]
    else:
        picks = [i for w in spec.split(",") for i in found
                 if w.strip() in i[0] or w.strip() == "3.%d" % i[1][1]]
    return list({p[0]: p for p in picks}.values())  # dedupe, keep order


# ---------------------------------------------------------------- processes
def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    CHILDREN.append(p)
    return p


def stop(p, grace=5.0):
    """Close stdin (targets exit on EOF), then SIGTERM, then SIGKILL: by PID, only our own child."""
    try:
        if p.stdin:
            p.stdin.close()
        p.wait(grace)
    except (subprocess.TimeoutExpired, OSError):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if p.poll() is None:
                p.send_signal(sig)
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
    if p in CHILDREN:
        CHILDREN.remove(p)


STAGED = []  # copies of the target script inside chroots


def cleanup(*signal_args):
    for p in list(CHILDREN):
        stop(p, grace=1.0)
    for d in STAGED:
        shutil.rmtree(d, ignore_errors=True)
    if signal_args:  # called as a SIGINT/SIGTERM handler: stop the benchmark too
        sys.exit(130)


def stage_target(interp, source=TARGET_SRC):
    """Path of a target script as the interpreter sees it (copied into ROOT/tmp for a chroot)."""
    if interp[3] is None:
        return str(source)
    host = Path(tempfile.mkdtemp(prefix="leakspy-bench-", dir=interp[3] / "tmp"))
    STAGED.append(host)
    shutil.copy(source, host / source.name)
    return "/" + str((host / source.name).relative_to(interp[3]))


REAL_TARGET_SRC = REPO / "scripts" / "bench_real_target.py"
LIBS_ROOT = Path(os.environ.get("LEAKSPY_LIBS_ROOT", "/var/lib/leakspy/libs"))


def library_interpreters(interps):
    """The interpreters of `interps` with tests/requirements.txt installed (scripts/setup.sh):
    (interp tuple with the venv's python, environment) for pyenv builds, and the chroot's
    site directory for its own pythons."""
    found = []
    for interp in interps:
        label, (_, minor), argv, root = interp
        if root is None:
            venv = LIBS_ROOT / ("venv-" + label.split()[-1]) / "bin/python"
            if venv.exists():
                found.append(((label + " (venv)", (3, minor), [str(venv)], None), None))
        else:
            site = "/opt/leakspy-libs-3.%d" % minor
            if (root / site.lstrip("/")).exists():
                found.append((interp, dict(os.environ, PYTHONPATH=site)))
    return found


def line_reader(stream):
    """A thread turning a child's stdout into a queue of (arrival time, JSON), for timeouts."""
    q = queue.Queue()

    def pump():
        for line in stream:
            try:
                q.put((time.monotonic(), json.loads(line)))
            except ValueError:
                pass
        q.put((time.monotonic(), None))  # EOF
    threading.Thread(target=pump, daemon=True).start()
    return q


def start_target(interp, script, args, timeout=900, env=None):
    p = spawn(interp[2] + [script] + [str(a) for a in args], stdin=subprocess.PIPE,
              stdout=subprocess.PIPE, text=True, env=env)
    q = line_reader(p.stdout)
    try:
        _, first = q.get(timeout=timeout)
    except queue.Empty:
        first = None
    if first is None:
        stop(p)
        raise RuntimeError("%s: target did not start (exit %s)" % (interp[0], p.poll()))
    return p, q, first


def status_kb(pid, field):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- measurements
def run_leakspy(leakspy, args):
    """Wall time of the whole command, its JSON, and its peak RSS in KiB. The RSS is what
    /usr/bin/time %M reports: ru_maxrss of leakspy, started by that small program. Not
    wait4() on a child forked from this script: the kernel carries the forking process's peak
    RSS (this Python, tens of MB) across exec into the child's ru_maxrss."""
    # Output to files, not pipes: we wait before reading, so a full pipe would deadlock.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf, \
            tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        p = spawn(["/usr/bin/time", "-f", "%M", "-o", rss.name, leakspy] + args, stdout=out, stderr=errf)
        p.wait()
        wall = time.perf_counter() - t0
        CHILDREN.remove(p)
        peak_kb = int(rss.read().split()[-1])
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError("leakspy %s exit %d: %s" % (args[0], p.returncode, err.strip()[-300:]))
        out.seek(0)
        return wall, json.load(out), peak_kb


def raw_copy(pid, chunk=16 << 20):
    """The floor for any out-of-process census: read every writable mapping once through
    /proc/PID/mem with large preads into one reused buffer (no per-read allocation)."""
    ranges = []
    for line in open("/proc/%d/maps" % pid):
        f = line.split()
        if f[1] in ("rw-p", "rw-s") and not (len(f) > 5 and f[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            ranges.append((lo, hi))
    buf = memoryview(bytearray(chunk))
    fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    copied = 0
    t0 = time.perf_counter()
    try:
        for lo, hi in ranges:
            addr = lo
            while addr < hi:
                try:
                    n = os.preadv(fd, [buf[:min(chunk, hi - addr)]], addr)
                except OSError:
                    break  # unreadable mapping (guard page, device memory): skip the rest of it
                if n <= 0:
                    break
                copied += n
                addr += n
    finally:
        os.close(fd)
    return time.perf_counter() - t0, copied


def writable_mappings(pid):
    """(lo, hi, private anonymous?) of every readable, writable mapping but the kernel's."""
    found = []
    for line in open("/proc/%d/maps" % pid):
        f = line.split()
        if f[1].startswith("rw") and not (len(f) > 5 and f[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            found.append((lo, hi, f[1] == "rw-p" and (len(f) < 6 or f[5].startswith("["))))
    return found


def populated_runs(pid, lo, hi):
    """Runs of pages present or swapped (pagemap bits 63 and 62): what the target wrote."""
    runs = []
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(lo // 4096 * 8)
        data = f.read((hi - lo) // 4096 * 8)
    for i in range(0, len(data), 8):
        word = int.from_bytes(data[i:i + 8], "little")
        if word & (3 << 62):
            page = lo + i // 8 * 4096
            if runs and runs[-1][1] == page:
                runs[-1][1] += 4096
            else:
                runs.append([page, page + 4096])
    return runs


def populated_copy(pid, chunk=16 << 20):
    """The floor for a paused copy: the pages the target wrote, found in pagemap first (not
    timed), then read once through /proc/PID/mem (timed)."""
    runs = []
    for lo, hi, _ in writable_mappings(pid):
        runs += populated_runs(pid, lo, hi)
    buf = memoryview(bytearray(chunk))
    fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    copied = 0
    t0 = time.perf_counter()
    try:
        for lo, hi in runs:
            addr = lo
            while addr < hi:
                try:
                    n = os.preadv(fd, [buf[:min(chunk, hi - addr)]], addr)
                except OSError:
                    break
                if n <= 0:
                    break
                copied += n
                addr += n
    finally:
        os.close(fd)
    return time.perf_counter() - t0, copied


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def populated_copy_parallel(pid, threads=2):
    """The floor of the copy `--pause` makes: the populated pages (pagemap, not timed) read by
    process_vm_readv (one copy, where /proc/PID/mem copies twice) on `threads` threads, each
    reading half the bytes into its own part of one destination faulted in beforehand, as
    leakspy's arena is. ctypes releases the GIL, so the threads copy at once."""
    runs = []
    for lo, hi, _ in writable_mappings(pid):
        runs += populated_runs(pid, lo, hi)
    total = sum(hi - lo for lo, hi in runs)
    if total == 0:
        return 1e-9, 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    dest = (ctypes.c_char * total)()
    ctypes.memset(dest, 1, total)  # faulted in, like leakspy's arena before the stop
    base = ctypes.addressof(dest)
    # Runs cut into `threads` parts of equal bytes (to the page), in batches of IOV_MAX.
    share = (total // threads + 4095) // 4096 * 4096
    parts, at = [[] for _ in range(threads)], 0
    for lo, hi in runs:
        while lo < hi:
            k = min(at // share, threads - 1)
            n = min(hi - lo, (k + 1) * share - at) if k < threads - 1 else hi - lo
            parts[k].append((lo, at, n))
            lo, at = lo + n, at + n
    copied = [0] * threads

    def work(k):
        for i in range(0, len(parts[k]), 1024):
            batch = parts[k][i:i + 1024]
            local = (_Iovec * len(batch))(*[(base + off, n) for _, off, n in batch])
            remote = (_Iovec * len(batch))(*[(addr, n) for addr, _, n in batch])
            got = libc.process_vm_readv(pid, local, len(batch), remote, len(batch), 0)
            copied[k] += max(got, 0)
    # The iovec arrays are built in the threads, but they are small next to the copy.
    workers = [threading.Thread(target=work, args=(k,)) for k in range(1, threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    work(0)
    for w in workers:
        w.join()
    return time.perf_counter() - t0, sum(copied)


def writable_rss_kb(pid):
    """Resident memory of the writable mappings (smaps): what a reader cannot avoid reading."""
    total, writable = 0, False
    for line in open("/proc/%d/smaps" % pid):
        head = line.split()
        if "-" in head[0] and len(head) > 1 and len(head[1]) == 4:
            writable = head[1].startswith("rw")
        elif head[0] == "Rss:" and writable:
            total += int(head[1])
    return total


def mem_available_kb():
    return next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemAvailable:")), 0)


# A CPython heap of N small objects takes about this much per object (3.6-3.15, measured with
# bench_target.py), and leakspy's graph about as much again: a size that does not fit twice is
# skipped rather than pushing the machine into swap.
TARGET_BYTES_PER_OBJECT = 150


def bench_size(leakspy, interp, size, runs, graph_only=False):
    """`runs` fresh targets; every ratio is taken within one run, then the median over runs.
    graph_only: the snapshot and the heap graph's rows only (no raw copy, no --pause)."""
    need_kb = 2 * size * TARGET_BYTES_PER_OBJECT // 1024
    if mem_available_kb() < need_kb:
        raise RuntimeError("%d objects need about %d MB, and %d MB is available: skipped"
                           % (size, need_kb // 1024, mem_available_kb() // 1024))
    rows = []
    script = stage_target(interp)
    for _ in range(runs):
        p, _q, ready = start_target(interp, script, [size, 3])
        try:
            pid = ready["pid"]
            rss = status_kb(pid, "VmRSS")
            wrss = writable_rss_kb(pid)
            wall, census, peak = run_leakspy(leakspy, ["snapshot", str(pid), "--json"])
            if graph_only:
                copy_s, copied, paused, floor_s, floor_bytes = 1e-9, 0, {"paused_ms": 0}, 1e-9, 0
                floor2_s = 1e-9
            else:
                copy_s, copied = raw_copy(pid)
                _, paused, _ = run_leakspy(leakspy, ["snapshot", str(pid), "--pause", "--json"])
                floor_s, floor_bytes = populated_copy(pid)
                floor2_s, _ = populated_copy_parallel(pid)
            # The heap graph: `why` (graph, paths, dominators), `why --no-retained` (paths and
            # counts only) and `snapshot --all`.
            why_wall, why, why_peak = run_leakspy(leakspy, ["why", str(pid), "--type", "__main__.Slotted", "--json"])
            paths_wall, paths, paths_peak = run_leakspy(
                leakspy, ["why", str(pid), "--type", "__main__.Slotted", "--no-retained", "--json"])
            all_wall, _, all_peak = run_leakspy(leakspy, ["snapshot", str(pid), "--all", "--json"])
        finally:
            stop(p)
        if abs(census["objects_total"] - ready["tracked"]) > 0.01 * ready["tracked"]:
            print("  warning: leakspy counted %d objects, the target %d"
                  % (census["objects_total"], ready["tracked"]), file=sys.stderr)
        rows.append(dict(python=ready["python"], objects=census["objects_total"], census_s=ready["census_s"],
                         wall=wall, x_census=wall / ready["census_s"], copy_s=copy_s, copied=copied,
                         x_copy=wall / copy_s, peak_kb=peak, rss_kb=rss, x_rss=peak / rss,
                         ms_per_m=wall * 1000 / (census["objects_total"] / 1e6),
                         graph_objects=why["graph"]["objects"], referents_s=ready["referents_s"],
                         why_wall=why_wall, x_referents=why_wall / ready["referents_s"], x_snapshot=why_wall / wall,
                         why_peak_kb=why_peak, all_wall=all_wall, all_peak_kb=all_peak,
                         nodes=why["graph"]["objects"] + why["graph"]["frames"],
                         why_bpn=why["graph"].get("bytes_per_node", 0), why_rss_bpn=why_peak * 1024 / max(
                             why["graph"]["objects"], 1),
                         paths_wall=paths_wall, paths_peak_kb=paths_peak, x_paths_referents=paths_wall / ready["referents_s"],
                         paths_bpn=paths["graph"].get("bytes_per_node", 0),
                         paths_rss_bpn=paths_peak * 1024 / max(paths["graph"]["objects"], 1),
                         reads=census.get("io", {}).get("reads", 0), bytes_read=census.get("io", {}).get("bytes_read", 0),
                         wrss_kb=wrss, x_wrss=census.get("io", {}).get("bytes_read", 0) / 1024 / max(wrss, 1),
                         paused_ms=paused["paused_ms"], paused_bytes=paused.get("paused_bytes", 0),
                         floor_ms=floor_s * 1000, floor_bytes=floor_bytes, x_floor=paused["paused_ms"] / (floor_s * 1000),
                         floor2_ms=floor2_s * 1000, x_floor2=paused["paused_ms"] / (floor2_s * 1000)))
    return {k: (statistics.median(r[k] for r in rows) if k != "python" else rows[0][k]) for k in rows[0]}


def bench_real(leakspy, interp, env, scale, runs):
    """A heap made by real libraries (scripts/bench_real_target.py): snapshot against the
    in-process census, what the snapshot read against the writable resident memory, leakspy's
    peak RSS against the target's, and --pause against the populated-copy floor."""
    rows = []
    script = stage_target(interp, REAL_TARGET_SRC)
    for _ in range(runs):
        p, _q, ready = start_target(interp, script, [scale, 3], env=env)
        try:
            pid = ready["pid"]
            rss, wrss = status_kb(pid, "VmRSS"), writable_rss_kb(pid)
            wall, census, peak = run_leakspy(leakspy, ["snapshot", str(pid), "--json"])
            _, paused, _ = run_leakspy(leakspy, ["snapshot", str(pid), "--pause", "--json"])
            floor_s, floor_bytes = populated_copy(pid)
            floor2_s, _ = populated_copy_parallel(pid)
        finally:
            stop(p)
        io = census.get("io", {})
        rows.append(dict(objects=census["objects_total"], types=len(census["types"]), census_s=ready["census_s"],
                         wall=wall, x_census=wall / ready["census_s"], reads=io.get("reads", 0),
                         bytes_read=io.get("bytes_read", 0), wrss_kb=wrss,
                         x_wrss=io.get("bytes_read", 0) / 1024 / max(wrss, 1), peak_kb=peak, rss_kb=rss,
                         x_rss=peak / rss, paused_ms=paused["paused_ms"], floor_ms=floor_s * 1000,
                         x_floor=paused["paused_ms"] / (floor_s * 1000), paused_bytes=paused.get("paused_bytes", 0),
                         floor2_ms=floor2_s * 1000, x_floor2=paused["paused_ms"] / (floor2_s * 1000)))
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def bench_slowdown(leakspy, interp, resident, seconds):
    """ops/s of the --cpu target in alternating phases: off, on, off, on (`leakspy attach
    --interval 1` running during "on"). The first window of each phase is dropped (it straddles
    the switch); each side's median over its remaining 1-second windows is compared."""
    p, q, _ = start_target(interp, stage_target(interp), ["--cpu", resident])
    windows = {False: [], True: []}
    samples = 0
    try:
        for sampled in (False, True, False, True):
            attach = None
            if sampled:
                attach = spawn([leakspy, "attach", str(p.pid), "--interval", "1", "--json",
                                "--duration", "%ds" % seconds], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            phase_start = time.monotonic()
            seen = 0
            while time.monotonic() - phase_start < seconds:
                try:
                    t, msg = q.get(timeout=5)
                except queue.Empty:
                    continue
                if msg is None:
                    raise RuntimeError("%s: CPU target exited" % interp[0])
                seen += 1
                if seen > 1:
                    windows[sampled].append(msg["ops_per_s"])
            if attach:
                try:
                    sout, serr = attach.communicate(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    sout, serr = "", "leakspy attach did not stop after --duration"
                stop(attach)
                if not sout.strip():  # a slowdown with no sampling going on would be meaningless
                    raise RuntimeError("leakspy attach took no sample: %s" % serr.strip()[-300:])
                samples += len(sout.splitlines())
            while not q.empty():  # windows that finished while we waited for attach: discard
                q.get_nowait()
    finally:
        stop(p)
    off, on = statistics.median(windows[False]), statistics.median(windows[True])
    return (off - on) / off * 100, off, on, samples


# ---------------------------------------------------------------- report
def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return "%s, %d cores, %.1f GiB RAM, Linux %s" % (model, os.cpu_count(), int(mem) / 2**20, platform.release())


def parse_size(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError("bad size %r (e.g. 100k, 1m, 5m)" % text)
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1m,5m")
    ap.add_argument("--interpreters", help="comma list of versions (3.11) or label parts; 'all'")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slowdown-seconds", type=int, default=10, help="length of each phase")
    ap.add_argument("--slowdown-resident", type=parse_size, default=parse_size("1m"),
                    help="objects the CPU target keeps resident while sampled")
    ap.add_argument("--no-slowdown", action="store_true")
    ap.add_argument("--graph-only", action="store_true",
                    help="per size, the snapshot and the heap graph's rows only (no raw copy, no --pause); "
                    "for large sizes (--sizes 1m,5m,20m --graph-only --real none --no-slowdown)")
    ap.add_argument("--real", default="1", help="scales of the real-library heap (1 is about 1.1-1.6M "
                    "objects), comma list; 'none' to skip")
    ap.add_argument("--leakspy", default=str(REPO / "target/release/leakspy"))
    ap.add_argument("--output", default=str(REPO / "bench-results.md"))
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    interps = select_interpreters(find_interpreters(), args.interpreters)
    if not interps:
        sys.exit("no interpreter found (or none matches --interpreters)")
    signal.signal(signal.SIGTERM, cleanup)
    signal.signal(signal.SIGINT, cleanup)
    started = time.monotonic()
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    if Path(args.leakspy).resolve() != (REPO / "target/release/leakspy").resolve():
        rev = "binary %s (not this work tree's build)" % args.leakspy
    rows, slow, real = [], [], []
    try:
        if args.real != "none":
            for interp, env in library_interpreters(interps):
                for scale in args.real.split(","):
                    print("# %s, real-library heap x%s, %d runs" % (interp[0], scale, args.runs), file=sys.stderr, flush=True)
                    try:
                        real.append((interp[0], bench_real(args.leakspy, interp, env, scale, args.runs)))
                    except RuntimeError as e:
                        print("  failed: %s" % e, file=sys.stderr)
        for interp in interps:
            for size in sizes:
                print("# %s, %d objects, %d runs" % (interp[0], size, args.runs), file=sys.stderr, flush=True)
                try:
                    rows.append((interp[0], bench_size(args.leakspy, interp, size, args.runs, args.graph_only)))
                except RuntimeError as e:
                    print("  failed: %s" % e, file=sys.stderr)
                    rows.append((interp[0], None))
            if not args.no_slowdown:
                print("# %s, slowdown under attach" % interp[0], file=sys.stderr, flush=True)
                try:
                    slow.append((interp[0],) + bench_slowdown(args.leakspy, interp,
                                                              args.slowdown_resident, args.slowdown_seconds))
                except (RuntimeError, statistics.StatisticsError) as e:
                    print("  failed: %s" % e, file=sys.stderr)
    finally:
        cleanup()
    mb = lambda kb: "%.0f MB" % (kb / 1024)
    out = ["# leakspy benchmark", "",
           "Machine: %s.  leakspy %s.  Runs: %d (medians; ratios taken within each run).  Total time: %.0f s."
           % (machine(), rev, args.runs, time.monotonic() - started), "",
           "| interpreter | objects | in-process census | leakspy snapshot | × census | raw copy (size) "
           "| × raw copy | leakspy ms / 1M objects | leakspy peak RSS | target RSS | × target RSS |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        if r is None:
            out.append("| %s | failed |" % label)
            continue
        out.append("| %s | %s | %.3f s | %.3f s | %.2f | %.3f s (%s) | %.1f | %.0f | %s | %s | %.2f |" % (
            label if r["python"] in label else "%s (%s)" % (label, r["python"]), format(int(r["objects"]), ","), r["census_s"], r["wall"], r["x_census"],
            r["copy_s"], mb(r["copied"] / 1024), r["x_copy"], r["ms_per_m"], mb(r["peak_kb"]),
            mb(r["rss_kb"]), r["x_rss"]))
    out += ["", "Peak RSS: of leakspy, by /usr/bin/time %M. Raw copy: every rw-p/rw-s mapping "
            "read once via /proc/PID/mem in 16 MiB preads. × = leakspy snapshot wall time (or RSS) divided by it.", "",
            "Heap graph (`leakspy why PID --type __main__.Slotted`: graph of tracked and untracked objects, paths, "
            "dominator tree; `snapshot --all`: census from that graph), against the in-process graph objgraph-like "
            "tools build (gc.get_referents of every tracked object) and the plain snapshot, in the same run:", "",
            "| interpreter | tracked objects | graph nodes | in-process referents | leakspy why | × referents "
            "| × snapshot | why peak RSS | snapshot --all | --all peak RSS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        if r is None:
            continue
        out.append("| %s | %s | %s | %.3f s | %.3f s | %.2f | %.1f | %s | %.3f s | %s |" % (
            label, format(int(r["objects"]), ","), format(int(r["graph_objects"]), ","), r["referents_s"],
            r["why_wall"], r["x_referents"], r["x_snapshot"], mb(r["why_peak_kb"]), r["all_wall"],
            mb(r["all_peak_kb"])))
    out += ["", "Bytes per graph node at the peak of `why --type`, as leakspy's structures report them "
            "(`graph.bytes_per_node` in the JSON: graph, dominator tree's working arrays, paths) and as peak RSS "
            "per object; with retained sizes and paths-only (`--no-retained`):", "",
            "| interpreter | tracked objects | graph nodes | why B/node (structures) | why peak RSS / object "
            "| --no-retained | × referents | B/node (structures) | peak RSS | peak RSS / object |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        if r is None:
            continue
        out.append("| %s | %s | %s | %.1f | %.1f | %.3f s | %.2f | %.1f | %s | %.1f |" % (
            label, format(int(r["objects"]), ","), format(int(r["nodes"]), ","), r["why_bpn"], r["why_rss_bpn"],
            r["paths_wall"], r["x_paths_referents"], r["paths_bpn"], mb(r["paths_peak_kb"]), r["paths_rss_bpn"]))
    # Growth from the smallest size to the largest, per interpreter: time and peak RSS per
    # object at the largest size over the same at the smallest (1.0 is linear).
    by_interp = {}
    for label, r in rows:
        if r is not None:
            by_interp.setdefault(label, []).append(r)
    growth = [(label, rs[0], rs[-1]) for label, rs in by_interp.items() if len(rs) > 1]
    if growth:
        out += ["", "Scaling: time and leakspy's peak RSS per object at the largest size over the same at the "
                "smallest (1.00 = linear):", "",
                "| interpreter | objects | snapshot time | snapshot RSS | --all time | --all RSS | why time | why RSS |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, a, b in growth:
            per = lambda key: (b[key] / b["objects"]) / max(a[key] / a["objects"], 1e-12)
            out.append("| %s | %s → %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
                label, format(int(a["objects"]), ","), format(int(b["objects"]), ","), per("wall"), per("peak_kb"),
                per("all_wall"), per("all_peak_kb"), per("why_wall"), per("why_peak_kb")))
    out += ["", "What a snapshot reads (counted in leakspy's memory layer) against the target's writable resident "
            "memory, and `--pause` against the floor of a paused copy (the pages the target wrote, per pagemap, "
            "read once through /proc/PID/mem; measured in the same run) and against the two-thread floor (the same "
            "pages read by process_vm_readv on two threads into a destination faulted in beforehand, as `--pause` "
            "copies):", "",
            "| interpreter | objects | reads | bytes read | writable RSS | × writable RSS | --pause stopped | "
            "copied | populated-copy floor | × floor | two-thread floor | × floor (2 threads) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        if r is None:
            continue
        out.append("| %s | %s | %s | %s | %s | %.2f | %.1f ms | %s | %.1f ms | %.2f | %.1f ms | %.2f |" % (
            label, format(int(r["objects"]), ","), format(int(r["reads"]), ","), mb(r["bytes_read"] / 1024),
            mb(r["wrss_kb"]), r["x_wrss"], r["paused_ms"], mb(r["paused_bytes"] / 1024), r["floor_ms"], r["x_floor"],
            r["floor2_ms"], r["x_floor2"]))
    if real:
        out += ["", "A heap made by real libraries (scripts/bench_real_target.py: pandas frames with object columns, "
                "an SQLAlchemy session with thousands of related objects, pydantic models, the ASTs of the standard "
                "library; churn between the parts scatters the lists over the arenas):", "",
                "| interpreter | objects | types | in-process census | leakspy snapshot | × census | reads | bytes read "
                "| × writable RSS | leakspy peak RSS | target RSS | × target RSS | --pause stopped | × floor "
                "| × floor (2 threads) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, r in real:
            out.append("| %s | %s | %d | %.3f s | %.3f s | %.2f | %s | %s | %.2f | %s | %s | %.2f | %.1f ms | %.2f "
                       "| %.2f |" % (
                label, format(int(r["objects"]), ","), r["types"], r["census_s"], r["wall"], r["x_census"],
                format(int(r["reads"]), ","), mb(r["bytes_read"] / 1024), r["x_wrss"], mb(r["peak_kb"]),
                mb(r["rss_kb"]), r["x_rss"], r["paused_ms"], r["x_floor"], r["x_floor2"]))
    out += [""]
    for label, pct, off, on, samples in slow:
        out.append("- Slowdown of the CPU-bound target (%s objects resident) under `leakspy attach --interval 1`, "
                   "%s: **%.1f %%** (%.0f ops/s unsampled, %.0f sampled; %d samples taken)"
                   % (format(args.slowdown_resident, ","), label, pct, off, on, samples))
    text = "\n".join(out) + "\n"
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
