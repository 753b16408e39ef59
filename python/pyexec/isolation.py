"""What a fresh clone of the zygote does to become a sandbox.

The zygote clones each sandbox straight into new user, mount, PID,
network, IPC, UTS and cgroup namespaces (Cloner: one copy of the big
interpreter per sandbox, not two). The sandbox, PID 1 of its namespaces,
maps its uid (map_ids), makes its mounts private and brings up its
loopback, builds its private file system (private_dev_and_tmp), mounts its
own /proc, processes only (private_proc), drops every
capability, sets no_new_privs, becomes non-dumpable and adds its layer of
the seccomp filter to the zygote's it inherited (finish). Only then does
it say ready.

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
CAP_SETGID, CAP_SETUID = 6, 7

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

# The sandbox's own network namespace gets small TCP buffers: its sockets'
# memory is the kernel's, outside every rlimit (SO_SNDBUF and SO_RCVBUF,
# which could raise them, are refused by seccomp).
TCP_BUFFER_SYSCTLS = {
    "/proc/sys/net/ipv4/tcp_rmem": b"4096 65536 131072",
    "/proc/sys/net/ipv4/tcp_wmem": b"4096 65536 131072",
}


class Cloner:
    """clone(2) into new namespaces, from Python, as os.fork does a fork.

    os.fork cannot pass namespace flags, and unshare(CLONE_NEWPID) followed
    by a second fork would copy the interpreter's page tables twice. So
    the zygote calls the clone system call itself, with the same steps
    around it as os.fork: PyOS_BeforeFork, then PyOS_AfterFork_Child or
    _Parent, the call made through ctypes.pythonapi so the GIL stays held,
    as os.fork holds it. Like glibc's fork, it has the kernel write the
    child's thread id into glibc's thread descriptor (CLONE_CHILD_SETTID),
    which glibc's raise() and pthread_kill() read. The zygote is
    single-threaded (BLAS and OpenMP pinned to one thread), as fork needs.
    x86_64 only.
    """

    SYS_CLONE_X86_64 = 56
    CLONE_CHILD_SETTID = 0x01000000
    # glibc 2.36's offset of struct pthread's tid on x86_64, preferred
    # when the search below finds it among several candidates.
    GLIBC_TID_OFFSET = 0x2D0

    def __init__(self, libc):
        if os.uname().machine != "x86_64":
            raise OSError("sandboxes are cloned with the x86_64 clone system call; this is %s" % os.uname().machine)
        ctypes = libc.ctypes
        api = ctypes.PyDLL(None, use_errno=True)
        self.ctypes = ctypes
        self.syscall = api.syscall
        self.syscall.restype = ctypes.c_long
        self.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_ulong]
        self.before, self.after_child, self.after_parent = (
            api.PyOS_BeforeFork, api.PyOS_AfterFork_Child, api.PyOS_AfterFork_Parent)
        self.tid_address = self._tid_address(libc)

    def _tid_address(self, libc):
        """The address of this thread's tid in glibc's thread descriptor."""
        import struct
        import threading

        ctypes = self.ctypes
        libc.lib.pthread_self.restype = ctypes.c_void_p
        descriptor = libc.lib.pthread_self()
        tid = threading.get_native_id()
        raw = ctypes.string_at(descriptor, 0x1000)
        found = [off for off in range(0, len(raw) - 4, 4) if struct.unpack_from("i", raw, off)[0] == tid]
        if self.GLIBC_TID_OFFSET in found:
            return descriptor + self.GLIBC_TID_OFFSET
        if len(found) == 1:
            return descriptor + found[0]
        raise OSError("cannot find glibc's thread id in its thread descriptor (candidates %r)" % found)

    def clone(self, flags):
        """Like os.fork, into new namespaces: 0 in the child, its pid here."""
        import signal

        self.before()
        pid = self.syscall(self.SYS_CLONE_X86_64, flags | signal.SIGCHLD | self.CLONE_CHILD_SETTID,
                           None, None, self.ctypes.c_void_p(self.tid_address), 0)
        if pid == 0:
            self.after_child()
            return 0
        errno = self.ctypes.get_errno()
        self.after_parent()
        if pid < 0:
            raise OSError(errno, "clone: %s" % os.strerror(errno))
        return pid


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

    def mount(self, source, target, fstype, flags, data=None):
        enc = lambda v: v.encode() if v is not None else None
        self.check(self.lib.mount(enc(source), enc(target), enc(fstype), self.ctypes.c_ulong(flags), enc(data)),
                   "mount " + target)

    def prctl(self, option, arg2=0, arg3=0):
        c_ulong = self.ctypes.c_ulong
        self.check(self.lib.prctl(option, c_ulong(arg2), c_ulong(arg3), c_ulong(0), c_ulong(0)), "prctl %d" % option)

    def drop_capabilities(self, keep=()):
        """Drop every capability but those in keep (effective and
        permitted; none inheritable or ambient), and every other one from
        the bounding set."""
        ctypes = self.ctypes
        for cap in range(64):
            if cap in keep:
                continue
            if self.lib.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                break  # past the last capability the kernel knows
        self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        mask = sum(1 << cap for cap in keep)  # all below 32
        # effective, permitted, inheritable for capabilities 0-31, then 32-63
        data = (ctypes.c_uint32 * 6)(mask, mask, 0, 0, 0, 0)
        self.check(self.lib.capset(header, data), "capset")


CLONE_NEWUSER_NEWNS = CLONE_NEWUSER | CLONE_NEWNS


def scratch_for_imports(libc, scratch_bytes, own_user_namespace=True):
    """Give the zygote a /tmp of its own for its imports (sealed afterwards).

    Some libraries write while they are imported or first used: matplotlib
    needs a writable config and cache directory (MPLCONFIGDIR, under /tmp)
    even to import, and builds its font list there (half a second). The
    jail's /tmp is read-only, and nothing writable may be shared between
    sandboxes, so the zygote, still single-threaded, enters a user and
    mount namespace of its own, maps its ids to themselves and mounts a
    tmpfs on /tmp that only it sees. seal_imports_scratch then makes that
    tmpfs read-only and drops the capabilities the new user namespace gave;
    every sandbox mounts its own /tmp over it.

    With host ids per sandbox (own_user_namespace False), the zygote stays
    in the jail's user namespace, where the runner mapped its slice of ids
    and the jail left it CAP_SYS_ADMIN for this mount namespace and its
    tmpfs: a user namespace of its own could map no more than its own id.
    """
    if own_user_namespace:
        uid, gid = os.getuid(), os.getgid()
        libc.check(libc.lib.unshare(CLONE_NEWUSER_NEWNS), "unshare")
        map_ids(uid, gid)
    else:
        libc.check(libc.lib.unshare(CLONE_NEWNS), "unshare")
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    libc.mount("tmpfs", "/tmp", "tmpfs", SCRATCH_FLAGS,
               "size=%d,nr_inodes=%d,mode=0755" % (scratch_bytes, SCRATCH_INODES))
    os.chdir("/tmp")


def seal_imports_scratch(libc, keep_id_capabilities=False):
    """After the imports: the zygote's /tmp read-only, its capabilities gone
    (a sandbox's namespaces come from clone's own new user namespace), but
    for CAP_SETUID and CAP_SETGID in the jail's user namespace with host ids
    per sandbox: the zygote needs them to write each sandbox's map
    (map_sandbox_ids)."""
    libc.mount(None, "/tmp", None, MS_REMOUNT | MS_RDONLY | SCRATCH_FLAGS)
    libc.drop_capabilities((CAP_SETGID, CAP_SETUID) if keep_id_capabilities else ())


def place_descriptors(fds):
    """Make fds[i] descriptor i, for every i, and close everything else."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    os.closerange(len(fds), 1 << 16)


def map_ids(uid, gid):
    """Map the sandbox's only ids: uid and gid, its ids in the jail.

    Runs in the new sandbox, PID 1 of the namespaces clone made, which
    holds every capability in its new user namespace until finish drops
    them; then makes every mount private and brings up its loopback.
    """
    _write_file("/proc/self/setgroups", b"deny")
    _write_file("/proc/self/uid_map", b"%d %d 1" % (uid, uid))
    _write_file("/proc/self/gid_map", b"%d %d 1" % (gid, gid))


def map_sandbox_ids(pid, uid, gid, host_id):
    """From the zygote: map the new sandbox pid's uid and gid to host_id,
    an id of the zygote's slice that no other live sandbox holds. The
    zygote may: it holds CAP_SETUID and CAP_SETGID in the jail's user
    namespace, which maps the slice, and every capability in the
    sandbox's (it made it). setgroups is denied first, as map_ids does."""
    base = "/proc/%d/" % pid
    _write_file(base + "setgroups", b"deny")
    _write_file(base + "uid_map", b"%d %d 1" % (uid, host_id))
    _write_file(base + "gid_map", b"%d %d 1" % (gid, host_id))


def take_own_ids(uid, gid):
    """In the new sandbox, once the zygote has mapped its ids
    (map_sandbox_ids): become them. Until now it ran as the zygote's host
    uid, which its namespace does not map; from now on as its own, in
    every kernel counter kept per host user. Capabilities stay (no id
    involved is root) until finish drops them."""
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _write_file(path, data):
    """Write data to the existing file path in one write, as /proc wants.

    Plain descriptors rather than open(): the text-file machinery would
    copy-on-write pages of the interpreter in every sandbox."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.write(fd, data) != len(data):
            raise OSError("short write to %s" % path)
    finally:
        os.close(fd)


def private_mounts_and_loopback(libc):
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
    # Where the script leaves the files that go back with its result
    # (files.py).
    os.mkdir("output", 0o755)


def private_proc(libc):
    """Mount a /proc of the sandbox's own PID namespace that shows its
    processes and none of the host-wide files at its top.

    A full procfs first, only to set the TCP buffer sizes of the sandbox's
    network namespace; then a procfs with subset=pid over it (Linux 5.8):
    only /proc/<pid>, /proc/self and /proc/thread-self exist in it. None of
    the host-wide files (cmdline, stat, loadavg, uptime, meminfo, vmstat,
    interrupts, diskstats, pressure, keys, kallsyms, sysrq-trigger, ...)
    exists, and no /proc/sys: nothing to mask one by one, and no mount per
    masked entry to make and tear down in every sandbox. (/proc/<pid>/net
    is the sandbox's network namespace, but a few of its files count for
    the whole host: docs/security.md, "Host facts masked".) The full procfs
    stays below, unreachable: no path leads to it, and unmounting needs the
    capabilities and system calls a sandbox gives up in finish.
    """
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path, value in TCP_BUFFER_SYSCTLS.items():
        _write_file(path, value)
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid")


def finish(libc, sandbox_layer):
    """The sandbox's last steps before ready (after private_proc): after
    these it holds no capability, cannot gain one, cannot be traced, and
    runs under the sandbox's filter: the zygote's, inherited, and
    sandbox_layer (a syscalls.Program of build_sandbox_layer) on top."""
    import random
    import signal
    import socket
    import sys

    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    socket.sethostname("sandbox")
    # A fork shares the zygote's random state: reseed from the kernel.
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        # The legacy generator's whole state (624 words) straight from the
        # kernel: more entropy than seed() gathers, at a fraction of its
        # cost in a fresh fork (0.1 instead of 0.8 ms).
        key = np.frombuffer(os.urandom(624 * 4), dtype=np.uint32)
        np.random.set_state(("MT19937", key, 624))
    libc.drop_capabilities()
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    # Not dumpable: no ptrace, no /proc/<pid>/mem or environ for anyone.
    libc.prctl(PR_SET_DUMPABLE, 0)
    sandbox_layer.load(libc)
