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

// TestPythonUnitsInRuntimes runs the same unit tests with each built
// runtime's interpreter (the result mapping meets pandas 2 there), in a
// bubblewrap whose /usr and /etc are the runtime's. A runtime that is not
// built is skipped, unless REQUIRE_RUNTIMES=1 (`make test`, which builds
// them first).
func TestPythonUnitsInRuntimes(t *testing.T) {
	dir := os.Getenv("PYEXEC_TEST_RUNTIME_DIR")
	if dir == "" {
		dir = "/var/cache/pyexec/runtimes"
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		t.Skip("no bwrap")
	}
	src, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"debian13-ds", "debian12"} {
		t.Run(name, func(t *testing.T) {
			root := dir + "/" + name + "/root"
			if _, err := os.Stat(root + "/usr/bin/python3"); err != nil {
				if os.Getenv("REQUIRE_RUNTIMES") == "1" {
					t.Fatalf("runtime %s is not built in %s: %v", name, dir, err)
				}
				t.Skipf("runtime %s is not built in %s (make runtimes)", name, dir)
			}
			cmd := exec.Command(bwrap, "--unshare-all", "--die-with-parent",
				"--ro-bind", root+"/usr", "/usr", "--ro-bind", root+"/etc", "/etc",
				"--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
				"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", src, "/src", "--chdir", "/src",
				"--clearenv", "--setenv", "PYTHONPATH", ".", "--setenv", "OPENBLAS_NUM_THREADS", "1",
				"--", "/usr/bin/python3", "-B", "-m", "unittest", "discover", "-s", "tests", "-t", ".")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("python unit tests failed under %s: %v\n%s", name, err, out)
			}
			t.Logf("%s", out)
		})
	}
}
