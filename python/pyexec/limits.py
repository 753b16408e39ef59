"""The rlimits a sandbox sets on itself right before the script runs.

Soft and hard limits are both lowered, and without CAP_SYS_RESOURCE in the
initial user namespace no process can raise a hard limit again, so a script
that reads the values cannot undo them.
"""

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
    set_both(resource.RLIMIT_AS, limits.get("memory_bytes", 0))
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


# Signals a sandbox may have queued at once (RLIMIT_SIGPENDING): each POSIX
# timer holds one, and nothing a script needs queues more.
SIGNALS_PENDING = 128
