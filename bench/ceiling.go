package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
// over for argv[1] seconds, and print the count and the elapsed time.
// With argv[2] == "1" the copy first pins itself to one allowed CPU (the
// single-core figure), so the parent and its short-lived children share
// that CPU.
const ceilingScript = `import gc, os, sys, time
import numpy, pandas
seconds = float(sys.argv[1])
if sys.argv[2] == "1":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
gc.freeze()
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
n = 0
start = time.monotonic()
end = start + seconds
while True:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
    if time.monotonic() >= end:
        break
sys.stdout.write("%d %.6f\n" % (n, time.monotonic() - start))
sys.stdout.flush()
`

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
}

func (c *forkCeiling) String() string {
	s := fmt.Sprintf("fork ceiling %.1f forks/s with %d processes (single core %.1f forks/s): %s with %s imported and %s, fork+exit+waitpid for %.1f s, no jail",
		c.ForksPerSec, c.Processes, c.SingleCoreForksPerSec, c.Interpreter, c.Imports, strings.Join(c.Env, " "), c.Seconds)
	if p := c.PlainAllocator; p != nil {
		s += fmt.Sprintf("; with the plain allocator %.1f forks/s (single core %.1f)", p.ForksPerSec, p.SingleCoreForksPerSec)
	}
	return s
}

// measureCeiling measures the fork ceiling with the zygote's allocator and
// with the plain one: each time one copy pinned to one CPU, then
// runtime.NumCPU() copies at once, each for d.
func measureCeiling(ctx context.Context, d time.Duration) (*forkCeiling, error) {
	c, err := measureCeilingWith(ctx, d, runner.AllocatorEnv())
	if err != nil {
		return nil, err
	}
	if c.PlainAllocator, err = measureCeilingWith(ctx, d, nil); err != nil {
		return nil, err
	}
	return c, nil
}

func measureCeilingWith(ctx context.Context, d time.Duration, env []string) (*forkCeiling, error) {
	single, err := forkLoops(ctx, 1, d, true, env)
	if err != nil {
		return nil, err
	}
	n := runtime.NumCPU()
	all, err := forkLoops(ctx, n, d, false, env)
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
	forks   int64
	seconds float64
}

func (l forkLoop) rate() float64 { return float64(l.forks) / l.seconds }

// parseForkLoop reads the copy's last line: "<forks> <seconds>".
func parseForkLoop(line string) (forkLoop, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return forkLoop{}, fmt.Errorf("fork loop printed %q, want \"<forks> <seconds>\"", line)
	}
	n, err1 := strconv.ParseInt(f[0], 10, 64)
	s, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || n <= 0 || s <= 0 {
		return forkLoop{}, fmt.Errorf("fork loop printed %q, want \"<forks> <seconds>\"", line)
	}
	return forkLoop{forks: n, seconds: s}, nil
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
// each reported.
func forkLoops(ctx context.Context, n int, d time.Duration, pin bool, env []string) ([]forkLoop, error) {
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
		cmd := exec.CommandContext(ctx, ceilingPython, "-s", "-P", "-c", ceilingScript, strconv.FormatFloat(d.Seconds(), 'f', -1, 64), pinArg)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"}, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr := &strings.Builder{}
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("fork ceiling: %w", err)
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
			return nil, err
		} else if l != "ready" {
			return nil, fmt.Errorf("fork ceiling: copy printed %q, want ready", l)
		}
	}
	for _, c := range copies {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return nil, fmt.Errorf("fork ceiling: %w", err)
		}
	}
	var loops []forkLoop
	for _, c := range copies {
		l, err := line(c, "its count")
		if err != nil {
			return nil, err
		}
		loop, err := parseForkLoop(l)
		if err != nil {
			return nil, err
		}
		loops = append(loops, loop)
	}
	return loops, nil
}
