package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestPoolDescriptorsCountEveryRuntime: each runtime has its own pool's
// builds and its own zygotes, so a second runtime leaves fewer
// descriptors for connections (the default --max-connections).
func TestPoolDescriptorsCountEveryRuntime(t *testing.T) {
	none := func(string) string { return "" }
	args := []string{"--max-busy", "4", "--warm", "8", "--build-concurrency", "2", "--zygotes", "2"}
	one, err := parseOptions(append(args, "--runtimes", "host"), none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	two, err := parseOptions(append(args, "--runtimes", "debian13-ds,debian12"), none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 64 + 8 × (4 busy + 8 warm + 2 building) + 16 × 2 zygotes, and a
	// second runtime's 2 builds and 2 zygotes.
	if got, want := poolDescriptors(one), 64+8*14+16*2; got != want {
		t.Errorf("one runtime: %d descriptors, want %d", got, want)
	}
	if got, want := poolDescriptors(two), 64+8*16+16*4; got != want {
		t.Errorf("two runtimes: %d descriptors, want %d", got, want)
	}
}

func TestOptionsFromEnvironmentAndFlags(t *testing.T) {
	env := map[string]string{"PYEXEC_MAX_BUSY": "3", "PYEXEC_WARM": "7", "PYEXEC_POLICY": "none", "PYEXEC_AUTH_TOKEN": "s3cret"}
	getenv := func(k string) string { return env[k] }
	o, err := parseOptions([]string{"--warm", "2"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.pool.MaxBusy != 3 || o.pool.Warm != 2 || o.runner.Policy.Name != "none" || o.server.AuthToken != "s3cret" {
		t.Errorf("max-busy %d (want 3 from the environment), warm %d (want 2: the flag wins), policy %q, token set %v",
			o.pool.MaxBusy, o.pool.Warm, o.runner.Policy.Name, o.server.AuthToken != "")
	}
	// The file caps fit in the scratch tmpfs: an unset byte cap shrinks
	// with --tmp-mb, a set one that cannot fit is refused.
	none := func(string) string { return "" }
	if o, err := parseOptions([]string{"--tmp-mb", "8"}, none, io.Discard); err != nil || o.runner.Limits.FilesBytes != (8<<20-32*4096)/2 {
		t.Errorf("--tmp-mb 8: files bytes %d, %v", o.runner.Limits.FilesBytes, err)
	}
	if o, err := parseOptions(nil, none, io.Discard); err != nil || o.runner.Limits.FilesBytes != 8<<20 || o.server.Limits.FilesBytes != 8<<20 {
		t.Errorf("defaults: files bytes %d/%d, %v", o.runner.Limits.FilesBytes, o.server.Limits.FilesBytes, err)
	}
	for _, args := range [][]string{{"--tmp-mb", "8", "--max-files-bytes", "8388608"}, {"--max-files", "401"}, {"--max-body-bytes", "104857600"}} {
		if _, err := parseOptions(args, none, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	for _, args := range [][]string{{"--warm", "0"}, {"--warm", "-1"}, {"--max-busy", "-2"}} {
		if _, err := parseOptions(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := parseOptions(nil, func(k string) string { return map[string]string{"PYEXEC_WARM": "many"}[k] }, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "PYEXEC_WARM") {
		t.Errorf("a bad variable: %v", err)
	}
	var out bytes.Buffer
	if _, err := parseOptions([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-max-busy") {
		t.Errorf("--help: %v", err)
	}
	out.Reset()
	if _, err := parseOptions([]string{"--version"}, func(string) string { return "" }, &out); !errors.Is(err, errVersionShown) || !strings.Contains(out.String(), version) {
		t.Errorf("--version: %v, %q", err, out.String())
	}
}

// TestCallerHangUpKillsScript: a caller that closes its connection has its
// script killed and its slot freed at once, and the log says so.
func TestCallerHangUpKillsScript(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--max-busy", "1", "--acquire-timeout", "3s")
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"script": "import time\ndef main():\n    time.sleep(25)\n"})
	fmt.Fprintf(conn, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Request-Id: hangup-test\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	s.waitFor(t, func(busy int) bool { return busy == 1 })
	hungUp := time.Now()
	conn.Close()
	// The one running slot must come back well before the script's 25 s.
	s.waitFor(t, func(busy int) bool { return busy == 0 })
	if took := time.Since(hungUp); took > 3*time.Second {
		t.Errorf("slot freed %v after the hang-up", took)
	}
	s.mustSucceed(t, helloScript, nil, nil)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.logs.String(), `"client_gone":true`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(s.logs.String(), `"request_id":"hangup-test"`) || !strings.Contains(s.logs.String(), `"client_gone":true`) {
		t.Errorf("no access-log line says the caller hung up:\n%s", s.logs.String())
	}
}

// TestAccessLogAndShutdown: every request, rejected ones included, gets one
// log line at the default level with a unique id; a script cut off by the
// end of the shutdown grace gets a retryable shutting_down.
func TestAccessLogAndShutdown(t *testing.T) {
	s := startServer(t, "tok", "--mode", "fork", "--warm", "1", "--shutdown-timeout", "1s", "--log-level", "info")
	s.mustSucceed(t, helloScript, nil, nil)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", strings.NewReader(`{"script":"def main(): pass"}`))
	req.Header.Set("Authorization", "bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("status %d WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	ids := map[string]bool{}
	lines := 0
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if !strings.Contains(line, `"message":"request"`) {
			continue
		}
		var raw map[string]any
		_ = json.Unmarshal([]byte(line), &raw)
		id, _ := raw["request_id"].(string)
		if raw["level"] != "info" || id == "" || raw["status"] == nil || raw["remote"] == nil || raw["total_ms"] == nil {
			t.Errorf("access-log line lacks a field: %s", line)
		}
		ids[id] = true
		lines++
	}
	if lines < 2 || len(ids) != lines {
		t.Errorf("%d access-log lines with %d distinct ids, want one per request (the 401 included)", lines, len(ids))
	}

	// The earlier requests' sandboxes hold their slots until reaped: wait
	// for them, so that the one busy slot below is this script's.
	s.waitFor(t, func(busy int) bool { return busy == 0 })
	answer := make(chan response, 1)
	go func() { answer <- s.execute(t, "import time\ndef main():\n    time.sleep(20)\n", nil) }()
	s.waitFor(t, func(busy int) bool { return busy == 1 })
	go s.stop()
	r := <-answer
	if r.Status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Type != "shutting_down" || !r.Error.Retryable {
		t.Errorf("a script cut off by shutdown: status %d error %+v", r.Status, r.Error)
	}
}

// TestReadinessFlipsUnderSaturation: /ready answers 503 with the reason
// while every slot is busy and as many requests again wait, and 200 once
// the load is gone; /live stays 200 throughout.
func TestReadinessFlipsUnderSaturation(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1", "--max-busy", "1", "--acquire-timeout", "30s")
	probe := func(path string) (int, string) {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := probe("/ready"); code != http.StatusOK {
		t.Fatalf("idle: /ready %d %s", code, body)
	}
	done := make(chan struct{})
	for range 3 {
		go func() {
			s.execute(t, "import time\ndef main():\n    time.sleep(2)\n", nil)
			done <- struct{}{}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	code, body := 0, ""
	for time.Now().Before(deadline) {
		if code, body = probe("/ready"); code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "saturated") {
		t.Errorf("under load: /ready %d %s", code, body)
	}
	if code, _ := probe("/live"); code != http.StatusOK {
		t.Errorf("/live %d under load", code)
	}
	for range 3 {
		<-done
	}
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, body = probe("/ready"); code == http.StatusOK {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Errorf("after the load: /ready %d %s", code, body)
	}
}

// TestMetrics scrapes /metrics after a known mix of requests and checks
// the counts; /metrics is behind the same token as /execute. What it
// answers passes `promtool check metrics` (HELP and TYPE for every
// family, Prometheus's naming rules), its duration buckets reach the
// configured maxima, and the process and Go runtime are described.
func TestMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("REQUIRE_PROMTOOL") == "1" {
			t.Fatalf("REQUIRE_PROMTOOL=1 but promtool is missing (scripts/install-test-deps.sh installs it): %v", err)
		}
		t.Log("no promtool: /metrics is not checked by it (scripts/install-test-deps.sh installs it)")
	}
	s := startServer(t, "tok", "--mode", "fork", "--warm", "1", "--max-timeout", "45s", "--acquire-timeout", "7s",
		"--start-timeout", "20s")
	s.mustSucceed(t, helloScript, nil, nil)
	s.mustSucceed(t, helloScript, nil, nil)
	s.mustFail(t, "def main(:\n", nil, "syntax_error", http.StatusBadRequest)
	unauth, _ := http.Post(s.url+"/execute", "application/json", strings.NewReader(`{"script":"def main(): pass"}`))
	unauth.Body.Close()

	if resp, _ := http.Get(s.url + "/metrics"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	values := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			values[name] = value
		}
	}
	want := map[string]string{
		`pyexec_requests_total{error="none",path="/execute",status="200"}`:         "2",
		`pyexec_requests_total{error="syntax_error",path="/execute",status="400"}`: "1",
		`pyexec_requests_total{error="unauthorized",path="/execute",status="401"}`: "1",
		`pyexec_execute_outcomes_total{outcome="ok"}`:                              "2",
		`pyexec_execute_outcomes_total{outcome="syntax_error"}`:                    "1",
		`pyexec_execute_outcomes_total{outcome="unauthorized"}`:                    "1",
		`pyexec_execute_outcomes_total{outcome="timeout"}`:                         "0",
		`pyexec_exec_seconds_count`:                                                "3",
		`pyexec_zygote_restarts_total`:                                             "0",
		// Buckets reach the maxima: --max-timeout for a script's run,
		// --acquire-timeout for a wait, both for a request,
		// --start-timeout for a build.
		`pyexec_exec_seconds_bucket{le="45"}`:            "3",
		`pyexec_queue_seconds_bucket{le="7"}`:            "3",
		`pyexec_request_seconds_bucket{le="52"}`:         "4",
		`pyexec_sandbox_build_seconds_bucket{le="+Inf"}`: values[`pyexec_sandbox_build_seconds_bucket{le="20"}`],
	}
	for name, value := range want {
		if values[name] != value {
			t.Errorf("%s = %q, want %s", name, values[name], value)
		}
	}
	for _, name := range []string{"pyexec_pool_idle", "pyexec_pool_building", "pyexec_pool_busy", "pyexec_pool_waiting",
		"pyexec_sandbox_build_seconds_count", "pyexec_sandbox_build_failures_total", "pyexec_request_bytes_total",
		"pyexec_response_bytes_total", "pyexec_queue_seconds_count", "pyexec_request_seconds_count",
		`pyexec_exec_seconds_bucket{le="25"}`, `pyexec_sandbox_build_seconds_bucket{le="20"}`,
		`pyexec_zygotes{state="serving"}`, `pyexec_zygotes{state="starting"}`, `pyexec_zygotes{state="successor"}`,
		`pyexec_zygotes{state="retiring"}`,
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		if _, ok := values[name]; !ok {
			t.Errorf("%s missing from /metrics:\n%s", name, raw)
		}
	}
	if n := values["pyexec_sandbox_build_seconds_count"]; n == "" || n == "0" {
		t.Errorf("no sandbox build counted: %q", n)
	}
	// Every error type /execute can answer (the API's list) is counted
	// from 0, so an alert on it works before it first happens.
	for _, typ := range openAPIErrorTypes(t) {
		if typ == "not_found" || typ == "not_run" {
			continue // never an answer of /execute (not_run: a batch item's error only)
		}
		if _, ok := values[`pyexec_execute_outcomes_total{outcome="`+typ+`"}`]; !ok {
			t.Errorf("outcome %s is not counted from the start", typ)
		}
	}
	// Every family has its HELP and TYPE (promtool says so too, but this
	// holds where it is missing).
	for _, line := range strings.Split(string(raw), "\n") {
		if name, _, ok := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " "); ok && strings.HasPrefix(line, "# TYPE ") &&
			!strings.Contains(string(raw), "# HELP "+name+" ") {
			t.Errorf("%s has no HELP", name)
		}
	}
	if promtool != "" {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = bytes.NewReader(raw)
		if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
}

// openAPIErrorTypes is the enum of the error type in api/openapi.yaml.
func openAPIErrorTypes(t *testing.T) []string {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, v := range doc.Components.Schemas["Error"].Value.Properties["type"].Value.Enum {
		types = append(types, v.(string))
	}
	if len(types) < 10 {
		t.Fatalf("the description lists only %d error types", len(types))
	}
	return types
}

// TestServerAddsLittleToExecution guards the request path around the
// sandbox: the least, over a few requests, of total − queue − exec (what
// decoding, watching the connection and answering cost) stays far below a
// scheduler tick. A hang-up watcher that was woken only by its poll
// timeout once added 50 ms to every request.
func TestServerAddsLittleToExecution(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	least := time.Hour
	for range 5 {
		r := s.mustSucceed(t, helloScript, nil, nil)
		extra := time.Duration((r.Timing.TotalMS - r.Timing.QueueMS - r.Timing.ExecMS) * float64(time.Millisecond))
		least = min(least, extra)
	}
	if least > 20*time.Millisecond {
		t.Errorf("the server adds at least %v to every execution", least)
	}
}
