package runner

import (
	"os"
	"sync"
	"time"
)

// startupOutputCap bounds what a sandbox may print before it gets a script
// (only our own Python code runs then; this is a safety net).
const startupOutputCap = 1 << 20

// cappedPipe is the runner's end of a sandbox's stdout or stderr pipe. One
// goroutine, owned by the pipe, reads it to EOF from Start on, so a chatty
// sandbox never blocks on a full pipe. It keeps the first cap bytes and
// signals overflow once when more arrive; the rest is read and dropped.
type cappedPipe struct {
	f *os.File

	mu   sync.Mutex // guards buf, max and over
	buf  []byte
	max  int
	over bool

	overflow     chan struct{} // closed when more than max bytes arrived
	overflowOnce sync.Once
	done         chan struct{} // closed when the reader goroutine ended
}

func newCappedPipe(f *os.File) *cappedPipe {
	p := &cappedPipe{f: f, max: startupOutputCap, overflow: make(chan struct{}), done: make(chan struct{})}
	go p.readLoop()
	return p
}

func (p *cappedPipe) readLoop() {
	defer close(p.done)
	chunk := make([]byte, 32<<10)
	for {
		n, err := p.f.Read(chunk)
		if n > 0 {
			p.append(chunk[:n])
		}
		if err != nil {
			return
		}
	}
}

func (p *cappedPipe) append(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if room := p.max - len(p.buf); len(b) > room {
		p.buf = append(p.buf, b[:max(room, 0)]...)
		p.markOverLocked()
		return
	}
	p.buf = append(p.buf, b...)
}

func (p *cappedPipe) markOverLocked() {
	p.over = true
	p.overflowOnce.Do(func() { close(p.overflow) })
}

// setCap sets the cap for the execution; n <= 0 keeps the current one.
func (p *cappedPipe) setCap(n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.max = n
	if len(p.buf) > n {
		p.buf = p.buf[:n]
		p.markOverLocked()
	}
}

func (p *cappedPipe) overflowed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.over
}

// waitEOF waits up to timeout for EOF: every writer of the pipe is gone.
func (p *cappedPipe) waitEOF(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// snapshot returns a copy of what was kept so far.
func (p *cappedPipe) snapshot() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.buf...)
}

// drain waits up to timeout for EOF (every writer gone), then closes the
// pipe and returns a copy of what was kept.
func (p *cappedPipe) drain(timeout time.Duration) []byte {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.close()
		<-p.done
	}
	return p.snapshot()
}

// close ends the reader goroutine and releases the descriptor.
func (p *cappedPipe) close() {
	p.f.Close()
	<-p.done
}
