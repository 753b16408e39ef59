package runner

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// showableTempDir makes a temporary directory where a jail may show it:
// not under /tmp (refused as the host's scratch space), so beside the
// test if the checkout is not under /tmp itself, else under /var/lib, /srv
// or /opt. It is removed at the end of the test.
func showableTempDir(t *testing.T) string {
	t.Helper()
	for _, base := range []string{".", "/var/lib", "/srv", "/opt"} {
		abs, err := filepath.Abs(base)
		if err != nil || CheckReadOnlyPath(abs) != nil {
			continue
		}
		dir, err := os.MkdirTemp(abs, "ro-path-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	t.Skip("no directory outside /tmp to make a test directory in")
	return ""
}

func TestCheckReadOnlyPath(t *testing.T) {
	// Links outside /tmp (which is itself refused): what one leads to is
	// checked too.
	dir := showableTempDir(t)
	link, fine := filepath.Join(dir, "link-to-proc"), filepath.Join(dir, "link-to-usr-lib")
	if err := os.Symlink("/proc/self", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib", fine); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/usr/lib", true},
		{"/usr/share/fonts", true},
		{"/etc/alternatives", true},
		{"/etc/matplotlibrc", true},
		{"/srv/data", true},
		{"/home/alice/data", true},
		{"/", false},
		{"/proc", false},
		{"/proc/1/root", false},
		{"/sys/fs/cgroup", false},
		{"/dev", false},
		{"/dev/sda", false},
		{"/tmp", false},
		{"/tmp/x", false},
		{"/var", false}, // above /var/tmp and /var/run
		{"/var/run/docker.sock", false},
		{"/run/secrets", false},
		{"/etc", false},
		{"/etc/shadow", false},
		{"/etc/ssl/private/key.pem", false},
		{"/etc/ssh", false},
		{"/home", false},
		{"/root", false},
		{"usr/lib", false},
		{"/usr/lib/", false},
		{"/usr/../proc", false},
		{"/data:/etc", false},
		{"/a,b", false},
		{link, false},
		{fine, true},
	} {
		err := CheckReadOnlyPath(tc.path)
		if tc.ok && err != nil {
			t.Errorf("%q refused: %v", tc.path, err)
		}
		if !tc.ok && !errors.Is(err, ErrPathRefused) {
			t.Errorf("%q: got %v, want ErrPathRefused", tc.path, err)
		}
	}
}

func TestResolveReadOnlyPaths(t *testing.T) {
	paths, skipped, err := ResolveReadOnlyPaths(
		[]string{"/usr/lib", "/usr/lib-not-here"},
		[]string{"/usr/share", "/usr/lib", "/srv/not-here"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/lib", "/usr/share"}; !slices.Equal(paths, want) {
		t.Errorf("paths %v, want %v", paths, want)
	}
	if want := []string{"/srv/not-here"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %v, want %v (a missing default is left out silently)", skipped, want)
	}
	if _, _, err := ResolveReadOnlyPaths(nil, []string{"/etc"}); !errors.Is(err, ErrPathRefused) {
		t.Errorf("/etc: got %v, want ErrPathRefused", err)
	}
	// A directory with a writable file system mounted below it: nsjail
	// would make only its top read-only. A read-only one is fine.
	mounts := []mountPoint{{"/", true}, {"/usr/lib/x86_64-linux-gnu/libcuda.so.1", false}, {"/usr/share/data/cache", true}}
	if _, _, err := resolveReadOnlyPaths([]string{"/usr/lib"}, nil, mounts); err != nil {
		t.Errorf("a read-only mount below /usr/lib: %v", err)
	}
	if _, _, err := resolveReadOnlyPaths(nil, []string{"/usr/share"}, mounts); !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "/usr/share/data/cache") {
		t.Errorf("a writable mount below /usr/share: got %v", err)
	}
}

// TestDefaultReadOnlyPathsAreAllowed: the defaults pass the same checks as
// an operator's paths.
func TestDefaultReadOnlyPathsAreAllowed(t *testing.T) {
	if _, _, err := ResolveReadOnlyPaths(DefaultReadOnlyPaths("/usr/bin/python3"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestNsjailConfigBindsNoHostPaths keeps the read-only paths one list:
// nsjail.cfg may bind only the device nodes (its /lib aliases are links
// into the jail's /usr); every other host path comes from the runner's
// list, or from the runtime's root.
func TestNsjailConfigBindsNoHostPaths(t *testing.T) {
	cfg, err := os.ReadFile("../nsjail.cfg")
	if err != nil {
		t.Fatal(err)
	}
	mount := regexp.MustCompile(`(?m)^mount\s*\{[^}]*\}`)
	src := regexp.MustCompile(`\bsrc:\s*"([^"]*)"`)
	n := 0
	for _, m := range mount.FindAllString(string(cfg), -1) {
		s := src.FindStringSubmatch(m)
		if s == nil {
			continue // a tmpfs or proc, not a host path
		}
		if strings.Contains(m, "is_symlink: true") {
			if strings.HasPrefix(s[1], "/") {
				t.Errorf("nsjail.cfg links to the absolute %s: a link must be relative, into the jail's own tree", s[1])
			}
			continue
		}
		n++
		if strings.HasPrefix(s[1], "/dev/") {
			continue
		}
		t.Errorf("nsjail.cfg binds the host path %s; add it to DefaultReadOnlyPaths (runner/mounts.go) instead", s[1])
	}
	if n == 0 {
		t.Fatal("found no bind mount in nsjail.cfg: the parser is out of date")
	}
}

func TestNsjailCommandBindsTheList(t *testing.T) {
	n := &Nsjail{Path: "/nsjail", ConfigPath: "nsjail.cfg", ReadOnlyPaths: []string{"/usr/lib", "/usr/lib-not-here"}}
	_, args := n.Command(JailSpec{Argv: []string{"/usr/bin/python3"}})
	got := strings.Join(args, " ")
	if !strings.Contains(got, "--bindmount_ro /usr/lib ") || strings.Contains(got, "lib-not-here") {
		t.Errorf("args %q: want /usr/lib bound and the missing path left out", got)
	}
	if strings.Index(got, "--config") > strings.Index(got, "--bindmount_ro") {
		t.Errorf("args %q: the binds must come after --config (its root tmpfs first)", got)
	}
}

// TestRuntimeBindsResolveInsideTheRoot: a runtime's links lead to the
// runtime's own files, an absolute link too, never to the host's.
func TestRuntimeBindsResolveInsideTheRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/lib/x", "etc/alternatives"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/python3.13"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	// Absolute, as a runtime may have it: on the host it would name the
	// host's /usr/bin/python3.13.
	if err := os.Symlink("/usr/bin/python3.13", filepath.Join(root, "usr/bin/python3")); err != nil {
		t.Fatal(err)
	}
	if _, err := RuntimeBinds(root, "/usr/bin/python3"); !errors.Is(err, ErrPathRefused) {
		t.Errorf("a runtime under /tmp: %v, want refused", err)
	}
	binds, err := runtimeBinds(root, "/usr/bin/python3")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/usr/bin/python3":    root + "/usr/bin/python3.13",
		"/usr/bin/python3.13": root + "/usr/bin/python3.13",
		"/usr/lib":            root + "/usr/lib",
		"/etc/alternatives":   root + "/etc/alternatives",
	}
	got := map[string]string{}
	for _, b := range binds {
		got[b.Dst] = b.Src
	}
	if len(got) != len(want) {
		t.Errorf("binds %v, want %v (missing paths left out)", got, want)
	}
	for dst, src := range want {
		if got[dst] != src {
			t.Errorf("%s bound from %q, want %q", dst, got[dst], src)
		}
	}
	if _, err := runtimeBinds(filepath.Join(root, "usr/lib"), "/usr/bin/python3"); err == nil {
		t.Error("a root without the interpreter was accepted")
	}
}
