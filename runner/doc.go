// Package runner owns everything about sandbox processes: the jail that
// wraps them, starting one, executing one script in it under a deadline,
// and killing and reaping it afterwards. It knows nothing of HTTP or of the
// pool; a Sandbox runs exactly one script and is then destroyed.
//
// # Process tree
//
// Both modes start the jail (bubblewrap) as an unprivileged host uid (65534
// by default when the server is root) in its own process group with
// PR_SET_PDEATHSIG=SIGKILL. bwrap creates new user, mount, PID, IPC, UTS,
// network and cgroup namespaces, becomes PID 1 of the new PID namespace and
// starts /usr/bin/python3 running python/sandbox.py.
//
// Exec mode (ModeExec): that interpreter is the sandbox. Killing the outer
// bwrap kills its PID-1 child (--die-with-parent), and the death of PID 1
// makes the kernel kill every process left in that PID namespace, however
// the script forked, daemonised or called setsid.
//
// Fork mode (ModeFork, the default): that interpreter is the zygote. It
// imports the preload modules once and then forks one sandbox per spawn
// message on its control socket (fd 3, SOCK_SEQPACKET; the message carries
// the sandbox's channel, stdout and stderr as SCM_RIGHTS descriptors). The
// forked child (the supervisor) keeps only those, unshares new user, mount,
// PID, network, IPC and UTS namespaces, mounts private /tmp and /dev/shm
// and forks the sandbox proper, PID 1 of the new PID namespace:
//
//	bwrap ─ bwrap (pid 1) ─ zygote ─┬─ supervisor ─ sandbox (pid 1, own namespaces)
//	                                └─ supervisor ─ sandbox …
//
// The sandbox mounts its own /proc, reseeds random and numpy, drops every
// capability, sets no_new_privs and becomes non-dumpable before it says
// ready. The runner learns its host pid from SCM_CREDENTIALS (its end of
// the channel has SO_PASSCRED), opens a pidfd on it, and kills it through
// that pidfd: PID 1 dying ends the sandbox's namespace and everything in
// it. The supervisor waits for the sandbox and sends {"type": "exit",
// "status": <wait status>} on the channel, so the runner can tell a crash
// from an exit. Both die with the zygote (parent-death signals), and the
// zygote with the jail.
//
// # Channels
//
// Each sandbox has three channels of its own, created by Start:
//
//   - fd 3: one end of a SOCK_STREAM socketpair, the control channel;
//   - fd 1: a pipe for stdout, read by the runner and capped;
//   - fd 2: a pipe for stderr, read by the runner and capped.
//
// stdin is /dev/null. The interpreter runs with -u (unbuffered stdout and
// stderr), so print() and os.write(1, ...) reach the pipe in the order the
// script made them. Because stdout and stderr are pipes read by the runner
// (not Python objects), output written with os.write(1, ...) or by C code is
// captured too.
//
// # Frames
//
// Every message on fd 3 is a frame: a 4-byte big-endian unsigned length,
// then that many bytes holding one msgpack map with a "type" key. The runner
// refuses frames larger than the result cap plus a small envelope
// (maxReplyFrame), so a sandbox cannot make the server allocate without bound.
//
// # Conversation
//
//  1. sandbox → runner: {"type": "ready", "pid": int} once numpy, pandas and
//     the preload modules are imported and its seccomp filter is loaded
//     (it refuses ptrace, BPF, perf, keyrings, modules, kexec, mounts and
//     new namespaces: python/sandbox.py, DENIED_SYSCALLS). The runner waits for it at most
//     Config.StartTimeout; a sandbox that does not say ready is killed.
//  2. runner → sandbox: exactly one
//     {"type": "execute", "script": str, "has_input": bool, "input": str
//     (JSON text), "limits": {"cpu_seconds", "memory_bytes", "processes",
//     "open_files", "file_size_bytes"}, "deny_imports": [str],
//     "max_result_bytes": int}.
//     The sandbox lowers its rlimits (soft and hard) to these values before
//     it compiles the script.
//  3. sandbox → runner: exactly one of
//     {"type": "result", "result": bin (UTF-8 JSON text)} or
//     {"type": "error", "kind": str, "message": str, "traceback": str,
//     "line": int, "offset": int}, where kind is one of syntax_error,
//     missing_main, forbidden_import, script_error, memory_limit,
//     result_not_serializable, output_limit. The sandbox flushes its stdout
//     and stderr before it sends this frame, so the pipes hold all the output
//     produced before the reply.
//
// In fork mode the supervisor may add {"type": "exit", "status": int} after
// the sandbox died; the runner reads past it to the end of the channel.
//
// After the reply, or at the deadline, or when the output caps are passed, or
// when the channel reaches EOF (the sandbox died), the runner kills the
// sandbox, reaps it, drains the output pipes to EOF and reports. EOF without
// a reply is classified by the exit status: a signal is sandbox_crashed
// (SIGXCPU, the CPU limit, is a timeout), an exit code is a script_error.
package runner
