package main

import (
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHelpNamesEveryVariable runs the built binary as an operator would:
// --help exits 0, every flag's text names its PYEXEC_* variable, and a
// token in the environment is never printed as a default.
func TestHelpNamesEveryVariable(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pyexecd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--help")
	cmd.Env = []string{"AUTH_TOKEN=env-secret-1", "PYEXEC_AUTH_TOKEN=env-secret-2", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v (want exit 0)\n%s", err, out)
	}
	help := string(out)
	if strings.Contains(help, "env-secret") {
		t.Errorf("--help prints a token from the environment:\n%s", help)
	}
	// Each flag is a line "  -name [type]" and its text on the next lines.
	entries := regexp.MustCompile(`(?m)^  -([a-z-]+)[^\n]*\n((?:    [^\n]*\n?)*)`).FindAllStringSubmatch(help, -1)
	if len(entries) < 30 {
		t.Fatalf("found only %d flags in --help:\n%s", len(entries), help)
	}
	for _, e := range entries {
		name, text := e[1], e[2]
		want := "(env " + envName(name) + ")"
		switch {
		case name == "version" && strings.Contains(text, "(env "):
			t.Errorf("--version names a variable, but has none: %s", text)
		case name != "version" && !strings.Contains(text, want):
			t.Errorf("--%s does not name %s: %s", name, envName(name), text)
		}
	}
}

// TestVersionHasNoVariable: a PYEXEC_VERSION left in a deployment's
// environment must not turn every start into "print the version and exit".
func TestVersionHasNoVariable(t *testing.T) {
	env := func(k string) string { return map[string]string{"PYEXEC_VERSION": "true"}[k] }
	if _, err := parseOptions(nil, env, io.Discard); errors.Is(err, errVersionShown) || err != nil {
		t.Errorf("PYEXEC_VERSION=true: %v", err)
	}
}
