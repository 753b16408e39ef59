"""Per-phase cost of making, using and destroying one sandbox.

Run inside the real jail, as the zygote is (see bench/README.md, "Phases"):
it starts like a zygote (numpy and pandas imported, the warm-up run, every
module a sandbox uses imported, gc.freeze), then makes sandboxes as the
server does under load: each one cloned into all namespaces and isolated
with the real code (python/pyexec/isolation.py), while HOLD others are
alive and idle (the warm pool), so that the zygote's pages are shared as
they are in service; then, as one request, the execute path without
prewarm: limits, hello through script.run, the reply encoded. It times
every step in the sandbox (its own CPU clock) and counts the page faults
(minor faults: almost all copy-on-write of the zygote's pages), plus the
zygote's own CPU and faults for the clone and the wall time of the exit
and reap.

Usage: phases.py <python dir> <sandboxes> <held>
Prints a Markdown table: medians over the sandboxes (the first five are
left out).
"""

import json
import os
import resource
import signal
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])
COUNT, HOLD = int(sys.argv[2]), int(sys.argv[3])

import numpy  # noqa: E402,F401  (imported like the zygote)
import pandas  # noqa: E402,F401
import msgpack  # noqa: E402

from pyexec import isolation, protocol, script, syscalls, zygote  # noqa: E402

POLICY = {"name": "seed", "deny_imports": [], "deny_calls": []}
HELLO_SCRIPT = "def main():\n    return {'message': 'Hello, World!'}\n"
PANDAS_SCRIPT = """import pandas as pd
import numpy as np

def main():
    df = pd.DataFrame({'x': np.random.randn(50), 'y': np.random.randn(50)})
    return {'count': len(df), 'correlation': float(df['x'].corr(df['y'])),
            'x_mean': float(df['x'].mean()), 'y_mean': float(df['y'].mean())}
"""
# PHASES_SCRIPT=pandas times the original README's pandas example instead
# of hello; PHASES_PREWARM=1 runs the warm-up in each sandbox before it
# idles, as the server does by default (--prewarm).
REQUEST_SCRIPT = PANDAS_SCRIPT if os.environ.get("PHASES_SCRIPT") == "pandas" else HELLO_SCRIPT
PREWARM_EACH = os.environ.get("PHASES_PREWARM") == "1"
# Every key of today's execute message; older trees ignore those they do
# not know.
HELLO = {"type": "execute", "script": REQUEST_SCRIPT, "entrypoint": "main", "input": None, "inputs": None,
         "input_format": "", "stdin": None, "result_format": "json", "limits": {}, "deny_imports": [], "files": [],
         "output_files": {"max_files": 0, "max_bytes": 0}}
SCRATCH = 64 << 20

libc = isolation.Libc()
cloner = isolation.Cloner(libc)
# What the zygote builds once: this tree's zygote runs under its own filter
# and each sandbox adds a layer; older trees load the whole filter in each
# sandbox (from a Program, or from the raw bytes).
if hasattr(syscalls, "build_sandbox_layer"):
    zygote_filter = syscalls.Program(libc, syscalls.build_bpf(for_zygote=True))
    sandbox_filter = syscalls.Program(libc, syscalls.build_sandbox_layer())
elif hasattr(syscalls, "Program"):
    zygote_filter, sandbox_filter = None, syscalls.Program(libc, syscalls.build_bpf())
else:
    zygote_filter, sandbox_filter = None, syscalls.build_bpf()
ids = (os.getuid(), os.getgid())


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, time.process_time() * 1e3


def sandbox(report_fd, go_fd):
    """The sandbox's steps, each timed; the figures go to report_fd."""
    marks = [("start", 0, 0.0)]  # a fresh process's counters start at zero

    def mark(name):
        marks.append((name,) + usage())

    try:
        mark("after the clone (Python's after-fork handlers)")
        os.setsid()
        libc.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        mark("setsid, parent-death signal")
        isolation.map_ids(*ids)
        mark("map ids")
        isolation.private_mounts_and_loopback(libc)
        mark("private mounts, loopback up")
        isolation.private_dev_and_tmp(libc, SCRATCH)
        mark("/dev, /tmp, /dev/shm (one tmpfs)")
        isolation.private_proc(libc)
        mark("/proc")
        isolation.finish(libc, sandbox_filter)
        mark("hostname, reseed, capabilities, seccomp")
        if PREWARM_EACH:
            zygote._prewarm(msgpack, POLICY)
            mark("warm-up run")
        os.read(go_fd, 1)  # idle in the pool until "the request" comes
        marks.append(("(idle in the pool)",) + usage())
        message = msgpack.unpackb(msgpack.packb(HELLO, use_bin_type=True), raw=False)
        from pyexec import limits  # as serve_one does

        limits.apply(message["limits"])
        mark("limits")
        reply = script.run(msgpack, message, POLICY)
        mark("the script (script.run)")
        protocol.encode_frame(msgpack, reply)
        mark("reply encoded")
        steps = [(marks[i][0], marks[i][1] - marks[i - 1][1], marks[i][2] - marks[i - 1][2]) for i in range(1, len(marks))]
        os.write(report_fd, json.dumps(steps).encode() + b"\n")
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(71)
    os._exit(0)


def main():
    import gc

    zygote._prewarm(msgpack, POLICY)  # as the zygote does
    if hasattr(zygote, "import_sandbox_modules"):
        zygote.import_sandbox_modules()
    if zygote_filter is not None:
        libc.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)
        zygote_filter.load(libc)
    gc.freeze()
    live, rows = [], []
    for i in range(COUNT + HOLD):
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        faults0, cpu0 = usage()
        pid = cloner.clone(isolation.SANDBOX_NAMESPACES)
        if pid == 0:
            os.close(report_r)
            sandbox(report_w, go_r)
        faults1, cpu1 = usage()
        os.close(report_w)
        os.close(go_r)
        live.append((pid, report_r, go_w, faults1 - faults0, cpu1 - cpu0))
        if len(live) <= HOLD:
            continue
        pid, report_r, go_w, clone_faults, clone_cpu = live.pop(0)
        os.write(go_w, b"x")
        with os.fdopen(report_r) as f:
            steps = json.loads(f.readline())
        os.close(go_w)
        t0 = time.perf_counter()
        _, _, child = os.wait4(pid, 0)
        exit_wall = (time.perf_counter() - t0) * 1e3
        if i >= HOLD + 5:
            rows.append([("clone (the zygote's CPU)", clone_faults, clone_cpu)] + steps + [
                ("exit and reap (wall, in the zygote)", 0, exit_wall),
                ("**the sandbox in all** (its rusage: every step and its exit)", child.ru_minflt,
                 (child.ru_utime + child.ru_stime) * 1e3)])
    for pid, report_r, go_w, _, _ in live:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print("| step | CPU ms | page faults |")
    print("|---|---|---|")
    for j, (name, _, _) in enumerate(rows[0]):
        faults = statistics.median(r[j][1] for r in rows)
        cpu = statistics.median(r[j][2] for r in rows)
        print("| %s | %.2f | %s |" % (name, cpu, "%.0f" % faults if "wall" not in name else "–"))


main()
