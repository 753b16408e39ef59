package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandbox-exec/pyexec/runner"
)

// ceilingPython is the interpreter the fork ceiling forks: the one the
// server's zygote runs.
const ceilingPython = "/usr/bin/python3"

// ceilingScript is what each copy runs: import what the zygote imports,
// freeze the heap as the zygote does, report ready, wait for the go line
// on stdin, then fork, let the child exit at once and reap it, over and
// over for argv[1] seconds, and print the count, the elapsed time and the
// CPU time of the copy and its reaped children together. With argv[2] ==
// "1" the copy first pins itself to one allowed CPU (the single-core
// figure), so the parent and its short-lived children share that CPU.
// With argv[3] other than 0 it clones with those flags instead of forking
// (the raw clone system call, x86_64, as the zygote clones a sandbox; the
// child exits at once, before any of Python's after-fork work).
const ceilingScript = `import ctypes, gc, os, resource, signal, sys, time
import numpy, pandas
seconds, flags = float(sys.argv[1]), int(sys.argv[3])
if sys.argv[2] == "1":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
syscall = ctypes.CDLL(None, use_errno=True).syscall
syscall.restype = ctypes.c_long
gc.freeze()
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
n = 0
def cpu():
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
cpu0 = cpu()
start = time.monotonic()
end = start + seconds
while True:
    if flags:
        pid = syscall(ctypes.c_long(56), ctypes.c_ulong(flags | signal.SIGCHLD), None, None, None, ctypes.c_ulong(0))
        if pid < 0:
            raise OSError(ctypes.get_errno(), "clone")
    else:
        pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
    if time.monotonic() >= end:
        break
sys.stdout.write("%d %.6f %.6f\n" % (n, time.monotonic() - start, cpu() - cpu0))
sys.stdout.flush()
`

// sandboxNamespaces are the namespaces the zygote clones each sandbox into
// (python/pyexec/isolation.py): user, mount, PID, network, IPC, UTS and
// cgroup.
const sandboxNamespaces = 0x10000000 | 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000 | 0x02000000

// isolationFloor is the CPU of the isolation itself: cloning the zygote's
// interpreter into all of a sandbox's namespaces and its exit and reap,
// with nothing else. A design that keeps a fresh sandbox per request
// cannot spend less CPU per request (issue 23); bench compares each
// configuration's CPU per request with it.
type isolationFloor struct {
	// CPUMSPerClone is the CPU of the cloning processes and their reaped
	// children; BusyMSPerClone the machine's busy time, which also counts
	// the kernel's workers (a network namespace is torn down by one).
	CPUMSPerClone  float64 `json:"cpu_ms_per_clone"`
	BusyMSPerClone float64 `json:"busy_ms_per_clone"`
	Clones         int64   `json:"clones"`
	Processes      int     `json:"processes"`
	Seconds        float64 `json:"seconds"`
}

func (f *isolationFloor) String() string {
	return fmt.Sprintf("isolation floor %.2f CPU ms per clone into a sandbox's namespaces and exit (machine busy %.2f ms), %d processes for %.1f s",
		f.CPUMSPerClone, f.BusyMSPerClone, f.Processes, f.Seconds)
}

// measureFloor measures the isolation floor: runtime.NumCPU() copies at
// once, each cloning for d, with the zygote's allocator.
func measureFloor(ctx context.Context, d time.Duration) (*isolationFloor, error) {
	n := runtime.NumCPU()
	loops, busy, err := forkLoops(ctx, n, d, false, runner.AllocatorEnv(), sandboxNamespaces)
	if err != nil {
		return nil, fmt.Errorf("isolation floor: %w", err)
	}
	f := &isolationFloor{Processes: n, Seconds: d.Seconds()}
	var cpu float64
	for _, l := range loops {
		f.Clones += l.forks
		cpu += l.cpuSeconds
	}
	f.CPUMSPerClone = cpu * 1000 / float64(f.Clones)
	f.BusyMSPerClone = busy.Seconds() * 1000 / float64(f.Clones)
	return f, nil
}

// forkCeiling is the machine's fork ceiling: how fast the zygote
// interpreter (numpy and pandas imported, and allocating as the zygote
// does: runner.AllocatorEnv) can be forked, exit and be reaped, by plain
// processes outside any jail. A server that forks one sandbox per request
// cannot answer faster than this.
type forkCeiling struct {
	ForksPerSec float64 `json:"forks_per_s"` // all copies together
	Processes   int     `json:"processes"`   // copies run at once: runtime.NumCPU()
	// SingleCoreForksPerSec is one copy alone, pinned to one CPU.
	SingleCoreForksPerSec float64   `json:"single_core_forks_per_s"`
	PerProcess            []float64 `json:"per_process_forks_per_s"`
	Forks                 int64     `json:"forks"` // of the all-core measurement
	Seconds               float64   `json:"seconds"`
	Interpreter           string    `json:"interpreter"`
	Imports               string    `json:"imports"`
	Env                   []string  `json:"env"` // the allocator settings the copies ran with
	// PlainAllocator is the same measurement with Python's default
	// allocator (pymalloc, no huge pages): the definition of the ceiling
	// before the zygote allocated on huge pages, for comparison with
	// earlier figures. Ratios are against ForksPerSec.
	PlainAllocator *forkCeiling `json:"plain_allocator,omitempty"`
	// Floor is the isolation floor, measured with the ceiling.
	Floor *isolationFloor `json:"isolation_floor,omitempty"`
}

func (c *forkCeiling) String() string {
	s := fmt.Sprintf("fork ceiling %.1f forks/s with %d processes (single core %.1f forks/s): %s with %s imported and %s, fork+exit+waitpid for %.1f s, no jail",
		c.ForksPerSec, c.Processes, c.SingleCoreForksPerSec, c.Interpreter, c.Imports, strings.Join(c.Env, " "), c.Seconds)
	if p := c.PlainAllocator; p != nil {
		s += fmt.Sprintf("; with the plain allocator %.1f forks/s (single core %.1f)", p.ForksPerSec, p.SingleCoreForksPerSec)
	}
	if c.Floor != nil {
		s += "\nmachine: " + c.Floor.String()
	}
	return s
}

// measureCeiling measures the fork ceiling with the zygote's allocator and
// with the plain one: each time one copy pinned to one CPU, then
// runtime.NumCPU() copies at once, each for d; then the isolation floor.
func measureCeiling(ctx context.Context, d time.Duration) (*forkCeiling, error) {
	c, err := measureCeilingWith(ctx, d, runner.AllocatorEnv())
	if err != nil {
		return nil, err
	}
	if c.PlainAllocator, err = measureCeilingWith(ctx, d, nil); err != nil {
		return nil, err
	}
	if c.Floor, err = measureFloor(ctx, d); err != nil {
		return nil, err
	}
	return c, nil
}

func measureCeilingWith(ctx context.Context, d time.Duration, env []string) (*forkCeiling, error) {
	single, _, err := forkLoops(ctx, 1, d, true, env, 0)
	if err != nil {
		return nil, err
	}
	n := runtime.NumCPU()
	all, _, err := forkLoops(ctx, n, d, false, env, 0)
	if err != nil {
		return nil, err
	}
	c := &forkCeiling{Processes: n, SingleCoreForksPerSec: single[0].rate(), Seconds: d.Seconds(),
		Interpreter: ceilingPython, Imports: "numpy, pandas", Env: env}
	for _, l := range all {
		c.ForksPerSec += l.rate()
		c.PerProcess = append(c.PerProcess, l.rate())
		c.Forks += l.forks
	}
	return c, nil
}

// forkLoop is what one copy of the script reported.
type forkLoop struct {
	forks      int64
	seconds    float64
	cpuSeconds float64
}

func (l forkLoop) rate() float64 { return float64(l.forks) / l.seconds }

// parseForkLoop reads the copy's last line: "<forks> <seconds> <cpu
// seconds>".
func parseForkLoop(line string) (forkLoop, error) {
	bad := fmt.Errorf("fork loop printed %q, want \"<forks> <seconds> <cpu seconds>\"", line)
	f := strings.Fields(line)
	if len(f) != 3 {
		return forkLoop{}, bad
	}
	n, err1 := strconv.ParseInt(f[0], 10, 64)
	s, err2 := strconv.ParseFloat(f[1], 64)
	c, err3 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || n <= 0 || s <= 0 || c < 0 {
		return forkLoop{}, bad
	}
	return forkLoop{forks: n, seconds: s, cpuSeconds: c}, nil
}

// machineBusy is the time all CPUs were busy since boot (/proc/stat: not
// idle, not iowait).
func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat starts %q", line)
	}
	var ticks int64
	for i, f := range fields[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ
}

// ceilingCopy is one running copy of the script.
type ceilingCopy struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *strings.Builder
}

// forkLoops starts n copies of the script, waits until every one has
// imported its modules, starts all their loops at once and returns what
// each reported, and the machine's busy time while they looped.
func forkLoops(ctx context.Context, n int, d time.Duration, pin bool, env []string, flags int) ([]forkLoop, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d+5*time.Minute)
	defer cancel()
	pinArg := "0"
	if pin {
		pinArg = "1"
	}
	var copies []*ceilingCopy
	defer func() {
		for _, c := range copies {
			c.stdin.Close()
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	}()
	for range n {
		// -s -P as the zygote, not -I, which would ignore PYTHONMALLOC; the
		// environment is exactly this list, nothing of bench's own.
		cmd := exec.CommandContext(ctx, ceilingPython, "-s", "-P", "-c", ceilingScript, strconv.FormatFloat(d.Seconds(), 'f', -1, 64), pinArg, strconv.Itoa(flags))
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"}, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr := &strings.Builder{}
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, 0, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, 0, err
		}
		if err := cmd.Start(); err != nil {
			return nil, 0, fmt.Errorf("fork ceiling: %w", err)
		}
		copies = append(copies, &ceilingCopy{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), stderr: stderr})
	}
	line := func(c *ceilingCopy, want string) (string, error) {
		if c.lines.Scan() {
			return c.lines.Text(), nil
		}
		_ = c.cmd.Wait()
		return "", fmt.Errorf("fork ceiling: %s copy ended before %s (%v): %s", ceilingPython, want, ctx.Err(), strings.TrimSpace(c.stderr.String()))
	}
	for _, c := range copies {
		if l, err := line(c, "it was ready"); err != nil {
			return nil, 0, err
		} else if l != "ready" {
			return nil, 0, fmt.Errorf("fork ceiling: copy printed %q, want ready", l)
		}
	}
	busy1, _ := machineBusy()
	for _, c := range copies {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return nil, 0, fmt.Errorf("fork ceiling: %w", err)
		}
	}
	var loops []forkLoop
	for _, c := range copies {
		l, err := line(c, "its count")
		if err != nil {
			return nil, 0, err
		}
		loop, err := parseForkLoop(l)
		if err != nil {
			return nil, 0, err
		}
		loops = append(loops, loop)
	}
	busy2, _ := machineBusy()
	return loops, busy2 - busy1, nil
}
