package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

func TestDecodeJSON(t *testing.T) {
	cfg := DefaultConfig()
	tests := []struct {
		name, body string
		wantErr    bool
		wantInput  string
	}{
		{"script only", `{"script": "def main(): return 1"}`, false, ""},
		{"input object", `{"script": "x", "input": {"a": [1, 2]}}`, false, `{"a": [1, 2]}`},
		{"input null is present", `{"script": "x", "input": null}`, false, "null"},
		{"limits", `{"script": "x", "timeout_ms": 100, "memory_mb": 256}`, false, ""},
		{"not json", `{`, true, ""},
		{"array", `[]`, true, ""},
		{"missing script", `{}`, true, ""},
		{"unknown field", `{"script": "x", "extra": 1}`, true, ""},
		{"float timeout", `{"script": "x", "timeout_ms": 1.5}`, true, ""},
		{"trailing", `{"script": "x"}x`, true, ""},
		{"empty script", `{"script": ""}`, true, ""},
		{"timeout zero", `{"script": "x", "timeout_ms": 0}`, true, ""},
		{"timeout over max", `{"script": "x", "timeout_ms": 30001}`, true, ""},
		{"memory over max", `{"script": "x", "memory_mb": 1025}`, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeJSON([]byte(tc.body))
			if err == nil {
				err = req.validate(&cfg)
			}
			if tc.wantErr {
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.Type != TypeInvalidRequest {
					t.Fatalf("err = %v, want invalid_request", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(req.Input) != tc.wantInput {
				t.Errorf("input = %q, want %q", req.Input, tc.wantInput)
			}
		})
	}
}

func TestDecodeMsgpack(t *testing.T) {
	body, err := msgpack.Marshal(map[string]any{"script": "def main(x): return x", "input": map[string]any{"k": []any{1, "a"}}, "timeout_ms": uint16(500)})
	if err != nil {
		t.Fatal(err)
	}
	req, err := decodeMsgpack(body)
	if err != nil {
		t.Fatal(err)
	}
	if req.Script != "def main(x): return x" || string(req.Input) != `{"k":[1,"a"]}` || *req.TimeoutMS != 500 {
		t.Errorf("decoded %+v input %s", req, req.Input)
	}
	for name, v := range map[string]any{
		"not a map":      []int{1},
		"no script":      map[string]any{"input": 1},
		"script not str": map[string]any{"script": 1},
		"unknown field":  map[string]any{"script": "x", "foo": 1},
		"timeout string": map[string]any{"script": "x", "timeout_ms": "1"},
	} {
		body, _ := msgpack.Marshal(v)
		if _, err := decodeMsgpack(body); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err       error
		status    int
		typ       string
		retryable bool
	}{
		{invalidRequest("x"), 400, "invalid_request", false},
		{&runner.ScriptError{Kind: runner.KindSyntaxError}, 400, "syntax_error", false},
		{&runner.ScriptError{Kind: runner.KindMissingMain}, 400, "missing_main", false},
		{&runner.ScriptError{Kind: runner.KindForbiddenImport}, 400, "forbidden_import", false},
		{&runner.ScriptError{Kind: runner.KindScriptError}, 422, "script_error", false},
		{&runner.ScriptError{Kind: runner.KindResultNotSerializable}, 422, "result_not_serializable", false},
		{&runner.ScriptError{Kind: runner.KindTimeout}, 422, "timeout", false},
		{&runner.ScriptError{Kind: runner.KindMemoryLimit}, 422, "memory_limit", false},
		{&runner.ScriptError{Kind: runner.KindOutputLimit}, 422, "output_limit", false},
		{&runner.ScriptError{Kind: runner.KindCrashed}, 422, "sandbox_crashed", false},
		{fmt.Errorf("wrapped: %w", pool.ErrOverloaded), 503, "overloaded", true},
		{errors.New("disk on fire"), 500, "internal", true},
	}
	for _, tc := range tests {
		status, body, _ := toErrorBody(tc.err)
		if status != tc.status || body.Type != tc.typ || body.Retryable != tc.retryable {
			t.Errorf("%v: got %d %s %v, want %d %s %v", tc.err, status, body.Type, body.Retryable, tc.status, tc.typ, tc.retryable)
		}
	}
}

// The decoders read untrusted bytes: they must never panic.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"script": "def main(): return 1", "input": [1, {"a": null}], "timeout_ms": 5}`))
	f.Add([]byte(`{"script": 1}`))
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		if req, err := decodeJSON(body); err == nil {
			_ = req.validate(&cfg)
		}
	})
}

func FuzzDecodeMsgpack(f *testing.F) {
	f.Add([]byte("\x82\xa6script\xb5def main(x): return x\xa5input\x92\x01\xa1a"))
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		if req, err := decodeMsgpack(body); err == nil {
			_ = req.validate(&cfg)
		}
	})
}
