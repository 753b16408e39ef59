"""CPU of one clone and exit of the zygote's interpreter, per set of
namespaces a sandbox is cloned into (bench/README.md, "Reference run
(third session of issue 10)").

Run inside the real jail by run.sh, as the zygote is: numpy and pandas
imported, gc.freeze, then for each set of clone flags N children cloned
one after another, each exiting at once. Reports the CPU of the whole
tree (this process and its reaped children) per clone and exit, and the
machine's busy time, which also counts kernel workers (a network
namespace is torn down by one, after the exit).

Usage: namespaces.py <python dir> <clones per set>
"""

import gc
import os
import resource
import sys
import time

sys.path.insert(0, sys.argv[1])
COUNT = int(sys.argv[2])

import numpy  # noqa: E402,F401
import pandas  # noqa: E402,F401

from pyexec import isolation as I  # noqa: E402

SETS = [("none (a fork)", 0), ("user", I.CLONE_NEWUSER), ("user + mount", I.CLONE_NEWUSER | I.CLONE_NEWNS),
        ("user + PID", I.CLONE_NEWUSER | I.CLONE_NEWPID), ("user + network", I.CLONE_NEWUSER | I.CLONE_NEWNET),
        ("user + IPC + UTS + cgroup", I.CLONE_NEWUSER | I.CLONE_NEWIPC | I.CLONE_NEWUTS | I.CLONE_NEWCGROUP),
        ("all of a sandbox's", I.SANDBOX_NAMESPACES), ("all but network", I.SANDBOX_NAMESPACES & ~I.CLONE_NEWNET)]


def machine_busy_ms():
    """Busy time of all CPUs from /proc/stat (not idle, not iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    return (sum(fields[:3]) + sum(fields[4:7])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def main():
    cloner = I.Cloner(I.Libc())
    gc.freeze()
    print("| flags | tree CPU ms per clone + exit | machine busy ms per clone + exit |")
    print("|---|---|---|")
    for name, flags in SETS:
        time.sleep(0.5)
        busy0, cpu0 = machine_busy_ms(), time.process_time()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(COUNT):
            pid = cloner.clone(flags)
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        tree = (time.process_time() - cpu0) + (children1.ru_utime + children1.ru_stime
                                               - children0.ru_utime - children0.ru_stime)
        time.sleep(0.3)  # let the kernel's workers finish the teardown
        print("| %s | %.2f | %.2f |" % (name, tree * 1e3 / COUNT, (machine_busy_ms() - busy0) / COUNT))


main()
