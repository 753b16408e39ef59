package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// tokens reads src to its end, each token as "kind raw".
func tokens(t *testing.T, src string, opts Options) ([]string, error) {
	t.Helper()
	r := NewReader([]byte(src), opts)
	var got []string
	for {
		tok, err := r.Next()
		if err != nil {
			return got, err
		}
		if tok.Kind == End {
			return got, nil
		}
		got = append(got, tok.Kind.String()+" "+string(tok.Raw))
		if string(src[tok.Offset:tok.Offset+len(tok.Raw)]) != string(tok.Raw) {
			t.Fatalf("token %q is not at offset %d of %q", tok.Raw, tok.Offset, src)
		}
	}
}

func TestReaderTokens(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string
	}{
		{` 1 `, `number 1`},
		{`{"a" : [1, "x\n", true, false, null], "b": {}, "c": []}`,
			`object {|key "a"|array [|number 1|string "x\n"|true true|false false|null null|end of array ]|` +
				`key "b"|object {|end of object }|key "c"|array [|end of array ]|end of object }`},
		{"[ [ ] , { \"k\" :\t-0.5e3 } ]", `array [|array [|end of array ]|object {|key "k"|number -0.5e3|end of object }|end of array ]`},
	} {
		got, err := tokens(t, tc.src, Options{RejectDuplicateKeys: true})
		if err != nil || strings.Join(got, "|") != tc.want {
			t.Errorf("%s: %v, %v\nwant %s", tc.src, strings.Join(got, "|"), err, tc.want)
		}
	}
}

// Reading token by token refuses what Compact refuses, with the same
// error: one scanner under both.
func TestReaderRejectsAsCompact(t *testing.T) {
	for _, src := range []string{`{"a":1,"a":2}`, `[1,]`, `{"a" 1}`, `[1 2]`, `{} {}`, `"\ud800"`, "\"\xff\"", `[[[1]]]`, `{"a":{"b":{}}}`, ``, `[`, `{"a":`} {
		opts := Options{RejectDuplicateKeys: true, MaxDepth: 2}
		_, want := Compact(nil, []byte(src), opts)
		_, err := tokens(t, src, opts)
		if want == nil || err == nil || err.Error() != want.Error() {
			t.Errorf("%q: %v, Compact says %v", src, err, want)
		}
	}
}

func TestTokenText(t *testing.T) {
	r := NewReader([]byte(`{"k\u0065y": "a\"b\\c\/d\n\u00e9\ud83d\ude00", "plain": "xyz"}`), Options{RejectDuplicateKeys: true})
	var texts []string
	for {
		tok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if tok.Kind == End {
			break
		}
		if tok.Kind == Key || tok.Kind == String {
			texts = append(texts, tok.Text())
			if got := string(tok.AppendText([]byte("<"))); got != "<"+tok.Text() {
				t.Errorf("AppendText %q, Text %q", got, tok.Text())
			}
		}
	}
	want := []string{"key", "a\"b\\c/d\né😀", "plain", "xyz"}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Errorf("texts %q, want %q", texts, want)
	}
}

// AppendValue reads one value whole, in compact form, wherever a value
// comes next; More tells an array's or object's end.
func TestReaderAppendValue(t *testing.T) {
	src := []byte(`{ "a" : [ 1 , { "x" : " s p " } ] , "b" : [ true , [ ] , "\u0041" ] }`)
	r := NewReader(src, Options{RejectDuplicateKeys: true})
	var got []string
	if tok, err := r.Next(); err != nil || tok.Kind != ObjectStart {
		t.Fatal(tok, err)
	}
	for r.More() {
		key, err := r.Next()
		if err != nil || key.Kind != Key {
			t.Fatal(key, err)
		}
		if key.Text() == "a" {
			v, err := r.AppendValue([]byte("a="))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(v))
			continue
		}
		if tok, err := r.Next(); err != nil || tok.Kind != ArrayStart {
			t.Fatal(tok, err)
		}
		for r.More() {
			v, err := r.AppendValue(nil)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(v))
		}
		if tok, err := r.Next(); err != nil || tok.Kind != ArrayEnd {
			t.Fatal(tok, err)
		}
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	want := `a=[1,{"x":" s p "}]|true|[]|"\u0041"`
	if strings.Join(got, "|") != want {
		t.Errorf("got %s, want %s", strings.Join(got, "|"), want)
	}
	if r.More() {
		t.Error("More after the end")
	}
}

func TestReaderAppendValueWhereNoValueIs(t *testing.T) {
	r := NewReader([]byte(`[]`), Options{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	_, err := r.AppendValue(nil)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 1 || !strings.Contains(se.Msg, "expected a value, found end of array") {
		t.Errorf("err = %v", err)
	}
}

// The first error ends the reading: every later call returns it.
func TestReaderErrorIsSticky(t *testing.T) {
	r := NewReader([]byte(`[1, NaN, 2]`), Options{})
	r.Next()
	r.Next()
	_, first := r.Next()
	if first == nil || !strings.Contains(first.Error(), "NaN") {
		t.Fatalf("err = %v, want NaN", first)
	}
	if _, err := r.Next(); err != first {
		t.Errorf("Next after the error: %v", err)
	}
	if _, err := r.AppendValue(nil); err != first {
		t.Errorf("AppendValue after the error: %v", err)
	}
	if err := r.SkipValue(); err != first {
		t.Errorf("SkipValue after the error: %v", err)
	}
	if err := r.Finish(); err != first {
		t.Errorf("Finish after the error: %v", err)
	}
	if r.More() {
		t.Error("More after the error")
	}
}

// Finish checks the rest of the text from wherever the reading stopped,
// duplicate keys of the objects left open included.
func TestReaderFinishFromInside(t *testing.T) {
	for _, tc := range []struct {
		src   string
		reads int
		msg   string // "" for none
	}{
		{`{"a": [1, {"b": 2}], "c": 3}`, 3, ""},
		{`{"a": [1, {"b": 2}], "c": 3}`, 0, ""},
		{`{"a": [1, {"b": 2}], "a": 3}`, 3, `duplicate key "a"`},
		{`{"a": [1, {"b": 2, "b": 1}]}`, 5, `duplicate key "b"`},
		{`{"a": [1, {"b": 2}], "c": 3} 4`, 2, "after the top-level value"},
		{`{"a": [1, {"b": 2}]`, 4, "end of input inside object"},
	} {
		r := NewReader([]byte(tc.src), Options{RejectDuplicateKeys: true})
		for range tc.reads {
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
		}
		err := r.Finish()
		if tc.msg == "" && err != nil || tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("%s after %d tokens: %v, want %q", tc.src, tc.reads, err, tc.msg)
		}
	}
}

func TestReaderSkipValueAndOffset(t *testing.T) {
	src := []byte(`[{"a": [1, 2]}, "x"]`)
	r := NewReader(src, Options{})
	r.Next()
	if err := r.SkipValue(); err != nil {
		t.Fatal(err)
	}
	if r.InputOffset() != len(`[{"a": [1, 2]}`) {
		t.Errorf("offset %d after the first element", r.InputOffset())
	}
	if tok, err := r.Next(); err != nil || tok.Kind != String || tok.Text() != "x" {
		t.Errorf("then %v %v", tok, err)
	}
}

// FuzzReader: reading token by token agrees with Compact, on the verdict
// and on the text, and a string token's Text is what encoding/json reads.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		`{"script": "x", "input": [1, 2.5e3, {"a": null}], "timeout_ms": 5}`,
		`"\ud83d\ude00 \u00e9 <&>"`, `{"a":1,"\u0061":2}`, `[01]`, " [ true , false , null ] ", `{"a":{"b":[]}}`, `[1,]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		opts := Options{RejectDuplicateKeys: true, MaxDepth: 64}
		want, wantErr := Compact(nil, src, opts)
		r := NewReader(src, opts)
		var out []byte
		var err error
		// Rebuild the compact text from the tokens; "after" says a value
		// or a key ended, so a comma comes before the next element.
		after := false
		for {
			var tok Token
			if tok, err = r.Next(); err != nil || tok.Kind == End {
				break
			}
			switch tok.Kind {
			case ObjectEnd, ArrayEnd:
				out = append(out, tok.Raw...)
				after = true
				continue
			}
			if after {
				out = append(out, ',')
			}
			out = append(out, tok.Raw...)
			switch tok.Kind {
			case Key:
				out = append(out, ':')
				after = false
			case ObjectStart, ArrayStart:
				after = false
			default:
				after = true
			}
			if tok.Kind == Key || tok.Kind == String {
				var s string
				if jerr := json.Unmarshal(tok.Raw, &s); jerr != nil || s != tok.Text() {
					t.Fatalf("Text %q, encoding/json reads %q (%v)", tok.Text(), s, jerr)
				}
			}
		}
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("%q: tokens %v, Compact %v", src, err, wantErr)
		}
		if err == nil && !bytes.Equal(out, want) {
			t.Fatalf("%q: tokens give %q, Compact %q", src, out, want)
		}
	})
}

// Reset starts a new text, keeping nothing of the last but its buffers.
func TestReaderReset(t *testing.T) {
	r := NewReader([]byte(`{"a": {"b": 1, "b": 2}}`), Options{RejectDuplicateKeys: true})
	if err := r.Finish(); err == nil {
		t.Fatal("duplicate key accepted")
	}
	r.Reset([]byte(` [{"b": 1}, {"b": 2}] `), Options{RejectDuplicateKeys: true})
	got, err := r.AppendValue(nil)
	if err != nil || string(got) != `[{"b":1},{"b":2}]` {
		t.Fatalf("after Reset: %q, %v", got, err)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}
