package runner

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// newTestRunner returns a runner on the real bubblewrap jail. Without bwrap
// the test is skipped, unless REQUIRE_JAIL=1 (set by make test) makes that
// a failure, so CI can never pass by skipping the sandbox.
func newTestRunner(t *testing.T, mode Mode) *Runner {
	t.Helper()
	jail, err := NewBubblewrap("", "/usr/bin/python3")
	if err != nil {
		if os.Getenv("REQUIRE_JAIL") == "1" {
			t.Fatalf("REQUIRE_JAIL=1 but the jail is unavailable: %v", err)
		}
		t.Skipf("no jail here: %v", err)
	}
	r, err := New(Config{Jail: jail, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// forEachMode runs test once per mode, as a subtest named after it.
func forEachMode(t *testing.T, test func(t *testing.T, r *Runner)) {
	for _, mode := range []Mode{ModeFork, ModeExec} {
		t.Run(string(mode), func(t *testing.T) { test(t, newTestRunner(t, mode)) })
	}
}

func runScript(t *testing.T, r *Runner, script string, input []byte, timeout time.Duration) (Output, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := r.Start(ctx, StartOptions{})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sb.Close()
	return sb.Execute(ctx, Request{Script: script, Input: input, Timeout: timeout})
}

func TestExecuteHello(t *testing.T) { forEachMode(t, testExecuteHello) }

func testExecuteHello(t *testing.T, r *Runner) {
	out, err := runScript(t, r, "import os\ndef main():\n    print('hi')\n    os.write(1, b'raw\\n')\n    return {'message': 'Hello'}\n", nil, 0)
	if err != nil {
		t.Fatalf("execute: %v (stderr %q)", err, out.Stderr)
	}
	if string(out.Result) != `{"message":"Hello"}` {
		t.Errorf("result = %s", out.Result)
	}
	if string(out.Stdout) != "hi\nraw\n" {
		t.Errorf("stdout = %q", out.Stdout)
	}
}

func TestSandboxIsNotReused(t *testing.T) { forEachMode(t, testSandboxIsNotReused) }

func testSandboxIsNotReused(t *testing.T, r *Runner) {
	ctx := context.Background()
	sb, err := r.Start(ctx, StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Execute(ctx, Request{Script: "def main(): return 1"}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if sb.Alive() {
		t.Error("sandbox still running after its execution")
	}
	if _, err := sb.Execute(ctx, Request{Script: "def main(): return 1"}); !errors.Is(err, ErrSandboxUsed) {
		t.Errorf("second Execute: got %v, want ErrSandboxUsed", err)
	}
}

func TestExecuteTimeoutKeepsOutput(t *testing.T) { forEachMode(t, testExecuteTimeoutKeepsOutput) }

func testExecuteTimeoutKeepsOutput(t *testing.T, r *Runner) {
	out, err := runScript(t, r, "import time, sys\ndef main():\n    print('before', flush=True)\n    time.sleep(30)\n", nil, 500*time.Millisecond)
	var se *ScriptError
	if !errors.As(err, &se) || se.Kind != KindTimeout {
		t.Fatalf("err = %v, want timeout", err)
	}
	if !strings.Contains(string(out.Stdout), "before") {
		t.Errorf("stdout = %q, want the output printed before the timeout", out.Stdout)
	}
}
