package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// pythonUnpack decodes a msgpack answer as a Python client does, with the
// python3-msgpack the sandboxes use (raw=False, its default: every str
// must be UTF-8), and returns it as JSON (integers exact, floats by repr;
// -0.0 and the like survive; bin, which Python reads as bytes, as
// {"bin": "<hex>"}).
const pythonUnpack = `import json, sys, msgpack
v = msgpack.unpackb(sys.stdin.buffer.read(), raw=False)
json.dump(v, sys.stdout, default=lambda b: {"bin": b.hex()})
`

// postMsgpack sends fields in msgpack and returns the status and the raw
// answer, after checking it is msgpack.
func (s *testServer) postMsgpack(t *testing.T, fields map[string]any) (int, []byte) {
	t.Helper()
	body, err := msgpack.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(s.url+"/execute", "application/msgpack", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/msgpack" {
		t.Fatalf("content type %q: %q", ct, raw)
	}
	return resp.StatusCode, raw
}

// readStrictly decodes a msgpack answer twice: with a strict Go reader
// (UTF-8 strings, no ext, string keys, no key twice) and with Python's
// msgpack; it returns the Go reading and the Python reading as JSON.
func readStrictly(t *testing.T, raw []byte) (map[string]any, map[string]any) {
	t.Helper()
	err := msgpackcheck.CheckWith(raw, msgpackcheck.Options{MaxDepth: 64, UTF8: true, NoExt: true,
		StrOrIntKeys: true, UniqueKeys: true})
	if err != nil {
		t.Fatalf("a strict msgpack reader refuses the answer: %v", err)
	}
	var inGo map[string]any
	if err := msgpack.Unmarshal(raw, &inGo); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", "-c", pythonUnpack)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python3's msgpack cannot read the answer: %v\n%s", err, stderr)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var inPython map[string]any
	if err := dec.Decode(&inPython); err != nil {
		t.Fatal(err)
	}
	return inGo, inPython
}

// TestMsgpackAnswers: through the whole path, a msgpack answer carries
// what a JSON answer carries, readable by a strict reader and by Python's
// msgpack: bytes a script printed that are not UTF-8 come as U+FFFD (as
// in JSON) in success, batch and error answers; integers are exact up to
// uint64 and beyond as their text; numbers are compact.
func TestMsgpackAnswers(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	const printsBadBytes = "import os, sys\n" +
		"def main(x=None):\n" +
		"    os.write(1, b'out \\xff\\xfe end\\n')\n" +
		"    sys.stderr.buffer.write(b'err \\xff\\n'); sys.stderr.flush()\n"
	wantOut, wantErr := "out \uFFFD\uFFFD end\n", "err \uFFFD\n"

	t.Run("bad bytes in a success", func(t *testing.T) {
		fields := map[string]any{"script": printsBadBytes + "    return 1\n"}
		status, raw := s.postMsgpack(t, fields)
		inGo, inPython := readStrictly(t, raw)
		viaJSON := s.execute(t, fields["script"].(string), nil)
		if status != 200 || viaJSON.Stdout != wantOut || viaJSON.Stderr != wantErr {
			t.Fatalf("status %d; JSON stdout %q stderr %q", status, viaJSON.Stdout, viaJSON.Stderr)
		}
		for _, got := range []map[string]any{inGo, inPython} {
			if got["stdout"] != wantOut || got["stderr"] != wantErr {
				t.Errorf("stdout %q stderr %q, want %q %q (as JSON)", got["stdout"], got["stderr"], wantOut, wantErr)
			}
		}
	})
	t.Run("bad bytes in a failure", func(t *testing.T) {
		status, raw := s.postMsgpack(t, map[string]any{"script": printsBadBytes + "    raise ValueError('boom')\n"})
		inGo, inPython := readStrictly(t, raw)
		if status != 422 {
			t.Errorf("status %d", status)
		}
		for _, got := range []map[string]any{inGo, inPython} {
			e, _ := got["error"].(map[string]any)
			if got["stdout"] != wantOut || got["stderr"] != wantErr || e["type"] != "script_error" {
				t.Errorf("answer %v", got)
			}
		}
	})
	t.Run("bad bytes in a batch", func(t *testing.T) {
		// What os.write puts on descriptor 1 lands in the batch's own
		// stdout; each input's print in its own (text, so UTF-8 already).
		script := "import os\ndef main(x):\n    os.write(1, b'batch \\xff\\n')\n    print('item', x)\n    return 1 // x\n"
		status, raw := s.postMsgpack(t, map[string]any{"script": script, "inputs": []any{1, 0}})
		inGo, inPython := readStrictly(t, raw)
		if status != 200 {
			t.Errorf("status %d", status)
		}
		for _, got := range []map[string]any{inGo, inPython} {
			results, _ := got["results"].([]any)
			if len(results) != 2 || got["stdout"] != strings.Repeat("batch \uFFFD\n", 2) {
				t.Fatalf("answer %v", got)
			}
			if e, _ := results[1].(map[string]any)["error"].(map[string]any); e["type"] != "script_error" {
				t.Errorf("second result %v", results[1])
			}
		}
	})
	t.Run("integers exact", func(t *testing.T) {
		script := "def main():\n    return {'u64max': 2**64-1, 'i64min': -2**63, 'neg': -2**63-1, 'big': 10**400, 'f': 1.5, 'z': 0}\n"
		_, raw := s.postMsgpack(t, map[string]any{"script": script})
		inGo, inPython := readStrictly(t, raw)
		big := "1" + strings.Repeat("0", 400)
		res := inGo["result"].(map[string]any)
		if res["u64max"] != uint64(math.MaxUint64) || res["i64min"] != int64(math.MinInt64) ||
			res["neg"] != "-9223372036854775809" || res["big"] != big || res["f"] != 1.5 || res["z"] != int8(0) {
			t.Errorf("Go reads %#v", res)
		}
		py := inPython["result"].(map[string]any)
		if py["u64max"] != json.Number("18446744073709551615") || py["neg"] != "-9223372036854775809" || py["big"] != big {
			t.Errorf("Python reads %#v", py)
		}
	})
	t.Run("a zero is one byte", func(t *testing.T) {
		// Before, each was a 9-byte int64: 900 kB for a 200 kB JSON result.
		status, raw := s.postMsgpack(t, map[string]any{"script": "def main():\n    return [0] * 100_000\n"})
		if status != 200 || len(raw) > 100_300 {
			t.Errorf("status %d, %d bytes", status, len(raw))
		}
	})
}

// TestHalfClosedClientGets499: a client that half-closes its connection
// after the request (shutdown(SHUT_WR)) cannot be told from one that hung
// up, so its script is killed; it reads a 499 client_gone answer. Half-
// closing is not supported, and the README and OpenAPI say so.
func TestHalfClosedClientGets499(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	status, _, body := halfCloseExecute(t, s.url, "", "import time\ndef main():\n    print('working')\n    time.sleep(5)\n    return 'finished'\n")
	var answer struct {
		Error  struct{ Type string }
		Stdout string
	}
	if err := json.Unmarshal(body, &answer); err != nil || status != 499 || answer.Error.Type != "client_gone" {
		t.Errorf("status %d, body %s (%v)", status, body, err)
	}
}

// halfCloseExecute sends script to /execute (with token, if any) over a
// connection whose write side it then shuts, and reads the answer.
func halfCloseExecute(t *testing.T, url, token, script string) (int, http.Header, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body, _ := json.Marshal(map[string]any{"script": script})
	req, _ := http.NewRequest(http.MethodPost, url+"/execute", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}
