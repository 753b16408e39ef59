package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/client"
)

// startServer builds the real server and starts it on a loopback port with
// the real jail (make test requires one: REQUIRE_JAIL=1).
func startServer(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		if os.Getenv("REQUIRE_JAIL") == "1" {
			t.Fatalf("REQUIRE_JAIL=1 but bwrap is missing: %v", err)
		}
		t.Skip("no bwrap")
	}
	// The server is in the repository's module, not the client's: build
	// it from there.
	bin := filepath.Join(t.TempDir(), "pyexecd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pyexecd")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append([]string{"--addr", addr, "--jail", "bwrap", "--auth-token", "tok"}, args...)...)
	cmd.Dir = ".."
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server never became ready")
	return ""
}

func TestClientAgainstTheServer(t *testing.T) {
	url := startServer(t, "--warm", "2", "--max-busy", "1", "--acquire-timeout", "200ms")
	ctx := context.Background()
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			c := client.New(url, client.Options{Token: "tok", JSON: asJSON})
			var got struct {
				Sum  int64  `json:"sum" msgpack:"sum"`
				Kind string `json:"kind" msgpack:"kind"`
			}
			res, err := c.Execute(ctx, client.Request{
				Script: "def main(x):\n    print('hi')\n    return {'sum': sum(x['xs']) + x['big'], 'kind': type(x['raw']).__name__}\n",
				Input:  map[string]any{"xs": []int{1, 2, 3}, "big": int64(1) << 40, "raw": []byte{0, 1}},
			}, &got)
			if err != nil {
				t.Fatal(err)
			}
			wantKind := "bytes" // msgpack bin arrives as bytes
			if asJSON {
				wantKind = "str" // JSON has no bytes: base64 text
			}
			if got.Sum != 6+1<<40 || got.Kind != wantKind || res.Stdout != "hi\n" || res.Attempts != 1 {
				t.Errorf("got %+v, result %+v", got, res)
			}
			if res.RequestID == "" || res.Usage.MaxRSSKB <= 0 || res.Timing.TotalMS <= 0 {
				t.Errorf("request id %q, usage %+v, timing %+v", res.RequestID, res.Usage, res.Timing)
			}

			// A request id sent is the one the server logs and answers.
			res, err = c.Execute(ctx, client.Request{Script: "def main():\n    return None\n", RequestID: "trace-42"}, nil)
			if err != nil || res.RequestID != "trace-42" {
				t.Errorf("request id: %v %+v", err, res)
			}

			// A batch: one outcome per input, errors beside results.
			res, err = c.Execute(ctx, client.Request{
				Script: "def main(x):\n    print(x)\n    return None if x == 3 else 10 // x\n",
				Inputs: []any{1, 0, 5, 3},
			}, nil)
			if err != nil || len(res.Results) != 4 || res.Raw != nil {
				t.Fatalf("batch: %v %+v", err, res)
			}
			for i, want := range []int{10, -1, 2} {
				item := res.Results[i]
				var v int
				err := item.Decode(&v)
				if want < 0 {
					var itemErr *client.Error
					if !errors.As(err, &itemErr) || itemErr.Type != "script_error" || itemErr.Stdout != "0\n" {
						t.Errorf("batch item %d: %v %+v", i, err, item)
					}
					continue
				}
				if err != nil || v != want || item.Err != nil {
					t.Errorf("batch item %d: %d, %v, want %d", i, v, err, want)
				}
			}
			var none *int
			if err := res.Results[3].Decode(&none); err != nil || none != nil {
				t.Errorf("batch item of None: %v %v", none, err)
			}

			res, err = c.Execute(ctx, client.Request{
				Script: "from pathlib import Path\ndef main():\n    Path('output/upper.txt').write_bytes(Path('in/a.txt').read_bytes().upper())\n",
				Files:  map[string][]byte{"in/a.txt": []byte("abc\x00")},
			}, nil)
			if f := res.Files["upper.txt"]; err != nil || string(f.Content) != "ABC\x00" || f.Size != 4 || f.MediaType != "text/plain" {
				t.Errorf("files: %v %+v", err, res.Files)
			}

			var echoed struct {
				Line string `json:"line" msgpack:"line"`
				Raw  []byte `json:"raw" msgpack:"raw"` // bin over msgpack, base64 over JSON
			}
			stdin := "from stdin\n"
			_, err = c.Execute(ctx, client.Request{Script: "def main():\n    return {'line': input(), 'raw': b'\\x00\\xff'}\n", Stdin: &stdin}, &echoed)
			if err != nil || echoed.Line != "from stdin" || string(echoed.Raw) != "\x00\xff" {
				t.Errorf("stdin and bytes: %v %+v", err, echoed)
			}
			var cell []int
			if _, err := c.Execute(ctx, client.Request{Script: "[x * 2 for x in INPUT]\n", Entrypoint: "none", Input: []int{1, 2}}, &cell); err != nil || fmt.Sprint(cell) != "[2 4]" {
				t.Errorf("a cell: %v %v", cell, err)
			}

			_, err = c.Execute(ctx, client.Request{Script: "def main():\n    print('before')\n    raise ValueError('boom')\n"}, nil)
			var apiErr *client.Error
			if !errors.As(err, &apiErr) || apiErr.Type != "script_error" || apiErr.Retryable() || apiErr.Stdout != "before\n" || apiErr.Status != 422 ||
				apiErr.RequestID == "" || apiErr.Usage == nil {
				t.Errorf("script error: %v (%+v)", err, apiErr)
			}
		})
	}

	t.Run("a wrong token is not retried", func(t *testing.T) {
		c := client.New(url, client.Options{Token: "nope"})
		_, err := c.Execute(ctx, client.Request{Script: "def main(): pass"}, nil)
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Type != "unauthorized" || apiErr.Retryable() {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("overloaded is retried with back-off until it succeeds", func(t *testing.T) {
		// One running slot, held by a slow script: the next request is
		// refused (503 overloaded after 200 ms) until it frees.
		c := client.New(url, client.Options{Token: "tok", MaxRetries: 20, RetryBase: 100 * time.Millisecond})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Execute(ctx, client.Request{Script: "import time\ndef main():\n    time.sleep(1.5)\n"}, nil); err != nil {
				t.Errorf("slow script: %v", err)
			}
		}()
		time.Sleep(300 * time.Millisecond)
		res, err := c.Execute(ctx, client.Request{Script: "def main():\n    return 1\n"}, nil)
		wg.Wait()
		if err != nil || res.Attempts < 2 {
			t.Errorf("err %v, attempts %v: want success after at least one retry", err, res)
		}
	})

	t.Run("the context bounds the call", func(t *testing.T) {
		c := client.New(url, client.Options{Token: "tok"})
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Execute(short, client.Request{Script: "import time\ndef main():\n    time.sleep(10)\n"}, nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
			t.Errorf("err %v after %v", err, time.Since(start))
		}
	})
}
