package runner

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckFileName: names a client could not save as they are on
// Windows or macOS are refused, with the reason; ordinary names, other
// scripts and spaces inside a name pass.
func TestCheckFileName(t *testing.T) {
	for _, name := range []string{
		"a.txt", "plots/chart 1 é.png", "データ.csv", "Ünïcödé/résumé.pdf", "x.tar.gz", ".hidden",
	} {
		if err := CheckFileName(name); err != nil {
			t.Errorf("CheckFileName(%q) = %v, want nil", name, err)
		}
	}
	for _, tc := range []struct{ name, why string }{
		{"D:evil.txt", "Windows refuses"},
		{"a.txt:Zone.Identifier", "Windows refuses"},
		{"report?.csv", "Windows refuses"},
		{"a*b", "Windows refuses"},
		{`say"hi"`, "Windows refuses"},
		{"a<b>", "Windows refuses"},
		{"a|b", "Windows refuses"},
		{"CON", "device"},
		{"con", "device"},
		{"nul.txt", "device"},
		{"NUL .txt", "device"},
		{"dir/Aux.tar.gz", "device"},
		{"prn/x.txt", "device"},
		{"COM1", "device"},
		{"lpt9.log", "device"},
		{"COM¹.txt", "device"},
		{"CONIN$", "device"},
		{"x.txt ", "dot or a space"},
		{"x.txt.", "dot or a space"},
		{"dir./x", "dot or a space"},
		{"dir /x", "dot or a space"},
		{"...", "dot or a space"},
		{"zero\u200bwidth.txt", "invisible"},
		{"joiner\u200d.txt", "invisible"},
		{"\ufeffbom.txt", "invisible"},
		{"soft\u00adhyphen", "invisible"},
		{"word\u2060joiner", "invisible"},
		{"nbsp\u00a0.txt", "invisible"},
		{"ideographic\u3000space", "invisible"},
		{"line\u2028sep", "invisible"},
		{"variation\ufe0f.txt", "invisible"},
		{"hangul\u3164filler", "invisible"},
		{"private\uf022.txt", "private-use"},
		{"nonchar\ufffe", "invisible"},
		{"unassigned\U000e0080", "unassigned"},
		// The host-safety rules still hold.
		{"a/../b", "relative path"},
		{"r\u202egnp.exe", "bidirectional"},
		{"a\\b", "backslash"},
	} {
		err := CheckFileName(tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("CheckFileName(%q) = %v, want a refusal saying %q", tc.name, err, tc.why)
		}
	}
	// COM and LPT alone, or with two digits, are ordinary names.
	for _, name := range []string{"COM", "LPT", "COM10", "computer.txt", "console.log", "nul1", "auxiliary"} {
		if err := CheckFileName(name); err != nil {
			t.Errorf("CheckFileName(%q) = %v, want nil", name, err)
		}
	}
}

// TestCheckFileNames: names that are one on a file system ignoring case
// or normalisation are refused as a pair, naming both; directories that
// merge are allowed.
func TestCheckFileNames(t *testing.T) {
	composed, decomposed := "caf\u00e9.txt", "cafe\u0301.txt"
	for _, tc := range []struct {
		names []string
		pair  [2]string
	}{
		{[]string{"A.TXT", "a.txt"}, [2]string{"A.TXT", "a.txt"}},
		{[]string{composed, decomposed}, [2]string{composed, decomposed}},
		{[]string{"Caf\u00c9.txt", decomposed}, [2]string{"Caf\u00c9.txt", decomposed}},
		{[]string{"stra\u00dfe.csv", "STRASSE.csv"}, [2]string{"stra\u00dfe.csv", "STRASSE.csv"}},
		{[]string{"Dir/x.png", "dir/X.PNG"}, [2]string{"Dir/x.png", "dir/X.PNG"}},
		{[]string{"data", "DATA/part1.csv"}, [2]string{"data", "DATA/part1.csv"}},
		{[]string{"b.txt", "x/y/Z", "x/y/z/w"}, [2]string{"x/y/Z", "x/y/z/w"}},
	} {
		err := CheckFileNames(tc.names)
		if err == nil || !strings.Contains(err.Error(), tc.pair[0]) || !strings.Contains(err.Error(), tc.pair[1]) {
			t.Errorf("CheckFileNames(%q) = %v, want the pair %q refused", tc.names, err, tc.pair)
		}
	}
	for _, names := range [][]string{
		nil, {"a.txt"}, {"a.txt", "b.txt"}, {"A/x.txt", "a/y.txt"}, {"a.txt", "a.txt.bak"}, {"é", "e"},
	} {
		if err := CheckFileNames(names); err != nil {
			t.Errorf("CheckFileNames(%q) = %v, want nil", names, err)
		}
	}
}

// TestJudgeFilesPortability: an output name that cannot be saved
// portably, or two that collide, are output_files_invalid (the script's
// doing, within the sandbox's own rules); a name the sandbox itself must
// have refused stays a protocol error.
func TestJudgeFilesPortability(t *testing.T) {
	limits := DefaultConfig().Limits
	for _, tc := range []struct {
		names []string
		kind  Kind
	}{
		{[]string{"nul.txt"}, KindOutputFilesInvalid},
		{[]string{"a.txt:Zone.Identifier"}, KindOutputFilesInvalid},
		{[]string{"A.TXT", "a.txt"}, KindOutputFilesInvalid},
		{[]string{"../x"}, KindProtocolError},
	} {
		sent := make([]wireFile, len(tc.names))
		for i, n := range tc.names {
			sent[i] = wireFile{Name: n, Content: []byte("x")}
		}
		_, err := judgeFiles(sent, limits)
		var se *ScriptError
		if !errors.As(err, &se) || se.Kind != tc.kind {
			t.Errorf("judgeFiles(%q) = %v, want %s", tc.names, err, tc.kind)
		}
	}
}
