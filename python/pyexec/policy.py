"""Validation of a script before any of its code runs.

Three checks, on the parsed source (ast), in this order:

1. it parses (else syntax_error, with line and column);
2. `main` is bound at module level (else missing_main): by a `def`,
   `async def` or `class` statement, an assignment (`main = ...`,
   `main: T = ...`), or an import that binds the name (`from m import main`,
   `import m as main`), also inside module-level `if`, `try`, `with`, `for`
   and `while` blocks;
3. the policy (else forbidden_import or forbidden_call, naming the rule,
   the line and the column).

A policy has two lists (runner/protocol.go, policyConfig):

* deny_imports: top-level modules; `import a.b`, `import a as x` and
  `from a.b import c` are refused when `a` is listed.
* deny_calls: names and dotted names, `*` as a suffix wildcard
  (`os.exec*`). A bare name (`eval`) is refused wherever the script
  refers to it, called or not (`f = eval` too), and as an attribute of the
  builtins module (`builtins.eval`). A dotted name (`os.system`) is refused
  as an attribute of the module, whatever the script calls the module
  (`import os as o; o.system`), when imported from it (`from os import
  system as s`, or `from os import *`), and as `getattr(o, "system")`
  with a constant string.

This is an early, clear refusal of the obvious, for compatibility with the
original service. It is not a boundary: a script can build names at run
time (`getattr(o, "sys" + "tem")`, `vars(__builtins__)`), and the jail is
what holds then.
"""

import ast
import fnmatch


class Refusal(Exception):
    def __init__(self, kind, message, line, column):
        super().__init__(message)
        self.kind, self.message, self.line, self.column = kind, message, line, column


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
    import re

    key = tuple(patterns)
    if key not in _compiled:
        _compiled[key] = re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
    return _compiled[key]


class _Checker(ast.NodeVisitor):
    def __init__(self, deny_imports, deny_calls):
        self.deny_imports = frozenset(deny_imports)
        self.deny_calls = tuple(deny_calls)
        self.bare = tuple(p for p in self.deny_calls if "." not in p)
        self.any_call = _matcher(self.deny_calls)
        self.any_bare = _matcher(self.bare)
        # local name -> the module it stands for
        self.modules = {"builtins": "builtins", "__builtins__": "builtins"}

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

    def _refuse_call(self, node, what, pattern):
        raise Refusal("forbidden_call", "%s is not allowed here (policy rule %r)" % (what, pattern),
                      node.lineno, node.col_offset + 1)

    def _check_import(self, node, module):
        top = module.split(".")[0]
        if top in self.deny_imports:
            raise Refusal("forbidden_import", "import of %r is not allowed here (policy rule %r)" % (module, top),
                          node.lineno, node.col_offset + 1)

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
            pattern = self._denied_call(dotted)
            if pattern:
                self._refuse_call(node, dotted, pattern)
            self.modules[alias.asname or alias.name] = dotted

    def visit_Name(self, node):
        if not isinstance(node.ctx, ast.Load) or not self.any_bare.match(node.id):
            return
        for pattern in self.bare:
            if fnmatch.fnmatchcase(node.id, pattern):
                self._refuse_call(node, node.id, pattern)

    def _dotted(self, node):
        """The dotted name node refers to, its first part resolved through
        the script's imports, or None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.modules:
            return None
        return ".".join([self.modules[node.id]] + parts[::-1])

    def visit_Attribute(self, node):
        dotted = self._dotted(node)
        if dotted:
            pattern = self._denied_call(dotted)
            if pattern:
                self._refuse_call(node, dotted, pattern)
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
        self.generic_visit(node)


def check(tree, policy):
    """Raise Refusal when tree (a parsed module) breaks a rule."""
    if not _binds_main(tree.body):
        raise Refusal("missing_main", "the script binds no main at module level (def main, main = ..., or an import)", 0, 0)
    if policy["deny_imports"] or policy["deny_calls"]:
        _Checker(policy["deny_imports"], policy["deny_calls"]).visit(tree)
