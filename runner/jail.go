package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Jail turns the sandbox's command line into one that runs it jailed.
// Implementations own the policy: namespaces, mounts, uid mapping.
type Jail interface {
	// Name is what /health reports, e.g. "bwrap".
	Name() string
	// Command returns the program and arguments that run spec.Argv jailed.
	Command(spec JailSpec) (path string, args []string)
}

// JailSpec is what every jail must provide the sandbox with.
type JailSpec struct {
	// Argv is the command to run inside the jail; Argv[0] is an absolute
	// path that the jail must make visible (read-only).
	Argv []string
	// Env is the complete environment of the jailed process.
	Env []string
	// IDMap, when set, asks the jail to leave its user namespace's maps to
	// the runner (see IDMapper).
	IDMap *IDMapHandoff
}

// IDMapHandoff is how a jail that creates its user namespace lets the
// runner write its maps: it reports the namespace's first process on
// InfoFD (JSON with "child-pid") and waits to go on until a byte arrives
// on BlockFD. The jail's first process keeps CAP_SETUID, CAP_SETGID and
// CAP_SYS_ADMIN in that namespace for the zygote, which needs them to map
// each sandbox to an id of its own and, without a user namespace of its
// own, to mount the scratch for its imports.
type IDMapHandoff struct {
	BlockFD, InfoFD int
}

// IDMapper is a Jail that supports IDMapHandoff.
type IDMapper interface {
	Jail
	mapsIDs()
}

func (b *Bubblewrap) mapsIDs() {}

// Bubblewrap is the bwrap(1) jail, from Debian's bubblewrap package.
type Bubblewrap struct {
	// Path is the bwrap binary.
	Path string
	// Runtime, when not empty, shows a runtime's files (RuntimeBinds) in
	// place of the host's: bound first, read-only.
	Runtime []Bind
	// ReadOnlyPaths are bound read-only at the same place inside the jail
	// when they exist on the host (see ResolveReadOnlyPaths).
	ReadOnlyPaths []string
}

// ErrJailMissing says the jail binary is not installed.
var ErrJailMissing = errors.New("jail binary not found")

// NewBubblewrap finds bwrap on PATH (or at path, when given) and returns the
// jail with the default read-only paths for python (DefaultReadOnlyPaths).
func NewBubblewrap(path, python string) (*Bubblewrap, error) {
	if path == "" {
		path = "bwrap"
	}
	found, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("cannot find %q (install it with: apt-get install bubblewrap): %w", path, ErrJailMissing)
	}
	return &Bubblewrap{Path: found, ReadOnlyPaths: DefaultReadOnlyPaths(python)}, nil
}

// hugePageFiles are the two files through which glibc learns whether and
// how large transparent huge pages are. Without them in the jail,
// glibc.malloc.hugetlb=1 (sandboxEnv) does nothing: they are what lets the
// zygote's heap live on huge pages, which makes every clone and exit
// cheaper (bench/README.md). They hold the host's THP mode and page size,
// nothing else. Both jails bind them read-only where they exist; they are
// part of the jail's fixed layout, like the device nodes, not of the
// operator's list (which refuses /sys as a whole).
var hugePageFiles = []string{
	"/sys/kernel/mm/transparent_hugepage/enabled",
	"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
}

// readOnlyBinds is what a jail binds read-only: the paths of its list and
// the huge-page files, those that exist on this host.
func readOnlyBinds(paths []string) []string {
	var binds []string
	for _, p := range append(append([]string{}, paths...), hugePageFiles...) {
		if _, err := os.Lstat(p); err == nil {
			binds = append(binds, p)
		}
	}
	return binds
}

// Name implements Jail.
func (b *Bubblewrap) Name() string { return "bwrap" }

// Command implements Jail. The policy, flag by flag:
//
//   - --unshare-all plus an explicit --unshare-user: new user, mount, PID,
//     IPC, UTS, network and cgroup namespaces; the network namespace has
//     only a loopback interface that is down, so there is no route anywhere;
//   - --die-with-parent: the sandbox dies with the runner's bwrap process;
//   - --new-session: no access to the server's controlling terminal;
//   - --cap-drop ALL: no capabilities inside the user namespace either;
//   - read-only binds of the Runtime and of ReadOnlyPaths only, a fresh /proc for the new PID
//     namespace (writable: each sandbox writes its own uid_map), bwrap's
//     minimal /dev (whose device nodes each sandbox binds into its own
//     /dev), and an empty /tmp; the root itself is an empty tmpfs,
//     remounted read-only. Nothing the jail holds is writable to a
//     sandbox: each mounts its own /dev, /tmp and /dev/shm;
//   - --clearenv: only spec.Env reaches the sandbox.
func (b *Bubblewrap) Command(spec JailSpec) (string, []string) {
	args := []string{
		"--unshare-all", "--unshare-user",
		"--die-with-parent", "--new-session",
		"--cap-drop", "ALL",
		"--hostname", "sandbox",
		"--proc", "/proc",
		"--dev", "/dev",
		"--dir", "/tmp",
		"--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64",
	}
	if m := spec.IDMap; m != nil {
		args = append(args, "--userns-block-fd", strconv.Itoa(m.BlockFD), "--info-fd", strconv.Itoa(m.InfoFD),
			"--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN")
	}
	roBinds := readOnlyBinds(b.ReadOnlyPaths)
	dsts := slices.Clone(roBinds)
	for _, m := range b.Runtime {
		dsts = append(dsts, m.Dst)
	}
	// bwrap makes the directories above a bind's destination mode 0700,
	// owned by the jail's uid; a sandbox with a host uid of its own could
	// not pass them (--sandbox-ids). They hold only mount points.
	for _, dir := range ancestorDirs(dsts) {
		args = append(args, "--perms", "0755", "--dir", dir)
	}
	for _, m := range b.Runtime {
		args = append(args, "--ro-bind", m.Src, m.Dst)
	}
	for _, p := range roBinds {
		args = append(args, "--ro-bind", p, p)
	}
	// The root is bwrap's own tmpfs: make it read-only once the mount points
	// exist, so only the size-capped /tmp and /dev/shm are writable.
	args = append(args, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv")
	for _, kv := range spec.Env {
		if name, value, ok := strings.Cut(kv, "="); ok {
			args = append(args, "--setenv", name, value)
		}
	}
	args = append(args, "--")
	args = append(args, spec.Argv...)
	return b.Path, args
}

// ancestorDirs lists the directories above paths, but for / and paths
// themselves, parents first, each once.
func ancestorDirs(paths []string) []string {
	seen := map[string]bool{"/": true}
	for _, p := range paths {
		seen[filepath.Clean(p)] = true
	}
	var dirs []string
	for _, p := range paths {
		for dir := filepath.Dir(filepath.Clean(p)); !seen[dir]; dir = filepath.Dir(dir) {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	// Parents before children: fewer separators first, then by name.
	slices.SortFunc(dirs, func(a, b string) int {
		if c := strings.Count(a, "/") - strings.Count(b, "/"); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return dirs
}
