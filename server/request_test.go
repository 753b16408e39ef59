package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
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
		{"input object", `{"script": "x", "input": {"a": [1, 2]}}`, false, `{"a":[1,2]}`},
		{"input keeps strings as written", `{"input": [" <&> ", "\u00e9", 1e400, -0], "script": "x"}`, false, `[" <&> ","\u00e9",1e400,-0]`},
		{"input scalar last", "{\"input\" : 12 ,\n \"script\":\"x\"}", false, `12`},
		{"escaped quotes and backslashes", `{"script": "x\\", "input": ["\"\\\"", "\\\\"], "timeout_ms": 5}`, false, `["\"\\\"","\\\\"]`},
		{"escaped key", `{"scr\u0069pt": "x", "input": "a"}`, false, `"a"`},
		{"null limits are absent", `{"script": "x", "timeout_ms": null, "memory_mb": null}`, false, ""},
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
		{"memory under the minimum", `{"script": "x", "memory_mb": 15}`, true, ""},
		{"memory at the minimum", `{"script": "x", "memory_mb": 16}`, false, ""},
		{"script null", `{"script": null}`, true, ""},
		{"timeout exponent", `{"script": "x", "timeout_ms": 1e3}`, true, ""},
		{"timeout over int64", `{"script": "x", "timeout_ms": 9223372036854775808}`, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeJSON([]byte(tc.body), testConfig())
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
	req, err := decodeMsgpack(body, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	var input map[string]any
	if err := msgpack.Unmarshal(req.Input, &input); err != nil {
		t.Fatal(err)
	}
	if req.Script != "def main(x): return x" || req.InputFormat != runner.InputMsgpack || *req.TimeoutMS != 500 ||
		fmt.Sprint(input) != "map[k:[1 a]]" {
		t.Errorf("decoded %+v input %v", req, input)
	}
	for name, v := range map[string]any{
		"not a map":      []int{1},
		"no script":      map[string]any{"input": 1},
		"script not str": map[string]any{"script": 1},
		"script bin":     map[string]any{"script": []byte("x")},
		"script nil":     map[string]any{"script": nil},
		"unknown field":  map[string]any{"script": "x", "foo": 1},
		"timeout string": map[string]any{"script": "x", "timeout_ms": "1"},
		"timeout float":  map[string]any{"script": "x", "timeout_ms": 1.5},
		"timeout huge":   map[string]any{"script": "x", "timeout_ms": uint64(1 << 63)},
		"int key":        map[any]any{"script": "x", 1: 1},
	} {
		body, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMsgpack(body, testConfig()); !isInvalidRequest(err) {
			t.Errorf("%s: err = %v, want invalid_request", name, err)
		}
	}
}

func isInvalidRequest(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Type == TypeInvalidRequest && apiErr.Status == 400
}

// The strict rules: JSON and msgpack refuse the same faults, with a
// message that says which.
func TestDecodeJSONStrict(t *testing.T) {
	tests := []struct {
		name, body, msg string
	}{
		{"invalid UTF-8 in script", "{\"script\": \"def main():\xff return 1\"}", "invalid UTF-8 in string at byte 23"},
		{"invalid UTF-8 in input", "{\"script\": \"x\", \"input\": [\"\xc3\"]}", "invalid UTF-8"},
		{"invalid UTF-8 in key", "{\"script\": \"x\", \"\xe9\": 1}", "invalid UTF-8"},
		{"lone high surrogate", `{"script": "x = '\ud800'"}`, `high surrogate \uD800`},
		{"lone low surrogate in input", `{"script": "x", "input": "\udc00"}`, "low surrogate"},
		{"upper-case key", `{"SCRIPT": "x"}`, `unknown field "SCRIPT"`},
		{"title-case key", `{"Script": "x"}`, `unknown field "Script"`},
		{"case variant beside the key", `{"script": "x", "Input": 1}`, `unknown field "Input"`},
		{"case variant of a limit", `{"script": "x", "Timeout_MS": 1}`, `unknown field "Timeout_MS"`},
		{"duplicate script", `{"script": "x", "script": "y"}`, `duplicate key "script"`},
		{"duplicate through an escape", `{"script": "x", "\u0073cript": "y"}`, `duplicate key "script"`},
		{"duplicate key inside input", `{"script": "x", "input": {"a": 1, "b": {"c": 1, "c": 2}}}`, `duplicate key "c"`},
		{"NaN in input", `{"script": "x", "input": NaN}`, "NaN"},
		{"leading zero", `{"script": "x", "timeout_ms": 0100}`, "leading zero"},
		{"trailing data", `{"script": "x"} {}`, "after the top-level value"},
		{"not an object", `["script"]`, "must be a JSON object"},
		{"script not a string", `{"script": ["x"]}`, `"script" must be a string`},
		{"float limit", `{"script": "x", "memory_mb": 1.5}`, `"memory_mb" must be an integer`},
		{"too deep", `{"script": "x", "input": ` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`, "nesting deeper than 512"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeJSON([]byte(tc.body), testConfig())
			if !isInvalidRequest(err) {
				t.Fatalf("err = %v, want invalid_request", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not say %q", err.Error(), tc.msg)
			}
		})
	}
}

// A JSON body is read in one pass that stops decoding at the first fault
// of a field, but the body is read to its end: a fault of its syntax
// anywhere is the one told, as when the body was checked whole first.
func TestDecodeJSONSyntaxFaultWins(t *testing.T) {
	caps := testConfig()
	caps.MaxBatch, caps.Limits.MaxFiles = 2, 2
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"unknown field, then NaN", `{"SCRIPT": "x", "input": NaN}`, "NaN is not JSON"},
		{"wrong type, then a duplicate key", `{"script": 1, "script": "x"}`, `duplicate key "script"`},
		{"batch over the cap, then a trailing comma", `{"script": "x", "inputs": [1, 2, 3, 4,]}`, "expected a value"},
		{"files over the cap, then an unclosed object", `{"script": "x", "files": {"a": "", "b": "", "c": ""}`, "end of input inside object"},
		{"not an object, then trailing data", `[1] 2`, "after the top-level value"},
		{"missing script, then invalid UTF-8", "{\"input\": \"\xff\"}", "invalid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeJSON([]byte(tc.body), caps)
			if !isInvalidRequest(err) || !strings.Contains(err.Error(), "body is not valid JSON") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want invalid_request saying %q", err, tc.msg)
			}
		})
	}
}

// The elements of "inputs" share one buffer (JSON) or the body
// (msgpack): each is capped at its length, so appending to one cannot
// write over the next.
func TestDecodedInputsDoNotOverlap(t *testing.T) {
	packed, err := msgpack.Marshal(map[string]any{"script": "x", "inputs": []any{1, "ab", []int{3}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, decode := range map[string]func() (executeRequest, error){
		"json": func() (executeRequest, error) {
			return decodeJSON([]byte(`{"script": "x", "inputs": [1, "ab", [3]]}`), testConfig())
		},
		"msgpack": func() (executeRequest, error) { return decodeMsgpack(packed, testConfig()) },
	} {
		req, err := decode()
		if err != nil || len(req.Inputs) != 3 {
			t.Fatalf("%s: %v %v", name, req.Inputs, err)
		}
		want := string(req.Inputs[1])
		_ = append(req.Inputs[0], 'x', 'x', 'x')
		if string(req.Inputs[1]) != want {
			t.Errorf("%s: appending to the first input changed the second to %q", name, req.Inputs[1])
		}
	}
}

// mp builds msgpack bytes by hand, for bodies an encoder will not write.
func mp(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case byte:
			b = append(b, p)
		case string: // a fixstr
			b = append(b, 0xa0|byte(len(p)))
			b = append(b, p...)
		case []byte: // raw bytes
			b = append(b, p...)
		}
	}
	return b
}

func TestDecodeMsgpackStrict(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"invalid UTF-8 in script", mp(byte(0x81), "script", byte(0xa3), []byte("x\xffy")), "str at byte 8 is not valid UTF-8"},
		{"invalid UTF-8 in input", mp(byte(0x82), "script", "x", "input", byte(0x91), byte(0xa1), byte(0xc3)), "not valid UTF-8"},
		{"invalid UTF-8 key in input", mp(byte(0x82), "script", "x", "input", byte(0x81), byte(0xa1), byte(0xff), byte(0x01)), "not valid UTF-8"},
		{"UTF-8 encoded surrogate", mp(byte(0x81), "script", byte(0xa3), []byte("\xed\xa0\x80")), "not valid UTF-8"},
		{"upper-case key", mp(byte(0x81), "SCRIPT", "x"), `unknown field "SCRIPT"`},
		{"title-case key", mp(byte(0x81), "Script", "x"), `unknown field "Script"`},
		{"duplicate script", mp(byte(0x82), "script", "x", "script", "y"), `map key "script" at byte 10 appears twice`},
		{"duplicate script, str8", mp(byte(0x82), "script", "x", byte(0xd9), byte(6), []byte("script"), "y"), `map key "script" at byte 10 appears twice`},
		{"duplicate key inside input", mp(byte(0x82), "script", "x", "input", byte(0x82), "a", byte(1), "a", byte(2)), `map key "a"`},
		{"duplicate int key inside input", mp(byte(0x82), "script", "x", "input", byte(0x82), byte(1), byte(1), byte(0xcc), byte(1), byte(2)), "map key 1"},
		{"ext in input", mp(byte(0x82), "script", "x", "input", byte(0xd4), byte(0x07), byte(0)), "ext value (type 7)"},
		{"timestamp in input", mp(byte(0x82), "script", "x", "input", byte(0xd6), byte(0xff), []byte{0, 0, 0, 1}), "ext value (type -1)"},
		{"ext around the body", mp(byte(0xd4), byte(1), byte(0x80)), "ext value"},
		{"nil key in input", mp(byte(0x82), "script", "x", "input", byte(0x81), byte(0xc0), byte(1)), "not a str or an integer"},
		{"bin key in input", mp(byte(0x82), "script", "x", "input", byte(0x81), byte(0xc4), byte(1), byte('a'), byte(1)), "not a str or an integer"},
		{"float key in input", mp(byte(0x82), "script", "x", "input", byte(0x81), byte(0xca), []byte{0, 0, 0, 0}, byte(1)), "not a str or an integer"},
		{"int key at the top", mp(byte(0x82), "script", "x", byte(1), byte(1)), "keys of the body must be strings"},
		{"nil body", mp(byte(0xc0)), "must be a msgpack map"},
		{"trailing", mp(byte(0x81), "script", "x", byte(0xc0)), "after the value"},
		{"too deep", append(mp(byte(0x82), "script", "x", "input"), append(bytes.Repeat([]byte{0x91}, 600), 0xc0)...), "nested too deeply"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeMsgpack(tc.body, testConfig())
			if !isInvalidRequest(err) {
				t.Fatalf("err = %v, want invalid_request", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not say %q", err.Error(), tc.msg)
			}
		})
	}
}

// "input" reaches the runner as its own msgpack bytes: bin stays bytes,
// integers at the ends of uint64 and int64 stay exact, int keys stay.
func TestDecodeMsgpackKeepsInputExact(t *testing.T) {
	input := []any{[]byte{0, 0xff, 'x'}, uint64(math.MaxUint64), int64(math.MinInt64), "é", 1.5, nil, true,
		map[any]any{int64(-3): "neg", "s": uint64(1 << 63)}}
	encodedInput, err := msgpack.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	body := append(mp(byte(0x82), "input"), encodedInput...)
	body = append(body, mp("script", "x")...)
	req, err := decodeMsgpack(body, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if req.Script != "x" || req.InputFormat != runner.InputMsgpack {
		t.Errorf("decoded %+v", req)
	}
	if !bytes.Equal(req.Input, encodedInput) {
		t.Fatalf("input % x, want the bytes sent % x", req.Input, encodedInput)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(req.Input))
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	got, err := dec.DecodeInterface()
	if err != nil {
		t.Fatal(err)
	}
	items := got.([]any)
	if b, ok := items[0].([]byte); !ok || !bytes.Equal(b, []byte{0, 0xff, 'x'}) {
		t.Errorf("bin came back as %T %v", items[0], items[0])
	}
	if u, ok := items[1].(uint64); !ok || u != math.MaxUint64 {
		t.Errorf("uint64 max came back as %T %v", items[1], items[1])
	}
	if i, ok := items[2].(int64); !ok || i != math.MinInt64 {
		t.Errorf("int64 min came back as %T %v", items[2], items[2])
	}
	m := items[7].(map[any]any)
	if m[int64(-3)] != "neg" || m["s"] != uint64(1<<63) {
		t.Errorf("map came back as %#v", m)
	}
}

func TestDecodeMsgpackInputAbsentOrNil(t *testing.T) {
	req, err := decodeMsgpack(mp(byte(0x81), "script", "x"), testConfig())
	if err != nil || req.Input != nil {
		t.Fatalf("%+v, %v", req, err)
	}
	req, err = decodeMsgpack(mp(byte(0x82), "input", byte(0xc0), "script", "x"), testConfig())
	if err != nil || !bytes.Equal(req.Input, []byte{0xc0}) {
		t.Fatalf("%+v, %v", req, err)
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
	f.Add([]byte(`{"script": "x", "input": {"a": "\ud83d\ude00", "b": [1, -2.5e3]}, "memory_mb": 5}`))
	f.Add([]byte(`{"script": "x", "script": "y"}`))
	f.Add([]byte(`{"script": "x", "stdin": "a\nb", "inputs": [1]}`))
	f.Add([]byte("{\"script\": \"\xff\"}"))
	f.Add([]byte(`{"script": "1", "entrypoint": "none", "inputs": [1]}`))
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeJSON(body, testConfig())
		if err != nil {
			if !isInvalidRequest(err) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		_ = req.validate(&cfg)
		if !utf8.ValidString(req.Script) || !utf8.Valid(body) {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
		// encoding/json, on a body with no duplicate keys and valid UTF-8,
		// reads the same fields (its map keys are exact-case).
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		var script string
		if err := json.Unmarshal(fields["script"], &script); err != nil || script != req.Script {
			t.Fatalf("script %q, encoding/json reads %q (%v)", req.Script, script, err)
		}
		if raw, ok := fields["input"]; ok != (req.Input != nil) {
			t.Fatalf("input %q, encoding/json reads %q", req.Input, raw)
		} else if ok {
			var want bytes.Buffer
			if err := json.Compact(&want, raw); err != nil || !bytes.Equal(want.Bytes(), req.Input) {
				t.Fatalf("input %q, encoding/json reads %q", req.Input, raw)
			}
		}
	})
}

func FuzzDecodeMsgpack(f *testing.F) {
	f.Add([]byte("\x82\xa6script\xb5def main(x): return x\xa5input\x92\x01\xa1a"))
	f.Add(mp(byte(0x82), "script", "x", "input", byte(0x82), byte(1), byte(1), byte(0xcc), byte(1), byte(2)))
	f.Add(mp(byte(0x82), "script", "x", "stdin", "line\n"))
	f.Add(mp(byte(0x82), "script", "x", "input", byte(0xcf), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
	f.Add(mp(byte(0x82), "script", "x", "entrypoint", "none"))
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeMsgpack(body, testConfig())
		if err != nil {
			if !isInvalidRequest(err) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		_ = req.validate(&cfg)
		if !utf8.ValidString(req.Script) {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
		if req.Input != nil {
			if err := msgpackcheck.CheckWith(req.Input, strictMsgpack); err != nil {
				t.Fatalf("input % x: %v", req.Input, err)
			}
		}
	})
}

func TestDecodeFiles(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Limits.FileSizeBytes = 4
	cfg.Limits.FilesBytes = 6
	cfg.Limits.MaxFiles = 2

	req, err := decodeJSON([]byte(`{"script": "x", "files": {"b.txt": "aGk=", "dir/a.bin": ""}}`), &cfg)
	if err != nil || req.validate(&cfg) != nil {
		t.Fatalf("valid files: %v", err)
	}
	if len(req.Files) != 2 || req.Files[0].Name != "b.txt" || string(req.Files[0].Content) != "hi" || req.Files[1].Name != "dir/a.bin" {
		t.Errorf("files = %+v, want them decoded in the order given", req.Files)
	}
	if req, err := decodeJSON([]byte(`{"script": "x", "files": null}`), &cfg); err != nil || req.Files != nil {
		t.Errorf("null files: %+v %v", req.Files, err)
	}

	packed, _ := msgpack.Marshal(map[string]any{"script": "x", "files": map[string]any{"bin": []byte{0, 1}, "text": "é"}})
	req, err = decodeMsgpack(packed, &cfg)
	if err != nil || req.validate(&cfg) != nil || len(req.Files) != 2 {
		t.Fatalf("msgpack files: %+v %v", req.Files, err)
	}

	for _, tc := range []struct {
		name, body string
		wantType   string
	}{
		{"a file over the file size limit", `{"script": "x", "files": {"a": "aGVsbG8="}}`, TypePayloadTooLarge},
		{"over the byte cap together", `{"script": "x", "files": {"a": "aGVs", "b": "aGVsbA=="}}`, TypePayloadTooLarge},
		{"over the count cap", `{"script": "x", "files": {"a": "", "b": "", "c": ""}}`, TypePayloadTooLarge},
		{"base64 without padding", `{"script": "x", "files": {"a": "aGk"}}`, TypeInvalidRequest},
		{"URL-safe base64", `{"script": "x", "files": {"a": "_-8="}}`, TypeInvalidRequest},
		{"content a number", `{"script": "x", "files": {"a": 1}}`, TypeInvalidRequest},
		{"a name twice", `{"script": "x", "files": {"a": "", "a": ""}}`, TypeInvalidRequest},
		{"escaping name", `{"script": "x", "files": {"a/../../b": ""}}`, TypeInvalidRequest},
		{"backslash", `{"script": "x", "files": {"a\\..\\b": ""}}`, TypeInvalidRequest},
		{"C1 control", `{"script": "x", "files": {"\u0085nel": ""}}`, TypeInvalidRequest},
		{"bidirectional override", `{"script": "x", "files": {"r\u202egnp.exe": ""}}`, TypeInvalidRequest},
		{"name of 256 bytes", `{"script": "x", "files": {"` + strings.Repeat("n", 256) + `": ""}}`, TypeInvalidRequest},
		{"a drive letter", `{"script": "x", "files": {"D:evil.txt": ""}}`, TypeInvalidRequest},
		{"a device name", `{"script": "x", "files": {"nul.txt": ""}}`, TypeInvalidRequest},
		{"a trailing space", `{"script": "x", "files": {"x.txt ": ""}}`, TypeInvalidRequest},
		{"a zero-width space", `{"script": "x", "files": {"a\u200b.txt": ""}}`, TypeInvalidRequest},
		{"two names one in another case", `{"script": "x", "files": {"A.TXT": "", "a.txt": ""}}`, TypeInvalidRequest},
		{"two names one when normalised", `{"script": "x", "files": {"caf\u00e9": "", "cafe\u0301": ""}}`, TypeInvalidRequest},
	} {
		req, err := decodeJSON([]byte(tc.body), &cfg)
		if err == nil {
			err = req.validate(&cfg)
		}
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Type != tc.wantType {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.wantType)
		}
	}

	for name, files := range map[string]any{"nil content": map[string]any{"a": nil}, "integer content": map[string]any{"a": 1}, "array": []string{"a"}} {
		packed, _ := msgpack.Marshal(map[string]any{"script": "x", "files": files})
		if _, err := decodeMsgpack(packed, &cfg); err == nil {
			t.Errorf("msgpack %s: accepted", name)
		}
	}
}

// testConfig is the default configuration, for decoding.
func testConfig() *Config {
	cfg := DefaultConfig()
	return &cfg
}

// TestDecodingStopsAtTheCaps: counts over the caps are refused while they
// are read, before the decoder allocates for them.
func TestDecodingStopsAtTheCaps(t *testing.T) {
	caps := testConfig()
	caps.MaxBatch, caps.Limits.MaxFiles = 2, 2
	wantType := func(name string, err error, typ string) {
		t.Helper()
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Type != typ {
			t.Errorf("%s: err = %v, want %s", name, err, typ)
		}
	}
	_, err := decodeJSON([]byte(`{"script": "x", "inputs": [1, 2, 3]}`), caps)
	wantType("JSON batch", err, TypeInvalidRequest)
	_, err = decodeJSON([]byte(`{"script": "x", "files": {"a": "", "b": "", "c": ""}}`), caps)
	wantType("JSON files", err, TypePayloadTooLarge)

	// Declared counts: an array32 or map32 header claiming far more than
	// the caps, with the elements (nils, one byte each) present.
	long := func(code byte, n int) []byte {
		b := []byte{code, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		return append(b, bytes.Repeat([]byte{0xc0}, n)...)
	}
	body := func(key string, value []byte) []byte {
		b := append([]byte{0x82, 0xa6}, "script"...)
		b = append(b, 0xa1, 'x', 0xa0|byte(len(key)))
		return append(append(b, key...), value...)
	}
	_, err = decodeMsgpack(body("inputs", long(0xdd, 100000)), caps)
	wantType("msgpack batch", err, TypeInvalidRequest)
	_, err = decodeMsgpack(body("files", long(0xdf, 100000)), caps)
	wantType("msgpack files", err, TypeInvalidRequest) // a map of nil keys: refused by the body's key rules first
	_, err = decodeMsgpack(body("timeout_ms", long(0xdd, 100000)), caps)
	wantType("msgpack timeout_ms array", err, TypeInvalidRequest)

	// Escaped slashes, as PHP's json_encode writes them, are base64 still.
	req, err := decodeJSON([]byte(`{"script": "x", "files": {"a": "\/\/8="}}`), caps)
	if err != nil || len(req.Files) != 1 || !bytes.Equal(req.Files[0].Content, []byte{0xff, 0xff}) {
		t.Errorf("escaped base64: %+v %v", req.Files, err)
	}
}

// "stdin" is a string, null or absent, in JSON and in msgpack alike.
func TestDecodeStdin(t *testing.T) {
	text := "line 1\né\n"
	for _, tc := range []struct {
		name    string
		json    string
		msgpack []byte
		want    *string
		wantErr bool
	}{
		{"text", `{"script": "x", "stdin": "line 1\n\u00e9\n"}`, mp(byte(0x82), "script", "x", "stdin", text), &text, false},
		{"absent", `{"script": "x"}`, mp(byte(0x81), "script", "x"), nil, false},
		{"null", `{"script": "x", "stdin": null}`, mp(byte(0x82), "script", "x", "stdin", byte(0xc0)), nil, false},
		{"number", `{"script": "x", "stdin": 1}`, mp(byte(0x82), "script", "x", "stdin", byte(1)), nil, true},
		{"array", `{"script": "x", "stdin": ["a"]}`, mp(byte(0x82), "script", "x", "stdin", byte(0x91), "a"), nil, true},
		{"wrong case", `{"script": "x", "Stdin": "a"}`, mp(byte(0x82), "script", "x", "Stdin", "a"), nil, true},
	} {
		for format, decode := range map[string]func() (executeRequest, error){
			"json":    func() (executeRequest, error) { return decodeJSON([]byte(tc.json), testConfig()) },
			"msgpack": func() (executeRequest, error) { return decodeMsgpack(tc.msgpack, testConfig()) },
		} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				req, err := decode()
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
				if (req.Stdin == nil) != (tc.want == nil) || req.Stdin != nil && *req.Stdin != *tc.want {
					t.Errorf("stdin %v, want %v", req.Stdin, tc.want)
				}
			})
		}
	}
}

// TestDecodeEntrypoint: "entrypoint" is "main" (also when absent or null)
// or "none", the same in JSON and msgpack; anything else is
// invalid_request naming both values.
func TestDecodeEntrypoint(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name  string
		value any // absent when "absent"
		want  runner.Entrypoint
		bad   bool
	}{
		{"absent", "absent", runner.EntrypointMain, false},
		{"null", nil, runner.EntrypointMain, false},
		{"main", "main", runner.EntrypointMain, false},
		{"none", "none", runner.EntrypointNone, false},
		{"another name", "cell", "", true},
		{"empty", "", "", true},
		{"exact case", "None", "", true},
		{"a number", 1, "", true},
		{"a list", []string{"none"}, "", true},
	} {
		fields := map[string]any{"script": "x"}
		if tc.value != "absent" {
			fields["entrypoint"] = tc.value
		}
		jsonBody, _ := json.Marshal(fields)
		msgpackBody, _ := msgpack.Marshal(fields)
		for _, enc := range []struct {
			name   string
			decode func() (executeRequest, error)
		}{
			{"json", func() (executeRequest, error) { return decodeJSON(jsonBody, testConfig()) }},
			{"msgpack", func() (executeRequest, error) { return decodeMsgpack(msgpackBody, testConfig()) }},
		} {
			t.Run(tc.name+"/"+enc.name, func(t *testing.T) {
				req, err := enc.decode()
				if err == nil {
					err = req.validate(&cfg)
				}
				var apiErr *APIError
				switch {
				case tc.bad && (!errors.As(err, &apiErr) || apiErr.Type != TypeInvalidRequest || !strings.Contains(apiErr.Message, `"none"`)):
					t.Errorf("err = %v, want invalid_request naming the values", err)
				case !tc.bad && (err != nil || req.Entrypoint != tc.want):
					t.Errorf("entrypoint %q, err %v; want %q", req.Entrypoint, err, tc.want)
				}
			})
		}
	}
}

// A NUL byte anywhere in the script is a syntax_error located as Python
// locates it (line, and column in characters), found before a sandbox runs.
func TestScriptWithNulIsASyntaxError(t *testing.T) {
	cfg := DefaultConfig()
	req := executeRequest{Script: "x = 1\né = 'a\x00'\n"}
	err := req.validate(&cfg)
	var se *runner.ScriptError
	if !errors.As(err, &se) || se.Kind != runner.KindSyntaxError || se.Line != 2 || se.Offset != 7 {
		t.Fatalf("err = %#v, want syntax_error at line 2, column 7", err)
	}
	if status, _, _ := toErrorBody(err); status != http.StatusBadRequest {
		t.Errorf("status %d, want 400", status)
	}
}

func TestBodyFormat(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		msgpack     bool
		status      int
	}{
		{"", false, 0},
		{"application/json", false, 0},
		{"Application/JSON; charset=utf-8", false, 0},
		{"application/problem+json", false, 0},
		{"application/x-www-form-urlencoded", false, 0}, // curl -d
		{"application/msgpack", true, 0},
		{"application/x-msgpack", true, 0},
		{"application/vnd.msgpack", true, 0},
		{"application/vnd.msgpack; charset=binary", true, 0},
		{"application/xml", false, http.StatusUnsupportedMediaType},
		{"text/plain", false, http.StatusUnsupportedMediaType},
		{"multipart/form-data; boundary=x", false, http.StatusUnsupportedMediaType},
		{"json", false, http.StatusUnsupportedMediaType},
	} {
		asMsgpack, err := bodyFormat([]byte(tc.contentType))
		var apiErr *APIError
		switch {
		case tc.status == 0 && (err != nil || asMsgpack != tc.msgpack):
			t.Errorf("%q: msgpack %v, err %v; want msgpack %v", tc.contentType, asMsgpack, err, tc.msgpack)
		case tc.status != 0 && (!errors.As(err, &apiErr) || apiErr.Status != tc.status || apiErr.Type != TypeUnsupportedMediaType):
			t.Errorf("%q: err %v, want %d %s", tc.contentType, err, tc.status, TypeUnsupportedMediaType)
		}
	}
}
