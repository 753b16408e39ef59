package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/runner"
)

// The kernel keeps a few counters per host user whatever namespaces a
// process is in: descriptors in flight over unix sockets, and the pages
// of pipe buffers. With --sandbox-ids (the default as root) every sandbox
// runs as a host uid and gid of its own, so one sandbox that uses up such
// a counter uses up only its own. Each attack runs twice: against a
// server with --sandbox-ids off, where it reaches the victim (the attack
// is real), and against the default, where it does not.

// hoardDescriptorsInFlight sends descriptors over a socket pair it never
// reads until the kernel refuses ("Too many references": more in flight
// than the sender's open-files limit, counted per host user), then holds
// them. The kernel checks the count before each message, not each
// descriptor, so messages of 200 leave it far past the limit, whatever
// else that user has in flight.
const hoardDescriptorsInFlight = `import os, socket, time
def main():
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = os.open("/dev/null", os.O_RDONLY)
    sent, err = 0, 0
    try:
        while sent < 4096:
            socket.send_fds(a, [b"x"], [fd] * 200)
            sent += 200
    except OSError as e:
        err = e.errno
    time.sleep(4)
    return [sent, err]
`

// passOneDescriptor is the victim: it passes one descriptor to itself.
const passOneDescriptor = `import os, socket
def main():
    a, b = socket.socketpair()
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        socket.send_fds(a, [b"x"], [fd])
        socket.recv_fds(b, 1, 1)
        return "passed"
    except OSError as e:
        return "refused: %s" % e
`

// hoardPipes fills every descriptor of 16 processes with pipes and holds
// them: 16 × 31 pipes of 16 pages, half the host user's soft quota
// (pipe-user-pages-soft, 16384 pages), so that three such sandboxes
// together pass it. Past it the kernel gives that user's new pipes 2
// pages instead of 16.
const hoardPipes = `import os, time
def fill():
    fds = []
    try:
        while True:
            fds.extend(os.pipe())
    except OSError:
        return fds
def main():
    children = []
    for _ in range(15):
        pid = os.fork()
        if pid == 0:
            fill()
            time.sleep(5)
            os._exit(0)
        children.append(pid)
    fds = fill()
    time.sleep(5)
    for fd in fds:
        os.close(fd)  # the sandbox needs descriptors to send its answer
    for pid in children:
        os.waitpid(pid, 0)
    return len(fds) // 2
`

// newPipeSize is the victim: the size of a new pipe (F_GETPIPE_SZ).
const newPipeSize = `import os, fcntl
def main():
    r, w = os.pipe()
    return fcntl.fcntl(w, 1032)
`

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sandboxes get host ids of their own only when the server runs as root")
	}
}

// victimBesideAttackers runs attackers copies of attack at once and, while
// they hold what they took, victim, and returns the victim's result.
func victimBesideAttackers(t *testing.T, s *testServer, attack string, attackers int, victim string) any {
	t.Helper()
	var wg sync.WaitGroup
	attackResults := make([]response, attackers)
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			attackResults[i] = s.execute(t, attack, map[string]any{"timeout_ms": 20000})
		}()
	}
	time.Sleep(2 * time.Second) // the attackers have taken what they take
	var got any
	s.mustSucceed(t, victim, nil, &got)
	wg.Wait()
	for i, r := range attackResults {
		if r.Status != 200 || r.Error != nil {
			t.Fatalf("attacker %d: status %d, error %+v, stderr %q", i, r.Status, r.Error, r.Stderr)
		}
	}
	t.Logf("an attacker's result: %s", attackResults[0].Result)
	return got
}

func TestSandboxesHaveHostIDsOfTheirOwn(t *testing.T) {
	requireRoot(t)
	args := []string{"--mode", "fork", "--policy", "none", "--warm", "4", "--max-busy", "5"}
	shared := startServer(t, "", append(args, "--sandbox-ids", "off")...)
	own := startServer(t, "", args...)
	ids := runner.DefaultSandboxIDs

	t.Run("each sandbox runs as a host uid and gid of its own", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				own.mustSucceed(t, "import time\ndef main():\n    time.sleep(2)\n", nil, nil)
			}()
		}
		time.Sleep(time.Second)
		uids := map[uint32]int{}
		for _, pid := range descendants(os.Getpid()) {
			status := procStatus(pid)
			uid, gid := firstID(status["Uid"]), firstID(status["Gid"])
			if !ids.Contains(uid) {
				continue
			}
			if gid != uid {
				t.Errorf("process %d: uid %d but gid %d", pid, uid, gid)
			}
			uids[uid]++
		}
		wg.Wait()
		// The three busy ones and the warm ones, each its own.
		if len(uids) < 3 {
			t.Fatalf("sandbox processes run as %d host uids of the range %v (%v), want at least 3", len(uids), ids, uids)
		}
		for uid, n := range uids {
			if n != 1 {
				t.Errorf("host uid %d is held by %d processes, want one sandbox's one process", uid, n)
			}
		}
		// Inside, the sandbox's ids are what they always were.
		var inside []any
		own.mustSucceed(t, "import os\ndef main():\n    return [os.getuid(), os.getgid(), os.getgroups()]\n", nil, &inside)
		if fmt.Sprint(inside) != "[65534 65534 []]" {
			t.Errorf("ids inside the sandbox %v, want uid and gid 65534 and no groups", inside)
		}
	})

	t.Run("descriptors in flight are per sandbox", func(t *testing.T) {
		if got := victimBesideAttackers(t, shared, hoardDescriptorsInFlight, 1, passOneDescriptor); !strings.Contains(toString(got), "Too many references") {
			t.Fatalf("with one host uid for all, the victim's descriptor passing gave %v: the attack no longer reaches it, so this test shows nothing", got)
		}
		if got := victimBesideAttackers(t, own, hoardDescriptorsInFlight, 1, passOneDescriptor); got != "passed" {
			t.Errorf("with host ids per sandbox, another sandbox's descriptors in flight still stop this one's: %v", got)
		}
	})

	t.Run("pipe buffers are per sandbox", func(t *testing.T) {
		if got := victimBesideAttackers(t, shared, hoardPipes, 3, newPipeSize); got != float64(8192) {
			t.Fatalf("with one host uid for all, the victim's new pipe holds %v bytes, want 8192: the attack no longer reaches it, so this test shows nothing", got)
		}
		if got := victimBesideAttackers(t, own, hoardPipes, 3, newPipeSize); got != float64(65536) {
			t.Errorf("with host ids per sandbox, three sandboxes hoarding pipes leave this one's new pipe %v bytes, want 65536", got)
		}
	})
}

// firstID is the real id of a /proc/<pid>/status Uid or Gid line.
func firstID(line string) uint32 {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return 0
	}
	id, _ := strconv.ParseUint(fields[0], 10, 32)
	return uint32(id)
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}
