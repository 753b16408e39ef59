package server

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// errClientGone is the cause of a request context cancelled because the
// caller closed its connection.
var errClientGone = errors.New("the client closed the connection")

// watchHangup cancels cancel (with errClientGone) when the peer of conn
// closes its side while the request runs: fasthttp gives no such signal,
// so a goroutine polls a duplicate of the socket for POLLRDHUP, which
// reads nothing, and an eventfd that stop writes to wake it at once. It
// does nothing for connections that are not sockets.
//
// A peer that only shut its write side after the request (a FIN) raises
// POLLRDHUP too, and no read tells it from one that closed the socket:
// only a write would (a closed peer answers it with a reset), and the
// answer is not ready. Such a client is taken as gone, and half-closing is
// not supported (README, OpenAPI: 499 client_gone).
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
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(dup)
		return func() {}
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		fds := []unix.PollFd{{Fd: int32(dup), Events: unix.POLLRDHUP}, {Fd: int32(wake), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || fds[1].Revents != 0 {
				return
			}
			if n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				cancel(errClientGone)
				return
			}
		}
	}()
	return func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1) // eventfd takes a uint64 in host order
		_, _ = unix.Write(wake, one[:])
		<-finished
		unix.Close(wake)
		unix.Close(dup)
	}
}
