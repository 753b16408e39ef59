package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthOK says whether GET /health answers 200 within a few seconds.
func (s *testServer) healthOK() error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(s.url + "/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// dialIdle opens n idle TCP connections to the server, stopping at the
// first that fails, and closes them when the test ends.
func (s *testServer) dialIdle(t *testing.T, n int) ([]net.Conn, error) {
	t.Helper()
	addr := strings.TrimPrefix(s.url, "http://")
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// TestConnectionCap: connections beyond --max-connections are never
// served at once: each new idle connection takes the place of the one
// idle the longest that has made no valid request, which is closed; once
// they close the server answers as before (the flood of 20,400 idle
// connections used to take every descriptor and end the process). When
// every open connection has made a valid request, a new one takes the
// place of the one of them idle the longest; when every one has a request
// being handled, a new one is answered a plain 503 and closed.
func TestConnectionCap(t *testing.T) {
	const limit = 32
	s := startServer(t, "", "--warm", "1", "--max-connections", strconv.Itoa(limit))
	s.waitSettled(t, 1)
	conns, err := s.dialIdle(t, 4*limit)
	if err != nil {
		t.Fatalf("dialled %d connections: %v", len(conns), err)
	}
	closed, open := 0, 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := bufio.NewReader(c).ReadString('\n')
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			closed++
		case errors.Is(err, os.ErrDeadlineExceeded):
			open++ // served: fasthttp waits for its request
		default:
			t.Errorf("connection: %v", err)
		}
	}
	if open > limit || closed < 3*limit {
		t.Errorf("%d connections open and %d closed, want at most %d open", open, closed, limit)
	}
	for _, c := range conns {
		c.Close()
	}
	if err := s.healthOK(); err != nil {
		t.Fatalf("/health after the connections closed: %v\n%s", err, s.logs)
	}
	if !strings.Contains(s.logs.String(), "closing idle connections, those that made no valid request first") {
		t.Errorf("the closings were not logged:\n%s", s.logs)
	}

	// Connections that each made a valid request and wait idle for their
	// next: a new one takes the place of the one idle the longest (a
	// client holding the cap in kept-alive connections must not keep a
	// probe out). First every connection of the flood, and /health's
	// kept-alive one, are gone from the server's count (it sees a close a
	// moment after the client makes it): the scrape counts only itself,
	// and closes after its answer.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitFor(t, 10*time.Second, "the server to see the flood's connections close", func() bool {
		return s.metric("pyexec_connections_open") == 1
	})
	addr := strings.TrimPrefix(s.url, "http://")
	live := func(c net.Conn, r *bufio.Reader) {
		t.Helper()
		fmt.Fprintf(c, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
		status, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("/live: %q %v", status, err)
		}
		if _, err := r.Discard(r.Buffered()); err != nil {
			t.Fatal(err)
		}
	}
	var proven []net.Conn
	var readers []*bufio.Reader
	for range limit {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		live(c, r)
		proven, readers = append(proven, c), append(readers, r)
	}
	probe, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	live(probe, bufio.NewReader(probe))
	_ = proven[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readers[0].ReadString('\n'); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the longest idle connection was not closed for the probe: %v", err)
	}

	// Every connection with a request being handled (a script that sleeps,
	// running or waiting for a sandbox): a new one is refused.
	body := `{"script":"import time\ndef main():\n    time.sleep(3)\n"}`
	for _, c := range append(proven[1:], probe) {
		fmt.Fprintf(c, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	// No scrape can say when they all are: it would need a connection of
	// its own. The server reads a request within milliseconds; the
	// scripts hold every connection busy for seconds after this.
	time.Sleep(time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if status, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(status, "HTTP/1.1 503") {
		t.Errorf("a connection past %d that each have a request being handled: %q %v, want a plain 503", limit, status, err)
	}
	if !strings.Contains(s.logs.String(), "refusing connections") {
		t.Errorf("the refusal was not logged:\n%s", s.logs)
	}
}

// TestUnprovenConnectionsCannotStarveValidOnes: issue 25's measure. With
// --max-connections 40, sixty idle connections without the token and 32
// authorised uploads that sent their headers and one byte of an 8 MiB
// body used to make an authorised hello and /live get 503 (no connection
// slot), and a hello wait 5 s for a 503 (the uploads held the whole body
// budget). Now the idle connections make room for new ones, and an upload
// holds only what it has been sent (64 KiB at first) of the budget: the
// hello and /live are answered at once while all of them are held.
func TestUnprovenConnectionsCannotStarveValidOnes(t *testing.T) {
	const token = "s3cret-token"
	s := startServer(t, token, "--warm", "2", "--max-connections", "40")
	s.waitSettled(t, 2)
	if _, err := s.dialIdle(t, 60); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(s.url, "http://")
	for range 32 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", token, 8<<20)
	}
	// Every upload is being read: 32 first buffers of 64 KiB are held.
	waitFor(t, 10*time.Second, "the 32 uploads to be read, 64 KiB each", func() bool {
		return s.metric("pyexec_body_bytes_in_flight") == 32*64<<10
	})
	// New connections each time, as a probe's and a new client's are.
	fresh := &http.Client{Timeout: 4 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		start := time.Now()
		resp, err := fresh.Get(s.url + "/live")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/live beside 60 idle and 32 slow connections: %v %v", resp, err)
		}
		resp.Body.Close()
		req, _ := http.NewRequest(http.MethodPost, s.url+"/execute", strings.NewReader(`{"script": "def main():\n    return 'hello'\n"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err = fresh.Do(req)
		if err != nil {
			t.Fatalf("hello beside 60 idle and 32 slow connections: %v", err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"result":"hello"`) {
			t.Fatalf("hello: %d %s", resp.StatusCode, raw)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("/live and hello took %v", took)
		}
	}
}

// TestAcceptSurvivesEMFILE: with the process out of descriptors the
// server's accept fails with EMFILE; it retries instead of stopping, and
// serves again once descriptors are free. The test and the server are one
// process: the test lowers its own descriptor limit, and a helper process
// (this test binary) opens the connections, so that only the server's
// accepted sockets fill it.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	s := startServer(t, "", "--warm", "1")
	s.waitSettled(t, 1)
	helper := startConnectionHelper(t, s)
	defer helper.wait()
	restore := lowerDescriptorLimit(t, 32)
	defer restore()
	t.Logf("the helper opened %s connections; the server may hold about 32", helper.connect())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logs.String(), "cannot accept connections") {
		if time.Now().After(deadline) {
			t.Fatalf("the server never failed to accept:\n%s", s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The helper closes its connections and exits; the server's sockets
	// see EOF and close, and its accept succeeds again.
	helper.wait()
	restore()
	// On a new connection: a kept-alive one would need no accept.
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := fresh.Get(s.url + "/health")
	if err != nil {
		t.Fatalf("/health on a new connection after the descriptors were freed: %v\n%s", err, s.logs)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health on a new connection after the descriptors were freed: %s\n%s", resp.Status, s.logs)
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "too many open files") || !strings.Contains(logs, "accepting connections again") {
		t.Errorf("the burst was not logged:\n%s", logs)
	}
	if strings.Contains(logs, "server stopped") {
		t.Errorf("the server stopped:\n%s", logs)
	}
}

// TestHelperOpenConnections is the helper process of TestAcceptSurvivesEMFILE
// and TestDefaultConnectionCapLeavesSandboxesDescriptors: on a line on
// stdin it opens $PYEXEC_HELPER_CONNECTIONS (200) connections to
// $PYEXEC_HELPER_CONNECT, idle or each with a request, prints how many,
// and holds them until stdin closes.
func TestHelperOpenConnections(t *testing.T) {
	addr := os.Getenv("PYEXEC_HELPER_CONNECT")
	if addr == "" {
		t.Skip("a helper process of TestAcceptSurvivesEMFILE")
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(1)
	}
	// PYEXEC_HELPER_EXECUTE: each connection sends a request that runs
	// that script, and nothing reads the answers.
	script := os.Getenv("PYEXEC_HELPER_EXECUTE")
	count := 200
	if n, err := strconv.Atoi(os.Getenv("PYEXEC_HELPER_CONNECTIONS")); err == nil {
		count = n
	}
	var conns []net.Conn
	for range count {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
		if script != "" {
			body, _ := json.Marshal(map[string]string{"script": script})
			_, _ = fmt.Fprintf(c, "POST /execute HTTP/1.1\r\nHost: pyexec\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
	fmt.Println(len(conns))
	_, _ = io.Copy(io.Discard, in)
	for _, c := range conns {
		c.Close()
	}
	os.Exit(0)
}

// TestTokenNeverLogged: a request with the right token and a header
// fasthttp refuses (a control character in its value) makes fasthttp log
// the error; it goes to the service's JSON log, at warn level, without
// the request's bytes, so the token is not in the log.
func TestTokenNeverLogged(t *testing.T) {
	const token = "s3cr3t-token-in-a-header"
	s := startServer(t, token, "--warm", "1")
	// fasthttp's parse errors quote the offending header's value: the
	// token must not reach the log, nor the answer, when its own header is
	// the malformed one either (a token file with CRLF line ends), nor a
	// token that is not the server's.
	const otherToken = "another-callers-secret"
	malformed := []string{
		"Authorization: Bearer " + token + "\r\nX-Trace: a\x01b\r\n",
		"Authorization: Bearer " + token + "\r\r\n",
		"Authorization: Bearer " + token + "\x00\r\n",
		"Authorization Bearer " + token + "\r\n",
		"Authorization: Bearer " + otherToken + "\r\r\n",
	}
	for _, headers := range malformed {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.WriteString(c, "POST /execute HTTP/1.1\r\nHost: pyexec\r\n"+headers+
			"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		answer, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if !strings.HasPrefix(string(answer), "HTTP/1.1 400") {
			t.Errorf("headers %q: answer %q, want 400", headers, answer)
		}
		if strings.Contains(string(answer), token) || strings.Contains(string(answer), otherToken) {
			t.Errorf("headers %q: the answer quotes the token: %q", headers, answer)
		}
	}
	// fasthttp logs from its worker after the connection is closed: one
	// line for each malformed request.
	waitFor(t, 5*time.Second, "fasthttp's error line for each malformed request", func() bool {
		return strings.Count(s.logs.String(), `"component":"fasthttp"`) >= len(malformed)
	})
	logs := s.logs.String()
	if strings.Contains(logs, token) || strings.Contains(logs, otherToken) {
		t.Errorf("a token is in the log:\n%s", logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Errorf("log line is not JSON (%v): %q", err, line)
		}
		if fields["component"] == "fasthttp" && fields["level"] != "warn" {
			t.Errorf("fasthttp's line is not at warn level: %q", line)
		}
	}
}

// TestDefaultConnectionCapLeavesSandboxesDescriptors: under a small
// descriptor limit, the default --max-connections counts two descriptors a
// connection (its socket, and its hang-up watch's duplicate while its
// request waits) and keeps the pool's own: a flood of requests that wait
// for a sandbox gets 503s at the cap, and never leaves the pool without
// descriptors to build sandboxes (half the limit for connections did:
// "pipe2: too many open files" in every build).
func TestDefaultConnectionCapLeavesSandboxesDescriptors(t *testing.T) {
	restore := lowerDescriptorLimit(t, 360)
	defer restore()
	// 4 busy: 256 requests may wait, each holding its watch's duplicate.
	s := startServer(t, "", "--warm", "1", "--max-busy", "4")
	s.waitSettled(t, 1)

	helper := startConnectionHelper(t, s, "PYEXEC_HELPER_CONNECTIONS=300",
		"PYEXEC_HELPER_EXECUTE=import time\ndef main():\n    time.sleep(0.2)\n    return 1\n")
	defer helper.wait()
	t.Logf("the helper opened %s connections, each with a request", helper.connect())
	// The flood plays out while the pool runs and rebuilds sandboxes: the
	// requests accepted wait, run and are answered, tens of them.
	waitFor(t, 60*time.Second, "40 requests of the flood run and answered", func() bool {
		return s.metric(`pyexec_execute_outcomes_total{outcome="ok"}`) >= 40
	})
	helper.wait()
	if logs := s.logs.String(); strings.Contains(logs, "too many open files") {
		t.Errorf("the server ran out of descriptors:\n%s", logs)
	}
	var got int
	s.mustSucceed(t, "def main():\n    return 7\n", nil, &got)
	if got != 7 {
		t.Errorf("after the flood: result %d", got)
	}
}

// lowerDescriptorLimit lowers this process's RLIMIT_NOFILE (the server's
// too: they are one process) to the descriptors open now plus extra, and
// returns the function that restores it (safe to call twice).
func lowerDescriptorLimit(t *testing.T, extra int) (restore func()) {
	t.Helper()
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lowered := saved
	lowered.Cur = uint64(len(entries) + extra)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatalf("lowering RLIMIT_NOFILE: %v", err)
	}
	return func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Errorf("restoring RLIMIT_NOFILE: %v", err)
		}
	}
}

// connectionHelper is a process of this test binary that holds
// connections to a server (TestHelperOpenConnections), outside the test's
// descriptor limit.
type connectionHelper struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	waited bool
}

// startConnectionHelper starts the helper for server s, with env added
// to its environment.
func startConnectionHelper(t *testing.T, s *testServer, env ...string) *connectionHelper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOpenConnections$")
	cmd.Env = append(append(os.Environ(), "PYEXEC_HELPER_CONNECT="+strings.TrimPrefix(s.url, "http://")), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &connectionHelper{t: t, cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
}

// connect makes the helper open its connections, and says how many it did.
func (h *connectionHelper) connect() string {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, "connect\n"); err != nil {
		h.t.Fatal(err)
	}
	opened, err := h.stdout.ReadString('\n')
	if err != nil {
		h.t.Fatalf("helper: %v", err)
	}
	return strings.TrimSpace(opened)
}

// wait closes the helper's connections and waits for it to exit; safe to
// call twice.
func (h *connectionHelper) wait() {
	h.stdin.Close()
	if !h.waited {
		h.waited = true
		if err := h.cmd.Wait(); err != nil {
			h.t.Errorf("helper: %v", err)
		}
	}
}
