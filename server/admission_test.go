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
// the longest; connections with a request being handled, or that made a
// valid one, are never closed; when all are, the new one is refused.
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
	if c6 := newPipeConn(t); a.admit(c6) || c6.closed {
		t.Errorf("admitted past the cap with every connection proven or busy")
	}
	// One goes: room again.
	a.closed(c2)
	if c7 := newPipeConn(t); !a.admit(c7) {
		t.Errorf("refused after a connection closed")
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
