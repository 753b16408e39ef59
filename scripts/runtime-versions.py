"""Prints a runtime's versions file: "python=…", "numpy=…", "pandas=…"
(empty when not installed), what /health shows. Run with the runtime's own
interpreter (python3 -I) by scripts/build-runtime.sh on a host and by
deploy/image/build-runtime-in-image.sh in the image build."""

import platform

print("python=" + platform.python_version())
for module in ("numpy", "pandas"):
    try:
        print(module + "=" + __import__(module).__version__)
    except ImportError:
        print(module + "=")
