"""Running one script and turning its outcome into a reply message."""

import io
import sys

SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE_NAME = "__script__"
# Bounds of the texts an error reply carries; runner/protocol.go checks the
# same bounds and treats anything longer as a protocol error.
MAX_MESSAGE_CHARS = 4096
MAX_TRACEBACK_CHARS = 32768


class ForbiddenImport(ImportError):
    """Raised when the configured import policy refuses a module."""


class DenyImports:
    """A meta path finder that refuses the configured top-level modules."""

    def __init__(self, denied):
        self.denied = frozenset(denied)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in self.denied:
            raise ForbiddenImport("import of %r is not allowed here" % fullname)
        return None


def _clip(text, limit):
    """text cut to limit characters, keeping the end (where the error is)."""
    if len(text) <= limit:
        return text
    return "...[%d characters cut]...\n" % (len(text) - limit) + text[-limit:]


def error(kind, message, traceback="", line=0, offset=0):
    return {
        "type": "error",
        "kind": kind,
        "message": _clip(message, MAX_MESSAGE_CHARS),
        "traceback": _clip(traceback, MAX_TRACEBACK_CHARS),
        "line": line,
        "offset": offset,
    }


def _script_traceback(exc, source):
    """The traceback of exc limited to the frames of the script itself."""
    import linecache
    import traceback

    linecache.cache[SCRIPT_FILENAME] = (len(source), None, source.splitlines(True), SCRIPT_FILENAME)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SCRIPT_FILENAME]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.format_list(frames[-100:]))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


class NoStdin(io.TextIOBase):
    """sys.stdin of a request without "stdin": every read raises EOFError
    saying so (fd 0 itself stays /dev/null). A class made once, in the
    zygote: making one per request would cost the hot path."""

    def readable(self):
        return True

    def read(self, *args):
        raise EOFError('no stdin was given: send the text to read in the request\'s "stdin" field')

    readline = readlines = read


def _stdin(text):
    """What the script reads as sys.stdin: the request's "stdin" text, or a
    NoStdin."""
    return NoStdin() if text is None else io.StringIO(text)


def _decode(msgpack, fmt, raw):
    """One input, decoded as the runner encoded it."""
    import json

    if fmt == "json":
        return json.loads(raw)
    if fmt == "msgpack":
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    raise ValueError("unknown input format %r" % fmt)


def _decode_input(msgpack, message):
    """(has_input, value) of an execute message."""
    if message["input_format"] == "":
        return False, None
    return True, _decode(msgpack, message["input_format"], message["input"])


def _run_batch(msgpack, message, main, source):
    """main once per input of a batch, in order, each with the output its
    Python code printed (sys.stdout and sys.stderr; what C code or
    os.write writes goes to the batch's own output)."""
    import io

    from . import results

    encode = results.encoder(msgpack, message["result_format"])
    items = []
    for raw in message["inputs"]:
        sys.stdin = _stdin(message["stdin"])  # every input reads it from its start
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        item = {"result": None, "kind": "", "message": "", "traceback": "", "line": 0, "offset": 0}
        try:
            value = main(_decode(msgpack, message["input_format"], raw))
            item["result"] = encode(value)
        except results.NotSerializable as exc:
            item.update(kind="result_not_serializable", message=_clip(str(exc), MAX_MESSAGE_CHARS))
        except BaseException as exc:
            kind = "memory_limit" if isinstance(exc, MemoryError) else "script_error"
            item.update(kind=kind, message=_clip("main raised %s: %s" % (type(exc).__name__, exc), MAX_MESSAGE_CHARS),
                        traceback=_clip(_script_traceback(exc, source), MAX_TRACEBACK_CHARS))
        finally:
            sys.stdout, sys.stderr = saved
        item["stdout"], item["stderr"] = _printed(out.getvalue()), _printed(err.getvalue())
        items.append(item)
    return {"type": "results", "items": items, "files": []}


def _printed(text):
    """An item's printed text as valid UTF-8, as its bytes would have
    reached the real stdout: a surrogate escape is the byte it stands for,
    any other lone surrogate a "?", and the runner then shows each byte that
    is not UTF-8 as U+FFFD. Without this, one lone surrogate printed by one
    item made the whole batch's reply impossible to encode."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def _with_output_files(message, reply):
    """reply with the files the script left in the output directory, or
    the error that says why they cannot go back."""
    from . import files

    caps = message["output_files"]
    try:
        reply["files"] = files.collect(caps["max_files"], caps["max_bytes"])
        return reply
    except files.FilesError as exc:
        failed = error(exc.kind, exc.message)
    except OSError as exc:
        failed = error("output_files_invalid", "cannot read the output directory: %s" % exc)
    # A batch's items printed into buffers of their own: what they printed
    # goes to the sandbox's stdout and stderr, so the error answer keeps it.
    for item in reply.get("items", ()):
        sys.stdout.write(item["stdout"])
        sys.stderr.write(item["stderr"])
    return failed


def run(msgpack, message, policy):
    """Run the script of one execute message; return the reply message.

    The script is parsed and checked against policy (pyexec/policy.py)
    before any of its code runs. The caller has applied the limits and the
    seccomp filter already.
    """
    import ast

    from . import files, policy as validation, results

    denied = message["deny_imports"]
    if denied:
        # numpy and pandas may have imported a denied module already; drop
        # it from sys.modules so the script's import reaches the finder.
        for name in list(sys.modules):
            if name.split(".", 1)[0] in denied:
                del sys.modules[name]
        sys.meta_path.insert(0, DenyImports(denied))

    source = message["script"]
    try:
        tree = ast.parse(source, SCRIPT_FILENAME, "exec")
        validation.check(tree, policy)
        code = compile(tree, SCRIPT_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return error("syntax_error", "%s: %s" % (type(exc).__name__, exc.msg), line=exc.lineno or 0, offset=exc.offset or 0)
    except validation.Refusal as exc:
        return error(exc.kind, exc.message, line=exc.line, offset=exc.column)
    except (MemoryError, RecursionError) as exc:
        return error("syntax_error", "the script is too complex to parse: %r" % exc)
    except ValueError as exc:
        # Python 3.11 refuses a NUL byte with ValueError (3.12: SyntaxError).
        at = source.find("\0")
        line, offset = (source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at)) if at >= 0 else (0, 0)
        return error("syntax_error", "SyntaxError: %s" % exc, line=line, offset=offset)

    sys.stdin = _stdin(message["stdin"])
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
        return error(kind, "%s %s: %s" % (while_doing, type(exc).__name__, exc), _script_traceback(exc, source))

    # The request's files are in place before any of the script's code
    # runs. They fit: the server checked them against the caps, which fit
    # in the scratch tmpfs and under the file size limit.
    try:
        files.place(message["files"])
    except OSError as exc:
        return error("script_error", "cannot place the request's files in /tmp: %s" % exc)

    try:
        exec(code, module.__dict__)
    except BaseException as exc:
        return failure(exc, "running the script raised")

    main = module.__dict__.get("main")
    if not callable(main):
        return error("missing_main", "the script defines no callable main()")
    if message["inputs"] is not None:
        return _with_output_files(message, _run_batch(msgpack, message, main, source))

    try:
        has_input, value = _decode_input(msgpack, message)
        value = main(value) if has_input else main()
    except BaseException as exc:
        return failure(exc, "main raised")

    try:
        encoded = results.encoder(msgpack, message["result_format"])(value)
        return _with_output_files(message, {"type": "result", "result": encoded, "files": []})
    except results.NotSerializable as exc:
        return error("result_not_serializable", str(exc))
    except MemoryError:
        return error("memory_limit", "encoding the result ran out of memory")
    except RecursionError:
        return error("result_not_serializable", "result is nested too deeply")
