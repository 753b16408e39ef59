"""Validation of a script before any of its code runs.

Three checks, on the parsed source (ast), in this order:

1. it parses (else syntax_error, with line and column);
2. `main` is bound at module level (else missing_main): by a `def`,
   `async def` or `class` statement, an assignment (`main = ...`,
   `main: T = ...`), or an import that binds the name (`from m import main`,
   `import m as main`), also inside module-level `if`, `try`, `with`, `for`
   and `while` blocks. A script run as a cell (entrypoint "none") skips
   this check;
3. the policy (else forbidden_import or forbidden_call, naming the rule,
   the line, and what to use instead).

A policy has two lists (runner/protocol.go, policyConfig):

* deny_imports: modules; an entry refuses that module and everything
  below it. `http.client` refuses `import http.client`, `from http import
  client`, `from http.client import HTTPConnection` and the attribute
  `http.client` of an imported `http`, while `http` itself and
  `http.HTTPStatus` pass; `socket` refuses `socket` and `socket.*`.
* deny_calls: names and dotted names, `*` as a suffix wildcard
  (`os.exec*`). A bare name (`eval`) is refused wherever the script
  reads it and it can only be the builtin (`f = eval` too, and
  `builtins.eval`), but not where it is a local name of a function (a
  parameter `def f(open): ...`, an assignment in that function): Python
  decides that statically, so such a name can never be the builtin. A
  dotted name (`os.system`) is refused as an attribute of the module,
  whatever the script calls the module (`import os as o; o.system`), when
  imported from it (`from os import system as s`, or `from os import *`),
  and as `getattr(o, "system")` with a constant string.

Code that can never run is not checked: the branch of an `if` or `while`
whose test is a constant (`if False:`, `if 0:`, `while False:`), which the
compiler drops too. Other code the compiler drops, because it is
unreachable (after a `return`) or never evaluated (the annotation of a
local variable, `x: eval = 1` in a function), may go unchecked as well
(see _may_refuse).

This is an early, clear refusal of the obvious, for compatibility with the
original service. It is not a boundary: a script can build names at run
time (`getattr(o, "sys" + "tem")`, `vars(__builtins__)`), and the jail is
what holds then.
"""

import ast
import fnmatch
import re
import types


class Refusal(Exception):
    def __init__(self, kind, message, line, column):
        super().__init__(message)
        self.kind, self.message, self.line, self.column = kind, message, line, column


# What to use instead, by rule: each rule of the seed policy has one. An
# operator's own rule without an entry is refused without a suggestion.
_NO_NETWORK = "the sandbox has no network: send the data in the request's \"input\" or \"files\""
_NO_PROGRAMS = "no other program can run in the sandbox: do the work in Python (numpy, pandas, the standard library)"
_READ_WRITE = ("use pathlib.Path(name).read_text(), .read_bytes() or .write_text(), or pandas.read_csv(name), instead "
               "(the request's files are in the working directory; what the script writes to output/ comes back)")
_LISTING = "use pathlib.Path(\".\").iterdir() or pathlib.Path(\".\").glob(\"*.csv\") instead"
_IMPORT = "use an import statement (import json) instead"
ALTERNATIVES = {
    "eval": "use ast.literal_eval(text) for literals or json.loads(text) for JSON, or call the function directly",
    "exec": "write the code in the script itself",
    "__import__": _IMPORT,
    "importlib.import_module": _IMPORT,
    "open": _READ_WRITE,
    "io.open": _READ_WRITE,
    "os.listdir": _LISTING,
    "os.scandir": _LISTING,
    "os.walk": "use pathlib.Path(\".\").rglob(\"*\") instead",
    "os.fwalk": "use pathlib.Path(\".\").rglob(\"*\") instead",
    "glob.glob": _LISTING,
    "glob.iglob": _LISTING,
    "os.system": _NO_PROGRAMS,
    "os.popen": _NO_PROGRAMS,
    "os.exec*": _NO_PROGRAMS,
    "os.spawn*": _NO_PROGRAMS,
    "os.posix_spawn*": _NO_PROGRAMS,
    "os.fork*": _NO_PROGRAMS,
    "subprocess": _NO_PROGRAMS,
    "pty": _NO_PROGRAMS,
    "socket": _NO_NETWORK,
    "ssl": _NO_NETWORK,
    "socketserver": _NO_NETWORK,
    "asyncore": _NO_NETWORK,
    "asynchat": _NO_NETWORK,
    "urllib.request": _NO_NETWORK + " (urllib.parse is allowed, for URLs)",
    "urllib.robotparser": _NO_NETWORK,
    "urllib3": _NO_NETWORK,
    "http.client": _NO_NETWORK + " (http and http.HTTPStatus are allowed)",
    "http.server": _NO_NETWORK + " (http and http.HTTPStatus are allowed)",
    "http.cookiejar": _NO_NETWORK + " (http.cookies is allowed, for parsing cookies)",
    "httpx": _NO_NETWORK,
    "requests": _NO_NETWORK,
    "aiohttp": _NO_NETWORK,
    "ftplib": _NO_NETWORK,
    "smtplib": _NO_NETWORK,
    "poplib": _NO_NETWORK,
    "imaplib": _NO_NETWORK,
    "nntplib": _NO_NETWORK,
    "telnetlib": _NO_NETWORK,
    "xmlrpc": _NO_NETWORK,
}


def _refusal(kind, what, rule, node):
    line = node.lineno
    message = "%s is not allowed here (policy rule %r, line %d)" % (what, rule, line)
    alternative = ALTERNATIVES.get(rule)
    if alternative:
        message += "; " + alternative
    return Refusal(kind, message, line, node.col_offset + 1)


def _binds_main(statements):
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == "main":
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id == "main":
                        return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == "main":
                    return True
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)) and _binds_main(getattr(node, block, [])):
                return True
        if isinstance(node, ast.Try) and any(_binds_main(h.body) for h in node.handlers):
            return True
    return False


# Compiled patterns by policy: built once in the zygote (its warm-up runs
# the policy), shared by every sandbox it forks.
_compiled = {}


def _matcher(patterns):
    """One regular expression matching any of the fnmatch patterns."""
    key = tuple(patterns)
    if key not in _compiled:
        _compiled[key] = re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
    return _compiled[key]


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class _FunctionScope:
    """The names a function binds (its locals) and those it declares global
    or nonlocal, as Python's compiler decides them: from the whole body,
    dead code included, nested scopes excluded."""

    def __init__(self, node):
        self.locals, self.globals, self.nonlocals = set(), set(), set()
        args = node.args
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None:
                self.locals.add(arg.arg)
        body = node.body if isinstance(node.body, list) else [node.body]
        for statement in body:
            self._collect(statement)
        self.locals -= self.globals | self.nonlocals

    def _collect(self, node):
        if isinstance(node, ast.Global):
            self.globals.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            self.nonlocals.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            self.locals.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            # The name binds here; its decorators, defaults and bases are
            # evaluated here, its body is a scope of its own.
            self.locals.add(node.name)
            for child in node.decorator_list:
                self._collect(child)
            return
        elif isinstance(node, (ast.Lambda,) + _COMPREHENSIONS):
            # Scopes of their own; what they bind is not this function's
            # (a := inside one is, but leaving it out only refuses more).
            return
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    self.locals.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self.locals.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            self.locals.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self.locals.add(node.rest)
        for child in ast.iter_child_nodes(node):
            self._collect(child)


def _constant_test(test):
    """True or False for a test the compiler folds (a constant), else None."""
    if isinstance(test, ast.Constant):
        return bool(test.value)
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, deny_imports, deny_calls):
        self.deny_imports = tuple(deny_imports)
        self.deny_calls = tuple(deny_calls)
        self.bare = tuple(p for p in self.deny_calls if "." not in p)
        self.any_call = _matcher(self.deny_calls)
        self.any_bare = _matcher(self.bare)
        # An entry refuses its module and everything below it.
        self.any_module = _matcher([p for entry in self.deny_imports for p in (entry, entry + ".*")])
        # local name -> the module it stands for
        self.modules = {"builtins": "builtins", "__builtins__": "builtins"}
        # The enclosing scopes, innermost last: a function's node, or None
        # for a class body (whose names a nested function does not see).
        # A function's names are collected only when a refused name is
        # read in it (rare), so the common script pays nothing for them.
        self.scopes = []
        self.scope_names = {}

    def _denied_call(self, dotted):
        # The combined expression answers the common case (no match) in
        # one step; the loop below only names the rule that matched.
        if not self.any_call.match(dotted) and not (dotted.startswith("builtins.")
                                                     and self.any_bare.match(dotted.split(".", 1)[1])):
            return None
        for pattern in self.deny_calls:
            if fnmatch.fnmatchcase(dotted, pattern):
                return pattern
        if dotted.startswith("builtins."):
            name = dotted.split(".", 1)[1]
            for pattern in self.bare:
                if fnmatch.fnmatchcase(name, pattern):
                    return pattern
        return None

    def _denied_module(self, module):
        """The deny_imports entry that refuses module (a dotted name), or None."""
        if not self.any_module.match(module):
            return None
        for entry in self.deny_imports:
            if module == entry or module.startswith(entry + "."):
                return entry
        return None

    def _refuse_call(self, node, what, pattern):
        raise _refusal("forbidden_call", what, pattern, node)

    def _check_import(self, node, module):
        entry = self._denied_module(module)
        if entry:
            raise _refusal("forbidden_import", "import of %r" % module, entry, node)

    def visit_Import(self, node):
        for alias in node.names:
            self._check_import(node, alias.name)
            if alias.asname:
                self.modules[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.modules[top] = top

    def visit_ImportFrom(self, node):
        if node.level or not node.module:
            return
        self._check_import(node, node.module)
        for alias in node.names:
            if alias.name == "*":
                prefix = node.module + "."
                for pattern in self.deny_calls:
                    if pattern.startswith(prefix):
                        self._refuse_call(node, "from %s import *" % node.module, pattern)
                continue
            dotted = "%s.%s" % (node.module, alias.name)
            # from http import client: the submodule is imported.
            self._check_import(node, dotted)
            pattern = self._denied_call(dotted)
            if pattern:
                self._refuse_call(node, dotted, pattern)
            self.modules[alias.asname or alias.name] = dotted

    def _is_function_local(self, name):
        """Whether name, read here, is a local of an enclosing function (so
        never the builtin), as Python resolves it."""
        for index in range(len(self.scopes) - 1, -1, -1):
            scope = self.scopes[index]
            if scope is None:
                if index == len(self.scopes) - 1:
                    return False  # a class body reads globals and builtins
                continue  # a function does not see its class's names
            if scope not in self.scope_names:
                self.scope_names[scope] = _FunctionScope(scope)
            scope = self.scope_names[scope]
            if name in scope.globals:
                return False
            if name in scope.locals:
                return True
        return False

    def visit_Name(self, node):
        if not isinstance(node.ctx, ast.Load) or not self.any_bare.match(node.id):
            return
        for pattern in self.bare:
            if fnmatch.fnmatchcase(node.id, pattern):
                if self._is_function_local(node.id):
                    return
                self._refuse_call(node, node.id, pattern)

    def _function(self, node):
        # Decorators, defaults and annotations are evaluated in the
        # enclosing scope; the body in the function's own.
        for child in getattr(node, "decorator_list", []):
            self.visit(child)
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns)
        self.scopes.append(node)
        try:
            for statement in node.body if isinstance(node.body, list) else [node.body]:
                self.visit(statement)
        finally:
            self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_ClassDef(self, node):
        for child in node.decorator_list + node.bases + node.keywords:
            self.visit(child)
        self.scopes.append(None)
        try:
            for statement in node.body:
                self.visit(statement)
        finally:
            self.scopes.pop()

    def visit_If(self, node):
        taken = _constant_test(node.test)
        self.visit(node.test)
        if taken is not False:
            for statement in node.body:
                self.visit(statement)
        if taken is not True:
            for statement in node.orelse:
                self.visit(statement)

    def visit_While(self, node):
        taken = _constant_test(node.test)
        self.visit(node.test)
        if taken is not False:
            for statement in node.body:
                self.visit(statement)
        # A while's else runs when its test turns false: always reachable.
        for statement in node.orelse:
            self.visit(statement)

    def visit_IfExp(self, node):
        taken = _constant_test(node.test)
        self.visit(node.test)
        if taken is not False:
            self.visit(node.body)
        if taken is not True:
            self.visit(node.orelse)

    def _dotted(self, node):
        """The dotted name node refers to, its first part resolved through
        the script's imports, or None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        # A function-local name that shadows a module is still resolved
        # as that module: `import os as os` inside a function binds a local.
        if not isinstance(node, ast.Name) or node.id not in self.modules:
            return None
        return ".".join([self.modules[node.id]] + parts[::-1])

    def visit_Attribute(self, node):
        dotted = self._dotted(node)
        if dotted:
            pattern = self._denied_call(dotted)
            if pattern:
                self._refuse_call(node, dotted, pattern)
            # import http; http.client.HTTPConnection(...): the attribute
            # is a refused module, reached through an allowed parent.
            entry = self._denied_module(dotted)
            if entry:
                raise _refusal("forbidden_import", dotted, entry, node)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            base = self._dotted(node.args[0]) if isinstance(node.args[0], (ast.Name, ast.Attribute)) else None
            if base:
                dotted = "%s.%s" % (base, node.args[1].value)
                pattern = self._denied_call(dotted)
                if pattern:
                    self._refuse_call(node, "getattr(%s, %r)" % (base, node.args[1].value), pattern)
                entry = self._denied_module(dotted)
                if entry:
                    raise _refusal("forbidden_import", "getattr(%s, %r)" % (base, node.args[1].value), entry, node)
        self.generic_visit(node)


def _mentions(code):
    """Every name and string constant of a code object and of the code
    nested in it: the names it loads, stores, imports and reads as
    attributes (co_names), its locals, cells and free names, and its
    strings (getattr's argument, keyword names, annotations as text)."""
    found, pending = [], [code]
    while pending:
        item = pending.pop()
        if isinstance(item, types.CodeType):
            found += item.co_names + item.co_varnames + item.co_cellvars + item.co_freevars
            pending += item.co_consts
        elif isinstance(item, str):
            found.append(item)
        elif isinstance(item, (tuple, frozenset)):
            pending += item
    return found


# A word of a name or string: an identifier.
_WORD = re.compile(r"[^\W\d]\w*")


def _may_refuse(code, policy):
    """False when no rule can match: nothing code mentions (a whole name or
    string, or a word or dotted part of one) matches any part of any rule.

    The checker refuses only what the script spells: an import names the
    module, an attribute or call its name, getattr a constant string. The
    compiled code mentions all of these, with constants folded ("sys"
    "tem"), escapes decoded and identifiers normalized as Python reads
    them. What the compiler drops is code that can never run: unreachable
    code (after a return, `if not __debug__:`) and annotations Python never
    evaluates (of a local variable; of an attribute or subscript target
    under `from __future__ import annotations`), whose names the checker
    may still refuse; leaving it unchecked lets through nothing that could
    run.
    """
    parts = [part for rule in policy["deny_imports"] + policy["deny_calls"] for part in rule.split(".")]
    any_part = _matcher(parts)
    for text in _mentions(code):
        if any_part.match(text):
            return True
        for word in _WORD.findall(text):
            if any_part.match(word):
                return True
        if "." in text and any(any_part.match(part) for part in text.split(".")):
            return True
    return False


def check(tree, policy, need_main=True, code=None):
    """Raise Refusal when tree (a parsed module) breaks a rule. need_main
    is False for a script run as a cell, which needs no main. code, the
    tree compiled, lets the walk of the tree be skipped when the code
    mentions no part of any rule (_may_refuse), as most scripts do: in a
    fresh fork of the zygote the walk costs its CPU and, for each page of
    the zygote's objects it touches, a copy-on-write fault."""
    if need_main and not _binds_main(tree.body):
        raise Refusal("missing_main", "the script binds no main at module level (def main, main = ..., or an import); "
                      "to run top-level code without a main, send \"entrypoint\": \"none\"", 0, 0)
    if not (policy["deny_imports"] or policy["deny_calls"]):
        return
    if code is not None and not _may_refuse(code, policy):
        return
    _Checker(policy["deny_imports"], policy["deny_calls"]).visit(tree)
