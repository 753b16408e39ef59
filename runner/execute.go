package runner

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// eofWait bounds the wait, after a reply, for stdout and stderr to reach
// EOF; the sandbox closes them before it replies, so only a script that
// kept a copy makes the runner fall back to kill-and-drain.
const eofWait = 200 * time.Millisecond

// maxReplyFrame bounds a single script's reply: the result cap and the
// output files (a batch's frames: maxBatchFrame).
func maxReplyFrame(limits Limits) int {
	return limits.ResultBytes + limits.FilesBytes + limits.MaxFiles*(maxFileNameBytes+16) + maxReplyEnvelope
}

// groupCPU is the CPU time of every process of the sandbox's cgroup, those
// reaped unseen included; 0 without a cgroup or when it cannot be read.
func (s *Sandbox) groupCPU() time.Duration {
	if s.cgroup == nil {
		return 0
	}
	cpu, err := s.cgroup.CPUUsage()
	if err != nil {
		return 0
	}
	return cpu
}

// watchMemory starts the memory watch of s for an execution under limits,
// or returns nil when a cgroup bounds the sandbox instead (or its baseline
// is unknown: rlimits alone bound it then). It lives here, not in
// memwatch.go, so that the watch knows nothing of Sandbox.
func (s *Sandbox) watchMemory(limits Limits) *memWatcher {
	if s.cgroup != nil || !s.memBase.known || limits.MemoryBytes <= 0 {
		return nil
	}
	return startMemWatch(s.PID(), limits.MemoryBytes, s.memBase)
}

// exitGrace is how long a sandbox whose channel ended without a reply may
// take to die by itself, so its exit status tells why it died.
const exitGrace = 500 * time.Millisecond

// Execute runs req in the sandbox, then kills the sandbox: a sandbox runs
// one script only. The caller must still Close it, which reaps it; that
// can happen off the request path. The returned Output holds whatever the
// script printed, also when err is not nil. A *ScriptError means the script
// failed; any other error is a failure of the service. ctx cancellation
// kills the sandbox too.
func (s *Sandbox) Execute(ctx context.Context, req Request) (Output, error) {
	if !s.used.TryLock() {
		return Output{}, ErrSandboxUsed
	}
	defer s.kill()
	if !s.Alive() {
		return Output{}, ErrSandboxDead
	}
	limits := s.limits.limitsFor(req)
	if s.cgroup != nil {
		// The limit is what the script may use on top of what the sandbox
		// holds now, as the rlimit and the watcher count it without a
		// cgroup: memory.max is the group's current charge plus the limit.
		held, err := s.cgroup.MemoryCurrent()
		if err == nil {
			err = s.cgroup.SetMemoryMax(held + limits.MemoryBytes)
		}
		if err != nil {
			return Output{}, fmt.Errorf("cannot set the sandbox's memory limit: %w", err)
		}
	}
	o := s.run(ctx, req, limits)
	return classify(o, limits)
}

// run sends the script and collects everything that happened, without
// judging it: that is classify's job. It is the steps below in order:
// send the frame and read the reply (exchange), wait for the first thing
// that ends the execution (awaitFirst), then either finish quickly when the
// sandbox answered cleanly (fastPathReady, finishFast) or kill it and
// collect what is left (finishSlow).
func (s *Sandbox) run(ctx context.Context, req Request, limits Limits) outcome {
	start := time.Now()
	execCtx := ctx
	if limits.Timeout > 0 {
		var cancel context.CancelFunc
		execCtx, cancel = context.WithTimeout(ctx, limits.Timeout)
		defer cancel()
	}
	s.stdout.setCap(limits.OutputBytes)
	s.stderr.setCap(limits.OutputBytes)
	frame := newExecuteFrame(req, limits, s.deny)
	stop := s.endChannelAt(execCtx)
	defer stop()
	done := s.exchange(&frame, req, limits)

	watch := s.watchMemory(limits)
	defer watch.stop()
	o := outcome{batchSize: len(req.Inputs), msgpackResult: req.ResultFormat == ResultMsgpack}
	answered := awaitFirst(execCtx, done, watch, s.stdout.overflow, s.stderr.overflow, &o)
	replied := o.replied()
	if !o.memoryExceeded {
		// Once more after the reply: a script that passed its limit
		// between two readings and ended is over it all the same.
		o.memoryExceeded, o.memoryUsed = watch.finish()
	}
	if replied && !o.memoryExceeded && o.overflow == "" && s.fastPathReady() {
		s.finishFast(&o)
	} else {
		// A batch's finished inputs are the reader's until it ends: the
		// slow path takes them from it after the kill.
		var pending <-chan answer
		if req.Inputs != nil && !answered {
			pending = done
		}
		s.finishSlow(ctx, execCtx, replied, pending, &o)
	}
	o.exec = time.Since(start)
	return o
}

// newExecuteFrame is the execute message for req under limits: the one
// place that maps a Request and the effective limits onto the wire.
func newExecuteFrame(req Request, limits Limits, deny []string) executeFrame {
	frame := executeFrame{
		Type:   msgExecute,
		Script: req.Script,
		Limits: wireLimits{
			CPUSeconds:    int64((limits.CPUTime + time.Second - 1) / time.Second),
			MemoryBytes:   limits.MemoryBytes,
			Processes:     limits.Processes,
			OpenFiles:     limits.OpenFiles,
			FileSizeBytes: limits.FileSizeBytes,
		},
		Stdin:        req.Stdin,
		ResultFormat: resultJSON,
		Entrypoint:   string(req.Entrypoint),
		DenyImports:  deny,
		Files:        toWire(req.Files),
		OutputFiles:  wireOutputFiles{MaxFiles: limits.MaxFiles, MaxBytes: limits.FilesBytes},
	}
	if req.ResultFormat == ResultMsgpack {
		frame.ResultFormat = resultMsgpack
	}
	if deny == nil {
		frame.DenyImports = []string{}
	}
	if frame.Entrypoint == "" {
		frame.Entrypoint = string(EntrypointMain)
	}
	if req.Input != nil || req.Inputs != nil {
		frame.Input, frame.Inputs = req.Input, req.Inputs
		frame.InputFormat = inputJSON
		if req.InputFormat == InputMsgpack {
			frame.InputFormat = inputMsgpack
		}
	}
	return frame
}

// endChannelAt makes the channel's reads and writes end at ctx's end (the
// deadline or cancellation), so that exchange's goroutine never outlives
// the execution by blocking on a silent sandbox. The returned func stops
// that.
func (s *Sandbox) endChannelAt(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		s.fromSandbox.SetReadDeadline(time.Now())
		s.toSandbox.SetWriteDeadline(time.Now())
	})
}

// answer is what exchange's goroutine got: the sandbox's reply, or why
// none came (the read's or the write's error).
type answer struct {
	reply
	batch *batchReply // for a batch: whatever part of it came
	err   error
}

// exchange sends frame and reads the reply in a goroutine of its own, so
// that run can wait for the reply, the deadline, an output overflow and
// the memory watch at once. Its one answer arrives on the returned
// channel (buffered: the goroutine never blocks on it). A batch's frames
// are read as they stream in; a single script's reply is one frame.
func (s *Sandbox) exchange(frame *executeFrame, req Request, limits Limits) <-chan answer {
	done := make(chan answer, 1)
	go func() {
		// Owned by run: the deadline or the kill (deferred by Execute)
		// ends both the write and the read.
		if err := writeFrame(s.toSandbox, frame); err != nil {
			done <- answer{err: err}
			return
		}
		if req.Inputs != nil {
			// The reader alone writes b until it sends it.
			b := &batchReply{}
			err := readBatch(s.fromSandbox, limits, len(req.Inputs), b)
			done <- answer{batch: b, err: err}
			return
		}
		r, err := readReply(s.fromSandbox, maxReplyFrame(limits), replyShape{MaxFiles: limits.MaxFiles})
		done <- answer{reply: r, err: err}
	}()
	return done
}

// awaitFirst waits for the first of what ends an execution: the answer,
// the memory watch's finding, the deadline (or the caller gone), or a
// stream passing its cap; it records which in o. answered says the answer
// was taken (exchange sends only one).
func awaitFirst(ctx context.Context, done <-chan answer, watch *memWatcher, stdoutOver, stderrOver <-chan struct{}, o *outcome) (answered bool) {
	select {
	case got := <-done:
		answered = true
		o.result, o.failed, o.batch, o.channelErr = got.result, got.failed, got.batch, got.err
	case o.memoryUsed = <-watch.exceededC():
		o.memoryExceeded = true
	case <-ctx.Done():
	case <-stdoutOver:
		o.overflow = "stdout"
	case <-stderrOver:
		o.overflow = "stderr"
	}
	return answered
}

// fastPathReady says whether a sandbox that replied may take the fast
// path: its output is complete without waiting for it to die (both pipes
// at EOF), and its first process is the only one left, so its /proc
// figures (its own and its reaped children's) are all the sandbox used.
// With another process alive, what that one used would be lost in the
// kill: the slow path waits for the zygote's wait4 instead, which counts
// every process of the namespace. It waits up to eofWait per stream.
func (s *Sandbox) fastPathReady() bool {
	return s.stdout.waitEOF(eofWait) && s.stderr.waitEOF(eofWait) && !hasChildren(s.PID())
}

// finishFast ends a sandbox that replied cleanly (fastPathReady): read its
// usage from /proc while it still runs, kill it, and take its output as
// it is, without the drain the slow path needs. It is the common path of
// every request, so it waits for nothing it can avoid.
func (s *Sandbox) finishFast(o *outcome) {
	o.usage, o.usageKnown = procUsage(s.PID())
	// A sandbox that already exited (a script can end it right after
	// writing a reply of its own) may have been reaped, and its pid
	// reused: only figures read while it still ran are its own.
	o.usageKnown = o.usageKnown && s.proc.alive()
	s.kill()
	if !o.usageKnown {
		// It had ended already: its exit report has the figures.
		o.exit, o.exitKnown = s.awaitExit(exitGrace)
	}
	o.groupCPU = s.groupCPU()
	o.stdout, o.stderr = s.stdout.snapshot(), s.stderr.snapshot()
	// Output over the cap that fit in the pipe arrives before the
	// reply: it is still output_limit.
	if s.stdout.overflowed() {
		o.overflowed, o.overflow = true, "stdout"
	} else if s.stderr.overflowed() {
		o.overflowed, o.overflow = true, "stderr"
	}
}

// finishSlow ends a sandbox in every other case (no reply, a limit
// passed, output not at EOF, other processes alive): it lets a sandbox
// that is dying by itself finish so its exit status says why, reads the
// usage of every process before the kill takes them, kills, takes a
// batch's finished inputs from the reader (pending, nil when there is
// nothing to take), waits for the exit report, and drains the output.
// replied says the sandbox answered; ctx is the caller's context and
// execCtx the execution's, with its deadline.
func (s *Sandbox) finishSlow(ctx, execCtx context.Context, replied bool, pending <-chan answer, o *outcome) {
	if !replied && !o.memoryExceeded && o.overflow == "" && execCtx.Err() == nil && o.channelEndedBySandbox() {
		// The channel ended on its own: the sandbox is most likely dying.
		// Give it a moment to end by itself before killing it, or its
		// exit status would only say SIGKILL.
		o.exit, o.exitKnown = s.awaitExit(exitGrace)
	}
	if !o.exitKnown {
		// Other processes may be alive: what they used is lost in the kill
		// (treeUsage says why), so it is read first.
		o.usage, o.usageKnown = treeUsage(s.PID())
		o.usageKnown = o.usageKnown && s.proc.alive()
	}
	s.kill()
	if pending != nil {
		// After the kill (or the deadline) the reader's read ends, and
		// what it holds is kept.
		if b, ok := collectBatch(pending, drainTimeout); ok {
			o.batch = b
		}
	}
	if !o.exitKnown {
		// Also after a reply: what the first process used up to its end
		// (and its children it reaped) comes with its exit.
		o.exit, o.exitKnown = s.awaitExit(drainTimeout)
	}
	o.groupCPU = s.groupCPU()
	if s.cgroup != nil && !replied {
		kills, err := s.cgroup.OOMKills()
		o.oomKilled = err == nil && kills > 0
	}
	o.deadlineHit = execCtx.Err() != nil && ctx.Err() == nil
	o.abandoned = ctx.Err()
	o.zygoteDied = s.zygote.died() // Up a layer (doc.go, "Files"): its death is the sandbox's
	o.stdout = s.stdout.drain(drainTimeout)
	o.stderr = s.stderr.drain(drainTimeout)
	o.overflowed = o.overflow != "" || s.stdout.overflowed() || s.stderr.overflowed()
	if o.overflow == "" && s.stderr.overflowed() {
		o.overflow = "stderr"
	}
	if o.overflow == "" && s.stdout.overflowed() {
		o.overflow = "stdout"
	}
}

// collectBatch takes a batch's reply from its reader once the reader's
// read has ended (the kill or the deadline ends it), so that the inputs
// that finished before the sandbox died are kept; ok is false when the
// reader did not answer within timeout.
func collectBatch(pending <-chan answer, timeout time.Duration) (b *batchReply, ok bool) {
	select {
	case got := <-pending:
		return got.batch, true
	case <-time.After(timeout):
		return nil, false
	}
}

// replied says the sandbox answered the execution: a result, an error
// frame, or a batch answered to its end.
func (o *outcome) replied() bool {
	return o.result != nil || o.failed != nil || (o.batch != nil && o.batch.complete())
}

// channelEndedBySandbox says the channel ended without a reply for a reason
// of the sandbox's own (EOF, most likely because it is dying), not because
// the runner refused a frame or stopped a batch.
func (o *outcome) channelEndedBySandbox() bool {
	return o.channelErr != nil && !errors.Is(o.channelErr, errFrameTooLarge) &&
		!errors.Is(o.channelErr, errMalformed) && !errors.Is(o.channelErr, errBatchStopped)
}
