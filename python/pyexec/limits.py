"""The rlimits a sandbox sets on itself right before the script runs.

Soft and hard limits are both lowered, and without CAP_SYS_RESOURCE in the
initial user namespace no process can raise a hard limit again, so a script
that reads the values cannot undo them.
"""

import os
import resource


def apply(limits):
    """Lower this process's rlimits to the values of an execute message."""

    def set_both(which, value):
        if value and value > 0:
            resource.setrlimit(which, (value, value))

    # RLIMIT_CPU counts the CPU this interpreter already used (imports,
    # prewarm), so the script's allowance is added to it. The runner judges
    # the CPU limit from the kernel's rusage, not from anything said here.
    cpu_seconds = limits.get("cpu_seconds", 0)
    if cpu_seconds > 0:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (used + cpu_seconds, used + cpu_seconds + 1))
    # memory_bytes is what the script may map on top of what this process
    # maps now (the interpreter, numpy and pandas: about 256 MiB here, more
    # with matplotlib preloaded), so that memory_mb means the same on every
    # request whatever the preload: an absolute limit below the current
    # size made every new mapping fail, and whether a hello needed one
    # depended on the heap's state (issue 24).
    memory = limits.get("memory_bytes", 0)
    if memory > 0:
        set_both(resource.RLIMIT_AS, mapped_bytes() + memory)
    set_both(resource.RLIMIT_NPROC, limits.get("processes", 0))
    set_both(resource.RLIMIT_NOFILE, limits.get("open_files", 0))
    set_both(resource.RLIMIT_FSIZE, limits.get("file_size_bytes", 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # POSIX message queues are refused by seccomp; no budget for them either.
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    # No locked memory: mlock is refused by seccomp as well.
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    # Queued signals are counted per host user, and every sandbox runs as
    # the same one: without a budget of its own, a script that queues
    # real-time signals to itself would use up the quota of every sandbox
    # (timer_create then fails in all of them) and hold kernel memory
    # outside every other limit. The kernel charges each sandbox's own
    # user namespace against this, and the host user only with what that
    # let through.
    resource.setrlimit(resource.RLIMIT_SIGPENDING, (SIGNALS_PENDING, SIGNALS_PENDING))


def mapped_bytes():
    """This process's address space now (VmSize), from /proc/self/statm:
    one read, no text-file machinery (which would copy pages of the
    interpreter in every sandbox)."""
    fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pages = int(os.read(fd, 256).split()[0])
    finally:
        os.close(fd)
    return pages * os.sysconf("SC_PAGE_SIZE")


# Signals a sandbox may have queued at once (RLIMIT_SIGPENDING): each POSIX
# timer holds one, and nothing a script needs queues more.
SIGNALS_PENDING = 128
