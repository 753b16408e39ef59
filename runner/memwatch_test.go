package runner

import (
	"os"
	"slices"
	"testing"
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
	if base := readMemBaseline(pid); !base.known || base.rssAnon <= 0 {
		t.Errorf("baseline %+v", base)
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
