package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/internal/syncbuf"
)

// TestStartupFailureIsFastAndSaysWhy starts the server with a jail that
// fails at once, as a container runtime's seccomp profile or masked /proc
// makes the real ones fail, for each jail and mode: the refusal must come
// long before --start-timeout, carry the jail's own error lines, and list
// the likely causes in order.
func TestStartupFailureIsFastAndSaysWhy(t *testing.T) {
	// The server starts the jail as uid 65534 when it runs as root, so the
	// fake must be reachable by that uid.
	dir, err := os.MkdirTemp("", "fakejail")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "jail")
	const line1, line2 = "fakejail: mount(proc) failed: Operation not permitted", "fakejail: cannot launch the child"
	script := "#!/bin/sh\necho '" + line1 + "' >&2\necho '" + line2 + "' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "nsjail.cfg")
	if err := os.WriteFile(config, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	jails := map[string][]string{
		"bwrap":  {"--jail", "bwrap", "--bwrap", fake},
		"nsjail": {"--jail", "nsjail", "--nsjail", fake, "--nsjail-config", config},
	}
	for name, jailArgs := range jails {
		for _, mode := range []string{"fork", "exec"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				args := append([]string{"--addr", "127.0.0.1:0", "--mode", mode, "--start-timeout", "30s"}, jailArgs...)
				var logs syncbuf.Buffer
				began := time.Now()
				err := run(context.Background(), args, func(string) string { return "" }, &logs, nil)
				took := time.Since(began)
				if err == nil {
					t.Fatal("the server started with a jail that fails")
				}
				msg := err.Error()
				// Generous against a loaded machine; the old behaviour took
				// the whole start timeout (30 s) and more.
				if took > 5*time.Second {
					t.Errorf("refused after %v, want well under the 30s start timeout", took)
				}
				for _, want := range []string{"refusing to start", line1, line2} {
					if !strings.Contains(msg, want) {
						t.Errorf("message lacks %q: %s", want, msg)
					}
				}
				last := -1
				for _, cause := range []string{"user namespaces", "seccomp", "/proc is masked", "python3-numpy"} {
					i := strings.Index(msg, cause)
					if i <= last {
						t.Errorf("cause %q missing or out of order in: %s", cause, msg)
					}
					last = i
				}
			})
		}
	}
}
