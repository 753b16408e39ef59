"""Bootstrap of the sandbox's Python side, run with ``python3 -c``.

The runner starts ``python3 -s -P -B -u -c <this file> <config JSON> <name>
<source> ...``: the package ``pyexec`` travels on the command line, so the
Go binary embeds the one copy of it (python/embed.go) and nothing has to be
written into the jail. This file installs a finder that serves those
sources, forgets the command line, and hands over to pyexec.zygote.main.
"""

import sys


def _install(sources):
    import importlib.abc
    import importlib.util

    class EmbeddedSources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname not in sources:
                return None
            is_package = fullname.count(".") == 0
            return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            name = module.__name__
            code = compile(sources[name], "<%s>" % name, "exec", dont_inherit=True)
            exec(code, module.__dict__)

    sys.meta_path.insert(0, EmbeddedSources())


def _boot():
    config = sys.argv[1]
    pairs = sys.argv[2:]
    _install(dict(zip(pairs[0::2], pairs[1::2])))
    sys.argv = ["pyexec"]
    import pyexec.zygote

    pyexec.zygote.main(config)


_boot()
