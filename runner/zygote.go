package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// ErrZygoteDied means the zygote that forked a sandbox died; the sandbox
// went with it. The request may succeed if sent again.
var ErrZygoteDied = errors.New("zygote died")

// zygote is one running fork-mode zygote: a jailed interpreter that
// imported the preload modules once and forks a sandbox per spawn message.
// See doc.go for the process tree.
type zygote struct {
	proc    *jailedProc
	control *net.UnixConn // SOCK_SEQPACKET; one message per spawn
	stderr  *cappedPipe
	// gone is closed by the supervisor once the zygote has died.
	gone chan struct{}

	mu sync.Mutex // serialises spawn messages on control
}

// startZygote starts a zygote and waits until it says ready.
func (r *Runner) startZygote(ctx context.Context) (*zygote, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot create zygote control socketpair: %w", err)
	}
	childEnd := os.NewFile(uintptr(fds[1]), "zygote-control-child")
	defer childEnd.Close()
	control, err := fileConn(os.NewFile(uintptr(fds[0]), "zygote-control"))
	if err != nil {
		return nil, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		control.Close()
		return nil, fmt.Errorf("cannot create zygote stderr pipe: %w", err)
	}
	cmd := r.jailCommand(r.sandboxArgv(true))
	cmd.Stderr = stderrW
	cmd.ExtraFiles = []*os.File{childEnd}
	proc, err := startJailed(cmd)
	stderrW.Close()
	if err != nil {
		control.Close()
		stderrR.Close()
		return nil, err
	}
	z := &zygote{proc: proc, control: control, stderr: newCappedPipe(stderrR), gone: make(chan struct{})}

	deadline := time.Now().Add(r.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { control.SetReadDeadline(time.Now()) })
	defer stop()
	control.SetReadDeadline(deadline)
	buf := make([]byte, 512)
	n, err := control.Read(buf)
	var ready readyMessage
	if err == nil {
		err = msgpack.Unmarshal(buf[:n], &ready)
	}
	if err == nil && ready.Type != msgReady {
		err = fmt.Errorf("zygote sent %q instead of ready", ready.Type)
	}
	if err != nil {
		z.close()
		return nil, fmt.Errorf("zygote did not say ready: %w (%s)", err, stderrTail(z.stderr))
	}
	control.SetReadDeadline(time.Time{})
	return z, nil
}

// close kills the zygote, and with it every sandbox it forked.
func (z *zygote) close() {
	z.proc.kill()
	z.proc.wait(drainTimeout)
	z.control.Close()
	z.stderr.close()
}

// spawn asks the zygote for one sandbox and waits until it says ready.
func (r *Runner) spawn(ctx context.Context, z *zygote) (_ *Sandbox, err error) {
	pipes, err := newSandboxPipes()
	if err != nil {
		return nil, err
	}
	spawnMsg, err := msgpack.Marshal(map[string]string{"type": "spawn"})
	if err != nil {
		pipes.closeAll()
		return nil, fmt.Errorf("cannot encode spawn: %w", err)
	}
	rights := unix.UnixRights(int(pipes.channel.Fd()), int(pipes.stdoutW.Fd()), int(pipes.stderrW.Fd()))
	z.mu.Lock()
	z.control.SetWriteDeadline(time.Now().Add(r.cfg.StartTimeout))
	_, _, err = z.control.WriteMsgUnix(spawnMsg, rights, nil)
	z.mu.Unlock()
	pipes.closeChildEnds()
	if err != nil {
		pipes.closeAll()
		return nil, fmt.Errorf("cannot send spawn to zygote: %w", err)
	}
	sb := newSandbox(pipes, r.cfg.DenyImports)
	sb.zygoteGone = z.gone
	// Until ready there is no pid to kill: closing the channel makes the
	// half-made sandbox exit at its first read or write.
	sb.proc = unstartedProc{}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	pid, err := sb.awaitReady(ctx, time.Now().Add(r.cfg.StartTimeout))
	if err != nil {
		if sb.zygoteDied() {
			return nil, fmt.Errorf("%w: %w", ErrZygoteDied, err)
		}
		return nil, err
	}
	proc, err := openPidfd(pid)
	if err != nil {
		return nil, err
	}
	sb.proc, sb.pid = proc, pid
	return sb, nil
}

// unstartedProc stands in until a fork-mode sandbox has said ready.
type unstartedProc struct{}

func (unstartedProc) kill()       {}
func (unstartedProc) alive() bool { return false }
func (unstartedProc) wait(time.Duration) (exitInfo, bool, error) {
	return exitInfo{}, false, nil
}
func (unstartedProc) release() {}

// pidfdProc is a fork-mode sandbox, reached through a pidfd: race-free
// signalling of a process the runner is not the parent of.
type pidfdProc struct {
	fd       int
	killOnce sync.Once
	relOnce  sync.Once
}

func openPidfd(pid int) (*pidfdProc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open pidfd of sandbox %d: %w", pid, err)
	}
	return &pidfdProc{fd: fd}, nil
}

func (p *pidfdProc) kill() {
	p.killOnce.Do(func() { _ = unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0) })
}

// exitedWithin polls the pidfd, which becomes readable when the process
// exits.
func (p *pidfdProc) exitedWithin(timeout time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		n, err := unix.Poll(fds, max(ms, 0))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

func (p *pidfdProc) alive() bool { return !p.exitedWithin(0) }

// wait waits until the sandbox's root process exited; how it ended comes
// on the channel from its supervisor, not from here.
func (p *pidfdProc) wait(timeout time.Duration) (exitInfo, bool, error) {
	if !p.exitedWithin(timeout) {
		return exitInfo{}, false, fmt.Errorf("sandbox still running %v after the kill", timeout)
	}
	return exitInfo{}, false, nil
}

func (p *pidfdProc) release() { p.relOnce.Do(func() { unix.Close(p.fd) }) }

// zygoteSupervisor keeps one zygote running: it restarts a dead zygote at
// once, backing off while restarts fail. It is owned by the Runner.
type zygoteSupervisor struct {
	r *Runner

	mu      sync.Mutex // guards current, changed and lastErr
	current *zygote
	changed chan struct{} // closed and replaced whenever current changes
	lastErr error

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newZygoteSupervisor(r *Runner) *zygoteSupervisor {
	s := &zygoteSupervisor{r: r, changed: make(chan struct{}), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.loop()
	return s
}

func (s *zygoteSupervisor) set(z *zygote, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current, s.lastErr = z, err
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *zygoteSupervisor) loop() {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for s.ctx.Err() == nil {
		z, err := s.r.startZygote(s.ctx)
		if err != nil {
			s.set(nil, err)
			s.r.cfg.Logger.Error().Err(err).Dur("retry_in", backoff).Msg("cannot start zygote")
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.set(z, nil)
		select {
		case <-z.proc.exited:
			// Sandboxes it forked die with it (parent-death signals and
			// the jail's PID namespace); mark them so at once.
			close(z.gone)
			s.set(nil, fmt.Errorf("%w: %v (%s)", ErrZygoteDied, z.proc.waitErr, stderrTail(z.stderr)))
			s.r.cfg.Logger.Error().Err(z.proc.waitErr).Msg("zygote died; restarting it")
			z.close()
		case <-s.ctx.Done():
			z.close()
			close(z.gone)
		}
	}
}

// get returns the running zygote, waiting for one until ctx ends.
func (s *zygoteSupervisor) get(ctx context.Context) (*zygote, error) {
	for {
		s.mu.Lock()
		z, changed, lastErr := s.current, s.changed, s.lastErr
		s.mu.Unlock()
		if z != nil {
			return z, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("no zygote: %w (last start: %v)", ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("no zygote yet: %w", ctx.Err())
		case <-s.ctx.Done():
			return nil, errors.New("runner is closed")
		}
	}
}

func (s *zygoteSupervisor) close() {
	s.cancel()
	<-s.done
}
