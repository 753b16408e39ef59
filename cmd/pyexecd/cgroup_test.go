package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/internal/cgroupv2"
	"github.com/sandbox-exec/pyexec/internal/syncbuf"
)

// expectedAccounting is what /health should report under --cgroup auto
// on this host: cgroup2 where the host delegates a subtree, else rlimit.
func expectedAccounting() string {
	if _, err := cgroupv2.Detect(cgroupv2.DefaultMount); err == nil {
		return "cgroup2"
	}
	return "rlimit"
}

// TestCgroupRequiredWithoutDelegation: on a host that delegates no cgroup
// v2 subtree (the development machines are cgroup v1 hosts), --cgroup
// required refuses to start, at once, and says why; nothing is written
// to the host's cgroups (Detect only reads).
func TestCgroupRequiredWithoutDelegation(t *testing.T) {
	requireJail(t)
	if _, err := cgroupv2.Detect(cgroupv2.DefaultMount); err == nil {
		t.Skip("this host delegates cgroup v2; TestCgroupV2Sandboxes covers it")
	}
	var logs syncbuf.Buffer
	start := time.Now()
	err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--jail", "bwrap", "--cgroup", "required"},
		func(string) string { return "" }, &logs, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "cgroup v2 is not delegated") {
		t.Fatalf("err = %v, want a refusal naming the missing delegation", err)
	}
	// No zygote was started: the refusal comes before any jail runs.
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusal took %v", took)
	}
	if err := run(context.Background(), []string{"--cgroup", "sometimes"}, func(string) string { return "" }, &logs, nil); err == nil ||
		!strings.Contains(err.Error(), "use auto, required or off") {
		t.Errorf("a bad --cgroup value: err = %v", err)
	}
}

// TestCgroupV2Sandboxes runs where the host delegates cgroup v2 (set
// REQUIRE_CGROUP2=1 to make its absence a failure): every sandbox gets a
// group of its own with the configured limits, memory held by all of a
// sandbox's processes together is bounded by its memory limit, and a
// used sandbox's group is removed.
func TestCgroupV2Sandboxes(t *testing.T) {
	if _, err := cgroupv2.Detect(cgroupv2.DefaultMount); err != nil {
		if os.Getenv("REQUIRE_CGROUP2") == "1" {
			t.Fatalf("REQUIRE_CGROUP2=1 but %v", err)
		}
		t.Skipf("needs a host that delegates cgroup v2: %v", err)
	}
	s := startServer(t, "", "--cgroup", "required", "--warm", "1", "--max-processes", "8", "--max-memory-mb", "512", "--tmp-mb", "512", "--max-timeout", "2m")

	resp, err := http.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"memory_accounting":"cgroup2"`) {
		t.Errorf("/health does not report cgroup2: %s", body)
	}

	own, err := cgroupv2.Detect(cgroupv2.DefaultMount)
	if err != nil {
		t.Fatal(err)
	}
	// The test process is in <own>/server now; Detect names <own>.
	sandboxes := filepath.Join(own, "sandboxes")
	// /health answers before the pool has built its warm sandbox: wait
	// for it (in an emulated VM its zygote takes a minute to start).
	var groups []string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if p, ok := s.poolFigures(); ok && p.Idle > 0 {
			groups, _ = filepath.Glob(filepath.Join(sandboxes, "sbx-*"))
		}
		if len(groups) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(groups) == 0 {
		t.Fatalf("no sandbox group under %s (own cgroup %s)", sandboxes, own)
	}
	// Where the cpu controller is delegated, every sandbox group has the
	// same cpu.weight: sandboxes share a contended CPU equally, whatever
	// their process counts (REQUIRE_CGROUP2_CPU=1: the host delegates it).
	control, _ := os.ReadFile(filepath.Join(sandboxes, "cgroup.subtree_control"))
	cpu := slices.Contains(strings.Fields(string(control)), "cpu")
	if !cpu && os.Getenv("REQUIRE_CGROUP2_CPU") == "1" {
		t.Errorf("REQUIRE_CGROUP2_CPU=1 but the sandboxes' subtree_control is %q", control)
	}
	for _, g := range groups {
		if cpu {
			if got, err := os.ReadFile(filepath.Join(g, "cpu.weight")); err != nil || strings.TrimSpace(string(got)) != "100" {
				t.Errorf("%s/cpu.weight = %q (%v), want 100", g, got, err)
			}
		}
		for file, want := range map[string]string{"memory.max": "536870912", "pids.max": "8", "memory.oom.group": "1"} {
			got, err := os.ReadFile(filepath.Join(g, file))
			if err != nil || strings.TrimSpace(string(got)) != want {
				t.Errorf("%s/%s = %q (%v), want %s", g, file, got, err, want)
			}
		}
		if got, err := os.ReadFile(filepath.Join(g, "memory.swap.max")); err == nil && strings.TrimSpace(string(got)) != "0" {
			t.Errorf("%s/memory.swap.max = %q, want 0", g, got)
		}
	}

	// Children that each stay within their own address space (RLIMIT_AS,
	// also memory_mb) but not, together, within the sandbox's memory.max.
	// The preloaded numpy and pandas already take a good part of the
	// address space (some 256 MiB here): each child takes half of what is
	// left, and there are enough of them to exceed memory_mb together.
	// Only the pages they write are charged to the sandbox's group: those
	// shared with the zygote were charged to the zygote's. The children
	// sleep long enough for the OOM kill to come even in an emulated VM
	// (some 16 s there), and less than timeout_ms: without a kill, the
	// script returns and the test says so.
	began := time.Now()
	r := s.mustFail(t, `import os, resource, time
def main():
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    size = next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    chunk = (limit - size) // 2
    if chunk < (32 << 20):
        return {"address space left": limit - size}
    pids = []
    for _ in range(limit // chunk + 1):
        pid = os.fork()
        if pid == 0:
            held = b"\x01" * chunk
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return {"children": len(pids), "each": chunk}
`, map[string]any{"memory_mb": 512, "timeout_ms": 120000}, "memory_limit", 422)
	if !strings.Contains(r.Error.Message, "memory.max") {
		t.Errorf("message %q does not name the cgroup limit (stderr %q)", r.Error.Message, r.Stderr)
	}
	t.Logf("children over a sandbox's 512 MiB together, after %v: %s: %s", time.Since(began).Round(time.Millisecond), r.Error.Type, r.Error.Message)
	began = time.Now()

	// tmpfs pages count too: 480 MiB of scratch files (each under the
	// file size limit, in a tmpfs of 512 MiB) do not fit in a sandbox of
	// 384 MiB.
	r = s.execute(t, `def main():
    chunk, n = b"x" * (1 << 20), 0
    try:
        for i in range(60):
            with open("/tmp/fill%d" % i, "wb") as f:
                for _ in range(8):
                    f.write(chunk); f.flush(); n += 1
    except OSError:
        pass
    return n
`, map[string]any{"memory_mb": 384, "timeout_ms": 120000})
	written, _ := strconv.Atoi(string(r.Result))
	t.Logf("480 MiB of tmpfs files in a sandbox of 384 MiB, after %v: status %d, %d MiB written, error %+v", time.Since(began).Round(time.Millisecond), r.Status, written, r.Error)
	switch {
	case r.Status == 200 && written >= 384:
		t.Errorf("wrote %d MiB to tmpfs in a sandbox of 384 MiB", written)
	case r.Status == 200 && written < 64:
		t.Errorf("wrote only %d MiB to tmpfs: something other than the sandbox's memory.max stopped it", written)
	case r.Status != 200 && (r.Error == nil || r.Error.Type != "memory_limit" || !strings.Contains(r.Error.Message, "memory.max")):
		t.Errorf("tmpfs fill: status %d %+v, want success or the cgroup's memory_limit", r.Status, r.Error)
	}

	// The groups of used sandboxes are gone.
	deadline := time.Now().Add(10 * time.Second)
	for _, g := range groups {
		for {
			if _, err := os.Stat(g); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the group %s of a used sandbox is still there", g)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
