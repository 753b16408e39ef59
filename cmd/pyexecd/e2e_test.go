package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/sandbox-exec/pyexec/runner"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sandbox-exec/pyexec/internal/examples"
)

// The original service's README examples, verbatim.
const (
	helloScript  = examples.Hello
	numpyScript  = examples.Numpy
	pandasScript = examples.Pandas
)

const testToken = "e2e-secret-token"

// envMarker is set in the server's environment; no sandbox may see it.
const envMarker = "PYEXEC_E2E_MARKER_51f3"

// TestService drives one real server (real jail, real /usr/bin/python3)
// through the whole API, once per mode and jail backend found. Subtests run
// in order.
func TestService(t *testing.T) {
	t.Setenv(envMarker, envMarker)
	for _, jail := range jailBackends(t) {
		for _, mode := range []string{"fork", "exec"} {
			t.Run(jail[1]+"/"+mode, func(t *testing.T) { testService(t, mode, jail) })
		}
	}
}

func testService(t *testing.T, mode string, jail []string) {
	args := append([]string{"--mode", mode}, jail...)
	s := startServer(t, testToken, append(args, "--warm", "3", "--deny-imports", "subprocess", "--max-timeout", "20s",
		// exec mode builds a few sandboxes a second here: let the 32
		// concurrent requests wait for theirs.
		"--acquire-timeout", "90s")...)

	for _, c := range serviceBasics {
		t.Run(c.name, func(t *testing.T) { c.run(t, s) })
	}
	// Each error type; after each, the next request must succeed.
	for _, tc := range serviceErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.mustFail(t, tc.script, tc.fields, tc.wantType, tc.wantStatus)
			if r.Error.Retryable {
				t.Errorf("a fault of the request must not be retryable")
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			var got map[string]string
			s.mustSucceed(t, helloScript, nil, &got)
		})
	}
	for _, c := range serviceRequests {
		t.Run(c.name, func(t *testing.T) { c.run(t, s) })
	}

	securityTests(t, s)
	seccompTests(t, s)
	isolationTests(t, s)
	processTests(t, s)
}

// serviceBasics are testService's first cases: scripts that succeed.
var serviceBasics = []struct {
	name string
	run  func(t *testing.T, s *testServer)
}{
	{"hello", func(t *testing.T, s *testServer) {
		var got map[string]string
		r := s.mustSucceed(t, helloScript, nil, &got)
		if got["message"] != "Hello, World!" || len(got) != 1 {
			t.Errorf("result = %v", got)
		}
		if r.Stdout != "" || r.Timing == nil || r.Timing.TotalMS <= 0 || r.Timing.ExecMS <= 0 {
			t.Errorf("stdout %q timing %+v", r.Stdout, r.Timing)
		}
	}},

	{"numpy", func(t *testing.T, s *testServer) {
		var got map[string]float64
		s.mustSucceed(t, numpyScript, nil, &got)
		if len(got) != 4 || !(got["min"] <= got["mean"] && got["mean"] <= got["max"]) || got["std"] <= 0 {
			t.Errorf("result = %v", got)
		}
	}},

	{"pandas", func(t *testing.T, s *testServer) {
		var got map[string]float64
		s.mustSucceed(t, pandasScript, nil, &got)
		if got["count"] != 50 || math.Abs(got["correlation"]) > 1 || len(got) != 4 {
			t.Errorf("result = %v", got)
		}
	}},

	{"input reaches main", func(t *testing.T, s *testServer) {
		var got map[string]any
		s.mustSucceed(t, "def main(data):\n    return {'sum': sum(data['xs']), 'name': data['name']}\n",
			map[string]any{"input": map[string]any{"xs": []int{1, 2, 3}, "name": "zoë"}}, &got)
		if got["sum"] != 6.0 || got["name"] != "zoë" {
			t.Errorf("result = %v", got)
		}
	}},

	{"stdout and os.write are captured in order", func(t *testing.T, s *testServer) {
		r := s.mustSucceed(t, "import os, sys\ndef main():\n    print('a')\n    os.write(1, b'b\\n')\n    print('c', file=sys.stderr)\n    return None\n", nil, nil)
		if r.Stdout != "a\nb\n" || r.Stderr != "c\n" || string(r.Result) != "null" {
			t.Errorf("stdout %q stderr %q result %s", r.Stdout, r.Stderr, r.Result)
		}
	}},

	{"main runs once even with a __main__ guard", func(t *testing.T, s *testServer) {
		r := s.mustSucceed(t, "def main():\n    print('ran')\n    return __name__\nif __name__ == '__main__':\n    main()\n", nil, nil)
		if r.Stdout != "ran\n" || string(r.Result) == `"__main__"` {
			t.Errorf("stdout %q result %s", r.Stdout, r.Result)
		}
	}},

	{"numpy values become plain JSON; NaN and Infinity become null", func(t *testing.T, s *testServer) {
		r := s.mustSucceed(t, "import numpy as np\ndef main():\n    return {'i': np.int64(3), 'f': np.float32(0.5), 'b': np.bool_(True), 'a': np.arange(4).reshape(2, 2), 'nan': float('nan'), 'inf': np.inf, 't': (1, 2), 1: 'k'}\n", nil, nil)
		want := `{"i":3,"f":0.5,"b":true,"a":[[0,1],[2,3]],"nan":null,"inf":null,"t":[1,2],"1":"k"}`
		if string(r.Result) != want {
			t.Errorf("result = %s, want %s", r.Result, want)
		}
	}},
}

// serviceErrorCases are the error types testService provokes, each with
// its status and what else its answer must say.
var serviceErrorCases = []struct {
	name, script string
	fields       map[string]any
	wantType     string
	wantStatus   int
	check        func(t *testing.T, r response)
}{
	{"syntax error with line", "x = 1\ndef main(:\n    return 1\n", nil, "syntax_error", 400, func(t *testing.T, r response) {
		if r.Error.Line != 2 || r.Error.Offset == 0 {
			t.Errorf("line %d offset %d", r.Error.Line, r.Error.Offset)
		}
	}},
	{"missing main", "print('no main here')\n", nil, "missing_main", 400, func(t *testing.T, r response) {
		if r.Stdout != "" {
			t.Errorf("stdout %q: the script ran, though validation refuses it before any code runs", r.Stdout)
		}
	}},
	{"main not callable", "main = 3\n", nil, "missing_main", 400, nil},
	{"forbidden import", "import subprocess\ndef main():\n    return 1\n", nil, "forbidden_import", 400, nil},
	{"exception with traceback", "def helper():\n    raise ValueError('boom')\ndef main():\n    print('before')\n    helper()\n", nil, "script_error", 422, func(t *testing.T, r response) {
		tb := r.Error.Traceback
		if !strings.Contains(tb, `File "<script>", line 5, in main`) || !strings.Contains(tb, `line 2, in helper`) ||
			!strings.Contains(tb, "ValueError: boom") || strings.Contains(tb, "sandbox") {
			t.Errorf("traceback %q", tb)
		}
		if r.Stdout != "before\n" {
			t.Errorf("stdout %q", r.Stdout)
		}
	}},
	{"sys.exit counts as a script error", "import sys\ndef main():\n    sys.exit(3)\n", nil, "script_error", 422, nil},
	{"non-serialisable result", "def main():\n    return {'s': [1, complex(1, 2)]}\n", nil, "result_not_serializable", 422, func(t *testing.T, r response) {
		if !strings.Contains(r.Error.Message, "complex") || !strings.Contains(r.Error.Message, "result['s'][1]") {
			t.Errorf("message %q", r.Error.Message)
		}
	}},
	{"sleep past timeout_ms", "import time\ndef main():\n    print('started', flush=True)\n    time.sleep(10)\n", map[string]any{"timeout_ms": 300}, "timeout", 422, func(t *testing.T, r response) {
		if r.Stdout != "started\n" {
			t.Errorf("stdout %q", r.Stdout)
		}
		if r.Timing.ExecMS > 5000 {
			t.Errorf("killed after %v ms", r.Timing.ExecMS)
		}
	}},
	{"2 GB allocation hits the memory limit", "def main():\n    print('allocating')\n    x = bytearray(2 * 1024**3)\n    return len(x)\n", nil, "memory_limit", 422, func(t *testing.T, r response) {
		if r.Stdout != "allocating\n" {
			t.Errorf("stdout %q", r.Stdout)
		}
	}},
	{"numpy allocation over memory_mb", "import numpy as np\ndef main():\n    return float(np.ones(100 * 1024 * 1024).sum())\n", map[string]any{"memory_mb": 512}, "memory_limit", 422, nil},
	{"stdout flood", "def main():\n    while True:\n        print('x' * 1000)\n", nil, "output_limit", 422, func(t *testing.T, r response) {
		if len(r.Stdout) != 1<<20 || !strings.HasPrefix(r.Stdout, "xxxx") {
			t.Errorf("stdout is %d bytes, want the first 1 MiB", len(r.Stdout))
		}
	}},
	{"os.write flood on stderr", "import os\ndef main():\n    while True:\n        os.write(2, b'e' * 65536)\n", nil, "output_limit", 422, nil},
	{"result over the cap", "def main():\n    return 'x' * (9 * 1024 * 1024)\n", nil, "output_limit", 422, nil},
	{"segfault", "import ctypes\ndef main():\n    print('about to crash', flush=True)\n    ctypes.string_at(0)\n", nil, "sandbox_crashed", 422, func(t *testing.T, r response) {
		if r.Stdout != "about to crash\n" || !strings.Contains(r.Error.Message, "signal 11") {
			t.Errorf("stdout %q message %q", r.Stdout, r.Error.Message)
		}
	}},
	{"timeout_ms above the maximum", helloScript, map[string]any{"timeout_ms": 60000}, "invalid_request", 400, nil},
	{"memory_mb above the maximum", helloScript, map[string]any{"memory_mb": 4096}, "invalid_request", 400, nil},
	{"empty script", "", nil, "invalid_request", 400, nil},
}

// serviceRequests are testService's cases about the HTTP surface: bodies,
// auth, encodings, health and concurrency.
var serviceRequests = []struct {
	name string
	run  func(t *testing.T, s *testServer)
}{
	{"malformed bodies", func(t *testing.T, s *testServer) {
		for name, body := range map[string]string{
			"not json":       "{nope",
			"no script":      `{"input": 1}`,
			"script number":  `{"script": 3}`,
			"unknown field":  `{"script": "def main(): return 1", "timeout": 5}`,
			"trailing data":  `{"script": "def main(): return 1"} {}`,
			"timeout string": `{"script": "def main(): return 1", "timeout_ms": "5"}`,
		} {
			r := s.post(t, "application/json", []byte(body))
			if r.Status != 400 || r.Error == nil || r.Error.Type != "invalid_request" {
				t.Errorf("%s: status %d error %+v", name, r.Status, r.Error)
			}
		}
	}},

	{"body over the cap is payload_too_large", func(t *testing.T, s *testServer) {
		// A raw connection: announce a 9 MiB body, send a little of it, and
		// read the answer the server gives before reading the rest.
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{\"script\": \"", s.token, 9<<20)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body response
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 413 || body.Error == nil || body.Error.Type != "payload_too_large" {
			t.Errorf("status %d error %+v", resp.StatusCode, body.Error)
		}
	}},

	{"missing or wrong token is unauthorized", func(t *testing.T, s *testServer) {
		for _, token := range []string{"", "wrong"} {
			other := *s
			other.token = token
			r := other.execute(t, helloScript, nil)
			if r.Status != 401 || r.Error == nil || r.Error.Type != "unauthorized" {
				t.Errorf("token %q: status %d error %+v", token, r.Status, r.Error)
			}
		}
	}},

	{"msgpack request", func(t *testing.T, s *testServer) {
		// {"script": "def main(x): return x", "input": [1, "a"]} in msgpack.
		body := []byte("\x82\xa6script\xb5def main(x): return x\xa5input\x92\x01\xa1a")
		r := s.post(t, "application/msgpack", body)
		if r.Status != 200 || r.Header.Get("Content-Type") != "application/msgpack" {
			t.Errorf("status %d content type %q", r.Status, r.Header.Get("Content-Type"))
		}
	}},

	{"health reports jail, mode and pool", func(t *testing.T, s *testServer) {
		resp, err := http.Get(s.url + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h struct {
			Status, Service, Security, Jail, Mode, Version string
			MemoryAccounting                               string `json:"memory_accounting"`
			Features                                       []string
			Pool                                           struct{ Warm, Executed int }
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || h.Status != "healthy" || h.Jail != s.jail || h.Mode != s.mode ||
			h.Pool.Warm != 3 || h.Pool.Executed == 0 || len(h.Features) == 0 || h.Service == "" || h.MemoryAccounting != expectedAccounting() {
			t.Errorf("health %d %+v", resp.StatusCode, h)
		}
	}},

	{"32 concurrent requests all succeed", func(t *testing.T, s *testServer) {
		var wg sync.WaitGroup
		errs := make(chan string, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := s.execute(t, fmt.Sprintf("def main():\n    return %d\n", i), nil)
				if r.Status != 200 || string(r.Result) != fmt.Sprint(i) {
					errs <- fmt.Sprintf("request %d: status %d result %s error %+v", i, r.Status, r.Result, r.Error)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}},
}

// securityTests try to get out of the jail and show that it fails.
func securityTests(t *testing.T, s *testServer) {
	t.Run("cannot reach a listener on the host's loopback", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
				accepted <- struct{}{}
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		var got string
		s.mustSucceed(t, fmt.Sprintf(`import socket
def main():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", %d))
        return "connected"
    except OSError as e:
        return type(e).__name__
`, port), nil, &got)
		if got == "connected" || len(accepted) > 0 {
			t.Fatalf("the sandbox reached the host's loopback listener (%s)", got)
		}
	})

	t.Run("no route out and only a loopback interface", func(t *testing.T) {
		// UDP connect() only asks the kernel for a route; it sends nothing.
		var got struct {
			Interfaces []string
			Routes     map[string]string
		}
		s.mustSucceed(t, `import socket
def main():
    routes = {}
    for family, addr in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.connect((addr, 9))
            routes[addr] = "route"
        except OSError as e:
            routes[addr] = e.strerror
        finally:
            s.close()
    # /proc/self/net/dev lists the interfaces of the sandbox's network
    # namespace (socket.if_nameindex would need netlink, which seccomp
    # refuses; /proc/net is not in the sandbox's processes-only /proc).
    with open("/proc/self/net/dev") as f:
        interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    return {"Interfaces": interfaces, "Routes": routes}
`, nil, &got)
		if len(got.Interfaces) != 1 || got.Interfaces[0] != "lo" {
			t.Errorf("interfaces %v, want only lo", got.Interfaces)
		}
		for addr, res := range got.Routes {
			if res == "route" {
				t.Errorf("the sandbox has a route to %s", addr)
			}
		}
	})

	t.Run("cannot write outside /tmp", func(t *testing.T) {
		var got map[string]string
		s.mustSucceed(t, `import os
def main():
    out = {}
    for path in ["/evil", "/usr/lib/evil", "/etc/alternatives/evil", "/proc/evil", "/tmp/ok"]:
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "written"
        except OSError as e:
            out[path] = type(e).__name__
    return out
`, nil, &got)
		for path, res := range got {
			if path == "/tmp/ok" {
				if res != "written" {
					t.Errorf("/tmp is not writable: %s", res)
				}
			} else if res == "written" {
				t.Errorf("the sandbox wrote %s", path)
			}
		}
	})

	t.Run("cannot read a file the server's user created outside the jail", func(t *testing.T) {
		dir := t.TempDir()
		secret := filepath.Join(dir, "secret.txt")
		if err := os.WriteFile(secret, []byte("host secret"), 0o644); err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		s.mustSucceed(t, fmt.Sprintf(`def main():
    out = {}
    for path in [%q, "/etc/passwd", "/etc/shadow", "/root/.bashrc", "/proc/1/environ", "/proc/self/environ"]:
        try:
            with open(path) as f:
                out[path] = f.read()
        except OSError as e:
            out[path] = "error: " + type(e).__name__
    return out
`, secret), nil, &got)
		for path, res := range got {
			if strings.HasPrefix(path, "/proc/") {
				// PID 1 is the jail's own init: its environment is the
				// jail's, which must not carry the server's.
				if strings.Contains(res, envMarker) {
					t.Errorf("the sandbox read the server's environment in %s", path)
				}
			} else if !strings.HasPrefix(res, "error: ") {
				t.Errorf("the sandbox read %s: %.60q", path, res)
			}
		}
	})

	t.Run("runs as a non-root uid inside and on the host", func(t *testing.T) {
		var got map[string]int
		s.mustSucceed(t, "import os\ndef main():\n    return {'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid()}\n", nil, &got)
		if got["uid"] == 0 || got["euid"] == 0 || got["gid"] == 0 {
			t.Errorf("ids inside the sandbox: %v", got)
		}
		// Every jailed process below this test process, seen from the host.
		checked := 0
		for _, pid := range descendants(os.Getpid()) {
			st := procStatus(pid)
			if st == nil || (st["Name"] != "bwrap" && st["Name"] != "nsjail" && st["Name"] != "python3") {
				continue
			}
			checked++
			uids := strings.Fields(st["Uid"])
			if len(uids) == 0 || uids[0] == "0" || uids[1] == "0" {
				t.Errorf("pid %d (%s) runs as host uid %v", pid, st["Name"], uids)
			}
			// As root: the jail and the zygote run as --sandbox-uid, each
			// sandbox as it or (with bwrap) an id of its own from
			// --sandbox-ids (hostids_test.go).
			if id := firstID(st["Uid"]); os.Geteuid() == 0 && id != 65534 && !runner.DefaultSandboxIDs.Contains(id) {
				t.Errorf("pid %d (%s) runs as host uid %d, want 65534 or one of %v", pid, st["Name"], id, runner.DefaultSandboxIDs)
			}
		}
		if checked == 0 {
			t.Error("found no warm sandbox process to check")
		}
	})
}

// isolationTests show that nothing one execution does reaches the next.
func isolationTests(t *testing.T, s *testServer) {
	t.Run("nothing leaks between executions", func(t *testing.T) {
		var first map[string]any
		s.mustSucceed(t, `import threading, time, builtins, numpy
LEAK = "global"
builtins.LEAKED = True
numpy.mean = lambda *a, **k: 42
def spin():
    while True:
        time.sleep(0.01)
def main():
    with open("/tmp/leak.txt", "w") as f:
        f.write("leak")
    threading.Thread(target=spin, daemon=False).start()
    return {"mean": numpy.mean([1, 2])}
`, nil, &first)
		if first["mean"] != 42.0 {
			t.Fatalf("the monkeypatch did not even work in its own run: %v", first)
		}
		var second map[string]any
		s.mustSucceed(t, `import os, threading, numpy, builtins
def main():
    return {
        "tmp": os.path.exists("/tmp/leak.txt"),
        "global": "LEAK" in globals(),
        "builtin": hasattr(builtins, "LEAKED"),
        "mean": float(numpy.mean([1, 2])),
        "threads": threading.active_count(),
    }
`, nil, &second)
		want := map[string]any{"tmp": false, "global": false, "builtin": false, "mean": 1.5, "threads": 1.0}
		for k, v := range want {
			if second[k] != v {
				t.Errorf("%s = %v in the next execution, want %v", k, second[k], v)
			}
		}
	})
}

// processTests show the process limits, then try fork bombs and daemons.
func processTests(t *testing.T, s *testServer) {
	limitsOK := t.Run("process and file limits are in force", func(t *testing.T) {
		var got map[string][]int
		s.mustSucceed(t, `import resource
def main():
    out = {name: list(resource.getrlimit(getattr(resource, name))) for name in
           ["RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE",
            "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_MEMLOCK"]}
    out["VmSize"] = [int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmSize:")]
    return out
`, nil, &got)
		// The address space: what the sandbox mapped when the script
		// started (a little less than now) plus memory_mb, 1 GiB.
		if as, size := got["RLIMIT_AS"], got["VmSize"]; len(as) != 2 || len(size) != 1 || as[0] != as[1] ||
			as[0]-size[0] > 1<<30 || as[0]-size[0] < 1<<30-64<<20 {
			t.Errorf("RLIMIT_AS = %v with VmSize %v, want soft and hard the address space at the start plus 1 GiB", as, size)
		}
		want := map[string]int{"RLIMIT_NPROC": 16, "RLIMIT_NOFILE": 64, "RLIMIT_FSIZE": 16 << 20, "RLIMIT_CORE": 0,
			"RLIMIT_SIGPENDING": 128, "RLIMIT_MSGQUEUE": 0, "RLIMIT_MEMLOCK": 0}
		for name, v := range want {
			if len(got[name]) != 2 || got[name][0] != v || got[name][1] != v {
				t.Errorf("%s = %v, want soft and hard %d", name, got[name], v)
			}
		}
		if cpu := got["RLIMIT_CPU"]; len(cpu) != 2 || cpu[0] < 300 || cpu[0] > 400 {
			t.Errorf("RLIMIT_CPU = %v", cpu)
		}
	})
	if !limitsOK {
		t.Fatal("limits are not in force: not running the fork bomb")
	}

	t.Run("queued signals stay within the sandbox's own budget", func(t *testing.T) {
		// Real-time signals queue one entry each while blocked; the count
		// is kept per host user, which every sandbox shares. One sandbox
		// must stop at its own RLIMIT_SIGPENDING, not at the host's.
		var got struct {
			Queued int `json:"queued"`
			Errno  int `json:"errno"`
		}
		// tgkill, unlike kill, fails with EAGAIN when the queue is full.
		s.mustSucceed(t, `import signal, threading
def main():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
    n = 0
    while n < 200000:
        try:
            signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
        except OSError as e:
            return {"queued": n, "errno": e.errno}
        n += 1
    return {"queued": n, "errno": 0}
`, nil, &got)
		if got.Queued > 128 || got.Queued < 100 || got.Errno != 11 {
			t.Errorf("queued %d real-time signals, then errno %d: want at most 128, then EAGAIN", got.Queued, got.Errno)
		}
	})

	t.Run("fork bomb is contained and gone afterwards", func(t *testing.T) {
		r := s.execute(t, `import os
def main():
    n = 0
    while True:
        try:
            if os.fork() == 0:
                while True:
                    try:
                        os.fork()
                    except OSError:
                        pass
            n += 1
        except OSError:
            return n
`, map[string]any{"timeout_ms": 3000})
		if r.Status == 200 {
			var n int
			_ = json.Unmarshal(r.Result, &n)
			if n >= 16 {
				t.Errorf("forked %d children past the limit of 16", n)
			}
		} else if r.Error == nil || r.Error.Type != "timeout" {
			t.Errorf("status %d error %+v", r.Status, r.Error)
		}
		s.mustSucceed(t, helloScript, nil, nil)
	})

	t.Run("a daemonised process is gone after the request", func(t *testing.T) {
		s.mustSucceed(t, `import os, time
def main():
    if os.fork() == 0:
        try:
            os.setsid()  # refused: the sandbox's session is its only one
        except OSError:
            pass
        if os.fork() == 0:
            while True:
                time.sleep(1)
        os._exit(0)
    return "detached"
`, nil, nil)
		s.mustSucceed(t, helloScript, nil, nil)
	})

	t.Run("no process left over beyond the warm pool", func(t *testing.T) {
		// Only the warm sandboxes (and the zygote): no bomb or daemon child
		// may be counted on top.
		s.waitSettled(t, 3)
	})
}

// seccompTests try the system calls the sandbox's filter refuses.
func seccompTests(t *testing.T, s *testServer) {
	t.Run("seccomp refuses ptrace, bpf, keyrings, mounts and new namespaces", func(t *testing.T) {
		var got map[string]int
		s.mustSucceed(t, `import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(result):
    return 0 if result == 0 else ctypes.get_errno()
def main():
    out = {}
    out["ptrace"] = errno_of(libc.ptrace(0, 0, None, None))
    out["bpf"] = errno_of(libc.syscall(321, 0, None, 0))
    out["keyctl"] = errno_of(libc.syscall(250, 0, 0, 0, 0, 0))
    out["mount"] = errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    out["unshare_user"] = errno_of(libc.unshare(0x10000000))
    out["unshare_net"] = errno_of(libc.unshare(0x40000000))
    out["clone_newuser"] = errno_of(0 if libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0) >= 0 else -1)
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    out["threads_and_fork_work"] = 1
    return out
`, nil, &got)
		for name, errno := range got {
			if name == "threads_and_fork_work" {
				continue
			}
			if errno != 1 { // EPERM
				t.Errorf("%s: errno %d, want EPERM (1)", name, errno)
			}
		}
		if got["threads_and_fork_work"] != 1 {
			t.Error("threads or fork broke under the filter")
		}
	})
}
