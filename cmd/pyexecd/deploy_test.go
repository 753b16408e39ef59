package main

import (
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sandbox-exec/pyexec/runner"
)

// TestShippedDeploymentFitsItsMemoryLimit: the server refuses to start
// when --max-busy sandboxes at their bound, the zygotes and the warm
// sandboxes do not fit the memory it may use, on Kubernetes the
// container's limit (its cgroup's memory.max). The Deployment in
// deploy/k8s must start on the 2-CPU node it is written for: a pod without
// a CPU limit sees its node's CPUs, which set the zygotes (one each) and
// the memory watch's slack (per CPU). image-test's kube stage cannot show
// it: podman ignores memory limits on a cgroup v1 host.
func TestShippedDeploymentFitsItsMemoryLimit(t *testing.T) {
	const nodeCPUs = 2
	raw, err := os.ReadFile("../../deploy/k8s/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	argsLine := regexp.MustCompile(`(?m)^\s*args: \[(.*)\]$`).FindSubmatch(raw)
	limitLine := regexp.MustCompile(`(?m)^\s*limits:\s*\n\s*memory: (\d+)Gi$`).FindSubmatch(raw)
	if argsLine == nil || limitLine == nil {
		t.Fatal("deployment.yaml: no args: [...] line or no limits: memory: NGi")
	}
	var args []string
	for _, quoted := range strings.Split(string(argsLine[1]), ",") {
		arg, err := strconv.Unquote(strings.TrimSpace(quoted))
		if err != nil {
			t.Fatalf("deployment.yaml: args %s: %v", argsLine[1], err)
		}
		args = append(args, arg)
	}
	limitGi, _ := strconv.ParseInt(string(limitLine[1]), 10, 64)
	// The image's environment (Dockerfile): one runtime.
	env := map[string]string{"PORT": "8080", "PYEXEC_RUNTIMES": "debian13-ds"}
	o, err := parseOptions(append(args, "--zygotes", strconv.Itoa(nodeCPUs)), func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the Deployment's args %v: %v", args, err)
	}
	if o.pool.MaxBusy == 0 || o.pool.Warm == 0 {
		t.Fatalf("the Deployment sets no --max-busy or --warm (%v): the check below needs both", args)
	}
	perSandbox, fixed := o.runner.MemoryBounds(o.pool.Warm, 1, nodeCPUs)
	if _, err := runner.FitMaxBusy(o.pool.MaxBusy, true, perSandbox, fixed, limitGi<<30); err != nil {
		t.Errorf("the shipped Deployment would not start (limit %d Gi): %v", limitGi, err)
	}
}
