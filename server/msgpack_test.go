package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
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

// convert runs jsonToMsgpack on src.
func convert(t testing.TB, src string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jsonToMsgpack(&buf, []byte(src)); err != nil {
		t.Fatalf("jsonToMsgpack(%.80q): %v", src, err)
	}
	return buf.Bytes()
}

// Each JSON value becomes the msgpack value below, byte for byte as the
// encoder writes it with compact integers: the smallest form of each.
func TestJSONToMsgpack(t *testing.T) {
	long := strings.Repeat("é", 40000) // 80,000 bytes: str32, past a flush
	zeros := make([]any, 70000)        // array32
	for i := range zeros {
		zeros[i] = 0
	}
	for _, tc := range []struct {
		name, json string
		want       any
	}{
		{"null", `null`, nil},
		{"true", `true`, true},
		{"false", `false`, false},
		{"zero", `0`, 0},
		{"minus zero integer", `-0`, 0},
		{"fixint", `127`, 127},
		{"uint8", `128`, 128},
		{"uint16", `65535`, 65535},
		{"uint32", `4294967295`, uint64(4294967295)},
		{"int64 max", `9223372036854775807`, int64(math.MaxInt64)},
		{"int64 max plus one", `9223372036854775808`, uint64(1 << 63)},
		{"uint64 max", `18446744073709551615`, uint64(math.MaxUint64)},
		{"negative fixint", `-32`, -32},
		{"int8", `-33`, -33},
		{"int16", `-129`, -129},
		{"int64 min", `-9223372036854775808`, int64(math.MinInt64)},
		// Past 64 bits: the exact text, never a float or Inf.
		{"uint64 max plus one", `18446744073709551616`, "18446744073709551616"},
		{"int64 min minus one", `-9223372036854775809`, "-9223372036854775809"},
		{"10**400", `1` + strings.Repeat("0", 400), "1" + strings.Repeat("0", 400)},
		{"float", `1.5`, 1.5},
		{"float zero", `0.0`, 0.0},
		{"minus zero", `-0.0`, math.Copysign(0, -1)},
		{"whole float stays float", `3.0`, 3.0},
		{"exponent", `1e+16`, 1e16},
		{"largest float", `1.7976931348623157e+308`, math.MaxFloat64},
		{"beyond float64", `1e309`, "1e309"},
		{"far beyond float64", `-1e999999999`, "-1e999999999"},
		{"underflow is the nearest float", `1e-400`, 0.0},
		{"string", `"hi"`, "hi"},
		{"escapes", `"a\"b\\c\/d\b\f\n\r\t\u00e9\u0001"`, "a\"b\\c/d\b\f\n\r\t\u00e9\u0001"},
		{"surrogate pair", `"\ud83d\ude00"`, "\U0001F600"},
		{"UTF-8 as is", `"é😀"`, "é😀"},
		{"long string", `"` + long + `"`, long},
		{"long escaped string", `"\n` + long + `"`, "\n" + long},
		{"empty array", `[]`, []any{}},
		{"empty object", `{}`, map[string]any{}},
		{"nested empties", `[[],{},[[]]]`, []any{[]any{}, map[string]any{}, []any{[]any{}}}},
		{"array of 16", `[` + strings.Repeat(`1,`, 15) + `1]`, func() []any {
			a := make([]any, 16)
			for i := range a {
				a[i] = 1
			}
			return a
		}()},
		{"array32", `[` + strings.Repeat(`0,`, len(zeros)-1) + `0]`, zeros},
		{"object", `{"a":[1,{"b":null}]}`, map[string]any{"a": []any{1, map[string]any{"b": nil}}}},
		{"key with commas and brackets", `{"],[{":"}"}`, map[string]any{"],[{": "}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := convert(t, tc.json)
			want, err := marshalMsgpack(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got  %x\nwant %x", trim(got), trim(want))
			}
			if err := msgpackcheck.CheckWith(got, strictAnswer); err != nil {
				t.Errorf("a strict decoder refuses it: %v", err)
			}
		})
	}
}

func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// A result of millions of zeros is about one byte each in msgpack, and the
// conversion allocates a few times 64 KiB, not a value per element.
func TestJSONToMsgpackIsCompactAndStreams(t *testing.T) {
	const n = 3_500_000
	src := []byte("[" + strings.Repeat("0,", n-1) + "0]")
	var buf bytes.Buffer
	buf.Grow(n + 16)
	allocs := testing.AllocsPerRun(1, func() {
		buf.Reset()
		if err := jsonToMsgpack(&buf, src); err != nil {
			t.Fatal(err)
		}
	})
	if buf.Len() != n+5 { // array32 header and one byte per zero
		t.Errorf("%d bytes of msgpack, want %d", buf.Len(), n+5)
	}
	// A handful (the stack of open containers); the count is the whole
	// process's, so other goroutines' allocations can add a few. A tree
	// of values made 3.5 million.
	if allocs > 100 {
		t.Errorf("%v allocations for %d elements", allocs, n)
	}
}

// reference is the msgpack value jsonToMsgpack's rules give src, by way of
// encoding/json: integers int64, else uint64, else their text; other
// numbers float64, or their text past float64's range.
func reference(t testing.TB, src []byte) any {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("encoding/json refuses %q: %v", src, err)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case json.Number:
			if !strings.ContainsAny(string(x), ".eE") {
				if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
					return i
				}
				if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
					return u
				}
				return string(x)
			}
			f, _ := strconv.ParseFloat(string(x), 64)
			if math.IsInf(f, 0) {
				return string(x)
			}
			return f
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = walk(x[k])
			}
		}
		return v
	}
	return walk(v)
}

// normalize makes the integers a msgpack decoder returns (int8 … uint64)
// int64, or uint64 past int64.
func normalize(v any) any {
	switch x := v.(type) {
	case int8, int16, int32, int64:
		return reflect.ValueOf(x).Int()
	case uint8, uint16, uint32, uint64:
		u := reflect.ValueOf(x).Uint()
		if u <= math.MaxInt64 {
			return int64(u)
		}
		return u
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalize(x[k])
		}
	}
	return v
}

// FuzzJSONToMsgpack: every JSON text the runner would pass on (strict,
// compacted) converts to msgpack that a strict decoder reads as the value
// encoding/json reads, by the rules of jsonToMsgpack.
func FuzzJSONToMsgpack(f *testing.F) {
	for _, seed := range []string{`[0,1,-1,1.5,"a\u00e9\ud83d\ude00",true,false,null]`, `{"a":{"b":[[],{}]}}`,
		`[18446744073709551615,18446744073709551616,-9223372036854775809,1e309,1e-400,-0.0]`,
		`"\"\\\/\b\f\n\r\t"`, `{"a":1,"a":2}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		src, err := strictjson.Compact(nil, in, strictjson.Options{})
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := jsonToMsgpack(&buf, src); err != nil {
			t.Fatalf("jsonToMsgpack(%q): %v", src, err)
		}
		opts := strictAnswer
		opts.UniqueKeys = false // JSON may repeat a key; so may its msgpack
		if err := msgpackcheck.CheckWith(buf.Bytes(), opts); err != nil {
			t.Fatalf("%q: a strict decoder refuses %x: %v", src, buf.Bytes(), err)
		}
		dec := msgpack.NewDecoder(&buf)
		var got any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if want := reference(t, src); !reflect.DeepEqual(normalize(got), want) {
			t.Fatalf("%q: got %#v, want %#v", src, got, want)
		}
	})
}

// marshalMsgpack encodes v with integers in their smallest msgpack form,
// as the answers' encoder writes them.
func marshalMsgpack(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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
// characters), and numbers exact.
func TestHandlerMsgpackAnswersMatchJSON(t *testing.T) {
	printed := []byte("log \xff\xfe end\n")
	want := "log \uFFFD\uFFFD end\n"
	result := []byte(`{"u64max":18446744073709551615,"big":1` + strings.Repeat("0", 30) + `,"neg":-9223372036854775809,"f":1e400}`)
	body := func(fields map[string]any) []byte { b, _ := msgpack.Marshal(fields); return b }
	jsonBody := func(fields map[string]any) []byte { b, _ := json.Marshal(fields); return b }

	t.Run("success", func(t *testing.T) {
		c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Result: result, Stdout: printed, Stderr: printed}})
		fields := map[string]any{"script": "x"}
		got := decodeStrict(t, post(t, c, "application/msgpack", body(fields)).body)
		var viaJSON map[string]any
		dec := json.NewDecoder(bytes.NewReader(post(t, c, "application/json", jsonBody(fields)).body))
		dec.UseNumber() // 1e400 is past float64
		if err := dec.Decode(&viaJSON); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"stdout", "stderr"} {
			if got[key] != want || viaJSON[key] != want {
				t.Errorf("%s: msgpack %q, JSON %q, want %q", key, got[key], viaJSON[key], want)
			}
		}
		res := got["result"].(map[string]any)
		if res["u64max"] != uint64(math.MaxUint64) || res["big"] != "1"+strings.Repeat("0", 30) ||
			res["neg"] != "-9223372036854775809" || res["f"] != "1e400" {
			t.Errorf("result %#v", res)
		}
	})
	t.Run("batch", func(t *testing.T) {
		items := []runner.ItemOutput{{Result: []byte("null"), Stdout: printed},
			{Err: &runner.ScriptError{Kind: runner.KindScriptError, Message: "bad \xff", Traceback: "tb \xff"}, Stderr: printed}}
		c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Items: items, Stdout: printed}})
		got := decodeStrict(t, post(t, c, "application/msgpack", body(map[string]any{"script": "x", "inputs": []any{1, 2}})).body)
		results := got["results"].([]any)
		first, second := results[0].(map[string]any), results[1].(map[string]any)
		if got["stdout"] != want || first["stdout"] != want || second["stderr"] != want {
			t.Errorf("output %q %q %q", got["stdout"], first["stdout"], second["stderr"])
		}
		// A None result is there, as in JSON, not left out.
		if r, ok := first["result"]; !ok || r != nil {
			t.Errorf("first result %#v (present %v)", r, ok)
		}
		e := second["error"].(map[string]any)
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
// timing of an error answer as well as a result.
func TestHandlerMsgpackIntsAreCompact(t *testing.T) {
	c := startServer(t, Config{}, &fakeExecutor{out: runner.Output{Result: []byte("[" + strings.Repeat("0,", 999) + "0]")}})
	b, _ := msgpack.Marshal(map[string]any{"script": "x"})
	r := post(t, c, "application/msgpack", b)
	if r.status != 200 || len(r.body) > 1200 {
		t.Errorf("status %d, %d bytes for a thousand zeros", r.status, len(r.body))
	}
	var answer struct {
		Result []int `msgpack:"result"`
	}
	if err := msgpack.Unmarshal(r.body, &answer); err != nil || len(answer.Result) != 1000 {
		t.Errorf("%v: %d elements", err, len(answer.Result))
	}
}

func TestJSONToMsgpackRefusesWhatIsNotCompactJSON(t *testing.T) {
	for _, src := range []string{``, `[`, `]`, `[1 ]`, `tru`, `"a`, `{"a":1`, `x`, `"\ud800"`, `"\q"`} {
		if err := jsonToMsgpack(&bytes.Buffer{}, []byte(src)); !errors.Is(err, errNotCompactJSON) {
			t.Errorf("%q: %v", src, err)
		}
	}
}
