package runner

import (
	"fmt"
	"os"
)

// sandboxPipes are a new sandbox's four pipes: its channel in each
// direction, stdout and stderr. Pipes rather than a socketpair: a socket
// made by the runner would belong to the host's network namespace, and
// ioctls on it would describe the host's interfaces to the sandbox.
type sandboxPipes struct {
	// The sandbox's ends, handed to the zygote and then closed here.
	channelIn, channelOut, stdoutW, stderrW *os.File
	// The runner's ends.
	toSandbox, fromSandbox, stdoutR, stderrR *os.File
}

func newSandboxPipes() (*sandboxPipes, error) {
	p := &sandboxPipes{}
	var err error
	if p.channelIn, p.toSandbox, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("cannot create channel pipe: %w", err)
	}
	if p.fromSandbox, p.channelOut, err = os.Pipe(); err != nil {
		p.closeAll()
		return nil, fmt.Errorf("cannot create channel pipe: %w", err)
	}
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

// sandboxEnds are the descriptors the zygote passes on, in the order the
// sandbox gets them (python/pyexec/zygote.py).
func (p *sandboxPipes) sandboxEnds() []int {
	return []int{int(p.channelIn.Fd()), int(p.channelOut.Fd()), int(p.stdoutW.Fd()), int(p.stderrW.Fd())}
}

// closeSandboxEnds closes the runner's copies of the sandbox's ends once
// they have been handed over, so EOF means the sandbox is gone.
func (p *sandboxPipes) closeSandboxEnds() {
	closeFiles(p.channelIn, p.channelOut, p.stdoutW, p.stderrW)
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
