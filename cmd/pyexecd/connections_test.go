package main

import (
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTokenNeverLogged: a request with the right token and a header
// fasthttp refuses (a control character in its value) makes fasthttp log
// the error; it goes to the service's JSON log, at warn level, without
// the request's bytes, so the token is not in the log.
func TestTokenNeverLogged(t *testing.T) {
	const token = "s3cr3t-token-in-a-header"
	s := startServer(t, token, "--warm", "1")
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = io.WriteString(c, "POST /execute HTTP/1.1\r\nHost: pyexec\r\nAuthorization: Bearer "+token+
		"\r\nX-Trace: a\x01b\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if !strings.HasPrefix(string(answer), "HTTP/1.1 400") {
		t.Errorf("answer %q, want 400", answer)
	}
	// fasthttp logs from its worker after the connection is closed.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.logs.String(), `"component":"fasthttp"`) {
		if time.Now().After(deadline) {
			t.Fatalf("fasthttp's error was not logged through the service's logger:\n%s", s.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	logs := s.logs.String()
	if strings.Contains(logs, token) {
		t.Errorf("the token is in the log:\n%s", logs)
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
