package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The host paths a jail shows read-only are one list, the same for
// bubblewrap and nsjail: DefaultReadOnlyPaths plus what the operator adds
// (--ro-paths). nsjail.cfg binds no host path of its own besides the
// device nodes and the /lib aliases; the runner passes every path of the
// list to nsjail with --bindmount_ro and to bwrap with --ro-bind.

// DefaultReadOnlyPaths lists what the interpreter at python, Debian's
// numpy, pandas and matplotlib read: the interpreter itself (and the file
// its link points to), the shared libraries and Python packages under
// /usr/lib, the time zone database, /etc/alternatives (through which Debian
// reaches libblas.so.3), matplotlib's data files (its own fonts among
// them) and /etc/matplotlibrc (Debian's matplotlib reads its settings from
// there and fails to import without it). Nothing else of the host is
// visible, so there is no shell and no other program to run. Paths that do
// not exist on this host are left out by ResolveReadOnlyPaths.
func DefaultReadOnlyPaths(python string) []string {
	paths := []string{python}
	if real, err := filepath.EvalSymlinks(python); err == nil && real != python {
		paths = append(paths, real)
	}
	return append(paths, libraryPaths...)
}

// libraryPaths are the paths besides the interpreter that
// DefaultReadOnlyPaths and RuntimeBinds show.
var libraryPaths = []string{"/usr/lib", "/usr/lib64", "/usr/share/zoneinfo", "/etc/alternatives",
	"/usr/share/matplotlib", "/etc/matplotlibrc"}

// Bind is one read-only bind mount of a jail: the host's Src shown at Dst.
type Bind struct{ Src, Dst string }

// RuntimeBinds returns the binds that show a runtime, the root file system
// built by scripts/build-runtime.sh at root, in place of the host's: each
// of DefaultReadOnlyPaths(python) taken from under root. Links are followed
// inside root (an absolute link in the runtime names a path of the
// runtime, never of the host), so python's link and its target are both
// bound from the runtime's file. Paths the runtime lacks are left out.
// Nothing of the host's /usr or /etc is then visible: the jail's own /lib
// and /lib64 are links into /usr, which is the runtime's. root must be an
// absolute, clean path that passes CheckReadOnlyPath, traversable by the
// sandbox's uid.
func RuntimeBinds(root, python string) ([]Bind, error) {
	if err := CheckReadOnlyPath(root); err != nil {
		return nil, fmt.Errorf("runtime root: %w", err)
	}
	return runtimeBinds(root, python)
}

// runtimeBinds is RuntimeBinds without the check of root itself.
func runtimeBinds(root, python string) ([]Bind, error) {
	real, ok := resolveIn(root, python)
	if fi, err := os.Stat(filepath.Join(root, real)); !ok || err != nil || fi.IsDir() {
		return nil, fmt.Errorf("runtime root %s has no interpreter %s", root, python)
	}
	var binds []Bind
	add := func(dst string) {
		real, ok := resolveIn(root, dst)
		if !ok {
			return
		}
		binds = append(binds, Bind{Src: filepath.Join(root, real), Dst: dst})
	}
	add(python)
	if real, ok := resolveIn(root, python); ok && real != python {
		add(real)
	}
	for _, p := range libraryPaths {
		add(p)
	}
	return binds, nil
}

// resolveIn follows the links of path inside root (each directory of it
// and the last part), as a lookup from a jail whose root is root would,
// and says whether what it leads to exists. At most 40 links, as the
// kernel allows.
func resolveIn(root, path string) (string, bool) {
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(path), "/"), "/")
	cur := "/"
	for links := 0; len(parts) > 0; {
		next := filepath.Join(cur, parts[0])
		parts = parts[1:]
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", false
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", false
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(cur, target)
		}
		rest := strings.Split(strings.TrimPrefix(filepath.Clean(target), "/"), "/")
		if target == "/" {
			rest = nil
		}
		parts = append(rest, parts...)
		cur = "/"
	}
	return cur, true
}

// ErrPathRefused is wrapped by the error for a read-only path that would
// weaken the jail.
var ErrPathRefused = errors.New("read-only path refused")

// refusedTrees are host paths a jail must never show: neither they, nor
// anything under them, nor any directory above them. The kernel's and the
// jail's own file systems (/proc, /sys, /dev: each sandbox has its own, and
// the host's would show host processes and devices); the host's writable
// scratch and runtime directories (/tmp, /var/tmp, /run, /var/run: other
// programs' sockets and files); and the usual places of secrets under /etc.
// "A directory above" rules out / and /var.
var refusedTrees = []string{"/proc", "/sys", "/dev", "/tmp", "/var/tmp", "/run", "/var/run",
	"/etc/shadow", "/etc/gshadow", "/etc/ssl/private", "/etc/ssh", "/etc/sudoers.d"}

// refusedWholes may not be shown whole (nor any directory above them), but
// a path under them may: /etc holds keys, passwords and service
// credentials, so an operator names the one file or directory a library
// needs (as the defaults do with /etc/alternatives and /etc/matplotlibrc);
// likewise for the home directories.
var refusedWholes = []string{"/etc", "/root", "/home"}

// CheckReadOnlyPath returns nil when path may be shown read-only to
// sandboxes, else an error wrapping ErrPathRefused that says why. path
// must be absolute and clean, must not contain ',' or ':' (the separators
// of --ro-paths and of nsjail's --bindmount_ro), and neither it nor what
// its links lead to may be, be under, or be above a refused tree, nor be
// or be above /etc, /root or /home.
func CheckReadOnlyPath(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("%w: %q is not an absolute, clean path", ErrPathRefused, path)
	}
	if strings.ContainsAny(path, ",:") {
		return fmt.Errorf("%w: %q contains ',' or ':'", ErrPathRefused, path)
	}
	candidates := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		candidates = append(candidates, real)
	}
	for _, p := range candidates {
		what := "is"
		if p != path {
			what = "leads to " + p + ", which is"
		}
		for _, root := range refusedTrees {
			if within(p, root) || within(root, p) {
				return fmt.Errorf("%w: %s %s at, under or above %s, which sandboxes must not see", ErrPathRefused, path, what, root)
			}
		}
		for _, root := range refusedWholes {
			if within(root, p) {
				return fmt.Errorf("%w: %s %s %s or above it, which sandboxes must not see whole (name the paths under it that are needed)", ErrPathRefused, path, what, root)
			}
		}
	}
	return nil
}

// within says whether path is dir or lies under it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// ResolveReadOnlyPaths returns the list a jail binds: defaults, then
// extras, each checked (CheckReadOnlyPath), without duplicates. A path
// that does not exist on this host is left out: silently for a default
// (/usr/lib64 exists only on some systems), in skipped for an extra, so
// that the caller can warn about it. A path with a writable mount below it
// is refused: nsjail binds it recursively but makes only its top
// read-only, so that file system would reach the sandboxes writable.
// (Read-only mounts below, such as the driver libraries a container
// runtime binds into /usr/lib, stay read-only and are allowed.)
func ResolveReadOnlyPaths(defaults, extras []string) (paths, skipped []string, err error) {
	mountPoints, err := hostMountPoints()
	if err != nil {
		return nil, nil, err
	}
	return resolveReadOnlyPaths(defaults, extras, mountPoints)
}

// resolveReadOnlyPaths is ResolveReadOnlyPaths against the given mounts.
func resolveReadOnlyPaths(defaults, extras []string, mountPoints []mountPoint) (paths, skipped []string, err error) {
	seen := map[string]bool{}
	for i, p := range append(append([]string{}, defaults...), extras...) {
		isDefault := i < len(defaults)
		if err := CheckReadOnlyPath(p); err != nil {
			return nil, nil, err
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		if _, err := os.Stat(p); err != nil {
			if !isDefault {
				skipped = append(skipped, p)
			}
			continue
		}
		// The jail binds what a link leads to: check below that too.
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			real = p
		}
		for _, m := range mountPoints {
			if m.writable && ((m.point != p && within(m.point, p)) || (m.point != real && within(m.point, real))) {
				return nil, nil, fmt.Errorf("%w: %s has a writable file system mounted below it at %s; name the paths beside that mount instead", ErrPathRefused, p, m.point)
			}
		}
		paths = append(paths, p)
	}
	return paths, skipped, nil
}

// mountPoint is one mount of this process's mount namespace.
type mountPoint struct {
	point    string
	writable bool
}

// hostMountPoints lists the mounts of this process's mount namespace, from
// /proc/self/mountinfo: the mount point (field 5, with the kernel's octal
// escapes of space, tab, newline and backslash undone) and whether the
// mount is writable (field 6, its per-mount options, starts rw or ro).
func hostMountPoints() ([]mountPoint, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cannot list mounts to check the read-only paths: %w", err)
	}
	defer f.Close()
	var points []mountPoint
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 5 {
			points = append(points, mountPoint{point: unescapeMountinfo(fields[4]), writable: !strings.HasPrefix(fields[5], "ro")})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read /proc/self/mountinfo: %w", err)
	}
	return points, nil
}

func unescapeMountinfo(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
