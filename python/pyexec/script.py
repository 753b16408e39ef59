"""Running one script and turning its outcome into a reply message."""

import io
import sys
import types

SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE_NAME = "__script__"
# Values of an execute message's "entrypoint": call main (the default), or
# run the script as a notebook cell, whose last expression is the result.
ENTRYPOINT_MAIN, ENTRYPOINT_NONE = "main", "none"
# The global name a cell reads its input from (None without one).
CELL_INPUT = "INPUT"
# Where a cell's last expression is kept while it runs (then removed).
_CELL_RESULT = "__pyexec_cell_result__"
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


def _awaited(value):
    """value, or what it gives when awaited if it is a coroutine (async def
    main, or a cell with a top-level await): run on a fresh event loop, as
    asyncio.run does. asyncio is imported only then."""
    if isinstance(value, types.CoroutineType):
        import asyncio

        return asyncio.run(value)
    return value


class _ItemStream:
    """sys.stdout or sys.stderr of one batch item: what its Python code
    prints goes to the runner as "output" frames, a line at a time (and at
    every flush), so what an item printed before it hung or crashed is
    already with the runner when the sandbox is killed."""

    encoding = "utf-8"
    errors = "strict"
    # A frame carries at most this many characters (4 bytes each at most).
    CHUNK = 16384

    def __init__(self, send, stream):
        self.send, self.stream, self.pending = send, stream, []

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        self.pending.append(text)
        if "\n" in text or sum(map(len, self.pending)) >= self.CHUNK:
            self.flush()
        return len(text)

    def flush(self):
        self.send(*self.frames())

    def frames(self):
        """The pending text as output frames (none when there is none),
        which are then no longer pending."""
        text, self.pending = "".join(self.pending), []
        return [{"type": "output", "stream": self.stream, "text": _printed(text[start:start + self.CHUNK])}
                for start in range(0, len(text), self.CHUNK)]

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False


def _run_batch(msgpack, message, call, source, send):
    """call once per input of a batch, in order. Each item goes to the
    runner as its own "item" frame as soon as it is done, after "output"
    frames of what its Python code printed (sys.stdout and sys.stderr; what
    C code or os.write writes goes to the batch's own output): the runner
    keeps what finished even if a later input hangs, crashes or is killed."""
    from . import results

    encode = results.encoder(msgpack, message["result_format"])
    send({"type": "started"})
    for index, raw in enumerate(message["inputs"]):
        sys.stdin = _stdin(message["stdin"])  # every input reads it from its start
        out, err = _ItemStream(send, "stdout"), _ItemStream(send, "stderr")
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        item = {"type": "item", "index": index, "result": None, "kind": "", "message": "", "traceback": "",
                "line": 0, "offset": 0}
        try:
            item["result"] = encode(call(_decode(msgpack, message["input_format"], raw)))
        except results.NotSerializable as exc:
            item.update(kind="result_not_serializable", message=_clip(str(exc), MAX_MESSAGE_CHARS))
        except BaseException as exc:
            kind = "memory_limit" if isinstance(exc, MemoryError) else "script_error"
            item.update(kind=kind, message=_clip("%s %s: %s" % (call.raised, type(exc).__name__, exc), MAX_MESSAGE_CHARS),
                        traceback=_clip(_script_traceback(exc, source), MAX_TRACEBACK_CHARS))
        finally:
            sys.stdout, sys.stderr = saved
        # What is still pending and the item go in one write.
        send(*(out.frames() + err.frames() + [item]))
    return {"type": "results", "files": []}


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


def _with_figures(reply, max_files):
    """reply, after every figure the script left open has been drawn to
    its file (figures.py); or the error of drawing one. Only when pyplot
    was imported (by the script, or preloaded): nothing is imported here.
    More figures open than files may go back are refused before any is
    drawn (each costs tens of milliseconds)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return reply
    from . import figures

    if len(pyplot.get_fignums()) > max_files:
        return error("output_files_limit", "the script left %d figures open, more than the %d output files that may go back"
                     % (len(pyplot.get_fignums()), max_files))
    try:
        figures.capture_open(pyplot)
    except MemoryError:
        return error("memory_limit", "drawing an open figure ran out of memory")
    except Exception as exc:
        return error("script_error", "drawing an open figure raised %s: %s" % (type(exc).__name__, exc))
    return reply


def _with_output_files(message, reply):
    """reply with the files the script left in the output directory, or
    the error that says why they cannot go back."""
    from . import files

    caps = message["output_files"]
    reply = _with_figures(reply, caps["max_files"])
    if reply["type"] == "error":
        return reply
    try:
        reply["files"] = files.collect(caps["max_files"], caps["max_bytes"])
        return reply
    except files.FilesError as exc:
        failed = error(exc.kind, exc.message)
    except OSError as exc:
        failed = error("output_files_invalid", "cannot read the output directory: %s" % exc)
    return failed


def _cell(tree):
    """The code of a script run as a cell: its last statement, when it is
    an expression, is kept in _CELL_RESULT (as a notebook shows it); a
    top-level await is allowed (the code then runs as a coroutine)."""
    import ast

    body = tree.body
    if body and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(ast.Assign(targets=[ast.Name(id=_CELL_RESULT, ctx=ast.Store())], value=last.value), last)
        ast.fix_missing_locations(tree)
    return compile(tree, SCRIPT_FILENAME, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


class _CallMain:
    """One call of main: main(input), or main() without one; awaited when
    main is async."""

    raised = "main raised"

    def __init__(self, main):
        self.main = main

    def __call__(self, value, has_input=True):
        return _awaited(self.main(value) if has_input else self.main())


class _RunCell:
    """One run of a cell: its top-level code with INPUT bound to the input
    (None without one), in the script's module (shared by a batch's runs,
    as re-running a notebook cell shares its kernel); the value of its last
    expression, or None. A value that is a plot (df.plot()) is None: the
    figure itself comes back as a file."""

    raised = "the script raised"

    def __init__(self, code, namespace):
        self.code, self.namespace = code, namespace

    def __call__(self, value, has_input=True):
        from . import figures

        self.namespace[CELL_INPUT] = value
        self.namespace.pop(_CELL_RESULT, None)
        _awaited(eval(self.code, self.namespace))
        value = self.namespace.pop(_CELL_RESULT, None)
        return None if figures.is_plot(value) else value


def _nul_position(source):
    """The line and column (from 1) of the first NUL of source, or 0, 0."""
    at = source.find("\0")
    if at < 0:
        return 0, 0
    return source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at)


def run(msgpack, message, policy, send=None):
    """Run the script of one execute message; return the reply message.

    The script is parsed and checked against policy (pyexec/policy.py)
    before any of its code runs. The caller has applied the limits and the
    seccomp filter already. send(*messages) sends channel messages, in one
    write, before the reply (a batch's "started", "output" and "item"
    frames); by default on the channel.
    """
    import ast

    from . import files, policy as validation, protocol, results

    if send is None:
        def send(*frames):
            if frames:
                protocol.write_frame(b"".join(protocol.encode_frame(msgpack, frame) for frame in frames))

    denied = message["deny_imports"]
    if denied:
        # numpy and pandas may have imported a denied module already; drop
        # it from sys.modules so the script's import reaches the finder.
        for name in list(sys.modules):
            if name.split(".", 1)[0] in denied:
                del sys.modules[name]
        sys.meta_path.insert(0, DenyImports(denied))

    as_cell = message["entrypoint"] == ENTRYPOINT_NONE
    source = message["script"]
    try:
        tree = ast.parse(source, SCRIPT_FILENAME, "exec")
        try:
            # Compiled first (no code of it runs): the check reads what the
            # code mentions to skip its walk when no rule can match.
            code = _cell(tree) if as_cell else compile(tree, SCRIPT_FILENAME, "exec", dont_inherit=True)
        except SyntaxError:
            # A refusal is what the script hears first, as when the check
            # ran before the compiler.
            validation.check(tree, policy, need_main=not as_cell)
            raise
        validation.check(tree, policy, need_main=not as_cell, code=code)
    except SyntaxError as exc:
        line, offset = exc.lineno or 0, exc.offset or 0
        if not line and "\0" in source:
            # Python 3.13 refuses a NUL byte with a SyntaxError that has no
            # position: give the NUL's, as 3.11's ValueError gets below.
            line, offset = _nul_position(source)
        return error("syntax_error", "%s: %s" % (type(exc).__name__, exc.msg), line=line, offset=offset)
    except validation.Refusal as exc:
        return error(exc.kind, exc.message, line=exc.line, offset=exc.column)
    except (MemoryError, RecursionError) as exc:
        return error("syntax_error", "the script is too complex to parse: %r" % exc)
    except ValueError as exc:
        # Python 3.11 refuses a NUL byte with ValueError (3.12: SyntaxError).
        line, offset = _nul_position(source)
        return error("syntax_error", "SyntaxError: %s" % exc, line=line, offset=offset)

    sys.stdin = _stdin(message["stdin"])
    # A cell runs as "__main__", as a script run by python or a notebook
    # does, so a trailing `if __name__ == "__main__": main()` runs (main is
    # not called otherwise). With main as the entrypoint it is not
    # "__main__": that guard would call main a second time.
    module = type(sys)("__main__" if as_cell else SCRIPT_MODULE_NAME)
    module.__file__ = SCRIPT_FILENAME
    sys.modules[module.__name__] = module

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

    if as_cell:
        call = _RunCell(code, module.__dict__)
    else:
        try:
            exec(code, module.__dict__)
        except BaseException as exc:
            return failure(exc, "running the script raised")
        main = module.__dict__.get("main")
        if not callable(main):
            return error("missing_main", "the script defines no callable main()")
        call = _CallMain(main)
    if message["inputs"] is not None:
        return _with_output_files(message, _run_batch(msgpack, message, call, source, send))

    try:
        has_input, value = _decode_input(msgpack, message)
        value = call(value, has_input)
    except BaseException as exc:
        return failure(exc, call.raised)

    try:
        encoded = results.encoder(msgpack, message["result_format"])(value)
        return _with_output_files(message, {"type": "result", "result": encoded, "files": []})
    except results.NotSerializable as exc:
        return error("result_not_serializable", str(exc))
    except MemoryError:
        return error("memory_limit", "encoding the result ran out of memory")
    except RecursionError:
        return error("result_not_serializable", "result is nested too deeply")
