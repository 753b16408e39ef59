package server

import (
	"container/list"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// admission keeps --max-connections, and keeps connections that have not
// made a valid request from starving those that have. A connection is
// *unproven* from its accept until a request of its is authorised (any
// complete request when no token is set); then it is *proven* for the
// rest of its life. When the cap is reached, a new connection takes the
// place of the unproven connection idle the longest (one with no request
// being handled), which is closed; when there is none, of the proven
// connection idle the longest (a kept-alive connection waiting for its
// next request: closing it is ordinary HTTP, its client opens another);
// only when every open connection has a request being handled is the new
// one refused with a plain 503. So idle or slow connections without the
// token, however many, cannot keep an authorised client, or a probe, out:
// each new connection pushes the oldest of them out, and a probe or a
// client that sends its request at once is served before a flood of new
// connections reaches it. Nor can a client that made valid requests (any
// client, without a token) keep the others and the probes out by holding
// --max-connections idle kept-alive connections: they go next, the
// longest idle first.
//
// fasthttp's own Concurrency stays well above the cap (the workers of closed
// connections end a moment after they are closed); this is what counts.
type admission struct {
	limit  int
	logger zerolog.Logger

	mu sync.Mutex
	// conns are the open connections admitted, by the net.Conn fasthttp
	// serves (the one the listener returned).
	conns map[net.Conn]*admitted
	// idle lists the unproven connections with no request being handled,
	// the longest idle at the front: the next to close. idleProven lists
	// the proven ones the same way: next after those.
	idle, idleProven *list.List
	// lastEvictLog and lastRefuseLog rate-limit the log lines.
	lastEvictLog, lastRefuseLog time.Time
	evicted, refused            int
}

// admitted is one open connection.
type admitted struct {
	conn   net.Conn
	proven bool
	busy   int // requests being handled (one, without pipelining)
	// elem is its place in idle or idleProven, nil when it is in neither.
	elem *list.Element
}

func newAdmission(limit int, logger zerolog.Logger) *admission {
	return &admission{limit: limit, logger: logger, conns: make(map[net.Conn]*admitted), idle: list.New(), idleProven: list.New()}
}

// admit says whether c may be served, closing the longest idle unproven
// connection (else the longest idle proven one) to make room when the cap
// is reached.
func (a *admission) admit(c net.Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.conns) >= a.limit {
		front := a.idle.Front()
		if front == nil {
			front = a.idleProven.Front()
		}
		if front == nil {
			a.refused++
			if time.Since(a.lastRefuseLog) > time.Minute {
				a.lastRefuseLog = time.Now()
				a.logger.Warn().Int("max_connections", a.limit).Int("refused", a.refused).
					Msg("refusing connections: --max-connections are open, every one with a request being handled")
				a.refused = 0
			}
			return false
		}
		victim := front.Value.(*admitted)
		a.forget(victim)
		// Closing ends fasthttp's read of it; its worker then ends, and
		// the closed state it reports finds nothing to forget.
		_ = victim.conn.Close()
		a.evicted++
		if time.Since(a.lastEvictLog) > time.Minute {
			a.lastEvictLog = time.Now()
			a.logger.Warn().Int("max_connections", a.limit).Int("closed", a.evicted).
				Msg("closing idle connections, those that made no valid request first, to admit new ones: --max-connections are open")
			a.evicted = 0
		}
	}
	entry := &admitted{conn: c}
	entry.elem = a.idle.PushBack(entry)
	a.conns[c] = entry
	return true
}

// counts are the connections open and, of those, the proven ones.
func (a *admission) counts() (open, proven int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.conns {
		if e.proven {
			proven++
		}
	}
	return len(a.conns), proven
}

// forget removes a connection; a.mu is held.
func (a *admission) forget(e *admitted) {
	a.unlistIdle(e)
	delete(a.conns, e.conn)
}

// unlistIdle takes e off its idle list, if it is on one; a.mu is held.
func (a *admission) unlistIdle(e *admitted) {
	if e.elem == nil {
		return
	}
	if e.proven {
		a.idleProven.Remove(e.elem)
	} else {
		a.idle.Remove(e.elem)
	}
	e.elem = nil
}

// closed forgets a connection fasthttp has closed.
func (a *admission) closed(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.conns[c]; ok {
		a.forget(e)
	}
}

// enter marks a request of c being handled, and c proven when the
// request is valid; leave undoes the first. While a request is handled
// its connection is never closed to make room.
func (a *admission) enter(c net.Conn, valid bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.conns[c]
	if !ok {
		return
	}
	e.busy++
	a.unlistIdle(e) // before proven changes: it names the list
	e.proven = e.proven || valid
}

func (a *admission) leave(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.conns[c]
	if !ok {
		return
	}
	e.busy--
	if e.busy == 0 && e.elem == nil {
		// Idle again, and the most recently active of its kind.
		if e.proven {
			e.elem = a.idleProven.PushBack(e)
		} else {
			e.elem = a.idle.PushBack(e)
		}
	}
}

// admissionListener admits each accepted connection, and answers those
// it refuses a plain 503 before closing them, as fasthttp does past its
// Concurrency.
type admissionListener struct {
	net.Listener
	admission *admission
}

// refusal is the answer of a refused connection.
var refusal = func() []byte {
	const body = "too many connections with a valid request are open; retry soon"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}()

func (l *admissionListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admission.admit(c) {
			return c, nil
		}
		// A new socket's send buffer is empty: this write does not wait.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(refusal)
		_ = c.Close()
	}
}
