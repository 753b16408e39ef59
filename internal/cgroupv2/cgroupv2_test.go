package cgroupv2

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The end-to-end test of sandbox groups (memory and pids bounds enforced
// by the kernel) is TestCgroupV2Sandboxes in cmd/pyexecd; it needs a host
// that delegates cgroup v2. These tests check the pieces on a directory
// laid out like a cgroup, which is all a cgroup v1 machine allows.

func fakeGroup(t *testing.T, controllers string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"cgroup.controllers":     controllers,
		"cgroup.procs":           "",
		"cgroup.subtree_control": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOwnGroup(t *testing.T) {
	mount := t.TempDir()
	own := filepath.Join(mount, "kubepods", "pod1")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n", "cgroup.procs": "", "cgroup.subtree_control": "",
	} {
		os.WriteFile(filepath.Join(own, name), []byte(content), 0o644)
	}
	yes := func(string, string) (bool, string) { return true, "" }
	got, err := ownGroup(mount, []byte("0::/kubepods/pod1\n"), yes)
	if err != nil || got != own {
		t.Fatalf("ownGroup = %q, %v; want %q", got, err, own)
	}

	for _, tc := range []struct{ name, selfCgroup, want string }{
		{"v1 only", "4:memory:/x\n1:cpu:/\n", "no cgroup v2 entry"},
		{"outside the namespace", "0::/../../other\n", "outside this cgroup namespace"},
		{"relative", "0::kubepods\n", "outside this cgroup namespace"},
		{"missing directory", "0::/nowhere\n", "no such file"},
	} {
		_, err := ownGroup(mount, []byte(tc.selfCgroup), yes)
		if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrNotDelegated mentioning %q", tc.name, err, tc.want)
		}
	}

	// Set up already (another server of this process moved it into
	// server/): its own group is still pod1.
	os.MkdirAll(filepath.Join(own, "server"), 0o755)
	os.MkdirAll(filepath.Join(own, "sandboxes"), 0o755)
	if got, err := ownGroup(mount, []byte("0::/kubepods/pod1/server\n"), yes); err != nil || got != own {
		t.Errorf("from server/: ownGroup = %q, %v; want %q", got, err, own)
	}

	// Writable is not delegated: a host's own cgroups are writable to root.
	no := func(string, string) (bool, string) { return false, "not marked" }
	if _, err := ownGroup(mount, []byte("0::/kubepods/pod1\n"), no); !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "not marked") {
		t.Errorf("not delegated: err = %v", err)
	}

	os.WriteFile(filepath.Join(own, "cgroup.controllers"), []byte("cpu io memory\n"), 0o644)
	if _, err := ownGroup(mount, []byte("0::/kubepods/pod1\n"), yes); !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "pids controller") {
		t.Errorf("without pids: err = %v", err)
	}
}

func TestDelegationMarks(t *testing.T) {
	dir := t.TempDir()
	if ok, why := delegatedByHost(dir, "/system.slice/x.service"); ok || !strings.Contains(why, "trusted.delegate") {
		t.Errorf("an unmarked directory counts as delegated (%v, %q)", ok, why)
	}
	if err := unix.Setxattr(dir, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Skipf("cannot set trusted.delegate here (%v)", err)
	}
	if ok, why := delegatedByHost(dir, "/system.slice/x.service"); !ok {
		t.Errorf("a directory marked trusted.delegate=1 is refused: %s", why)
	}
}

func TestDetectRefusesANonCgroup2Mount(t *testing.T) {
	// A temporary directory is no cgroup2 file system, like the tmpfs at
	// /sys/fs/cgroup of a cgroup v1 host.
	_, err := Detect(t.TempDir())
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "not a cgroup2 file system") {
		t.Fatalf("Detect = %v", err)
	}
}

func TestSetupAndGroup(t *testing.T) {
	own := fakeGroup(t, "memory pids")
	self := strconv.Itoa(os.Getpid())
	os.WriteFile(filepath.Join(own, "cgroup.procs"), []byte(self+"\n"), 0o644)
	// An empty group left by an earlier run is removed; a populated one
	// (here: one that holds a file) may be another instance's, and stays.
	stale := filepath.Join(own, "sandboxes", "sbx-old")
	live := filepath.Join(own, "sandboxes", "sbx-other")
	for _, dir := range []string{stale, live} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(live, "cgroup.kill"), nil, 0o644)
	// On cgroupfs the kernel creates a group's files with the directory;
	// here the test does.
	os.Mkdir(filepath.Join(own, "server"), 0o755)
	os.WriteFile(filepath.Join(own, "server", "cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(own, "sandboxes", "cgroup.subtree_control"), nil, 0o644)

	tree, err := Setup(own)
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(filepath.Join(own, "server", "cgroup.procs")); got != self {
		t.Errorf("the service's process was not moved to server/: %q", got)
	}
	if got := read(filepath.Join(own, "cgroup.subtree_control")); got != "+memory +pids" {
		t.Errorf("own subtree_control = %q", got)
	}
	if got := read(filepath.Join(tree.Dir(), "cgroup.subtree_control")); got != "+memory +pids" {
		t.Errorf("sandboxes subtree_control = %q", got)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the empty stale group was not removed: %v", err)
	}
	if got := read(filepath.Join(live, "cgroup.kill")); got != "" {
		t.Errorf("a populated group of another instance was killed: cgroup.kill = %q", got)
	}

	dir := filepath.Join(tree.Dir(), "sbx-7")
	os.Mkdir(dir, 0o755)
	if _, err := tree.New("sbx-7", Limits{MemoryBytes: 1, Processes: 1}); err == nil {
		t.Error("New adopted a group that was already there")
	}
	// On cgroupfs the kernel makes a group's files with its directory;
	// here New makes the directory and the files are made after it,
	// so New writes to them through a group made by hand.
	for _, name := range []string{"memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cgroup.procs", "cgroup.kill"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 1\n"), 0o644)
	g := &Group{dir: dir}
	if err := g.apply(Limits{MemoryBytes: 256 << 20, Processes: 16}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"memory.max": "268435456", "memory.swap.max": "0", "memory.oom.group": "1", "pids.max": "16"} {
		if got := read(filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if err := g.Add(31337); err != nil || read(filepath.Join(dir, "cgroup.procs")) != "31337" {
		t.Errorf("Add: %v", err)
	}
	if n, err := g.OOMKills(); n != 2 || err != nil {
		t.Errorf("OOMKills = %d, %v; want 2", n, err)
	}
	os.WriteFile(filepath.Join(dir, "memory.current"), []byte("73400320\n"), 0o644)
	if n, err := g.MemoryCurrent(); n != 73400320 || err != nil {
		t.Errorf("MemoryCurrent = %d, %v; want 73400320", n, err)
	}
	os.WriteFile(filepath.Join(dir, "cpu.stat"), []byte("usage_usec 2041000\nuser_usec 2000000\nsystem_usec 41000\n"), 0o644)
	if d, err := g.CPUUsage(); d != 2041*time.Millisecond || err != nil {
		t.Errorf("CPUUsage = %v, %v; want 2.041s", d, err)
	}
	if err := g.SetMemoryMax(0); err == nil {
		t.Error("a zero memory limit was accepted")
	}
	for _, bad := range []string{"", "../escape", "a/b", "."} {
		if _, err := tree.New(bad, Limits{MemoryBytes: 1, Processes: 1}); err == nil {
			t.Errorf("New(%q) was accepted", bad)
		}
	}
}

func TestSetupRefusesToMoveOtherProcesses(t *testing.T) {
	own := fakeGroup(t, "memory pids")
	os.WriteFile(filepath.Join(own, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())+"\n1\n"), 0o644)
	os.Mkdir(filepath.Join(own, "server"), 0o755)
	os.WriteFile(filepath.Join(own, "server", "cgroup.procs"), nil, 0o644)
	if _, err := Setup(own); !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "process 1 shares") {
		t.Fatalf("Setup = %v, want a refusal naming process 1", err)
	}
	if b, _ := os.ReadFile(filepath.Join(own, "server", "cgroup.procs")); len(b) != 0 {
		t.Errorf("something was moved: %q", b)
	}
}

// Where the cpu controller is delegated too, it is enabled for the
// sandbox groups and each gets the same cpu.weight, so sandboxes share a
// contended CPU equally whatever their process counts; where it is not,
// nothing asks for it (memory and pids are all a host must delegate).
func TestCPUWeightWhereTheCPUControllerIsDelegated(t *testing.T) {
	for _, tc := range []struct {
		controllers, enabled string
		weight               bool
	}{
		{"cpu memory pids", "+memory +pids +cpu", true},
		{"memory pids", "+memory +pids", false},
	} {
		own := fakeGroup(t, tc.controllers)
		os.WriteFile(filepath.Join(own, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
		os.Mkdir(filepath.Join(own, "server"), 0o755)
		os.WriteFile(filepath.Join(own, "server", "cgroup.procs"), nil, 0o644)
		os.Mkdir(filepath.Join(own, "sandboxes"), 0o755)
		os.WriteFile(filepath.Join(own, "sandboxes", "cgroup.subtree_control"), nil, 0o644)
		tree, err := Setup(own)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(tree.Dir(), "cgroup.subtree_control"))
		if string(got) != tc.enabled {
			t.Errorf("%s: sandboxes subtree_control = %q, want %q", tc.controllers, got, tc.enabled)
		}
		dir := filepath.Join(tree.Dir(), "sbx-1")
		os.Mkdir(dir, 0o755)
		// On cgroupfs the kernel makes a group's files, cpu.weight among
		// them only with the cpu controller; here the test does.
		files := []string{"memory.max", "memory.oom.group", "pids.max"}
		if tc.weight {
			files = append(files, "cpu.weight")
		}
		for _, name := range files {
			os.WriteFile(filepath.Join(dir, name), nil, 0o644)
		}
		g := &Group{dir: dir, cpu: tree.cpu}
		if err := g.apply(Limits{MemoryBytes: 1 << 20, Processes: 4}); err != nil {
			t.Fatal(err)
		}
		weight, err := os.ReadFile(filepath.Join(dir, "cpu.weight"))
		switch {
		case tc.weight && (err != nil || string(weight) != "100"):
			t.Errorf("%s: cpu.weight = %q (%v), want 100", tc.controllers, weight, err)
		case !tc.weight && err == nil:
			t.Errorf("%s: cpu.weight written without the cpu controller", tc.controllers)
		}
	}
}
