"""Python client of pyexec's HTTP API (POST /execute).

Standard library only; it speaks msgpack when the ``msgpack`` package can
be imported (integers stay exact, bytes stay bytes), JSON otherwise or when
asked. Copy this one file next to your code, or put its directory on
``sys.path``.

    from pyexec_client import Client, ScriptError

    client = Client("http://127.0.0.1:8080", token=os.environ.get("PYEXEC_AUTH_TOKEN"))
    res = client.execute("def main(xs):\\n    return sum(xs)\\n", input=[1, 2, 3])
    print(res.result, res.stdout, res.usage["cpu_ms"], res.request_id)

    try:
        client.execute("def main():\\n    raise ValueError('no')\\n")
    except ScriptError as e:
        print(e.message, e.traceback, e.stdout, e.retryable)

    batch = client.execute("def main(x):\\n    return 10 // x\\n", inputs=[1, 0, 5])
    for item in batch.results:
        print(item.error or item.result)

Every error the server reports raises the subclass of ``PyexecError`` named
for its type (``ScriptError`` for ``script_error``, ``OverloadedError`` for
``overloaded``, ...), with ``retryable`` as the server said. Retryable
failures (``overloaded``, ``shutting_down``, ``internal``, and a request
that got no answer at all: ``TransportError``) are retried with exponential
back-off and full jitter, waiting at least the server's ``Retry-After``;
nothing else is retried. A ``Client`` is safe to share between threads:
each thread keeps its own keep-alive connection; ``close()`` (or a ``with``
block) closes them all.
"""

import base64
import email.utils
import http.client
import json
import random
import socket
import threading
import time
import urllib.parse

try:
    import msgpack
except ImportError:  # the caller has no msgpack: JSON it is
    msgpack = None

__all__ = [
    "Client", "Result", "BatchItem", "OutputFile", "PyexecError", "TransportError",
    "ERROR_CLASSES", "error_class",
]

_MISSING = object()


class PyexecError(Exception):
    """A failure of a call: the server's typed error, or no answer at all.

    Attributes: ``type`` (the API's error type), ``message``, ``status``
    (HTTP status; 0 when there was no answer), ``retryable`` (the same
    request may succeed if sent again), ``traceback``, ``line`` and
    ``offset`` (syntax errors), ``stdout`` and ``stderr`` (what the script
    printed before it failed), ``timing`` and ``usage`` (when it ran),
    ``request_id`` (the id the server logged the request under),
    ``retry_after`` (seconds the server asked to wait, or None) and
    ``attempts`` (requests the call made).
    """

    type = None
    default_retryable = False

    def __init__(self, message, *, type=None, status=0, retryable=None, traceback="", line=None, offset=None,
                 stdout="", stderr="", timing=None, usage=None, request_id=None, retry_after=None):
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type
        self.status = status
        self.retryable = self.default_retryable if retryable is None else bool(retryable)
        self.traceback = traceback
        self.line = line
        self.offset = offset
        self.stdout = stdout
        self.stderr = stderr
        self.timing = timing
        self.usage = usage
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self):
        status = " %d" % self.status if self.status else ""
        return "pyexec%s %s: %s" % (status, self.type, self.message)


class TransportError(PyexecError):
    """The request got no answer (connection refused, reset, timed out)."""
    type = "transport"
    default_retryable = True


def _error(name, type_, retryable, doc):
    return type(name, (PyexecError,), {"type": type_, "default_retryable": retryable, "__doc__": doc})


# One class per error type of the API (docs/api.md: the error table). Names
# that would shadow a builtin (SyntaxError, TimeoutError) take a prefix.
InvalidRequestError = _error("InvalidRequestError", "invalid_request", False, "The request is malformed or asks for more than the maxima.")
PayloadTooLargeError = _error("PayloadTooLargeError", "payload_too_large", False, "The body is over the server's cap.")
UnsupportedMediaTypeError = _error("UnsupportedMediaTypeError", "unsupported_media_type", False,
                                   "The request's Content-Type is neither JSON nor msgpack.")
ScriptSyntaxError = _error("ScriptSyntaxError", "syntax_error", False, "The script does not parse (line, offset).")
MissingMainError = _error("MissingMainError", "missing_main", False, "The script has no callable main.")
ForbiddenImportError = _error("ForbiddenImportError", "forbidden_import", False, "The import policy refused a module.")
ForbiddenCallError = _error("ForbiddenCallError", "forbidden_call", False, "The validation policy refused a call.")
ScriptError = _error("ScriptError", "script_error", False, "main raised (traceback).")
ResultNotSerializableError = _error("ResultNotSerializableError", "result_not_serializable", False, "What main returned cannot be JSON.")
ScriptTimeoutError = _error("ScriptTimeoutError", "timeout", False, "The wall-clock limit passed; the sandbox was killed.")
MemoryLimitError = _error("MemoryLimitError", "memory_limit", False, "The memory limit ended the script.")
OutputLimitError = _error("OutputLimitError", "output_limit", False, "stdout, stderr or the result is over its cap.")
OutputFilesLimitError = _error("OutputFilesLimitError", "output_files_limit", False, "The files left in /tmp/output are over the caps.")
OutputFilesInvalidError = _error("OutputFilesInvalidError", "output_files_invalid", False, "A file left in /tmp/output cannot be returned.")
SandboxCrashedError = _error("SandboxCrashedError", "sandbox_crashed", False, "The sandbox died by a signal it brought on itself.")
ProtocolError = _error("ProtocolError", "protocol_error", False, "The sandbox sent something malformed on its channel.")
NotRunError = _error("NotRunError", "not_run", False, "A batch item that never ran: an earlier input ended the batch.")
UnauthorizedError = _error("UnauthorizedError", "unauthorized", False, "The bearer token is missing or wrong.")
NotFoundError = _error("NotFoundError", "not_found", False, "No such endpoint.")
MethodNotAllowedError = _error("MethodNotAllowedError", "method_not_allowed", False, "Wrong HTTP method.")
OverloadedError = _error("OverloadedError", "overloaded", True, "No sandbox became free in time (Retry-After).")
ShuttingDownError = _error("ShuttingDownError", "shutting_down", True, "The server stopped before the script finished.")
InternalError = _error("InternalError", "internal", True, "The service failed; quote request_id.")
ClientGoneError = _error("ClientGoneError", "client_gone", False, "The connection closed while the script ran.")

ERROR_CLASSES = {cls.type: cls for cls in (
    InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError, ScriptSyntaxError, MissingMainError, ForbiddenImportError,
    ForbiddenCallError, ScriptError, ResultNotSerializableError, ScriptTimeoutError, MemoryLimitError,
    OutputLimitError, OutputFilesLimitError, OutputFilesInvalidError, SandboxCrashedError, ProtocolError, NotRunError,
    UnauthorizedError, NotFoundError, MethodNotAllowedError, OverloadedError, ShuttingDownError, InternalError,
    ClientGoneError,
)}
for _cls in ERROR_CLASSES.values():
    __all__.append(_cls.__name__)


def error_class(type_):
    """The exception class of an error type (PyexecError for one unknown here)."""
    return ERROR_CLASSES.get(type_, PyexecError)


class OutputFile:
    """A file the script left in /tmp/output."""

    __slots__ = ("content", "size", "media_type")

    def __init__(self, content, size, media_type):
        self.content, self.size, self.media_type = content, size, media_type

    def __repr__(self):
        return "OutputFile(size=%d, media_type=%r)" % (self.size, self.media_type)


class BatchItem:
    """One input's outcome in a batch: ``result`` or ``error``, and what
    main printed for it."""

    __slots__ = ("result", "error", "stdout", "stderr")

    def __init__(self, result, error, stdout, stderr):
        self.result, self.error, self.stdout, self.stderr = result, error, stdout, stderr

    def value(self):
        """The result, or raise this input's error."""
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self):
        return "BatchItem(result=%r, error=%r)" % (self.result, self.error)


class Result:
    """A successful call. ``result`` is what main returned (None for a
    batch, whose outcomes are ``results``); ``files`` maps the names of the
    files left in /tmp/output to ``OutputFile``; ``timing`` and ``usage``
    are the server's dicts (milliseconds; ``cpu_ms``, ``max_rss_kb``)."""

    __slots__ = ("result", "results", "stdout", "stderr", "files", "timing", "usage", "request_id", "attempts")

    def __init__(self, result, results, stdout, stderr, files, timing, usage, request_id, attempts):
        self.result, self.results = result, results
        self.stdout, self.stderr, self.files = stdout, stderr, files
        self.timing, self.usage, self.request_id, self.attempts = timing, usage, request_id, attempts

    def __repr__(self):
        return "Result(result=%r, stdout=%r, request_id=%r)" % (self.result, self.stdout, self.request_id)


def parse_retry_after(value, now=None):
    """Seconds a Retry-After header asks to wait (delay seconds or an
    HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Client:
    """Calls one pyexec server.

    ``token``: sent as ``Authorization: Bearer``. ``use_msgpack``: None
    (default) speaks msgpack when it can be imported. ``max_retries``:
    retries of a retryable failure (0: none). ``retry_base``: the first
    back-off in seconds, doubled each time, with full jitter, and never
    shorter than the server's Retry-After. ``http_timeout``: seconds a
    connection may block (connect, send, wait for the answer); a call whose
    script runs longer fails with TransportError and the server kills the
    script when the connection closes. ``sleep`` and ``rand`` are for tests.
    """

    def __init__(self, url, token=None, *, use_msgpack=None, max_retries=3, retry_base=0.1, http_timeout=120.0,
                 sleep=time.sleep, rand=random.random):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("url must be http://host[:port] or https://host[:port], got %r" % url)
        if use_msgpack and msgpack is None:
            raise ValueError("use_msgpack=True, but the msgpack package cannot be imported")
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, parsed.port
        self._base = parsed.path.rstrip("/")
        self.token = token
        self.use_msgpack = (msgpack is not None) if use_msgpack is None else bool(use_msgpack)
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.http_timeout = http_timeout
        self._sleep, self._rand = sleep, rand
        self._local = threading.local()
        # Every thread's connection, so close() reaches them all.
        self._conns_lock = threading.Lock()
        self._conns = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the API ---------------------------------------------------------

    def execute(self, script, input=_MISSING, *, inputs=None, files=None, timeout_ms=None, memory_mb=None,
                request_id=None, **fields):
        """Run ``script`` and return a Result, or raise the PyexecError
        subclass of its error type.

        ``input`` is passed to ``main(input)`` (``main()`` when omitted);
        ``inputs`` (a list) makes a batch: main once per element, one
        sandbox. ``files`` maps names relative to /tmp to bytes (or str).
        ``request_id`` is sent as X-Request-Id on every attempt. Other
        keyword arguments are sent as request fields as they are.
        """
        if inputs is not None and input is not _MISSING:
            raise ValueError("pass input or inputs, not both")
        body = {"script": script}
        if input is not _MISSING:
            body["input"] = input
        if inputs is not None:
            body["inputs"] = list(inputs)
        if files is not None:
            body["files"] = {name: self._file_out(content) for name, content in files.items()}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        if memory_mb is not None:
            body["memory_mb"] = memory_mb
        body.update(fields)
        if self.use_msgpack:
            payload, content_type = msgpack.packb(body, use_bin_type=True), "application/msgpack"
        else:
            payload, content_type = json.dumps(body).encode("utf-8"), "application/json"
        return self._with_retries(lambda: self._execute_once(payload, content_type, request_id))

    def health(self):
        """GET /health, as a dict (also when it answers 503)."""
        status, headers, raw = self._request("GET", "/health", None, {})
        return json.loads(raw.decode("utf-8"))

    def close(self):
        """Close the connections of every thread. The client stays usable:
        a later call opens a new one."""
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()
        self._local.conn = None

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            with self._conns_lock:
                self._conns.discard(conn)
            self._local.conn = None

    # -- one attempt -----------------------------------------------------

    def _execute_once(self, payload, content_type, request_id):
        headers = {"Content-Type": content_type}
        if request_id:
            headers["X-Request-Id"] = request_id
        status, resp_headers, raw = self._request("POST", "/execute", payload, headers)
        answer_id = resp_headers.get("X-Request-Id")
        media = (resp_headers.get("Content-Type") or "").split(";")[0].strip().lower()
        as_msgpack = media in ("application/msgpack", "application/vnd.msgpack")
        decode_error = None
        try:
            if as_msgpack:
                if msgpack is None:
                    raise ValueError("a msgpack answer, and no msgpack package")
                doc = msgpack.unpackb(raw, raw=False)
            else:
                doc = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            doc = None
            decode_error = e
        if status != 200:
            err_fields = doc.get("error") if isinstance(doc, dict) else None
            if not isinstance(err_fields, dict) or not err_fields.get("type"):
                text = raw.decode("utf-8", "replace").strip()
                raise PyexecError(text or "HTTP %d" % status, type="http", status=status, retryable=status >= 500,
                                  request_id=answer_id,
                                  retry_after=parse_retry_after(resp_headers.get("Retry-After")))
            raise self._error_from(err_fields, doc, status, answer_id, resp_headers.get("Retry-After"))
        if not isinstance(doc, dict):
            raise PyexecError("cannot decode the answer: %s" % decode_error, type="http", status=status,
                              request_id=answer_id)
        results = None
        if "results" in doc:
            results = []
            for item in doc["results"]:
                err = item.get("error")
                error = None
                if err:
                    error = self._error_from(err, item, 0, answer_id, None)
                results.append(BatchItem(item.get("result"), error, item.get("stdout", ""), item.get("stderr", "")))
        files = None
        if doc.get("files"):
            files = {name: OutputFile(self._file_in(f["content"]), f.get("size"), f.get("media_type"))
                     for name, f in doc["files"].items()}
        return Result(doc.get("result"), results, doc.get("stdout", ""), doc.get("stderr", ""), files,
                      doc.get("timing"), doc.get("usage"), answer_id, 1)

    def _error_from(self, fields, doc, status, request_id, retry_after):
        cls = error_class(fields.get("type"))
        return cls(fields.get("message", ""), type=fields.get("type"), status=status,
                   retryable=fields.get("retryable"), traceback=fields.get("traceback", ""),
                   line=fields.get("line"), offset=fields.get("offset"),
                   stdout=doc.get("stdout", ""), stderr=doc.get("stderr", ""),
                   timing=doc.get("timing"), usage=doc.get("usage"),
                   request_id=fields.get("request_id") or request_id,
                   retry_after=parse_retry_after(retry_after))

    def _file_out(self, content):
        if isinstance(content, str):
            content = content.encode("utf-8")
        if self.use_msgpack:
            return bytes(content)
        return base64.b64encode(content).decode("ascii")

    @staticmethod
    def _file_in(content):
        if isinstance(content, (bytes, bytearray)):
            return bytes(content)
        return base64.b64decode(content)

    # -- retries ---------------------------------------------------------

    def _with_retries(self, attempt_once):
        delay = self.retry_base
        attempt = 1
        while True:
            try:
                res = attempt_once()
                res.attempts = attempt
                return res
            except PyexecError as e:
                e.attempts = attempt
                if not e.retryable or attempt > self.max_retries:
                    raise
                # Full jitter: callers that failed together do not come
                # back together; the server's Retry-After is a floor.
                wait = self._rand() * delay
                if e.retry_after is not None:
                    wait = max(wait, e.retry_after)
                self._sleep(wait)
                delay *= 2
                attempt += 1

    # -- HTTP ------------------------------------------------------------

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.http_timeout)
            with self._conns_lock:
                self._conns.add(conn)
            self._local.conn = conn
            self._local.used = False
        return conn

    def _request(self, method, path, body, headers):
        headers = dict(headers)
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        # A keep-alive connection the server closed while idle fails
        # before any answer: that one failure is retried at once on a new
        # connection. Any other failure is a TransportError.
        for fresh_try in (False, True):
            conn = self._connection()
            reused = self._local.used
            try:
                conn.request(method, self._base + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop_connection()
                if reused and not fresh_try:
                    continue
                raise TransportError("request failed: %s" % (e or type(e).__name__)) from e
            except (TimeoutError, socket.timeout) as e:  # one class since 3.10
                # http_timeout passed: the script may still be running
                # long; sending it again would run it again. Not retried.
                self._drop_connection()
                raise TransportError("no answer within http_timeout (%s s)" % self.http_timeout,
                                     retryable=False) from e
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise TransportError("request failed: %s" % (e or type(e).__name__)) from e
            self._local.used = True
            if resp.will_close:
                self._drop_connection()
            return resp.status, resp.headers, raw
        raise AssertionError("unreachable")
