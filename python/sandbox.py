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
* The runner then sends exactly one ``{"type": "execute", ...}`` message.
  The sandbox applies the limits it carries, runs the script, and answers
  with one ``{"type": "result", ...}`` or ``{"type": "error", ...}``. Then it
  exits; the runner kills whatever is left of the sandbox anyway.

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


def execute(message):
    """Run the script of one execute message; return the reply message."""
    import json

    _apply_limits(message.get("limits") or {})
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


def main():
    # The preload list is the only argument: comma-separated module names.
    preload = [name for name in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if name]
    for name in preload:
        __import__(name)
    import msgpack

    sys.stdin = open(os.devnull)
    _send(msgpack, {"type": "ready", "pid": os.getpid()})
    try:
        message = _receive(msgpack)
    except EOFError:
        os._exit(0)
    if message.get("type") != "execute":
        _send(msgpack, {"type": "error", "kind": "protocol", "message": "expected an execute message"})
        os._exit(2)

    try:
        reply = execute(message)
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


if __name__ == "__main__":
    main()
