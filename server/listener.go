package server

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Accept backoff, as net/http's Server.Serve does it: a failed Accept is
// retried after 5 ms, doubling up to 1 s, until one succeeds.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// retryListener keeps fasthttp's accept loop alive through errors that
// pass: fasthttp's Serve returns on any Accept error but a timeout, and
// with it the whole service, so a burst of EMFILE (a connection flood, or
// sandboxes holding descriptors) would stop a server that could have gone
// on once descriptors were freed. Accept retries such errors itself, with
// a backoff so that it does not spin while nothing can be accepted, and
// logs once per burst rather than once per attempt.
type retryListener struct {
	net.Listener
	logger zerolog.Logger
	// sleep waits d or until closed is closed; tests replace it.
	sleep func(d time.Duration, closed <-chan struct{})

	closeOnce sync.Once
	// closed is closed by Close, so that a backoff in progress ends at
	// once and Shutdown is not held up by it.
	closed chan struct{}
}

func newRetryListener(ln net.Listener, logger zerolog.Logger) *retryListener {
	return &retryListener{Listener: ln, logger: logger, sleep: sleepOrClosed, closed: make(chan struct{})}
}

func sleepOrClosed(d time.Duration, closed <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-closed:
	}
}

// Accept returns the next connection, retrying errors that pass. Only
// one goroutine (fasthttp's accept loop) calls it, so the burst's state
// lives on its stack.
func (l *retryListener) Accept() (net.Conn, error) {
	var (
		delay   time.Duration
		failed  int
		started time.Time
	)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if failed > 0 {
				l.logger.Warn().Int("failed_accepts", failed).Dur("for", time.Since(started)).
					Msg("accepting connections again")
			}
			return c, nil
		}
		select {
		case <-l.closed:
			// Closed by Shutdown: fasthttp knows this error and stops.
			return nil, err
		default:
		}
		if !retryableAcceptError(err) {
			return nil, err
		}
		if failed == 0 {
			started = time.Now()
			l.logger.Warn().Err(err).
				Msg("cannot accept connections; retrying with backoff until one succeeds (lower --max-connections or raise the descriptor limit if this is EMFILE)")
		}
		failed++
		delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
		l.sleep(delay, l.closed)
	}
}

// Close closes the listener and ends a backoff in progress.
func (l *retryListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// retryableAcceptError says whether an Accept error may pass: the process
// or the system is out of descriptors or memory for a new socket, the
// connection was aborted before it was accepted, or a timeout. A closed
// listener, and anything else, is final.
func retryableAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}
