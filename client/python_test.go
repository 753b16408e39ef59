package client_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestPythonClient runs the Python client's tests
// (python/test_pyexec_client.py) with Debian's /usr/bin/python3 against
// the real server, started as TestClientAgainstTheServer starts it: one
// running slot and a 200 ms acquire timeout, so overload can be shown.
func TestPythonClient(t *testing.T) {
	url := startServer(t, "--warm", "2", "--max-busy", "1", "--acquire-timeout", "200ms")
	cmd := exec.Command("/usr/bin/python3", "-m", "unittest", "-v", "test_pyexec_client")
	cmd.Dir = "python"
	cmd.Env = append(os.Environ(), "PYEXEC_URL="+url, "PYEXEC_TOKEN=tok", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the Python client's tests failed: %v\n%s", err, out)
	}
	// With the server given, nothing may be skipped; and the client
	// closes what it opens (unittest shows ResourceWarnings).
	if strings.Contains(string(out), "skipped") || !strings.Contains(string(out), "\nOK") {
		t.Fatalf("the Python client's tests did not all run:\n%s", out)
	}
	if strings.Contains(string(out), "ResourceWarning") {
		t.Errorf("the Python client leaves sockets open:\n%s", out)
	}
	t.Logf("%s", out)
}
