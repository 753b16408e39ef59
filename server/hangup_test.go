package server

import (
	"context"
	"errors"
	"net"
	"runtime/pprof"
	"testing"
	"time"
)

// TestHangupWatcher: one watcher, many connections in flight: the requests
// whose callers hang up are cancelled with errClientGone, the others are
// not, and the watches cost no OS thread each (a goroutine per watch
// blocked in poll(2) held one each).
func TestHangupWatcher(t *testing.T) {
	w, err := newHangupWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	const conns = 150
	threadsBefore := pprof.Lookup("threadcreate").Count()
	type inFlight struct {
		client net.Conn
		ctx    context.Context
		stop   func()
	}
	var requests []inFlight
	for i := 0; i < conns; i++ {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		defer client.Close()
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		requests = append(requests, inFlight{client, ctx, w.watch(server, cancel)})
	}
	// Every third caller hangs up.
	for i := 0; i < conns; i += 3 {
		requests[i].client.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < conns; i += 3 {
		select {
		case <-requests[i].ctx.Done():
			if !errors.Is(context.Cause(requests[i].ctx), errClientGone) {
				t.Errorf("request %d cancelled with %v", i, context.Cause(requests[i].ctx))
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("request %d: its caller hung up, but it was not cancelled", i)
		}
	}
	// A hang-up after all the others, seen by the watcher: any event of a
	// caller still connected would have come before it.
	seenAfter(t, w, ln)
	for i, r := range requests {
		if i%3 != 0 && r.ctx.Err() != nil {
			t.Errorf("request %d was cancelled, but its caller is still connected", i)
		}
	}
	if grown := pprof.Lookup("threadcreate").Count() - threadsBefore; grown > conns/5 {
		t.Errorf("%d OS threads were created for %d watches", grown, conns)
	}
	// Stop is safe after the watch fired and after it did not, and twice.
	for _, r := range requests {
		r.stop()
		r.stop()
	}
	// A stopped watch never fires: the callers that hang up now cancel
	// nothing.
	for i := 1; i < conns; i += 3 {
		requests[i].client.Close()
	}
	seenAfter(t, w, ln)
	for i := 1; i < conns; i += 3 {
		if requests[i].ctx.Err() != nil {
			t.Errorf("request %d was cancelled after its watch stopped", i)
		}
	}
}

// TestHangupWatcherClose: watches still registered when the watcher closes
// stop without harm, and a watch after the close does nothing.
func TestHangupWatcherClose(t *testing.T) {
	w, err := newHangupWatcher()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stop := w.watch(server, cancel)
	w.close()
	w.close()
	stop()
	w.watch(server, cancel)()
	client.Close()
	// close waited for the watcher's goroutine: nothing can cancel now.
	select {
	case <-w.finished:
	default:
		t.Fatal("the watcher's goroutine still runs after close")
	}
	if ctx.Err() != nil {
		t.Errorf("cancelled after the watcher closed: %v", context.Cause(ctx))
	}
	// A server whose watcher could not be made watches nothing.
	var none *hangupWatcher
	none.watch(server, cancel)()
	none.close()
}

// seenAfter makes one more connection to ln, watches it with w, hangs it
// up and waits until w cancels it. epoll reports ready descriptors in the
// order they became ready, so every hang-up before this one has been
// handled when it returns, and a watch that did not fire by then was not
// going to for what came before.
func seenAfter(t *testing.T, w *hangupWatcher, ln net.Listener) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stop := w.watch(server, cancel)
	defer stop()
	client.Close()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher never saw the last hang-up")
	}
}
