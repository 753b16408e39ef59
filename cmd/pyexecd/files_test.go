package main

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestFiles: a request's files are in the sandbox's working directory
// before main runs; what the script leaves in /tmp/output comes back with
// name, size and media type; both directions are capped and named safely,
// and nothing of one request's files reaches the next.
func TestFiles(t *testing.T) {
	s := startServer(t, "", "--warm", "2", "--max-files", "3", "--max-files-bytes", "65536")

	t.Run("in and out, JSON", func(t *testing.T) {
		r := s.mustSucceed(t, `import json, os
import pandas as pd
def main():
    df = pd.read_csv("data.csv")
    params = json.load(open("cfg/params.json"))
    df["total"] = df["a"] * params["factor"] + df["b"]
    df.to_csv("output/summary.csv", index=False)
    os.makedirs("output/nested")
    with open("output/nested/note.txt", "w") as f:
        f.write("done")
    os.symlink("/etc/passwd", "output/link")
    print("rows", len(df))
    return sorted(os.listdir("."))
`, map[string]any{"files": map[string]string{"data.csv": b64("a,b\n1,2\n3,4\n"), "cfg/params.json": b64(`{"factor": 10}`)}}, nil)
		if string(r.Result) != `["cfg","data.csv","output"]` || r.Stdout != "rows 2\n" {
			t.Errorf("result %s stdout %q", r.Result, r.Stdout)
		}
		if len(r.Files) != 2 {
			t.Fatalf("files %+v, want summary.csv and nested/note.txt (the link is not followed)", r.Files)
		}
		summary := r.Files["summary.csv"]
		if string(summary.Content) != "a,b,total\n1,2,12\n3,4,34\n" || summary.Size != len(summary.Content) || summary.MediaType != "text/csv" {
			t.Errorf("summary.csv = %+v", summary)
		}
		if note := r.Files["nested/note.txt"]; string(note.Content) != "done" || note.MediaType != "text/plain" {
			t.Errorf("nested/note.txt = %+v", note)
		}
	})

	t.Run("no files, no files field", func(t *testing.T) {
		raw := s.rawExecute(t, "def main():\n    return 1\n")
		if bytes.Contains(raw, []byte(`"files"`)) {
			t.Errorf("an answer without files names them: %s", raw)
		}
	})

	t.Run("a request's files are gone for the next", func(t *testing.T) {
		s.mustSucceed(t, "def main():\n    open('output/keep.txt', 'w').write('x')\n", map[string]any{"files": map[string]string{"secret.txt": b64("s3cret")}}, nil)
		var left []string
		s.mustSucceed(t, "import os\ndef main():\n    return [os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs]\n", nil, &left)
		if len(left) != 0 {
			t.Errorf("a later sandbox sees %v", left)
		}
	})

	t.Run("msgpack: bin in, bin out", func(t *testing.T) {
		body, _ := msgpack.Marshal(map[string]any{
			"script": "def main():\n    data = open('blob.bin', 'rb').read()\n    open('output/reversed.bin', 'wb').write(data[::-1])\n    return len(data)\n",
			"files":  map[string][]byte{"blob.bin": {0, 1, 2, 255}},
		})
		resp, err := http.Post(s.url+"/execute", "application/msgpack", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct {
			Result int `msgpack:"result"`
			Files  map[string]struct {
				Content   []byte `msgpack:"content"`
				Size      int    `msgpack:"size"`
				MediaType string `msgpack:"media_type"`
			} `msgpack:"files"`
		}
		if err := msgpack.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		f := got.Files["reversed.bin"]
		if got.Result != 4 || !bytes.Equal(f.Content, []byte{255, 2, 1, 0}) || f.Size != 4 || f.MediaType != "application/octet-stream" {
			t.Errorf("got %+v", got)
		}
	})

	t.Run("batch: files at the top level", func(t *testing.T) {
		r := s.mustSucceed(t, "def main(x):\n    open('output/%d.txt' % x, 'w').write(str(x * x))\n    return x\n", map[string]any{"inputs": []int{2, 3}}, nil)
		if len(r.Files) != 2 || string(r.Files["3.txt"].Content) != "9" {
			t.Errorf("files %+v", r.Files)
		}
	})

	t.Run("input caps and names", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			files  any
			status int
			want   string
		}{
			{"four files over a cap of three", map[string]string{"a": "", "b": "", "c": "", "d": ""}, 413, "over the cap of 3"},
			{"bytes over the cap", map[string]string{"big": b64(strings.Repeat("x", 65537))}, 413, "over the cap of 65536"},
			{"parent directory", map[string]string{"../escape": ""}, 400, "'..'"},
			{"deeper parent", map[string]string{"a/../../escape": ""}, 400, "'..'"},
			{"absolute", map[string]string{"/etc/cron.d/x": ""}, 400, "relative path"},
			{"into the output directory", map[string]string{"output/x": ""}, 400, "output directory"},
			{"a file and its directory", map[string]string{"a": "", "a/b": ""}, 400, "cannot be the directory"},
			{"control character", map[string]string{"a\nb": ""}, 400, "control character"},
			{"not base64", map[string]string{"a": "***"}, 400, "base64"},
			{"not an object", []string{"a"}, 400, "must be an object"},
			{"a drive letter", map[string]string{"D:evil.txt": ""}, 400, "Windows refuses"},
			{"a device name", map[string]string{"nul.txt": ""}, 400, "device"},
			{"a trailing space", map[string]string{"x.txt ": ""}, 400, "dot or a space"},
			{"a zero-width space", map[string]string{"a\u200b.txt": ""}, 400, "invisible"},
			{"one name in two cases", map[string]string{"A.TXT": "", "a.txt": ""}, 400, "same name"},
			{"one name composed and decomposed", map[string]string{"caf\u00e9": "", "cafe\u0301": ""}, 400, "same name"},
		} {
			r := s.execute(t, "def main():\n    return 1\n", map[string]any{"files": tc.files})
			if r.Status != tc.status || r.Error == nil || !strings.Contains(r.Error.Message, tc.want) {
				t.Errorf("%s: status %d error %+v, want %d mentioning %q", tc.name, r.Status, r.Error, tc.status, tc.want)
			}
		}
	})

	t.Run("output caps and names", func(t *testing.T) {
		r := s.mustFail(t, "def main():\n    print('made them')\n    for i in range(4):\n        open('output/%d' % i, 'w').write('x')\n",
			nil, "output_files_limit", http.StatusUnprocessableEntity)
		if r.Stdout != "made them\n" {
			t.Errorf("stdout %q, want what the script printed", r.Stdout)
		}
		s.mustFail(t, "def main():\n    open('output/big', 'wb').write(b'x' * 65537)\n", nil, "output_files_limit", http.StatusUnprocessableEntity)
		r = s.mustFail(t, "def main(x):\n    print('item', x)\n    open('output/%d' % x, 'w').write('x')\n",
			map[string]any{"inputs": []int{1, 2, 3, 4}}, "output_files_limit", http.StatusUnprocessableEntity)
		if r.Stdout != "item 1\nitem 2\nitem 3\nitem 4\n" {
			t.Errorf("a batch over the file cap lost what its items printed: stdout %q", r.Stdout)
		}
		s.mustFail(t, "def main():\n    open('output/a\\x01b', 'w').write('x')\n", nil, "output_files_invalid", http.StatusUnprocessableEntity)
	})

	// Names a client on Windows or macOS could not save as they are come
	// back as output_files_invalid, with what the script printed; so do
	// two names that are one there. Each would pass on this host's file
	// system (TestCheckFileName has the whole table).
	t.Run("output names that are not portable", func(t *testing.T) {
		for _, tc := range []struct{ names, want string }{
			{`["D:evil.txt"]`, "Windows refuses"},
			{`["a.txt:Zone.Identifier"]`, "Windows refuses"},
			{`["CON"]`, "device"},
			{`["nul.txt"]`, "device"},
			{`["x.txt "]`, "dot or a space"},
			{`["x."]`, "dot or a space"},
			{`["zero\u200bwidth"]`, "invisible"},
			{`["A.TXT", "a.txt"]`, "same name"},
			{`["caf\u00e9", "cafe\u0301"]`, "same name"},
			{`["data", "DATA/part.csv"]`, "directory of"},
		} {
			script := "import os\ndef main():\n    print('wrote')\n    for n in " + tc.names +
				":\n        os.makedirs(os.path.dirname('output/' + n), exist_ok=True)\n        open('output/' + n, 'w').write('x')\n"
			if tc.names == `["data", "DATA/part.csv"]` {
				script = "import os\ndef main():\n    print('wrote')\n    os.makedirs('output/DATA')\n    open('output/DATA/part.csv', 'w').write('x')\n    open('output/data', 'w').write('x')\n"
			}
			r := s.execute(t, script, nil)
			if r.Status != http.StatusUnprocessableEntity || r.Error == nil || r.Error.Type != "output_files_invalid" ||
				!strings.Contains(r.Error.Message, tc.want) || r.Stdout != "wrote\n" {
				t.Errorf("%s: status %d error %+v stdout %q, want 422 output_files_invalid mentioning %q", tc.names, r.Status, r.Error, r.Stdout, tc.want)
			}
		}
	})

	t.Run("forged output files", func(t *testing.T) {
		for _, tc := range []struct{ name, files, want string }{
			{"a name that escapes", `[{"name": "../../etc/passwd", "content": b"x"}]`, "protocol_error"},
			{"an absolute name", `[{"name": "/etc/passwd", "content": b"x"}]`, "protocol_error"},
			{"one name twice", `[{"name": "a", "content": b"x"}, {"name": "a", "content": b"y"}]`, "protocol_error"},
			{"over the count cap", `[{"name": str(i), "content": b"x"} for i in range(4)]`, "output_files_limit"},
			{"over the byte cap", `[{"name": "a", "content": b"x" * 65537}]`, "output_files_limit"},
			// A long array of nils costs the frame one byte each, and a
			// decoder tens: refused before anything is decoded.
			{"a million nils", `[None] * 1000000`, "protocol_error"},
		} {
			script := frameHelper + "def main():\n    send(frame({\"type\": \"result\", \"result\": b'1', \"files\": " + tc.files + "}))\n    time.sleep(5)\n"
			r := s.execute(t, script, map[string]any{"timeout_ms": 10000})
			if r.Status != http.StatusUnprocessableEntity || r.Error == nil || r.Error.Type != tc.want {
				t.Errorf("%s: status %d error %+v, want 422 %s", tc.name, r.Status, r.Error, tc.want)
			}
		}
	})
}
