package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// frameHelper lets a script write frames of its own on the sandbox's
// channel (fd 4), as a hostile script can.
const frameHelper = `import os, struct, sys, time, msgpack
def frame(message):
    payload = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload
def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(4, view):]
`

// TestForgedFrames: whatever a script writes on its channel, the server
// answers with a 422 of a defined type, never a 500, never retryable, and
// never a verdict (crash, timeout) the sandbox did not earn.
func TestForgedFrames(t *testing.T) {
	for _, mode := range []string{"fork", "exec"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, "", "--mode", mode, "--warm", "2", "--max-result-bytes", "1048576", "--acquire-timeout", "60s")
			testForgedFrames(t, s)
		})
	}
}

func testForgedFrames(t *testing.T, s *testServer) {
	cases := []struct {
		name, body, wantType string
	}{
		{"result that is not UTF-8", `send(frame({"type": "result", "result": b'"\xff\xfe"'}))`, "protocol_error"},
		{"result with a lone surrogate", `send(frame({"type": "result", "result": b'"\\ud800"'}))`, "protocol_error"},
		{"result that is not JSON", `send(frame({"type": "result", "result": b'{"a": '}))`, "protocol_error"},
		{"result NaN", `send(frame({"type": "result", "result": b'[NaN]'}))`, "protocol_error"},
		{"result with a key twice", `send(frame({"type": "result", "result": b'{"approved":false,"approved":true}', "files": []}))`, "protocol_error"},
		{"result with an extra key", `send(frame({"type": "result", "result": b'1', "max_result_bytes": 0}))`, "protocol_error"},
		{"error of an unknown kind", `send(frame({"type": "error", "kind": "internal", "message": "x", "traceback": "", "line": 0, "offset": 0}))`, "protocol_error"},
		{"forged crash verdict", `send(frame({"type": "error", "kind": "sandbox_crashed", "message": "x", "traceback": "", "line": 0, "offset": 0}))`, "protocol_error"},
		{"forged timeout verdict", `send(frame({"type": "error", "kind": "timeout", "message": "x", "traceback": "", "line": 0, "offset": 0}))`, "protocol_error"},
		{"forged supervisor exit report", `send(frame({"type": "exit", "id": 1, "status": 9, "cpu_us": 10**9, "max_rss_kb": 0}))`, "protocol_error"},
		{"error message of 250 KB", `send(frame({"type": "error", "kind": "script_error", "message": "m" * 250000, "traceback": "", "line": 0, "offset": 0}))`, "protocol_error"},
		{"error message that is not UTF-8", `raw = msgpack.packb({"type": "error", "kind": "script_error", "message": b"\xff\xfe", "traceback": "", "line": 0, "offset": 0}, use_bin_type=False); send(struct.pack(">I", len(raw)) + raw)`, "protocol_error"},
		{"garbage", `send(b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1")`, "protocol_error"},
		{"a batch's reply to a single script", `send(frame({"type": "results", "items": [None] * 100000, "files": []}))`, "protocol_error"},
		{"header over the result cap", `send(struct.pack(">I", 1 << 30))`, "output_limit"},
		{"a header that swallows the rest, then exit", `send(struct.pack(">I", 100)); os._exit(0)`, "script_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			script := frameHelper + "def main():\n    print('before', flush=True)\n    " + tc.body + "\n    time.sleep(5)\n"
			r := s.execute(t, script, map[string]any{"timeout_ms": 10000})
			if r.Error == nil || r.Error.Type != tc.wantType || r.Status != http.StatusUnprocessableEntity || r.Error.Retryable {
				t.Fatalf("status %d error %+v, want a 422 %s, not retryable", r.Status, r.Error, tc.wantType)
			}
			if r.Stdout != "before\n" {
				t.Errorf("stdout %q, want what the script printed", r.Stdout)
			}
			if len(r.Error.Message) > 2048 {
				t.Errorf("error message of %d bytes", len(r.Error.Message))
			}
		})
	}

	t.Run("the result cap is the server's, whatever the script changes", func(t *testing.T) {
		r := s.execute(t, `import sys, gc
def main():
    # Look for any cap the script could lower in what it can reach.
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            for key in ("max_result_bytes", "limits"):
                if key in obj:
                    obj[key] = 0
    return "x" * (2 << 20)
`, nil)
		if r.Error == nil || r.Error.Type != "output_limit" {
			t.Fatalf("status %d error %+v, want output_limit for a result over the 1 MiB cap", r.Status, r.Error)
		}
	})

	t.Run("streaming frames costs the server one frame", func(t *testing.T) {
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		start := time.Now()
		r := s.execute(t, frameHelper+`def main():
    junk = frame({"type": "result", "result": b"[" + b"1," * 400000 + b"]"})
    deadline = time.time() + 4
    while time.time() < deadline:
        send(junk)
`, map[string]any{"timeout_ms": 10000})
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		if r.Error == nil || r.Error.Type != "protocol_error" {
			t.Fatalf("status %d error %+v, want protocol_error", r.Status, r.Error)
		}
		cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
		if cpu > 2*time.Second {
			t.Errorf("the server used %v of CPU in %v answering a streaming script", cpu, time.Since(start))
		}
	})

	t.Run("the server log stays bounded and the server healthy", func(t *testing.T) {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			if len(line) > 8192 {
				t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
			}
		}
		s.mustSucceed(t, helloScript, nil, nil)
	})
}

// TestResultWithAKeyTwice: an object with a key twice has no one meaning
// (JSON parsers keep the first, the last, or refuse it; the msgpack answer
// kept the last), so no answer carries one. A forged result frame with a
// key twice is a protocol_error over JSON and msgpack, in a batch too; a
// dict whose keys become one JSON key (1 and "1") is
// result_not_serializable, not a value silently dropped. What the script
// printed comes back either way.
func TestResultWithAKeyTwice(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	forged := frameHelper + `def main(x=None):
    print('before', flush=True)
    send(frame(FRAME))
    os._exit(0)
`
	single := strings.Replace(forged, "FRAME", `{"type": "result", "result": b'{"approved":false,"approved":true}', "files": []}`, 1)
	// A batch's items travel one frame each (the sandbox has sent
	// "started" before main runs): the second forged item has the key
	// twice, and the script ends before its real item is sent.
	batch := strings.Replace(forged, "send(frame(FRAME))", `for i, r in enumerate((b'1', b'{"a":1,"\\u0061":2}')):
        send(frame({"type": "item", "index": i, "result": r, "kind": "", "message": "", "traceback": "", "line": 0, "offset": 0}))`, 1)

	t.Run("forged result over JSON", func(t *testing.T) {
		r := s.mustFail(t, single, nil, "protocol_error", http.StatusUnprocessableEntity)
		if !strings.Contains(r.Error.Message, `duplicate key "approved"`) || r.Stdout != "before\n" {
			t.Errorf("message %q, stdout %q; want the duplicate key named and what the script printed", r.Error.Message, r.Stdout)
		}
	})
	t.Run("forged result over msgpack", func(t *testing.T) {
		// A msgpack caller's result is msgpack from the sandbox, passed on
		// as it is once the runner finds it strict: a map with a key twice
		// never reaches the caller.
		forgedMsgpack := strings.Replace(forged, "FRAME",
			`{"type": "result", "result": b'\x82\xa8approved\xc2\xa8approved\xc3', "files": []}`, 1)
		status, raw := s.postMsgpack(t, map[string]any{"script": forgedMsgpack})
		var answer struct {
			Result any    `msgpack:"result"`
			Stdout string `msgpack:"stdout"`
			Error  struct {
				Type    string `msgpack:"type"`
				Message string `msgpack:"message"`
			} `msgpack:"error"`
		}
		if err := msgpack.Unmarshal(raw, &answer); err != nil {
			t.Fatalf("answer %q: %v", raw, err)
		}
		if status != http.StatusUnprocessableEntity || answer.Error.Type != "protocol_error" || answer.Result != nil || answer.Stdout != "before\n" ||
			!strings.Contains(answer.Error.Message, `"approved"`) || !strings.Contains(answer.Error.Message, "appears twice") {
			t.Errorf("status %d, answer %+v; want a 422 protocol_error naming the key, no result, what the script printed", status, answer)
		}
	})
	t.Run("forged batch result", func(t *testing.T) {
		r := s.mustFail(t, batch, map[string]any{"inputs": []int{1, 2}}, "protocol_error", http.StatusUnprocessableEntity)
		if !strings.Contains(r.Error.Message, `duplicate key "a"`) {
			t.Errorf("message %q, want the duplicate key named", r.Error.Message)
		}
	})
	t.Run("dict keys that become one JSON key", func(t *testing.T) {
		r := s.mustFail(t, "def main():\n    print('before')\n    return {'ok': {1: 'int-key', '1': 'str-key'}}\n", nil,
			"result_not_serializable", http.StatusUnprocessableEntity)
		if !strings.Contains(r.Error.Message, `result['ok']: dict keys 1 and '1' both become the JSON key "1"`) || r.Stdout != "before\n" {
			t.Errorf("message %q, stdout %q; want the colliding keys named and what the script printed", r.Error.Message, r.Stdout)
		}
	})
	t.Run("the server stays healthy", func(t *testing.T) {
		s.mustSucceed(t, helloScript, nil, nil)
	})
}
