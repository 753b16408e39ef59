"""What a fresh fork of the zygote does to become a sandbox.

The zygote forks a *supervisor* per spawn. The supervisor unshares new
user, mount, PID, network, IPC, UTS and cgroup namespaces, maps its own uid,
and builds the sandbox's private file system (private_dev_and_tmp); then it
forks the sandbox proper, PID 1 of the new PID namespace, which mounts its
own /proc with the host's facts masked (private_proc), drops every
capability, sets no_new_privs, becomes non-dumpable and loads the seccomp
filter (finish). Only then does it say ready.

Every writable place a sandbox can reach lives in one tmpfs of its own,
capped as a whole (size and inodes), nosuid, nodev and noexec, and gone with
its mount namespace: /tmp and /dev/shm are directories of that tmpfs; /dev
itself is the same tmpfs remounted read-only, holding only null, zero,
full, random, urandom and the fd, stdin, stdout and stderr links. There is
no devpts: a sandbox has no terminal to open.
"""

import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SANDBOX_NAMESPACES = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
                      | CLONE_NEWUTS | CLONE_NEWCGROUP)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SCRATCH_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Device nodes a sandbox gets, bound from the jail's /dev; "full" is
# optional because not every jail provides it.
DEVICES = ("null", "zero", "random", "urandom", "full")
REQUIRED_DEVICES = ("null", "zero", "random", "urandom")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
# The one tmpfs holds at most this many files and directories (each costs
# kernel memory outside the size cap).
SCRATCH_INODES = 4096
SCRATCH_TMP_DIR = "/dev/.tmp"

# /proc entries that tell about the host rather than the sandbox, read as
# empty: what container runtimes mask, plus the kernel command line, the
# boot id, and the host-wide load, process and uptime figures.
MASKED_PROC_FILES = (
    "/proc/cmdline", "/proc/loadavg", "/proc/stat", "/proc/uptime", "/proc/kcore", "/proc/keys",
    "/proc/key-users", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats", "/proc/kallsyms",
    "/proc/config.gz", "/proc/vmallocinfo", "/proc/sysrq-trigger", "/proc/sys/kernel/random/boot_id",
)
# /proc directories that are read-only inside the sandbox.
READONLY_PROC_DIRS = ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq")
# /proc directories hidden behind an empty read-only tmpfs.
MASKED_PROC_DIRS = ("/proc/acpi", "/proc/scsi", "/proc/asound")


class Libc:
    """The few libc calls Python's os module lacks, through ctypes."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def check(self, result, what):
        if result != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))

    def unshare(self, flags):
        self.check(self.lib.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None):
        enc = lambda v: v.encode() if v is not None else None
        self.check(self.lib.mount(enc(source), enc(target), enc(fstype), self.ctypes.c_ulong(flags), enc(data)),
                   "mount " + target)

    def prctl(self, option, arg2=0, arg3=0):
        c_ulong = self.ctypes.c_ulong
        self.check(self.lib.prctl(option, c_ulong(arg2), c_ulong(arg3), c_ulong(0), c_ulong(0)), "prctl %d" % option)

    def drop_capabilities(self):
        ctypes = self.ctypes
        for cap in range(64):
            if self.lib.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                break  # past the last capability the kernel knows
        self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all zero
        self.check(self.lib.capset(header, data), "capset")


def place_descriptors(fds):
    """Make fds[i] descriptor i, for every i, and close everything else."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    os.closerange(len(fds), 1 << 16)


def enter_namespaces(libc):
    """New namespaces for the supervisor (and so for the sandbox it forks),
    with this process's uid and gid as the only mapped ids."""
    uid, gid = os.getuid(), os.getgid()
    libc.unshare(SANDBOX_NAMESPACES)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write("%d %d 1" % (uid, uid))
    with open("/proc/self/gid_map", "w") as f:
        f.write("%d %d 1" % (gid, gid))
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    _loopback_up()


def _loopback_up():
    """Bring up the loopback of the sandbox's new network namespace, its
    only interface: a script may talk to itself, never to anything else."""
    import fcntl
    import socket
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def private_dev_and_tmp(libc, scratch_bytes):
    """Mount the sandbox's one tmpfs on /dev and build /dev, /dev/shm and /tmp in it."""
    sources = {}
    for name in DEVICES:
        try:
            sources[name] = os.open("/dev/" + name, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            if name in REQUIRED_DEVICES:
                raise
    libc.mount("tmpfs", "/dev", "tmpfs", SCRATCH_FLAGS,
               "size=%d,nr_inodes=%d,mode=0755" % (scratch_bytes, SCRATCH_INODES))
    for name, fd in sources.items():
        path = "/dev/" + name
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        libc.mount("/proc/self/fd/%d" % fd, path, None, MS_BIND)
        os.close(fd)
    for name, target in DEV_LINKS:
        os.symlink(target, "/dev/" + name)
    for directory in ("/dev/shm", SCRATCH_TMP_DIR):
        os.mkdir(directory)
        os.chmod(directory, 0o1777)
    libc.mount("/dev/shm", "/dev/shm", None, MS_BIND)
    libc.mount(None, "/dev/shm", None, MS_REMOUNT | MS_BIND | SCRATCH_FLAGS)
    libc.mount(SCRATCH_TMP_DIR, "/tmp", None, MS_BIND)
    libc.mount(None, "/tmp", None, MS_REMOUNT | MS_BIND | SCRATCH_FLAGS)
    libc.mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | SCRATCH_FLAGS)
    # The jail started us in its own /tmp; from now on relative paths must
    # resolve in the sandbox's.
    os.chdir("/tmp")


def private_proc(libc):
    """Mount a /proc of the sandbox's own PID namespace, host facts masked.

    Runs in the sandbox proper (PID 1 of its namespace), not the supervisor.
    """
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in MASKED_PROC_FILES:
        if os.path.exists(path):
            libc.mount("/dev/null", path, None, MS_BIND)
    for path in MASKED_PROC_DIRS:
        if os.path.isdir(path):
            libc.mount("tmpfs", path, "tmpfs", MS_RDONLY | SCRATCH_FLAGS, "size=4096,mode=0555")
    for path in READONLY_PROC_DIRS:
        if os.path.isdir(path):
            libc.mount(path, path, None, MS_BIND | MS_REC)
            libc.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | SCRATCH_FLAGS)


def finish(libc, bpf):
    """The sandbox's last steps before ready: after these it holds no
    capability, cannot gain one, cannot be traced, and runs under the filter."""
    import random
    import signal
    import socket
    import sys

    from . import syscalls

    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    private_proc(libc)
    socket.sethostname("sandbox")
    # A fork shares the zygote's random state: reseed from the kernel.
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    libc.drop_capabilities()
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    # Not dumpable: no ptrace, no /proc/<pid>/mem or environ for anyone.
    libc.prctl(PR_SET_DUMPABLE, 0)
    syscalls.load_bpf(libc, bpf)
