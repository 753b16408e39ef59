package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/internal/syncbuf"

	"github.com/rs/zerolog"
)

// scriptedListener returns the errors of script in turn from Accept, then
// conn; after Close it returns net.ErrClosed.
type scriptedListener struct {
	script []error
	conn   net.Conn
	closed bool
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if l.closed {
		return nil, fmt.Errorf("accept tcp: %w", net.ErrClosed)
	}
	if len(l.script) > 0 {
		err := l.script[0]
		l.script = l.script[1:]
		return nil, err
	}
	return l.conn, nil
}

func (l *scriptedListener) Close() error   { l.closed = true; return nil }
func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// acceptErr is what net.TCPListener.Accept returns for errno.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestRetryListenerSurvivesEMFILE(t *testing.T) {
	want, peer := net.Pipe()
	defer want.Close()
	defer peer.Close()
	var script []error
	for range 12 {
		script = append(script, acceptErr(syscall.EMFILE))
	}
	script = append(script, acceptErr(syscall.ENFILE))
	inner := &scriptedListener{script: script, conn: want}
	var logs bytes.Buffer
	ln := newRetryListener(inner, zerolog.New(&logs))
	var delays []time.Duration
	ln.sleep = func(d time.Duration, _ <-chan struct{}) { delays = append(delays, d) }

	got, err := ln.Accept()
	if err != nil || got != want {
		t.Fatalf("Accept = %v, %v; want the connection after the errors", got, err)
	}
	// 5 ms doubling to 1 s, then 1 s: as net/http.
	wantDelays := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000}
	if len(delays) != len(wantDelays) {
		t.Fatalf("slept %v, want %d waits", delays, len(wantDelays))
	}
	for i, d := range delays {
		if d != wantDelays[i]*time.Millisecond {
			t.Errorf("wait %d was %v, want %v", i, d, wantDelays[i]*time.Millisecond)
		}
	}
	// One line when the burst starts, one when it ends; JSON both.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "too many open files") ||
		!strings.Contains(lines[1], `"failed_accepts":13`) {
		t.Errorf("log lines %q, want one at the start of the burst and one at its end", lines)
	}

	// A new burst starts from 5 ms again.
	inner.script = []error{acceptErr(syscall.EMFILE)}
	delays = nil
	if _, err := ln.Accept(); err != nil || len(delays) != 1 || delays[0] != acceptBackoffMin {
		t.Errorf("second burst: err %v, waits %v", err, delays)
	}
}

func TestRetryListenerReturnsFinalErrors(t *testing.T) {
	final := errors.New("accept tcp: some permanent failure")
	ln := newRetryListener(&scriptedListener{script: []error{final}}, zerolog.Nop())
	ln.sleep = func(time.Duration, <-chan struct{}) { t.Error("slept on a final error") }
	if _, err := ln.Accept(); !errors.Is(err, final) {
		t.Errorf("Accept = %v, want the final error", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
}

// TestRetryListenerCloseEndsBackoff: Close during a backoff makes Accept
// return at once with the closed listener's error, which fasthttp's Serve
// takes for a shutdown.
func TestRetryListenerCloseEndsBackoff(t *testing.T) {
	inner := &scriptedListener{}
	for range 100 {
		inner.script = append(inner.script, acceptErr(syscall.EMFILE))
	}
	ln := newRetryListener(inner, zerolog.Nop())
	ln.sleep = func(_ time.Duration, closed <-chan struct{}) {
		if err := ln.Close(); err != nil {
			t.Error(err)
		}
		<-closed
	}
	_, err := ln.Accept()
	if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
		t.Errorf("Accept = %v, want the closed listener's error", err)
	}
}

// flakyListener fails its first failures Accepts with EMFILE, then
// accepts from the real listener.
type flakyListener struct {
	net.Listener
	failures chan struct{}
}

func (l *flakyListener) Accept() (net.Conn, error) {
	select {
	case <-l.failures:
		return nil, acceptErr(syscall.EMFILE)
	default:
		return l.Listener.Accept()
	}
}

// TestServeSurvivesEMFILE: the real server, over a listener whose first
// Accepts fail with EMFILE (fasthttp's Serve alone returns on the first),
// goes on serving, and logs the burst as JSON through its logger.
func TestServeSurvivesEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	failures := make(chan struct{}, 4)
	for range cap(failures) {
		failures <- struct{}{}
	}
	logs := &syncbuf.Buffer{}
	cfg := DefaultConfig()
	cfg.Logger = zerolog.New(logs)
	srv := New(cfg, &fakeExecutor{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(&flakyListener{Listener: inner, failures: failures}) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + inner.Addr().String() + "/live")
	if err != nil {
		t.Fatalf("GET /live after EMFILE: %v\nlog: %s", err, logs)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(failures) != 0 {
		t.Errorf("status %d, %d failures left", resp.StatusCode, len(failures))
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the burst was not logged: %s", logs)
	}
}
