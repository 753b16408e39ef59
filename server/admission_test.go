package server

import (
	"errors"
	"net"
	"testing"

	"github.com/rs/zerolog"
)

// pipeConn is one end of a net.Pipe that records its closing.
type pipeConn struct {
	net.Conn
	closed bool
}

func (p *pipeConn) Close() error { p.closed = true; return p.Conn.Close() }

func newPipeConn(t *testing.T) *pipeConn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &pipeConn{Conn: a}
}

// TestAdmission: at the cap a new connection closes the unproven one idle
// the longest, else the proven one idle the longest; connections with a
// request being handled are never closed; when all have one, the new one
// is refused.
func TestAdmission(t *testing.T) {
	a := newAdmission(3, zerolog.Nop())
	c1, c2, c3 := newPipeConn(t), newPipeConn(t), newPipeConn(t)
	for _, c := range []*pipeConn{c1, c2, c3} {
		if !a.admit(c) {
			t.Fatal("refused within the cap")
		}
	}
	a.enter(c1, false) // c1 is busy with a request without the token
	a.enter(c2, true)  // c2 made a valid request
	a.leave(c2)
	c4 := newPipeConn(t)
	if !a.admit(c4) || !c3.closed || c1.closed || c2.closed {
		t.Fatalf("want c3 closed for c4: closed %v %v %v", c1.closed, c2.closed, c3.closed)
	}
	a.closed(c3) // fasthttp reports it; nothing to forget
	// c1 goes idle again: it is now the most recent unproven, after c4.
	a.leave(c1)
	c5 := newPipeConn(t)
	if !a.admit(c5) || !c4.closed || c1.closed {
		t.Fatalf("want c4, the longest idle, closed: c4 %v c1 %v", c4.closed, c1.closed)
	}
	a.enter(c1, true)
	a.enter(c5, false)
	// c1 and c5 are busy, c2 proven and idle: it makes room.
	c6 := newPipeConn(t)
	if !a.admit(c6) || !c2.closed || c1.closed || c5.closed {
		t.Fatalf("want c2, proven but idle, closed for c6: closed %v %v %v", c1.closed, c2.closed, c5.closed)
	}
	a.closed(c2)
	a.enter(c6, true)
	if c7 := newPipeConn(t); a.admit(c7) || c7.closed {
		t.Errorf("admitted past the cap with every connection busy")
	}
	// One goes: room again.
	a.leave(c5)
	a.closed(c5)
	if c8 := newPipeConn(t); !a.admit(c8) {
		t.Errorf("refused after a connection closed")
	}
}

// TestAdmissionClosesProvenIdleLongestFirst: a client that made valid
// requests on every connection and keeps them all idle cannot keep a
// probe out; the unproven go before any proven one.
func TestAdmissionClosesProvenIdleLongestFirst(t *testing.T) {
	a := newAdmission(3, zerolog.Nop())
	p1, p2, u := newPipeConn(t), newPipeConn(t), newPipeConn(t)
	for _, c := range []*pipeConn{p1, p2, u} {
		a.admit(c)
	}
	for _, c := range []*pipeConn{p2, p1} { // p2 idle longer than p1
		a.enter(c, true)
		a.leave(c)
	}
	probe := newPipeConn(t)
	if !a.admit(probe) || !u.closed || p1.closed || p2.closed {
		t.Fatalf("want the unproven one closed first: %v %v %v", u.closed, p1.closed, p2.closed)
	}
	a.closed(u)
	a.enter(probe, true) // the probe's request is being handled
	if next := newPipeConn(t); !a.admit(next) || !p2.closed || p1.closed {
		t.Fatalf("want p2, the longest idle proven, closed: p2 %v p1 %v", p2.closed, p1.closed)
	}
}

// The admission listener answers a refused connection a plain 503.
func TestAdmissionListenerRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm := newAdmission(1, zerolog.Nop())
	l := &admissionListener{Listener: ln, admission: adm}
	defer l.Close()
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	served, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	adm.enter(served, true)
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	accepted := make(chan error, 1)
	go func() { _, err := l.Accept(); accepted <- err }()
	buf := make([]byte, 200)
	n, _ := second.Read(buf)
	if got := string(buf[:n]); len(got) < 12 || got[:12] != "HTTP/1.1 503" {
		t.Errorf("refused connection read %q", got)
	}
	l.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}
