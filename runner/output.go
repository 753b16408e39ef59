package runner

import (
	"bytes"
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

	mu     sync.Mutex // guards buf, max, over, sealed and grew
	buf    []byte
	max    int
	over   bool
	sealed bool          // the end marker was seen: later bytes are dropped
	grew   chan struct{} // signalled (non-blocking) after each append

	overflow     chan struct{} // closed when more than max bytes arrived
	overflowOnce sync.Once
	done         chan struct{} // closed when the reader goroutine ended
}

func newCappedPipe(f *os.File) *cappedPipe {
	p := &cappedPipe{f: f, max: startupOutputCap, overflow: make(chan struct{}), done: make(chan struct{}),
		grew: make(chan struct{}, 1)}
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
	defer func() {
		select {
		case p.grew <- struct{}{}:
		default:
		}
	}()
	if p.sealed {
		return
	}
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

// waitMarker waits up to timeout for marker, which the sandbox writes after
// the script's own output, and keeps only what came before it. It reports
// whether the marker came; if not, the caller falls back to drain. The
// marker's bytes may pass the cap by their own length: setCap allows for it.
func (p *cappedPipe) waitMarker(marker []byte, limit int, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		if i := bytes.LastIndex(p.buf, marker); i >= 0 {
			p.buf = p.buf[:i]
			p.sealed = true
			if limit > 0 && len(p.buf) > limit {
				p.buf = p.buf[:limit]
				p.markOverLocked()
			}
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()
		select {
		case <-p.grew:
		case <-p.done:
			// EOF: everything is in; one more look above, then give up.
			p.mu.Lock()
			found := bytes.LastIndex(p.buf, marker) >= 0
			p.mu.Unlock()
			if !found {
				return false
			}
		case <-timer.C:
			return false
		}
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
