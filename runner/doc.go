// Package runner owns everything about sandbox processes: the jail that
// wraps them, the zygote that forks them, starting one, executing one
// script in it under a deadline, judging what happened, and killing and
// reaping it afterwards. It knows nothing of HTTP or of the pool; a Sandbox
// runs exactly one script and is then destroyed.
//
// # Process tree
//
// The jail (bubblewrap or nsjail) is started as an unprivileged host uid
// (65534 by default when the server is root) in its own process group with
// PR_SET_PDEATHSIG=SIGKILL. It runs /usr/bin/python3 with python/boot.py,
// which loads the embedded package pyexec and starts the zygote:
//
//	jail ─ zygote ─┬─ sandbox (PID 1 of its own namespaces)
//	               └─ sandbox …
//
// The zygote imports the preload modules and builds the seccomp filter
// once. For each spawn request it clones a sandbox straight into new
// namespaces; the sandbox isolates itself (python/pyexec/isolation.py)
// before it says ready. In fork mode Config.Zygotes zygotes serve in turn,
// each rotated (supervisor.go); in exec mode a zygote is started for each
// sandbox and closed with it.
//
// The runner kills a sandbox through a pidfd the zygote sent: PID 1 dying
// ends the sandbox's namespace and everything in it. The zygote reaps the
// sandbox and reports how it ended. Sandboxes die with the zygote
// (parent-death signal), the zygote with the jail.
//
// # Protocol
//
// protocol.go defines every message, on the zygote's control socket and on
// each sandbox's channel, and who sends it when. python/pyexec/protocol.py
// mirrors it; TestProtocolMatchesPython keeps the two in step.
//
// # Files
//
// The files form layers, bottom to top; a file uses only its own layer
// and those below it. Files of one layer may use each other.
//
//  1. Types and config, what every other file shares: errors.go (Kind,
//     ScriptError, the sentinels, clip), types.go (Request, Output,
//     Limits, Usage), files.go (request and output files and their name
//     rules), policy.go, mounts.go, jail.go and nsjail.go (the jails),
//     config.go, hostmem.go (the host memory a sandbox may hold).
//  2. Protocol and channel: protocol.go (every message and frame),
//     channel.go (a sandbox's pipes), output.go (its capped stdout and
//     stderr readers).
//  3. Processes and the sandbox: proc.go (the jail's and a sandbox's
//     process, /proc usage), memwatch.go (the memory watch), sandbox.go
//     (Sandbox: ready, kill, exit, Close), execute.go (Execute, in steps),
//     batch.go (a batch's frames and judging), outcome.go (classify).
//  4. Zygote and supervisor: zygote.go (one zygote, and the Runner's
//     methods that start it and ask it for a sandbox), supervisor.go
//     (keeps a zygote serving, rotates it).
//  5. runner.go: Runner, the package's entry point.
//
// Where a lower file must use a higher one, a comment beginning "Up a
// layer" says why, next to the use: a Sandbox holds its zygote (it
// reports the sandbox's exit and releases it; sandbox.go, execute.go), and
// zygote.go and supervisor.go start zygotes through the Runner.
//
// # Judging an execution
//
// Execute (execute.go) collects what happened into an outcome: the reply,
// if one came, the output, the deadline, the zygote's exit report. Its
// steps: send the frame and read the reply (exchange), wait for the first
// of reply, deadline, output overflow and memory over (awaitFirst), then
// the fast path for a sandbox that replied with its output complete and
// no other process left (finishFast: /proc usage, kill), or the slow path
// (finishSlow: kill, a batch's finished inputs, the exit report, drain).
// classify (outcome.go), a pure function, turns it into a result or an
// error: a *ScriptError for the script's own failures (including
// protocol_error for anything malformed on its channel), any other error
// for a failure of the service.
package runner
