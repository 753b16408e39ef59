package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long the runner waits, after killing a sandbox,
// for its output pipes to reach EOF and for its process to be gone. The
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

// sandboxProc is how one sandbox's processes are killed and awaited. Exec
// and fork mode differ: the runner is the parent of an exec-mode jail and
// can wait for it; a fork-mode sandbox is a grandchild of the zygote,
// reached through a pidfd.
type sandboxProc interface {
	// kill sends SIGKILL to the sandbox's root process; the death of that
	// process ends its whole PID namespace.
	kill()
	// alive reports whether the root process still runs.
	alive() bool
	// wait waits at most timeout until the root process is gone. known
	// says whether the exit tells how it ended.
	wait(timeout time.Duration) (exit exitInfo, known bool, err error)
	// release frees what the handle holds; call it once, after wait.
	release()
}

// Sandbox is one started, jailed interpreter waiting for its one script.
type Sandbox struct {
	proc   sandboxProc
	conn   *net.UnixConn
	stdout *cappedPipe
	stderr *cappedPipe
	// pid is the host pid of the interpreter that runs the script.
	pid int
	// deny is the import deny list sent with the script.
	deny []string
	// zygoteGone is closed when the zygote that forked this sandbox died
	// (fork mode; nil in exec mode).
	zygoteGone <-chan struct{}

	used      sync.Mutex // held by the one Execute; TryLock refuses reuse
	closeOnce sync.Once
	closeErr  error
}

// channelPair makes a sandbox's control channel: a stream socketpair whose
// runner end has SO_PASSCRED, so the kernel tells the runner the host pid
// of whoever says ready, whatever PID namespace it is in.
func channelPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot create control socketpair: %w", err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("cannot enable SO_PASSCRED: %w", err)
	}
	conn, err := fileConn(os.NewFile(uintptr(fds[0]), "sandbox-control"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return conn, os.NewFile(uintptr(fds[1]), "sandbox-control-child"), nil
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

// sandboxPipes are the three descriptors a new sandbox gets, and the
// runner's ends of them.
type sandboxPipes struct {
	conn                      *net.UnixConn
	channel, stdoutW, stderrW *os.File // the sandbox's ends
	stdoutR, stderrR          *os.File // the runner's ends
}

func newSandboxPipes() (*sandboxPipes, error) {
	conn, channel, err := channelPair()
	if err != nil {
		return nil, err
	}
	p := &sandboxPipes{conn: conn, channel: channel}
	if p.stdoutR, p.stdoutW, err = os.Pipe(); err != nil {
		p.closeAll()
		return nil, fmt.Errorf("cannot create stdout pipe: %w", err)
	}
	if p.stderrR, p.stderrW, err = os.Pipe(); err != nil {
		p.closeAll()
		return nil, fmt.Errorf("cannot create stderr pipe: %w", err)
	}
	return p, nil
}

// closeChildEnds closes the runner's copies of the sandbox's descriptors,
// once they have been handed over, so EOF means the sandbox is gone.
func (p *sandboxPipes) closeChildEnds() {
	for _, f := range []*os.File{p.channel, p.stdoutW, p.stderrW} {
		if f != nil {
			f.Close()
		}
	}
}

func (p *sandboxPipes) closeAll() {
	p.closeChildEnds()
	p.conn.Close()
	for _, f := range []*os.File{p.stdoutR, p.stderrR} {
		if f != nil {
			f.Close()
		}
	}
}

// newSandbox wraps the runner's ends; it starts the output readers.
func newSandbox(p *sandboxPipes, deny []string) *Sandbox {
	return &Sandbox{
		conn:   p.conn,
		stdout: newCappedPipe(p.stdoutR),
		stderr: newCappedPipe(p.stderrR),
		deny:   deny,
	}
}

// awaitReady reads the sandbox's ready frame before deadline (or ctx's
// end) and returns the host pid of its sender, which the kernel attaches
// because the runner's end has SO_PASSCRED.
func (s *Sandbox) awaitReady(ctx context.Context, deadline time.Time) (int, error) {
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// A cancelled ctx must interrupt the read, not only a deadline.
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("cannot set ready deadline: %w", err)
	}
	defer s.conn.SetReadDeadline(time.Time{})

	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, fmt.Errorf("sandbox did not say ready: %w", err)
	}
	pid := 0
	if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for i := range cmsgs {
			if cred, err := unix.ParseUnixCredentials(&cmsgs[i]); err == nil {
				pid = int(cred.Pid)
			}
		}
	}
	var ready readyMessage
	if err := readFrame(io.MultiReader(bytes.NewReader(buf[:n]), s.conn), maxReplyEnvelope, &ready); err != nil {
		return 0, fmt.Errorf("sandbox did not say ready: %w", err)
	}
	if ready.Type != msgReady {
		return 0, fmt.Errorf("sandbox sent %q instead of ready", ready.Type)
	}
	if pid <= 0 {
		return 0, errors.New("sandbox said ready without credentials")
	}
	return pid, nil
}

// PID is the host pid of the interpreter that runs the script.
func (s *Sandbox) PID() int { return s.pid }

// Alive reports whether the sandbox is still running.
func (s *Sandbox) Alive() bool {
	if s.zygoteGone != nil {
		select {
		case <-s.zygoteGone:
			return false
		default:
		}
	}
	return s.proc.alive()
}

// exitInfo is how a sandbox ended: its wait status and the CPU time it
// used, which tells the CPU limit's kill from another.
type exitInfo struct {
	status syscall.WaitStatus
	cpu    time.Duration
}

// frameOutcome is what the channel reader saw after the execute frame.
type frameOutcome struct {
	reply replyMessage
	// exit is what a fork-mode sandbox's supervisor reported when the
	// sandbox died; exitKnown says it came.
	exit      exitInfo
	exitKnown bool
	err       error
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
	defer s.proc.kill()
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
	// At the deadline (or cancellation) the channel's reads and writes end.
	stop := context.AfterFunc(execCtx, func() { s.conn.SetDeadline(time.Now()) })
	defer stop()

	done := make(chan frameOutcome, 1)
	go func() {
		// Owned by Execute: the kill (deferred) ends the sandbox, which
		// closes its end of the channel, and the deadline ends the read.
		if err := writeFrame(s.conn, &msg); err != nil {
			done <- frameOutcome{err: err}
			return
		}
		done <- s.readOutcome(req.Limits.ResultBytes + maxReplyEnvelope)
	}()

	var got frameOutcome
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
			s.proc.kill()
			out := Output{Stdout: s.stdout.snapshot(), Stderr: s.stderr.snapshot(), Exec: time.Since(start)}
			return s.replyOutcome(out, got.reply)
		}
	}
	if got.err != nil && overflow == "" && execCtx.Err() == nil && !got.exitKnown {
		// The channel failed on its own: the sandbox is most likely dying.
		// Give it a moment to report how before killing it, or the exit
		// status would only say SIGKILL.
		s.proc.wait(exitGrace)
	}
	s.proc.kill()
	exit, known, _ := s.proc.wait(drainTimeout)
	if got.exitKnown {
		exit, known = got.exit, true
	}
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
	case s.zygoteDied():
		return out, fmt.Errorf("the zygote died during the execution: %w", ErrZygoteDied)
	case known:
		return out, classifyExit(exit, req.Limits.CPUTime)
	default:
		return out, fmt.Errorf("sandbox channel failed and its exit status is unknown: %w", got.err)
	}
}

// readOutcome reads frames until a reply, skipping (but remembering) the
// exit report a fork-mode supervisor sends when the sandbox died.
func (s *Sandbox) readOutcome(maxFrame int) frameOutcome {
	var o frameOutcome
	for {
		var m replyMessage
		if err := readFrame(s.conn, maxFrame, &m); err != nil {
			o.err = err
			return o
		}
		if m.Type == msgExit {
			o.exit = exitInfo{status: syscall.WaitStatus(m.Status), cpu: time.Duration(m.CPU * float64(time.Second))}
			o.exitKnown = true
			continue
		}
		o.reply = m
		return o
	}
}

func (s *Sandbox) zygoteDied() bool {
	if s.zygoteGone == nil {
		return false
	}
	select {
	case <-s.zygoteGone:
		return true
	default:
		return false
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
		if !reportable(kind) {
			return out, fmt.Errorf("sandbox reported unknown error kind %q: %s", reply.Kind, reply.Message)
		}
		return out, &ScriptError{Kind: kind, Message: reply.Message, Traceback: reply.Traceback,
			Line: reply.Line, Offset: reply.Offset}
	default:
		return out, fmt.Errorf("sandbox sent unexpected message type %q", reply.Type)
	}
}

// classifyExit explains a sandbox that ended without a reply. The CPU
// limit ends a script with SIGXCPU, or with SIGKILL when the sandbox is
// PID 1 of its namespace (which the kernel spares SIGXCPU): a kill after
// using the whole CPU allowance is the limit, not a crash.
func classifyExit(exit exitInfo, cpuLimit time.Duration) error {
	status := exit.status
	cpuLimitHit := cpuLimit > 0 && exit.cpu >= cpuLimit
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

// Close kills the sandbox, waits until it is gone and releases its
// descriptors. It is idempotent and safe to call after Execute.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		s.proc.kill()
		if _, _, err := s.proc.wait(drainTimeout); err != nil {
			s.closeErr = err
		}
		s.proc.release()
		s.conn.Close()
		s.stdout.drain(drainTimeout)
		s.stderr.drain(drainTimeout)
		s.stdout.close()
		s.stderr.close()
	})
	return s.closeErr
}

// stderrTail is the last bit of a pipe, for start errors.
func stderrTail(p *cappedPipe) string {
	b := p.drain(time.Second)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	if len(b) == 0 {
		return "no stderr"
	}
	return "stderr: " + string(b)
}
