package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSummarizePercentiles(t *testing.T) {
	var samples []sample
	for i := 1; i <= 1000; i++ {
		samples = append(samples, sample{latency: time.Duration(i) * time.Millisecond, status: 200})
	}
	samples = append(samples, sample{latency: time.Second, status: 500, errorType: "internal", mismatch: errors.New("wrong")})
	r := summarize(samples, 10*time.Second)
	check := func(key string, want float64) {
		t.Helper()
		if got := r.LatencyMS[key]; got < want*0.99 || got > want*1.01 {
			t.Errorf("%s = %v ms, want about %v", key, got, want)
		}
	}
	check("p50", 500)
	check("p90", 900)
	check("p99", 990)
	check("max", 1000)
	if r.Requests != 1001 || r.Correct != 1000 || r.Errors != 1 || r.ByStatus["500"] != 1 || r.ByError["internal"] != 1 {
		t.Errorf("counts %+v", r)
	}
	if r.Throughput != 100 {
		t.Errorf("throughput %v ok/s, want 100 (correct answers over 10 s)", r.Throughput)
	}
}

func TestScheduleIntendedTimes(t *testing.T) {
	start := time.Unix(1000, 0)
	s := newSchedule(start, 200)
	for i, want := range map[int]time.Duration{0: 0, 1: 5 * time.Millisecond, 200: time.Second, 1000: 5 * time.Second} {
		if got := s.at(i).Sub(start); got != want {
			t.Errorf("at(%d) = +%v, want +%v", i, got, want)
		}
	}
}

// fakeServer answers hello after delay, at most one request at a time.
func fakeServer(t *testing.T, delay time.Duration) (*httptest.Server, *atomic.Int64) {
	var served atomic.Int64
	sem := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			fmt.Fprint(w, `{"mode":"fake","jail":"none","pool":{"warm":1,"idle":1,"created":0,"executed":0}}`)
			return
		}
		sem <- struct{}{}
		time.Sleep(delay)
		<-sem
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"result":{"message":"Hello, World!"},"stdout":""}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &served
}

// Open-loop latency counts the time a request waited for the server: at
// twice the capacity of a one-at-a-time 20 ms server, the queue grows and
// so must the measured latency, while closed-loop latency stays near 20 ms.
func TestOpenLoopMeasuresFromIntendedTime(t *testing.T) {
	srv, _ := fakeServer(t, 20*time.Millisecond)
	sc, _ := builtinScenario("hello")
	target := newTarget(srv.URL, "", 64)
	open, elapsed := run(context.Background(), target, sc, loadSpec{Clients: 64, Rate: 100, Duration: time.Second}, 1, nil)
	ro := summarize(open, elapsed)
	closed, elapsed := run(context.Background(), target, sc, loadSpec{Clients: 1, Duration: time.Second}, 1, nil)
	rc := summarize(closed, elapsed)
	if rc.LatencyMS["p50"] > 60 {
		t.Errorf("closed loop p50 %v ms, want near 20", rc.LatencyMS["p50"])
	}
	if ro.LatencyMS["p90"] < 200 {
		t.Errorf("open loop p90 %v ms at twice the capacity: the queueing delay is hidden", ro.LatencyMS["p90"])
	}
}

func TestMismatchesAreErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"result":{"message":"something else"},"stdout":""}`)
	}))
	defer srv.Close()
	sc, _ := builtinScenario("hello")
	samples, elapsed := run(context.Background(), newTarget(srv.URL, "", 1), sc, loadSpec{Clients: 1, Requests: 5, Duration: 5 * time.Second}, 1, nil)
	r := summarize(samples, elapsed)
	if r.Errors != 5 || r.Correct != 0 || r.Throughput != 0 || len(r.Mismatches) == 0 {
		t.Errorf("wrong answers not counted as errors: %+v", r)
	}
}

func TestRefusesRunWithoutAnswers(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	sc, _ := builtinScenario("hello")
	_, err := runOne(context.Background(), newTarget(url, "", 1), sc, loadSpec{Clients: 1, Requests: 3, Duration: time.Second}, 1, nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "answered none") {
		t.Errorf("err = %v, want a refusal", err)
	}
}

func TestReportTableJSONAndPlot(t *testing.T) {
	mk := func(cfg string, ms int) *result {
		var samples []sample
		for i := 0; i < 100; i++ {
			samples = append(samples, sample{latency: time.Duration(ms) * time.Millisecond, status: 200})
		}
		r := summarize(samples, time.Second)
		r.Config, r.ServerArgs, r.Scenario, r.LoadModel, r.Clients = cfg, "--mode "+cfg, "hello", "closed", 4
		return r
	}
	results := []*result{mk("exec", 40), mk("fork", 10)}
	ceiling := &forkCeiling{ForksPerSec: 200, Processes: 2, SingleCoreForksPerSec: 110, Seconds: 5, Interpreter: ceilingPython, Imports: "numpy, pandas",
		Floor: &isolationFloor{CPUMSPerClone: 2.5, BusyMSPerClone: 3, Clones: 1000, Processes: 2, Seconds: 5}}
	results[1].setCeiling(ceiling)
	results[1].setCPU(&cpuFigures{Seconds: 1.5, WallSeconds: 1, Cores: 1.5, ServerSeconds: 0.1})
	var table bytes.Buffer
	writeTable(&table, results)
	for _, want := range []string{"ratios against exec", "throughput   1.00×", "p50   0.25×", "config fork: server --mode fork", "closed c=4",
		"machine: fork ceiling 200.0 forks/s with 2 processes (single core 110.0 forks/s)",
		"   50.0 ",                     // fork: 100 ok/s of a 200 forks/s ceiling
		"     15.00    6.00    1.00  ", // fork: 1.5 CPU seconds over 100 answers, 6 × the 2.5 ms floor, 0.1 s the server's own
		"machine: isolation floor 2.50 CPU ms per clone into a sandbox's namespaces and exit (machine busy 3.00 ms)",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	for _, line := range strings.Split(table.String(), "\n") {
		if strings.HasPrefix(line, "exec ") && strings.Count(line, " - ") != 4 || strings.HasPrefix(line, "exec ") && !strings.HasSuffix(line, " -  ") {
			t.Errorf("exec row should show - for the ceiling %%, the CPU, its ratio to the floor and the server's part: %q", line)
		}
	}
	var js bytes.Buffer
	if err := writeJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	var decoded []map[string]any
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || len(decoded) != 2 || decoded[1]["server_args"] != "--mode fork" {
		t.Errorf("json %s: %v", js.String(), err)
	}
	if decoded[1]["cpu_ms_per_req"] != 15.0 || decoded[1]["ceiling_pct"] != 50.0 || decoded[1]["cpu_per_floor"] != 6.0 ||
		decoded[1]["server_cpu_ms_per_req"] != 1.0 ||
		decoded[1]["fork_ceiling"].(map[string]any)["forks_per_s"] != 200.0 ||
		decoded[1]["fork_ceiling"].(map[string]any)["isolation_floor"].(map[string]any)["cpu_ms_per_clone"] != 2.5 {
		t.Errorf("json lacks the CPU or ceiling figures: %v", decoded[1])
	}
	if _, ok := decoded[0]["cpu_ms_per_req"]; ok {
		t.Errorf("json reports a CPU figure that was not measured: %v", decoded[0])
	}
	var svg bytes.Buffer
	if err := writeSVG(&svg, results); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil || strings.Count(svg.String(), "<polyline") != 2 {
		t.Errorf("svg is not well-formed with two lines: %v", err)
	}
}

func TestScenarioFile(t *testing.T) {
	path := t.TempDir() + "/s.json"
	os.WriteFile(path, []byte(`[{"name": "add", "weight": 3, "script": "def main(x): return x + 1", "input": 1, "expect": {"result": 2}},
	 {"name": "bad", "script": "def main(:", "expect": {"status": 400, "error_type": "syntax_error"}}]`), 0o644)
	sc, err := loadScenario(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Scripts) != 2 || sc.total != 4 {
		t.Fatalf("scenario %+v", sc)
	}
	if err := sc.Scripts[0].verify(200, "", []byte("2")); err != nil {
		t.Error(err)
	}
	if err := sc.Scripts[0].verify(200, "", []byte("3")); err == nil {
		t.Error("a wrong result passed")
	}
	if err := sc.Scripts[1].verify(400, "syntax_error", nil); err != nil {
		t.Error(err)
	}
}

// TestBenchAgainstRealServer is one short end-to-end run: the harness
// builds and starts the real server (real jail) in two configurations and
// compares them.
func TestBenchAgainstRealServer(t *testing.T) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		if os.Getenv("REQUIRE_JAIL") == "1" {
			t.Fatal("REQUIRE_JAIL=1 but bwrap is not installed")
		}
		t.Skip("bwrap not installed")
	}
	var out, errs bytes.Buffer
	err := runBench(context.Background(), []string{
		"-config", "fork=--mode fork --warm 2", "-config", "exec=--mode exec --warm 2",
		// No warm-up: exec mode makes a sandbox in seconds on a loaded
		// machine, and the warm ones must be measured, not spent.
		"-scenario", "hello,mix", "-c", "2", "-d", "3s", "-warmup", "0s", "-json", "-ceiling-d", "1s",
	}, &out, &errs)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errs.String())
	}
	var results []result
	if err := json.Unmarshal(out.Bytes(), &results); err != nil {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	if len(results) != 4 {
		t.Fatalf("%d results, want 4 (2 configs × 2 scenarios)", len(results))
	}
	for _, r := range results {
		if r.Correct == 0 || r.Errors != 0 || r.Server == nil || r.Server.Mode != r.Config || r.Server.SandboxesCreated == 0 {
			t.Errorf("%s %s: %d correct, %d errors %v, server %+v", r.Config, r.Scenario, r.Correct, r.Errors, r.Mismatches, r.Server)
		}
		if r.ForkCeiling == nil || r.ForkCeiling.ForksPerSec <= 0 || r.ForkCeiling.SingleCoreForksPerSec <= 0 || r.CeilingPct == nil || *r.CeilingPct <= 0 {
			t.Errorf("%s %s: no fork ceiling: %+v, %v", r.Config, r.Scenario, r.ForkCeiling, r.CeilingPct)
		}
		// The floor: a clone into new namespaces costs more than nothing,
		// and a request (a clone and far more) more than it.
		if f := r.ForkCeiling; f == nil || f.Floor == nil || f.Floor.Clones <= 0 || f.Floor.CPUMSPerClone <= 0 || r.CPUPerFloor == nil || *r.CPUPerFloor <= 1 {
			t.Errorf("%s %s: no isolation floor or ratio to it: %+v, %v", r.Config, r.Scenario, r.ForkCeiling, r.CPUPerFloor)
		}
		// Every request costs at least a sandbox's start and the script's
		// run: far more than nothing.
		if r.CPU == nil || r.CPUMSPerReq == nil || *r.CPUMSPerReq <= 0 || r.CPU.ProcessesStart < 2 {
			t.Errorf("%s %s: no CPU figure: %+v, %v", r.Config, r.Scenario, r.CPU, r.CPUMSPerReq)
		}
	}
}

func TestParseConfig(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig("fork=--mode fork --warm 8")
	if err != nil || cfg.Name != "fork" || cfg.Binary != "" || strings.Join(cfg.Args, " ") != "--mode fork --warm 8" {
		t.Errorf("parseConfig(fork=...) = %+v, %v", cfg, err)
	}
	cfg, err = parseConfig("base@" + self + "=--mode fork")
	if err != nil || cfg.Name != "base" || cfg.Binary != self || strings.Join(cfg.Args, " ") != "--mode fork" {
		t.Errorf("parseConfig(base@binary=...) = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"noflags", "=--mode fork", "@" + self + "=x", "base@/nonexistent/pyexecd=x", "base@" + t.TempDir() + "=x"} {
		if cfg, err := parseConfig(bad); err == nil {
			t.Errorf("parseConfig(%q) = %+v, want an error", bad, cfg)
		}
	}
}
