// Package cgroupv2 gives each sandbox a cgroup v2 group of its own, with
// memory.max, memory.swap.max=0 and pids.max, where the host delegates a
// writable cgroup v2 subtree to the service (Kubernetes with a private
// cgroup namespace and a writable /sys/fs/cgroup, systemd Delegate=yes).
//
// It only ever writes below the service's own cgroup, and only on a
// cgroup2 file system: on a cgroup v1 or hybrid host Detect refuses, and
// nothing is written anywhere (those hierarchies belong to the host).
//
// The layout below the service's cgroup is the one container runtimes use
// for delegated subtrees, forced by cgroup v2's rule that a group with
// controllers enabled for its children holds no processes itself:
//
//	<own>/server/         the service's processes (and its zygotes)
//	<own>/sandboxes/      memory and pids enabled for its children
//	<own>/sandboxes/sbx-N one per live sandbox
package cgroupv2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMount is where the cgroup2 file system is mounted.
const DefaultMount = "/sys/fs/cgroup"

// ErrNotDelegated says the host gives the service no writable cgroup v2
// subtree with the memory and pids controllers.
var ErrNotDelegated = errors.New("cgroup v2 is not delegated to the service")

// required are the controllers a sandbox's group must have.
var required = []string{"memory", "pids"}

// sandboxCPUWeight is every sandbox group's cpu.weight, where the cpu
// controller is delegated too: sibling groups of equal weight share the
// CPU equally when it is contended, however many processes or threads
// each runs, so one sandbox's 16 busy processes get what one busy
// process of another gets. It is the kernel's default, written so that
// the rule does not depend on one.
const sandboxCPUWeight = 100

// Detect returns the service's own cgroup directory when it is on a
// cgroup2 file system mounted at mount, writable, and offers the memory
// and pids controllers. Otherwise the error wraps ErrNotDelegated and
// says why.
func Detect(mount string) (string, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(mount, &fs); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNotDelegated, mount, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return "", fmt.Errorf("%w: %s is not a cgroup2 file system (a cgroup v1 or hybrid host)", ErrNotDelegated, mount)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotDelegated, err)
	}
	return ownGroup(mount, self, delegatedByHost)
}

// initialCgroupNamespace is the inode of the host's own cgroup namespace
// (the kernel's PROC_CGROUP_INIT_INO).
const initialCgroupNamespace = 0xEFFFFFFB

// delegatedByHost says whether the host handed the cgroup dir (path rel
// in this cgroup namespace) to the service, and if not, why not. Being
// able to write it is not enough: root can write every cgroup of a
// cgroup v2 host, and those belong to systemd or the container runtime.
// Two signs count: the root of a cgroup namespace of the service's own
// (a container with a private cgroup namespace and a writable cgroupfs),
// or systemd's delegation mark, the trusted.delegate or user.delegate
// xattr (Delegate=yes).
func delegatedByHost(dir, rel string) (bool, string) {
	if rel == "/" {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/cgroup", &st); err == nil && st.Ino != initialCgroupNamespace {
			return true, ""
		}
	}
	for _, name := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(dir, name, buf); err == nil && string(buf[:n]) == "1" {
			return true, ""
		}
	}
	return false, fmt.Sprintf("%s is neither the root of a cgroup namespace of the service's own nor marked delegated (trusted.delegate or user.delegate, as systemd's Delegate=yes sets)", dir)
}

// ownGroup finds the service's cgroup v2 directory under mount from the
// content of /proc/self/cgroup, and checks it can hold sandbox groups and
// was delegated to the service (delegated, given the directory and its
// path in the cgroup namespace).
func ownGroup(mount string, procSelfCgroup []byte, delegated func(dir, rel string) (bool, string)) (string, error) {
	var rel string
	found := false
	for _, line := range strings.Split(string(procSelfCgroup), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = path, true
		}
	}
	if !found {
		return "", fmt.Errorf("%w: /proc/self/cgroup has no cgroup v2 entry", ErrNotDelegated)
	}
	// A path outside the cgroup namespace's root reads as "/..": not ours
	// to write under.
	if !strings.HasPrefix(rel, "/") || slices.Contains(strings.Split(rel, "/"), "..") {
		return "", fmt.Errorf("%w: own cgroup %q is outside this cgroup namespace", ErrNotDelegated, rel)
	}
	dir := filepath.Join(mount, rel)
	// A service already set up (another server in the same process, as in
	// tests) lives in <own>/server: its own group is the parent.
	if filepath.Base(rel) == "server" {
		parentRel := filepath.Dir(rel)
		if ok, _ := delegated(filepath.Dir(dir), parentRel); ok {
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "sandboxes")); err == nil {
				dir, rel = filepath.Dir(dir), parentRel
			}
		}
	}
	controllers, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotDelegated, err)
	}
	have := strings.Fields(string(controllers))
	for _, c := range required {
		if !slices.Contains(have, c) {
			return "", fmt.Errorf("%w: the %s controller is not available in %s (have %q)", ErrNotDelegated, c, dir, have)
		}
	}
	for _, file := range []string{"", "cgroup.procs", "cgroup.subtree_control"} {
		if err := unix.Access(filepath.Join(dir, file), unix.W_OK); err != nil {
			return "", fmt.Errorf("%w: %s is not writable: %w", ErrNotDelegated, filepath.Join(dir, file), err)
		}
	}
	if ok, why := delegated(dir, rel); !ok {
		return "", fmt.Errorf("%w: %s", ErrNotDelegated, why)
	}
	return dir, nil
}

// Tree is the service's delegated subtree, set up for sandbox groups.
type Tree struct {
	own       string
	sandboxes string
	// cpu says the cpu controller is enabled for the sandbox groups: it
	// is optional (a host may delegate memory and pids only).
	cpu bool
}

// Setup arranges dir (from Detect) for sandbox groups: it moves the
// service's process into dir/server (refusing when dir holds any other
// process), enables memory and pids (and cpu, where dir offers it) for dir's
// children, and creates dir/sandboxes with the same controllers for its
// own children. Groups a previous run of the service left in
// dir/sandboxes are removed when empty.
func Setup(dir string) (*Tree, error) {
	t := &Tree{own: dir, sandboxes: filepath.Join(dir, "sandboxes")}
	server := filepath.Join(dir, "server")
	if err := mkdir(server); err != nil {
		return nil, err
	}
	// The service moves only itself (with all its threads): a group with
	// controllers enabled for its children may hold no process, and any
	// other process here is not the service's to move.
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, pid := range strings.Fields(string(procs)) {
		if pid != self {
			return nil, fmt.Errorf("%w: process %s shares the service's cgroup %s; run the service as the only process of its cgroup (a container's entrypoint, a unit of its own)", ErrNotDelegated, pid, dir)
		}
	}
	if strings.TrimSpace(string(procs)) == self {
		if err := write(filepath.Join(server, "cgroup.procs"), self); err != nil {
			return nil, err
		}
	}
	controllers := required
	if have, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers")); err == nil && slices.Contains(strings.Fields(string(have)), "cpu") {
		controllers = append(slices.Clone(required), "cpu")
		t.cpu = true
	}
	enable := "+" + strings.Join(controllers, " +")
	if err := write(filepath.Join(dir, "cgroup.subtree_control"), enable); err != nil {
		return nil, err
	}
	if err := mkdir(t.sandboxes); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(t.sandboxes, "cgroup.subtree_control"), enable); err != nil {
		return nil, err
	}
	// Empty groups left by an earlier run go; a populated one may belong
	// to another instance of the service sharing this cgroup, and stays.
	stale, _ := filepath.Glob(filepath.Join(t.sandboxes, "sbx-*"))
	for _, path := range stale {
		_ = unix.Rmdir(path)
	}
	return t, nil
}

// Dir is the directory that holds the sandbox groups.
func (t *Tree) Dir() string { return t.sandboxes }

// Limits are what one sandbox's group allows, for all its processes and
// the tmpfs pages they write together.
type Limits struct {
	MemoryBytes int64
	Processes   int64
}

// Group is one sandbox's cgroup.
type Group struct {
	dir string
	cpu bool // the cpu controller is enabled: cpu.weight is set
}

// New makes the group name below the sandboxes directory with limits, a
// swap limit of zero where the kernel accounts swap, and memory.oom.group
// set, so that the OOM killer ends the whole sandbox, not one of its
// processes.
func (t *Tree) New(name string, limits Limits) (*Group, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("cgroup: bad group name %q", name)
	}
	g := &Group{dir: filepath.Join(t.sandboxes, name), cpu: t.cpu}
	// A group of that name already there is not ours to adopt.
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := g.apply(limits); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

func (g *Group) apply(limits Limits) error {
	if err := g.SetMemoryMax(limits.MemoryBytes); err != nil {
		return err
	}
	// memory.swap.max exists only when the kernel accounts swap; without
	// it there is no swap to limit.
	if _, err := os.Stat(filepath.Join(g.dir, "memory.swap.max")); err == nil {
		if err := write(filepath.Join(g.dir, "memory.swap.max"), "0"); err != nil {
			return err
		}
	}
	if err := write(filepath.Join(g.dir, "memory.oom.group"), "1"); err != nil {
		return err
	}
	if g.cpu {
		if err := write(filepath.Join(g.dir, "cpu.weight"), strconv.Itoa(sandboxCPUWeight)); err != nil {
			return err
		}
	}
	return write(filepath.Join(g.dir, "pids.max"), strconv.FormatInt(limits.Processes, 10))
}

// Dir is the group's directory.
func (g *Group) Dir() string { return g.dir }

// SetMemoryMax changes the group's memory limit; a request may lower it
// before its script runs.
func (g *Group) SetMemoryMax(bytes int64) error {
	if bytes <= 0 {
		return fmt.Errorf("cgroup: memory limit %d is not positive", bytes)
	}
	return write(filepath.Join(g.dir, "memory.max"), strconv.FormatInt(bytes, 10))
}

// Add moves the process pid, with all its threads, into the group. The
// sandbox is moved before it runs anything of its script's, so every
// process it starts is born inside.
func (g *Group) Add(pid int) error {
	return write(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid))
}

// MemoryCurrent is what the group's processes hold now (memory.current):
// their pages, the tmpfs pages they wrote and the kernel memory charged to
// them.
func (g *Group) MemoryCurrent() (int64, error) {
	data, err := os.ReadFile(filepath.Join(g.dir, "memory.current"))
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: memory.current: %w", err)
	}
	return n, nil
}

// CPUUsage is the CPU time of every process that ever ran in the group,
// those reaped unseen included (cpu.stat's usage_usec, which the kernel
// keeps whether or not the cpu controller is enabled).
func (g *Group) CPUUsage() (time.Duration, error) {
	stat, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	for _, line := range bytes.Split(stat, []byte("\n")) {
		if value, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
			us, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cgroup: cpu.stat: %w", err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cgroup: cpu.stat has no usage_usec")
}

// OOMKills is how many processes of the group the kernel's OOM killer
// ended (memory.events' oom_kill).
func (g *Group) OOMKills() (int, error) {
	events, err := os.ReadFile(filepath.Join(g.dir, "memory.events"))
	if err != nil {
		return 0, fmt.Errorf("cgroup: %w", err)
	}
	for _, line := range bytes.Split(events, []byte("\n")) {
		if value, ok := bytes.CutPrefix(line, []byte("oom_kill ")); ok {
			return strconv.Atoi(string(bytes.TrimSpace(value)))
		}
	}
	return 0, nil
}

// Remove kills whatever still runs in the group (cgroup.kill, Linux 5.14)
// and removes it. A group empties only once its last process has exited,
// so removal is retried for a short while.
func (g *Group) Remove() error {
	_ = write(filepath.Join(g.dir, "cgroup.kill"), "1")
	return g.Release()
}

// Release removes the group without killing anything in it: it succeeds
// once the group is empty.
func (g *Group) Release() error {
	var err error
	for delay := time.Millisecond; delay < 512*time.Millisecond; delay *= 2 {
		if err = unix.Rmdir(g.dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(delay)
	}
	return fmt.Errorf("cgroup: cannot remove %s: %w", g.dir, err)
}

func mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// write writes value to a cgroup control file in one write(2), as the
// kernel expects.
func write(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", value, path, err)
	}
	return nil
}
