package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// shippedRuntimes are the runtimes of runtimes/*.conf that `make test`
// builds (scripts/build-runtime.sh) before the tests run.
var shippedRuntimes = []string{"debian13-ds", "debian12"}

// runtimeDir is where the tests find the built runtimes.
func runtimeDir() string {
	if d := os.Getenv("PYEXEC_TEST_RUNTIME_DIR"); d != "" {
		return d
	}
	return "/var/cache/pyexec/runtimes"
}

// requireRuntimes skips the test when a runtime is not built here, unless
// REQUIRE_RUNTIMES=1 (`make test`), which makes that a failure.
func requireRuntimes(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(runtimeDir(), name, "versions")); err != nil {
			if os.Getenv("REQUIRE_RUNTIMES") == "1" {
				t.Fatalf("runtime %s is not built in %s (make runtimes): %v", name, runtimeDir(), err)
			}
			t.Skipf("runtime %s is not built in %s (make runtimes builds it; REQUIRE_RUNTIMES=1 makes this a failure)", name, runtimeDir())
		}
	}
}

// TestRuntimes: one server runs both shipped runtimes at once; a request
// names its runtime, and gets that runtime's Python, numpy and pandas;
// /health lists them with their versions, /metrics counts per runtime, and
// an unknown name is invalid_request listing the available ones.
func TestRuntimes(t *testing.T) {
	requireRuntimes(t, shippedRuntimes...)
	s := startServer(t, "", "--runtimes", "debian13-ds,debian12", "--runtime-dir", runtimeDir(),
		"--warm", "3", "--runtime-warm", "debian12=1")

	resp, err := http.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var health struct {
		Runtimes []struct {
			Name, Python, Numpy, Pandas string
			Warm                        int
			Default                     bool
		}
	}
	if err := json.Unmarshal(raw, &health); err != nil {
		t.Fatalf("/health %s: %v", raw, err)
	}
	if len(health.Runtimes) != 2 || health.Runtimes[0].Name != "debian13-ds" || !health.Runtimes[0].Default ||
		health.Runtimes[1].Name != "debian12" || health.Runtimes[1].Default {
		t.Fatalf("/health runtimes %+v: want debian13-ds (default), debian12", health.Runtimes)
	}
	if rt := health.Runtimes[0]; !strings.HasPrefix(rt.Python, "3.13.") || !strings.HasPrefix(rt.Pandas, "2.") || !strings.HasPrefix(rt.Numpy, "2.") || rt.Warm != 2 {
		t.Errorf("debian13-ds on /health: %+v, want Python 3.13, numpy 2, pandas 2, 2 warm", rt)
	}
	if rt := health.Runtimes[1]; !strings.HasPrefix(rt.Python, "3.11.") || !strings.HasPrefix(rt.Pandas, "1.5") || rt.Warm != 1 {
		t.Errorf("debian12 on /health: %+v, want Python 3.11, pandas 1.5, 1 warm", rt)
	}

	const versions = `import sys, numpy, pandas
def main():
    return {"python": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__, "pandas": pandas.__version__}`
	for _, c := range []struct {
		runtime        string
		python, pandas string
	}{{"", "3.13", "2."}, {"debian13-ds", "3.13", "2."}, {"debian12", "3.11", "1.5"}} {
		fields := map[string]any{}
		if c.runtime != "" {
			fields["runtime"] = c.runtime
		}
		var got struct{ Python, Numpy, Pandas string }
		s.mustSucceed(t, versions, fields, &got)
		if got.Python != c.python || !strings.HasPrefix(got.Pandas, c.pandas) {
			t.Errorf("runtime %q ran Python %s, pandas %s; want %s, %s", c.runtime, got.Python, got.Pandas, c.python, c.pandas)
		}
	}
	r := s.mustFail(t, versions, map[string]any{"runtime": "debian99"}, "invalid_request", http.StatusBadRequest)
	if !strings.Contains(r.Error.Message, "debian13-ds, debian12") {
		t.Errorf("unknown runtime: message %q does not list the runtimes", r.Error.Message)
	}
	s.mustFail(t, versions, map[string]any{"runtime": 12}, "invalid_request", http.StatusBadRequest)
	if n := s.metric(`pyexec_runtime_executions_total{runtime="debian12"}`); n != 1 {
		t.Errorf(`pyexec_runtime_executions_total{runtime="debian12"} = %v, want 1`, n)
	}
	if n := s.metric(`pyexec_runtime_executions_total{runtime="debian13-ds"}`); n != 2 {
		t.Errorf(`pyexec_runtime_executions_total{runtime="debian13-ds"} = %v, want 2`, n)
	}
}

// seenFromSandbox lists what a sandbox sees of /, /usr, /usr/lib, /etc
// and whether /opt exists.
const seenFromSandbox = `import os
def main():
    return {d: sorted(os.listdir(d)) if os.path.isdir(d) else None for d in ("/", "/usr", "/usr/lib", "/etc", "/opt")}`

// TestRuntimeSeesOnlyItself: in every jail and mode, a sandbox of each
// shipped runtime sees the runtime's /usr/lib and nothing of the host's
// /usr, /etc or /opt: every entry it lists exists in the runtime's root,
// and the host's /usr/lib entries the runtime lacks are not there.
func TestRuntimeSeesOnlyItself(t *testing.T) {
	requireRuntimes(t, shippedRuntimes...)
	for _, name := range shippedRuntimes {
		root, err := filepath.EvalSymlinks(filepath.Join(runtimeDir(), name, "root"))
		if err != nil {
			t.Fatal(err)
		}
		for _, jail := range jailBackends(t) {
			for _, mode := range []string{"fork", "exec"} {
				t.Run(name+"/"+jail[1]+"/"+mode, func(t *testing.T) {
					args := append([]string{"--runtimes", name, "--runtime-dir", runtimeDir(), "--mode", mode, "--warm", "1"}, jail...)
					s := startServer(t, "", args...)
					var seen map[string][]string
					s.mustSucceed(t, seenFromSandbox, nil, &seen)
					if seen["/opt"] != nil {
						t.Errorf("/opt is visible: %v", seen["/opt"])
					}
					for _, e := range seen["/etc"] {
						if e != "alternatives" && e != "matplotlibrc" {
							t.Errorf("/etc/%s is visible; only the runtime's alternatives and matplotlibrc may be", e)
						}
					}
					for _, dir := range []string{"/usr", "/usr/lib", "/etc"} {
						for _, e := range seen[dir] {
							if _, err := os.Lstat(filepath.Join(root, dir, e)); err != nil {
								t.Errorf("%s/%s is visible but is not in the runtime %s: the host's", dir, e, name)
							}
						}
					}
					want, _ := os.ReadDir(filepath.Join(root, "usr/lib"))
					var wantNames []string
					for _, e := range want {
						wantNames = append(wantNames, e.Name())
					}
					sort.Strings(wantNames)
					if strings.Join(wantNames, " ") != strings.Join(seen["/usr/lib"], " ") {
						t.Errorf("/usr/lib in the sandbox %v, want the runtime's %v", seen["/usr/lib"], wantNames)
					}
					hostOnly := 0
					hostLib, _ := os.ReadDir("/usr/lib")
					for _, e := range hostLib {
						if _, err := os.Lstat(filepath.Join(root, "usr/lib", e.Name())); err != nil {
							hostOnly++
						}
					}
					if hostOnly == 0 {
						t.Log("the host's /usr/lib has nothing the runtime lacks: the comparison shows less here")
					}
				})
			}
		}
	}
}

// TestRuntimeAddsAPackage builds a small runtime of its own from
// testdata/runtimes/test-extra.conf (cached like any other: a second run
// finds it) and runs a script that imports the package it added, which
// neither the host nor the shipped runtimes have. Building needs root and
// Debian's mirror; without REQUIRE_RUNTIMES=1 the test skips when the
// runtime is not built and cannot be.
func TestRuntimeAddsAPackage(t *testing.T) {
	requireJail(t)
	if os.Getuid() != 0 && os.Getenv("REQUIRE_RUNTIMES") != "1" {
		t.Skip("building a runtime needs root")
	}
	build := exec.Command("../../scripts/build-runtime.sh", "test-extra")
	build.Env = append(os.Environ(), "RUNTIME_CONF_DIR=testdata/runtimes", "RUNTIME_CACHE="+runtimeDir())
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-runtime.sh test-extra: %v\n%s", err, out)
	} else {
		t.Logf("%s", out)
	}
	s := startServer(t, "", "--runtimes", "test-extra,host", "--runtime-dir", runtimeDir(), "--prewarm=false", "--warm", "2")
	const script = `import six, sys
def main():
    return {"six": six.__version__, "python": "%d.%d" % sys.version_info[:2]}`
	var got struct{ Six, Python string }
	s.mustSucceed(t, script, nil, &got)
	if got.Six == "" || got.Python != "3.13" {
		t.Errorf("test-extra ran %+v: want six imported under Python 3.13", got)
	}
	// The host runtime lacks it (where the host has no six): the package
	// came from the runtime.
	if exec.Command("/usr/bin/python3", "-c", "import six").Run() != nil {
		if r := s.execute(t, script, map[string]any{"runtime": "host"}); r.Error == nil {
			t.Errorf("the host runtime imported six, which the host lacks: %+v", r)
		}
	}
}
