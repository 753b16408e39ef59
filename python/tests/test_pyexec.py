"""Unit tests of the pyexec modules that run without a jail.

Run by python/python_test.go (go test ./python/) with /usr/bin/python3.
"""

import json
import math
import unittest

import msgpack
import numpy as np

import os
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


def execute(source, input_format="", raw=None):
    message = {"type": "execute", "script": source, "input": raw, "inputs": None, "input_format": input_format,
               "limits": {}, "deny_imports": [],
               "files": [], "output_files": NO_OUTPUT_FILES}
    return script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})


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

    def test_texts_are_bounded(self):
        reply = execute("def main():\n    raise ValueError('x' * 100000)\n")
        self.assertEqual(reply["kind"], "script_error")
        self.assertLessEqual(len(reply["message"]), script.MAX_MESSAGE_CHARS + 40)
        self.assertLessEqual(len(reply["traceback"]), script.MAX_TRACEBACK_CHARS + 40)


if __name__ == "__main__":
    unittest.main()


SEED = {"name": "seed",
        "deny_imports": ["subprocess", "socket", "urllib"],
        "deny_calls": ["eval", "exec", "__import__", "open", "os.listdir", "glob.glob", "os.system", "os.popen",
                       "os.exec*", "os.spawn*", "importlib.import_module"]}


class PolicyTest(unittest.TestCase):
    def refusal(self, source):
        import ast

        from pyexec import policy

        try:
            policy.check(ast.parse(source), SEED)
        except policy.Refusal as exc:
            return exc.kind, exc.line, exc.column, exc.message
        return None

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


class BatchTest(unittest.TestCase):
    def test_main_once_per_input_with_its_own_output_and_errors(self):
        message = {"type": "execute", "script": "calls = []\ndef main(x):\n    calls.append(x)\n    print('got', x)\n    return 10 // x + len(calls)\n",
                   "input": None, "inputs": [b"1", b"0", b"5"], "input_format": "json", "limits": {}, "deny_imports": [],
               "files": [], "output_files": NO_OUTPUT_FILES}
        reply = script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})
        protocol.check_shape(reply, protocol.CHANNEL_MESSAGES)
        items = reply["items"]
        self.assertEqual([set(i) for i in items], [set(protocol.BATCH_ITEM_KEYS)] * 3)
        self.assertEqual(items[0]["result"], b"11")
        self.assertEqual((items[1]["kind"], items[1]["result"]), ("script_error", None))
        self.assertIn("ZeroDivisionError", items[1]["message"])
        self.assertEqual(items[2]["result"], b"5")  # state is shared within the batch: calls has 3 entries
        self.assertEqual([i["stdout"] for i in items], ["got 1\n", "got 0\n", "got 5\n"])

    def test_lone_surrogates_printed_by_an_item_still_encode(self):
        message = {"type": "execute", "script": "import sys\ndef main(x):\n    print('a\\udcff', x)\n    print('b\\ud800', file=sys.stderr)\n    return x\n",
                   "input": None, "inputs": [b"1", b"2"], "input_format": "json", "limits": {}, "deny_imports": [],
                   "files": [], "output_files": NO_OUTPUT_FILES}
        reply = script.run(msgpack, message, {"name": "none", "deny_imports": [], "deny_calls": []})
        msgpack.packb(reply, use_bin_type=True)  # the whole reply encodes
        self.assertEqual([i["stdout"] for i in reply["items"]], ["a\ufffd 1\n", "a\ufffd 2\n"])
        self.assertEqual(reply["items"][0]["stderr"], "b?\n")


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
        message = {"type": "execute", "script": source, "input": None, "inputs": None, "input_format": "",
                   "limits": {}, "deny_imports": [], "files": [{"name": n, "content": c} for n, c in placed],
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
        missing = {name: where for name, where in found.items() if name not in zygote.SANDBOX_MODULES and name != "sys"}
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
        # capset, pidfd_open, setsid, prctl's capability and dumpable
        # options).
        self.assertEqual(refused_by_layer, {56, 165, 170, 126, 434, 157, 112})
        self.assertGreater(checked, 4000)
