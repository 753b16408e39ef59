package runner

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// jailedProc is a jail the runner started and is the parent of: a zygote.
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

// kill sends SIGKILL to the jail's process group and to the jail itself.
// The jail is PID 1 of its PID namespace (or its parent), so everything in
// it dies too.
func (p *jailedProc) kill() {
	p.killOnce.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
	})
}

// exitString says how the jail ended, once it has been reaped.
func (p *jailedProc) exitString() string {
	select {
	case <-p.exited:
		if p.waitErr == nil {
			return "exited"
		}
		return p.waitErr.Error()
	default:
		return "not reaped yet"
	}
}

// wait waits at most timeout for the jail to be reaped.
func (p *jailedProc) wait(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("jail pid %d not reaped after %v", p.cmd.Process.Pid, timeout)
	}
}

// pidfdProc is a sandbox, reached through a pidfd its zygote sent:
// race-free signalling of a process the runner is not the parent of.
type pidfdProc struct {
	fd int
	// pid is the process's pid as the runner sees it, read once when the
	// pidfd came (spawn refuses a sandbox without one). Reads of /proc by
	// pid race with the process's end and the pid's reuse, which takes
	// the whole pid space to wrap: every signal goes through the pidfd,
	// and a reading whose result is reported is checked with alive()
	// after it (Sandbox.PID lists where).
	pid      int
	killOnce sync.Once
	relOnce  sync.Once
}

// newPidfdProc takes over pidfd, a sandbox's, and reads its pid.
func newPidfdProc(pidfd int) *pidfdProc {
	p := &pidfdProc{fd: pidfd}
	p.pid = p.readHostPID()
	return p
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
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

func (p *pidfdProc) alive() bool { return !p.exitedWithin(0) }

// wait waits until the sandbox's root process exited.
func (p *pidfdProc) wait(timeout time.Duration) error {
	if !p.exitedWithin(timeout) {
		return fmt.Errorf("sandbox still running %v after the kill", timeout)
	}
	return nil
}

// readHostPID is the sandbox's pid as the runner sees it, read from the
// pidfd's fdinfo: 0 if it cannot be read, -1 once the process is gone.
func (p *pidfdProc) readHostPID() int {
	info, err := readProcFile("/proc/self/fdinfo/" + strconv.Itoa(p.fd))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(info), "\n") {
		if value, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, _ := strconv.Atoi(strings.TrimSpace(value))
			return pid
		}
	}
	return 0
}

func (p *pidfdProc) release() { p.relOnce.Do(func() { unix.Close(p.fd) }) }

// procUsage reads what the process pid has used from the kernel's /proc:
// user + system CPU of itself and the children it reaped, and its peak
// resident set. The sandbox cannot write either. A process that has ended
// (or is ending) gives false: its exit report has the whole figures.
func procUsage(pid int) (Usage, bool) {
	u, ended, ok := readUsage(pid)
	return u, ok && !ended
}

// readUsage is procUsage that also reads a process that has ended or is
// ending but is not yet reaped (ended true): its CPU figures are final,
// its memory ones gone (0).
func readUsage(pid int) (u Usage, ended, ok bool) {
	if pid <= 0 {
		return Usage{}, false, false
	}
	stat, err := readProcFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Usage{}, false, false
	}
	// Fields after the command name, which is in parentheses and may hold
	// anything: state is field 3, utime..cstime are fields 14..17.
	end := strings.LastIndexByte(string(stat), ')')
	if end < 0 {
		return Usage{}, false, false
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 15 {
		return Usage{}, false, false
	}
	ended = fields[0] == "Z" || fields[0] == "X"
	var ticks int64
	for _, f := range fields[11:15] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return Usage{}, false, false
		}
		ticks += n
	}
	u = Usage{CPU: time.Duration(ticks) * time.Second / clockTicks}
	if ended {
		return u, true, true
	}
	status, err := readProcFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Usage{}, false, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return Usage{}, false, false
			}
			u.MaxRSSKB = kb
			return u, false, true
		}
	}
	// No memory figures: the process is exiting (its memory already
	// released); its CPU figures are final.
	return u, true, true
}

// treeUsage adds up procUsage over process pid and every descendant alive
// now (found through the children files), for a sandbox about to be
// killed: the kernel reaps the rest of a PID namespace with SIGCHLD
// ignored when its first process dies, so what those processes used never
// reaches anyone's rusage after the kill. MaxRSSKB is the largest of them.
// A process that ends between two readings is missed only if nobody waits
// for it (its parent, if alive, counts it in its children's times).
func treeUsage(pid int) (Usage, bool) {
	total, ok := procUsage(pid)
	if !ok {
		return Usage{}, false
	}
	// Bounded: a sandbox has at most --max-processes processes, but a
	// listing may race with forks; never walk more than this.
	const maxProcesses = 4096
	queue, _ := childrenOf(pid)
	for seen := 0; len(queue) > 0 && seen < maxProcesses; seen++ {
		child := queue[0]
		queue = queue[1:]
		// An ended child not yet reaped counts too: the kill's teardown
		// reaps it with its times discarded.
		u, _, ok := readUsage(child)
		if !ok {
			continue // reaped since it was listed: counted by its parent
		}
		total.CPU += u.CPU
		total.MaxRSSKB = max(total.MaxRSSKB, u.MaxRSSKB)
		grandchildren, _ := childrenOf(child)
		queue = append(queue, grandchildren...)
	}
	return total, true
}

// childrenOf lists the children of every thread of process pid (a child
// belongs to the thread that made it), from /proc/<pid>/task/<tid>/children;
// ok is false when the process cannot be read.
func childrenOf(pid int) (children []int, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := listProcDir(dir)
	if err != nil {
		return nil, false
	}
	ok = true
	for _, task := range tasks {
		list, err := readProcFile(dir + task + "/children")
		if err != nil {
			ok = false // a thread that ended since the listing, or worse
			continue
		}
		for _, field := range strings.Fields(string(list)) {
			if child, err := strconv.Atoi(field); err == nil {
				children = append(children, child)
			}
		}
	}
	return children, ok
}

// hasChildren says whether process pid has a child alive (or not yet
// reaped). A process that cannot be read counts as having children, so
// that the caller takes the careful path.
func hasChildren(pid int) bool {
	children, ok := childrenOf(pid)
	return pid <= 0 || !ok || len(children) > 0
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100
