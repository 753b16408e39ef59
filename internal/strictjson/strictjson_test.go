package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/sandbox-exec/pyexec/internal/cpuclock"
)

func TestCompactAccepts(t *testing.T) {
	tests := []struct{ in, want string }{
		{`1`, `1`},
		{` 1 `, `1`},
		{"\t\r\n null \n", `null`},
		{`true`, `true`},
		{`false`, `false`},
		{`""`, `""`},
		{`0`, `0`},
		{`-0`, `-0`},
		{`-0.5e-3`, `-0.5e-3`},
		{`12.25E+10`, `12.25E+10`},
		{`1e5`, `1e5`},
		{`[ ]`, `[]`},
		{`{ }`, `{}`},
		{`[ 1 , [ 2 , { "a" : [ ] } ] ]`, `[1,[2,{"a":[]}]]`},
		{`{"a" : "x y", "b": {"c" : null}}`, `{"a":"x y","b":{"c":null}}`},
		{`"<script>&amp;</script>"`, `"<script>&amp;</script>"`},
		{`"\u003c \"\\\/\b\f\n\r\t"`, `"\u003c \"\\\/\b\f\n\r\t"`},
		{`"\ud83d\ude00 😀 é \u0000 \u00e9"`, `"\ud83d\ude00 😀 é \u0000 \u00e9"`},
		{"\"\u2028\u2029\x7f\"", "\"\u2028\u2029\x7f\""},
		{`"\uFFFF \uffff \uDBFF\uDFFF"`, `"\uFFFF \uffff \uDBFF\uDFFF"`},
		{"\"\xef\xbf\xbd\"", "\"\xef\xbf\xbd\""}, // U+FFFD itself is valid
		{`{"a":1,"A":2}`, `{"a":1,"A":2}`},
		{`[{"a":1},{"a":2}]`, `[{"a":1},{"a":2}]`},
		{`{"a":{"a":{"a":1}},"b":{"a":2}}`, `{"a":{"a":{"a":1}},"b":{"a":2}}`},
	}
	for _, tc := range tests {
		for _, dups := range []bool{false, true} {
			got, err := Compact([]byte("prefix:"), []byte(tc.in), Options{RejectDuplicateKeys: dups})
			if err != nil {
				t.Errorf("Compact(%q) dups=%v: %v", tc.in, dups, err)
				continue
			}
			if string(got) != "prefix:"+tc.want {
				t.Errorf("Compact(%q) = %q, want %q", tc.in, got, "prefix:"+tc.want)
			}
		}
	}
}

func TestCompactRejects(t *testing.T) {
	manyKeys := func(dup string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := 0; i < 40; i++ {
			b.WriteString(`"k` + strconv.Itoa(i) + `":1,`)
		}
		b.WriteString(dup + `:2}`)
		return b.String()
	}
	tests := []struct {
		name, in string
		opts     Options
		offset   int64
		msg      string // a part of the message
	}{
		{"empty", ``, Options{}, 0, "end of input"},
		{"only space", `   `, Options{}, 3, "end of input"},
		{"invalid UTF-8 in string", "\"ab\xff\"", Options{}, 3, "invalid UTF-8"},
		{"truncated UTF-8 in string", "\"ab\xc3\"", Options{}, 3, "invalid UTF-8"},
		{"overlong UTF-8", "\"\xc0\xaf\"", Options{}, 1, "invalid UTF-8"},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", Options{}, 1, "invalid UTF-8"},
		{"invalid UTF-8 in key", "{\"\xfe\":1}", Options{}, 2, "invalid UTF-8"},
		{"invalid UTF-8 outside strings", "[1,\xff]", Options{}, 3, "byte 0xff"},
		{"invalid UTF-8 after value", "1 \xff", Options{}, 2, "after the top-level value"},
		{"control char in string", "\"a\x01\"", Options{}, 2, "U+0001"},
		{"newline in string", "\"a\nb\"", Options{}, 2, "U+000A"},
		{"tab in string", "\"a\tb\"", Options{}, 2, "U+0009"},
		{"NUL in string", "\"\x00\"", Options{}, 1, "U+0000"},
		{"bad escape", `"\x41"`, Options{}, 1, `invalid escape \x`},
		{"single quote escape", `"\'"`, Options{}, 1, "invalid escape"},
		{"bad hex", `"\u12G4"`, Options{}, 1, "hex digit"},
		{"short unicode escape", `"\u12" `, Options{}, 1, "not a hex digit"},
		{"truncated unicode escape", `"\u12`, Options{}, 1, "truncated"},
		{"unterminated escape", `"\`, Options{}, 1, "unterminated escape"},
		{"lone high surrogate", `"\ud800"`, Options{}, 1, "high surrogate"},
		{"high surrogate then text", `"\ud800abcdef"`, Options{}, 1, "high surrogate"},
		{"high surrogate then high", `"\ud800\ud800"`, Options{}, 1, "high surrogate"},
		{"high surrogate then BMP", `"\uD83D\u0041"`, Options{}, 1, "high surrogate"},
		{"high surrogate then other escape", `"\ud800\n"`, Options{}, 1, "high surrogate"},
		{"lone low surrogate", `"x\udc00"`, Options{}, 2, "low surrogate"},
		{"swapped surrogates", `"\ude00\ud83d"`, Options{}, 1, "low surrogate"},
		{"lone surrogate in key", `{"\ud800":1}`, Options{}, 2, "high surrogate"},
		{"unterminated string", `"abc`, Options{}, 0, "unterminated string"},
		{"NaN", `NaN`, Options{}, 0, "NaN"},
		{"NaN in array", `[1, NaN]`, Options{}, 4, "NaN"},
		{"Infinity", `Infinity`, Options{}, 0, "Infinity"},
		{"-Infinity", `[-Infinity]`, Options{}, 1, "-Infinity"},
		{"leading zero", `01`, Options{}, 0, "leading zero"},
		{"negative leading zero", `-012`, Options{}, 1, "leading zero"},
		{"plus sign", `+1`, Options{}, 0, "character '+'"},
		{"leading dot", `.5`, Options{}, 0, "character '.'"},
		{"trailing dot", `1.`, Options{}, 2, "decimal point"},
		{"dot then exponent", `1.e5`, Options{}, 2, "decimal point"},
		{"empty exponent", `1e`, Options{}, 2, "exponent"},
		{"signed empty exponent", `1e+`, Options{}, 3, "exponent"},
		{"hex", `0x1F`, Options{}, 0, "hexadecimal"},
		{"minus alone", `-`, Options{}, 1, "expected a digit"},
		{"minus space", `- 1`, Options{}, 1, "expected a digit"},
		{"trailing data", `{} {}`, Options{}, 3, "after the top-level value"},
		{"trailing comma array", `[1,]`, Options{}, 3, "expected a value"},
		{"trailing comma object", `{"a":1,}`, Options{}, 7, "object key"},
		{"missing colon", `{"a" 1}`, Options{}, 5, "':'"},
		{"missing comma", `[1 2]`, Options{}, 3, "','"},
		{"unquoted key", `{a:1}`, Options{}, 1, "object key"},
		{"unclosed array", `[1`, Options{}, 2, "inside array"},
		{"unclosed object", `{"a":1`, Options{}, 6, "inside object"},
		{"mismatched close", `[1}`, Options{}, 2, "']'"},
		{"bad literal", `tru`, Options{}, 3, "literal true"},
		{"bad literal case", `True`, Options{}, 0, "character 'T'"},
		{"misspelt null", `nul1`, Options{}, 3, "literal null"},
		{"comment", `[1 /* c */]`, Options{}, 3, "'/'"},
		{"BOM", "\xef\xbb\xbf1", Options{}, 0, "byte 0xef"},
		{"form feed as space", "\f1", Options{}, 0, "byte 0x0c"},
		{"too deep default", strings.Repeat("[", 1001) + strings.Repeat("]", 1001), Options{}, 1000, "nesting deeper than 1000"},
		{"too deep", `[[[1]]]`, Options{MaxDepth: 2}, 2, "nesting deeper than 2"},
		{"too deep object", `{"a":{"b":{}}}`, Options{MaxDepth: 2}, 10, "nesting deeper than 2"},
		{"duplicate key", `{"a":1,"a":2}`, Options{RejectDuplicateKeys: true}, 7, `duplicate key "a"`},
		{"duplicate key escaped", `{"a":1,"\u0061":2}`, Options{RejectDuplicateKeys: true}, 7, `duplicate key "a"`},
		{"duplicate key escaped first", `{"\u00e9":1,"é":2}`, Options{RejectDuplicateKeys: true}, 12, `duplicate key "é"`},
		{"duplicate key surrogate pair", `{"😀":1,"\ud83d\ude00":2}`, Options{RejectDuplicateKeys: true}, 10, `duplicate key`},
		{"duplicate key nested", `[{"b":{"x":1,"y":2,"x":3}}]`, Options{RejectDuplicateKeys: true}, 19, `duplicate key "x"`},
		{"duplicate key after nested", `{"a":{"b":1},"c":2,"a":3}`, Options{RejectDuplicateKeys: true}, 19, `duplicate key "a"`},
		{"duplicate empty key", `{"":1,"":2}`, Options{RejectDuplicateKeys: true}, 6, `duplicate key ""`},
		{"duplicate key in big object", manyKeys(`"k7"`), Options{RejectDuplicateKeys: true}, 311, `duplicate key "k7"`},
		{"duplicate key in big object escaped", manyKeys(`"k\u0037"`), Options{RejectDuplicateKeys: true}, 311, `duplicate key "k7"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Compact(dst, []byte(tc.in), tc.opts)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Compact(%q) = %q, %v; want a *SyntaxError", tc.in, got, err)
			}
			if string(got) != "keep" {
				t.Errorf("dst changed to %q", got)
			}
			if se.Offset != tc.offset || !strings.Contains(se.Msg, tc.msg) {
				t.Errorf("error %q at %d, want %q at %d", se.Msg, se.Offset, tc.msg, tc.offset)
			}
			if !strings.Contains(err.Error(), "at byte") {
				t.Errorf("Error() = %q does not say where", err.Error())
			}
		})
	}
}

func TestDuplicateKeysAllowedByDefault(t *testing.T) {
	got, err := Compact(nil, []byte(`{"a": 1, "a": 2}`), Options{})
	if err != nil || string(got) != `{"a":1,"a":2}` {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < 5000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k`)
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(`":{"k":[` + strings.Repeat(`{"k":1},`, 3) + `{"k":2}]}`)
	}
	b.WriteString("}")
	// Keys repeat after 7*26 entries: a duplicate.
	if _, err := Compact(nil, []byte(b.String()), Options{RejectDuplicateKeys: true}); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("err = %v, want a duplicate key", err)
	}
	var u strings.Builder
	u.WriteString("[{")
	for i := 0; i < 5000; i++ {
		if i > 0 {
			u.WriteString(", ")
		}
		u.WriteString(`"` + strings.Repeat("k", i%3+1) + strconv.Itoa(i) + `" : {"a":1,"b":{"a":2}}`)
	}
	u.WriteString("}]")
	got, err := Compact(nil, []byte(u.String()), Options{RejectDuplicateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(u.String())); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("output differs from encoding/json's Compact")
	}
}

func TestDeepNestingWithinLimit(t *testing.T) {
	in := strings.Repeat(`[{"a":`, 500) + "1" + strings.Repeat("}]", 500)
	got, err := Compact(nil, []byte(in), Options{RejectDuplicateKeys: true})
	if err != nil || string(got) != in {
		t.Fatalf("err %v", err)
	}
	// A large limit costs no recursion.
	in = strings.Repeat("[", 1_000_000) + strings.Repeat("]", 1_000_000)
	if _, err := Compact(nil, []byte(in), Options{MaxDepth: 1_000_000}); err != nil {
		t.Fatal(err)
	}
}

// A string with every kind of byte the word-at-a-time scan must notice, at
// every alignment.
func TestStringScanAlignment(t *testing.T) {
	for pad := 0; pad < 17; pad++ {
		p := strings.Repeat("a", pad)
		for _, bad := range []string{"\x00", "\x1f", "\xff", "\"", "\\q"} {
			in := `"` + p + bad + strings.Repeat("b", 20) + `"`
			if bad == `"` {
				in += "x" // the string ended early: trailing data
			}
			if _, err := Compact(nil, []byte(in), Options{}); err == nil {
				t.Errorf("pad %d %q: accepted", pad, bad)
			}
		}
		for _, good := range []string{"\x7f", "é", "\\\"", "\\\\", "~", " ", "!", "#", "[", "]"} {
			in := `"` + p + good + strings.Repeat("b", 20) + `"`
			if got, err := Compact(nil, []byte(in), Options{}); err != nil || string(got) != in {
				t.Errorf("pad %d %q: %q, %v", pad, good, got, err)
			}
		}
	}
}

func checkNoSpaceOutsideStrings(t *testing.T, out []byte) {
	t.Helper()
	inString := false
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && isSpace(c):
			t.Fatalf("whitespace at %d outside strings in %q", i, out)
		}
	}
}

func FuzzCompact(f *testing.F) {
	for _, s := range []string{
		`{"script": "def main(x): return x", "input": [1, 2.5e3, {"a": null}], "timeout_ms": 5}`,
		`"\ud83d\ude00 \u00e9 <&>"`, `"\ud800"`, "\"\xff\"", `{"a":1,"\u0061":2}`, `[01]`, `-0.0E-0`,
		`NaN`, " [ true , false , null ] ", `{"a":{"b":[]}}`, "\"\x7f\u2028\"", `1.`, `[1,]`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, src []byte, dups bool) {
		out, err := Compact(nil, src, Options{RejectDuplicateKeys: dups, MaxDepth: 64})
		if !json.Valid(src) {
			if err == nil {
				t.Fatalf("accepted %q, which encoding/json refuses", src)
			}
			return
		}
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > int64(len(src)) {
				t.Fatalf("error %v is not a *SyntaxError within src", err)
			}
			if dups {
				if _, plainErr := Compact(nil, src, Options{MaxDepth: 64}); plainErr == nil && !hasDuplicateKey(t, src) {
					t.Fatalf("refused %q (%v), whose objects repeat no key", src, err)
				}
			}
			return
		}
		if dups && hasDuplicateKey(t, src) {
			t.Fatalf("accepted %q, which repeats a key", src)
		}
		if !json.Valid(out) {
			t.Fatalf("output %q of %q is not valid JSON", out, src)
		}
		checkNoSpaceOutsideStrings(t, out)
		var want bytes.Buffer
		if err := json.Compact(&want, src); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("Compact(%q) = %q, encoding/json's Compact %q", src, out, want.Bytes())
		}
		again, err := Compact(nil, out, Options{RejectDuplicateKeys: dups, MaxDepth: 64})
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("compact form %q is not a fixed point: %q, %v", out, again, err)
		}
	})
}

// hasDuplicateKey says whether an object of src, which Compact accepts
// without RejectDuplicateKeys, repeats a key: encoding/json's tokens, with
// a set of keys for each open object.
func hasDuplicateKey(t *testing.T, src []byte) bool {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	// An open object has a set of its keys; an open array has nil.
	type object struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*object
	valueDone := func() {
		if len(stack) > 0 && stack[len(stack)-1] != nil {
			stack[len(stack)-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatalf("encoding/json cannot read %q: %v", src, err)
		}
		if len(stack) > 0 && stack[len(stack)-1] != nil && stack[len(stack)-1].wantKey {
			top := stack[len(stack)-1]
			if key, ok := tok.(string); ok {
				if top.keys[key] {
					return true
				}
				top.keys[key], top.wantKey = true, false
				continue
			}
			stack = stack[:len(stack)-1] // the object's '}'
			valueDone()
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// eightMiBOfAngles is an array of strings full of '<', about 8 MiB.
func eightMiBOfAngles() []byte {
	elem := `"` + strings.Repeat("<", 1022) + `"`
	var b bytes.Buffer
	b.WriteString("[")
	for b.Len() < 8<<20-len(elem)-2 {
		if b.Len() > 1 {
			b.WriteString(", ")
		}
		b.WriteString(elem)
	}
	b.WriteString("]")
	return b.Bytes()
}

func BenchmarkCompact8MiB(b *testing.B) {
	src := eightMiBOfAngles()
	dst := make([]byte, 0, len(src))
	b.SetBytes(int64(len(src)))
	cpu := cpuclock.Start()
	n := 0
	for b.Loop() {
		if _, err := Compact(dst[:0], src, Options{RejectDuplicateKeys: true}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	cpu.Report(b, n)
}

func TestCompact8MiBKeepsAngles(t *testing.T) {
	src := eightMiBOfAngles()
	out, err := Compact(nil, src, Options{RejectDuplicateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(out, []byte("<")) != bytes.Count(src, []byte("<")) || bytes.Contains(out, []byte(`\u003c`)) {
		t.Error("angle brackets were escaped")
	}
	if len(out) != len(src)-bytes.Count(src, []byte(" ")) {
		t.Errorf("compact length %d", len(out))
	}
}

// shortKeys is an object of n distinct keys of one to four letters or
// digits, each with the value 0: the most keys a body can hold.
func shortKeys(n int) []byte {
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 0, 9*n)
	b = append(b, '{')
	var key []byte
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		key = key[:0]
		for j := i; ; j = j/len(alpha) - 1 {
			key = append(key, alpha[j%len(alpha)])
			if j < len(alpha) {
				break
			}
		}
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, `":0`...)
	}
	return append(b, '}')
}

// A big object's keys are checked without a copy of any key: the
// allocations are the growth of one slice, whatever the count of keys (a
// Go map of the keys took one allocation a key and eleven times the body).
func TestManyKeysBoundedAllocs(t *testing.T) {
	src := shortKeys(900_000)
	dst := make([]byte, 0, len(src))
	var err error
	allocs := testing.AllocsPerRun(1, func() {
		_, err = Compact(dst[:0], src, Options{RejectDuplicateKeys: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs > 64 {
		t.Errorf("%v allocations for an object of 900k keys, want at most 64", allocs)
	}
	// The same keys, one repeated at the end: found when the object closes.
	dup := append(src[:len(src)-1:len(src)-1], `,"b":1}`...)
	_, err = Compact(nil, dup, Options{RejectDuplicateKeys: true})
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != int64(len(src)) || !strings.Contains(se.Msg, `duplicate key "b"`) {
		t.Errorf("err = %v, want the duplicate key \"b\" at byte %d", err, len(src))
	}
}

// The checks of a big object, sorted at its end, find what comparing each
// key with the earlier ones would: whether a key repeats (after
// unescaping), and the first repeat in the text.
func TestDuplicateKeysMatchComparingEachKey(t *testing.T) {
	// A few spellings of a few keys, so that objects of every size repeat
	// keys, with and without escapes.
	spellings := [][2]string{
		{`"a"`, "a"}, {`"\u0061"`, "a"}, {`"b"`, "b"}, {`"\/"`, "/"}, {`"/"`, "/"},
		{`"é"`, "é"}, {`"\u00e9"`, "é"}, {`""`, ""}, {`"\ud83d\ude00"`, "😀"}, {`"😀"`, "😀"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 2, 15, 16, 17, 18, 40, 200} {
		for trial := 0; trial < 200; trial++ {
			var b strings.Builder
			b.WriteString(`[{"x":1},{`)
			seen := map[string]bool{}
			wantOffset := -1
			for i := 0; i < size; i++ {
				if i > 0 {
					b.WriteString(",")
				}
				// Mostly distinct numbered keys, some drawn from the
				// spellings above.
				var raw, key string
				if rng.IntN(size) < 3 {
					sp := spellings[rng.IntN(len(spellings))]
					raw, key = sp[0], sp[1]
				} else {
					n := strconv.Itoa(rng.IntN(4 * size))
					raw, key = `"k`+n+`"`, "k"+n
					if rng.IntN(2) == 0 {
						raw = `"\u006b` + n + `"`
					}
				}
				if seen[key] && wantOffset < 0 {
					wantOffset = b.Len()
				}
				seen[key] = true
				// A nested object with keys of its own, which its
				// parent's check must not see.
				b.WriteString(raw + `:{"a":[],"k1":0}`)
			}
			b.WriteString("}]")
			src := b.String()
			_, err := Compact(nil, []byte(src), Options{RejectDuplicateKeys: true})
			if wantOffset < 0 {
				if err != nil {
					t.Fatalf("Compact(%s): %v, want no error", src, err)
				}
				continue
			}
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset != int64(wantOffset) || !strings.Contains(se.Msg, "duplicate key") {
				t.Fatalf("Compact(%s) = %v, want a duplicate key at byte %d", src, err, wantOffset)
			}
		}
	}
}

// An object of more than linearKeys keys is checked when it closes: an
// error after its repeated key, further in the object, is the one reported.
func TestDuplicateInBigObjectFoundAtItsEnd(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{`)
	for i := 0; i < 20; i++ {
		b.WriteString(`"k` + strconv.Itoa(i) + `":1,`)
	}
	b.WriteString(`"k3":1,"x":{"y":1,"y":2}}`)
	_, err := Compact(nil, []byte(b.String()), Options{RejectDuplicateKeys: true})
	if err == nil || !strings.Contains(err.Error(), `duplicate key "y"`) {
		t.Errorf("err = %v, want the nested object's duplicate key \"y\"", err)
	}
}

// BenchmarkCompactManyKeys is the reviewer's body: one object of 950k
// short keys (8 MB). B/op is the memory the duplicate key check costs.
func BenchmarkCompactManyKeys(b *testing.B) {
	src := shortKeys(950_000)
	dst := make([]byte, 0, len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	cpu := cpuclock.Start()
	n := 0
	for b.Loop() {
		if _, err := Compact(dst[:0], src, Options{RejectDuplicateKeys: true}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	cpu.Report(b, n)
}

// Keys whose hashes collide are told apart by their bytes: every key of
// this object is given one hash, so each comparison reads the keys.
func TestSortedUniqueWithCollidingHashes(t *testing.T) {
	tests := []struct {
		src    string
		offset int // of the reported key; -1: none
	}{
		{`{"a":0,"b":0,"c":0}`, -1},
		{`{"a":0,"b":0,"\u0062":0,"a":0}`, 13},
		{`{"x":0,"a":0,"b":0,"a":0,"b":0}`, 19},
		{`{"\/":0,"é":0,"/":0,"\u00e9":0}`, 15},
	}
	for _, tc := range tests {
		s := scanner{src: []byte(tc.src)}
		for i := 0; i < len(tc.src); i++ {
			// Each key follows '{' or ','.
			if tc.src[i] == '"' && (tc.src[i-1] == '{' || tc.src[i-1] == ',') {
				s.keys = append(s.keys, keyRef(uint64(7)<<32|uint64(i)))
			}
		}
		err := s.sortedUnique(s.keys)
		var se *SyntaxError
		switch {
		case tc.offset < 0 && err != nil:
			t.Errorf("%s: %v, want no error", tc.src, err)
		case tc.offset >= 0 && (!errors.As(err, &se) || se.Offset != int64(tc.offset)):
			t.Errorf("%s: %v, want a duplicate key at byte %d", tc.src, err, tc.offset)
		}
	}
}
