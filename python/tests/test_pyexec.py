"""Unit tests of the pyexec modules that run without a jail.

Run by python/python_test.go (go test ./python/) with /usr/bin/python3.
"""

import json
import math
import unittest

import msgpack
import numpy as np

import os
import sys
import tempfile

from pyexec import files, protocol, results, script, zygote


class ResultsTest(unittest.TestCase):
    def test_plain_values_and_numpy(self):
        value = {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(3), "d": (1, 2), 1: None, "e": math.nan}
        self.assertEqual(results.to_json_value(value), {"a": 3, "b": 0.5, "c": [0, 1, 2], "d": [1, 2], "1": None, "e": None})

    def test_unmappable_names_the_path(self):
        with self.assertRaises(results.NotSerializable) as caught:
            results.to_json_value({"x": [1, object()]})
        self.assertIn("result['x'][1]", str(caught.exception))

    def test_circular(self):
        loop = []
        loop.append(loop)
        with self.assertRaises(results.NotSerializable):
            results.to_json_value(loop)

    def test_lone_surrogate_is_not_serializable(self):
        with self.assertRaises(results.NotSerializable):
            results.encode("\ud800")

    def test_encode_is_compact_utf8(self):
        self.assertEqual(results.encode({"k": ["é", 1.5]}), '{"k":["é",1.5]}'.encode())

    def test_keys_that_become_one_json_key_are_not_serializable(self):
        # Each dict has two keys that json.dumps would write as one: the
        # object would keep one value and drop the other.
        cases = [
            ({1: "int-key", "1": "str-key"}, "result", "1", "'1'", '"1"'),
            ({"1": "str-key", 1: "int-key"}, "result", "'1'", "1", '"1"'),
            ({True: "bool", "true": "s"}, "result", "True", "'true'", '"true"'),
            ({"x": {None: 1, "null": 2}}, "result['x']", "None", "'null'", '"null"'),
            ([{1.5: 1, "1.5": 2}], "result[0]", "1.5", "'1.5'", '"1.5"'),
        ]
        for value, path, earlier, later, json_key in cases:
            with self.assertRaises(results.NotSerializable, msg=repr(value)) as caught:
                results.encode(value)
            message = str(caught.exception)
            self.assertTrue(message.startswith(path + ": "), message)
            self.assertIn("%s and %s both become the JSON key %s" % (earlier, later, json_key), message)
        # Keys that stay apart are kept, every one.
        self.assertEqual(json.loads(results.encode({1: "a", "2": "b", False: "c", None: "d", 1.5: "e"})),
                         {"1": "a", "2": "b", "false": "c", "null": "d", "1.5": "e"})

    def test_script_with_colliding_keys_gets_result_not_serializable(self):
        reply = execute("def main():\n    return {1: 'int-key', '1': 'str-key'}\n")
        self.assertEqual(reply["kind"], "result_not_serializable")
        self.assertIn('JSON key "1"', reply["message"])


class ProtocolTest(unittest.TestCase):
    def test_shapes_are_checked_both_ways(self):
        protocol.check_shape({"type": "ready"}, protocol.CHANNEL_MESSAGES)
        with self.assertRaises(protocol.ProtocolError):
            protocol.check_shape({"type": "ready", "pid": 1}, protocol.CHANNEL_MESSAGES)
        with self.assertRaises(protocol.ProtocolError):
            protocol.check_shape({"type": "nope"}, protocol.CHANNEL_MESSAGES)
        with self.assertRaises(protocol.ProtocolError):
            protocol.control_packet(msgpack, {"type": "exit", "id": 1})

    def test_every_reply_script_makes_has_its_declared_shape(self):
        for message in (script.error("script_error", "m"),
                        {"type": "result", "result": b"1", "files": []}):
            protocol.check_shape(message, protocol.CHANNEL_MESSAGES)


NO_OUTPUT_FILES = {"max_files": 0, "max_bytes": 0}


def execute(source, input_format="", raw=None, entrypoint="main", inputs=None, policy=None, max_files=0, stdin=None,
            result_format="json"):
    """The reply to one execute message, checked against its declared
    shape; a batch's streamed frames are in the reply's "frames"."""
    message = {"type": "execute", "script": source, "entrypoint": entrypoint, "input": raw, "inputs": inputs,
               "input_format": input_format, "stdin": stdin, "result_format": result_format, "limits": {},
               "deny_imports": [], "files": [], "output_files": {"max_files": max_files, "max_bytes": 1 << 22}}
    frames = []

    def send(*sent):
        for frame in sent:
            protocol.check_shape(frame, protocol.CHANNEL_MESSAGES)
            msgpack.packb(frame, use_bin_type=True)  # every frame encodes
            frames.append(frame)

    import sys

    main_module = sys.modules["__main__"]  # a cell runs as __main__
    try:
        reply = script.run(msgpack, message, policy or {"name": "none", "deny_imports": [], "deny_calls": []}, send)
    finally:
        sys.modules["__main__"] = main_module
    protocol.check_shape(reply, protocol.CHANNEL_MESSAGES)
    if inputs is not None:
        reply = dict(reply, frames=frames)
    return reply


class ScriptTest(unittest.TestCase):
    def test_result(self):
        self.assertEqual(execute("def main():\n    return [1, 'a']\n"), {"type": "result", "result": b'[1,"a"]', "files": []})

    def test_json_and_msgpack_input(self):
        self.assertEqual(execute("def main(x):\n    return x\n", "json", b'{"n": 12345678901234567890}')["result"],
                         b'{"n":12345678901234567890}')
        raw = msgpack.packb({"b": b"\x00\xff", "n": 2**64 - 1}, use_bin_type=True)
        reply = execute("def main(x):\n    return [type(x['b']).__name__, x['n']]\n", "msgpack", raw)
        self.assertEqual(json.loads(reply["result"]), ["bytes", 2**64 - 1])

    def test_syntax_error_has_a_location(self):
        reply = execute("def main(:\n")
        self.assertEqual((reply["kind"], reply["line"]), ("syntax_error", 1))

    def test_missing_main(self):
        self.assertEqual(execute("x = 1\n")["kind"], "missing_main")

    def test_the_warm_up_runs_the_whole_way(self):
        # A warm-up that fails half-way leaves every request to pay for the
        # rest: its message has every key, and it ends in a result.
        protocol.check_shape(zygote.PREWARM_MESSAGE, protocol.CHANNEL_MESSAGES)
        main_module = sys.modules["__main__"]
        try:
            reply = zygote._prewarm(msgpack, {"name": "seed", "deny_imports": [], "deny_calls": []})
        finally:
            sys.modules["__main__"] = main_module
        self.assertEqual(reply["type"], "result", reply)
        self.assertEqual(json.loads(reply["result"])["n"], 2)

    def test_stdin(self):
        source = "import sys\ndef main():\n    return [input(), sys.stdin.read()]\n"
        self.assertEqual(json.loads(execute(source, stdin="a\nb\nc")["result"]), ["a", "b\nc"])
        reply = execute(source)
        self.assertEqual(reply["kind"], "script_error")
        self.assertIn("EOFError: no stdin was given", reply["message"])
        self.assertIn('"stdin"', reply["message"])

    def test_nul_byte_is_a_syntax_error(self):
        reply = execute("x = 1\ndef main():\n    return 'a\0'\n")
        self.assertEqual((reply["kind"], reply["line"], reply["offset"]), ("syntax_error", 3, 14))
        self.assertIn("null bytes", reply["message"])

    def test_msgpack_result_format(self):
        reply = execute("def main():\n    return {'b': b'\\x00', 'n': 10**30}\n", result_format="msgpack")
        self.assertEqual(msgpack.unpackb(reply["result"]), {"b": b"\x00", "n": str(10**30)})

    def test_texts_are_bounded(self):
        reply = execute("def main():\n    raise ValueError('x' * 100000)\n")
        self.assertEqual(reply["kind"], "script_error")
        self.assertLessEqual(len(reply["message"]), script.MAX_MESSAGE_CHARS + 40)
        self.assertLessEqual(len(reply["traceback"]), script.MAX_TRACEBACK_CHARS + 40)


if __name__ == "__main__":
    unittest.main()


SEED = {"name": "seed",
        "deny_imports": ["subprocess", "socket", "urllib.request", "http.client", "http.server"],
        "deny_calls": ["eval", "exec", "__import__", "open", "io.open", "os.listdir", "os.walk", "glob.glob", "os.system",
                       "os.popen", "os.exec*", "os.spawn*", "importlib.import_module"]}


class PolicyTest(unittest.TestCase):
    def refusal(self, source):
        """The refusal of source, or None: the same with the walk of the
        tree alone and with the compiled code that lets the walk be skipped
        (what script.run does)."""
        import ast

        from pyexec import policy

        def verdict(code):
            try:
                policy.check(ast.parse(source), SEED, code=code)
            except policy.Refusal as exc:
                return exc.kind, exc.line, exc.column, exc.message
            return None

        walked = verdict(None)
        self.assertEqual(verdict(compile(source, "<script>", "exec", dont_inherit=True)), walked, source)
        return walked

    def test_the_compiled_code_shows_what_python_reads(self):
        # The skip of the walk sees names as Python reads them: normalized
        # identifiers, decoded escapes, joined literals, annotations kept as
        # text, names a class reads from its function.
        for source in ("def main():\n    return \uff45\uff56\uff41\uff4c('1')\n",
                       "import os\ndef main():\n    getattr(os, 'sys\\x74em')('x')\n",
                       "import os\ndef main():\n    getattr(os, 'sys' 'tem')('x')\n",
                       "from __future__ import annotations\ndef main(x: list[eval]):\n    pass\n",
                       "def main():\n    class A:\n        x = open\n    return A\n",
                       "def main():\n    open = 1\n    class A:\n        x = open\n    return A\n",
                       "from os import *\ndef main():\n    pass\n",
                       "import http.server\ndef main():\n    pass\n"):
            got = self.refusal(source)
            self.assertIsNotNone(got, source)

    def test_what_python_never_evaluates_may_go_unchecked(self):
        # An annotation of a local variable is compiled away: the walk
        # refuses its name, the compiled code does not mention it, and it
        # can never run.
        import ast

        from pyexec import policy

        source = "def main():\n    x: eval = 1\n    return x\n"
        with self.assertRaises(policy.Refusal):
            policy.check(ast.parse(source), SEED)
        policy.check(ast.parse(source), SEED, code=compile(source, "<script>", "exec"))
        import contextlib
        import io

        namespace, printed = {}, io.StringIO()
        exec(compile(source.replace("eval", "print('evaluated')"), "<script>", "exec"), namespace)
        with contextlib.redirect_stdout(printed):
            self.assertEqual(namespace["main"](), 1)
        self.assertEqual(printed.getvalue(), "", "the annotation was evaluated")

    def test_scripts_that_mention_no_rule_skip_the_walk(self):
        import ast

        from pyexec import policy

        walks = []

        class Counting(policy._Checker):
            def visit(self, node):
                walks.append(node)
                return super().visit(node)

        original = policy._Checker
        policy._Checker = Counting
        try:
            source = "import numpy as np\ndef main():\n    return float(np.mean([1, 2]))\n"
            policy.check(ast.parse(source), SEED, code=compile(source, "<script>", "exec"))
            self.assertEqual(walks, [])
            source = "import os\ndef main():\n    return os.getpid()\n"
            policy.check(ast.parse(source), SEED, code=compile(source, "<script>", "exec"))
            self.assertNotEqual(walks, [], "a script that imports os mentions a part of os.system")
        finally:
            policy._Checker = original

    def test_imports(self):
        cases = {
            "import subprocess\ndef main(): pass\n": ("forbidden_import", 1, 1),
            "import os, socket as s\ndef main(): pass\n": ("forbidden_import", 1, 1),
            "def main():\n    from urllib.request import urlopen\n": ("forbidden_import", 2, 5),
            "import subprocess.run\ndef main(): pass\n": ("forbidden_import", 1, 1),
        }
        for source, want in cases.items():
            self.assertEqual(self.refusal(source)[:3], want, source)

    def test_calls_in_every_form(self):
        cases = {
            "def main():\n    return eval('1')\n": (2, 12),
            "def main():\n    f = open\n": (2, 9),
            "import os\ndef main():\n    os.system('x')\n": (3, 5),
            "import os as o\ndef main():\n    o.popen('x')\n": (3, 5),
            "from os import system\ndef main(): pass\n": (1, 1),
            "from os import execv as run\ndef main(): pass\n": (1, 1),
            "from os import *\ndef main(): pass\n": (1, 1),
            "import os\ndef main():\n    getattr(os, 'listdir')('.')\n": (3, 5),
            "import os.path\ndef main():\n    os.spawnl(0, 'x')\n": (3, 5),
            "import builtins\ndef main():\n    builtins.exec('1')\n": (3, 5),
            "def main():\n    __builtins__.__import__('os')\n": (2, 5),
            "import glob\ndef main():\n    glob.glob('*')\n": (3, 5),
            "import importlib\ndef main():\n    importlib.import_module('os')\n": (3, 5),
        }
        for source, (line, column) in cases.items():
            got = self.refusal(source)
            self.assertIsNotNone(got, source)
            self.assertEqual(got[:3], ("forbidden_call", line, column), source)

    def test_allowed(self):
        for source in ("import os\ndef main():\n    return os.getpid()\n",
                       "import numpy as np, pandas as pd\ndef main():\n    return pd.DataFrame({'a': np.arange(3)}).sum()\n",
                       "def main():\n    opened = 1\n    return opened\n"):
            self.assertIsNone(self.refusal(source), source)

    def test_what_binds_main(self):
        bound = ("def main(): pass\n", "async def main(): pass\n", "class main: pass\n", "main = print\n",
                 "main: object = print\n", "from math import sqrt as main\n", "import math as main\n",
                 "if True:\n    def main(): pass\n", "try:\n    pass\nexcept Exception:\n    pass\nelse:\n    main = 1\n")
        for source in bound:
            self.assertIsNone(self.refusal(source), source)
        for source in ("def helper(): pass\n", "def f():\n    def main(): pass\n", "x = main\n"):
            self.assertEqual(self.refusal(source)[0], "missing_main", source)

    def test_evasions_it_does_not_catch(self):
        # Names built at run time pass the policy: the jail holds then.
        for source in ("import os\ndef main():\n    getattr(os, 'sys' + 'tem')('x')\n",
                       "def main():\n    vars(__builtins__)['op' + 'en']('/etc/passwd')\n"):
            self.assertIsNone(self.refusal(source), source)


    def test_harmless_parts_of_network_packages_pass(self):
        for source in ("import urllib.parse\ndef main():\n    return urllib.parse.quote('a b')\n",
                       "from urllib.parse import urlencode\ndef main(): pass\n",
                       "import http\ndef main():\n    return int(http.HTTPStatus.OK)\n",
                       "from http import HTTPStatus\ndef main(): pass\n",
                       "import http.cookies\ndef main(): pass\n"):
            self.assertIsNone(self.refusal(source), source)

    def test_network_capable_modules_stay_refused_by_every_route(self):
        for source in ("import urllib.request\ndef main(): pass\n",
                       "from urllib import request\ndef main(): pass\n",
                       "from urllib.request import urlopen\ndef main(): pass\n",
                       "import urllib\ndef main():\n    return urllib.request.urlopen\n",
                       "import http\ndef main():\n    return http.client.HTTPConnection\n",
                       "import http as h\ndef main():\n    return getattr(h, 'server')\n",
                       "from http import client as c\ndef main(): pass\n",
                       "import socket\ndef main(): pass\n"):
            got = self.refusal(source)
            self.assertIsNotNone(got, source)
            self.assertEqual(got[0], "forbidden_import", source)
            self.assertIn("no network", got[3], source)

    def test_a_name_that_is_not_the_builtin_is_not_refused(self):
        for source in ("def f(open):\n    return open('x')\ndef main(): pass\n",
                       "def main(open=None):\n    return open\n",
                       "f = lambda open: open\ndef main(): pass\n",
                       "def main():\n    open = print\n    open('x')\n",
                       "def main():\n    def inner():\n        return open\n    open = 1\n    return inner()\n",
                       "def main():\n    for eval in range(3):\n        pass\n    return eval\n",
                       "class Store:\n    def open(self):\n        return 1\ndef main():\n    return Store().open()\n",
                       "def main(x):\n    return x.open, x.eval\n",
                       "def main():\n    return dict(open=1, exec=2)\n",
                       "def main():\n    if False:\n        open('x')\n",
                       "def main():\n    if 0:\n        eval('1')\n    else:\n        return 1\n",
                       "def main():\n    while False:\n        exec('1')\n",
                       "def main():\n    return 1 if True else open('x')\n"):
            self.assertIsNone(self.refusal(source), source)

    def test_the_builtin_through_any_alias_is_still_refused(self):
        for source in ("def f(o=open):\n    pass\ndef main(): pass\n",
                       "def main():\n    global open\n    return open\n",
                       "def main():\n    import builtins as open\n    return open.open\n",
                       "def main():\n    from builtins import open\n",
                       "def main():\n    return [open for _ in range(1)]\n",
                       "def main():\n    return [open for open in [open]]\n",
                       "class A:\n    open = 1\n    x = open\ndef main(): pass\n",
                       "open = 1\nx = open\ndef main(): pass\n",
                       "def main():\n    if True:\n        open('x')\n",
                       "def main():\n    if 0:\n        pass\n    else:\n        open('x')\n",
                       "def main():\n    while 1:\n        eval('1')\n",
                       "def main(f=lambda: open):\n    pass\n",
                       "import io\ndef main():\n    return io.open('x')\n",
                       "from io import open as o\ndef main(): pass\n",
                       "import os\ndef main():\n    return list(os.walk('.'))\n",
                       "import os\ndef main():\n    import os as os\n    os.system('x')\n",
                       "import os\ndef main(os=os):\n    os.system('x')\n"):
            got = self.refusal(source)
            self.assertIsNotNone(got, source)
            self.assertEqual(got[0], "forbidden_call", source)

    def test_every_refusal_names_the_rule_the_line_and_an_alternative(self):
        from pyexec import policy

        cases = {
            "def main():\n    return open('data.csv').read()\n": ("'open'", "line 2", "pathlib.Path(name).read_text()", "pandas.read_csv"),
            "import os\ndef main():\n    return os.listdir('.')\n": ("'os.listdir'", "line 3", "iterdir()"),
            "import os\ndef main():\n    os.system('ls')\n": ("'os.system'", "line 3", "no other program"),
            "def main():\n    return eval('1+1')\n": ("'eval'", "line 2", "ast.literal_eval"),
            "import subprocess\ndef main(): pass\n": ("'subprocess'", "line 1", "no other program"),
        }
        for source, wants in cases.items():
            message = self.refusal(source)[3]
            for want in wants:
                self.assertIn(want, message, source)
        seed_rules = ["subprocess", "pty", "socket", "ssl", "socketserver", "asyncore", "asynchat", "urllib.request",
                      "urllib.robotparser", "urllib3", "http.client", "http.server", "http.cookiejar", "httpx", "requests",
                      "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "xmlrpc",
                      "eval", "exec", "__import__", "open", "io.open", "importlib.import_module", "os.listdir", "os.scandir",
                      "os.walk", "os.fwalk", "glob.glob", "glob.iglob", "os.system", "os.popen", "os.exec*", "os.spawn*",
                      "os.posix_spawn*", "os.fork*"]
        self.assertEqual([r for r in seed_rules if r not in policy.ALTERNATIVES], [])


class DataScienceResultsTest(unittest.TestCase):
    def test_every_type_of_the_mapping(self):
        import datetime
        import decimal
        import uuid

        import pandas as pd

        df = pd.DataFrame({"when": pd.to_datetime(["2024-01-31 12:00", None]), "x": [1.5, float("nan")],
                           "c": pd.Categorical(["a", "b"])})
        cases = [
            (df, [{"when": "2024-01-31T12:00:00", "x": 1.5, "c": "a"}, {"when": None, "x": None, "c": "b"}]),
            (df.to_dict("records")[0], {"when": "2024-01-31T12:00:00", "x": 1.5, "c": "a"}),
            (pd.Series([1, 2]), [1, 2]),
            (pd.Series([1, 2], index=["a", "b"]), {"a": 1, "b": 2}),
            (pd.Index([3, 4]), [3, 4]),
            (np.datetime64("2024-02-01T00:00:00"), "2024-02-01T00:00:00"),
            (np.timedelta64(90, "s"), "P0DT0H1M30S"),
            (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "2024-01-02T03:04:05+00:00"),
            (datetime.date(2024, 1, 2), "2024-01-02"),
            (datetime.time(3, 4), "03:04:00"),
            (datetime.timedelta(days=1, seconds=1.5), "P1DT0H0M1.5S"),
            (pd.Timestamp("2024-03-04 05:06"), "2024-03-04T05:06:00"),
            (pd.Timedelta("2h"), "P0DT2H0M0S"),
            (pd.Period("2024-01", freq="M"), "2024-01"),
            (pd.NaT, None), (pd.NA, None), (float("nan"), None),
            (decimal.Decimal("1.10"), "1.10"),
            (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
            (b"\x00\xff", "AP8="),
            ({3, 1, 2}, [1, 2, 3]), (frozenset(["b"]), ["b"]),
            (pd.Categorical(["x", "y"]), ["x", "y"]),
            (np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"), ["2024-01-01", None]),
            ({datetime.date(2024, 1, 1): 1}, {"2024-01-01": 1}),
        ]
        for value, want in cases:
            self.assertEqual(json.loads(results.encode(value)), want, repr(value))

    def test_nullable_and_string_dtypes(self):
        # pandas' extension dtypes, whose missing value is pd.NA: the
        # nullable integers, floats and booleans, the string dtype, and
        # (pandas 2, where pyarrow is installed) the Arrow-backed ones.
        import pandas as pd

        frame = pd.DataFrame({
            "i": pd.array([1, None], dtype="Int64"),
            "f": pd.array([0.5, None], dtype="Float64"),
            "b": pd.array([True, None], dtype="boolean"),
            "s": pd.array(["x", None], dtype="string"),
        })
        cases = [
            (frame, [{"i": 1, "f": 0.5, "b": True, "s": "x"}, {"i": None, "f": None, "b": None, "s": None}]),
            (frame["i"], [1, None]),
            (pd.array([1, None], dtype="UInt8"), [1, None]),
            (frame.dtypes.astype(str).to_dict(), {"i": "Int64", "f": "Float64", "b": "boolean", "s": "string"}),
            ({"na": pd.NA, "sum": frame["i"].sum()}, {"na": None, "sum": 1}),
            (frame["i"].iloc[0], 1),
            (frame["s"].str.upper(), ["X", None]),
        ]
        try:
            import pyarrow  # noqa: F401  (not packaged by Debian 12 or 13)
            cases.append((pd.Series([1, None], dtype="int64[pyarrow]"), [1, None]))
        except ImportError:
            pass
        for value, want in cases:
            self.assertEqual(json.loads(results.encode(value)), want, repr(value))
            packed = results.encode_msgpack(__import__("msgpack"), value)
            self.assertEqual(__import__("msgpack").unpackb(packed), want, repr(value))

    def test_labels_and_date_keys_that_become_one_json_key(self):
        import datetime

        import pandas as pd

        for value, what in ((pd.Series([1, 2], index=[1, "1"]), "index labels 1 and '1'"),
                            ({datetime.date(2024, 1, 1): 1, "2024-01-01": 2}, "'2024-01-01'")):
            with self.assertRaises(results.NotSerializable, msg=repr(value)) as caught:
                results.encode(value)
            self.assertIn(what, str(caught.exception))
            self.assertIn("both become the JSON key", str(caught.exception))

    def test_unmappable_gets_path_type_and_hint(self):
        with self.assertRaises(results.NotSerializable) as caught:
            results.to_json_value({"rows": [1, complex(1, 2)]})
        message = str(caught.exception)
        self.assertIn("result['rows'][1]", message)
        self.assertIn("complex", message)
        self.assertIn("str(x)", message)


class FrameLabelsTest(unittest.TestCase):
    """DataFrames and Series keep their labels (results.py's docstring)."""

    def setUp(self):
        import pandas as pd

        self.pd = pd
        self.sales = pd.DataFrame({"region": ["n", "s", "n"], "product": ["x", "y", "x"], "amount": [10, 5, 7],
                                   "day": pd.to_datetime(["2024-01-05", "2024-02-01", "2024-02-03"])})

    def check(self, value, want):
        self.assertEqual(json.loads(results.encode(value)), want)
        self.assertEqual(msgpack.unpackb(results.encode_msgpack(msgpack, value)), want)

    def test_default_index_keeps_the_records_form(self):
        pd = self.pd
        self.check(pd.DataFrame({"a": [1, 2]}), [{"a": 1}, {"a": 2}])
        # Integers 0..n-1 in order say no more than the rows' positions.
        self.check(pd.DataFrame({"a": [1, 2]}, index=pd.Index([0, 1], dtype="int64")), [{"a": 1}, {"a": 2}])
        self.check(pd.DataFrame({"a": []}), [])

    def test_groupby_keeps_the_group_labels(self):
        self.check(self.sales.groupby("region")[["amount"]].sum(), [{"region": "n", "amount": 17}, {"region": "s", "amount": 5}])
        self.check(self.sales.groupby(["region", "product"])[["amount"]].sum(),
                   [{"region": "n", "product": "x", "amount": 17}, {"region": "s", "product": "y", "amount": 5}])

    def test_unnamed_levels_take_reset_index_names(self):
        pd = self.pd
        self.check(pd.DataFrame({"a": [1]}, index=["r"]), [{"index": "r", "a": 1}])
        self.check(pd.DataFrame({"index": [1]}, index=["r"]), [{"level_0": "r", "index": 1}])
        multi = pd.MultiIndex.from_tuples([("n", 1)])
        self.check(pd.DataFrame({"a": [1]}, index=multi), [{"level_0": "n", "level_1": 1, "a": 1}])
        # A filtered or sorted frame keeps its row labels too.
        self.check(self.sales[["amount"]].sort_values("amount").head(2), [{"index": 1, "amount": 5}, {"index": 2, "amount": 7}])

    def test_a_level_and_a_column_of_one_name_are_refused(self):
        frame = self.sales.set_index("region", drop=False)[["region", "amount"]]
        with self.assertRaises(results.NotSerializable) as caught:
            results.encode(frame)
        self.assertIn('index level and column both named "region"', str(caught.exception))
        self.assertIn("reset_index(drop=True)", str(caught.exception))

    def test_multiindex_columns_are_joined_with_a_bar(self):
        agg = self.sales.groupby("region").agg({"amount": ["sum", "mean"]})
        self.check(agg, [{"region": "n", "amount|sum": 17, "amount|mean": 8.5}, {"region": "s", "amount|sum": 5, "amount|mean": 5.0}])
        # reset_index leaves ("region", ""): the empty part is dropped.
        self.check(agg.reset_index(), [{"region": "n", "amount|sum": 17, "amount|mean": 8.5}, {"region": "s", "amount|sum": 5, "amount|mean": 5.0}])
        with self.assertRaises(results.NotSerializable) as caught:
            results.encode(self.pd.DataFrame({("a|b", "c"): [1]}))
        self.assertIn('holding "|"', str(caught.exception))
        # Joined names that collide are refused like any duplicate.
        with self.assertRaises(results.NotSerializable):
            results.encode(self.pd.DataFrame([[1, 2]], columns=["a", ("a", "")]))

    def test_pivot_table_crosstab_describe_value_counts_resample(self):
        pd = self.pd
        pivot = self.sales.pivot_table(index="region", columns="product", values="amount", aggfunc="sum", fill_value=0)
        self.check(pivot, [{"region": "n", "x": 17, "y": 0}, {"region": "s", "x": 0, "y": 5}])
        self.check(pd.crosstab(self.sales["region"], self.sales["product"], margins=True),
                   [{"region": "n", "x": 2, "y": 0, "All": 2}, {"region": "s", "x": 0, "y": 1, "All": 1},
                    {"region": "All", "x": 2, "y": 1, "All": 3}])
        described = json.loads(results.encode(self.sales[["amount"]].describe()))
        self.assertEqual([row["index"] for row in described], ["count", "mean", "std", "min", "25%", "50%", "75%", "max"])
        self.assertEqual(described[0]["amount"], 3.0)
        self.check(self.sales["region"].value_counts(), {"n": 2, "s": 1})
        # A DataFrame's value_counts is a Series with a MultiIndex: records.
        counts = json.loads(results.encode(self.sales[["region", "product"]].value_counts().sort_index()))
        self.assertEqual([{k: v for k, v in row.items() if k in ("region", "product")} for row in counts],
                         [{"region": "n", "product": "x"}, {"region": "s", "product": "y"}])
        self.assertEqual([list(row.values())[-1] for row in counts], [2, 1])
        monthly = self.sales.set_index("day")[["amount"]].resample("M").sum()
        self.check(monthly, [{"day": "2024-01-31T00:00:00", "amount": 10}, {"day": "2024-02-29T00:00:00", "amount": 12}])
        self.check(monthly["amount"], {"2024-01-31T00:00:00": 10, "2024-02-29T00:00:00": 12})
        self.check(monthly["amount"].to_period("M"), {"2024-01": 10, "2024-02": 12})

    def test_series_labels(self):
        pd = self.pd
        self.check(pd.Series([1, 2]), [1, 2])
        self.check(pd.Series([1, 2], index=[np.int64(3), 4]), {"3": 1, "4": 2})
        self.check(pd.Series([1, 2], index=[float("nan"), 1.5]), {"null": 1, "1.5": 2})
        self.check(pd.Series([1, 2], index=[True, False]), {"true": 1, "false": 2})
        self.check(pd.Series([5, 17], index=pd.IntervalIndex.from_breaks([0, 6, 20])), {"(0, 6]": 5, "(6, 20]": 17})
        # A MultiIndex: records, the values under the Series' name, or "value".
        sized = self.sales.groupby(["region", "product"]).size()
        self.check(sized, [{"region": "n", "product": "x", "value": 2}, {"region": "s", "product": "y", "value": 1}])
        self.check(sized.rename("n"), [{"region": "n", "product": "x", "n": 2}, {"region": "s", "product": "y", "n": 1}])
        # A named RangeIndex is a label, not a position.
        self.check(pd.Series([7], index=pd.RangeIndex(1, name="hour")), {"0": 7})

    def test_msgpack_keeps_bytes_and_big_integers(self):
        packed = results.encode_msgpack(msgpack, {"b": b"\x00\xff", "n": 2**64 - 1, "big": 10**30, "f": float("nan")})
        self.assertEqual(msgpack.unpackb(packed), {"b": b"\x00\xff", "n": 2**64 - 1, "big": str(10**30), "f": None})
        self.assertEqual(json.loads(results.encode({"b": b"\x00\xff"})), {"b": "AP8="})
        with self.assertRaises(results.NotSerializable):
            results.encode_msgpack(msgpack, "\ud800")
def items_of(frames):
    """A batch's frames as one dict per input: its item frame, with the
    text of the output frames before it as "stdout" and "stderr"."""
    items, printed = [], {"stdout": "", "stderr": ""}
    for frame in frames:
        if frame["type"] == "output":
            printed[frame["stream"]] += frame["text"]
        elif frame["type"] == "item":
            items.append(dict(frame, **printed))
            printed = {"stdout": "", "stderr": ""}
    return items


class BatchTest(unittest.TestCase):
    def test_main_once_per_input_with_its_own_output_and_errors(self):
        reply = execute("calls = []\ndef main(x):\n    calls.append(x)\n    print('got', x)\n    return 10 // x + len(calls)\n",
                        "json", inputs=[b"1", b"0", b"5"])
        self.assertEqual(reply["type"], "results")
        self.assertEqual(reply["frames"][0], {"type": "started"})
        items = items_of(reply["frames"])
        self.assertEqual([i["index"] for i in items], [0, 1, 2])
        self.assertEqual(items[0]["result"], b"11")
        self.assertEqual((items[1]["kind"], items[1]["result"]), ("script_error", None))
        self.assertIn("ZeroDivisionError", items[1]["message"])
        self.assertEqual(items[2]["result"], b"5")  # state is shared within the batch: calls has 3 entries
        self.assertEqual([i["stdout"] for i in items], ["got 1\n", "got 0\n", "got 5\n"])

    def test_each_item_is_sent_when_it_is_done(self):
        # What an item printed and its outcome are sent before the next
        # item starts: a later input that hangs or crashes cannot take
        # them with it.
        seen = []
        source = "import sys\ndef main(x):\n    print('line', x)\n    sys.stdout.write('no newline yet')\n    seen.append(len(sent))\n    return x\n"
        message = {"type": "execute", "script": source, "entrypoint": "main", "input": None, "inputs": [b"1", b"2"],
                   "input_format": "json", "stdin": None, "result_format": "json", "limits": {}, "deny_imports": [],
                   "files": [], "output_files": NO_OUTPUT_FILES}
        sent = []
        import builtins
        builtins.sent, builtins.seen = sent, seen
        try:
            script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []}, lambda *f: sent.extend(f))
        finally:
            del builtins.sent, builtins.seen
        # The printed line was sent at once (line-buffered), the rest at
        # the item's end, before its item frame.
        self.assertEqual([f["type"] for f in sent],
                         ["started", "output", "output", "item", "output", "output", "item"])
        self.assertEqual(seen, [2, 5])
        self.assertEqual(sent[2]["text"], "no newline yet")

    def test_lone_surrogates_printed_by_an_item_still_encode(self):
        reply = execute("import sys\ndef main(x):\n    print('a\\udcff', x)\n    print('b\\ud800', file=sys.stderr)\n    return x\n",
                        "json", inputs=[b"1", b"2"])
        items = items_of(reply["frames"])
        self.assertEqual([i["stdout"] for i in items], ["a\ufffd 1\n", "a\ufffd 2\n"])
        self.assertEqual(items[0]["stderr"], "b?\n")

    def test_long_output_is_sent_in_bounded_frames(self):
        reply = execute("def main(x):\n    print('\\u20ac' * 40000, end='')\n", "json", inputs=[b"1"])
        outputs = [f for f in reply["frames"] if f["type"] == "output"]
        self.assertGreater(len(outputs), 1)
        self.assertTrue(all(0 < len(f["text"].encode()) <= 4 * script._ItemStream.CHUNK for f in outputs))
        self.assertEqual("".join(f["text"] for f in outputs), "\u20ac" * 40000)

    def test_every_input_reads_stdin_from_its_start_and_msgpack_results(self):
        reply = execute("def main(x):\n    return [x, input(), b'z']\n", "msgpack", inputs=[b"\x01", b"\x02"],
                        stdin="line\n", result_format="msgpack")
        items = items_of(reply["frames"])
        self.assertEqual([msgpack.unpackb(i["result"]) for i in items], [[1, "line", b"z"], [2, "line", b"z"]])


class EntrypointTest(unittest.TestCase):
    """Scripts as written: a cell (entrypoint "none"), and async main."""

    def test_cell_result_is_its_last_expression(self):
        cases = {
            "x = 2\nx * 21\n": b"42",
            "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nint(df['a'].sum())\n": b"3",
            "x = 1\n": b"null",
            "import sys\nsys.stdout.flush()\n": b"null",  # flush returns None
            "": b"null",
            "def main():\n    return 1\n": b"null",  # main is not called
        }
        for source, want in cases.items():
            reply = execute(source, entrypoint="none")
            self.assertEqual(reply, {"type": "result", "result": want, "files": []}, source)

    def test_cell_runs_as_main(self):
        # A script written for `python script.py` runs as written.
        source = "def main():\n    return 'ran'\nresult = None\nif __name__ == '__main__':\n    result = main()\nresult\n"
        self.assertEqual(execute(source, entrypoint="none")["result"], b'"ran"')
        # With main as the entrypoint the guard does not call main twice.
        self.assertEqual(execute("calls = []\ndef main():\n    calls.append(1)\n    return len(calls)\n"
                                 "if __name__ == '__main__':\n    main()\n")["result"], b"1")

    def test_cell_reads_its_input(self):
        self.assertEqual(execute("INPUT['n'] * 2\n", "json", b'{"n": 21}', entrypoint="none")["result"], b"42")
        self.assertEqual(execute("INPUT\n", entrypoint="none")["result"], b"null")

    def test_cell_errors(self):
        reply = execute("x = 1\nraise ValueError('bad')\n", entrypoint="none")
        self.assertEqual(reply["kind"], "script_error")
        self.assertIn("the script raised ValueError: bad", reply["message"])
        self.assertIn('line 2', reply["traceback"])
        self.assertEqual(execute("x = (\n", entrypoint="none")["kind"], "syntax_error")
        refused = execute("open('x')\n", entrypoint="none", policy=SEED)
        self.assertEqual(refused["kind"], "forbidden_call")

    def test_cell_with_top_level_await(self):
        source = "import asyncio\nasync def f(x):\n    await asyncio.sleep(0)\n    return x + 1\nawait f(41)\n"
        self.assertEqual(execute(source, entrypoint="none")["result"], b"42")

    def test_cell_batch_runs_once_per_input(self):
        reply = execute("seen = globals().get('seen', 0) + 1\nprint(INPUT)\n[INPUT, seen]\n", "json",
                        inputs=[b"5", b"6"], entrypoint="none")
        items = items_of(reply["frames"])
        self.assertEqual([i["result"] for i in items], [b"[5,1]", b"[6,2]"])
        self.assertEqual([i["stdout"] for i in items], ["5\n", "6\n"])

    def test_async_main_is_awaited(self):
        source = "import asyncio\nasync def main(x=None):\n    await asyncio.sleep(0)\n    return {'got': x}\n"
        self.assertEqual(execute(source)["result"], b'{"got":null}')
        self.assertEqual(execute(source, "json", b"3")["result"], b'{"got":3}')
        items = items_of(execute(source, "json", inputs=[b"1", b"2"])["frames"])
        self.assertEqual([i["result"] for i in items], [b'{"got":1}', b'{"got":2}'])
        failing = execute("async def main():\n    raise KeyError('k')\n")
        self.assertEqual(failing["kind"], "script_error")
        self.assertIn("main raised KeyError", failing["message"])

    def test_missing_main_says_how_to_run_without_one(self):
        self.assertIn('"entrypoint": "none"', execute("x = 1\n")["message"])


class FiguresTest(unittest.TestCase):
    """Figures shown or left open come back as output/figures/figure-N.png,
    in a temporary working directory standing in for the sandbox's /tmp.
    matplotlib's backend is the sandbox's (MPLBACKEND), set in a child
    interpreter so this process's matplotlib is untouched."""

    def run_child(self, source, entrypoint="main"):
        import subprocess
        import sys

        child = """
import json, os, sys, msgpack
sys.path.insert(0, %r)
os.chdir(%r)
os.mkdir("output")
from pyexec import script
message = {"type": "execute", "script": sys.stdin.read(), "entrypoint": %r, "input": None, "inputs": None,
           "input_format": "", "stdin": None, "result_format": "json", "limits": {}, "deny_imports": [], "files": [],
           "output_files": {"max_files": 8, "max_bytes": 1 << 22}}
reply = script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})
names = sorted(f["name"] for f in reply.get("files", []))
pngs = [f["content"][:24].hex() for f in sorted(reply.get("files", []), key=lambda f: f["name"])]
print(json.dumps({"type": reply["type"], "kind": reply.get("kind"), "message": reply.get("message"),
                  "result": reply.get("result", b"").decode(), "names": names, "heads": pngs,
                  "pyplot": "matplotlib.pyplot" in sys.modules, "matplotlib": "matplotlib" in sys.modules}))
""" % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), self.dir.name, entrypoint)
        env = dict(os.environ, MPLBACKEND="module://pyexec.mplbackend", MPLCONFIGDIR=os.path.join(self.dir.name, "mpl"))
        done = subprocess.run([sys.executable, "-c", child], input=source, capture_output=True, text=True, env=env, check=False)
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(done.stdout), done.stderr

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def png_size(self, head):
        raw = bytes.fromhex(head)
        self.assertEqual(raw[:8], b"\x89PNG\r\n\x1a\n")
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")

    def test_shown_then_open_figures_in_order(self):
        got, stderr = self.run_child(
            "import matplotlib.pyplot as plt\n"
            "def main():\n"
            "    plt.plot([1, 2, 3])\n"
            "    plt.show()\n"  # drawn and closed now: figure-1
            "    plt.figure(figsize=(2, 1))\n"
            "    plt.plot([3, 2])\n"
            "    plt.figure(figsize=(3, 2))\n"  # both left open: figure-2 and figure-3, by number
            "    return len(plt.get_fignums())\n")
        self.assertEqual((got["type"], got["result"]), ("result", "2"), got)
        self.assertEqual(got["names"], ["figures/figure-1.png", "figures/figure-2.png", "figures/figure-3.png"])
        self.assertEqual([self.png_size(h) for h in got["heads"]], [(640, 480), (200, 100), (300, 200)])
        self.assertNotIn("non-GUI backend", stderr)

    def test_pandas_plot_in_a_cell(self):
        got, _ = self.run_child("import pandas as pd\npd.Series([1, 3, 2]).plot(title='t')\n", entrypoint="none")
        # The cell's last value is the Axes: null, and the figure is a file.
        self.assertEqual((got["type"], got["result"], got["names"]), ("result", "null", ["figures/figure-1.png"]), got)

    def test_no_plot_no_matplotlib(self):
        got, _ = self.run_child("import pandas as pd\ndef main():\n    return int(pd.Series([1, 2]).sum())\n")
        self.assertEqual((got["result"], got["names"], got["matplotlib"]), ("3", [], False), got)

    def test_a_script_file_of_that_name_is_kept(self):
        got, _ = self.run_child(
            "import os, matplotlib.pyplot as plt\n"
            "def main():\n"
            "    os.makedirs('output/figures')\n"
            "    with os.fdopen(os.open('output/figures/figure-1.png', os.O_WRONLY | os.O_CREAT), 'w') as f:\n"
            "        f.write('mine')\n"
            "    plt.plot([1])\n")
        self.assertEqual(got["names"], ["figures/figure-1.png", "figures/figure-2.png"])
        self.assertEqual(bytes.fromhex(got["heads"][0]), b"mine")

    def test_figures_count_in_the_caps(self):
        got, _ = self.run_child("import matplotlib.pyplot as plt\ndef main():\n    for i in range(9):\n        plt.figure()\n")
        self.assertEqual((got["type"], got["kind"]), ("error", "output_files_limit"), got)



class FilesTest(unittest.TestCase):
    """Files in and out, in a temporary working directory standing in for
    the sandbox's /tmp (whose output directory isolation.py makes)."""

    def setUp(self):
        self.saved = os.getcwd()
        self.dir = tempfile.TemporaryDirectory()
        os.chdir(self.dir.name)

    def tearDown(self):
        os.chdir(self.saved)
        self.dir.cleanup()

    def run_with(self, source, placed=(), max_files=4, max_bytes=100):
        import shutil

        shutil.rmtree(files.OUTPUT_DIR, ignore_errors=True)
        if os.path.islink(files.OUTPUT_DIR):
            os.unlink(files.OUTPUT_DIR)
        os.mkdir(files.OUTPUT_DIR)
        message = {"type": "execute", "script": source, "entrypoint": "main", "input": None, "inputs": None,
                   "input_format": "", "stdin": None, "result_format": "json", "limits": {}, "deny_imports": [],
                   "files": [{"name": n, "content": c} for n, c in placed],
                   "output_files": {"max_files": max_files, "max_bytes": max_bytes}}
        reply = script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})
        protocol.check_shape(reply, protocol.CHANNEL_MESSAGES)
        return reply

    def test_in_and_out(self):
        reply = self.run_with(
            "import os\n"
            "def main():\n"
            "    with open('in/data.csv', 'rb') as f: data = f.read()\n"
            "    os.makedirs('output/sub')\n"
            "    with open('output/sub/copy.csv', 'wb') as f: f.write(data)\n"
            "    with open('output/a.txt', 'w') as f: f.write('hi')\n"
            "    os.symlink('/etc/passwd', 'output/link')\n"
            "    os.mkfifo('output/fifo')\n"
            "    return len(data)\n",
            placed=[("in/data.csv", b"a,b\n1,2\n")])
        self.assertEqual(reply["result"], b"8")
        # Sorted by name; the link and the fifo are neither followed nor sent.
        self.assertEqual(reply["files"], [{"name": "a.txt", "content": b"hi"},
                                          {"name": "sub/copy.csv", "content": b"a,b\n1,2\n"}])

    def test_caps(self):
        many = "def main():\n    for i in range(5):\n        with open('output/%d' % i, 'w') as f: f.write('x')\n"
        reply = self.run_with(many)
        self.assertEqual((reply["type"], reply["kind"]), ("error", "output_files_limit"))
        big = "def main():\n    with open('output/big', 'wb') as f: f.write(b'x' * 101)\n"
        reply = self.run_with(big)
        self.assertEqual((reply["type"], reply["kind"]), ("error", "output_files_limit"))
        exact = "def main():\n    with open('output/a', 'wb') as f: f.write(b'x' * 60)\n    with open('output/b', 'wb') as f: f.write(b'x' * 40)\n"
        self.assertEqual(len(self.run_with(exact)["files"]), 2)

    def test_names(self):
        bad = "def main():\n    with open('output/a\\nb', 'w') as f: f.write('x')\n"
        reply = self.run_with(bad)
        self.assertEqual((reply["type"], reply["kind"]), ("error", "output_files_invalid"))
        deep = "import os\ndef main():\n    os.makedirs('output/' + '/'.join('d' * 9))\n"
        reply = self.run_with(deep)
        self.assertEqual((reply["type"], reply["kind"]), ("error", "output_files_invalid"))
        for name in ("", "/etc/x", "../x", "a/../../x", "a//b", "./a", "a\x00b", "a\\..\\b", "\x85nel", "r\u202egnp.exe"):
            self.assertIsNotNone(files.check_name(name), name)
            with self.assertRaises(ValueError):
                files.place([{"name": name, "content": b""}])
        self.assertIsNone(files.check_name("plots/chart 1 é.png"))

    def test_output_dir_replaced_by_a_link_sends_nothing(self):
        reply = self.run_with("import os, shutil\ndef main():\n    os.rmdir('output')\n    os.symlink('/etc', 'output')\n")
        self.assertEqual(reply["files"], [])


class CollectRaceTest(unittest.TestCase):
    """A process of the script's may swap an output entry for a link while
    the sandbox collects: the link is refused, never followed."""

    def test_an_entry_swapped_for_a_link_after_the_listing_is_not_followed(self):
        saved = os.getcwd()
        real_scandir = os.scandir
        with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as outside:
            with open(os.path.join(outside, "secret.txt"), "w") as f:
                f.write("outside")
            os.chdir(work)
            os.makedirs("output/z")
            with open("output/z/inside.txt", "w") as f:
                f.write("inside")
            swapped = []

            def scandir_then_swap(path):
                # The listing sees z as a directory; right after it, z
                # becomes a link to a directory outside.
                listing = list(real_scandir(path))
                if not swapped:
                    swapped.append(True)
                    os.unlink("output/z/inside.txt")
                    os.rmdir("output/z")
                    os.symlink(outside, "output/z")

                class Listing(list):
                    def __enter__(self):
                        return self

                    def __exit__(self, *exc):
                        return False

                return Listing(listing)

            os.scandir = scandir_then_swap
            try:
                got = files.collect(10, 1000)
            finally:
                os.scandir = real_scandir
                os.chdir(saved)
            self.assertEqual(swapped, [True])
            self.assertEqual(got, [], "the link that replaced output/z was followed")


class SandboxImportsTest(unittest.TestCase):
    """A module first imported in a sandbox is compiled there, in every
    sandbox: the zygote imports every module the sandbox's code imports
    inside its functions (zygote.SANDBOX_MODULES)."""

    # Functions that run only in the zygote (or the runner's boot), never
    # in a sandbox.
    ZYGOTE_ONLY = {"zygote", "main", "_warm_matplotlib", "import_sandbox_modules", "build_bpf", "build_sandbox_layer", "_export", "__init__",
                   "_tid_address", "scratch_for_imports", "seal_imports_scratch"}

    def function_level_imports(self):
        import ast
        import pathlib

        found = {}
        package = pathlib.Path(zygote.__file__).parent
        for path in sorted(package.glob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or function.name in self.ZYGOTE_ONLY:
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 1:
                        names = ["pyexec." + (node.module + "." if node.module else "") + alias.name for alias in node.names]
                    else:
                        continue
                    for name in names:
                        found.setdefault(name, "%s:%s" % (path.name, function.name))
        return found

    def test_the_zygote_imports_every_module_a_sandbox_uses(self):
        found = self.function_level_imports()
        self.assertIn("pyexec.limits", found)  # the walk sees serve_one's imports
        # sys is the interpreter's own, loaded before any code runs.
        missing = {name: where for name, where in found.items()
                   if name not in zygote.SANDBOX_MODULES + zygote.LAZY_MODULES and name != "sys"}
        self.assertEqual(missing, {}, "imported in a sandbox but not by the zygote (add to zygote.SANDBOX_MODULES)")
        zygote.import_sandbox_modules()
        import sys

        self.assertEqual([name for name in zygote.SANDBOX_MODULES if name not in sys.modules], [])


class SeccompLayersTest(unittest.TestCase):
    """The zygote's filter and the sandbox's layer on top of it decide every
    system call exactly as the sandbox's allow list alone would: both are
    run here, as the kernel runs stacked filters, by a small classic-BPF
    interpreter, over every system call number and arguments that meet and
    miss each argument rule."""

    AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
    RET_ALLOW = 0x7FFF0000
    RET_ERRNO = 0x00050000  # with errno 0: the call "succeeds" without running

    @staticmethod
    def run_bpf(program, nr, arch, args):
        import struct

        data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
        insns = [struct.unpack_from("<HBBI", program, off) for off in range(0, len(program), 8)]
        a = x = 0
        mem = [0] * 16
        pc = 0
        while True:
            code, jt, jf, k = insns[pc]
            pc += 1
            cls = code & 0x07
            if cls == 0x00 and code & 0xE0 == 0x20 and code & 0x18 == 0x00:  # ld [k]
                a = struct.unpack_from("<I", data, k)[0]
            elif cls == 0x00 and code & 0xE0 == 0x00:  # ld #k
                a = k
            elif cls == 0x00 and code & 0xE0 == 0x60:  # ld M[k]
                a = mem[k]
            elif cls == 0x01 and code & 0xE0 == 0x00:  # ldx #k
                x = k
            elif cls == 0x01 and code & 0xE0 == 0x60:  # ldx M[k]
                x = mem[k]
            elif cls == 0x02:  # st M[k]
                mem[k] = a
            elif cls == 0x03:  # stx M[k]
                mem[k] = x
            elif cls == 0x04:  # alu
                operand = x if code & 0x08 else k
                op = code & 0xF0
                a = {0x00: lambda: a + operand, 0x10: lambda: a - operand, 0x40: lambda: a | operand,
                     0x50: lambda: a & operand, 0x60: lambda: a << operand, 0x70: lambda: a >> operand,
                     0xA0: lambda: a ^ operand, 0x80: lambda: -a}[op]() & 0xFFFFFFFF
            elif cls == 0x05:  # jumps
                op = code & 0xF0
                if op == 0x00:
                    pc += k
                    continue
                operand = x if code & 0x08 else k
                taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: a & operand != 0}[op]
                pc += jt if taken else jf
            elif cls == 0x06:  # ret
                return a if code & 0x18 == 0x10 else k
            elif cls == 0x07:  # tax / txa
                if code & 0xF8 == 0x00:
                    x = a
                else:
                    a = x
            else:
                raise AssertionError("BPF instruction %#x not understood" % code)

    @classmethod
    def stacked(cls, programs, nr, arch, args):
        """What the kernel returns with programs installed in this order:
        the most restrictive action wins; of equal ones, the newest."""
        def action(ret):
            value = ret & 0xFFFF0000
            return value - (1 << 32) if value & 0x80000000 else value

        result = cls.RET_ALLOW
        for program in reversed(programs):
            ret = cls.run_bpf(program, nr, arch, args)
            if action(ret) < action(result):
                result = ret
        return result

    def test_int_arguments_with_high_bits_do_not_slip_through(self):
        """The kernel reads setsockopt's level and option and fcntl's
        command as 32-bit ints; a filter sees all 64 bits of the register.
        With the high bits set, SOL_SOCKET/SO_SNDBUF and F_SETPIPE_SZ must be
        refused like their plain forms, and the plain allowed forms pass."""
        from pyexec import syscalls

        for program in (syscalls.build_bpf(), syscalls.build_bpf(for_zygote=True)):
            def verdict(nr, *args):
                ret = self.run_bpf(program, nr, self.AUDIT_ARCH_X86_64, args + (0,) * (6 - len(args)))
                return {self.RET_ALLOW: "allow", self.RET_ERRNO: "pretend"}.get(ret, "refuse")

            high = 1 << 32
            for level, option in [(1, 7), (1, 8), (1, 32), (1, 33), (1 | high, 7), (1 | high, 8), (1 | high, 33),
                                  (1, 7 | high), (1 | high, 12), (282, 1), (-1 & 0xFFFFFFFFFFFFFFFF, 7)]:
                self.assertEqual(verdict(54, 3, level, option), "refuse", "setsockopt(level %#x, option %#x)" % (level, option))
            for level, option in [(6, 31), (6, 19), (17, 100), (6 | high, 1)]:
                self.assertEqual(verdict(54, 3, level, option), "refuse", "setsockopt(level %#x, option %#x)" % (level, option))
            for level, option in [(1, 2), (6, 1), (0, 1), (41, 26), (17, 1)]:
                self.assertEqual(verdict(54, 3, level, option), "allow", "setsockopt(level %d, option %d)" % (level, option))
            for command in (1031, 1031 | high, 1026, 1024, 8, 10, 4 | high, 6 | high):
                self.assertEqual(verdict(72, 3, command), "refuse", "fcntl(%#x)" % command)
            for command in syscalls.FCNTL_COMMANDS:
                self.assertEqual(verdict(72, 3, command), "allow", "fcntl(%d)" % command)
            # Locks: success without a lock (SECCOMP_RET_ERRNO with 0).
            for command in syscalls.FCNTL_LOCK_COMMANDS:
                self.assertEqual(verdict(72, 3, command), "pretend", "fcntl(%d)" % command)
            self.assertEqual(verdict(73, 3, 2), "pretend", "flock")
            # Sockets: family, type and protocol; flags above the type.
            for args in [(2, 1, 262), (2, 2, 136), (10, 1, 132), (2, 2, 1), (2, 3, 0), (2, 5, 0), (1, 1, 6), (2, 1, 6 | high), (1 | high, 1, 0), (16, 3, 0)]:
                self.assertEqual(verdict(41, *args), "refuse", "socket%r" % (args,))
            for args in [(2, 1, 0), (2, 1 | 0x80800, 6), (10, 2, 17), (1, 5 | 0x80000, 0)]:
                self.assertEqual(verdict(41, *args), "allow", "socket%r" % (args,))
            self.assertEqual(verdict(221, 3, 0, 0, 4), "refuse", "fadvise(DONTNEED)")
            self.assertEqual(verdict(221, 3, 0, 0, 3), "allow", "fadvise(WILLNEED)")
            self.assertEqual(verdict(327, 3, 0, 0, 0, 0, 8), "refuse", "preadv2(RWF_NOWAIT)")
            self.assertEqual(verdict(327, 3, 0, 0, 0, 0, 0), "allow", "preadv2()")
            # rt_sigaction: SIGCHLD's action may be read, never set (its
            # high bits ignored, as the kernel ignores them); any other
            # signal's may be set.
            act = 0x7FFF0000
            for sig in (17, 17 | high, 65, 0xFFFFFFFF):
                self.assertEqual(verdict(13, sig, act, 0, 8), "refuse", "rt_sigaction(%#x, act)" % sig)
            for sig in (1, 2, 15, 16, 18, 19, 20, 23, 24, 31, 32, 63, 64, 2 | high):
                self.assertEqual(verdict(13, sig, act, 0, 8), "allow", "rt_sigaction(%#x, act)" % sig)
            self.assertEqual(verdict(13, 17, 0, act, 8), "allow", "rt_sigaction(SIGCHLD, NULL, old)")
            # No listening sockets, whatever the backlog.
            for backlog in (0, 1, 128, 4096):
                self.assertEqual(verdict(50, 3, backlog), "refuse", "listen(%d)" % backlog)

    def test_zygote_filter_and_sandbox_layer_equal_the_sandbox_filter(self):
        from pyexec import syscalls

        alone = syscalls.build_bpf()
        zygote_filter = syscalls.build_bpf(for_zygote=True)
        layer = syscalls.build_sandbox_layer()
        ns = syscalls.CLONE_NAMESPACE_FLAGS
        first_args = {0, 17, ns, ns | 17, 0xFFFFFFFF, 1 << 32, (1 << 32) | 38}
        first_args |= {(1 << bit) | 17 for bit in range(32)}
        first_args |= set(syscalls.PRCTL_OPTIONS) | set(syscalls.ISOLATION_PRCTL_OPTIONS) | {5, 99, 0x40000}
        # The kernel reads prctl's option as an int: high bits must not
        # slip an option past a rule that looks at all 64.
        first_args |= {(1 << 32) | option for option in syscalls.PRCTL_OPTIONS + syscalls.ISOLATION_PRCTL_OPTIONS}
        first_args |= set(syscalls.SOCKET_FAMILIES) | {16, 17, 40} | set(syscalls.PERSONALITY_ALLOWED) | {8}
        vectors = [(first, 0, 0, 0, 0, 0) for first in sorted(first_args)]
        vectors += [(3, level, option, 0, 0, 0) for level in (1, 6) for option in syscalls.SOL_SOCKET_OPTIONS + (7, 8, 32, 33)]
        vectors += [(3, level, 7, 0, 0, 0) for level in syscalls.SETSOCKOPT_LEVELS + (1 | 1 << 32, 6 | 1 << 32, 282)]
        vectors += [(3, command, 0, 0, 0, 0) for command in syscalls.FCNTL_COMMANDS + syscalls.FCNTL_LOCK_COMMANDS + (8, 1024, 1026, 1031, 1031 | 1 << 32, 6 | 1 << 32)]
        vectors += [(3, option, 1, 0, 0, 0) for option in syscalls.TCP_OPTIONS + syscalls.UDP_OPTIONS + (31, 100)]
        vectors += [(6, option, 0, 0, 0, 0) for option in syscalls.TCP_OPTIONS + (31, 19, 14)]
        vectors += [(17, option, 0, 0, 0, 0) for option in syscalls.UDP_OPTIONS + (100,)]
        vectors += [(family, kind | flags, protocol, 0, 0, 0) for family, kind, protocol in syscalls.SOCKETS for flags in (0, 0x80800)]
        vectors += [(2, 1, 262, 0, 0, 0), (2, 2, 136, 0, 0, 0), (10, 5, 132, 0, 0, 0), (2, 2, 1, 0, 0, 0), (2, 3, 0, 0, 0, 0), (1, 1, 6 | 1 << 32, 0, 0, 0)]
        vectors += [(3, 0, 0, advice, 0, 0) for advice in syscalls.FADVISE_ADVICE + (4, 4 | 1 << 32, 6)]
        vectors += [(3, 0, 0, 0, 0, flags) for flags in (0, 1, 8, 1 << 32)]
        vectors += [(sig, act, 0, 8, 0, 0) for sig in (1, 16, 17, 18, 64, 65, 17 | 1 << 32) for act in (0, 0x7FFF0000)]
        vectors.append((0xFFFFFFFFFFFFFFFF,) * 6)
        checked, refused_by_layer = 0, set()
        for nr in list(range(0, 460)) + [0x40000000 | n for n in (0, 56, 165)] + [-1]:
            for args in vectors if nr in (13, 56, 157, 41, 53, 54, 72, 73, 135, 221, 327, 328) else vectors[:3] + vectors[-1:]:
                for arch in (self.AUDIT_ARCH_X86_64, self.AUDIT_ARCH_I386):
                    want = self.run_bpf(alone, nr, arch, args)
                    got = self.stacked([zygote_filter, layer], nr, arch, args)
                    self.assertEqual(got, want, "nr %d arch %#x args %r: stacked %#x, the sandbox's filter %#x" % (nr, arch, args, got, want))
                    if self.run_bpf(zygote_filter, nr, arch, args) != want:
                        refused_by_layer.add(nr)
                    checked += 1
        # The check has teeth: the zygote's filter alone allows what the
        # layer takes back (clone into namespaces, mount, sethostname,
        # capset, pidfd_open, setsid, setresuid, setresgid, prctl's
        # capability and dumpable options).
        self.assertEqual(refused_by_layer, {56, 165, 170, 126, 434, 157, 112, 117, 119})
        self.assertGreater(checked, 4000)
