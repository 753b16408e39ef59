package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
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
}

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
	for _, m := range b.Runtime {
		args = append(args, "--ro-bind", m.Src, m.Dst)
	}
	for _, p := range readOnlyBinds(b.ReadOnlyPaths) {
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
