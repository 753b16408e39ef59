package runner

import (
	"strings"
	"testing"
)

func TestSandboxMemoryBound(t *testing.T) {
	limits := DefaultConfig().Limits
	// At the defaults: 1 GiB, 16 MiB at start, 16 × 64 descriptors of
	// socket buffers, and 64 MiB per CPU between two readings of the watch.
	want := int64(1024+16+2*64)<<20 + 16*64*socketBytesPerDescriptor
	if got := SandboxMemoryBound(limits, false, 2); got != want {
		t.Errorf("bound without a cgroup = %d MiB, want %d MiB", got>>20, want>>20)
	}
	if got := SandboxMemoryBound(limits, true, 2); got != want-2*64<<20 {
		t.Errorf("bound with a cgroup = %d MiB, want %d MiB (no watch slack)", got>>20, (want-2*64<<20)>>20)
	}
}

func TestFitMaxBusy(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name      string
		busy      int
		explicit  bool
		available int64
		want      int
		wantErr   bool
	}{
		{"fits", 4, false, 10_000 * mib, 4, false},
		{"fits exactly", 4, true, 4*1000*mib + 500*mib, 4, false},
		{"default lowered", 4, false, 2_600 * mib, 2, false},
		{"explicit refused", 4, true, 2_600 * mib, 0, true},
		{"not even one", 4, false, 1_400 * mib, 0, true},
	}
	for _, tc := range tests {
		got, err := FitMaxBusy(tc.busy, tc.explicit, 1000*mib, 500*mib, tc.available)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: FitMaxBusy = %d, %v; want %d, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "--max-busy") {
			t.Errorf("%s: the error does not say what to lower: %v", tc.name, err)
		}
	}
}

func TestMeminfoField(t *testing.T) {
	meminfo := []byte("MemTotal:       24684032 kB\nMemFree:        22471908 kB\nMemAvailable:   23978476 kB\n")
	if got, err := meminfoField(meminfo, "MemAvailable"); got != 23978476<<10 || err != nil {
		t.Errorf("MemAvailable = %d, %v", got, err)
	}
	if _, err := meminfoField(meminfo, "SwapTotal"); err == nil {
		t.Error("a missing field was found")
	}
	if got, _, err := HostMemory(); got <= 0 || err != nil {
		t.Errorf("HostMemory = %d, %v", got, err)
	}
}

// TestFixedMemoryCountsEveryRuntimesZygotes: each runtime runs zygotes of
// its own (issue 22), each with its successor, started ahead of rotation,
// and the one rotated before, alive for its last sandboxes.
func TestFixedMemoryCountsEveryRuntimesZygotes(t *testing.T) {
	one, two := fixedMemory(2, 1, 8), fixedMemory(2, 2, 8)
	if want := int64(6) * zygoteBytes; two-one != want {
		t.Errorf("a second runtime adds %d MiB, want its 6 zygotes' %d MiB", (two-one)>>20, want>>20)
	}
	if got, want := fixedMemory(2, 1, 8), 6*zygoteBytes+8*warmSandboxBytes; got != int64(want) {
		t.Errorf("fixedMemory(2, 1, 8) = %d, want %d", got, want)
	}
}
