package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelpExitsZero: `go run ./bench --help` answers the usage and exits
// 0, as the README tells a reader to try.
func TestHelpExitsZero(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, arg := range []string{"--help", "-h"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v (want exit 0)\n%s", arg, err, out)
		}
		if !strings.Contains(string(out), "-scenario") || strings.Contains(string(out), "help requested") {
			t.Errorf("%s printed:\n%s", arg, out)
		}
	}
}
