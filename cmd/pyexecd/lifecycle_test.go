package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestOverloadedAnswers503 fills a one-sandbox server with a slow script
// and shows the next request gets 503 overloaded with Retry-After, and that
// the server serves again afterwards.
func TestOverloadedAnswers503(t *testing.T) {
	s := startServer(t, "", "--warm", "1", "--max-busy", "1", "--acquire-timeout", "300ms")
	s.waitSettled(t, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.mustSucceed(t, "import time\ndef main():\n    time.sleep(2)\n    return 1\n", nil, nil)
	}()
	// Wait until the slow script holds the only running slot.
	s.waitFor(t, func(busy int) bool { return busy == 1 })
	r := s.execute(t, helloScript, nil)
	if r.Status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Type != "overloaded" ||
		!r.Error.Retryable || r.Header.Get("Retry-After") == "" {
		t.Errorf("status %d error %+v Retry-After %q", r.Status, r.Error, r.Header.Get("Retry-After"))
	}
	wg.Wait()
	// With a 300ms wait bound, the next request needs the replacement
	// sandbox to be warm already.
	s.waitSettled(t, 1)
	s.mustSucceed(t, helloScript, nil, nil)
}

// TestNoSandboxLeftAfterStop runs scripts that leave processes behind,
// stops the server, and checks that no process below the test remains.
func TestNoSandboxLeftAfterStop(t *testing.T) {
	if n := len(descendants(os.Getpid())); n != 0 {
		t.Fatalf("%d processes below the test before it starts", n)
	}
	s := startServer(t, "", "--warm", "2")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.execute(t, fmt.Sprintf("import os, time\ndef main():\n    if os.fork() == 0:\n        time.sleep(60)\n    return %d\n", i), nil)
		}()
	}
	// One script still running when the server is told to stop.
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.execute(t, "import time\ndef main():\n    time.sleep(1)\n    return 1\n", nil)
	}()
	s.waitFor(t, func(busy int) bool { return busy >= 1 })
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	wg.Wait()
	if left := descendants(os.Getpid()); len(left) != 0 {
		var names []string
		for _, pid := range left {
			names = append(names, fmt.Sprintf("%d:%s", pid, procStatus(pid)["Name"]))
		}
		t.Errorf("processes left after the server stopped: %s", strings.Join(names, " "))
	}
}
