package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// jailCommand returns a command that runs argv in the jail as the
// sandbox's host uid, in its own process group, killed if the server dies.
func (r *Runner) jailCommand(argv []string) *exec.Cmd {
	path, args := r.cfg.Jail.Command(JailSpec{Argv: argv, Env: sandboxEnv(), TmpBytes: r.cfg.TmpBytes})
	cmd := exec.Command(path, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: r.credential,
	}
	return cmd
}

// jailedProc is a process the runner started in the jail and is the
// parent of: the exec-mode sandbox, and the zygote.
type jailedProc struct {
	cmd *exec.Cmd
	// exited is closed once cmd.Wait has returned; waitErr is its result,
	// readable after exited is closed.
	exited   chan struct{}
	waitErr  error
	killOnce sync.Once
}

// startJailed starts cmd and a goroutine, owned by the returned handle,
// that reaps it.
func startJailed(cmd *exec.Cmd) (*jailedProc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", cmd.Path, err)
	}
	p := &jailedProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// kill sends SIGKILL to the jail's process group and to the jail itself;
// see doc.go for why that takes the whole sandbox with it.
func (p *jailedProc) kill() {
	p.killOnce.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
	})
}

func (p *jailedProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// wait waits for the jail to be reaped. bubblewrap and nsjail report a
// child killed by signal N as exit status 128+N; that is turned back into
// a signal. The CPU time is the jail's rusage, which includes the children
// it waited for: the interpreter.
func (p *jailedProc) wait(timeout time.Duration) (exitInfo, bool, error) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
		return exitInfo{}, false, fmt.Errorf("jail pid %d not reaped after %v", p.cmd.Process.Pid, timeout)
	}
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		return exitInfo{}, false, p.waitErr
	}
	status, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return exitInfo{}, false, nil
	}
	if status.Exited() && status.ExitStatus() > 128 && status.ExitStatus() < 128+65 {
		status = syscall.WaitStatus(status.ExitStatus() - 128)
	}
	cpu := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	return exitInfo{status: status, cpu: cpu}, true, nil
}

func (p *jailedProc) release() {}

// startExec starts one exec-mode sandbox: a fresh jailed interpreter that
// imports the preload modules and says ready.
func (r *Runner) startExec(ctx context.Context) (_ *Sandbox, err error) {
	pipes, err := newSandboxPipes()
	if err != nil {
		return nil, err
	}
	cmd := r.jailCommand(r.sandboxArgv(false))
	cmd.Stdout = pipes.stdoutW
	cmd.Stderr = pipes.stderrW
	cmd.ExtraFiles = []*os.File{pipes.channel} // fd 3 in the child
	proc, err := startJailed(cmd)
	pipes.closeChildEnds()
	if err != nil {
		pipes.closeAll()
		return nil, err
	}
	sb := newSandbox(pipes, r.cfg.DenyImports)
	sb.proc = proc
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	pid, err := sb.awaitReady(ctx, time.Now().Add(r.cfg.StartTimeout))
	if err != nil {
		proc.kill()
		proc.wait(drainTimeout)
		return nil, fmt.Errorf("%w (%s)", err, stderrTail(sb.stderr))
	}
	sb.pid = pid
	return sb, nil
}
