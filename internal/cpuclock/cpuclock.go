// Package cpuclock reports a benchmark's CPU time per operation beside its
// wall time: on a machine shared with other work, ns/op also counts the
// waits for a CPU, and cpu-ns/op does not.
package cpuclock

import (
	"syscall"
	"testing"
)

// Clock holds the process's CPU time when it was started.
type Clock struct{ start int64 }

// now is the process's CPU time, user and system (the garbage collector's
// included).
func now() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// Start reads the clock.
func Start() Clock { return Clock{start: now()} }

// Report adds cpu-ns/op for n operations since Start to b's results.
func (c Clock) Report(b *testing.B, n int) {
	if n > 0 {
		b.ReportMetric(float64(now()-c.start)/float64(n), "cpu-ns/op")
	}
}
