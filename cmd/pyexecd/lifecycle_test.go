package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/sandbox-exec/pyexec/internal/syncbuf"
)

// TestOverloadedAnswers503 fills a one-sandbox server with a slow script
// and shows the next request gets 503 overloaded with Retry-After, and that
// the server serves again afterwards.
func TestOverloadedAnswers503(t *testing.T) {
	s := startServer(t, "", "--warm", "1", "--max-busy", "1", "--acquire-timeout", "300ms")
	s.waitSettled(t, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.mustSucceed(t, "import time\ndef main():\n    time.sleep(2)\n    return 1\n", nil, nil)
	}()
	// Wait until the slow script holds the only running slot.
	s.waitFor(t, func(busy int) bool { return busy == 1 })
	r := s.execute(t, helloScript, nil)
	if r.Status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Type != "overloaded" ||
		!r.Error.Retryable || r.Header.Get("Retry-After") == "" {
		t.Errorf("status %d error %+v Retry-After %q", r.Status, r.Error, r.Header.Get("Retry-After"))
	}
	wg.Wait()
	// With a 300ms wait bound, the next request needs the replacement
	// sandbox to be warm already.
	s.waitSettled(t, 1)
	s.mustSucceed(t, helloScript, nil, nil)
}

// TestNoSandboxLeftAfterStop runs scripts that leave processes behind,
// stops the server, and checks that no process below the test remains.
func TestNoSandboxLeftAfterStop(t *testing.T) {
	if n := len(descendants(os.Getpid())); n != 0 {
		t.Fatalf("%d processes below the test before it starts", n)
	}
	s := startServer(t, "", "--warm", "2")
	// Scripts that leave a sleeping child behind, all answered first.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := fmt.Sprintf("import os, time\ndef main():\n    if os.fork() == 0:\n        time.sleep(60)\n    return %d\n", i)
			body, _ := json.Marshal(map[string]string{"script": script})
			resp, err := http.Post(s.url+"/execute", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	// Then one script still running when the server is told to stop; its
	// answer may be lost with the server, so errors are not checked here.
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		body, _ := json.Marshal(map[string]string{"script": "import time\ndef main():\n    time.sleep(1)\n    return 1\n"})
		if resp, err := http.Post(s.url+"/execute", "application/json", bytes.NewReader(body)); err == nil {
			resp.Body.Close()
		}
	}()
	s.waitFor(t, func(busy int) bool { return busy >= 1 })
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	<-slowDone
	if left := descendants(os.Getpid()); len(left) != 0 {
		var names []string
		for _, pid := range left {
			names = append(names, fmt.Sprintf("%d:%s", pid, procStatus(pid)["Name"]))
		}
		t.Errorf("processes left after the server stopped: %s", strings.Join(names, " "))
	}
}

// TestRefusesToStartWithoutJail: no jail, no service, and the message
// says how to fix it.
func TestRefusesToStartWithoutJail(t *testing.T) {
	var logs syncbuf.Buffer
	err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--jail", "bwrap", "--bwrap", "/nonexistent/bwrap"},
		func(string) string { return "" }, &logs, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "apt-get install bubblewrap") {
		t.Errorf("err = %v, want a refusal that says how to install bubblewrap", err)
	}
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--jail", "nsjail", "--nsjail", "/nonexistent/nsjail"},
		func(string) string { return "" }, &logs, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") {
		t.Errorf("err = %v, want a refusal when nsjail is asked for and missing", err)
	}
}

// TestKernelLimits: the CPU-time limit ends a busy script, and /tmp and
// file sizes are capped, each through the real server and jail, in both
// modes (in fork mode the sandbox is PID 1 of its namespace, which the
// kernel spares SIGXCPU: the limit's SIGKILL must still read as timeout).
func TestKernelLimits(t *testing.T) {
	for _, mode := range []string{"fork", "exec"} {
		t.Run(mode, func(t *testing.T) { testKernelLimits(t, mode) })
	}
}

func testKernelLimits(t *testing.T, mode string) {
	s := startServer(t, "", "--mode", mode, "--warm", "1", "--cpu-time", "1s", "--max-timeout", "20s")
	r := s.mustFail(t, "def main():\n    while True:\n        pass\n", nil, "timeout", 422)
	if !strings.Contains(r.Error.Message, "CPU") || r.Timing.ExecMS > 15000 {
		t.Errorf("message %q after %v ms, want the CPU limit well before the wall limit", r.Error.Message, r.Timing.ExecMS)
	}
	var got map[string]string
	s.mustSucceed(t, `import errno
def write(path, mb):
    try:
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(b"x" * (1 << 20))
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
def main():
    out = {"file_over_16MiB": write("/tmp/big", 20)}
    out["tmp_over_64MiB"] = "written"
    for i in range(6):
        res = write("/tmp/part%d" % i, 15)
        if res != "written":
            out["tmp_over_64MiB"] = res
            break
    return out
`, nil, &got)
	if got["file_over_16MiB"] != "EFBIG" || got["tmp_over_64MiB"] != "ENOSPC" {
		t.Errorf("limits not in force: %v", got)
	}
}
