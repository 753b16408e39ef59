"""Frames and messages: the Python side of runner/protocol.go.

runner/protocol.go is the contract; this module mirrors its message types
key for key (a Go test compares the two). Two transports:

* the sandbox's channel: two pipes, fd 3 (runner -> sandbox) and fd 4
  (sandbox -> runner); every frame is a 4-byte big-endian length and one
  msgpack map;
* the zygote's control socket: fd 3 of the zygote, SOCK_SEQPACKET, one
  msgpack map per packet, descriptors as SCM_RIGHTS.
"""

import os
import struct

# Channel descriptors of a sandbox.
CHANNEL_IN_FD = 3
CHANNEL_OUT_FD = 4
# Control socket of the zygote.
CONTROL_FD = 3

# The runner never sends more than the script and input caps; this bound only
# keeps a confused peer from making the sandbox allocate without limit.
MAX_INBOUND_FRAME = 64 << 20

# Messages on a sandbox's channel, by type: the exact keys each carries.
CHANNEL_MESSAGES = {
    "ready": ("type",),
    "execute": ("type", "script", "entrypoint", "input", "inputs", "input_format", "stdin", "result_format", "limits",
                "deny_imports", "files", "output_files"),
    "result": ("type", "result", "files"),
    # A batch: "started" once the script is ready to take its inputs, then
    # per input its "output" frames and one "item", then "results" (or an
    # "error" about the batch's output files).
    "started": ("type",),
    "output": ("type", "stream", "text"),
    "item": ("type", "index", "result", "kind", "message", "traceback", "line", "offset"),
    "results": ("type", "files"),
    "error": ("type", "kind", "message", "traceback", "line", "offset"),
}

# Messages on the zygote's control socket, by type.
CONTROL_MESSAGES = {
    "ready": ("type", "pid"),
    "spawn": ("type", "id", "prewarm"),
    "spawned": ("type", "id", "pid"),
    "spawn_failed": ("type", "id", "message"),
    "exit": ("type", "id", "status", "cpu_us", "max_rss_kb"),
}

# Keys of the zygote's configuration (JSON on its command line).
ZYGOTE_CONFIG_KEYS = ("preload", "scratch_bytes", "policy", "sandbox_ids")

# Keys of the validation policy in the zygote's configuration.
POLICY_KEYS = ("name", "deny_imports", "deny_calls")

# An "item" message (one input of a batch) has "kind" "" for a result, else
# the error's kind (as in an "error" message); "output" has "stream"
# "stdout" or "stderr".

# Keys of the "limits" map of an execute message.
LIMIT_KEYS = ("cpu_seconds", "memory_bytes", "processes", "open_files", "file_size_bytes")

# Keys of one file, in "files" of an execute, result or results message.
FILE_KEYS = ("name", "content")

# Keys of "output_files" of an execute message: the caps on what a script
# may leave in the output directory (the runner checks them again).
OUTPUT_FILES_KEYS = ("max_files", "max_bytes")

# Values of "input_format".
INPUT_NONE, INPUT_JSON, INPUT_MSGPACK = "", "json", "msgpack"

# Values of "result_format": results as JSON text, or as one msgpack value
# (bytes as bin) for callers that answer in msgpack.
RESULT_JSON, RESULT_MSGPACK = "json", "msgpack"


class ProtocolError(Exception):
    """A message that does not match its declared shape."""


def check_shape(message, schema):
    """Raise ProtocolError unless message has exactly its type's keys."""
    if not isinstance(message, dict):
        raise ProtocolError("message is not a map")
    keys = schema.get(message.get("type"))
    if keys is None:
        raise ProtocolError("unknown message type %r" % (message.get("type"),))
    if set(message) != set(keys):
        raise ProtocolError("message %r has keys %s, want %s" % (message["type"], sorted(message), sorted(keys)))
    return message


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the runner closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def encode_frame(msgpack, message):
    """One channel message as the bytes of its frame; its keys must match
    CHANNEL_MESSAGES."""
    check_shape(message, CHANNEL_MESSAGES)
    payload = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def write_frame(frame, fd=CHANNEL_OUT_FD):
    """Write an encoded frame."""
    _write_all(fd, frame)


def send_frame(msgpack, message, fd=CHANNEL_OUT_FD):
    """Send one channel message; its keys must match CHANNEL_MESSAGES."""
    write_frame(encode_frame(msgpack, message), fd)


def receive_frame(msgpack, fd=CHANNEL_IN_FD):
    """Read one channel message and check its shape."""
    (length,) = struct.unpack(">I", _read_exact(fd, 4))
    if length > MAX_INBOUND_FRAME:
        raise ProtocolError("frame of %d bytes is over the cap" % length)
    return check_shape(msgpack.unpackb(_read_exact(fd, length), raw=False), CHANNEL_MESSAGES)


def control_packet(msgpack, message):
    """Encode one control message; its keys must match CONTROL_MESSAGES."""
    check_shape(message, CONTROL_MESSAGES)
    return msgpack.packb(message, use_bin_type=True)
