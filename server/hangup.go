package server

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errClientGone is the cause of a request context cancelled because the
// caller closed its connection.
var errClientGone = errors.New("the client closed the connection")

// hangupPoll is how often the watcher looks at the connection; a caller
// that hangs up has its script killed within about this long.
const hangupPoll = 50 * time.Millisecond

// watchHangup cancels cancel (with errClientGone) when the peer of conn
// closes its side while the request runs: fasthttp gives no such signal,
// so a goroutine polls a duplicate of the socket for POLLRDHUP, which
// reads nothing, until stop is called. It does nothing for connections
// that are not sockets (tests' in-memory listeners).
func watchHangup(conn net.Conn, cancel context.CancelCauseFunc) (stop func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	dup := -1
	_ = raw.Control(func(fd uintptr) { dup, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if dup < 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer unix.Close(dup)
		fds := []unix.PollFd{{Fd: int32(dup), Events: unix.POLLRDHUP}}
		for {
			select {
			case <-done:
				return
			default:
			}
			n, err := unix.Poll(fds, int(hangupPoll/time.Millisecond))
			if err != nil && !errors.Is(err, unix.EINTR) {
				return
			}
			if n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				cancel(errClientGone)
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
