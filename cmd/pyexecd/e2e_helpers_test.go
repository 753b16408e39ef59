package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/internal/syncbuf"

	"github.com/sandbox-exec/pyexec/internal/proctree"
)

// testServer is the real service started by run() on a loopback port.
type testServer struct {
	mode    string // fork or exec
	jail    string // bwrap or nsjail
	zygotes int    // fork mode: zygotes serving
	url     string
	token   string
	stop    func() error // cancels run and returns its error
	logs    *syncbuf.Buffer
}

// requireJail skips without bubblewrap, or fails when REQUIRE_JAIL=1.
func requireJail(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		if os.Getenv("REQUIRE_JAIL") == "1" {
			t.Fatalf("REQUIRE_JAIL=1 but bwrap is not installed: %v", err)
		}
		t.Skip("bwrap not installed; install bubblewrap or run make test")
	}
}

// nsjailConfig is the repository's policy, as the tests see it.
const nsjailConfig = "../../nsjail.cfg"

// jailBackends lists the backends to run the end-to-end suite against:
// bubblewrap always; nsjail when it is on PATH or at $NSJAIL. Without it
// the nsjail cases are skipped with a message, unless REQUIRE_NSJAIL=1.
func jailBackends(t *testing.T) [][]string {
	t.Helper()
	backends := [][]string{{"--jail", "bwrap"}}
	path := os.Getenv("NSJAIL")
	if path == "" {
		path = "nsjail"
	}
	if found, err := exec.LookPath(path); err == nil {
		backends = append(backends, []string{"--jail", "nsjail", "--nsjail", found, "--nsjail-config", nsjailConfig})
	} else if os.Getenv("REQUIRE_NSJAIL") == "1" {
		t.Fatalf("REQUIRE_NSJAIL=1 but nsjail was not found (%v)", err)
	} else {
		t.Logf("nsjail not found (PATH or $NSJAIL): its end-to-end cases are skipped; set REQUIRE_NSJAIL=1 to make that a failure")
	}
	return backends
}

// startServer runs the service with args on 127.0.0.1:0 and waits until
// /health says it can serve.
func startServer(t testing.TB, token string, args ...string) *testServer {
	t.Helper()
	requireJail(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan net.Addr, 1)
	done := make(chan error, 1)
	logs := &syncbuf.Buffer{}
	env := map[string]string{"AUTH_TOKEN": token}
	// On a very slow machine (an emulated VM: scripts/cgroup2-vm-test.sh)
	// PYEXEC_TEST_START_TIMEOUT gives the zygotes longer to import the
	// preload modules, and the waits below grow with it.
	startWait := 60 * time.Second
	if v := os.Getenv("PYEXEC_TEST_START_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			cancel()
			t.Fatalf("PYEXEC_TEST_START_TIMEOUT: %v", err)
		}
		env["PYEXEC_START_TIMEOUT"] = v
		startWait += 2 * d
	}
	// PYEXEC_TEST_RUNTIMES runs every end-to-end test against those
	// runtimes (say debian13-ds: `make test` builds it and sets this);
	// unset, the host's Python as before runtimes.
	if v := os.Getenv("PYEXEC_TEST_RUNTIMES"); v != "" {
		env["PYEXEC_RUNTIMES"] = v
	}
	if v := os.Getenv("PYEXEC_TEST_RUNTIME_DIR"); v != "" {
		env["PYEXEC_RUNTIME_DIR"] = v
	}
	getenv := func(k string) string { return env[k] }
	// The jail, not the validation policy, is what the security tests show:
	// every server runs with --policy none unless a test names one.
	args = append([]string{"--addr", "127.0.0.1:0", "--log-level", "debug", "--jail", "bwrap", "--policy", "none"}, args...)
	go func() { done <- run(ctx, args, getenv, logs, func(a net.Addr) { addrCh <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v\n%s", err, logs.String())
	case <-time.After(startWait):
		cancel()
		t.Fatalf("server did not start in %v\n%s", startWait, logs.String())
	}
	var once sync.Once
	var stopErr error
	mode, jail, zygotes := "fork", "bwrap", runtime.GOMAXPROCS(0)
	for i, a := range args {
		if a == "--zygotes" && i+1 < len(args) {
			zygotes, _ = strconv.Atoi(args[i+1])
		}
		if a == "--mode" && i+1 < len(args) {
			mode = args[i+1]
		}
		if a == "--jail" && i+1 < len(args) {
			jail = args[i+1]
		}
	}
	ts := &testServer{
		mode:    mode,
		jail:    jail,
		zygotes: zygotes,
		url:     "http://" + addr.String(),
		token:   token,
		logs:    logs,
		stop: func() error {
			once.Do(func() {
				cancel()
				select {
				case stopErr = <-done:
				case <-time.After(60 * time.Second):
					stopErr = context.DeadlineExceeded
				}
			})
			return stopErr
		},
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("server stopped with error: %v", err)
		}
	})
	deadline := time.Now().Add(startWait)
	for {
		resp, err := http.Get(ts.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ts
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never became healthy\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// response is the decoded body of /execute, success or failure.
type response struct {
	Status int
	Header http.Header
	Result json.RawMessage `json:"result"`
	Stdout string          `json:"stdout"`
	Stderr string          `json:"stderr"`
	Files  map[string]struct {
		Content   []byte `json:"content"`
		Size      int    `json:"size"`
		MediaType string `json:"media_type"`
	} `json:"files"`
	Timing *struct {
		QueueMS float64 `json:"queue_ms"`
		ExecMS  float64 `json:"exec_ms"`
		TotalMS float64 `json:"total_ms"`
	} `json:"timing"`
	Error *struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		Retryable bool   `json:"retryable"`
		Traceback string `json:"traceback"`
		Line      int    `json:"line"`
		Offset    int    `json:"offset"`
	} `json:"error"`
}

// post sends body to /execute and decodes the answer.
func (s *testServer) post(t testing.TB, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(body))
	if err != nil {
		t.Errorf("building the request: %v", err)
		return response{}
	}
	req.Header.Set("Content-Type", contentType)
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	// Errorf, not Fatalf: tests call this from their own goroutines too. A
	// failed exchange returns Status 0, which every caller's check rejects.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("POST /execute: %v", err)
		return response{}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("reading the answer: %v", err)
		return response{}
	}
	var r response
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Errorf("response is not JSON (%v): %s", err, raw)
			return response{}
		}
	}
	r.Status = resp.StatusCode
	r.Header = resp.Header
	return r
}

// execute runs a script with optional extra request fields.
func (s *testServer) execute(t testing.TB, script string, fields map[string]any) response {
	t.Helper()
	req := map[string]any{"script": script}
	for k, v := range fields {
		req[k] = v
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return s.post(t, "application/json", body)
}

// mustSucceed runs script and decodes its result into out.
func (s *testServer) mustSucceed(t *testing.T, script string, fields map[string]any, out any) response {
	t.Helper()
	r := s.execute(t, script, fields)
	if r.Status != http.StatusOK || r.Error != nil {
		t.Fatalf("status %d, error %+v, stdout %q, stderr %q", r.Status, r.Error, r.Stdout, r.Stderr)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			t.Fatalf("result %s: %v", r.Result, err)
		}
	}
	return r
}

// mustFail runs script and checks the error type and status.
func (s *testServer) mustFail(t *testing.T, script string, fields map[string]any, wantType string, wantStatus int) response {
	t.Helper()
	r := s.execute(t, script, fields)
	if r.Error == nil {
		t.Fatalf("want %s, got status %d result %s", wantType, r.Status, r.Result)
	}
	if r.Error.Type != wantType || r.Status != wantStatus {
		t.Fatalf("want %s/%d, got %s/%d: %s", wantType, wantStatus, r.Error.Type, r.Status, r.Error.Message)
	}
	return r
}

// descendants lists the pids of every process below pid.
func descendants(pid int) []int { return proctree.Descendants(pid) }

// procStatus returns the fields of /proc/pid/status.
func procStatus(pid int) map[string]string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// waitSettled waits until the pool holds exactly warm idle sandboxes with
// nothing building, running or being reaped, and until the processes below
// this test are exactly those sandboxes. A jail is three processes with
// bwrap (bwrap, its PID-1 bwrap, python3) and two with nsjail (nsjail,
// python3). In exec mode there is a jail per sandbox; in fork mode one for
// the zygote plus two processes per sandbox (its supervisor and itself). It
// fails if that does not happen in 20s.
func (s *testServer) waitSettled(t *testing.T, warm int) {
	t.Helper()
	perJail := 3
	if s.jail == "nsjail" {
		perJail = 2
	}
	// Fork mode: a jail and zygote per --zygotes serving, and per
	// successor started ahead of a rotation (as /metrics counts them: none
	// may be starting or retiring), and a sandbox per warm sandbox. Exec
	// mode: a jail, zygote and sandbox per warm sandbox.
	want := (perJail + 1) * warm
	deadline := time.Now().Add(20 * time.Second)
	var names []string
	for time.Now().Before(deadline) {
		zygotesSettled := true
		if s.mode == "fork" {
			serving, successors := s.metric(`pyexec_zygotes{state="serving"}`), s.metric(`pyexec_zygotes{state="successor"}`)
			zygotesSettled = serving == float64(s.zygotes) && s.metric(`pyexec_zygotes{state="retiring"}`) == 0 &&
				s.metric(`pyexec_zygotes{state="starting"}`) == 0
			want = perJail*int(serving+successors) + warm
		}
		names = names[:0]
		for _, pid := range descendants(os.Getpid()) {
			names = append(names, procStatus(pid)["Name"])
		}
		if zygotesSettled && len(names) == want && s.poolSettled(t, warm) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("processes below the test: %d %v, want the %d of %d warm sandboxes", len(names), names, want, warm)
}

// poolSettled reports whether /health shows warm idle sandboxes and
// nothing building or running.
func (s *testServer) poolSettled(t *testing.T, warm int) bool {
	t.Helper()
	p, ok := s.poolFigures()
	return ok && p.Idle == warm && p.Building == 0 && p.Busy == 0
}

// poolFigures reads the pool figures of /health.
func (s *testServer) poolFigures() (pool struct{ Idle, Building, Busy int }, ok bool) {
	resp, err := http.Get(s.url + "/health")
	if err != nil {
		return pool, false
	}
	defer resp.Body.Close()
	var h struct {
		Pool struct{ Idle, Building, Busy int }
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return pool, false
	}
	return h.Pool, true
}

// waitFor polls cond until it holds, and fails the test, naming what it
// waited for, if it does not within timeout. Tests wait on the event they
// need (a process appearing or going, a log line, a figure of /health or
// /metrics) through it rather than sleeping for a guessed time.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls /health until cond holds for the pool's busy count.
func (s *testServer) waitFor(t testing.TB, cond func(busy int) bool) {
	t.Helper()
	waitFor(t, 20*time.Second, "the pool's busy count to reach the awaited state", func() bool {
		p, ok := s.poolFigures()
		return ok && cond(p.Busy)
	})
}

// rawExecute posts a script and returns the raw answer body.
func (s *testServer) rawExecute(t *testing.T, script string) []byte {
	t.Helper()
	return s.rawExecuteBody(t, map[string]any{"script": script})
}

// rawExecuteBody posts fields as JSON and returns the raw answer body.
func (s *testServer) rawExecuteBody(t *testing.T, fields map[string]any) []byte {
	t.Helper()
	body, _ := json.Marshal(fields)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	// Its own connection, closed after the answer: a scrape leaves no
	// connection open for the connection tests to count.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return raw
}

// metric sums the samples of series on /metrics: a metric name (every
// label set) or a name with its labels as the text format writes them
// (`pyexec_execute_outcomes_total{outcome="ok"}`). It returns -1 when
// /metrics cannot be read.
func (s *testServer) metric(series string) float64 {
	req, err := http.NewRequest(http.MethodGet, s.url+"/metrics", nil)
	if err != nil {
		return -1
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	// Its own connection, closed after the answer: a scrape leaves no
	// connection open for the connection tests to count.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return -1
	}
	sum := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, series)
		if !ok || rest == "" || (rest[0] != ' ' && (rest[0] != '{' || strings.Contains(series, "{"))) {
			continue
		}
		fields := strings.Fields(rest)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
