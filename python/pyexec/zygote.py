"""The zygote: import the heavy modules once, clone one sandbox per spawn.

Started in the jail by the runner (python/boot.py hands over to main). It
says ready on its control socket (fd 3, SOCK_SEQPACKET), then for every
spawn message, which carries the sandbox's four descriptors (channel in,
channel out, stdout, stderr) as SCM_RIGHTS, clones a sandbox straight into
new namespaces:

    zygote ─┬─ sandbox (PID 1 of its own namespaces)
            └─ sandbox …

The sandbox isolates itself (isolation.py) before it says ready. The
zygote sends the runner a pidfd of it ("spawned"), reaps it when it ends
and reports how ("exit": wait status and rusage, straight from the kernel)
on the control socket, which the sandbox never holds: a script cannot
forge its own verdict. The zygote never sees a script, an input or a
result: those travel only on the sandbox's own channel.
"""

import json
import os
import sys

from . import protocol

# Exit code of a sandbox that could not isolate itself; the
# runner sees the spawn fail or the sandbox never say ready.
EXIT_ISOLATION_FAILED = 71
EXIT_SERVE_FAILED = 72

# What prewarm runs: the protocol, the module machinery, numpy, pandas and
# the JSON encoding, as a typical script would.
PREWARM_SCRIPT = """import numpy as np
import pandas as pd

def main(data):
    df = pd.DataFrame({"x": np.arange(16.0), "y": np.arange(16.0) * 2})
    print(end="")
    return {"n": len(data), "c": float(df["x"].corr(df["y"])), "m": df["y"].mean(), "a": np.arange(3)}
"""


# The execute message of the warm-up run: every key the runner sends
# (python/tests checks it against protocol.CHANNEL_MESSAGES), so that the
# run goes the whole way a request goes.
PREWARM_MESSAGE = {
    "type": "execute", "script": PREWARM_SCRIPT, "entrypoint": "main", "input": b"[1, 2]", "inputs": None,
    "input_format": "json", "stdin": None, "result_format": "json", "limits": {}, "deny_imports": [], "files": [],
    "output_files": {"max_files": 0, "max_bytes": 0},
}


def _prewarm(msgpack, policy):
    """Run one fixed script through the execute path before saying ready;
    return its reply.

    A forked sandbox shares the zygote's memory copy-on-write: the first
    write to each page costs a fault and a copy, and CPython's first run of
    a code path rewrites it in place (quickening). Paying that here, while
    the sandbox waits in the pool, takes it off the request's path. An
    exception here is a bug of this package and is not swallowed: a
    warm-up that stopped half-way would leave every request to pay for the
    rest unnoticed (a message missing a key once cost pandas 14 % of its
    throughput). A refusal by an operator's own policy is only a reply.
    """
    import ast

    from . import policy as validation, script

    # Through msgpack, as a request arrives.
    message = msgpack.unpackb(msgpack.packb(PREWARM_MESSAGE, use_bin_type=True), raw=False)
    # Checked against the real policy too, so its patterns are compiled
    # here once. The warm-up script mentions no rule, so its run skips the
    # policy's walk of the tree: the walk is warmed on its own, for the
    # scripts that do mention one.
    reply = script.run(msgpack, message, policy)
    try:
        validation.check(ast.parse(PREWARM_SCRIPT), policy)
    except validation.Refusal:
        pass  # an operator's policy refuses the warm-up: its reply says so

    sys.modules.pop(script.SCRIPT_MODULE_NAME, None)
    return reply


def _warm_matplotlib():
    """When the preload imported matplotlib, make what every plot needs once,
    here, rather than in each sandbox: pyplot (on pyexec's Agg backend that
    MPLBACKEND names, pyexec.mplbackend) and pandas' plotting module imported, the font list
    built (matplotlib builds it at first use, about half a second here), and
    one small chart drawn to PNG, which loads the default font and fills the
    caches of the text layout (bench/README.md, "matplotlib").
    """
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    pd = sys.modules.get("pandas")
    if pd is not None:
        pd.Series([0.0, 1.0]).plot(ax=ax, title="warm-up")
    else:
        ax.plot([0.0, 1.0])
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")


# Every module of this package a sandbox uses, and the standard-library
# modules they import inside functions. The zygote imports them all before
# gc.freeze: a module first imported in a sandbox is compiled from source
# there, in every sandbox (pyexec.limits alone cost 1.6 ms of CPU and 150
# page copies per request). python/tests checks this list against the
# package's function-level imports.
SANDBOX_MODULES = (
    "pyexec.figures", "pyexec.files", "pyexec.isolation", "pyexec.limits", "pyexec.policy", "pyexec.protocol",
    "pyexec.results", "pyexec.script", "pyexec.syscalls",
    "ast", "base64", "datetime", "decimal", "errno", "fcntl", "io", "json", "linecache", "random",
    "re", "resource", "signal", "socket", "stat", "struct", "threading", "traceback", "types", "uuid",
)

# Modules a sandbox imports only for a script that uses the feature, which
# pays for the import itself: asyncio for an async main or a cell with a
# top-level await. The zygote does not preload them.
LAZY_MODULES = ("asyncio",)


def import_sandbox_modules():
    """Import SANDBOX_MODULES (see there why)."""
    import importlib

    for name in SANDBOX_MODULES:
        importlib.import_module(name)


def serve_one(msgpack, policy):
    """Say ready, run the one execute message, reply, exit."""
    from . import limits, script

    protocol.send_frame(msgpack, {"type": "ready"})
    try:
        message = protocol.receive_frame(msgpack)
    except EOFError:
        os._exit(0)
    if message["type"] != "execute":
        os._exit(2)
    # Encoded before the limits apply: with the address space used up, the
    # sandbox may not even build its reply, but it can still write this.
    out_of_memory = protocol.encode_frame(msgpack, script.error(
        "memory_limit", "out of memory: the sandbox could not build its reply under the memory limit"))
    try:
        limits.apply(message["limits"])
        reply = script.run(msgpack, message, policy)
    except MemoryError:
        reply = None
    except BaseException as exc:
        # script.run answers for everything the script does; this is the
        # sandbox's own code failing where the script left it (out of
        # descriptors, say). Say what, rather than die unexplained.
        try:
            reply = script.error("script_error", "the sandbox failed after the script: %s: %s" % (type(exc).__name__, exc))
        except MemoryError:
            reply = None
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Close stdout and stderr before the reply, so the runner sees their EOF
    # right after it and knows the output is complete (unless the script
    # kept a copy, in which case the runner kills the sandbox and drains).
    # Closing them is enough where no descriptor is left for /dev/null.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        os.close(1)
        os.close(2)
    try:
        frame = protocol.encode_frame(msgpack, reply) if reply is not None else out_of_memory
    except MemoryError:
        frame = out_of_memory
    protocol.write_frame(frame)
    # Stay alive, idle, until the runner has read what this process used
    # from /proc and kills it (it closes the channel only after the kill);
    # then exit, whatever threads the script left running.
    try:
        os.read(protocol.CHANNEL_IN_FD, 1)
    except OSError:
        pass
    os._exit(0)


# Descriptor of a fresh sandbox's gate (host ids per sandbox): the zygote
# writes a byte once the sandbox's ids are mapped, or closes it if they
# cannot be.
GATE_FD = 5


def _become_sandbox(libc, msgpack, fds, config, sandbox_layer, ids, prewarm):
    """In the fresh clone: isolate, say ready, run the one script, exit.
    fds has a fifth descriptor, the gate, when the zygote maps the
    sandbox's ids (host ids per sandbox); else the sandbox maps its own."""
    import signal
    import traceback

    from . import isolation

    try:
        # A session and process group of its own, first: in the zygote's
        # group, kill(0, ...) and setpriority(PRIO_PGRP, 0, ...) from the
        # script would reach the zygote, the jail and every sibling, since
        # process groups are found without regard to PID namespaces.
        os.setsid()
        libc.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        channel_in, channel_out, stdout, stderr = fds[:4]
        devnull = os.open(os.devnull, os.O_RDONLY)
        # 0-4 as the protocol says (and the gate, if any, 5); this also
        # closes the control socket, which no sandbox ever holds.
        isolation.place_descriptors([devnull, stdout, stderr, channel_in, channel_out] + list(fds[4:]))
        gated = len(fds) > 4
        if not gated:
            isolation.map_ids(*ids)
        isolation.private_mounts_and_loopback(libc)
        if gated:
            if os.read(GATE_FD, 1) != b"x":
                raise OSError("the zygote could not map this sandbox's ids")
            os.close(GATE_FD)
            isolation.take_own_ids(*ids)
        isolation.private_dev_and_tmp(libc, config["scratch_bytes"])
        isolation.private_proc(libc)
        if "matplotlib" in sys.modules:
            # The zygote fixed matplotlib's config and cache directory at
            # this path of its own /tmp; make it in the sandbox's.
            os.mkdir(os.environ["MPLCONFIGDIR"])
        isolation.finish(libc, sandbox_layer)
        if prewarm:
            _prewarm(msgpack, config["policy"])
    except BaseException:
        try:
            os.write(2, traceback.format_exc().encode()[-4096:])
        finally:
            os._exit(EXIT_ISOLATION_FAILED)
    try:
        serve_one(msgpack, config["policy"])
    except BaseException:
        # Never unwind into the zygote's own frames: this process is a
        # sandbox, whatever failed.
        try:
            os.write(2, traceback.format_exc().encode()[-4096:])
        finally:
            os._exit(EXIT_SERVE_FAILED)
    os._exit(0)


def zygote(config, libc):
    """Import once, then clone one sandbox per spawn message, until EOF.

    One loop waits on the control socket and on a pidfd per live sandbox:
    a spawn clones a sandbox and sends the runner a pidfd of it
    ("spawned"); a pidfd that turns readable is a sandbox that ended, reaped
    here and reported ("exit", with the kernel's wait status and rusage).
    """
    import gc
    import select
    import socket

    import msgpack

    from . import isolation, syscalls

    import_sandbox_modules()
    # Host ids per sandbox: the zygote's slice, each id held by at most one
    # live sandbox and handed out again as late as possible.
    free_ids = None
    if config["sandbox_ids"]:
        import collections

        first, count = config["sandbox_ids"]
        free_ids = collections.deque(range(first, first + count))
    cloner = isolation.Cloner(libc)
    zygote_filter = syscalls.Program(libc, syscalls.build_bpf(for_zygote=True))
    sandbox_layer = syscalls.Program(libc, syscalls.build_sandbox_layer())
    ids = (os.getuid(), os.getgid())
    control = socket.socket(fileno=protocol.CONTROL_FD)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    live = {}  # pidfd -> (spawn id, pid, host id or None)

    def report(message, fds=()):
        packet = protocol.control_packet(msgpack, message)
        if fds:
            socket.send_fds(control, [packet], list(fds))
        else:
            control.send(packet)

    # Run the warm-up once here too: the bytecode it specialises and the
    # caches it fills are then inherited, so each sandbox's own first run
    # (its prewarm, or the request's) writes, and so copies, fewer pages
    # (bench/README.md, "Phases": about 3 ms of CPU less per sandbox).
    _prewarm(msgpack, config["policy"])
    if "matplotlib" in sys.modules:
        _warm_matplotlib()
    isolation.seal_imports_scratch(libc, keep_id_capabilities=free_ids is not None)
    # From here on the zygote, and every sandbox until it adds its layer,
    # runs under the allow list plus what cloning and isolating need.
    libc.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)
    zygote_filter.load(libc)
    # Objects that exist now are shared copy-on-write with every clone;
    # keep the collector from touching (and so copying) them.
    gc.freeze()
    report({"type": "ready", "pid": os.getpid()})
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd in live:
                spawn_id, pid, host_id = live.pop(fd)
                poller.unregister(fd)
                _, status, usage = os.wait4(pid, 0)
                os.close(fd)
                if host_id is not None:
                    free_ids.append(host_id)
                report({"type": "exit", "id": spawn_id, "status": status,
                        "cpu_us": int((usage.ru_utime + usage.ru_stime) * 1e6), "max_rss_kb": int(usage.ru_maxrss)})
                continue
            packet, fds, _, _ = socket.recv_fds(control, 1 << 12, 4)
            if not packet:
                os._exit(0)  # the runner closed the control socket
            try:
                message = protocol.check_shape(msgpack.unpackb(packet, raw=False), protocol.CONTROL_MESSAGES)
            except Exception:
                message = {}
            if message.get("type") != "spawn" or len(fds) != 4:
                for received in fds:
                    os.close(received)
                continue
            host_id, gate = None, None
            try:
                if free_ids is not None:
                    if not free_ids:
                        raise OSError("every id of this zygote's slice is held by a live sandbox")
                    gate = os.pipe()
                pid = cloner.clone(isolation.SANDBOX_NAMESPACES)
            except OSError as exc:
                for received in fds + list(gate or ()):
                    os.close(received)
                report({"type": "spawn_failed", "id": message["id"], "message": str(exc)})
                continue
            if pid == 0:
                if gate is not None:
                    os.close(gate[1])
                    fds = fds + [gate[0]]
                _become_sandbox(libc, msgpack, fds, config, sandbox_layer, ids, message["prewarm"])
            for received in fds:
                os.close(received)
            if gate is not None:
                os.close(gate[0])
                host_id = free_ids.popleft()
                try:
                    isolation.map_sandbox_ids(pid, ids[0], ids[1], host_id)
                    os.write(gate[1], b"x")
                except OSError as exc:
                    # The sandbox reads EOF and exits before it says
                    # ready; the runner sees its spawn fail.
                    os.write(2, ("cannot map sandbox %d's ids: %s\n" % (pid, exc)).encode())
                os.close(gate[1])
            pidfd = os.pidfd_open(pid)
            live[pidfd] = (message["id"], pid, host_id)
            poller.register(pidfd, select.POLLIN)
            report({"type": "spawned", "id": message["id"], "pid": pid}, [pidfd])


def main(config_json):
    """Entry point: config_json is the runner's zygote configuration."""
    config = json.loads(config_json)
    if set(config) != set(protocol.ZYGOTE_CONFIG_KEYS) or set(config["policy"]) != set(protocol.POLICY_KEYS):
        raise SystemExit("zygote config has keys %s (policy %s), want %s (policy %s)" % (
            sorted(config), sorted(config.get("policy", {})), sorted(protocol.ZYGOTE_CONFIG_KEYS), sorted(protocol.POLICY_KEYS)))
    from . import isolation

    # Nothing but the control socket (3) is the zygote's: a jail that
    # handed the runner its id maps leaves the pipe it waited on (4).
    os.closerange(protocol.CONTROL_FD + 1, 1 << 16)
    libc = isolation.Libc()
    isolation.scratch_for_imports(libc, config["scratch_bytes"], own_user_namespace=not config["sandbox_ids"])
    for name in config["preload"]:
        __import__(name)
    zygote(config, libc)
