package runner

import (
	"errors"
	"fmt"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
	"github.com/sandbox-exec/pyexec/internal/strictjson"
)

// outcome is everything the runner saw of one execution, before judging it.
type outcome struct {
	// result or failed is the sandbox's reply, when one came; channelErr is
	// why none did (EOF, deadline, errFrameTooLarge, errMalformed).
	result    *resultFrame
	failed    *errorFrame
	batch     *batchReply // for a batch: what came of it, complete or not
	batchSize int         // inputs sent, for a batch
	// msgpackResult says the results are msgpack (ResultMsgpack), not JSON.
	msgpackResult bool
	channelErr    error
	// overflow names the stream that passed its cap first ("" if none).
	overflow   string
	overflowed bool
	// exit is the zygote's report of how the sandbox ended.
	exit      exitReport
	exitKnown bool
	// usage is what the sandbox used, read from /proc before the kill on
	// the fast path (the exit report has it otherwise).
	usage      Usage
	usageKnown bool
	// groupCPU is the CPU time of every process the sandbox's cgroup
	// ever held (cgroup v2 accounting only; 0 otherwise).
	groupCPU time.Duration
	// deadlineHit says the wall-clock limit passed; abandoned is the
	// caller's context error, when the caller went away.
	deadlineHit bool
	abandoned   error
	zygoteDied  bool
	// memoryExceeded says the runner's memory watch found the sandbox over
	// its limit (no cgroup) and killed it; memoryUsed is what it held then
	// on top of what it held at ready.
	memoryExceeded bool
	memoryUsed     int64
	// oomKilled says the kernel's OOM killer ended the sandbox's cgroup
	// (cgroup v2 accounting only).
	oomKilled bool

	stdout, stderr []byte
	exec           time.Duration
}

// sandboxKinds are the failures a sandbox may report in an error frame: the
// script's own doing. Timeouts, crashes, output limits and protocol errors
// are the runner's findings, never the sandbox's word.
var sandboxKinds = map[Kind]bool{
	KindSyntaxError: true, KindMissingMain: true, KindForbiddenImport: true, KindForbiddenCall: true, KindScriptError: true,
	KindResultNotSerializable: true, KindMemoryLimit: true, KindOutputFilesLimit: true, KindOutputFilesInvalid: true,
}

// classify judges an outcome: the one place that decides what an
// execution's result or error is. It is a pure function of what was seen.
func classify(o outcome, limits Limits) (Output, error) {
	out := Output{
		Stdout: truncate(o.stdout, limits.OutputBytes),
		Stderr: truncate(o.stderr, limits.OutputBytes),
		Exec:   o.exec,
	}
	// The exit report counts the first process to its end; the reading
	// before the kill also counts the processes the kill took with it.
	// Each can be the larger: take the larger of each figure.
	if o.usageKnown {
		out.Usage = o.usage
	}
	if o.exitKnown {
		out.Usage.CPU = max(out.Usage.CPU, o.exit.cpu())
		out.Usage.MaxRSSKB = max(out.Usage.MaxRSSKB, o.exit.MaxRSSKB)
	}
	out.Usage.CPU = max(out.Usage.CPU, o.groupCPU)
	if o.batch != nil {
		if o.batch.started {
			// Why the sandbox ended, judged as for a single script, is the
			// error of the input that was running when it did.
			var ended error
			if !o.batch.complete() || o.overflowed || o.memoryExceeded {
				rest := o
				rest.batch = nil
				_, ended = classify(rest, limits)
			}
			return judgeBatch(out, o.batch, o.batchSize, o.msgpackResult, ended, limits)
		}
		o.failed = o.batch.failed
	}
	switch {
	case o.overflowed:
		stream := o.overflow
		if stream == "" {
			stream = "stdout"
		}
		return out, &ScriptError{Kind: KindOutputLimit,
			Message: fmt.Sprintf("the script wrote more than %d bytes to %s; the sandbox was killed", limits.OutputBytes, stream)}
	case o.memoryExceeded:
		return out, &ScriptError{Kind: KindMemoryLimit,
			Message: fmt.Sprintf("the sandbox's processes and scratch files together held %d MiB more than when it started, over its memory limit of %d MiB; the sandbox was killed",
				o.memoryUsed>>20, limits.MemoryBytes>>20)}
	case o.result != nil:
		return judgeResult(out, o.result, o.msgpackResult, limits)
	case o.failed != nil:
		return out, judgeFailure(o.failed)
	case o.abandoned != nil:
		return out, fmt.Errorf("execution abandoned: %w", o.abandoned)
	case o.oomKilled:
		return out, &ScriptError{Kind: KindMemoryLimit,
			Message: fmt.Sprintf("the sandbox's processes together used more than %d MiB (its cgroup's memory.max) and were killed", limits.MemoryBytes>>20)}
	case o.deadlineHit:
		return out, &ScriptError{Kind: KindTimeout,
			Message: fmt.Sprintf("the script ran longer than %v; the sandbox was killed", limits.Timeout)}
	case errors.Is(o.channelErr, errFrameTooLarge):
		return out, &ScriptError{Kind: KindOutputLimit,
			Message: fmt.Sprintf("the reply is over its cap: a result of at most %d bytes and output files of at most %d", limits.ResultBytes, limits.FilesBytes)}
	case errors.Is(o.channelErr, errMalformed):
		return out, protocolError("the sandbox sent a malformed reply: %v", o.channelErr)
	case o.zygoteDied:
		return out, fmt.Errorf("the zygote died during the execution: %w", ErrZygoteDied)
	case o.exitKnown:
		return out, classifyExit(o.exit.exitStatus(), o.exit.cpu(), limits.CPUTime)
	default:
		return out, fmt.Errorf("sandbox channel failed and its exit status is unknown: %w", o.channelErr)
	}
}

// strictResult are the rules of a msgpack result: one value, UTF-8 str,
// no ext, str or integer keys, no key twice in a map, nested no deeper
// than a JSON result may be.
var strictResult = msgpackcheck.Options{
	MaxDepth: strictjson.DefaultMaxDepth, UTF8: true, NoExt: true, StrOrIntKeys: true, UniqueKeys: true,
}

// judgeResult checks a result frame: strict JSON within the cap, no key
// twice in an object, passed on in compact form without HTML escaping
// (or, with asMsgpack, strict msgpack, passed on as it is). results.py
// never writes a key twice; a script writing its own frame could, and
// parsers disagree on which value such an object holds (the last, the
// first, an error).
func judgeResult(out Output, res *resultFrame, asMsgpack bool, limits Limits) (Output, error) {
	if limits.ResultBytes > 0 && len(res.Result) > limits.ResultBytes {
		return out, &ScriptError{Kind: KindOutputLimit,
			Message: fmt.Sprintf("the result is %d bytes, over the cap of %d bytes", len(res.Result), limits.ResultBytes)}
	}
	if asMsgpack {
		if err := msgpackcheck.CheckWith(res.Result, strictResult); err != nil {
			return out, protocolError("the sandbox's result is not strict msgpack: %v", err)
		}
		out.Result = res.Result
	} else {
		compact, err := strictjson.Compact(make([]byte, 0, len(res.Result)), res.Result, strictjson.Options{RejectDuplicateKeys: true})
		if err != nil {
			return out, protocolError("the sandbox's result is not strict JSON: %v", err)
		}
		out.Result = compact
	}
	var err error
	if out.Files, err = judgeFiles(res.Files, limits); err != nil {
		return out, err
	}
	return out, nil
}

// judgeFailure checks an error frame: a kind the sandbox may report, and
// texts that are UTF-8 and within their bounds.
func judgeFailure(e *errorFrame) error {
	kind := Kind(e.Kind)
	switch {
	case !sandboxKinds[kind]:
		return protocolError("the sandbox reported an error of kind %q, which it may not report", clip(e.Kind, 40))
	case !utf8.ValidString(e.Message) || !utf8.ValidString(e.Traceback):
		return protocolError("the sandbox's error message is not UTF-8")
	case len(e.Message) > maxErrorMessage || len(e.Traceback) > maxErrorTraceback:
		return protocolError("the sandbox's error message is %d bytes and its traceback %d, over the bounds of %d and %d",
			len(e.Message), len(e.Traceback), maxErrorMessage, maxErrorTraceback)
	case e.Line < 0 || e.Offset < 0:
		return protocolError("the sandbox's error has a negative line or offset")
	}
	return &ScriptError{Kind: kind, Message: e.Message, Traceback: e.Traceback, Line: e.Line, Offset: e.Offset}
}

// classifyExit explains a sandbox that ended without a reply, from the
// kernel's wait status and CPU time. The CPU limit ends a script with
// SIGXCPU, or with SIGKILL at the hard limit (the sandbox is PID 1 of its
// namespace, which the kernel spares SIGXCPU): a kill after using the
// whole CPU allowance is the limit, not a crash.
func classifyExit(status syscall.WaitStatus, cpu, cpuLimit time.Duration) error {
	cpuLimitHit := cpuLimit > 0 && cpu >= cpuLimit
	switch {
	case status.Signaled() && (status.Signal() == syscall.SIGXCPU || (status.Signal() == syscall.SIGKILL && cpuLimitHit)):
		return &ScriptError{Kind: KindTimeout, Message: fmt.Sprintf("the script used up its CPU time limit of %v", cpuLimit)}
	case status.Signaled():
		sig := status.Signal()
		return &ScriptError{Kind: KindCrashed, Message: fmt.Sprintf("the sandbox died by signal %d (%v)", int(sig), sig)}
	default:
		return &ScriptError{Kind: KindScriptError,
			Message: fmt.Sprintf("the script ended the interpreter with exit status %d before main returned", status.ExitStatus())}
	}
}

// truncate cuts b to limit bytes when limit is positive.
func truncate(b []byte, limit int) []byte {
	if limit > 0 && len(b) > limit {
		return b[:limit]
	}
	return b
}
