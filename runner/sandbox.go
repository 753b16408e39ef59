package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sandbox-exec/pyexec/internal/cgroupv2"
)

// drainTimeout bounds how long the runner waits, after killing a sandbox,
// for its output pipes to reach EOF and for its process to be gone. The
// kill takes the whole PID namespace with it, so this is only a safety net.
const drainTimeout = 5 * time.Second

// Sandbox is one started, jailed interpreter waiting for its one script.
type Sandbox struct {
	// Up a layer (doc.go, "Files"): a sandbox is its zygote's child; the
	// zygote reports its exit (wait) and is released through it.
	zygote *zygote
	// ownsZygote says the zygote was started for this sandbox alone (exec
	// mode) and is closed with it.
	ownsZygote bool
	id         uint64
	wait       *spawnWait
	// proc is nil until the zygote reported the sandbox spawned.
	proc        *pidfdProc
	toSandbox   *os.File // channel, runner → sandbox
	fromSandbox *os.File // channel, sandbox → runner
	stdout      *cappedPipe
	stderr      *cappedPipe
	// deny is the import deny list sent with the script.
	deny []string
	// limits are the runner's; a request may lower some.
	limits Limits
	// cgroup is the sandbox's own cgroup v2 group, nil where the host
	// delegates none (rlimits bound it then).
	cgroup *cgroupv2.Group
	// memBase is what the sandbox held when it said ready, for the memory
	// watch (without a cgroup).
	memBase memBaseline
	// cgroupSuspect says the move may have taken another process (the
	// sandbox died during it): Close then removes the group without
	// killing what is in it.
	cgroupSuspect bool

	used      sync.Mutex // held by the one Execute; TryLock refuses reuse
	closeOnce sync.Once
	closeErr  error
}

// newSandbox wraps the runner's ends of pipes; it starts the output readers.
func newSandbox(p *sandboxPipes, z *zygote, id uint64, wait *spawnWait, deny []string, limits Limits) *Sandbox {
	return &Sandbox{
		limits: limits,
		zygote: z, id: id, wait: wait,
		toSandbox: p.toSandbox, fromSandbox: p.fromSandbox,
		stdout: newCappedPipe(p.stdoutR), stderr: newCappedPipe(p.stderrR),
		deny: deny,
	}
}

// awaitReady reads the sandbox's ready frame before deadline (or ctx's end).
func (s *Sandbox) awaitReady(ctx context.Context, deadline time.Time) error {
	stop := context.AfterFunc(ctx, func() { s.fromSandbox.SetReadDeadline(time.Now()) })
	defer stop()
	if err := s.fromSandbox.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("cannot set ready deadline: %w", err)
	}
	defer s.fromSandbox.SetReadDeadline(time.Time{})
	payload, err := readFramePayload(s.fromSandbox, maxReadyFrame)
	if err == nil {
		var ready readyFrame
		if err = decodeStrict(payload, &ready); err == nil && ready.Type != msgReady {
			err = fmt.Errorf("%w: %q instead of ready", errMalformed, clip(ready.Type, 40))
		}
	}
	if err != nil {
		return fmt.Errorf("sandbox did not say ready: %w (%s)", err, stderrTail(s.stderr))
	}
	return nil
}

// PID is the host pid of the sandbox's root process, as read when it was
// spawned. Once the sandbox is gone the pid may in time be another
// process's, so what is read by it holds only while the sandbox lives:
// finishFast and finishSlow check alive() after reading its usage (which
// also covers fastPathReady's look for children); joinCgroup after the
// move; the baseline at ready is covered by Execute's Alive(); the memory
// watch reads a sandbox whose end the execution sees at once.
func (s *Sandbox) PID() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.pid
}

// Alive reports whether the sandbox is still running.
func (s *Sandbox) Alive() bool {
	return s.proc != nil && !s.zygote.died() && s.proc.alive()
}

// kill ends the sandbox's PID namespace: its root process dies, and the
// kernel kills everything else in it.
func (s *Sandbox) kill() {
	if s.proc != nil {
		s.proc.kill()
	}
}

// awaitExit waits at most timeout for the zygote's report of how the
// sandbox ended.
func (s *Sandbox) awaitExit(timeout time.Duration) (exitReport, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case m := <-s.wait.exit:
		return m, true
	case <-s.zygote.gone:
	case <-timer.C:
	}
	return exitReport{}, false
}

// Close kills the sandbox, waits until it is gone and releases its
// descriptors. It is idempotent and safe to call after Execute.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		if s.proc != nil {
			s.proc.kill()
			if err := s.proc.wait(drainTimeout); err != nil && !s.zygote.died() {
				s.closeErr = err
			}
			s.proc.release()
		}
		closeFiles(s.toSandbox, s.fromSandbox)
		s.stdout.drain(drainTimeout)
		s.stderr.drain(drainTimeout)
		s.stdout.close()
		s.stderr.close()
		if s.cgroup != nil {
			remove := s.cgroup.Remove
			if s.cgroupSuspect {
				remove = s.cgroup.Release
			}
			if err := remove(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
		if s.ownsZygote {
			s.zygote.close()
		} else {
			s.zygote.release(s.id)
		}
	})
	return s.closeErr
}

// joinCgroup makes the sandbox's cgroup, named name below tree, with the
// runner's limits, and moves the sandbox into it. It is called before the
// sandbox says ready, so every process its script starts is born inside.
func (s *Sandbox) joinCgroup(tree *cgroupv2.Tree, name string) error {
	pid := s.PID()
	if pid <= 0 {
		return errors.New("cannot place the sandbox in its cgroup: its pid is unknown")
	}
	g, err := tree.New(name, cgroupv2.Limits{MemoryBytes: s.limits.MemoryBytes, Processes: s.limits.Processes})
	if err != nil {
		return err
	}
	s.cgroup = g
	if err := g.Add(pid); err != nil {
		return err
	}
	// The pid was read from the pidfd before the move: had the sandbox
	// died in between, and its pid been reused, the move took another
	// process. Never kill it then: the group is only released.
	if !s.proc.alive() {
		s.cgroupSuspect = true
		return errors.New("the sandbox died while it was placed in its cgroup")
	}
	return nil
}

// randomGroupName names a sandbox's cgroup. A script can read its own
// group's name (/proc/self/cgroup): a counter would tell it how many
// sandboxes the service made.
func randomGroupName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("cannot name a cgroup: %w", err)
	}
	return "sbx-" + hex.EncodeToString(b[:]), nil
}

// stderrTail is the last bit of a pipe, for start errors.
func stderrTail(p *cappedPipe) string {
	b := p.drain(time.Second)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return "no stderr"
	}
	return "stderr: " + clip(string(b), 2048)
}
