package server

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/runner"
)

// encodeString writes s alone with the answers' encoder, measuring first
// as respond does, and checks that the measure is the length written.
func encodeString(t *testing.T, s []byte, asMsgpack bool) []byte {
	t.Helper()
	m := encoder{msgpack: asMsgpack, measure: true}
	m.str(s)
	e := encoder{msgpack: asMsgpack, b: make([]byte, 0, m.n)}
	e.str(s)
	if e.over || len(e.b) != m.n || e.n != m.n {
		t.Fatalf("%q: measured %d, wrote %d (over %v)", s, m.n, len(e.b), e.over)
	}
	return e.b
}

// perByteValid is s with each byte that is not valid UTF-8 replaced by
// U+FFFD, as the answers carry it.
func perByteValid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// The answers' strings are exactly what encoding/json writes without HTML
// escaping, but for bytes that are not UTF-8: U+FFFD, one per byte, as
// itself (3 bytes) where encoding/json writes \ufffd (6); msgpack answers
// carry the same text.
func TestEncoderStringsMatchJSON(t *testing.T) {
	cases := []string{"", "plain", "before \xff\xfe after\n", "\xed\xa0\x80", "é\xc3", "\xf0\x9f\x98",
		"\U0001F600\x80\U0001F600", "\uFFFD", "\x00\x01\x1f\x7f", "<a href=\"x\">&</a>", "\\ \" \b\f\n\r\t",
		"line\u2028para\u2029", strings.Repeat("\x01", 300), strings.Repeat("é", 40000)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(80))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(perByteValid(s)); err != nil {
			t.Fatal(err)
		}
		got := encodeString(t, []byte(s), false)
		if !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Errorf("%q: JSON %s, encoding/json %s", s, got, want.Bytes())
		}
		var viaJSON, viaMsgpack string
		if err := json.Unmarshal(got, &viaJSON); err != nil {
			t.Fatal(err)
		}
		packed := encodeString(t, []byte(s), true)
		if err := msgpack.Unmarshal(packed, &viaMsgpack); err != nil || viaMsgpack != viaJSON || !utf8.ValidString(viaMsgpack) {
			t.Errorf("%q: msgpack %q (%v), JSON %q", s, viaMsgpack, err, viaJSON)
		}
		if n := encodedLen([]byte(s), false) + 2; n != len(got) {
			t.Errorf("%q: encodedLen %d, written %d", s, n, len(got))
		}
	}
}

// A whole answer's measure is its length, in JSON and in msgpack (where
// the result is the msgpack the sandbox encoded); both decode to the same
// answer.
func TestEncoderAnswers(t *testing.T) {
	out := runner.Output{
		Result: []byte(`{"xs":[0.0,1e5,-1,18446744073709551615,"\u0001"],"s":"é"}`),
		Stdout: []byte("out \x01\xff"), Stderr: []byte("err"),
		Files: []runner.File{{Name: "a.csv", Content: []byte("x,y\n")}, {Name: "b.bin", Content: bytes.Repeat([]byte{0}, 300)}},
		Items: []runner.ItemOutput{{Result: []byte("[1.5]"), Stdout: []byte("1\n")},
			{Err: &runner.ScriptError{Kind: runner.KindScriptError, Message: "bad <x>", Traceback: "tb", Line: 3}}},
	}
	// The same results as runner.ResultMsgpack brings them.
	packedOut := out
	packedOut.Result, _ = msgpack.Marshal(map[string]any{"xs": []any{0.0, 1e5, -1, uint64(18446744073709551615), "\u0001"}, "s": "é"})
	packedOut.Items = append([]runner.ItemOutput(nil), out.Items...)
	packedOut.Items[0].Result, _ = msgpack.Marshal([]any{1.5})
	timing := timingBody{QueueMS: 0.012, ExecMS: 3.5, TotalMS: 4}
	for _, batch := range []bool{false, true} {
		var decoded [2]any
		for i, asMsgpack := range []bool{false, true} {
			o := &out
			if asMsgpack {
				o = &packedOut
			}
			m := encoder{msgpack: asMsgpack, measure: true}
			encodeSuccess(&m, o, timing, batch)
			e := encoder{msgpack: asMsgpack, b: make([]byte, 0, m.n)}
			encodeSuccess(&e, o, timing, batch)
			if e.over || len(e.b) != m.n {
				t.Fatalf("batch %v msgpack %v: measured %d, wrote %d (over %v)", batch, asMsgpack, m.n, len(e.b), e.over)
			}
			var v any
			var err error
			if asMsgpack {
				err = msgpack.Unmarshal(e.b, &v)
			} else {
				err = json.Unmarshal(e.b, &v)
			}
			if err != nil {
				t.Fatalf("batch %v msgpack %v: %v\n%q", batch, asMsgpack, err, e.b)
			}
			// Through JSON, so that numbers and bytes compare alike.
			normal, _ := json.Marshal(v)
			_ = json.Unmarshal(normal, &decoded[i])
		}
		a, _ := json.Marshal(decoded[0])
		b, _ := json.Marshal(decoded[1])
		if !bytes.Equal(a, b) {
			// msgpack's bin decodes as bytes, JSON's base64 as a string;
			// compare the rest.
			if !strings.Contains(string(b), `"stdout":"out \u0001\ufffd"`) && !strings.Contains(string(b), "out \\u0001\ufffd") {
				t.Errorf("batch %v: JSON %s\nmsgpack %s", batch, a, b)
			}
		}
	}
}

// fit cuts stdout and stderr at characters so that an error answer, as
// encoded, is within the cap, and flags it.
func TestFitCutsOutputToTheCap(t *testing.T) {
	s := &Server{cfg: Config{MaxAnswerBytes: minAnswerBytes}}
	for _, asMsgpack := range []bool{false, true} {
		f := failure{err: errorBody{Type: "output_limit", Message: "over"},
			stdout: bytes.Repeat([]byte("\x01é"), 400_000), stderr: []byte("short error\n")}
		s.fit(&f, asMsgpack)
		m := encoder{msgpack: asMsgpack, measure: true}
		f.encode(&m)
		if !f.truncated || m.n > minAnswerBytes || m.n < minAnswerBytes-16 || string(f.stderr) != "short error\n" || !utf8.Valid(f.stdout) {
			t.Errorf("msgpack %v: %d bytes (cap %d), truncated %v, stderr %q", asMsgpack, m.n, minAnswerBytes, f.truncated, f.stderr)
		}
	}
}
