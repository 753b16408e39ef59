package server

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
	"github.com/sandbox-exec/pyexec/internal/strictjson"
	"github.com/sandbox-exec/pyexec/runner"
)

// strictAnswer are the rules a msgpack answer must pass, as a strict
// client reads it: UTF-8 strings, no ext, string or integer keys, no key
// twice.
var strictAnswer = msgpackcheck.Options{MaxDepth: strictjson.DefaultMaxDepth + 8, UTF8: true, NoExt: true,
	StrOrIntKeys: true, UniqueKeys: true}

func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// decodeStrict reads a msgpack answer as a strict client does.
func decodeStrict(t *testing.T, body []byte) map[string]any {
	t.Helper()
	if err := msgpackcheck.CheckWith(body, strictAnswer); err != nil {
		t.Fatalf("a strict decoder refuses the answer: %v\n%q", err, trim(body))
	}
	var v map[string]any
	if err := msgpack.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The msgpack answers carry what the script printed, error text and
// results as the JSON answers do: valid UTF-8 (the same replacement
// characters); the result is the msgpack the sandbox encoded (asked for
// with runner.ResultMsgpack), bytes as bin, passed on as it is.
func TestHandlerMsgpackAnswersMatchJSON(t *testing.T) {
	printed := []byte("log \xff\xfe end\n")
	want := "log \uFFFD\uFFFD end\n"
	result, _ := msgpack.Marshal(map[string]any{"u64max": uint64(math.MaxUint64), "bin": []byte{0, 0xff}})
	body := func(fields map[string]any) []byte { b, _ := msgpack.Marshal(fields); return b }
	jsonBody := func(fields map[string]any) []byte { b, _ := json.Marshal(fields); return b }

	t.Run("success", func(t *testing.T) {
		exec := &fakeExecutor{out: runner.Output{Result: result, Stdout: printed, Stderr: printed}}
		c := startServer(t, Config{}, exec)
		fields := map[string]any{"script": "x"}
		got := decodeStrict(t, post(t, c, "application/msgpack", body(fields)).body)
		if calls := exec.calls(); calls[0].ResultFormat != runner.ResultMsgpack {
			t.Errorf("a msgpack request asked for result format %v", calls[0].ResultFormat)
		}
		exec.out.Result = []byte(`1`)
		var viaJSON map[string]any
		if err := json.Unmarshal(post(t, c, "application/json", jsonBody(fields)).body, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if calls := exec.calls(); calls[1].ResultFormat != runner.ResultJSON {
			t.Errorf("a JSON request asked for result format %v", calls[1].ResultFormat)
		}
		for _, key := range []string{"stdout", "stderr"} {
			if got[key] != want || viaJSON[key] != want {
				t.Errorf("%s: msgpack %q, JSON %q, want %q", key, got[key], viaJSON[key], want)
			}
		}
		res := got["result"].(map[string]any)
		if res["u64max"] != uint64(math.MaxUint64) || !bytes.Equal(res["bin"].([]byte), []byte{0, 0xff}) {
			t.Errorf("result %#v", res)
		}
	})
	t.Run("batch", func(t *testing.T) {
		items := []runner.ItemOutput{{Result: []byte{0xc0}, Stdout: printed}, {Result: []byte{0xc4, 1, 7}},
			{Err: &runner.ScriptError{Kind: runner.KindScriptError, Message: "bad \xff", Traceback: "tb \xff"}, Stderr: printed}}
		c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Items: items, Stdout: printed}})
		got := decodeStrict(t, post(t, c, "application/msgpack", body(map[string]any{"script": "x", "inputs": []any{1, 2, 3}})).body)
		results := got["results"].([]any)
		first, second, third := results[0].(map[string]any), results[1].(map[string]any), results[2].(map[string]any)
		if got["stdout"] != want || first["stdout"] != want || third["stderr"] != want {
			t.Errorf("output %q %q %q", got["stdout"], first["stdout"], third["stderr"])
		}
		// A None result is there, as in JSON, not left out.
		if r, ok := first["result"]; !ok || r != nil {
			t.Errorf("first result %#v (present %v)", r, ok)
		}
		if r, _ := second["result"].([]byte); !bytes.Equal(r, []byte{7}) {
			t.Errorf("second result %#v, want bin 07", second["result"])
		}
		e := third["error"].(map[string]any)
		if e["message"] != "bad \uFFFD" || e["traceback"] != "tb \uFFFD" {
			t.Errorf("error %#v", e)
		}
	})
	t.Run("error", func(t *testing.T) {
		c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Stdout: printed, Stderr: printed},
			err: &runner.ScriptError{Kind: runner.KindScriptError, Message: "m \xff", Traceback: "t \xff"}})
		got := decodeStrict(t, post(t, c, "application/msgpack", body(map[string]any{"script": "x"})).body)
		e := got["error"].(map[string]any)
		if got["stdout"] != want || got["stderr"] != want || e["message"] != "m \uFFFD" || e["traceback"] != "t \uFFFD" {
			t.Errorf("answer %#v", got)
		}
	})
}

// A msgpack answer's numbers are in their smallest form: the usage and
// timing of an error answer as well as a result's envelope.
func TestHandlerMsgpackIntsAreCompact(t *testing.T) {
	c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Result: []byte{0xc0}}})
	b, _ := msgpack.Marshal(map[string]any{"script": "x"})
	r := post(t, c, "application/msgpack", b)
	var answer struct {
		Usage map[string]any `msgpack:"usage"`
	}
	if err := msgpack.Unmarshal(r.body, &answer); err != nil || r.status != 200 {
		t.Fatalf("status %d: %v", r.status, err)
	}
	if n, ok := answer.Usage["max_rss_kb"].(int8); !ok || n != 0 {
		t.Errorf("max_rss_kb %#v, want a one-byte 0", answer.Usage["max_rss_kb"])
	}
}
