package runner

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/internal/proctree"
)

// BenchmarkSandboxStart measures how fast each mode makes ready sandboxes
// the way the pool does: builds run in parallel (2 × GOMAXPROCS at once)
// and each sandbox is closed in the background, as a used sandbox is
// reaped off the request path. The clock stops only when every close has
// finished, so teardown is paid for. sandboxes/s is the creation rate;
// compare the modes side by side in one run (make bench).
func BenchmarkSandboxStart(b *testing.B) {
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			r := newBenchRunnerWith(b, cfg.cfg)
			ctx := context.Background()
			var closing sync.WaitGroup
			b.SetParallelism(2)
			cpuBefore := cpuOfTree(os.Getpid())
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					sb, err := r.Start(ctx, StartOptions{})
					if err != nil {
						b.Error(err)
						return
					}
					closing.Add(1)
					go func() {
						defer closing.Done()
						sb.Close()
					}()
				}
			})
			closing.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sandboxes/s")
			// CPU per sandbox is steadier than the rate when other work
			// shares the machine (the rate counts its waits too). Fork
			// mode only: its sandboxes are reaped by a zygote that lives
			// on, so their CPU shows in its cutime; an exec-mode zygote
			// dies with its jail, killed, and its CPU is lost to /proc.
			if cfg.cfg.Mode == ModeFork {
				b.ReportMetric((cpuOfTree(os.Getpid())-cpuBefore).Seconds()*1000/float64(b.N), "ms-CPU/sandbox")
			}
		})
	}
}

// BenchmarkIdleSandboxMemory measures what one idle warm sandbox adds to
// the machine's memory: the PSS (proportional set size, from
// /proc/<pid>/smaps_rollup) of every process below this test with ten idle
// sandboxes, minus the same with none (fork mode keeps its zygote), over
// ten. PSS splits shared pages among their sharers, so copy-on-write pages
// a forked sandbox still shares with the zygote count only in part.
func BenchmarkIdleSandboxMemory(b *testing.B) {
	const idle = 10
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			// No rotation: a zygote starting between the two readings
			// would be counted as the sandboxes' memory.
			cfg.cfg.ZygoteMaxForks = 1 << 30
			r := newBenchRunnerWith(b, cfg.cfg)
			ctx := context.Background()
			var perSandbox float64
			for range b.N {
				base := pssBelow(os.Getpid())
				var sbs []*Sandbox
				for range idle {
					sb, err := r.Start(ctx, StartOptions{})
					if err != nil {
						b.Fatal(err)
					}
					sbs = append(sbs, sb)
				}
				perSandbox = float64(pssBelow(os.Getpid())-base) / idle / (1 << 20)
				for _, sb := range sbs {
					sb.Close()
				}
			}
			b.ReportMetric(perSandbox, "MB-PSS/sandbox")
		})
	}
}

// benchConfig is one way of making sandboxes, compared side by side.
type benchConfig struct {
	name string
	cfg  Config
}

// benchConfigs are fork mode with and without prewarm (the default is
// with), the default with matplotlib preloaded too, and exec mode.
func benchConfigs() []benchConfig {
	return []benchConfig{
		{"fork-prewarm", Config{Mode: ModeFork, Prewarm: true}},
		{"fork-prewarm-mpl", Config{Mode: ModeFork, Prewarm: true, Preload: []string{"numpy", "pandas", "matplotlib"}}},
		{"fork", Config{Mode: ModeFork}},
		{"exec", Config{Mode: ModeExec}},
	}
}

func newBenchRunnerWith(b *testing.B, cfg Config) *Runner {
	b.Helper()
	jail, err := NewBubblewrap("", "/usr/bin/python3")
	if err != nil {
		b.Skipf("no jail here: %v", err)
	}
	cfg.Jail = jail
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	// Warm-up outside the timer: in fork mode this waits for every zygote
	// (sandboxes come from each in turn), so that none is still importing
	// while the clock runs.
	for range max(1, len(r.zygotes)) {
		sb, err := r.Start(context.Background(), StartOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sb.Close()
	}
	return r
}

// cpuOfTree is the user + system CPU time of this process, of every
// process below pid and of the children they have reaped (a zygote's
// sandboxes), from /proc/<pid>/stat, in clock ticks of 10 ms.
func cpuOfTree(pid int) time.Duration {
	var ticks int64
	for _, p := range append([]int{pid}, proctree.Descendants(pid)...) {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces), from field 3:
		// utime, stime, cutime and cstime are fields 14 to 17.
		end := strings.LastIndexByte(string(data), ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(string(data[end+1:]))
		if len(fields) < 15 {
			continue
		}
		for _, f := range fields[11:15] {
			n, _ := strconv.ParseInt(f, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// pssBelow sums the PSS, in bytes, of every process below pid.
func pssBelow(pid int) int64 {
	var total int64
	for _, p := range proctree.Descendants(pid) {
		total += pssOf(p)
	}
	return total
}

func pssOf(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
