"""The sandbox's seccomp policy: an allow list, built once, loaded per sandbox.

How the list was derived: strace -f of /usr/bin/python3 running the
original service's examples, the end-to-end suite's scripts and a set of
typical numpy, pandas and standard-library workloads (CSV, groupby,
linear algebra, FFT, datetime, threads, sockets on loopback, files in /tmp,
sqlite in memory, compression, pickling), counted after numpy and pandas
were imported; then narrowed by hand. See docs/security.md, "Security model".

Everything not listed fails with EPERM, except clone3, which fails with
ENOSYS so that glibc falls back to clone (whose flags a filter can see).
The policy is the same under both jails and in both modes. It is loaded in
two layers: the zygote runs under the allow list plus what it and the
isolation steps need (build_bpf(for_zygote=True)), every sandbox inherits
that and, after its isolation steps and before it says ready, adds a small
layer that refuses those extras again (build_sandbox_layer).
"""

import errno

# Plain system calls a script may make, by what they are for.
ALLOWED = (
    # descriptors and files
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "dup", "dup2", "dup3",
    "ioctl", "stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown",
    "fchownat", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "utimensat", "utime", "utimes",
    "futimesat", "umask", "statfs", "fstatfs", "readahead", "sendfile",
    "copy_file_range", "splice", "tee", "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
    "flistxattr", "pipe", "pipe2",
    # memory (the address space is bounded by RLIMIT_AS)
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore", "membarrier",
    # processes and threads (bounded by RLIMIT_NPROC; clone is checked below)
    "fork", "vfork", "exit", "exit_group", "wait4", "waitid", "kill", "tkill", "tgkill",
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "setpgid", "getpgid", "getpgrp", "getsid", "set_tid_address", "set_robust_list",
    "get_robust_list", "futex", "futex_waitv", "rseq", "sched_yield", "sched_getaffinity", "sched_setaffinity",
    "sched_getparam", "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "getpriority", "setpriority", "arch_prctl", "getcpu", "capget",
    # signals and timers
    "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending", "rt_sigtimedwait",
    "sigaltstack", "restart_syscall", "pause", "alarm", "setitimer", "getitimer",
    "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time", "times",
    "getrusage", "getrlimit", "setrlimit", "prlimit64", "uname", "getrandom",
    # waiting for descriptors
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_settime", "timerfd_gettime",
    # sockets (socket and socketpair are checked below; the network
    # namespace is the sandbox's own and has only a loopback). Not listen:
    # a connection waiting to be accepted holds what its peer sent (up to
    # the host's 208 KiB default buffer) and no descriptor of the
    # sandbox's, so one process with 7 descriptors queued 311 MiB of
    # kernel memory in 1,400 of them (issue 25). Without listening
    # sockets, every socket buffer a sandbox fills belongs to a descriptor
    # it holds, and RLIMIT_NOFILE × RLIMIT_NPROC bounds them (docs/security.md,
    # "What a sandbox can hold"). accept stays: without a listener it can
    # only fail.
    "bind", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockopt",
)

# The sockets socket() may create, as (family, type, protocol): AF_UNIX
# stream, datagram and seqpacket; AF_INET and AF_INET6 TCP and UDP, with
# the protocol left to the kernel (0) or named. No netlink, packet, vsock,
# bluetooth, alg or any other family, and no other protocol of the IP
# families (MPTCP, UDP-Lite, SCTP, DCCP, L2TP...): on a kernel with
# modules, asking for one that is not loaded makes the kernel load it, so
# a script could pull in code no one else uses. The type is compared on
# its low four bits (SOCK_TYPE_MASK: SOCK_NONBLOCK and SOCK_CLOEXEC ride
# above them).
SOCKETS = ((1, 1, 0), (1, 2, 0), (1, 5, 0),
           (2, 1, 0), (2, 1, 6), (2, 2, 0), (2, 2, 17),
           (10, 1, 0), (10, 1, 6), (10, 2, 0), (10, 2, 17))
SOCKET_FAMILIES = tuple(sorted({family for family, _, _ in SOCKETS}))
SOCK_TYPE_MASK = 0xF
AF_UNIX = 1

# setsockopt(SOL_SOCKET, ...) options a script may set: SO_DEBUG,
# SO_REUSEADDR, SO_DONTROUTE, SO_BROADCAST, SO_KEEPALIVE, SO_OOBINLINE,
# SO_LINGER, SO_REUSEPORT, SO_PASSCRED, SO_RCVLOWAT, SO_SNDLOWAT,
# SO_RCVTIMEO, SO_SNDTIMEO, SO_TIMESTAMP. Not SO_SNDBUF, SO_RCVBUF or their
# FORCE variants (7, 8, 32, 33).
SOL_SOCKET = 1
SOL_SOCKET_OPTIONS = (1, 2, 5, 6, 9, 10, 13, 15, 16, 18, 19, 20, 21, 29)

# The other levels setsockopt may use: IPPROTO_IP and IPPROTO_IPV6 with
# any option (IP_TOS, multicast, IPV6_V6ONLY...; those that reach IPsec
# policy need a capability the sandbox does not have), and at IPPROTO_TCP
# and IPPROTO_UDP the listed options only: not TCP_ULP (kernel TLS and
# other upper layers), TCP_REPAIR, TCP_MD5SIG or UDP_ENCAP (tunnel
# decapsulation in the kernel). A list, not "anything but SOL_SOCKET": the
# kernel reads the level as a 32-bit int, and a filter compares all 64
# bits of the register, so "level != SOL_SOCKET" let SOL_SOCKET | 1 << 32
# through to the buffer sizes. Every rule here compares for equality,
# which fails closed when high bits are set.
SETSOCKOPT_LEVELS = (0, 41)
# TCP_NODELAY, MAXSEG, CORK, KEEPIDLE, KEEPINTVL, KEEPCNT, SYNCNT, LINGER2,
# DEFER_ACCEPT, WINDOW_CLAMP, QUICKACK, CONGESTION (only the loaded ones:
# loading another needs a capability), THIN_LINEAR_TIMEOUTS, THIN_DUPACK,
# USER_TIMEOUT, FASTOPEN, NOTSENT_LOWAT, FASTOPEN_CONNECT, INQ.
TCP_OPTIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 16, 17, 18, 23, 25, 30, 36)
# UDP_CORK, UDP_SEGMENT, UDP_GRO.
UDP_OPTIONS = (1, 103, 104)

# fcntl commands a script may use: F_DUPFD, F_GETFD, F_SETFD, F_GETFL,
# F_SETFL, F_GETLK and F_OFD_GETLK, F_DUPFD_CLOEXEC and F_GETPIPE_SZ. Not
# F_SETPIPE_SZ (1031), which charges pipe buffers to the host user every
# sandbox runs as (its 64 MiB soft quota, shared), nor F_NOTIFY (1026),
# which would tell a script when anything reads a file in a directory it
# shares with the host and other sandboxes, nor leases, F_SETOWN or
# F_SETSIG.
FCNTL_COMMANDS = (0, 1, 2, 3, 4, 5, 36, 1030, 1032)
# Taking a lock (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW, and flock)
# succeeds without doing anything. A real lock is a kernel object charged
# to no limit and no memory cgroup, kept while any mapping holds the file
# open: one script held 300,000 of them (57 MB) within seconds, and could
# hold gigabytes. And the kernel keeps locks per file, so on a file the
# sandboxes share read-only with the host a lock would be seen by other
# sandboxes and block host processes. sqlite and dbm lock their files in
# /tmp and carry on as if they held the lock; F_GETLK answers "unlocked".
# What is lost: locking between two processes of one script.
FCNTL_LOCK_COMMANDS = (6, 7, 37, 38)

# posix_fadvise advice a script may give: NORMAL, RANDOM, SEQUENTIAL,
# WILLNEED, NOREUSE. Not DONTNEED (4), which drops a file's pages from the
# page cache, the host's and other sandboxes' too on shared files: with a
# timed read it would tell a script which shared files others read.
FADVISE_ADVICE = (0, 1, 2, 3, 5)

# rt_sigaction: any signal but SIGCHLD may get a new action; SIGCHLD's may
# only be read (a NULL new action). Ignoring SIGCHLD, or SA_NOCLDWAIT, makes
# the kernel reap a process's children as they end and discard their CPU
# time and peak memory, which then reach no one's rusage: a script that
# ignored it burned 2 s of CPU in children and was told cpu_ms 0 (issue
# 25). No new action at all keeps the rule one the filter can check (the
# action is behind a pointer). The kernel reads the signal as an int, so
# only its low 32 bits are compared: SIGCHLD | 1 << 32 is SIGCHLD.
SIGCHLD = 17
# (mask, value) pairs over the low 32 bits that together cover the
# signals 1-64 except SIGCHLD: 0-15, 16, 18-19, 20-23, 24-31, 32-63, 64.
SIGACTION_SIGNALS = ((0xFFFFFFF0, 0), (0xFFFFFFFF, 16), (0xFFFFFFFE, 18), (0xFFFFFFFC, 20),
                     (0xFFFFFFF8, 24), (0xFFFFFFE0, 32), (0xFFFFFFFF, 64))

# prctl options a script may use: PDEATHSIG get/set, DUMPABLE get, NAME
# set/get, SECCOMP get/set (filters can only be added), CAPBSET_READ,
# NO_NEW_PRIVS set/get, and PR_SET_VMA (glibc names its mappings).
PRCTL_OPTIONS = (1, 2, 3, 15, 16, 21, 22, 23, 38, 39, 0x53564D41)

# clone flags that create namespaces: NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME.
CLONE_NAMESPACE_FLAGS = 0x7E020080

# personality(): only the query (0xffffffff) and the default persona (0).
PERSONALITY_ALLOWED = (0, 0xFFFFFFFF)


# What the zygote may do beyond a sandbox, and what a fresh sandbox does to
# isolate itself before it adds its own layer (build_sandbox_layer): clone
# into new namespaces and pidfd_open (the zygote); setsid, mount,
# sethostname, capset, and prctl's PR_SET_DUMPABLE, PR_CAPBSET_DROP and
# PR_CAP_AMBIENT (zygote.py, isolation.py).
#
# setsid: each sandbox starts one session of its own, and its processes
# may start no other. The scheduler shares the CPU between sessions
# (autogroups) before it shares it between their processes, so a script
# whose 16 processes each started a session took 16 shares: three such
# sandboxes made another tenant's hello go from 4 ms to 110-315 ms
# (issue 25). In one session a sandbox weighs one share, however many
# processes it runs. setpgid stays: process groups do not make autogroups.
#
# setresuid and setresgid: with host ids per sandbox, a fresh sandbox
# switches to the id the zygote mapped for it (isolation.take_own_ids).
ISOLATION_CALLS = ("mount", "sethostname", "capset", "pidfd_open", "setsid", "setresuid", "setresgid")
ISOLATION_PRCTL_OPTIONS = (4, 24, 47)


def build_bpf(for_zygote=False):
    """Return the filter as raw BPF (struct sock_filter[]) for this machine.

    The sandbox's allow list; for_zygote adds what the zygote and the
    isolation steps need (ISOLATION_CALLS, ISOLATION_PRCTL_OPTIONS, clone
    with namespace flags). The zygote loads that one on itself, so every
    sandbox starts under it, shared, and adds build_sandbox_layer once
    isolated: the two together allow exactly what the sandbox's list
    allows (python/tests checks this by running both programs), and the
    kernel checks and compiles only the small layer per sandbox (0.1
    instead of 0.7 ms here). Built with libseccomp (python3-seccomp), once
    per zygote.
    """
    import seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in ALLOWED + (ISOLATION_CALLS if for_zygote else ()):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture
    if for_zygote:
        f.add_rule(seccomp.ALLOW, "clone")
    else:
        f.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for family, kind, protocol in SOCKETS:
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family),
                   seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, kind), seccomp.Arg(2, seccomp.EQ, protocol))
    f.add_rule(seccomp.ALLOW, "socketpair", seccomp.Arg(0, seccomp.EQ, AF_UNIX))
    # setsockopt: the listed levels, and at SOL_SOCKET, TCP and UDP the
    # listed options only. Socket buffer sizes stay the namespace's small
    # defaults: raising them would let a script hold kernel memory outside
    # every rlimit.
    for level in SETSOCKOPT_LEVELS:
        f.add_rule(seccomp.ALLOW, "setsockopt", seccomp.Arg(1, seccomp.EQ, level))
    for level, options in ((SOL_SOCKET, SOL_SOCKET_OPTIONS), (6, TCP_OPTIONS), (17, UDP_OPTIONS)):
        for optname in options:
            f.add_rule(seccomp.ALLOW, "setsockopt", seccomp.Arg(1, seccomp.EQ, level), seccomp.Arg(2, seccomp.EQ, optname))
    for command in FCNTL_COMMANDS:
        f.add_rule(seccomp.ALLOW, "fcntl", seccomp.Arg(1, seccomp.EQ, command))
    for command in FCNTL_LOCK_COMMANDS:
        f.add_rule(seccomp.ERRNO(0), "fcntl", seccomp.Arg(1, seccomp.EQ, command))
    f.add_rule(seccomp.ERRNO(0), "flock")
    for advice in FADVISE_ADVICE:
        f.add_rule(seccomp.ALLOW, "fadvise64", seccomp.Arg(3, seccomp.EQ, advice))
    # preadv2 and pwritev2 without flags only: RWF_NOWAIT would say whether
    # a shared file's pages are in the page cache (see FADVISE_ADVICE).
    for name in ("preadv2", "pwritev2"):
        f.add_rule(seccomp.ALLOW, name, seccomp.Arg(5, seccomp.EQ, 0))
    for mask, value in SIGACTION_SIGNALS:
        f.add_rule(seccomp.ALLOW, "rt_sigaction", seccomp.Arg(0, seccomp.MASKED_EQ, mask, value))
    f.add_rule(seccomp.ALLOW, "rt_sigaction", seccomp.Arg(1, seccomp.EQ, 0))
    for option in PRCTL_OPTIONS + (ISOLATION_PRCTL_OPTIONS if for_zygote else ()):
        f.add_rule(seccomp.ALLOW, "prctl", seccomp.Arg(0, seccomp.EQ, option))
    for persona in PERSONALITY_ALLOWED:
        f.add_rule(seccomp.ALLOW, "personality", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, persona))
    return _export(f)


def build_sandbox_layer():
    """The filter a sandbox adds on top of the zygote's (build_bpf with
    for_zygote) once it has isolated itself: it refuses, with EPERM, what
    the zygote's filter allows beyond the sandbox's list, and passes
    everything else on to the zygote's."""
    import seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in ISOLATION_CALLS:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    for option in ISOLATION_PRCTL_OPTIONS:
        f.add_rule(seccomp.ERRNO(errno.EPERM), "prctl", seccomp.Arg(0, seccomp.EQ, option))
    # Any namespace flag: one rule per flag (rules of one call are or-ed).
    for bit in range(32):
        flag = 1 << bit
        if CLONE_NAMESPACE_FLAGS & flag:
            f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    return _export(f)


def _export(f):
    """The raw BPF of a libseccomp filter."""
    import os

    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb", closefd=True) as out:
            f.export_bpf(out)
        chunks = []
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    return b"".join(chunks)


class Program:
    """A filter as a struct sock_fprog, made once in the zygote.

    Installing it is one prctl (the zygote's filter in the zygote, the
    sandbox layer in every sandbox): the structure and the program it
    points to are shared with the zygote, read by the kernel, never
    written, so a sandbox loading its layer copies no page.
    """

    def __init__(self, libc, bpf):
        ctypes = libc.ctypes

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        self._instructions = ctypes.create_string_buffer(bpf, len(bpf))
        self._fprog = SockFprog(len(bpf) // 8, ctypes.cast(self._instructions, ctypes.c_void_p))
        self._pointer = ctypes.byref(self._fprog)
        self._args = (ctypes.c_ulong(22), ctypes.c_ulong(2))  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER

    def load(self, libc):
        """Install the filter on this process (no_new_privs must be set)."""
        libc.check(libc.lib.prctl(self._args[0], self._args[1], self._pointer, 0, 0), "prctl(PR_SET_SECCOMP)")
