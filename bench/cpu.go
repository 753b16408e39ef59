package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicksPerSecond is USER_HZ, the unit of the times in /proc/<pid>/stat.
// It is part of the kernel's ABI and 100 on every Linux architecture Go
// supports.
const clockTicksPerSecond = 100

// procStat is the part of /proc/<pid>/stat the CPU accounting reads.
type procStat struct {
	pid, ppid      int
	comm           string
	state          byte   // R, S, D, Z, ...
	utime, stime   uint64 // the process's own threads, live and ended
	cutime, cstime uint64 // children it waited for, with their own cutime/cstime
	starttime      uint64 // tells a process from a later one with its pid
}

// ticks is the CPU the process and everything it reaped used.
func (s procStat) ticks() uint64 { return s.utime + s.stime + s.cutime + s.cstime }

// parseProcStat reads one /proc/<pid>/stat line. The command name is in
// parentheses and may itself hold spaces and parentheses, so it runs to
// the last ')' of the line.
func parseProcStat(data []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return s, fmt.Errorf("stat %q: no command name", data)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil {
		return s, fmt.Errorf("stat %q: pid: %w", data, err)
	}
	s.pid, s.comm = pid, string(data[open+1:closing])
	// Fields after the name, numbered as in proc(5): state is field 3.
	f := bytes.Fields(data[closing+1:])
	if len(f) > 0 && len(f[0]) == 1 {
		s.state = f[0][0]
	}
	field := func(n int) (uint64, error) {
		if n-3 >= len(f) {
			return 0, fmt.Errorf("stat %q: only %d fields", data, len(f)+2)
		}
		return strconv.ParseUint(string(f[n-3]), 10, 64)
	}
	var ppid uint64
	for _, v := range []struct {
		n   int
		dst *uint64
	}{{4, &ppid}, {14, &s.utime}, {15, &s.stime}, {16, &s.cutime}, {17, &s.cstime}, {22, &s.starttime}} {
		if *v.dst, err = field(v.n); err != nil {
			return s, fmt.Errorf("stat field %d: %w", v.n, err)
		}
	}
	s.ppid = int(ppid)
	return s, nil
}

// readProcStats reads the stat of every process in procDir (normally
// /proc). Processes that end while it reads are skipped.
func readProcStats(procDir string) (map[int]procStat, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	stats := make(map[int]procStat, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(procDir + "/" + e.Name() + "/stat")
		if err != nil {
			continue // ended meanwhile
		}
		s, err := parseProcStat(data)
		if err != nil || s.pid != pid {
			continue
		}
		stats[pid] = s
	}
	return stats, nil
}

// treeCPU is one reading of a process tree's CPU.
type treeCPU struct {
	ticks     uint64 // utime+stime+cutime+cstime of the roots and every live descendant
	processes int    // the roots and their live descendants
}

// treeMembers returns the stats of the processes in roots and of every
// process below them, found through the PPid field of stats. The first root
// must be there; the others may have gone.
func treeMembers(stats map[int]procStat, roots []int) (map[int]procStat, error) {
	if _, ok := stats[roots[0]]; !ok {
		return nil, fmt.Errorf("process %d is gone", roots[0])
	}
	children := map[int][]int{}
	for pid, s := range stats {
		children[s.ppid] = append(children[s.ppid], pid)
	}
	members := map[int]procStat{}
	var queue []int
	for _, r := range roots {
		if s, ok := stats[r]; ok {
			if _, dup := members[r]; !dup {
				members[r] = s
				queue = append(queue, r)
			}
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if _, dup := members[c]; !dup {
				members[c] = stats[c]
				queue = append(queue, c)
			}
		}
	}
	return members, nil
}

// treeTicks adds up utime+stime+cutime+cstime over treeMembers.
func treeTicks(stats map[int]procStat, roots []int) (treeCPU, error) {
	members, err := treeMembers(stats, roots)
	if err != nil {
		return treeCPU{}, err
	}
	var t treeCPU
	for _, s := range members {
		t.ticks += s.ticks()
		t.processes++
	}
	return t, nil
}

// becomeSubreaper makes this process the child subreaper of everything it
// starts: a process whose parent dies is then reparented to it rather than
// to init, so it stays in reach of the CPU accounting (see cpuMeter).
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// orphans lists the processes adopter adopted as a subreaper: its children
// other than the ones it started itself (servers).
func orphans(stats map[int]procStat, adopter int, started []int) []int {
	var out []int
	for pid, s := range stats {
		if s.ppid == adopter && !slices.Contains(started, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// reapOrphans reaps the orphans adopter holds as zombies. Their CPU is
// then gone from every reading, so this is done between measured runs only.
func reapOrphans(adopter int, started []int) {
	stats, err := readProcStats("/proc")
	if err != nil {
		return
	}
	for _, pid := range orphans(stats, adopter, started) {
		if stats[pid].state == 'Z' {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// cpuPollInterval is how often cpuMeter reads the tree during a run.
const cpuPollInterval = 200 * time.Millisecond

// cpuMeter measures the CPU a server and its descendants use between
// begin and finish, by reading the tree's /proc/<pid>/stat every
// cpuPollInterval.
//
// A descendant's CPU enters its parent's cutime/cstime when the parent
// reaps it, so utime+stime+cutime+cstime summed over the live tree only
// grows, except when a process leaves the tree unaccounted:
//
//   - its parent dies first. With adopter set (this process, a child
//     subreaper) such orphans are reparented here and stay in the tree as
//     roots, alive or as zombies, until reapOrphans between runs.
//   - its reaper discards its times: a PID namespace's init that dies
//     (a jail killed at a zygote rotation) reaps the rest of its namespace
//     with SIGCHLD ignored, so the zygote's lifetime CPU, with every
//     sandbox it reaped, vanishes from the sum at once.
//
// So the meter does not take the difference of two sums; it adds up each
// process's increase between consecutive readings, plus everything a
// process born between them used. When a process ends, the parent that
// reaps it shows its final figure: its last reading, already counted, is
// subtracted from the parent's increase. A process whose parent shows no
// such increase was not accounted for; what it had used up to its last
// reading stays counted, only what it used after is lost (unaccounted).
type cpuMeter struct {
	pid     int   // the server measured
	adopter int   // this process when it is a child subreaper, else 0
	started []int // every server this process started: not orphans

	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	prev  map[int]procStat
	ticks uint64
	// serverTicks is the part of ticks the server's own threads used.
	serverTicks uint64
	fig         cpuFigures
	t0          time.Time
	err         error
	began       bool
}

func (m *cpuMeter) read() (map[int]procStat, error) {
	stats, err := readProcStats("/proc")
	if err != nil {
		return nil, err
	}
	roots := []int{m.pid}
	if m.adopter > 0 {
		roots = append(roots, orphans(stats, m.adopter, m.started)...)
	}
	return treeMembers(stats, roots)
}

// accumulate adds what the tree used between prev and cur.
func (m *cpuMeter) accumulate(cur map[int]procStat) {
	same := func(a, b procStat) bool { return a.starttime == b.starttime }
	ended := map[int]uint64{} // last readings of ended processes, by parent
	endedCount := map[int]int{}
	for pid, p := range m.prev {
		if c, ok := cur[pid]; !ok || !same(p, c) {
			ended[p.ppid] += p.ticks()
			endedCount[p.ppid]++
		}
	}
	for pid, c := range cur {
		p, ok := m.prev[pid]
		if !ok || !same(p, c) {
			m.ticks += c.ticks() // born since the last reading
			continue
		}
		inc := c.ticks() - p.ticks()
		if pid == m.pid {
			m.serverTicks += (c.utime + c.stime) - (p.utime + p.stime)
		}
		if gone := ended[pid]; gone > 0 {
			if inc >= gone {
				inc -= gone
			} else {
				inc = 0
				m.fig.Unaccounted += endedCount[pid]
			}
			delete(ended, pid)
		}
		m.ticks += inc
	}
	// Ended processes whose parent ended too, or left the tree.
	for ppid := range ended {
		m.fig.Unaccounted += endedCount[ppid]
	}
	m.prev = cur
	m.fig.Readings++
}

func (m *cpuMeter) begin() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t0 = time.Now()
	m.prev, m.err = m.read()
	if m.err != nil {
		return
	}
	m.began = true
	m.fig.ProcessesStart = len(m.prev)
	m.fig.Readings = 1
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		tick := time.NewTicker(cpuPollInterval)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
			m.mu.Lock()
			if cur, err := m.read(); err == nil {
				m.accumulate(cur)
			}
			m.mu.Unlock()
		}
	}()
}

func (m *cpuMeter) finish() {
	if !m.began {
		if m.err == nil {
			m.err = fmt.Errorf("the measured part never began")
		}
		return
	}
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, err := m.read()
	if err != nil {
		m.err = err
		return
	}
	m.accumulate(cur)
	m.fig.ProcessesEnd = len(cur)
	m.fig.WallSeconds = time.Since(m.t0).Seconds()
}

// figures returns the run's CPU figures.
func (m *cpuMeter) figures() (*cpuFigures, error) {
	if m.err != nil {
		return nil, m.err
	}
	f := m.fig
	f.Seconds = float64(m.ticks) / clockTicksPerSecond
	f.ServerSeconds = float64(m.serverTicks) / clockTicksPerSecond
	if f.WallSeconds > 0 {
		f.Cores = f.Seconds / f.WallSeconds
	}
	return &f, nil
}
