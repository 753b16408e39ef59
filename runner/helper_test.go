package runner

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// The test binary stands in for the jail, the zygote and the sandbox
// (os/exec's helper-process pattern), so the runner's side of the protocol
// and its judgement of every outcome are tested without a jail or Python.
//
//	runner ─ test binary as zygote (helperZygote) ─ test binary as sandbox (helperSandbox)
//
// The fake sandbox behaves as its script says (see helperSandbox).

const (
	roleZygote  = "helper-zygote"
	roleSandbox = "helper-sandbox"
)

// TestHelperProcess is not a test: it is the entry point of the helper
// processes, which the tests below start with a role after "--".
func TestHelperProcess(t *testing.T) {
	switch role := flag.Args(); {
	case len(role) == 1 && role[0] == roleZygote:
		helperZygote()
	case len(role) == 1 && role[0] == roleSandbox:
		helperSandbox()
	default:
		t.Skip("only a helper process")
	}
	os.Exit(0)
}

// helperJail runs the "jailed" command as the test binary in the zygote
// role: it ignores the Python command line.
type helperJail struct{ binary string }

func (j helperJail) Name() string { return "helper" }

func (j helperJail) Command(JailSpec) (string, []string) {
	return j.binary, []string{"-test.run=^TestHelperProcess$", "--", roleZygote}
}

// helperZygote speaks the zygote's side of the control protocol: it starts
// one helper sandbox per spawn, sends its pidfd, waits for it and reports
// how it ended.
func helperZygote() {
	f := os.NewFile(3, "control")
	c, err := net.FileConn(f)
	if err != nil {
		os.Exit(3)
	}
	control := c.(*net.UnixConn)
	send := func(v any, fds ...int) {
		packet, _ := msgpack.Marshal(v)
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		_, _, _ = control.WriteMsgUnix(packet, oob, nil)
	}
	send(&zygoteReady{Type: msgReady, PID: os.Getpid()})
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(16))
	for {
		n, oobn, _, _, err := control.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		var req spawnRequest
		fds := receivedFDs(oob[:oobn])
		if msgpack.Unmarshal(buf[:n], &req) != nil || len(fds) != 4 {
			continue
		}
		files := make([]*os.File, 4)
		for i, fd := range fds {
			files[i] = os.NewFile(uintptr(fd), "sandbox")
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "--", roleSandbox)
		cmd.Stdout, cmd.Stderr = files[2], files[3]
		cmd.ExtraFiles = []*os.File{files[0], files[1]} // fd 3 and 4
		if err := cmd.Start(); err != nil {
			send(&spawnFailedReport{Type: msgSpawnFailed, ID: req.ID, Message: err.Error()})
			continue
		}
		for _, f := range files {
			f.Close()
		}
		pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
		if err != nil {
			os.Exit(4)
		}
		send(&spawnedReport{Type: msgSpawned, ID: req.ID, PID: cmd.Process.Pid}, pidfd)
		unix.Close(pidfd)
		go func(id uint64) {
			_ = cmd.Wait()
			st := cmd.ProcessState
			send(&exitReport{Type: msgExit, ID: id, Status: int(st.Sys().(syscall.WaitStatus)),
				CPUMicros: (st.UserTime() + st.SystemTime()).Microseconds()})
		}(req.ID)
	}
}

// helperSandbox says ready, reads its execute frame and behaves as the
// script names.
func helperSandbox() {
	in, out := os.NewFile(3, "channel-in"), os.NewFile(4, "channel-out")
	_ = writeFrame(out, &readyFrame{Type: msgReady})
	payload, err := readFramePayload(in, 1<<20)
	if err != nil {
		os.Exit(5)
	}
	var exec executeFrame
	if decodeStrict(payload, &exec) != nil {
		os.Exit(6)
	}
	fmt.Print("printed before\n")
	reply := func(v any) {
		os.Stdout.Close()
		os.Stderr.Close()
		_ = writeFrame(out, v)
	}
	switch exec.Script {
	case "ok":
		reply(&resultFrame{Type: msgResult, Result: []byte(` {"echo": "<ok>"} `)})
	case "not json":
		reply(&resultFrame{Type: msgResult, Result: []byte(`{"a":`)})
	case "forged timeout":
		reply(&errorFrame{Type: msgError, Kind: string(KindTimeout), Message: "not really"})
	case "garbage":
		_, _ = out.Write([]byte{0, 0, 0, 3, 0xc1, 0xc1, 0xc1})
	case "exit 3":
		os.Exit(3)
	case "killed":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "flood":
		_, _ = os.Stdout.Write(bytes.Repeat([]byte("x"), 1<<20))
	case "hang":
	}
	time.Sleep(time.Minute)
}

// helperRunner is a fork-mode runner whose zygote and sandboxes are this
// test binary. As root the runner starts the jail as uid 65534, so the
// binary is copied where that uid can run it.
func helperRunner(t *testing.T) *Runner {
	t.Helper()
	binary, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "runner-helper-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(dir, "runner.test")
		if err := copyFile(binary, copied); err != nil {
			t.Fatal(err)
		}
		binary = copied
	}
	cfg := Config{Jail: helperJail{binary}, Mode: ModeFork, Zygotes: 1, StartTimeout: 20 * time.Second}
	cfg.Limits.OutputBytes = 64 << 10
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// TestRunnerJudgesHelperSandboxes drives every kind of outcome through the
// real runner, zygote protocol and channel, with the test binary as the
// sandbox.
func TestRunnerJudgesHelperSandboxes(t *testing.T) {
	r := helperRunner(t)
	tests := []struct {
		script     string
		timeout    time.Duration
		wantResult string
		wantKind   Kind
	}{
		{script: "ok", wantResult: `{"echo":"<ok>"}`},
		{script: "not json", wantKind: KindProtocolError},
		{script: "forged timeout", wantKind: KindProtocolError},
		{script: "garbage", wantKind: KindProtocolError},
		{script: "exit 3", wantKind: KindScriptError},
		{script: "killed", wantKind: KindCrashed},
		{script: "flood", wantKind: KindOutputLimit},
		{script: "hang", timeout: 300 * time.Millisecond, wantKind: KindTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.script, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sb, err := r.Start(ctx, StartOptions{})
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer sb.Close()
			out, err := sb.Execute(ctx, Request{Script: tc.script, Timeout: tc.timeout})
			if !strings.HasPrefix(string(out.Stdout), "printed before") {
				t.Errorf("stdout %q, want what was printed before", out.Stdout)
			}
			if tc.wantResult != "" {
				if err != nil || string(out.Result) != tc.wantResult {
					t.Fatalf("got %s, %v; want %s", out.Result, err, tc.wantResult)
				}
				return
			}
			var se *ScriptError
			if !errors.As(err, &se) || se.Kind != tc.wantKind {
				t.Fatalf("err = %v, want %s", err, tc.wantKind)
			}
		})
	}
}
