"""Files in and out of a sandbox.

A request's files are written to the working directory (the sandbox's
/tmp) before the script runs; the regular files the script leaves in the
output directory (/tmp/output, made by isolation.py) go back with its
result. Names follow the host-safety rules of runner/files.go
(checkSafeName), which checks both directions again: nothing here is
trusted by the runner. The portability rules (names Windows or macOS
cannot save, names that collide there) are the runner's alone, so no
sandbox needs Unicode's tables.
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


def _unsafe(code):
    """C0 and C1 controls, DEL, the backslash and the bidirectional
    controls, as runner/files.go unsafeInName."""
    return (code < 0x20 or 0x7F <= code <= 0x9F or code == 0x5C or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069 or code in (0x200E, 0x200F, 0x061C))


def check_name(name):
    """The reason name is not a valid file name, or None."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8"
    if not encoded or len(encoded) > MAX_NAME_BYTES:
        return "must be 1 to %d bytes" % MAX_NAME_BYTES
    if any(_unsafe(ord(c)) for c in name):
        return "holds a control character, a backslash or a bidirectional control"
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
    followed nor sent. Raises FilesError past max_files or max_bytes.

    The walk holds a descriptor of each directory and opens every entry
    relative to it with O_NOFOLLOW, then asks the descriptor what it is: a
    script's process that swaps an entry for a link while this runs finds
    the link refused (ELOOP), never followed.
    """
    import errno
    import stat

    found = []
    total = 0
    # Entries skipped when opened: a link (ELOOP), a socket (ENXIO), one
    # removed meanwhile (ENOENT), a device on the nodev tmpfs (EACCES).
    skipped = (errno.ELOOP, errno.ENXIO, errno.ENOENT, errno.EACCES)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

    def read_file(fd, name):
        nonlocal total
        reason = check_name(name)
        if reason is not None:
            raise FilesError("output_files_invalid", "the output file name %r %s" % (name, reason))
        if len(found) >= max_files:
            raise FilesError("output_files_limit", "the script left more than %d files in /tmp/output" % max_files)
        chunks = []
        budget = max_bytes - total + 1
        while budget > 0:
            chunk = os.read(fd, min(budget, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            budget -= len(chunk)
        content = b"".join(chunks)
        total += len(content)
        if total > max_bytes:
            raise FilesError("output_files_limit",
                             "the files in /tmp/output hold more than %d bytes together" % max_bytes)
        found.append({"name": name, "content": content})

    def walk(dir_fd, prefix, depth):
        with os.scandir(dir_fd) as entries:
            names = sorted(entry.name for entry in entries)
        for entry_name in names:
            name = prefix + entry_name
            try:
                fd = os.open(entry_name, flags, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in skipped:
                    continue
                raise
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):
                    if depth >= MAX_DEPTH - 1:
                        raise FilesError("output_files_invalid",
                                         "output/%s is nested deeper than %d" % (name, MAX_DEPTH))
                    walk(fd, name + "/", depth + 1)
                elif stat.S_ISREG(mode):
                    read_file(fd, name)
            finally:
                os.close(fd)

    try:
        root = os.open(OUTPUT_DIR, flags | os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno in skipped + (errno.ENOTDIR,):
            return found
        raise
    try:
        walk(root, "", 0)
    finally:
        os.close(root)
    return found
