package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestStdin: "stdin" is what input() and sys.stdin read, in a single run
// and in every input of a batch (each from its start); without it a read
// fails with an EOFError that says no stdin was given.
func TestStdin(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	const reads = "import sys\ndef main(x=None):\n    return [x, input(), sys.stdin.read()]\n"
	var got []any
	s.mustSucceed(t, reads, map[string]any{"stdin": "first\nrest\né\n"}, &got)
	if want := []any{nil, "first", "rest\né\n"}; !equalJSON(got, want) {
		t.Errorf("single run read %v, want %v", got, want)
	}

	answer := s.rawExecuteBody(t, map[string]any{"script": reads, "stdin": "line\n", "inputs": []any{1, 2}})
	var batch struct {
		Results []struct {
			Result []any `json:"result"`
		} `json:"results"`
	}
	if err := json.Unmarshal(answer, &batch); err != nil || len(batch.Results) != 2 {
		t.Fatalf("batch: %v: %s", err, answer)
	}
	for i, item := range batch.Results {
		if want := []any{float64(i + 1), "line", ""}; !equalJSON(item.Result, want) {
			t.Errorf("input %d read %v, want %v", i, item.Result, want)
		}
	}

	failed := s.mustFail(t, reads, nil, "script_error", http.StatusUnprocessableEntity)
	if !strings.Contains(failed.Error.Message, "EOFError: no stdin was given") || !strings.Contains(failed.Error.Message, `"stdin"`) {
		t.Errorf("without stdin: %q", failed.Error.Message)
	}

	status, raw := s.postMsgpack(t, map[string]any{"script": reads, "stdin": "m\n"})
	inGo, _ := readStrictly(t, raw)
	if res, _ := inGo["result"].([]any); status != 200 || len(res) != 3 || res[1] != "m" {
		t.Errorf("msgpack stdin: status %d, %v", status, inGo)
	}
	s.mustFail(t, reads, map[string]any{"stdin": 5}, "invalid_request", http.StatusBadRequest)
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestContentTypes: application/vnd.msgpack is msgpack, answered under
// the same type; no Content-Type,
// and curl's -d default, are JSON; any other type is 415
// unsupported_media_type, answered in JSON.
func TestContentTypes(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	const script = "def main():\n    return 'ok'\n"
	body, _ := msgpack.Marshal(map[string]any{"script": script})
	resp, err := http.Post(s.url+"/execute", "application/vnd.msgpack", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var answer map[string]any
	if err := msgpack.Unmarshal(raw, &answer); err != nil || resp.StatusCode != 200 || answer["result"] != "ok" ||
		resp.Header.Get("Content-Type") != "application/vnd.msgpack" {
		t.Errorf("vnd.msgpack: status %d, %v, %q", resp.StatusCode, err, raw)
	}

	jsonBody := []byte(`{"script": "def main():\n    return 'ok'\n"}`)
	for _, ct := range []string{"", "application/x-www-form-urlencoded", "application/json; charset=utf-8"} {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(jsonBody))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(raw, []byte(`"result":"ok"`)) {
			t.Errorf("Content-Type %q: status %d, %s", ct, resp.StatusCode, raw)
		}
	}

	for _, ct := range []string{"application/xml", "text/plain", "multipart/form-data; boundary=x"} {
		r := s.post(t, ct, jsonBody)
		if r.Status != http.StatusUnsupportedMediaType || r.Error == nil || r.Error.Type != "unsupported_media_type" ||
			!strings.Contains(r.Error.Message, "application/json") {
			t.Errorf("Content-Type %q: status %d, error %+v", ct, r.Status, r.Error)
		}
	}
}

// TestBytesAreBinInMsgpack: bytes a script returns are bin in a msgpack
// answer (Python's msgpack reads bytes), base64 text in a JSON one; in a
// batch too.
func TestBytesAreBinInMsgpack(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	const script = "def main(x=0):\n    return {'raw': b'\\x00\\xff', 'nested': [bytearray(b'hi')], 'x': x}\n"
	status, raw := s.postMsgpack(t, map[string]any{"script": script})
	inGo, inPython := readStrictly(t, raw)
	res, _ := inGo["result"].(map[string]any)
	nested, _ := res["nested"].([]any)
	if got, _ := res["raw"].([]byte); status != 200 || !bytes.Equal(got, []byte{0, 0xff}) || len(nested) != 1 ||
		!bytes.Equal(nested[0].([]byte), []byte("hi")) {
		t.Errorf("Go reads (status %d) %#v", status, inGo["result"])
	}
	if py, _ := json.Marshal(inPython["result"]); string(py) != `{"nested":[{"bin":"6869"}],"raw":{"bin":"00ff"},"x":0}` {
		t.Errorf("Python reads %s", py)
	}
	var viaJSON map[string]any
	s.mustSucceed(t, script, nil, &viaJSON)
	if viaJSON["raw"] != "AP8=" {
		t.Errorf("JSON answer %v, want base64", viaJSON)
	}

	status, raw = s.postMsgpack(t, map[string]any{"script": script, "inputs": []any{1, 2}})
	inGo, _ = readStrictly(t, raw)
	results, _ := inGo["results"].([]any)
	if status != 200 || len(results) != 2 {
		t.Fatalf("batch: status %d, %v", status, inGo)
	}
	for i, item := range results {
		res, _ := item.(map[string]any)["result"].(map[string]any)
		if got, _ := res["raw"].([]byte); !bytes.Equal(got, []byte{0, 0xff}) {
			t.Errorf("batch item %d: %#v", i, item)
		}
	}
}

// TestNulByteIsASyntaxError: a script holding a NUL byte is 400
// syntax_error with its location, answered before any sandbox is spent.
func TestNulByteIsASyntaxError(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	executed := func() int64 {
		resp, err := http.Get(s.url + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h struct{ Pool struct{ Executed int64 } }
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		return h.Pool.Executed
	}
	before := executed()
	r := s.mustFail(t, "def main():\n    return 'a\x00b'\n", nil, "syntax_error", http.StatusBadRequest)
	if r.Error.Line != 2 || r.Error.Offset != 14 || !strings.Contains(r.Error.Message, "null bytes") {
		t.Errorf("error %+v", r.Error)
	}
	status, raw := s.postMsgpack(t, map[string]any{"script": "\x00"})
	inGo, _ := readStrictly(t, raw)
	if e, _ := inGo["error"].(map[string]any); status != 400 || e["type"] != "syntax_error" {
		t.Errorf("msgpack: status %d, %v", status, inGo)
	}
	if after := executed(); after != before {
		t.Errorf("%d sandboxes were spent on scripts with a NUL byte", after-before)
	}
}
