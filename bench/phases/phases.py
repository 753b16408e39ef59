"""Per-phase cost of making, using and destroying one sandbox.

Run inside the real jail, as the zygote is (see bench/README.md, "Phases"):
it imports numpy and pandas like a zygote, then makes N sandboxes one after
another in two ways and times every step:

* "clone": what the zygote does now: one clone(2) into all namespaces,
  then the sandbox's own isolation steps (python/pyexec/isolation.py);
* "fork2": what it did before: fork, unshare the namespaces, fork again for
  the PID namespace.

Each sandbox runs the fixed prewarm script (its first-run and copy-on-write
cost) and hello, then exits; the parent times the exit and reap. Wall time
(ms, median) and the sandbox's CPU time (ms, median, from its rusage) per
step are printed as a Markdown table.

Usage: phases.py <python dir> <iterations>
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])
ITERATIONS = int(sys.argv[2])

import numpy  # noqa: E402,F401  (imported like the zygote)
import pandas  # noqa: E402,F401
import msgpack  # noqa: E402

from pyexec import isolation, script, syscalls, zygote  # noqa: E402

libc = isolation.Libc()
cloner = isolation.Cloner(libc)
program = syscalls.Program(libc, syscalls.build_bpf())
ids = (os.getuid(), os.getgid())
SCRATCH = 64 << 20


def steps_in_sandbox(report_fd, first_steps, since=None):
    """The sandbox's steps after the clone (or fork pair), each timed.

    since is (name, wall time) of a step that began in the parent (the
    second fork), to count it first."""
    try:
        _steps(report_fd, first_steps, since)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(71)


def _steps(report_fd, first_steps, since):
    marks = []

    def mark(name):
        marks.append((name, time.time(), time.process_time()))

    if since:
        # A fresh process's CPU clock starts at zero: the fork's own CPU
        # shows in the totals, not here.
        marks.append(("start", since[1], 0.0))
        mark(since[0])
    else:
        mark("start")
    for name, step in first_steps:
        step()
        mark(name)
    isolation.private_dev_and_tmp(libc, SCRATCH)
    mark("/dev, /tmp, /dev/shm")
    isolation.private_proc(libc)
    mark("/proc with host facts masked")
    isolation.finish(libc, program)
    mark("hostname, reseed, caps, seccomp")
    zygote._prewarm(msgpack, {"name": "none", "deny_imports": [], "deny_calls": []})
    mark("prewarm")
    message = {"type": "execute", "script": "def main():\n    return {'message': 'Hello, World!'}\n",
               "input": None, "inputs": None, "input_format": "", "limits": {}, "deny_imports": [],
               "files": [], "output_files": {"max_files": 0, "max_bytes": 0}}
    script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})
    mark("hello")
    out = [(marks[i][0], (marks[i][1] - marks[i - 1][1]) * 1e3, (marks[i][2] - marks[i - 1][2]) * 1e3)
           for i in range(1, len(marks))]
    os.write(report_fd, json.dumps(out).encode() + b"\n")
    os._exit(0)


def one(mode):
    r, w = os.pipe()
    t0 = time.perf_counter()
    if mode == "clone":
        pid = cloner.clone(isolation.SANDBOX_NAMESPACES)
        if pid == 0:
            os.close(r)
            steps_in_sandbox(w, [("map ids", lambda: isolation.map_ids(*ids)),
                                 ("private mounts, loopback", lambda: isolation.private_mounts_and_loopback(libc))])
        t_made = time.perf_counter()
    else:
        pid = os.fork()
        if pid == 0:
            os.close(r)
            libc.lib.unshare(isolation.SANDBOX_NAMESPACES)
            isolation.map_ids(*ids)
            before = time.time()
            child = os.fork()
            if child == 0:
                steps_in_sandbox(w, [("private mounts, loopback", lambda: isolation.private_mounts_and_loopback(libc))],
                                 since=("second fork (PID namespace)", before))
            os.waitpid(child, 0)
            os._exit(0)
        t_made = time.perf_counter()
    os.close(w)
    with os.fdopen(r) as f:
        steps = json.loads(f.readline())
    t_done = time.perf_counter()
    _, _, usage = os.wait4(pid, 0)
    t_reaped = time.perf_counter()
    return ([("clone (in the zygote)" if mode == "clone" else "fork (in the zygote)", (t_made - t0) * 1e3, 0.0)]
            + steps + [("exit and reap", (t_reaped - t_done) * 1e3, 0.0)],
            (t_reaped - t0) * 1e3, (usage.ru_utime + usage.ru_stime) * 1e3)


def main():
    import gc

    zygote._prewarm(msgpack, {"name": "none", "deny_imports": [], "deny_calls": []})  # as the zygote does
    gc.freeze()
    print("| step | " + " | ".join("%s wall ms | %s CPU ms" % (m, m) for m in ("fork2", "clone")) + " |")
    print("|---|" + "---|---|" * 2)
    results = {}
    for mode in ("fork2", "clone"):
        runs = [one(mode) for _ in range(ITERATIONS)]
        steps = {}
        for run, _, _ in runs:
            for name, wall, cpu in run:
                steps.setdefault(name, ([], []))
                steps[name][0].append(wall)
                steps[name][1].append(cpu)
        results[mode] = (steps, statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs))
    names = []
    for mode in ("fork2", "clone"):
        for name in results[mode][0]:
            if name not in names:
                names.append(name)
    for name in names:
        cells = []
        for mode in ("fork2", "clone"):
            walls, cpus = results[mode][0].get(name, ([], []))
            cells.append("%.1f | %.1f" % (statistics.median(walls), statistics.median(cpus)) if walls else "- | -")
        print("| %s | %s |" % (name, " | ".join(cells)))
    print("| **total per sandbox** (wall; CPU of the sandbox tree from rusage) | %.1f | %.1f | %.1f | %.1f |" % (
        results["fork2"][1], results["fork2"][2], results["clone"][1], results["clone"][2]))


main()
