package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vmKB reads a figure of this process's /proc/self/status, in KiB.
func vmKB(t *testing.T, field string) int64 {
	t.Helper()
	v := procStatus(os.Getpid())[field]
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		t.Fatalf("%s in /proc/self/status: %q", field, v)
	}
	return kb
}

// TestAnswerIsBoundedAsAWhole: the attack of issue 25, a 500-byte request
// whose batch of 100 inputs each prints 200 KB of \x01 (six bytes each in
// JSON: it was a 120 MB answer, and the server's resident memory up by 500
// MiB). Now a batch's inputs share one output cap per stream, so at the
// default flags the answer is at most the cap's 1 MiB of control
// characters, about 6 MB, well within --max-answer-bytes; with a smaller
// answer cap the same request gets an output_limit answer of a few hundred
// bytes. Either way this process's (the server's) peak resident memory
// rises by far less than the old answer. A single request whose output and
// result together are over the cap keeps its stdout and stderr.
func TestAnswerIsBoundedAsAWhole(t *testing.T) {
	s := startServer(t, "", "--warm", "1")
	inputs := make([]int, 100)
	attack, _ := json.Marshal(map[string]any{
		"script": "import sys\ndef main(x):\n    sys.stdout.write('\\x01' * 200_000)\n",
		"inputs": inputs,
	})
	// post sends the attack and returns the status, the answer and how far
	// the peak resident set rose.
	post := func(t *testing.T, s *testServer) (int, []byte, int64) {
		// The peak from here on: clear_refs 5 resets VmHWM to VmRSS.
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			t.Skipf("cannot reset the peak resident set: %v", err)
		}
		before := vmKB(t, "VmHWM")
		resp, err := http.Post(s.url+"/execute", "application/json", bytes.NewReader(attack))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		rise := vmKB(t, "VmHWM") - before
		t.Logf("request %d bytes, answer %d bytes, peak resident set +%d MiB", len(attack), len(raw), rise>>10)
		// What the runner holds (the reply frame, at most 33 MB here, and
		// its decoded copies) is bounded by its own caps; the answer adds
		// at most 16 MiB, and no encoder copy.
		if rise > 160<<10 {
			t.Errorf("the peak resident set rose by %d MiB for one request", rise>>10)
		}
		return resp.StatusCode, raw, rise
	}

	t.Run("a batch printing control characters, default caps", func(t *testing.T) {
		status, raw, _ := post(t, s)
		var answer struct {
			Results []struct {
				Error *struct{ Type string } `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil || status != http.StatusOK || len(raw) > 16<<20 || len(answer.Results) != 100 {
			t.Fatalf("status %d, %d bytes: %.300s", status, len(raw), raw)
		}
		// The input that passed the batch's output cap ends the batch.
		stopped := 0
		for _, item := range answer.Results {
			if item.Error != nil && item.Error.Type == "output_limit" {
				stopped++
			}
		}
		if stopped != 1 {
			t.Errorf("%d items ended by output_limit, want 1", stopped)
		}
	})

	t.Run("a batch printing control characters, a smaller answer cap", func(t *testing.T) {
		small := startServer(t, "", "--warm", "1", "--max-answer-bytes", strconv.Itoa(2<<20))
		status, raw, _ := post(t, small)
		var answer struct {
			Error struct{ Type, Message string } `json:"error"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil || status != http.StatusUnprocessableEntity ||
			answer.Error.Type != "output_limit" || !strings.Contains(answer.Error.Message, "--max-answer-bytes") || len(raw) > 4096 {
			t.Fatalf("status %d, %d bytes: %.300s", status, len(raw), raw)
		}
	})

	t.Run("output and result over the cap together", func(t *testing.T) {
		r := s.execute(t, "import sys\ndef main():\n    sys.stdout.write('\\x01' * 1_000_000)\n    sys.stderr.write('\\x02' * 1_000_000)\n    return 'x' * 7_000_000\n", nil)
		if r.Status != http.StatusUnprocessableEntity || r.Error == nil || r.Error.Type != "output_limit" ||
			r.Stdout != strings.Repeat("\x01", 1_000_000) || r.Stderr != strings.Repeat("\x02", 1_000_000) {
			t.Fatalf("status %d error %+v, stdout %d bytes, stderr %d", r.Status, r.Error, len(r.Stdout), len(r.Stderr))
		}
		// The same in msgpack, where a control character is one byte: it
		// fits.
		status, raw := s.postMsgpack(t, map[string]any{"script": "import sys\ndef main():\n    sys.stdout.write('\\x01' * 1_000_000)\n    return 'x' * 7_000_000\n"})
		if status != http.StatusOK || len(raw) < 8_000_000 {
			t.Errorf("msgpack: status %d, %d bytes", status, len(raw))
		}
	})
}

// dialSlowReader opens a connection that sends an /execute request and
// then reads nothing, its receive buffer as small as the kernel allows,
// so that an answer larger than the server's send buffer (4 MiB at most
// here) cannot be written until it is closed.
func dialSlowReader(t *testing.T, s *testServer, body []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return c
}

// answersInFlight reads the gauge of answer bytes held.
func (s *testServer) answersInFlight(t *testing.T) int64 {
	t.Helper()
	n := s.metric("pyexec_answer_bytes_in_flight")
	if n < 0 {
		t.Fatal("no pyexec_answer_bytes_in_flight in /metrics")
	}
	return int64(n)
}

// TestSlowReadersCannotPinMoreThanTheBudget: clients that read nothing
// hold their answers (until the write timeout) within
// --max-answer-bytes-in-flight; once it is full, a further answer is 503
// overloaded at once, and the budget is whole again when they close.
func TestSlowReadersCannotPinMoreThanTheBudget(t *testing.T) {
	const budget = 16 << 20
	s := startServer(t, "", "--warm", "2", "--max-answer-bytes", strconv.Itoa(8<<20),
		"--max-answer-bytes-in-flight", strconv.Itoa(budget))
	// 1,000,000 control characters: a JSON answer of about 6 MB.
	body, _ := json.Marshal(map[string]any{"script": "import sys\ndef main():\n    sys.stdout.write('\\x01' * 1_000_000)\n"})
	waitHeld := func(atLeast int64) int64 {
		deadline := time.Now().Add(20 * time.Second)
		for {
			held := s.answersInFlight(t)
			if held > budget {
				t.Fatalf("%d answer bytes held, over the budget of %d", held, budget)
			}
			if held >= atLeast {
				return held
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d answer bytes held after 20 s, want at least %d", held, atLeast)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := dialSlowReader(t, s, body)
	waitHeld(6_000_000)
	second := dialSlowReader(t, s, body)
	held := waitHeld(12_000_000)
	t.Logf("two slow readers hold %d answer bytes", held)

	// A third such answer would pass the budget: 503, retryable, at once.
	start := time.Now()
	r := s.post(t, "application/json", body)
	if r.Status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Type != "overloaded" || !r.Error.Retryable ||
		r.Header.Get("Retry-After") == "" {
		t.Fatalf("a third answer: status %d error %+v, want 503 overloaded", r.Status, r.Error)
	}
	if held := s.answersInFlight(t); held > budget {
		t.Errorf("%d answer bytes held, over the budget of %d", held, budget)
	}
	// A small answer still fits.
	s.mustSucceed(t, "def main():\n    return 1\n", nil, nil)
	t.Logf("refused in %v", time.Since(start))

	// The slow readers go: their answers' bytes come back.
	first.Close()
	second.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.answersInFlight(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d answer bytes still held after the slow readers closed", s.answersInFlight(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := s.post(t, "application/json", body); r.Status != http.StatusOK || len(r.Stdout) != 1_000_000 {
		t.Errorf("after they closed: status %d error %+v", r.Status, r.Error)
	}
}
