"""The Python side of one sandbox: import the heavy modules, wait, run one script.

This file is embedded in the Go binary (python/embed.go) and started inside
the jail as ``/usr/bin/python3 -I -B -c <this source> <config>``. It mirrors
the protocol written down in runner/doc.go:

* fd 3 is a stream socket to the runner; every message is a 4-byte
  big-endian length followed by one msgpack map of that many bytes.
* fd 1 and fd 2 are pipes read (and capped) by the runner, so whatever the
  script or C code writes there is captured.
* The sandbox speaks first: ``{"type": "ready", "pid": <pid>}`` once numpy,
  pandas and the preload modules are imported.
* Before ready the sandbox loads its seccomp filter (see _Seccomp).
* The runner then sends exactly one ``{"type": "execute", ...}`` message.
  The sandbox applies the limits it carries, runs the script, and answers
  with one ``{"type": "result", ...}`` or ``{"type": "error", ...}``. Then it
  exits; the runner kills whatever is left of the sandbox anyway.

In fork mode (``<config>`` starts with ``zygote``) the same file runs as
the zygote: it imports the heavy modules once, says ready on its control
socket (fd 3, SOCK_SEQPACKET), and for every ``{"type": "spawn"}`` message,
which carries the new sandbox's channel, stdout and stderr as SCM_RIGHTS
descriptors, forks. The child isolates itself from its siblings
(become_sandbox) and then speaks the protocol above on its own channel; the
zygote never sees a script, an input or a result.

Nothing here is a security boundary: the jail around this process is. The
import policy below is defence in depth only.
"""

import os
import struct
import sys

CHANNEL_FD = 3
# The runner never sends more than the script cap plus the input cap; this
# bound only keeps a confused peer from making us allocate without limit.
MAX_INBOUND_FRAME = 64 << 20
SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE_NAME = "__script__"


def _read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(CHANNEL_FD, min(n, 1 << 20))
        if not chunk:
            raise EOFError("runner closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(msgpack, message):
    payload = msgpack.packb(message, use_bin_type=True)
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(CHANNEL_FD, view)
        view = view[written:]


def _receive(msgpack):
    (length,) = struct.unpack(">I", _read_exact(4))
    if length > MAX_INBOUND_FRAME:
        raise ValueError("frame of %d bytes is over the cap" % length)
    return msgpack.unpackb(_read_exact(length), raw=False)


class ForbiddenImport(ImportError):
    """Raised when the configured import policy refuses a module."""


class _DenyImports:
    """A meta path finder that refuses the configured top-level modules."""

    def __init__(self, denied):
        self.denied = frozenset(denied)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in self.denied:
            raise ForbiddenImport("import of %r is not allowed here" % fullname)
        return None


def _apply_limits(limits):
    """Lower this process's rlimits (soft and hard) before any script runs."""
    import resource

    def set_both(which, value):
        if value and value > 0:
            resource.setrlimit(which, (value, value))

    # RLIMIT_CPU counts the CPU this interpreter already used importing
    # numpy and pandas, so the script's allowance is added to it.
    cpu_seconds = limits.get("cpu_seconds", 0)
    if cpu_seconds > 0:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        # Soft limit sends SIGXCPU; the hard limit one second later is SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (used + cpu_seconds, used + cpu_seconds + 1))
    set_both(resource.RLIMIT_AS, limits.get("memory_bytes", 0))
    set_both(resource.RLIMIT_NPROC, limits.get("processes", 0))
    set_both(resource.RLIMIT_NOFILE, limits.get("open_files", 0))
    set_both(resource.RLIMIT_FSIZE, limits.get("file_size_bytes", 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# System calls no script needs that widen what a hostile one can reach: other
# processes' memory, the kernel's BPF, perf, keyring, module and kexec
# interfaces, and (once the sandbox is set up) mounts and namespaces.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "bpf", "perf_event_open", "userfaultfd", "add_key", "request_key", "keyctl",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_by_handle_at",
    "name_to_handle_at", "swapon", "swapoff", "reboot", "acct", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "quotactl",
)
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


class _Seccomp:
    """The sandbox's seccomp filter: built once, loaded before the script.

    Built at start-up (in fork mode, by the zygote, so every fork inherits
    it ready-made) and loaded before the sandbox says ready (in fork mode,
    after the sandbox has set up its namespaces and mounts, which the
    filter then forbids). Loading needs no privilege because no_new_privs is
    set (by the jail, or by the fork-mode sandbox itself).
    """

    def __init__(self):
        import errno

        import seccomp

        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(seccomp.ERRNO(errno.EPERM), name)
            except (RuntimeError, ValueError, OSError):
                pass  # not a system call on this architecture
        # No new namespaces: clone with any CLONE_NEW* flag is refused, and
        # clone3 (whose flags seccomp cannot see) reports ENOSYS so that
        # glibc falls back to clone for threads and fork.
        for flag in (1 << b for b in range(32) if CLONE_NAMESPACE_FLAGS & (1 << b)):
            f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        self.filter = f
        self.loaded = False

    def load(self):
        if not self.loaded:
            self.filter.load()
            self.loaded = True


class NotSerializable(Exception):
    def __init__(self, path, what):
        super().__init__("%s: %s" % (path or "result", what))


def to_json_value(value, path="", depth=0, _seen=None):
    """Turn what main returned into plain JSON values.

    numpy scalars become Python numbers, numpy arrays nested lists, tuples
    lists. NaN and +/-Infinity (float or numpy) become None, i.e. JSON null,
    the same choice as JavaScript's JSON.stringify. Dict keys must be str,
    int, float, bool or None and are turned into strings as json.dumps does.
    Anything else raises NotSerializable naming where it was found.
    """
    import math

    if depth > 500:
        raise NotSerializable(path, "nested more than 500 levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None

    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic):
            if isinstance(value, (np.bool_, np.integer, np.floating)):
                return to_json_value(value.item(), path, depth + 1, _seen)
            if isinstance(value, np.str_):
                return str(value)
            raise NotSerializable(path, "numpy scalar of type %s cannot be JSON" % value.dtype)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise NotSerializable(path, "numpy array of dtype %s cannot be JSON" % value.dtype)
            return to_json_value(value.tolist(), path, depth + 1, _seen)

    if isinstance(value, (list, tuple, dict)):
        seen = _seen if _seen is not None else set()
        if id(value) in seen:
            raise NotSerializable(path, "circular reference")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    out[_json_key(key, path)] = to_json_value(
                        item, "%s[%r]" % (path or "result", key), depth + 1, seen
                    )
                return out
            return [
                to_json_value(item, "%s[%d]" % (path or "result", i), depth + 1, seen)
                for i, item in enumerate(value)
            ]
        finally:
            seen.discard(id(value))
    raise NotSerializable(path, "object of type %s cannot be JSON" % type(value).__name__)


def _json_key(key, path):
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(key)
    raise NotSerializable(path, "dict key of type %s cannot be JSON" % type(key).__name__)


def _script_traceback(exc, source):
    """The traceback of exc limited to the frames of the script itself."""
    import linecache
    import traceback

    linecache.cache[SCRIPT_FILENAME] = (len(source), None, source.splitlines(True), SCRIPT_FILENAME)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SCRIPT_FILENAME]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def execute(message, syscall_filter):
    """Run the script of one execute message; return the reply message."""
    import json

    _apply_limits(message.get("limits") or {})
    syscall_filter.load()
    denied = message.get("deny_imports") or []
    if denied:
        # numpy and pandas may have imported a denied module already; drop
        # it from sys.modules so the script's import reaches the finder.
        for name in list(sys.modules):
            if name.split(".", 1)[0] in denied:
                del sys.modules[name]
        sys.meta_path.insert(0, _DenyImports(denied))

    source = message["script"]
    try:
        code = compile(source, SCRIPT_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return {
            "type": "error",
            "kind": "syntax_error",
            "message": "%s: %s" % (type(exc).__name__, exc.msg),
            "line": exc.lineno or 0,
            "offset": exc.offset or 0,
        }
    except (MemoryError, RecursionError) as exc:
        return {"type": "error", "kind": "syntax_error", "message": "the script is too complex to parse: %r" % exc}

    module = type(sys)(SCRIPT_MODULE_NAME)
    module.__file__ = SCRIPT_FILENAME
    sys.modules[SCRIPT_MODULE_NAME] = module

    def failure(exc, while_doing):
        if isinstance(exc, ForbiddenImport):
            kind = "forbidden_import"
        elif isinstance(exc, MemoryError):
            kind = "memory_limit"
        else:
            kind = "script_error"
        return {
            "type": "error",
            "kind": kind,
            "message": "%s %s: %s" % (while_doing, type(exc).__name__, exc),
            "traceback": _script_traceback(exc, source),
        }

    try:
        exec(code, module.__dict__)
    except BaseException as exc:
        return failure(exc, "running the script raised")

    main = module.__dict__.get("main")
    if not callable(main):
        return {"type": "error", "kind": "missing_main", "message": "the script defines no callable main()"}

    try:
        if message.get("has_input"):
            value = main(json.loads(message["input"]))
        else:
            value = main()
    except BaseException as exc:
        return failure(exc, "main raised")

    try:
        encoded = json.dumps(
            to_json_value(value), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except NotSerializable as exc:
        return {"type": "error", "kind": "result_not_serializable", "message": str(exc)}
    except MemoryError as exc:
        return {"type": "error", "kind": "memory_limit", "message": "encoding the result ran out of memory"}
    except RecursionError:
        return {"type": "error", "kind": "result_not_serializable", "message": "result is nested too deeply"}

    max_result = message.get("max_result_bytes", 0)
    if max_result and len(encoded) > max_result:
        return {
            "type": "error",
            "kind": "output_limit",
            "message": "the result is %d bytes, over the cap of %d bytes" % (len(encoded), max_result),
        }
    return {"type": "result", "result": encoded}


def serve_one(msgpack, syscall_filter):
    """Say ready on fd 3, run the one execute message, reply, exit."""
    sys.stdin = open(os.devnull)
    # Loaded before ready, so the request does not pay for it; execute()
    # loads it too (a no-op then) so no script can ever run without it.
    syscall_filter.load()
    _send(msgpack, {"type": "ready", "pid": os.getpid()})
    try:
        message = _receive(msgpack)
    except EOFError:
        os._exit(0)
    if message.get("type") != "execute":
        _send(msgpack, {"type": "error", "kind": "protocol", "message": "expected an execute message"})
        os._exit(2)

    try:
        reply = execute(message, syscall_filter)
    except MemoryError:
        reply = {"type": "error", "kind": "memory_limit", "message": "out of memory"}
    _flush_output()
    # The marker tells the runner that everything written to stdout and
    # stderr before the reply is in the pipes, so it need not wait for EOF.
    marker = message.get("output_marker") or b""
    if marker:
        for fd in (1, 2):
            try:
                os.write(fd, marker)
            except OSError:
                pass
    _send(msgpack, reply)
    # Threads the script left running must not keep the process alive.
    os._exit(0)


# --- fork mode -------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Exit codes of a sandbox that could not isolate itself; the runner only
# sees that it never said ready.
EXIT_ISOLATION_FAILED = 71


class _Libc:
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

    def mount(self, source, target, fstype, flags, data):
        enc = lambda v: v.encode() if v is not None else None
        self.check(self.lib.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), "mount " + target)

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


def become_sandbox(libc, msgpack, fds, tmp_bytes, zygote_pid, prewarm, syscall_filter):
    """Turn a fresh fork of the zygote into an isolated sandbox.

    Runs in the forked child, which is single-threaded (a requirement of
    unshare(CLONE_NEWUSER)). This process stays in the zygote's PID
    namespace as the sandbox's supervisor; its child, PID 1 of a new PID
    namespace, becomes the sandbox proper and never returns.
    """
    import signal

    channel, stdout, stderr = fds
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote_pid:
        os._exit(EXIT_ISOLATION_FAILED)
    # Keep only this sandbox's descriptors: fd 3 becomes its channel (which
    # also closes the zygote's control socket here), 1 and 2 its pipes.
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.dup2(channel, 3)
    os.closerange(4, 1 << 16)
    os.setsid()

    uid, gid = os.getuid(), os.getgid()
    libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write("%d %d 1" % (uid, uid))
    with open("/proc/self/gid_map", "w") as f:
        f.write("%d %d 1" % (gid, gid))
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    for target in ("/tmp", "/dev/shm"):
        libc.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,mode=1777" % tmp_bytes)

    child = os.fork()
    if child == 0:
        try:
            finish_isolation(libc, msgpack, prewarm, syscall_filter)
        except BaseException:
            os._exit(EXIT_ISOLATION_FAILED)
        serve_one(msgpack, syscall_filter)
        os._exit(0)

    # The supervisor: no output of its own, wait for the sandbox, report how
    # it ended on the channel (the runner cannot wait for it), exit.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    while True:
        try:
            _, status, usage = os.wait4(child, 0)
            break
        except InterruptedError:
            continue
    # The CPU time lets the runner tell the CPU limit's SIGKILL from any
    # other: as PID 1 of its namespace the sandbox never gets SIGXCPU.
    try:
        _send(msgpack, {"type": "exit", "status": status, "cpu_seconds": usage.ru_utime + usage.ru_stime})
    except OSError:
        pass
    os._exit(0)


def finish_isolation(libc, msgpack, prewarm, syscall_filter):
    """The sandbox's own steps as PID 1 of its namespace, before ready."""
    import random
    import signal

    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # Its own /proc: it sees only its own PID namespace, not its siblings.
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    import socket

    socket.sethostname("sandbox")
    # A fork shares the zygote's random state: reseed from the kernel.
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    libc.drop_capabilities()
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    # Not dumpable: no ptrace, no /proc/<pid>/mem or environ for anyone
    # but the kernel, even if some other process could name it.
    libc.prctl(PR_SET_DUMPABLE, 0)
    if prewarm:
        _prewarm(msgpack, syscall_filter)


# What _prewarm runs: the protocol, the module machinery, numpy, pandas and
# the JSON encoding, as a typical script would.
PREWARM_SCRIPT = """import numpy as np
import pandas as pd

def main(data):
    df = pd.DataFrame({"x": np.arange(16.0), "y": np.arange(16.0) * 2})
    print(end="")
    return {"n": len(data), "c": float(df["x"].corr(df["y"])), "m": df["y"].mean(), "a": np.arange(3)}
"""


def _prewarm(msgpack, syscall_filter):
    """Run one fixed script through the execute path before saying ready.

    A forked sandbox shares the zygote's memory copy-on-write: the first
    write to each page costs a fault and a copy, and CPython's first run of
    a code path rewrites it in place (quickening). Paying that here, while
    the sandbox waits in the pool, takes it off the request's path. The
    script is fixed and harmless; its module is removed afterwards.
    """
    message = {
        "type": "execute", "script": PREWARM_SCRIPT, "has_input": True, "input": "[1, 2]",
        "limits": {}, "deny_imports": [], "max_result_bytes": 0, "output_marker": b"",
    }
    try:
        execute(msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False), syscall_filter)
    except Exception:
        pass
    sys.modules.pop(SCRIPT_MODULE_NAME, None)


def zygote(tmp_bytes, prewarm, syscall_filter):
    """Import once, then fork one sandbox per spawn message, forever."""
    import gc
    import signal
    import socket

    import msgpack

    libc = _Libc()
    # Children are reaped by the kernel; the runner never needs their status
    # from here (each sandbox's supervisor reports it on its own channel).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control = socket.socket(fileno=CHANNEL_FD)
    zygote_pid = os.getpid()
    # Objects that exist now are shared copy-on-write with every fork; keep
    # the collector from touching (and so copying) them.
    gc.freeze()
    control.send(msgpack.packb({"type": "ready", "pid": zygote_pid}))
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)  # the runner closed the control socket
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                control.detach()  # fd 3 is reused for the channel; never close it via this object
                become_sandbox(libc, msgpack, fds, tmp_bytes, zygote_pid, prewarm, syscall_filter)
            except BaseException:
                pass
            os._exit(EXIT_ISOLATION_FAILED)
        for fd in fds:
            os.close(fd)


def main():
    # Arguments: [zygote] <comma-separated preload modules> [tmp bytes prewarm]
    args = sys.argv[1:]
    is_zygote = bool(args) and args[0] == "zygote"
    if is_zygote:
        args = args[1:]
    preload = [name for name in (args[0] if args else "").split(",") if name]
    for name in preload:
        __import__(name)
    import msgpack

    syscall_filter = _Seccomp()
    if is_zygote:
        zygote(int(args[1]), args[2] == "prewarm", syscall_filter)
    else:
        serve_one(msgpack, syscall_filter)


if __name__ == "__main__":
    main()
