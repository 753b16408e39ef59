"""The zygote: import the heavy modules once, fork one sandbox per spawn.

Started in the jail by the runner (python/boot.py hands over to main). It
says ready on its control socket (fd 3, SOCK_SEQPACKET), then for every
spawn message, which carries the sandbox's four descriptors (channel in,
channel out, stdout, stderr) as SCM_RIGHTS, forks a supervisor:

    zygote ─┬─ supervisor ─ sandbox (PID 1 of its own namespaces)
            └─ supervisor ─ sandbox …

The supervisor isolates itself (isolation.py), forks the sandbox, sends the
runner a pidfd of it ("spawned"), waits for it and reports how it ended
("exit": wait status and rusage, straight from the kernel) on the control
socket, which the sandbox never holds: a script cannot forge its own
verdict. The zygote never sees a script, an input or a result: those travel
only on the sandbox's own channel.
"""

import json
import os
import sys

from . import protocol

# Exit code of a supervisor or sandbox that could not isolate itself; the
# runner sees the spawn fail or the sandbox never say ready.
EXIT_ISOLATION_FAILED = 71

# What prewarm runs: the protocol, the module machinery, numpy, pandas and
# the JSON encoding, as a typical script would.
PREWARM_SCRIPT = """import numpy as np
import pandas as pd

def main(data):
    df = pd.DataFrame({"x": np.arange(16.0), "y": np.arange(16.0) * 2})
    print(end="")
    return {"n": len(data), "c": float(df["x"].corr(df["y"])), "m": df["y"].mean(), "a": np.arange(3)}
"""


def _prewarm(msgpack):
    """Run one fixed script through the execute path before saying ready.

    A forked sandbox shares the zygote's memory copy-on-write: the first
    write to each page costs a fault and a copy, and CPython's first run of
    a code path rewrites it in place (quickening). Paying that here, while
    the sandbox waits in the pool, takes it off the request's path.
    """
    from . import script

    message = {"type": "execute", "script": PREWARM_SCRIPT, "input": b"[1, 2]", "input_format": "json",
               "limits": {}, "deny_imports": []}
    try:
        script.run(msgpack, msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False))
    except Exception:
        pass
    sys.modules.pop(script.SCRIPT_MODULE_NAME, None)


def serve_one(msgpack):
    """Say ready, run the one execute message, reply, exit."""
    from . import limits, script

    protocol.send_frame(msgpack, {"type": "ready"})
    try:
        message = protocol.receive_frame(msgpack)
    except EOFError:
        os._exit(0)
    if message["type"] != "execute":
        os._exit(2)
    try:
        limits.apply(message["limits"])
        reply = script.run(msgpack, message)
    except MemoryError:
        reply = script.error("memory_limit", "out of memory")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Close stdout and stderr before the reply, so the runner sees their EOF
    # right after it and knows the output is complete (unless the script
    # kept a copy, in which case the runner kills the sandbox and drains).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    protocol.send_frame(msgpack, reply)
    # Threads the script left running must not keep the process alive.
    os._exit(0)


def _supervise(libc, msgpack, spawn_id, fds, config, bpf, where):
    """The forked supervisor: isolate, fork the sandbox, report, exit.

    where["control_fd"] says where the control socket is, for the caller's
    failure report: the descriptors move during the isolation.
    """
    import signal
    import socket

    from . import isolation

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    libc.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
    channel_in, channel_out, stdout, stderr = fds
    devnull = os.open(os.devnull, os.O_RDONLY)
    # 0-4 as the sandbox will have them; 5 is the control socket, which the
    # sandbox closes before it runs anything.
    isolation.place_descriptors([devnull, stdout, stderr, channel_in, channel_out, protocol.CONTROL_FD])
    control_fd = where["control_fd"] = 5
    isolation.enter_namespaces(libc)
    isolation.private_dev_and_tmp(libc, config["scratch_bytes"])

    child = os.fork()
    if child == 0:
        try:
            os.close(control_fd)
            isolation.finish(libc, bpf)
            if config["prewarm"]:
                _prewarm(msgpack)
        except BaseException:
            os._exit(EXIT_ISOLATION_FAILED)
        serve_one(msgpack)
        os._exit(0)

    control = socket.socket(fileno=control_fd)
    # The supervisor holds none of the sandbox's descriptors: the runner's
    # EOF on them means the sandbox is gone.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2, 3, 4):
        os.dup2(null, fd)
    os.close(null)
    pidfd = os.pidfd_open(child)
    socket.send_fds(control, [protocol.control_packet(msgpack, {"type": "spawned", "id": spawn_id, "pid": child})],
                    [pidfd])
    os.close(pidfd)
    while True:
        try:
            _, status, usage = os.wait4(child, 0)
            break
        except InterruptedError:
            continue
    report = {"type": "exit", "id": spawn_id, "status": status,
              "cpu_us": int((usage.ru_utime + usage.ru_stime) * 1e6), "max_rss_kb": int(usage.ru_maxrss)}
    try:
        control.send(protocol.control_packet(msgpack, report))
    except OSError:
        pass
    os._exit(0)


def zygote(config):
    """Import once, then fork one sandbox per spawn message, until EOF."""
    import gc
    import signal
    import socket

    import msgpack

    from . import isolation, syscalls

    libc = isolation.Libc()
    bpf = syscalls.build_bpf()
    # Supervisors are reaped by the kernel; each reports its sandbox's end.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control = socket.socket(fileno=protocol.CONTROL_FD)
    # Objects that exist now are shared copy-on-write with every fork; keep
    # the collector from touching (and so copying) them.
    gc.freeze()
    control.send(protocol.control_packet(msgpack, {"type": "ready", "pid": os.getpid()}))
    while True:
        try:
            packet, fds, _, _ = socket.recv_fds(control, 1 << 12, 4)
        except InterruptedError:
            continue
        if not packet:
            os._exit(0)  # the runner closed the control socket
        try:
            message = protocol.check_shape(msgpack.unpackb(packet, raw=False), protocol.CONTROL_MESSAGES)
        except Exception:
            message = {}
        if message.get("type") != "spawn" or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        spawn_id = message["id"]
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            control.send(protocol.control_packet(
                msgpack, {"type": "spawn_failed", "id": spawn_id, "message": "fork: %s" % exc}))
            continue
        if pid == 0:
            # The child's descriptors are rearranged below; this object
            # must never close what fd 3 becomes.
            control.detach()
            where = {"control_fd": protocol.CONTROL_FD}
            try:
                _supervise(libc, msgpack, spawn_id, fds, config, bpf, where)
            except BaseException as exc:
                try:
                    report = socket.socket(fileno=where["control_fd"])
                    report.send(protocol.control_packet(
                        msgpack, {"type": "spawn_failed", "id": spawn_id, "message": "isolation: %r" % (exc,)}))
                except BaseException:
                    pass
            os._exit(EXIT_ISOLATION_FAILED)
        for fd in fds:
            os.close(fd)


def main(config_json):
    """Entry point: config_json is the runner's zygote configuration."""
    config = json.loads(config_json)
    if set(config) != set(protocol.ZYGOTE_CONFIG_KEYS):
        raise SystemExit("zygote config has keys %s, want %s" % (sorted(config), sorted(protocol.ZYGOTE_CONFIG_KEYS)))
    for name in config["preload"]:
        __import__(name)
    zygote(config)
