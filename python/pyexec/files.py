"""Files in and out of a sandbox.

A request's files are written to the working directory (the sandbox's
/tmp) before the script runs; the regular files the script leaves in the
output directory (/tmp/output, made by isolation.py) go back with its
result. Names follow the rules of runner/files.go (CheckFileName), which
checks both directions again: nothing here is trusted by the runner.
"""

import os

# The output directory, relative to the working directory.
OUTPUT_DIR = "output"
# Bounds of a name, as in runner/files.go.
MAX_NAME_BYTES = 255
MAX_DEPTH = 8


class FilesError(Exception):
    """The output directory holds what cannot be sent back."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def check_name(name):
    """The reason name is not a valid file name, or None."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8"
    if not encoded or len(encoded) > MAX_NAME_BYTES:
        return "must be 1 to %d bytes" % MAX_NAME_BYTES
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "holds a control character"
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        return "is nested deeper than %d" % MAX_DEPTH
    if any(p in ("", ".", "..") for p in parts):
        return "must be a relative path without empty, '.' or '..' parts"
    return None


def place(files):
    """Write the request's files, given as [{"name", "content"}], relative
    to the working directory. The sandbox is fresh: nothing, and so no
    link, exists there yet, and O_EXCL|O_NOFOLLOW would refuse one."""
    for f in files:
        name = f["name"]
        reason = check_name(name)
        if reason is not None:
            raise ValueError("file name %r %s" % (name, reason))
        parent = os.path.dirname(name)
        if parent:
            os.makedirs(parent, 0o755, exist_ok=True)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(f["content"])
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def collect(max_files, max_bytes):
    """The regular files under the output directory, as [{"name",
    "content"}] sorted by name. Links and other special files are neither
    followed nor sent. Raises FilesError past max_files or max_bytes."""
    found = []
    total = 0

    def walk(directory, prefix, depth):
        nonlocal total
        with os.scandir(directory) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        for entry in entries:
            name = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth >= MAX_DEPTH - 1:
                    raise FilesError("output_files_invalid", "output/%s is nested deeper than %d" % (name, MAX_DEPTH))
                walk(entry.path, name + "/", depth + 1)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            reason = check_name(name)
            if reason is not None:
                raise FilesError("output_files_invalid", "the output file name %r %s" % (name, reason))
            if len(found) >= max_files:
                raise FilesError("output_files_limit",
                                 "the script left more than %d files in /tmp/output" % max_files)
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                chunks = []
                budget = max_bytes - total + 1
                while budget > 0:
                    chunk = os.read(fd, min(budget, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    budget -= len(chunk)
            finally:
                os.close(fd)
            content = b"".join(chunks)
            total += len(content)
            if total > max_bytes:
                raise FilesError("output_files_limit",
                                 "the files in /tmp/output hold more than %d bytes together" % max_bytes)
            found.append({"name": name, "content": content})

    try:
        info = os.lstat(OUTPUT_DIR)
    except FileNotFoundError:
        return found
    import stat

    if stat.S_ISDIR(info.st_mode):
        walk(OUTPUT_DIR, "", 0)
    return found
