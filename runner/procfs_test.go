package runner

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadProcFileReadsWhole reads the /proc files of a sleeping child,
// which do not change, short and long (more than one read's chunk), and
// compares them with what the os package reads.
func TestReadProcFileReadsWhole(t *testing.T) {
	// environ, longer than one chunk, is as fixed as the command line.
	sleeper := startSleeper(t, "PAD="+strings.Repeat("x", 3*procReadChunk))
	dir := "/proc/" + strconv.Itoa(sleeper)
	// Wait until it sleeps: until then its figures move.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile(dir + "/stat")
		if err == nil && bytes.Contains(stat, []byte(") S ")) && bytes.Contains(stat, []byte("(sleep)")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child does not sleep: %q, %v", stat, err)
		}
	}
	// Not smaps: its Pss moves whenever another process maps or unmaps
	// the libraries it shares.
	for _, name := range []string{"/stat", "/statm", "/status", "/environ"} {
		got, err := readProcFile(dir + name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := os.ReadFile(dir + name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: read %d bytes %q..., os read %d bytes %q...", name, len(got), clip(string(got), 60), len(want), clip(string(want), 60))
		}
		if name == "/environ" && len(got) <= procReadChunk {
			t.Errorf("environ is %d bytes: the test wants a file longer than one chunk", len(got))
		}
	}
	if _, err := readProcFile(dir + "/no-such-file"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want not exist", err)
	}
}

// TestListProcDirListsTasks lists this process's threads and a child's
// children as the runner lists a sandbox's.
func TestListProcDirListsTasks(t *testing.T) {
	dir := "/proc/" + strconv.Itoa(os.Getpid()) + "/task"
	got, err := listProcDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, strconv.Itoa(os.Getpid())) || slices.Contains(got, ".") || slices.Contains(got, "..") {
		t.Errorf("tasks %v: want the main thread, without . and ..", got)
	}
	// Threads may come and go between the listings, never by many.
	if absDiff(len(got), len(entries)) > 4 {
		t.Errorf("%d tasks, os listed %d", len(got), len(entries))
	}
	if _, err := listProcDir("/proc/0/task"); err == nil {
		t.Error("listed the tasks of pid 0")
	}

	sleeper := startSleeper(t)
	children, ok := childrenOf(os.Getpid())
	if !ok || !slices.Contains(children, sleeper) {
		t.Errorf("childrenOf = %v, %v: want the child %d among them", children, ok, sleeper)
	}
	if !hasChildren(os.Getpid()) || hasChildren(sleeper) {
		t.Errorf("hasChildren: this process %v, the child %v", hasChildren(os.Getpid()), hasChildren(sleeper))
	}
}

func absDiff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}

// TestSandboxPipeEnds checks the modes of a new sandbox's pipes: the
// runner's ends non-blocking (its deadlines need the poller), the
// sandbox's blocking, as its interpreter reads and writes them.
func TestSandboxPipeEnds(t *testing.T) {
	p, err := newSandboxPipes()
	if err != nil {
		t.Fatal(err)
	}
	defer p.closeAll()
	for i, fd := range p.sandboxEnds() {
		if nonblocking(t, fd) {
			t.Errorf("sandbox end %d (fd %d) is non-blocking", i, fd)
		}
	}
	for _, f := range []*os.File{p.toSandbox, p.fromSandbox, p.stdoutR, p.stderrR} {
		conn, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		conn.Control(func(fd uintptr) {
			if !nonblocking(t, int(fd)) {
				t.Errorf("runner end %s is blocking", f.Name())
			}
		})
	}
	// The runner's write reaches the sandbox's read end, and back.
	if _, err := p.toSandbox.WriteString("ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := unix.Read(p.channelIn, buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("sandbox read %q, %v", buf[:n], err)
	}
	if _, err := unix.Write(p.channelOut, []byte("pong")); err != nil {
		t.Fatal(err)
	}
	if n, err := p.fromSandbox.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("runner read %q, %v", buf[:n], err)
	}
	// Deadlines, which end an execution's reads, work on the runner's end.
	p.fromSandbox.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := p.fromSandbox.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a read past its deadline: %v, want a deadline error", err)
	}
	// Closing twice must not close a descriptor that reused the number.
	p.closeSandboxEnds()
	reused, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer reused.Close()
	p.closeSandboxEnds()
	if _, err := reused.Stat(); err != nil {
		t.Errorf("a second closeSandboxEnds closed another file: %v", err)
	}
}

func nonblocking(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL of %d: %v", fd, err)
	}
	return flags&unix.O_NONBLOCK != 0
}

// startSleeper starts a child that sleeps with environment env, killed and
// reaped when the test ends, and returns its pid.
func startSleeper(t *testing.T, env ...string) int {
	t.Helper()
	sleeper := exec.Command("sleep", "30")
	sleeper.Env = env
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	})
	return sleeper.Process.Pid
}

// TestReadProcFileRefusesLargeFiles: the reader stops at maxProcFile.
func TestReadProcFileRefusesLargeFiles(t *testing.T) {
	dir := t.TempDir()
	for size, wantErr := range map[int]bool{maxProcFile: false, maxProcFile + 1: true} {
		path := filepath.Join(dir, strconv.Itoa(size))
		if err := os.WriteFile(path, bytes.Repeat([]byte("x"), size), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readProcFile(path)
		if wantErr != errors.Is(err, errProcFileTooLarge) || (!wantErr && len(got) != size) {
			t.Errorf("%d bytes: read %d, %v", size, len(got), err)
		}
	}
}
