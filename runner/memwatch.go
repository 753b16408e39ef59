package runner

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

// Without a cgroup, rlimits bound each process of a sandbox, not the
// sandbox: 16 processes at memory_mb 320 held 896 MiB (issue 25). The
// memory watch holds the sandbox as a whole to its limit: while a script
// runs, the runner reads what the sandbox's processes and its scratch
// tmpfs hold, every memWatchInterval, and kills the sandbox (memory_limit)
// once they hold more than the limit on top of what the sandbox held when
// it said ready.
//
// What it counts is what a cgroup would charge the sandbox for: anonymous
// memory its processes hold (not the read-only files shared with the host,
// which the page cache keeps anyway) and the pages of its scratch tmpfs
// (/tmp and /dev/shm, counted once, from statfs). A page a process shares
// with the zygote or with another process of the sandbox (copy-on-write
// after a fork) is counted by its share (PSS): a script that loads its
// data and then forks workers is charged for the data once.
//
// Reading PSS (/proc/<pid>/smaps_rollup) walks a process's page tables,
// about 0.5 ms for the interpreter here, so each poll first computes a
// cheap upper bound from /proc/<pid>/statm (each process's whole resident
// anonymous memory) and statfs: while that is within the limit, so is the
// sandbox, and the poll costs some tens of microseconds. Only when it is
// not does the watch read PSS, at most every memWatchPreciseInterval, and
// kill when that is over the limit too.

// memWatchInterval is how often the watch reads a running sandbox. One
// process fills memory at up to about 5.6 GB/s here (huge pages), so a
// sandbox can pass its limit by up to about 60 MB per CPU before the watch
// sees it (docs/security.md, "What a sandbox can hold").
const memWatchInterval = 10 * time.Millisecond

// memWatchPreciseInterval is how often, at most, the watch reads PSS
// while the cheap bound is over the limit and the sandbox's processes are
// the same; in between it judges by the cheap bound less what the last PSS
// reading showed it overcounts. A sandbox's processes (at most
// --max-processes) cost about 0.5 ms each to read.
const memWatchPreciseInterval = 100 * time.Millisecond

// memBaseline is what a sandbox holds when it says ready, before any
// script: the figures a running script's use is measured from.
type memBaseline struct {
	// rssAnon and pssAnon are the first process's resident anonymous
	// memory, whole and by its share.
	rssAnon, pssAnon int64
	// scratch is what its scratch tmpfs holds (the warm-up's files).
	scratch int64
	known   bool
}

// memBaselineSampleInterval is how often, at most, a zygote's sandbox has
// its PSS read at ready. Reading it walks the sandbox's page tables (about
// 0.5 ms of the runner's CPU for the interpreter here: 4 % of a pandas
// request's CPU when every sandbox was read), and a fresh sandbox of the
// same zygote differs from the last one read mainly by how many others
// share the zygote's pages at that moment.
const memBaselineSampleInterval = time.Second

// baselineSampler reads sandboxes' baselines for one zygote: statm and
// statfs for every sandbox, PSS for one sandbox a memBaselineSampleInterval.
// In between, a sandbox's PSS at ready is taken as its resident anonymous
// memory less the share the last sandbox read did not pay for (its pages
// shared with the zygote and its siblings): exact for the pages it holds
// alone, off for the shared ones by how much the number of sharers changed
// since that reading. Only a script that forks is judged by PSS
// (memWatch.over); one process is judged by statm alone, exactly.
type baselineSampler struct {
	mu     sync.Mutex
	shared int64     // resident anonymous memory less PSS, at the last reading
	at     time.Time // when that was; zero before the first
}

// read reads pid's baseline; known is false when it cannot be read (the
// watch is then not started and rlimits alone bound the sandbox).
func (b *baselineSampler) read(pid int, now time.Time) memBaseline {
	rss, err := rssAnon(pid)
	if err != nil {
		return memBaseline{}
	}
	// A scratch that cannot be read counts as empty, now and later: the
	// tmpfs's own size cap (--tmp-mb) still bounds it.
	scratch, _ := scratchUsed(pid)
	base := memBaseline{rssAnon: rss, scratch: scratch, known: true}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.at.IsZero() && now.Sub(b.at) < memBaselineSampleInterval {
		base.pssAnon = max(rss-b.shared, 0)
		return base
	}
	pss, err := pssAnon(pid)
	if err != nil {
		return memBaseline{}
	}
	b.shared, b.at = max(rss-pss, 0), now
	base.pssAnon = pss
	return base
}

// memWatch judges one execution's memory. It is used by one goroutine at a
// time.
type memWatch struct {
	pid   int
	limit int64
	base  memBaseline
	// discount is what the cheap bound overcounted at the last PSS
	// reading; lastPrecise is when that was, and precisePIDs the
	// processes it read (a new one, which shares most of its pages,
	// makes the discount stale).
	discount    int64
	lastPrecise time.Time
	precisePIDs []int
}

// over reads the sandbox once and says whether it holds more than its
// limit on top of its baseline, and how much it holds on top of it.
func (w *memWatch) over(now time.Time) (bool, int64) {
	pids := sandboxProcesses(w.pid)
	scratch, _ := scratchUsed(w.pid)
	scratch -= w.base.scratch
	var rss int64
	for _, pid := range pids {
		if n, err := rssAnon(pid); err == nil {
			rss += n
		}
	}
	// The first process alone: its resident anonymous memory less what it
	// held at ready is exactly what it added (a page counts once however
	// many share it).
	if len(pids) == 1 {
		used := rss - w.base.rssAnon + scratch
		return used > w.limit, used
	}
	// Several: Σ RSS ≥ Σ PSS, so Σ RSS less the first process's PSS at
	// ready bounds what PSS would charge from above.
	bound := rss - w.base.pssAnon + scratch
	if bound <= w.limit {
		return false, bound
	}
	if now.Sub(w.lastPrecise) < memWatchPreciseInterval && slices.Equal(pids, w.precisePIDs) {
		estimate := bound - w.discount
		return estimate > w.limit, estimate
	}
	var pss int64
	for _, pid := range pids {
		n, err := pssAnon(pid)
		if err != nil {
			// Not readable (the process ended, or the runner may not
			// read it): its whole resident memory, never less.
			n, _ = rssAnon(pid)
		}
		pss += n
	}
	used := pss - w.base.pssAnon + scratch
	w.discount, w.lastPrecise, w.precisePIDs = max(bound-used, 0), now, pids
	return used > w.limit, used
}

// sandboxProcesses lists pid and every process below it. A sandbox's
// first process is the init of its PID namespace, so every process of the
// sandbox is below it: orphans are reparented to it.
func sandboxProcesses(pid int) []int {
	const maxProcesses = 4096 // bounded even if listings race with forks
	pids := []int{pid}
	for i := 0; i < len(pids) && len(pids) < maxProcesses; i++ {
		children, _ := childrenOf(pids[i])
		pids = append(pids, children...)
	}
	return pids
}

// pageSize is the unit of /proc/<pid>/statm.
var pageSize = int64(os.Getpagesize())

// rssAnon is pid's resident anonymous memory in bytes: statm's resident
// less its shared (file-backed and shmem) pages. statm is one of the few
// /proc files of a process anyone may read, and costs no page-table walk.
func rssAnon(pid int) (int64, error) {
	data, err := readProcFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	fields := bytes.Fields(data)
	if len(fields) < 3 {
		return 0, fmt.Errorf("statm of %d: %q", pid, data)
	}
	resident, err1 := strconv.ParseInt(string(fields[1]), 10, 64)
	shared, err2 := strconv.ParseInt(string(fields[2]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("statm of %d: %q", pid, data)
	}
	return (resident - shared) * pageSize, nil
}

// pssAnon is pid's anonymous memory by its share (smaps_rollup's
// Pss_Anon, Linux 5.9; Pss less Pss_File and Pss_Shmem before it). The
// runner may read it: it started the jail, so it holds every capability
// in the sandbox's user namespaces (or is root).
func pssAnon(pid int) (int64, error) {
	data, err := readProcFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	fields := map[string]int64{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(value), []byte(" kB"))), 10, 64)
		if err == nil {
			fields[string(name)] = kb << 10
		}
	}
	if v, ok := fields["Pss_Anon"]; ok {
		return v, nil
	}
	if v, ok := fields["Pss"]; ok {
		return v - fields["Pss_File"] - fields["Pss_Shmem"], nil
	}
	return 0, fmt.Errorf("smaps_rollup of %d has no Pss", pid)
}

// scratchUsed is what the sandbox's scratch tmpfs holds, in bytes: its
// /tmp is a directory of that tmpfs, reached through /proc/<pid>/root.
func scratchUsed(pid int) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/"+strconv.Itoa(pid)+"/root/tmp", &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}

// memWatcher runs a memWatch over one execution: it reads the sandbox
// every memWatchInterval until stopped, and says on exceeded what the
// sandbox held when it passed its limit. A nil *memWatcher (a cgroup
// bounds the sandbox, or its baseline is unknown) watches nothing.
//
// The readings run from a timer, not from a goroutine of the watcher's
// own: most scripts end before the first reading, and then the watch
// costs neither a goroutine nor the two wake-ups of stopping one.
type memWatcher struct {
	exceeded chan int64 // buffered 1
	// mu is held by a reading and by stop: once stop has returned, no
	// reading runs, and finish may use w.
	mu      sync.Mutex
	w       *memWatch
	timer   *time.Timer
	stopped bool
}

// startMemWatch starts the watch of the sandbox whose first process is
// pid, holding it to limit bytes on top of base. Sandbox.watchMemory
// decides whether a sandbox is watched at all.
func startMemWatch(pid int, limit int64, base memBaseline) *memWatcher {
	m := &memWatcher{
		w:        &memWatch{pid: pid, limit: limit, base: base},
		exceeded: make(chan int64, 1),
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.timer = time.AfterFunc(memWatchInterval, m.read)
	return m
}

// read is one reading, run by the timer; it sets the next one unless the
// sandbox passed its limit.
func (m *memWatcher) read() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	began := time.Now()
	if over, used := m.w.over(began); over {
		m.exceeded <- used // the only send: no reading follows it
		return
	}
	// Every memWatchInterval from the start of one reading to the next,
	// however long the reading took (PSS costs about 0.5 ms a process):
	// the interval is what bounds how far past its limit a sandbox gets.
	m.timer.Reset(max(memWatchInterval-time.Since(began), 0))
}

// exceededC is the channel that says the limit was passed (nil, which
// never fires, for a nil watcher).
func (m *memWatcher) exceededC() <-chan int64 {
	if m == nil {
		return nil
	}
	return m.exceeded
}

// stop ends the readings, waiting for one under way.
func (m *memWatcher) stop() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	m.timer.Stop()
}

// finish stops the watch and reads the sandbox once more, so that what a
// script held between the last reading and its end counts too: over is
// true when it held more than its limit at some reading.
func (m *memWatcher) finish() (over bool, used int64) {
	if m == nil {
		return false, 0
	}
	m.stop()
	select {
	case used := <-m.exceeded:
		return true, used
	default:
	}
	return m.w.over(time.Now())
}
