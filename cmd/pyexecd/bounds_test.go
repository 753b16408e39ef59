package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMemoryMeansOneThing: memory_mb is what the script may use on top of
// what its sandbox holds when it starts, enforced the same way on every
// request. The same request sent 20 times at each value gets the same
// answer every time (before, a hello at 256 MiB or less failed about half
// the time: the limit counted the ~256 MiB the interpreter maps already).
// Below the smallest accepted value is invalid_request naming it.
func TestMemoryMeansOneThing(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "2")
	r := s.execute(t, helloScript, map[string]any{"memory_mb": 15})
	if r.Status != 400 || r.Error == nil || r.Error.Type != "invalid_request" || !strings.Contains(r.Error.Message, "16") {
		t.Fatalf("memory_mb 15: status %d, error %+v; want 400 invalid_request naming the minimum, 16", r.Status, r.Error)
	}
	allocate := func(mb int) string {
		return fmt.Sprintf("def main():\n    return len(bytearray(%d << 20))\n", mb)
	}
	cases := []struct {
		name     string
		script   string
		memoryMB int
		want     string // "" for success, else the error type
	}{
		{"hello at the minimum", helloScript, 16, ""},
		{"hello at 64", helloScript, 64, ""},
		{"hello at 256", helloScript, 256, ""},
		{"hello at the maximum", helloScript, 1024, ""},
		{"48 MiB at 64", allocate(48), 64, ""},
		{"80 MiB at 64", allocate(80), 64, "memory_limit"},
		{"32 MiB at the minimum", allocate(32), 16, "memory_limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answers := map[string]int{}
			for range 20 {
				r := s.execute(t, tc.script, map[string]any{"memory_mb": tc.memoryMB})
				got := ""
				if r.Error != nil {
					got = r.Error.Type
				} else if r.Status != 200 {
					got = fmt.Sprintf("status %d", r.Status)
				}
				answers[got]++
			}
			if len(answers) != 1 || answers[tc.want] != 20 {
				t.Errorf("20 identical requests answered %v (\"\" is success), want %q every time", answers, tc.want)
			}
		})
	}
}

// TestUsageCountsEveryProcess: a script cannot make its children's CPU
// vanish from usage. Ignoring SIGCHLD (or SA_NOCLDWAIT) made the kernel
// reap children as they ended and discard their times: two children
// burned 0.8 s and the answer said cpu_ms 0. The sandbox's filter refuses
// a new SIGCHLD action, so children that end unwaited stay zombies until
// the sandbox ends, and the runner reads their times before the kill.
func TestUsageCountsEveryProcess(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	var answer struct {
		Result struct {
			SigIgn     any  `json:"sig_ign"`
			NoCldWait  int  `json:"nocldwait"`
			Default    bool `json:"default"`
			HandlerErr any  `json:"handler"`
		} `json:"result"`
		Usage struct {
			CPUMS float64 `json:"cpu_ms"`
		} `json:"usage"`
	}
	body := s.rawExecute(t, `import ctypes, os, signal, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
def ended(pid):
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # reaped by the kernel
def main():
    out = {}
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        out["sig_ign"] = "set"
    except OSError as e:
        out["sig_ign"] = e.errno
    try:
        signal.signal(signal.SIGCHLD, lambda *a: None)
        out["handler"] = "set"
    except OSError as e:
        out["handler"] = e.errno
    # The system call itself: struct sigaction {handler SIG_DFL, flags
    # SA_NOCLDWAIT, restorer, mask}.
    libc = ctypes.CDLL(None, use_errno=True)
    act = (ctypes.c_ulong * 4)(0, 2, 0, 0)
    out["nocldwait"] = 0 if libc.syscall(13, 17, act, None, 8) == 0 else ctypes.get_errno()
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            burn(0.4)
            os._exit(0)
        pids.append(pid)
    while not all(map(ended, pids)):
        time.sleep(0.02)
    out["default"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    return out
`)
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if answer.Result.SigIgn != 1.0 || answer.Result.NoCldWait != 1 || answer.Result.HandlerErr != 1.0 || !answer.Result.Default {
		t.Errorf("SIGCHLD actions: %s; want each refused with EPERM (1)", body)
	}
	if answer.Usage.CPUMS < 800 {
		t.Errorf("usage.cpu_ms %v, want at least the 800 ms its two children burned: %s", answer.Usage.CPUMS, body)
	}
}

// TestStartupChecksMemory: --max-busy running sandboxes, each at the most
// it can hold, must fit in the host's memory; an explicit --max-busy that
// does not is refused before any jail starts.
func TestStartupChecksMemory(t *testing.T) {
	requireJail(t)
	err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--jail", "bwrap", "--max-busy", "100000"},
		func(string) string { return "" }, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "--max-busy") {
		t.Fatalf("run with --max-busy 100000: %v; want a refusal naming what to lower", err)
	}
	t.Log(err)
}

// cpuHogScript keeps 16 processes busy until the sandbox is killed, each
// trying to start a session of its own (an autogroup, and so a CPU share,
// of its own, where the kernel groups by session).
const cpuHogScript = `import os
def main():
    for _ in range(15):
        if os.fork() == 0:
            break
    try:
        os.setsid()
    except OSError:
        pass
    while True:
        pass
`

// BenchmarkHelloBesideCPUHogs measures a hello's latency beside three
// sandboxes that keep 16 processes each busy, against its latency on an
// idle server (issue 25: goal within 5x at p50). Run it once, on a machine
// otherwise quiet:
//
//	go test -run '^$' -bench HelloBesideCPUHogs -benchtime 40x ./cmd/pyexecd
func BenchmarkHelloBesideCPUHogs(b *testing.B) {
	s := startServer(b, "", "--mode", "fork", "--warm", "4", "--max-busy", "8")
	p50 := func(n int) time.Duration {
		var took []time.Duration
		for range n {
			began := time.Now()
			if r := s.execute(b, helloScript, nil); r.Status != 200 {
				b.Fatalf("hello: status %d %+v", r.Status, r.Error)
			}
			took = append(took, time.Since(began))
		}
		slices.Sort(took)
		return took[len(took)/2]
	}
	p50(10) // warm the connections and the pool
	idle := p50(40)

	var hogs sync.WaitGroup
	for range 3 {
		hogs.Add(1)
		go func() {
			defer hogs.Done()
			s.execute(b, cpuHogScript, map[string]any{"timeout_ms": 20000})
		}()
	}
	s.waitFor(b, func(busy int) bool { return busy >= 3 })
	// Every hog's 16 processes spinning: its 15 children are up.
	waitFor(b, 20*time.Second, "the hogs' 45 children", func() bool {
		children := 0
		for _, pid := range descendants(os.Getpid()) {
			if python3Ancestors(pid) >= 2 {
				children++
			}
		}
		return children >= 3*15
	})
	b.ResetTimer()
	loaded := p50(b.N)
	b.StopTimer()
	b.ReportMetric(float64(idle.Microseconds())/1000, "idle-p50-ms")
	b.ReportMetric(float64(loaded.Microseconds())/1000, "hogged-p50-ms")
	b.ReportMetric(float64(loaded)/float64(idle), "x-idle")
	hogs.Wait()
}

// TestSandboxHasOneSession: a sandbox's processes share one session, and
// so one autogroup: the scheduler then gives each sandbox one share of the
// CPU however many processes it runs, where a process that started its own
// session took a share of its own (BenchmarkHelloBesideCPUHogs: a hello
// beside three sandboxes of 16 busy processes went from 5 to 176 ms at
// p50; now it stays within 3x of idle).
func TestSandboxHasOneSession(t *testing.T) {
	s := startServer(t, "", "--mode", "fork", "--warm", "1")
	var got struct {
		Setsid    any      `json:"setsid"`
		Sessions  []int    `json:"sessions"`
		Autogroup []string `json:"autogroups"`
	}
	s.mustSucceed(t, `import os
def autogroup():
    try:
        return open("/proc/self/autogroup").read().split()[0]
    except OSError:
        return "none"
def main():
    try:
        os.setsid()
        setsid = "started a session"
    except OSError as e:
        setsid = e.errno
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
        except OSError:
            pass
        os.write(w, b"%d %s" % (os.getsid(0), autogroup().encode()))
        os._exit(0)
    os.waitpid(pid, 0)
    child_sid, child_group = os.read(r, 256).decode().split()
    return {"setsid": setsid, "sessions": [os.getsid(0), int(child_sid)], "autogroups": [autogroup(), child_group]}
`, nil, &got)
	if got.Setsid != 1.0 {
		t.Errorf("setsid: %v, want refused with EPERM (1)", got.Setsid)
	}
	if len(got.Sessions) != 2 || got.Sessions[0] != got.Sessions[1] || got.Autogroup[0] != got.Autogroup[1] {
		t.Errorf("a child tried a session of its own: sessions %v, autogroups %v; want the sandbox's one", got.Sessions, got.Autogroup)
	}
}
