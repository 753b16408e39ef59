package runner

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// sandboxPipes are a new sandbox's four pipes: its channel in each
// direction, stdout and stderr. Pipes rather than a socketpair: a socket
// made by the runner would belong to the host's network namespace, and
// ioctls on it would describe the host's interfaces to the sandbox.
type sandboxPipes struct {
	// The sandbox's ends: plain descriptors in blocking mode, as the
	// sandbox uses them, handed to the zygote and then closed here (-1
	// once closed). Not os.Files: the runner never reads or writes them,
	// and an os.File would register each with the poller and switch it
	// to non-blocking mode and back (Fd), five system calls apiece.
	channelIn, channelOut, stdoutW, stderrW int
	// The runner's ends, in non-blocking mode, read and written through
	// the poller (deadlines work on them).
	toSandbox, fromSandbox, stdoutR, stderrR *os.File
}

func newSandboxPipes() (*sandboxPipes, error) {
	p := &sandboxPipes{channelIn: -1, channelOut: -1, stdoutW: -1, stderrW: -1}
	var err error
	if p.toSandbox, p.channelIn, err = newRunnerPipe("channel", false); err != nil {
		return nil, err
	}
	if p.fromSandbox, p.channelOut, err = newRunnerPipe("channel", true); err != nil {
		p.closeAll()
		return nil, err
	}
	if p.stdoutR, p.stdoutW, err = newRunnerPipe("stdout", true); err != nil {
		p.closeAll()
		return nil, err
	}
	if p.stderrR, p.stderrW, err = newRunnerPipe("stderr", true); err != nil {
		p.closeAll()
		return nil, err
	}
	return p, nil
}

// newRunnerPipe makes a pipe between the runner and a sandbox: the
// runner's end (the read end if runnerReads, else the write end) as a
// non-blocking os.File, the sandbox's as a blocking descriptor. The two
// ends of a pipe are separate open files, so O_NONBLOCK on one leaves the
// other blocking.
func newRunnerPipe(name string, runnerReads bool) (runnerEnd *os.File, sandboxEnd int, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, fmt.Errorf("cannot create %s pipe: %w", name, err)
	}
	mine, theirs := fds[1], fds[0]
	if runnerReads {
		mine, theirs = fds[0], fds[1]
	}
	// A fresh pipe end has no other status flag to keep.
	if _, err := unix.FcntlInt(uintptr(mine), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(mine)
		unix.Close(theirs)
		return nil, -1, fmt.Errorf("cannot make the %s pipe non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(mine), name), theirs, nil
}

// sandboxEnds are the descriptors the zygote passes on, in the order the
// sandbox gets them (python/pyexec/zygote.py).
func (p *sandboxPipes) sandboxEnds() []int {
	return []int{p.channelIn, p.channelOut, p.stdoutW, p.stderrW}
}

// closeSandboxEnds closes the runner's copies of the sandbox's ends once
// they have been handed over, so EOF means the sandbox is gone. It may be
// called more than once.
func (p *sandboxPipes) closeSandboxEnds() {
	for _, fd := range []*int{&p.channelIn, &p.channelOut, &p.stdoutW, &p.stderrW} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (p *sandboxPipes) closeAll() {
	p.closeSandboxEnds()
	closeFiles(p.toSandbox, p.fromSandbox, p.stdoutR, p.stderrR)
}

func closeFiles(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
