"""Tests of pyexec_client against the real server.

Run through `go test ./client -run TestPythonClient` (make test does), which
starts the server with one running slot and a 200 ms acquire timeout, and
passes its address and token in PYEXEC_URL and PYEXEC_TOKEN. The tests that
need no server run anyway.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyexec_client  # noqa: E402
from pyexec_client import (  # noqa: E402
    Client, PyexecError, ScriptError, ScriptSyntaxError, ScriptTimeoutError, TransportError, UnauthorizedError,
    OverloadedError, InvalidRequestError,
)

URL = os.environ.get("PYEXEC_URL")
TOKEN = os.environ.get("PYEXEC_TOKEN")
OPENAPI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "api", "openapi.yaml")


def needs_server(cls):
    return unittest.skipUnless(URL, "PYEXEC_URL unset: run through go test ./client -run TestPythonClient")(cls)


class OfflineTest(unittest.TestCase):
    def test_every_error_type_has_its_class(self):
        # The enum of the error type in api/openapi.yaml.
        with open(OPENAPI, encoding="utf-8") as f:
            text = f.read()
        m = re.search(r"^    Error:\n(?:      .*\n)*?        type:\n          type: string\n"
                      r"(?:          (?!enum:).*\n)*          enum: \[([^\]]*)\]", text, re.M)
        self.assertIsNotNone(m, "no Error.type enum in api/openapi.yaml")
        types = [t.strip() for t in m.group(1).split(",")]
        self.assertGreater(len(types), 10)
        for t in types:
            cls = pyexec_client.error_class(t)
            self.assertIsNot(cls, PyexecError, "no class for %s" % t)
            self.assertTrue(issubclass(cls, PyexecError))
            self.assertEqual(cls.type, t)
        self.assertTrue(OverloadedError.default_retryable)
        self.assertFalse(ScriptError.default_retryable)

    def test_retry_after(self):
        self.assertEqual(pyexec_client.parse_retry_after("2"), 2.0)
        self.assertEqual(pyexec_client.parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4), 6.0)
        self.assertIsNone(pyexec_client.parse_retry_after("soon"))
        self.assertIsNone(pyexec_client.parse_retry_after(None))

    def test_transport_errors_are_retried_with_back_off(self):
        # A loopback port nothing listens on: refused at once.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        waits = []
        c = Client("http://127.0.0.1:%d" % port, max_retries=3, retry_base=0.5, sleep=waits.append, rand=lambda: 1.0)
        with self.assertRaises(TransportError) as cm:
            c.execute("def main(): pass")
        self.assertTrue(cm.exception.retryable)
        self.assertEqual(cm.exception.attempts, 4)
        self.assertEqual(waits, [0.5, 1.0, 2.0])

    def test_no_answer_within_http_timeout_is_not_retried(self):
        # A loopback listener that never answers: the script behind a real
        # one may still be running, and sending it again would run it twice.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(4)
            waits = []
            with Client("http://127.0.0.1:%d" % s.getsockname()[1], http_timeout=0.3, sleep=waits.append) as c:
                with self.assertRaises(TransportError) as cm:
                    c.execute("def main(): pass")
            self.assertEqual((cm.exception.retryable, cm.exception.attempts, waits), (False, 1, []))

    def test_without_msgpack_it_speaks_json(self):
        # A fresh interpreter where `import msgpack` fails, as for a caller
        # without the package.
        code = """
import sys
sys.modules["msgpack"] = None
sys.path.insert(0, %r)
import pyexec_client as mod
assert mod.msgpack is None
assert not mod.Client("http://127.0.0.1:1").use_msgpack
try:
    mod.Client("http://127.0.0.1:1", use_msgpack=True)
    raise SystemExit("use_msgpack=True accepted without msgpack")
except ValueError:
    pass
if len(sys.argv) > 1:
    res = mod.Client(sys.argv[1], sys.argv[2]).execute("def main(x):\\n    return x * 2\\n", input=21)
    assert res.result == 42, res
print("json ok")
""" % os.path.dirname(os.path.abspath(__file__))
        args = [sys.executable, "-c", code] + ([URL, TOKEN or ""] if URL else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "json ok"), out.stderr)


@needs_server
class ServerTest(unittest.TestCase):
    def client(self, token=TOKEN, **kw):
        c = Client(URL, token, **kw)
        self.addCleanup(c.close)
        return c

    def clients(self):
        for use_msgpack in (True, False):
            with self.subTest(msgpack=use_msgpack):
                yield use_msgpack, self.client(use_msgpack=use_msgpack)

    def test_result_output_timing_usage_and_request_id(self):
        for use_msgpack, c in self.clients():
            res = c.execute("def main(x):\n    print('hi')\n    return {'sum': sum(x['xs']) + x['big'], 'kind': type(x['raw']).__name__}\n",
                            input={"xs": [1, 2, 3], "big": 1 << 40, "raw": b"\x00\x01"} if use_msgpack else
                            {"xs": [1, 2, 3], "big": 1 << 40, "raw": "text"})
            self.assertEqual(res.result, {"sum": 6 + (1 << 40), "kind": "bytes" if use_msgpack else "str"})
            self.assertEqual(res.stdout, "hi\n")
            self.assertEqual(res.attempts, 1)
            self.assertGreater(res.usage["max_rss_kb"], 0)
            self.assertGreaterEqual(res.timing["total_ms"], res.timing["exec_ms"])
            self.assertTrue(res.request_id)
            res = c.execute("def main():\n    return None\n", request_id="py-trace-7")
            self.assertIsNone(res.result)
            self.assertEqual(res.request_id, "py-trace-7")

    def test_files_are_bytes_in_and_out(self):
        payload = bytes(range(256)) + b"\xff\xfe\x00"
        for _, c in self.clients():
            res = c.execute("from pathlib import Path\n"
                            "def main():\n"
                            "    data = Path('in/blob.bin').read_bytes()\n"
                            "    Path('output/rev.bin').write_bytes(data[::-1])\n"
                            "    Path('output/note.txt').write_text('ok')\n"
                            "    return len(data)\n",
                            files={"in/blob.bin": payload})
            self.assertEqual(res.result, len(payload))
            self.assertEqual(res.files["rev.bin"].content, payload[::-1])
            self.assertEqual(res.files["rev.bin"].size, len(payload))
            self.assertEqual(res.files["note.txt"].content, b"ok")
            self.assertEqual(res.files["note.txt"].media_type, "text/plain")

    def test_batch(self):
        for _, c in self.clients():
            res = c.execute("def main(x):\n    print(x)\n    return 10 // x\n", inputs=[1, 0, 5])
            self.assertIsNone(res.result)
            self.assertEqual([r.result for r in res.results], [10, None, 2])
            self.assertEqual([r.stdout for r in res.results], ["1\n", "0\n", "5\n"])
            self.assertIsInstance(res.results[1].error, ScriptError)
            self.assertIn("ZeroDivisionError", res.results[1].error.traceback)
            with self.assertRaises(ScriptError):
                res.results[1].value()
            self.assertEqual(res.results[2].value(), 2)
        with self.assertRaises(ValueError):
            c.execute("def main(x): pass", input=1, inputs=[1])

    def test_typed_errors_keep_output_and_are_not_retried(self):
        for _, c in self.clients():
            waits = []
            c._sleep = waits.append
            with self.assertRaises(ScriptError) as cm:
                c.execute("def main():\n    print('before')\n    raise ValueError('boom')\n")
            e = cm.exception
            self.assertEqual((e.status, e.type, e.retryable, e.stdout, e.attempts), (422, "script_error", False, "before\n", 1))
            self.assertIn("ValueError: boom", e.traceback)
            self.assertTrue(e.request_id)
            self.assertIsNotNone(e.usage)
            with self.assertRaises(ScriptSyntaxError) as cm:
                c.execute("def main(:\n")
            self.assertEqual((cm.exception.status, cm.exception.line), (400, 1))
            with self.assertRaises(ScriptTimeoutError) as cm:
                c.execute("import time\ndef main():\n    print('started', flush=True)\n    time.sleep(5)\n", timeout_ms=300)
            self.assertEqual(cm.exception.stdout, "started\n")
            with self.assertRaises(InvalidRequestError):
                c.execute("def main(): pass", timeout_ms=10 ** 9)
            self.assertEqual(waits, [])

    def test_wrong_token(self):
        waits = []
        with self.assertRaises(UnauthorizedError) as cm:
            self.client("nope", sleep=waits.append).execute("def main(): pass")
        self.assertEqual((cm.exception.status, cm.exception.retryable, waits), (401, False, []))

    def test_overloaded_is_retried_honouring_retry_after(self):
        # The server has one running slot; a slow script holds it, and the
        # next request is refused (503 overloaded, Retry-After: 1) until it
        # frees.
        errors = []

        def slow():
            try:
                self.client().execute("import time\ndef main():\n    time.sleep(1.5)\n")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def hold_the_slot():
            t = threading.Thread(target=slow)
            t.start()
            deadline = time.monotonic() + 10
            while self.client().health()["pool"].get("busy", 0) < 1:
                self.assertLess(time.monotonic(), deadline, "the slow script never started")
                time.sleep(0.02)
            return t

        t = hold_the_slot()
        waits = []

        def sleep(s):
            waits.append(s)
            time.sleep(s)

        c = self.client(max_retries=10, retry_base=0.05, sleep=sleep)
        res = c.execute("def main():\n    return 1\n")
        t.join()
        self.assertEqual(errors, [])
        self.assertEqual(res.result, 1)
        self.assertGreaterEqual(res.attempts, 2)
        # Retry-After (1 s) is a floor under the jittered back-off (50 ms).
        self.assertTrue(waits and min(waits) >= 1.0, waits)

        # Without retries the caller sees the typed, retryable error.
        t = hold_the_slot()
        with self.assertRaises(OverloadedError) as cm:
            self.client(max_retries=0).execute("def main():\n    return 1\n")
        t.join()
        self.assertEqual((cm.exception.status, cm.exception.retryable, cm.exception.retry_after), (503, True, 1.0))

    def test_keep_alive_survives_a_closed_connection(self):
        c = self.client()
        self.assertEqual(c.execute("def main():\n    return 1\n").result, 1)
        # The server closing an idle connection looks like this to the
        # client: the next request on it fails before any answer.
        c._local.conn.sock.shutdown(socket.SHUT_RDWR)
        self.assertEqual(c.execute("def main():\n    return 2\n").result, 2)

    def test_health(self):
        h = self.client().health()
        self.assertEqual(h["status"], "healthy")


if __name__ == "__main__":
    unittest.main()
