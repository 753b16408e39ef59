package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long the runner waits, after killing a sandbox,
// for its output pipes to reach EOF and for its process to be reaped. The
// kill takes the whole PID namespace with it, so this is only a safety net.
const drainTimeout = 5 * time.Second

// exitGrace is how long a sandbox that closed its channel without a reply
// may take to exit by itself, so its exit status tells why it died.
const exitGrace = 500 * time.Millisecond

// markerWait bounds the wait for the end marker after a reply; a script
// that closed or redirected fd 1 or 2 makes the runner fall back to
// draining the pipes to EOF.
const markerWait = 200 * time.Millisecond

// maxReplyEnvelope is what a reply frame may carry besides the result:
// message, traceback and keys.
const maxReplyEnvelope = 256 << 10

// Sandbox is one started, jailed interpreter waiting for its one script.
type Sandbox struct {
	cmd    *exec.Cmd
	conn   *net.UnixConn
	stdout *cappedPipe
	stderr *cappedPipe

	// exited is closed once cmd.Wait has returned; waitErr is its result,
	// readable after exited is closed.
	exited  chan struct{}
	waitErr error

	// innerPID is the interpreter's pid inside its own PID namespace.
	innerPID int
	// deny is the import deny list sent with the script.
	deny []string

	used      sync.Mutex // held by the one Execute; TryLock refuses reuse
	killOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

// Start starts one sandbox and waits until it says ready. ctx bounds the
// wait (together with Config.StartTimeout); on any failure nothing is left
// running.
func (r *Runner) Start(ctx context.Context) (_ *Sandbox, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot create control socketpair: %w", err)
	}
	parentEnd := os.NewFile(uintptr(fds[0]), "sandbox-control")
	childEnd := os.NewFile(uintptr(fds[1]), "sandbox-control-child")
	defer childEnd.Close()

	conn, err := fileConn(parentEnd)
	if err != nil {
		childEnd.Close()
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot create stdout pipe: %w", err)
	}
	defer stdoutW.Close()
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		conn.Close()
		stdoutR.Close()
		return nil, fmt.Errorf("cannot create stderr pipe: %w", err)
	}
	defer stderrW.Close()

	cmd := exec.Command(r.jailPath, r.jailArgs...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3 in the child
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: r.credential,
	}
	if err := cmd.Start(); err != nil {
		conn.Close()
		stdoutR.Close()
		stderrR.Close()
		return nil, fmt.Errorf("cannot start %s: %w", r.jailPath, err)
	}

	sb := &Sandbox{
		cmd:    cmd,
		conn:   conn,
		stdout: newCappedPipe(stdoutR),
		stderr: newCappedPipe(stderrR),
		exited: make(chan struct{}),
		deny:   r.denyImports,
	}
	go func() {
		sb.waitErr = cmd.Wait()
		close(sb.exited)
	}()
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()

	deadline := time.Now().Add(r.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// A cancelled ctx must interrupt the read, not only a deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("cannot set ready deadline: %w", err)
	}
	var ready readyMessage
	if err := readFrame(conn, maxReplyEnvelope, &ready); err != nil {
		sb.kill()
		sb.awaitExit()
		return nil, fmt.Errorf("sandbox did not say ready: %w (%s)", err, sb.stderrTail())
	}
	if ready.Type != msgReady {
		return nil, fmt.Errorf("sandbox sent %q instead of ready", ready.Type)
	}
	sb.innerPID = ready.PID
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("cannot clear ready deadline: %w", err)
	}
	return sb, nil
}

// fileConn turns one end of a socketpair into a net.UnixConn, which has
// read and write deadlines.
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close() // net.FileConn dups the descriptor
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("cannot wrap control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("control socket is a %T, not a unix socket", c)
	}
	return uc, nil
}

// PID is the host pid of the jail process at the root of this sandbox.
func (s *Sandbox) PID() int { return s.cmd.Process.Pid }

// Alive reports whether the sandbox process is still running.
func (s *Sandbox) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

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
	start := time.Now()
	execCtx := ctx
	if req.Limits.Timeout > 0 {
		var cancel context.CancelFunc
		execCtx, cancel = context.WithTimeout(ctx, req.Limits.Timeout)
		defer cancel()
	}
	marker, err := newOutputMarker()
	if err != nil {
		return Output{}, err
	}
	// The end marker may pass the cap by its own length; waitMarker applies
	// the real cap once it has cut the marker off.
	if req.Limits.OutputBytes > 0 {
		s.stdout.setCap(req.Limits.OutputBytes + len(marker))
		s.stderr.setCap(req.Limits.OutputBytes + len(marker))
	}

	msg := executeMessage{
		Type:     msgExecute,
		Script:   req.Script,
		HasInput: req.Input != nil,
		Input:    string(req.Input),
		Limits: wireLimits{
			CPUSeconds:    int64((req.Limits.CPUTime + time.Second - 1) / time.Second),
			MemoryBytes:   req.Limits.MemoryBytes,
			Processes:     req.Limits.Processes,
			OpenFiles:     req.Limits.OpenFiles,
			FileSizeBytes: req.Limits.FileSizeBytes,
		},
		DenyImports:    s.deny,
		MaxResultBytes: req.Limits.ResultBytes,
		OutputMarker:   marker,
	}
	if d, ok := execCtx.Deadline(); ok {
		s.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(execCtx, func() { s.conn.SetDeadline(time.Now()) })
	defer stop()

	type outcome struct {
		reply replyMessage
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		// Owned by Execute: s.Close (deferred) closes conn, which ends it.
		if err := writeFrame(s.conn, &msg); err != nil {
			done <- outcome{err: err}
			return
		}
		var o outcome
		o.err = readFrame(s.conn, req.Limits.ResultBytes+maxReplyEnvelope, &o.reply)
		done <- o
	}()

	var got outcome
	var overflow string
	select {
	case got = <-done:
	case <-execCtx.Done():
		got.err = execCtx.Err()
	case <-s.stdout.overflow:
		overflow = "stdout"
	case <-s.stderr.overflow:
		overflow = "stderr"
	}
	if got.err == nil && overflow == "" {
		// The fast path: a reply, and both pipes show the end marker, so
		// the output is complete without waiting for the sandbox to die.
		outDone := s.stdout.waitMarker(marker, req.Limits.OutputBytes, markerWait)
		errDone := outDone && s.stderr.waitMarker(marker, req.Limits.OutputBytes, markerWait)
		if outDone && errDone && !s.stdout.overflowed() && !s.stderr.overflowed() {
			s.kill()
			out := Output{Stdout: s.stdout.snapshot(), Stderr: s.stderr.snapshot(), Exec: time.Since(start)}
			return s.replyOutcome(out, got.reply)
		}
	}
	if got.err != nil && overflow == "" && execCtx.Err() == nil {
		// The channel failed on its own: the sandbox is most likely dying.
		// Give the jail a moment to report how before killing it, or the
		// exit status would only say SIGKILL.
		select {
		case <-s.exited:
		case <-time.After(exitGrace):
		}
	}
	s.kill()
	exitErr := s.awaitExit()
	out := Output{
		Stdout: truncate(s.stdout.drain(drainTimeout), req.Limits.OutputBytes),
		Stderr: truncate(s.stderr.drain(drainTimeout), req.Limits.OutputBytes),
		Exec:   time.Since(start),
	}

	switch {
	case overflow != "" || s.stdout.overflowed() || s.stderr.overflowed():
		if overflow == "" {
			overflow = "stdout"
			if s.stderr.overflowed() {
				overflow = "stderr"
			}
		}
		return out, &ScriptError{Kind: KindOutputLimit,
			Message: fmt.Sprintf("the script wrote more than %d bytes to %s; the sandbox was killed", req.Limits.OutputBytes, overflow)}
	case got.err == nil:
		return s.replyOutcome(out, got.reply)
	case ctx.Err() != nil:
		return out, fmt.Errorf("execution abandoned: %w", ctx.Err())
	case execCtx.Err() != nil:
		return out, &ScriptError{Kind: KindTimeout,
			Message: fmt.Sprintf("the script ran longer than %v; the sandbox was killed", req.Limits.Timeout)}
	case errors.Is(got.err, errFrameTooLarge):
		return out, &ScriptError{Kind: KindOutputLimit, Message: "the sandbox sent a reply over the result cap"}
	default:
		return out, classifyExit(exitErr, got.err)
	}
}

// truncate cuts b to limit bytes when limit is positive.
func truncate(b []byte, limit int) []byte {
	if limit > 0 && len(b) > limit {
		return b[:limit]
	}
	return b
}

// newOutputMarker returns a fresh random end marker for one execution.
func newOutputMarker() ([]byte, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("cannot make output marker: %w", err)
	}
	return []byte("\x00pyexec-end-" + hex.EncodeToString(nonce[:]) + "\x00"), nil
}

// replyOutcome turns the sandbox's reply frame into the Output and error.
func (s *Sandbox) replyOutcome(out Output, reply replyMessage) (Output, error) {
	switch reply.Type {
	case msgResult:
		out.Result = reply.Result
		return out, nil
	case msgError:
		kind := Kind(reply.Kind)
		if !knownKinds[kind] {
			return out, fmt.Errorf("sandbox reported unknown error kind %q: %s", reply.Kind, reply.Message)
		}
		return out, &ScriptError{Kind: kind, Message: reply.Message, Traceback: reply.Traceback,
			Line: reply.Line, Offset: reply.Offset}
	default:
		return out, fmt.Errorf("sandbox sent unexpected message type %q", reply.Type)
	}
}

// classifyExit explains a sandbox that closed its channel without a reply.
// bwrap reports a child killed by signal N as exit status 128+N.
func classifyExit(exitErr, readErr error) error {
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) {
		return fmt.Errorf("sandbox channel failed: %w", readErr)
	}
	status, ok := ee.Sys().(syscall.WaitStatus)
	if !ok {
		return fmt.Errorf("sandbox ended (%v) without a reply: %w", exitErr, readErr)
	}
	sig := syscall.Signal(0)
	switch {
	case status.Signaled():
		sig = status.Signal()
	case status.ExitStatus() > 128:
		sig = syscall.Signal(status.ExitStatus() - 128)
	}
	switch {
	case sig == syscall.SIGXCPU:
		return &ScriptError{Kind: KindTimeout, Message: "the script used up its CPU time limit"}
	case sig != 0:
		return &ScriptError{Kind: KindCrashed, Message: fmt.Sprintf("the sandbox died by signal %d (%v)", int(sig), sig)}
	default:
		return &ScriptError{Kind: KindScriptError,
			Message: fmt.Sprintf("the script ended the interpreter with exit status %d before main returned", status.ExitStatus())}
	}
}

// kill sends SIGKILL to the jail's root process; see doc.go for why that
// takes the whole sandbox with it.
func (s *Sandbox) kill() {
	s.killOnce.Do(func() {
		// The process group first (the jail and anything it left in the
		// group), then the process itself in case the group is gone.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Process.Kill()
	})
}

// awaitExit waits (bounded) until the jail process has been reaped.
func (s *Sandbox) awaitExit() error {
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(drainTimeout):
		return fmt.Errorf("sandbox pid %d not reaped after %v", s.cmd.Process.Pid, drainTimeout)
	}
}

// Close kills the sandbox, reaps it and releases its descriptors. It is
// idempotent and safe to call concurrently with Execute's own cleanup.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		s.kill()
		if err := s.awaitExit(); err != nil && !isKilled(err) {
			s.closeErr = err
		}
		s.conn.Close()
		s.stdout.close()
		s.stderr.close()
	})
	return s.closeErr
}

// isKilled reports whether err is the exit of a process we SIGKILLed.
func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	status, ok := ee.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == syscall.SIGKILL
}

// stderrTail is the last bit of the sandbox's stderr, for start errors.
func (s *Sandbox) stderrTail() string {
	b := s.stderr.drain(time.Second)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	if len(b) == 0 {
		return "no stderr"
	}
	return "stderr: " + string(b)
}
