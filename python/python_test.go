package python

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestPythonUnits runs the Python side's own unit tests (python/tests)
// with the interpreter the sandboxes use.
func TestPythonUnits(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("REQUIRE_JAIL") == "1" {
			t.Fatalf("REQUIRE_JAIL=1 but %s is missing: %v", python, err)
		}
		t.Skipf("no %s", python)
	}
	cmd := exec.Command(python, "-B", "-m", "unittest", "discover", "-s", "tests", "-t", ".")
	cmd.Env = append(os.Environ(), "PYTHONPATH=.", "OPENBLAS_NUM_THREADS=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("python unit tests failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestLoadFindsEveryModule: the embedded program holds the bootstrap and
// every module of the package, named as Python imports them.
func TestLoadFindsEveryModule(t *testing.T) {
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range p.Modules {
		names[m.Name] = true
	}
	for _, want := range []string{"pyexec", "pyexec.protocol", "pyexec.zygote", "pyexec.isolation", "pyexec.syscalls", "pyexec.limits", "pyexec.script", "pyexec.results"} {
		if !names[want] {
			t.Errorf("module %s missing from %v", want, names)
		}
	}
	if !strings.Contains(p.Boot, "pyexec.zygote") {
		t.Error("boot.py does not start pyexec.zygote")
	}
}
