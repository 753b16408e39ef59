package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// proc(5) fields 1-17 and a few more; utime 14 is 1234, stime 15 is 56,
	// cutime 16 is 789, cstime 17 is 10.
	tail := " S 4321 100 100 0 -1 4194560 500 0 0 0 1234 56 789 10 20 0 3 0 12345 1000000 300 18446744073709551615\n"
	for _, comm := range []string{"python3", "a b", "x) (y", ") S 1 2 3 ((", ""} {
		s, err := parseProcStat([]byte("777 (" + comm + ")" + tail))
		if err != nil {
			t.Fatalf("%q: %v", comm, err)
		}
		want := procStat{pid: 777, ppid: 4321, comm: comm, state: 'S', starttime: 12345, utime: 1234, stime: 56, cutime: 789, cstime: 10}
		if s != want {
			t.Errorf("%q: got %+v, want %+v", comm, s, want)
		}
		if s.ticks() != 1234+56+789+10 {
			t.Errorf("%q: ticks %d", comm, s.ticks())
		}
	}
	for _, bad := range []string{"", "777 python3 S 1", "777 (short) S 1 2 3", "x (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// This process's own stat parses and names it.
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	s, err := parseProcStat(data)
	if err != nil || s.pid <= 0 || s.ppid <= 0 || !bytes.Contains(data, []byte("("+s.comm+")")) {
		t.Errorf("own stat %q: %+v, %v", data, s, err)
	}
}

func TestTreeTicks(t *testing.T) {
	st := func(pid, ppid int, ticks uint64) procStat {
		return procStat{pid: pid, ppid: ppid, utime: ticks, cutime: 1}
	}
	stats := map[int]procStat{}
	for _, s := range []procStat{st(1, 0, 1000), st(10, 1, 5), st(11, 10, 7), st(12, 11, 9), st(13, 10, 100), st(20, 1, 50), st(21, 20, 60)} {
		stats[s.pid] = s
	}
	got, err := treeTicks(stats, []int{10})
	if err != nil {
		t.Fatal(err)
	}
	// 10, 11, 12, 13 and a tick of reaped children each; not 1, 20 or 21.
	if got.ticks != 5+7+9+100+4 || got.processes != 4 {
		t.Errorf("got %+v", got)
	}
	// Roots that overlap are counted once; a gone extra root is skipped.
	got, err = treeTicks(stats, []int{11, 12, 21, 98})
	if err != nil || got.ticks != 7+9+60+3 || got.processes != 3 {
		t.Errorf("got %+v, %v", got, err)
	}
	if _, err := treeTicks(stats, []int{99, 10}); err == nil {
		t.Error("a missing first root gave no error")
	}
	if o := orphans(stats, 1, []int{20}); len(o) != 1 || o[0] != 10 {
		t.Errorf("orphans of 1 except the started 20: %v, want [10]", o)
	}
}

// The meter sees CPU burnt by descendants that were born, ran and were
// reaped between its two readings: through their reaper's cutime.
func TestCPUMeterCountsReapedDescendants(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	// The root waits for a line, then runs two middle shells that each run
	// a python burning 0.3 s of CPU; each middle shell is reaped by the
	// root, which then waits for a second line.
	burn := `python3 -c "import time
e = time.process_time() + 0.3
while time.process_time() < e: pass"`
	root := exec.Command("/bin/sh", "-c", "read a; sh -c '"+burn+"'; sh -c '"+burn+"'; echo done; read b")
	stdin, _ := root.StdinPipe()
	stdout, _ := root.StdoutPipe()
	if err := root.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		root.Process.Kill()
		root.Wait()
	}()
	m := &cpuMeter{pid: root.Process.Pid}
	time.Sleep(50 * time.Millisecond)
	m.begin()
	stdin.Write([]byte("go\n"))
	buf := make([]byte, 5)
	if n, err := stdout.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "done") {
		t.Fatalf("root said %q: %v", buf[:n], err)
	}
	m.finish()
	f, err := m.figures()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.2f CPU seconds over %.2f s", f.Seconds, f.WallSeconds)
	if f.Seconds < 0.55 || f.Seconds > f.WallSeconds*2+0.1 {
		t.Errorf("meter saw %.2f CPU seconds over %.2f s, want about 0.6 (two reaped 0.3 s burners)", f.Seconds, f.WallSeconds)
	}
	if f.ProcessesStart != 1 || f.ProcessesEnd != 1 {
		t.Errorf("processes %d then %d, want the root alone at both readings", f.ProcessesStart, f.ProcessesEnd)
	}
}

func TestParseForkLoop(t *testing.T) {
	l, err := parseForkLoop("310 5.012000 4.5")
	if err != nil || l.forks != 310 || l.rate() < 61.8 || l.rate() > 61.9 || l.cpuSeconds != 4.5 {
		t.Errorf("%+v %v", l, err)
	}
	for _, bad := range []string{"", "ready", "0 5.0 1", "12 0 1", "1 2", "1 2 -3", "1 2 3 4"} {
		if _, err := parseForkLoop(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// A descendant whose parent dies before it is reparented to this process
// (a child subreaper) and still counted, as a zombie, until reapOrphans.
func TestCPUMeterCountsOrphans(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	if err := becomeSubreaper(); err != nil {
		t.Skip(err)
	}
	// The root starts a middle shell that starts the burner in the
	// background and exits at once: the burner is orphaned.
	burn := `python3 -c "import time
e = time.process_time() + 0.3
while time.process_time() < e: pass
print(\"done\", flush=True)"`
	root := exec.Command("/bin/sh", "-c", "read a; sh -c '"+burn+" &'; read b")
	stdin, _ := root.StdinPipe()
	stdout, _ := root.StdoutPipe()
	if err := root.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		root.Process.Kill()
		root.Wait()
	}()
	me := os.Getpid()
	m := &cpuMeter{pid: root.Process.Pid, adopter: me, started: []int{root.Process.Pid}}
	time.Sleep(50 * time.Millisecond)
	m.begin()
	stdin.Write([]byte("go\n"))
	buf := make([]byte, 5)
	if n, err := stdout.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "done") {
		t.Fatalf("burner said %q: %v", buf[:n], err)
	}
	// Wait until the burner is a zombie child of this process.
	zombie := 0
	for range 500 {
		stats, _ := readProcStats("/proc")
		for _, pid := range orphans(stats, me, m.started) {
			if stats[pid].state == 'Z' && strings.HasPrefix(stats[pid].comm, "python") {
				zombie = pid
			}
		}
		if zombie != 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if zombie == 0 {
		t.Fatal("the orphaned burner never became a zombie child of this process")
	}
	m.finish()
	f, err := m.figures()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.2f CPU seconds over %.2f s", f.Seconds, f.WallSeconds)
	if f.Seconds < 0.28 {
		t.Errorf("meter saw %.2f CPU seconds, want at least the orphan's 0.3", f.Seconds)
	}
	reapOrphans(me, m.started)
	if _, err := os.Stat("/proc/" + strconv.Itoa(zombie)); err == nil {
		t.Errorf("zombie %d not reaped", zombie)
	}
}

// accumulate adds increases, moves an ended child's counted ticks into the
// parent that reaped it, and keeps what a process whose times were
// discarded had used.
func TestCPUMeterAccumulate(t *testing.T) {
	ps := func(pid, ppid int, ticks uint64) procStat {
		return procStat{pid: pid, ppid: ppid, utime: ticks, starttime: uint64(pid)}
	}
	tree := func(list ...procStat) map[int]procStat {
		m := map[int]procStat{}
		for _, p := range list {
			m[p.pid] = p
		}
		return m
	}
	m := &cpuMeter{pid: 1, prev: tree(ps(1, 0, 100), ps(2, 1, 10), ps(3, 2, 500), ps(4, 3, 5))}
	// 1 uses 7; 2 (a jail's init) is unchanged; 3 (a zygote) reaps 4,
	// which had used 5 then 1 more, and uses 2 itself; 5 is born and uses 4.
	m.accumulate(tree(ps(1, 0, 107), ps(2, 1, 10), ps(3, 2, 500+6+2), ps(5, 3, 4)))
	if m.ticks != 7+1+2+4 || m.fig.Unaccounted != 0 {
		t.Fatalf("ticks %d, unaccounted %d; want 14, 0", m.ticks, m.fig.Unaccounted)
	}
	if m.serverTicks != 7 {
		t.Fatalf("server ticks %d, want 7 (the server is 1)", m.serverTicks)
	}
	// 2 dies and reaps 3 with SIGCHLD ignored (times discarded): 3's 508
	// counted so far stay counted, nothing is subtracted.
	m.accumulate(tree(ps(1, 0, 107), ps(2, 1, 10)))
	if m.ticks != 14 || m.fig.Unaccounted != 2 {
		t.Fatalf("ticks %d, unaccounted %d; want 14, 2 (3 and its child 5)", m.ticks, m.fig.Unaccounted)
	}
	// A pid reused by a new process is a new process.
	m.accumulate(tree(ps(1, 0, 107), ps(2, 1, 10), procStat{pid: 5, ppid: 1, utime: 3, starttime: 99}))
	if m.ticks != 17 {
		t.Fatalf("ticks %d, want 17", m.ticks)
	}
	// What the server reaps (cutime) is the tree's, not the server's own.
	reaped := ps(1, 0, 109)
	reaped.cutime = 50
	m.accumulate(tree(reaped, ps(2, 1, 10), procStat{pid: 5, ppid: 1, utime: 3, starttime: 99}))
	if m.serverTicks != 7+2 || m.ticks != 17+2+50 {
		t.Fatalf("server ticks %d, ticks %d; want 9, 69", m.serverTicks, m.ticks)
	}
}
