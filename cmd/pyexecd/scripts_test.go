package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestFiguresComeBack: figures a script shows with plt.show() or leaves
// open come back as output/figures/figure-N.png, in order, without the
// script saving them, pandas' .plot() included; each is a PNG of the
// figure's size (decoded here), and nothing is written to stderr (Agg's
// "cannot show the figure" warning included). With matplotlib preloaded
// the zygote's warm-up draws through the same backend.
func TestFiguresComeBack(t *testing.T) {
	const script = `import matplotlib.pyplot as plt
import pandas as pd

def main():
    plt.plot([1, 2, 3])
    plt.title("shown")
    plt.show()
    pd.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2]}).plot(x="x", y="y", figsize=(4, 3))
    plt.figure(figsize=(2, 2))
    plt.bar(["a", "b"], [1, 2])
    return len(plt.get_fignums())
`
	for _, preload := range []string{"numpy,pandas", "numpy,pandas,matplotlib"} {
		t.Run(preload, func(t *testing.T) {
			s := startServer(t, "", "--mode", "fork", "--warm", "1", "--preload", preload, "--acquire-timeout", "60s")
			var open int
			r := s.mustSucceed(t, script, nil, &open)
			if open != 2 {
				t.Errorf("main saw %d figures open after plt.show(), want 2 (show closes what it shows)", open)
			}
			if r.Stderr != "" {
				t.Errorf("stderr %q", r.Stderr)
			}
			want := []struct {
				name          string
				width, height int
			}{{"figures/figure-1.png", 640, 480}, {"figures/figure-2.png", 400, 300}, {"figures/figure-3.png", 200, 200}}
			if len(r.Files) != len(want) {
				t.Fatalf("files %v, want %d figures", keys(r.Files), len(want))
			}
			for _, w := range want {
				f, ok := r.Files[w.name]
				if !ok {
					t.Fatalf("no %s in %v", w.name, keys(r.Files))
				}
				cfg, err := png.DecodeConfig(bytes.NewReader(f.Content))
				if err != nil || cfg.Width != w.width || cfg.Height != w.height {
					t.Errorf("%s: %dx%d (%v), want a %dx%d PNG", w.name, cfg.Width, cfg.Height, err, w.width, w.height)
				}
				if _, err := png.Decode(bytes.NewReader(f.Content)); err != nil || f.MediaType != "image/png" || f.Size != len(f.Content) {
					t.Errorf("%s: %v, media type %q, size %d of %d", w.name, err, f.MediaType, f.Size, len(f.Content))
				}
			}

			t.Run("a script that does not plot gets no files", func(t *testing.T) {
				r := s.mustSucceed(t, "import pandas as pd\ndef main():\n    return int(pd.Series([1, 2]).sum())\n", nil, nil)
				if len(r.Files) != 0 {
					t.Errorf("files %v", keys(r.Files))
				}
			})
			t.Run("figures count in the file caps", func(t *testing.T) {
				s.mustFail(t, "import matplotlib.pyplot as plt\ndef main():\n    for _ in range(33):\n        plt.figure(figsize=(1, 1))\n",
					nil, "output_files_limit", http.StatusUnprocessableEntity)
			})
			t.Run("a cell ending in a plot shows the figure, not the Axes", func(t *testing.T) {
				r := s.mustSucceed(t, "import pandas as pd\npd.Series([1, 3, 2]).plot()\n", map[string]any{"entrypoint": "none"}, nil)
				if string(r.Result) != "null" || len(r.Files) != 1 || r.Files["figures/figure-1.png"].MediaType != "image/png" {
					t.Errorf("result %s, files %v", r.Result, keys(r.Files))
				}
			})
		})
	}
}

func keys[V any](m map[string]V) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	return names
}

// TestScriptsAsWritten: with "entrypoint": "none" a script without main
// runs as a notebook cell: its last expression is the result (null when
// there is none), its input is the global INPUT, JSON and msgpack alike,
// and in a batch it runs once per input. Without the field the seed's main
// contract holds (missing_main). An async main is awaited, in both modes.
func TestScriptsAsWritten(t *testing.T) {
	for _, mode := range []string{"fork", "exec"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, "", "--mode", mode, "--warm", "1", "--policy", "seed")
			cell := map[string]any{"entrypoint": "none"}
			var got any
			s.mustSucceed(t, "import pandas as pd\ndf = pd.DataFrame({'region': ['n', 's', 'n'], 'amount': [10, 5, 7]})\nprint(len(df))\nint(df['amount'].sum())\n", cell, &got)
			if got != float64(22) {
				t.Errorf("cell result %v, want 22", got)
			}
			s.mustSucceed(t, "def main():\n    return 'ran'\nif __name__ == '__main__':\n    out = main()\nout\n", cell, &got)
			if got != "ran" {
				t.Errorf("a script written for python script.py: %v, want its main run by its own guard", got)
			}
			r := s.mustSucceed(t, "x = 1\nprint('side effect')\n", cell, nil)
			if string(r.Result) != "null" || r.Stdout != "side effect\n" {
				t.Errorf("a cell without a last expression: result %s, stdout %q", r.Result, r.Stdout)
			}
			s.mustSucceed(t, "total = sum(INPUT['xs'])\n{'total': total}\n", map[string]any{"entrypoint": "none", "input": map[string]any{"xs": []int{1, 2, 3}}}, &got)
			if fmt.Sprint(got) != "map[total:6]" {
				t.Errorf("cell with input: %v", got)
			}
			s.mustSucceed(t, "import asyncio\nasync def twice(x):\n    await asyncio.sleep(0)\n    return 2 * x\nawait twice(21)\n", cell, &got)
			if got != float64(42) {
				t.Errorf("a cell's top-level await: %v", got)
			}
			r = s.mustFail(t, "x = 1\nraise ValueError('no')\n", cell, "script_error", http.StatusUnprocessableEntity)
			if !strings.Contains(r.Error.Traceback, "line 2") {
				t.Errorf("traceback %q", r.Error.Traceback)
			}
			s.mustFail(t, "open('x')\n", cell, "forbidden_call", http.StatusBadRequest)
			r = s.mustFail(t, "x = 1\nx\n", nil, "missing_main", http.StatusBadRequest)
			if !strings.Contains(r.Error.Message, `"entrypoint": "none"`) {
				t.Errorf("missing_main does not say how to run without main: %q", r.Error.Message)
			}
			s.mustFail(t, "x = 1\n", map[string]any{"entrypoint": "cell"}, "invalid_request", http.StatusBadRequest)
			s.mustFail(t, "x = 1\n", map[string]any{"entrypoint": 1}, "invalid_request", http.StatusBadRequest)
			s.mustSucceed(t, "def main():\n    return 1\n", map[string]any{"entrypoint": "main"}, nil)

			async := "import asyncio\nasync def main(x=0):\n    await asyncio.sleep(0.01)\n    return {'doubled': 2 * x}\n"
			s.mustSucceed(t, async, map[string]any{"input": 21}, &got)
			if fmt.Sprint(got) != "map[doubled:42]" {
				t.Errorf("async main: %v", got)
			}
			raw := s.rawExecuteBody(t, map[string]any{"script": async, "inputs": []int{1, 2}})
			if !bytes.Contains(raw, []byte(`"results":[{"result":{"doubled":2}`)) || !bytes.Contains(raw, []byte(`{"result":{"doubled":4}`)) {
				t.Errorf("async main in a batch: %s", raw)
			}

			// msgpack: the field and INPUT as msgpack decodes it.
			body, _ := msgpack.Marshal(map[string]any{"script": "[type(INPUT).__name__, len(INPUT)]\n", "entrypoint": "none", "input": []byte{1, 2, 3}})
			resp, err := http.Post(s.url+"/execute", "application/msgpack", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var answer struct {
				Result []any `msgpack:"result"`
			}
			rawMP, _ := io.ReadAll(resp.Body)
			if err := msgpack.Unmarshal(rawMP, &answer); err != nil || fmt.Sprint(answer.Result) != "[bytes 3]" {
				t.Errorf("msgpack cell: %q (%v)", rawMP, err)
			}
		})
	}
}

// batchAnswer is a batch's answer, as the tests read it.
type batchAnswer struct {
	Results []struct {
		Result json.RawMessage
		Error  *struct{ Type, Message string }
		Stdout string
		Stderr string
	}
	Stdout string
	Error  *struct{ Type, Message string }
}

// TestBatchKeepsWhatFinished: an input that hangs past the wall clock,
// crashes the interpreter (a segfault, os._exit) or prints past the cap
// ends only itself: the inputs before it keep their results and output,
// it gets its own error with what it printed, and the inputs after it are
// not_run. An input that runs out of memory (MemoryError under the
// address-space limit) fails alone and the next ones run.
func TestBatchKeepsWhatFinished(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--max-output-bytes", "4096")
	const script = `import ctypes, os, sys
def main(x):
    print("start", x)
    print("err", x, file=sys.stderr)
    if x == "hang":
        while True:
            pass
    if x == "segfault":
        ctypes.string_at(0)
    if x == "exit":
        os._exit(3)
    if x == "flood":
        print("y" * 10000)
    if x == "memory":
        return len(bytearray(1 << 40))
    return x
`
	cases := []struct {
		name, failing, wantType string
		wantStdout              string
	}{
		{"timeout", "hang", "timeout", "start hang\n"},
		{"segfault", "segfault", "sandbox_crashed", "start segfault\n"},
		{"os._exit", "exit", "script_error", "start exit\n"},
		{"an input's output over the cap", "flood", "output_limit", "start flood\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a batchAnswer
			raw := s.rawExecuteBody(t, map[string]any{"script": script, "inputs": []any{"a", "b", tc.failing, "c"}, "timeout_ms": 3000})
			if err := json.Unmarshal(raw, &a); err != nil || a.Error != nil || len(a.Results) != 4 {
				t.Fatalf("answer %.600s (%v)", raw, err)
			}
			for i, want := range []string{"a", "b"} {
				item := a.Results[i]
				if string(item.Result) != `"`+want+`"` || item.Stdout != "start "+want+"\n" || item.Stderr != "err "+want+"\n" {
					t.Errorf("finished item %d lost: %+v", i, item)
				}
			}
			failed := a.Results[2]
			if failed.Error == nil || failed.Error.Type != tc.wantType || !strings.HasPrefix(failed.Stdout, tc.wantStdout) {
				t.Errorf("failing item: %+v, want %s with stdout %q", failed, tc.wantType, tc.wantStdout)
			}
			if failed.Stderr != "err "+tc.failing+"\n" {
				t.Errorf("failing item's stderr %q", failed.Stderr)
			}
			if last := a.Results[3]; last.Error == nil || last.Error.Type != "not_run" || last.Result != nil || last.Stdout != "" {
				t.Errorf("item after it: %+v, want not_run", last)
			}
		})
	}

	t.Run("the output cap holds for the inputs together", func(t *testing.T) {
		// Five inputs of 1000 bytes each under a 4096-byte cap: the fifth
		// passes it. The runner never holds n times the cap.
		var a batchAnswer
		raw := s.rawExecuteBody(t, map[string]any{"script": "def main(x):\n    print('z' * 999)\n    return x\n", "inputs": []int{1, 2, 3, 4, 5, 6}})
		if err := json.Unmarshal(raw, &a); err != nil || len(a.Results) != 6 {
			t.Fatalf("answer %.600s (%v)", raw, err)
		}
		if string(a.Results[3].Result) != "4" || a.Results[4].Error == nil || a.Results[4].Error.Type != "output_limit" ||
			len(a.Results[4].Stdout) != 96 || a.Results[5].Error == nil || a.Results[5].Error.Type != "not_run" {
			t.Errorf("answer %.2000s", raw)
		}
	})

	t.Run("out of memory ends only its item", func(t *testing.T) {
		var a batchAnswer
		raw := s.rawExecuteBody(t, map[string]any{"script": script, "inputs": []any{"a", "memory", "c"}, "memory_mb": 600})
		if err := json.Unmarshal(raw, &a); err != nil || len(a.Results) != 3 {
			t.Fatalf("answer %.600s (%v)", raw, err)
		}
		if a.Results[1].Error == nil || a.Results[1].Error.Type != "memory_limit" || string(a.Results[2].Result) != `"c"` {
			t.Errorf("answer %s", raw)
		}
	})

	t.Run("a failure before the inputs is the whole answer's", func(t *testing.T) {
		r := s.mustFail(t, "import time\nprint('loading')\ntime.sleep(60)\ndef main(x):\n    return x\n",
			map[string]any{"inputs": []int{1, 2}, "timeout_ms": 500}, "timeout", http.StatusUnprocessableEntity)
		if r.Stdout != "loading\n" {
			t.Errorf("stdout %q", r.Stdout)
		}
	})
}
