package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// serverConfig is one configuration to compare: a name, the flags the
// server is started with and, when it is not the repository's own, the
// binary (another commit's build, to compare side by side).
type serverConfig struct {
	Name   string
	Args   []string
	Binary string // empty: the repository's ./cmd/pyexecd, built by bench
}

// parseConfig reads "name=flags", e.g. "fork=--mode fork --warm 8", or
// "name@binary=flags", e.g. "base@/tmp/pyexecd-base=--mode fork".
func parseConfig(s string) (serverConfig, error) {
	name, args, ok := strings.Cut(s, "=")
	name, binary, _ := strings.Cut(name, "@")
	if !ok || name == "" {
		return serverConfig{}, fmt.Errorf("config %q: want name=flags or name@binary=flags", s)
	}
	if binary != "" {
		if info, err := os.Stat(binary); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			return serverConfig{}, fmt.Errorf("config %q: %s is not an executable file", s, binary)
		}
	}
	return serverConfig{Name: name, Args: strings.Fields(args), Binary: binary}, nil
}

// buildServer compiles the module's ./cmd/pyexecd into dir and returns its
// path. It works from any folder inside the repository.
func buildServer(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("cannot find the repository (run bench inside it): %v", err)
	}
	bin := filepath.Join(dir, "pyexecd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pyexecd")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cannot build the server (run bench from the repository root): %w\n%s", err, out.String())
	}
	return bin, nil
}

// startedServer is a server process this harness started and must stop.
type startedServer struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	done chan struct{}
}

// startServer starts bin with cfg's flags on a free loopback port and waits
// until /health answers 200 with its warm pool full.
func startServer(ctx context.Context, bin string, cfg serverConfig) (*startedServer, error) {
	if cfg.Binary != "" {
		bin = cfg.Binary
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"--addr", addr}, cfg.Args...)
	cmd := exec.Command(bin, args...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start server %s: %w", cfg.Name, err)
	}
	s := &startedServer{cmd: cmd, url: "http://" + addr, logs: logs, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	if err := s.waitSettled(ctx); err != nil {
		s.stop()
		return nil, fmt.Errorf("server %s: %w", cfg.Name, err)
	}
	return s, nil
}

// waitSettled waits until /health answers 200 with the warm pool full and
// nothing running, so the server spends no CPU on refills.
func (s *startedServer) waitSettled(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		h, err := fetchHealth(ctx, s.url)
		if err == nil && h.Pool.Idle >= h.Pool.Warm && h.Pool.Busy == 0 {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("server exited: %s", s.logs.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("server never became ready")
		}
	}
}

// stop sends SIGTERM, then SIGKILL if the server does not exit in time.
func (s *startedServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// health is the part of /health the harness reads.
type health struct {
	Mode string `json:"mode"`
	Jail string `json:"jail"`
	Pool struct {
		Warm     int   `json:"warm"`
		Idle     int   `json:"idle"`
		Busy     int   `json:"busy"`
		Created  int64 `json:"created"`
		Executed int64 `json:"executed"`
	} `json:"pool"`
}

func fetchHealth(ctx context.Context, url string) (*health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return &h, fmt.Errorf("health: status %d", resp.StatusCode)
	}
	return &h, nil
}

// serverDelta turns /health before and after a run into its figures.
func serverDelta(before, after *health) *serverFigures {
	if before == nil || after == nil {
		return nil
	}
	return &serverFigures{
		Mode: after.Mode, Jail: after.Jail, Warm: after.Pool.Warm,
		SandboxesCreated: after.Pool.Created - before.Pool.Created,
		Executed:         after.Pool.Executed - before.Pool.Executed,
	}
}
