package server

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// blockingExecutor holds every execution until release is closed, telling
// started each time one begins.
type blockingExecutor struct {
	started chan struct{}
	release chan struct{}
}

var _ Executor = (*blockingExecutor)(nil)

func (b *blockingExecutor) Execute(ctx context.Context, _ runner.Request) (runner.Output, pool.Timing, error) {
	b.started <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return runner.Output{Result: []byte(`1`)}, pool.Timing{}, nil
}

func (b *blockingExecutor) Ready() bool       { return true }
func (b *blockingExecutor) Stats() pool.Stats { return pool.Stats{} }

// bodyOf returns a request body of exactly n bytes.
func bodyOf(n int) []byte {
	head := `{"script": "def main(): return 1", "input": "`
	return []byte(head + strings.Repeat("a", n-len(head)-2) + `"}`)
}

// TestBodyBudget: while one request holds the whole budget of body bytes
// in flight, another waits for it half its read timeout and is 503
// overloaded, retryable; once the first is answered, the budget is free
// again.
func TestBodyBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 64 << 10
	cfg.MaxBodyBytesInFlight = 64 << 10
	cfg.ReadTimeout = 2 * time.Second
	exec := &blockingExecutor{started: make(chan struct{}, 2), release: make(chan struct{})}
	c := startServer(t, cfg, exec)

	first := make(chan response, 1)
	go func() { first <- post(t, c, "application/json", bodyOf(48<<10)) }()
	<-exec.started // the first holds 48 KiB of 64 until it is answered

	start := time.Now()
	r := post(t, c, "application/json", bodyOf(32<<10))
	errObj := checkErrorBody(t, r, http.StatusServiceUnavailable, TypeOverloaded)
	if msg := errorMessage(t, errObj); !strings.Contains(msg, "request bodies") {
		t.Errorf("message %q", msg)
	}
	if waited := time.Since(start); waited < cfg.ReadTimeout/2 || waited > cfg.ReadTimeout {
		t.Errorf("refused after %v, want a wait of half the read timeout %v", waited, cfg.ReadTimeout)
	}

	close(exec.release)
	if r := <-first; r.status != http.StatusOK {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	if r := post(t, c, "application/json", bodyOf(64<<10)); r.status != http.StatusOK {
		t.Errorf("after the budget was given back: %d %s", r.status, r.body)
	}
}

// TestBodyCapsWhenStreamed: fasthttp streams bodies to the handler and
// checks no cap itself, so the handler refuses a declared length over
// --max-body-bytes before reading it and a chunked body once it passes
// the cap, and reads bodies within it, chunked or not.
func TestBodyCapsWhenStreamed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 4096
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`1`)}}
	c := startServer(t, cfg, exec)
	cases := []struct {
		name    string
		body    []byte
		chunked bool
		status  int
	}{
		{"declared, within", bodyOf(4096), false, http.StatusOK},
		{"declared, over", bodyOf(4097), false, http.StatusRequestEntityTooLarge},
		{"chunked, within", bodyOf(4096), true, http.StatusOK},
		{"chunked, over", bodyOf(64 << 10), true, http.StatusRequestEntityTooLarge},
		// fasthttp would read a multipart form of any length itself; the
		// handler refuses its type before reading a byte of it.
		{"multipart, over", bodyOf(64 << 10), false, http.StatusUnsupportedMediaType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			contentType := "application/json"
			if strings.HasPrefix(tc.name, "multipart") {
				contentType = "multipart/form-data; boundary=xyz"
			}
			var r response
			if tc.chunked {
				r = postChunked(t, c, contentType, tc.body)
			} else {
				r = post(t, c, contentType, tc.body)
			}
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}
}

// TestChunkedBodyKeepsOnlyItsSize: a chunked body takes the whole cap
// from the budget while it is read (its length is unknown), then keeps
// only its own size while its request waits and runs: a second request
// that fits beside it is not refused.
func TestChunkedBodyKeepsOnlyItsSize(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 64 << 10
	cfg.MaxBodyBytesInFlight = 96 << 10
	cfg.ReadTimeout = 2 * time.Second
	exec := &blockingExecutor{started: make(chan struct{}, 2), release: make(chan struct{})}
	c := startServer(t, cfg, exec)

	first := make(chan response, 1)
	go func() { first <- postChunked(t, c, "application/json", bodyOf(1024)) }()
	<-exec.started // the chunked request is running, its 1 KiB body held

	// 48 KiB fit beside 1 KiB in 96, not beside the whole 64 KiB cap.
	go func() {
		<-exec.started
		close(exec.release)
	}()
	start := time.Now()
	if r := post(t, c, "application/json", bodyOf(48<<10)); r.status != http.StatusOK {
		t.Errorf("a request that fits beside a small chunked body: %d %s", r.status, r.body)
	}
	if waited := time.Since(start); waited >= cfg.ReadTimeout/2 {
		t.Errorf("it waited %v for budget", waited)
	}
	if r := <-first; r.status != http.StatusOK {
		t.Errorf("chunked request: %d %s", r.status, r.body)
	}
}

// TestExpectContinue: a client that asks before sending its body is told
// 401 without the token and 413 over the cap at once, and 100 Continue
// otherwise, after which its body is read and answered.
func TestExpectContinue(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 4096
	cfg.AuthToken = "t0ken"
	c := startServer(t, cfg, &fakeExecutor{out: runner.Output{Result: []byte(`1`)}})
	body := bodyOf(1024)
	for _, tc := range []struct {
		name, auth  string
		length      int
		want        string
		contentType string
	}{
		{"no token", "", len(body), "HTTP/1.1 401", ""},
		{"over the cap", "Bearer t0ken", 1 << 30, "HTTP/1.1 413", ""},
		{"a type neither JSON nor msgpack", "Bearer t0ken", len(body), "HTTP/1.1 415", "application/xml"},
		{"within", "Bearer t0ken", len(body), "HTTP/1.1 100 Continue", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := c.Dial("")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			contentType := cmp.Or(tc.contentType, "application/json")
			head := fmt.Sprintf("POST /execute HTTP/1.1\r\nHost: pyexec\r\nContent-Type: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n", contentType, tc.length)
			if tc.auth != "" {
				head += "Authorization: " + tc.auth + "\r\n"
			}
			if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
				t.Fatal(err)
			}
			reader := bufio.NewReader(conn)
			status, err := reader.ReadString('\n')
			if err != nil || !strings.HasPrefix(status, tc.want) {
				t.Fatalf("first answer %q (%v), want %q before the body is sent", status, err, tc.want)
			}
			if tc.want != "HTTP/1.1 100 Continue" {
				return
			}
			if _, err := conn.Write(body); err != nil {
				t.Fatal(err)
			}
			for {
				line, err := reader.ReadString('\n')
				if err != nil {
					t.Fatalf("after the body: %v", err)
				}
				if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.HasPrefix(line, "HTTP/1.1 100") {
					if !strings.HasPrefix(line, "HTTP/1.1 200") {
						t.Errorf("after the body: %q", line)
					}
					return
				}
			}
		})
	}
}
