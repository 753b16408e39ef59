package runner

import (
	"os"
	"slices"
	"testing"
	"time"
)

// TestMemoryReadings reads this process as the watch reads a sandbox.
func TestMemoryReadings(t *testing.T) {
	pid := os.Getpid()
	rss, err := rssAnon(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rssAnon = %d, %v", rss, err)
	}
	pss, err := pssAnon(pid)
	if err != nil || pss <= 0 || pss > rss+(1<<20) {
		t.Errorf("pssAnon = %d, %v; want positive and at most the resident anonymous memory (%d)", pss, err, rss)
	}
	if got := sandboxProcesses(pid); len(got) == 0 || got[0] != pid || slices.Contains(got[1:], pid) {
		t.Errorf("sandboxProcesses = %v", got)
	}
	// The sampler reads PSS once an interval; in between it takes the
	// last reading's shared share off the resident memory.
	var sampler baselineSampler
	now := time.Now()
	first := sampler.read(pid, now)
	if !first.known || first.rssAnon <= 0 || first.pssAnon <= 0 {
		t.Fatalf("first baseline %+v", first)
	}
	next := sampler.read(pid, now.Add(memBaselineSampleInterval/2))
	if want := max(next.rssAnon-max(first.rssAnon-first.pssAnon, 0), 0); !next.known || next.pssAnon != want {
		t.Errorf("baseline within the interval %+v, want pssAnon %d", next, want)
	}
	later := now.Add(memBaselineSampleInterval)
	if sampler.read(pid, later); !sampler.at.Equal(later) {
		t.Errorf("no new reading after the interval: last at %v, want %v", sampler.at, later)
	}
	// One process: what it added since its baseline, exactly.
	w := &memWatch{pid: pid, limit: 1 << 40, base: memBaseline{rssAnon: rss, pssAnon: pss, known: true}}
	if over, _ := w.over(w.lastPrecise); over {
		t.Error("over a limit of 1 TiB")
	}
	w.limit = -(1 << 40)
	if over, _ := w.over(w.lastPrecise); !over {
		t.Error("not over a negative limit")
	}
}

// TestMemWatcherReadsUntilStopped runs the watch over this process: under
// a limit it cannot pass it reads on until stopped; over one it says so.
func TestMemWatcherReadsUntilStopped(t *testing.T) {
	pid := os.Getpid()
	rss, err := rssAnon(pid)
	if err != nil {
		t.Fatal(err)
	}
	base := memBaseline{rssAnon: rss, pssAnon: rss, known: true}

	within := startMemWatch(pid, 1<<40, base)
	time.Sleep(3 * memWatchInterval)
	if over, _ := within.finish(); over {
		t.Error("over a limit of 1 TiB")
	}
	within.stop() // a second stop is harmless
	select {
	case used := <-within.exceeded:
		t.Errorf("a stopped watch said exceeded (%d)", used)
	default:
	}

	over := startMemWatch(pid, -(1 << 40), base)
	defer over.stop()
	select {
	case used := <-over.exceededC():
		if used <= -(1 << 40) {
			t.Errorf("exceeded with %d", used)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reading said exceeded within 5 s")
	}
}
