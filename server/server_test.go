package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// fakeExecutor answers every request with out and err and records what it
// was asked to run.
type fakeExecutor struct {
	out runner.Output
	err error

	mu       sync.Mutex
	requests []runner.Request
}

var _ Executor = (*fakeExecutor)(nil)

func (f *fakeExecutor) Execute(_ context.Context, req runner.Request) (runner.Output, pool.Timing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	return f.out, pool.Timing{Queue: time.Millisecond}, f.err
}

func (f *fakeExecutor) Ready() bool       { return true }
func (f *fakeExecutor) Stats() pool.Stats { return pool.Stats{} }

func (f *fakeExecutor) calls() []runner.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]runner.Request(nil), f.requests...)
}

// startServer runs the real server from New on an in-memory listener and
// returns a client for it.
func startServer(t *testing.T, cfg Config, exec Executor) *fasthttp.Client {
	t.Helper()
	cfg.Logger = zerolog.Nop()
	srv := New(cfg, exec)
	// A real loopback listener: its socket buffers hold a whole small
	// request, as a client's would, so a 413 sent before the body is read
	// still reaches the client.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = ln.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	addr := ln.Addr().String()
	return &fasthttp.Client{Dial: func(string) (net.Conn, error) { return net.Dial("tcp", addr) }}
}

type response struct {
	status      int
	contentType string
	body        []byte
}

func post(t *testing.T, c *fasthttp.Client, contentType string, body []byte, header ...string) response {
	t.Helper()
	return send(t, c, contentType, func(req *fasthttp.Request) { req.SetBody(body) }, header...)
}

// postChunked is post with the body sent in chunked encoding (no
// Content-Length).
func postChunked(t *testing.T, c *fasthttp.Client, contentType string, body []byte) response {
	t.Helper()
	return send(t, c, contentType, func(req *fasthttp.Request) { req.SetBodyStream(bytes.NewReader(body), -1) })
}

// send posts to /execute with the body setBody puts in the request.
func send(t *testing.T, c *fasthttp.Client, contentType string, setBody func(*fasthttp.Request), header ...string) response {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://pyexec.test/execute")
	req.Header.SetMethod(http.MethodPost)
	req.Header.SetContentType(contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	setBody(req)
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("POST /execute: %v", err)
	}
	return response{status: resp.StatusCode(), contentType: string(resp.Header.ContentType()),
		body: append([]byte(nil), resp.Body()...)}
}

// checkErrorBody checks the shape of an error answer:
// {"error":{"type","message","retryable"},"stdout","stderr"} and returns
// the error object.
func checkErrorBody(t *testing.T, r response, status int, typ string) map[string]json.RawMessage {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if r.contentType != "application/json" {
		t.Errorf("content type %q", r.contentType)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &top); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	for _, key := range []string{"error", "stdout", "stderr"} {
		if _, ok := top[key]; !ok {
			t.Errorf("body %s has no %q", r.body, key)
		}
	}
	for key := range top {
		if key != "error" && key != "stdout" && key != "stderr" && key != "timing" && key != "usage" {
			t.Errorf("body %s has an unexpected %q", r.body, key)
		}
	}
	var stdout, stderr string
	if json.Unmarshal(top["stdout"], &stdout) != nil || json.Unmarshal(top["stderr"], &stderr) != nil {
		t.Errorf("stdout and stderr must be strings: %s", r.body)
	}
	var errObj map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &errObj); err != nil {
		t.Fatalf("error of %s: %v", r.body, err)
	}
	var gotType, message string
	var retryable bool
	if json.Unmarshal(errObj["type"], &gotType) != nil || gotType != typ {
		t.Errorf("error type %s, want %q", errObj["type"], typ)
	}
	if json.Unmarshal(errObj["message"], &message) != nil || message == "" {
		t.Errorf("error message %s", errObj["message"])
	}
	if err := json.Unmarshal(errObj["retryable"], &retryable); err != nil {
		t.Errorf("retryable %s: %v", errObj["retryable"], err)
	}
	return errObj
}

func errorMessage(t *testing.T, errObj map[string]json.RawMessage) string {
	t.Helper()
	var msg string
	_ = json.Unmarshal(errObj["message"], &msg)
	return msg
}

func TestHandlerSuccess(t *testing.T) {
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`{"x":[1,"<&>",null]}`), Stdout: []byte("printed\n"), Stderr: []byte("warned")}}
	c := startServer(t, DefaultConfig(), exec)
	r := post(t, c, "application/json", []byte(`{"script": "def main(x): return x", "input": {"a": [1, "<b>"]}, "timeout_ms": 2000, "memory_mb": 256}`))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var body struct {
		Result         json.RawMessage `json:"result"`
		Stdout, Stderr string
		Timing         map[string]float64
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	var result any
	if err := json.Unmarshal(body.Result, &result); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"x": []any{1.0, "<&>", nil}}
	if !jsonEqual(result, want) || body.Stdout != "printed\n" || body.Stderr != "warned" {
		t.Errorf("body %s", r.body)
	}
	if _, ok := body.Timing["total_ms"]; !ok {
		t.Errorf("no timing in %s", r.body)
	}
	calls := exec.calls()
	if len(calls) != 1 {
		t.Fatalf("%d executions", len(calls))
	}
	got := calls[0]
	if got.Script != "def main(x): return x" || string(got.Input) != `{"a":[1,"<b>"]}` || got.InputFormat != runner.InputJSON {
		t.Errorf("executed %+v (input %s)", got, got.Input)
	}
	if got.Timeout != 2*time.Second || got.MemoryBytes != 256<<20 {
		t.Errorf("limits %v, %v", got.Timeout, got.MemoryBytes)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestHandlerMsgpackInputPassedRaw(t *testing.T) {
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`[1,"a"]`)}}
	c := startServer(t, DefaultConfig(), exec)
	input := []any{[]byte{0xff, 0}, uint64(1<<64 - 1)}
	rawInput, err := msgpack.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	body := append(mp(byte(0x82), "script", "x", "input"), rawInput...)
	r := post(t, c, "application/msgpack", body)
	if r.status != http.StatusOK || r.contentType != "application/msgpack" {
		t.Fatalf("status %d %s: %q", r.status, r.contentType, r.body)
	}
	calls := exec.calls()
	if len(calls) != 1 || calls[0].InputFormat != runner.InputMsgpack || !bytes.Equal(calls[0].Input, rawInput) {
		t.Fatalf("executed %+v", calls)
	}
}

func TestHandlerRefusesBadRequests(t *testing.T) {
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`1`)}}
	c := startServer(t, DefaultConfig(), exec)
	tests := []struct {
		name, contentType string
		body              []byte
		msg               string
	}{
		{"invalid UTF-8 in script", "application/json", []byte("{\"script\": \"def main(): return '\xff'\"}"), "invalid UTF-8"},
		{"lone surrogate", "application/json", []byte(`{"script": "def main(): return '\ud800'"}`), "surrogate"},
		{"upper-case key", "application/json", []byte(`{"SCRIPT": "def main(): return 1"}`), `unknown field "SCRIPT"`},
		{"title-case key", "application/json", []byte(`{"Script": "def main(): return 1"}`), `unknown field "Script"`},
		{"duplicate key", "application/json", []byte(`{"script": "def main(): return 1", "script": "def main(): return 2"}`), `duplicate key "script"`},
		{"duplicate key in input", "application/json", []byte(`{"script": "x", "input": {"k": 1, "k": 2}}`), `duplicate key "k"`},
		{"not JSON", "application/json", []byte(`{"script":`), "not valid JSON"},
		{"msgpack invalid UTF-8", "application/msgpack", mp(byte(0x81), "script", byte(0xa1), byte(0xff)), "not valid UTF-8"},
		{"msgpack case variant", "application/msgpack", mp(byte(0x81), "Script", "x"), `unknown field "Script"`},
		{"msgpack duplicate key", "application/x-msgpack", mp(byte(0x82), "script", "x", "script", "y"), `"script"`},
		{"msgpack ext", "application/msgpack", mp(byte(0x82), "script", "x", "input", byte(0xd4), byte(1), byte(0)), "ext value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, c, tc.contentType, tc.body)
			if strings.Contains(tc.contentType, "msgpack") {
				checkMsgpackError(t, r, http.StatusBadRequest, TypeInvalidRequest, tc.msg)
				return
			}
			errObj := checkErrorBody(t, r, http.StatusBadRequest, TypeInvalidRequest)
			if msg := errorMessage(t, errObj); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not say %q", msg, tc.msg)
			}
			if string(errObj["retryable"]) != "false" {
				t.Errorf("retryable %s", errObj["retryable"])
			}
		})
	}
	if n := len(exec.calls()); n != 0 {
		t.Errorf("%d bad requests reached the executor", n)
	}
}

func checkMsgpackError(t *testing.T, r response, status int, typ, msg string) {
	t.Helper()
	if r.status != status || r.contentType != "application/msgpack" {
		t.Fatalf("status %d %s, want %d msgpack: %q", r.status, r.contentType, status, r.body)
	}
	var body struct {
		Error struct {
			Type      string `msgpack:"type"`
			Message   string `msgpack:"message"`
			Retryable bool   `msgpack:"retryable"`
		} `msgpack:"error"`
		Stdout *string `msgpack:"stdout"`
		Stderr *string `msgpack:"stderr"`
	}
	if err := msgpack.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Error.Type != typ || !strings.Contains(body.Error.Message, msg) || body.Stdout == nil || body.Stderr == nil {
		t.Errorf("body %+v, want type %s and message with %q", body, typ, msg)
	}
}

func TestHandlerScriptErrorKeepsOutput(t *testing.T) {
	exec := &fakeExecutor{
		out: runner.Output{Stdout: []byte("before"), Stderr: []byte("trace")},
		err: &runner.ScriptError{Kind: runner.KindScriptError, Message: "ValueError: no"},
	}
	c := startServer(t, DefaultConfig(), exec)
	r := post(t, c, "application/json", []byte(`{"script": "def main(): raise ValueError('no')"}`))
	errObj := checkErrorBody(t, r, http.StatusUnprocessableEntity, "script_error")
	if msg := errorMessage(t, errObj); msg != "ValueError: no" {
		t.Errorf("message %q", msg)
	}
	var body struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Stdout != "before" || body.Stderr != "trace" {
		t.Errorf("output lost: %s", r.body)
	}
}

func TestHandlerOversizeBody(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 4096
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`1`)}}
	c := startServer(t, cfg, exec)
	body := []byte(`{"script": "` + strings.Repeat("#", 8192) + `"}`)
	r := post(t, c, "application/json", body)
	errObj := checkErrorBody(t, r, http.StatusRequestEntityTooLarge, TypePayloadTooLarge)
	if msg := errorMessage(t, errObj); !strings.Contains(msg, "4096") {
		t.Errorf("message %q does not give the cap", msg)
	}
	if n := len(exec.calls()); n != 0 {
		t.Errorf("%d executions", n)
	}
}

func TestHandlerAuth(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AuthToken = "s3cret"
	exec := &fakeExecutor{out: runner.Output{Result: []byte(`1`)}}
	c := startServer(t, cfg, exec)
	body := []byte(`{"script": "def main(): return 1"}`)
	for name, header := range map[string][]string{
		"no header":    nil,
		"wrong token":  {"Authorization", "Bearer nope"},
		"not a bearer": {"Authorization", "Basic s3cret"},
		"token alone":  {"Authorization", "s3cret"},
	} {
		r := post(t, c, "application/json", body, header...)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d", name, r.status)
			continue
		}
		checkErrorBody(t, r, http.StatusUnauthorized, TypeUnauthorized)
	}
	if n := len(exec.calls()); n != 0 {
		t.Errorf("%d unauthorized executions", n)
	}
	for _, header := range []string{"Bearer s3cret", "bearer s3cret", "BEARER s3cret"} {
		r := post(t, c, "application/json", body, "Authorization", header)
		if r.status != http.StatusOK {
			t.Fatalf("%q: status %d %s (the scheme is case-insensitive)", header, r.status, r.body)
		}
	}
	if r := post(t, c, "application/json", body, "Authorization", "bearer S3CRET"); r.status != http.StatusUnauthorized {
		t.Errorf("the token matched case-insensitively: status %d", r.status)
	}
}

// A result full of "<" comes back byte for byte: no HTML escaping, which
// would make it six times larger.
func TestHandlerDoesNotEscapeHTML(t *testing.T) {
	result := `"` + strings.Repeat("<", 100000) + `"`
	exec := &fakeExecutor{out: runner.Output{Result: []byte(result), Stdout: []byte("<&>")}}
	c := startServer(t, DefaultConfig(), exec)
	r := post(t, c, "application/json", []byte(`{"script": "def main(): pass"}`))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if !bytes.Contains(r.body, []byte(result)) || !bytes.Contains(r.body, []byte(`"stdout":"<&>"`)) || len(r.body) > len(result)+200 {
		t.Errorf("body of %d bytes does not hold the result as it is", len(r.body))
	}
}
