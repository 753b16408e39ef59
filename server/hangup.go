package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// errClientGone is the cause of a request context cancelled because the
// caller closed its connection.
var errClientGone = errors.New("the client closed the connection")

// hangupWatcher cancels a request when the peer of its connection closes
// its side while the request runs: fasthttp gives no such signal. One
// goroutine waits in epoll_wait on a duplicate of every watched socket for
// EPOLLRDHUP, which reads nothing. One, not one per request: a goroutine
// blocked in a system call holds an OS thread, and with a thread per
// waiting request a flood of them (--max-waiting grows with the CPUs)
// would reach the Go runtime's limit of 10,000 threads, which is fatal.
//
// A peer that only shut its write side after the request (a FIN) raises
// EPOLLRDHUP too, and no read tells it from one that closed the socket:
// only a write would (a closed peer answers it with a reset), and the
// answer is not ready. Such a client is taken as gone, and half-closing is
// not supported (docs/api.md, OpenAPI: 499 client_gone).
type hangupWatcher struct {
	epoll, wake int
	finished    chan struct{}

	mu      sync.Mutex
	closed  bool
	nextID  uint64 // 0 is the wake eventfd's
	watches map[uint64]context.CancelCauseFunc
}

// newHangupWatcher starts the watcher's goroutine; close stops it.
func newHangupWatcher() (*hangupWatcher, error) {
	epoll, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cannot create the hang-up watcher's epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epoll)
		return nil, fmt.Errorf("cannot create the hang-up watcher's eventfd: %w", err)
	}
	if err := unix.EpollCtl(epoll, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(wake)
		unix.Close(epoll)
		return nil, fmt.Errorf("cannot watch the hang-up watcher's eventfd: %w", err)
	}
	w := &hangupWatcher{epoll: epoll, wake: wake, finished: make(chan struct{}), nextID: 1,
		watches: make(map[uint64]context.CancelCauseFunc)}
	go w.loop()
	return w, nil
}

// epollID and idOf carry a watch's id in the event's 64 bits of user data
// (the Fd and Pad fields of unix.EpollEvent).
func epollID(id uint64) (fd, pad int32) { return int32(uint32(id)), int32(uint32(id >> 32)) }
func idOf(ev unix.EpollEvent) uint64    { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func (w *hangupWatcher) loop() {
	defer close(w.finished)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epoll, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			id := idOf(ev)
			if id == 0 {
				return // close
			}
			// The watch fired once (EPOLLONESHOT); its stop closes the
			// descriptor. Ids are never reused, so an event read just
			// before a stop finds nothing rather than another request.
			w.mu.Lock()
			cancel := w.watches[id]
			delete(w.watches, id)
			w.mu.Unlock()
			if cancel != nil {
				cancel(errClientGone)
			}
		}
	}
}

// watch cancels cancel (with errClientGone) when the peer of conn closes
// its side, until stop is called (stop may be called more than once). It
// does nothing for connections that are not sockets, or once the watcher
// is closed.
func (w *hangupWatcher) watch(conn net.Conn, cancel context.CancelCauseFunc) (stop func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok || w == nil {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	// A duplicate: the watch must not disturb the descriptor fasthttp
	// reads and writes (nor its registration in Go's own poller).
	dup := -1
	_ = raw.Control(func(fd uintptr) { dup, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if dup < 0 {
		return func() {}
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		unix.Close(dup)
		return func() {}
	}
	id := w.nextID
	w.nextID++
	w.watches[id] = cancel
	fd, pad := epollID(id)
	err = unix.EpollCtl(w.epoll, unix.EPOLL_CTL_ADD, dup,
		&unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd, Pad: pad})
	if err != nil {
		delete(w.watches, id)
	}
	w.mu.Unlock()
	if err != nil {
		unix.Close(dup)
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { w.stop(id, dup) }) }
}

// stop ends the watch id of descriptor dup. Once only: a second close of
// dup could close a descriptor that has since taken its number.
func (w *hangupWatcher) stop(id uint64, dup int) {
	w.mu.Lock()
	delete(w.watches, id)
	if !w.closed {
		_ = unix.EpollCtl(w.epoll, unix.EPOLL_CTL_DEL, dup, nil)
	}
	w.mu.Unlock()
	unix.Close(dup)
}

// close stops the watcher's goroutine and waits for it; watches still
// registered never fire. Idempotent.
func (w *hangupWatcher) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // eventfd takes a uint64 in host order
	_, _ = unix.Write(w.wake, one[:])
	<-w.finished
	unix.Close(w.wake)
	unix.Close(w.epoll)
}
