// Package containerseccomp builds the seccomp profile the service's
// container runs under: the container runtime's default profile (Docker's,
// which containerd's and Kubernetes' RuntimeDefault follow, from
// github.com/moby/profiles/seccomp) plus only what the jail needs to create
// its namespaces. The result is committed as deploy/seccomp/pyexec.json;
// a test checks that the file is what Build makes, and `make image-test`
// shows each addition necessary by starting the image without it.
//
// The additions open to the server's process (uid 65534, no capabilities)
// what Docker's default otherwise grants only with CAP_SYS_ADMIN. The
// kernel still checks each call: they succeed only inside a user namespace
// the process created, which is what both jails do. Every sandbox then
// loads the service's own allow-list filter (python/pyexec/syscalls.py),
// much narrower than this profile.
package containerseccomp

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Addition is one rule added to the runtime's default, with why the jail
// needs it.
type Addition struct {
	Name  string // how -without names it
	Why   string
	Rules []specs.LinuxSyscall
}

func allow(names ...string) specs.LinuxSyscall {
	return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
}

// Additions are the rules added to the default profile, in the order the
// profile lists them.
func Additions() []Addition {
	return []Addition{
		{
			Name:  "unshare",
			Why:   "bwrap and nsjail, then each fork-mode sandbox, create user, mount, PID, network, IPC and UTS namespaces with unshare(2)",
			Rules: []specs.LinuxSyscall{allow("unshare")},
		},
		{
			Name: "clone-namespaces",
			Why:  "the jails start their child straight into new namespaces with clone(2) namespace flags (the default allows clone only without them)",
			// Any flags: the default's masked rule for clone stays, and
			// this one admits the namespace flags it refuses.
			Rules: []specs.LinuxSyscall{allow("clone")},
		},
		{
			Name:  "mount",
			Why:   "the jails mount the sandbox's root, a fresh /proc and tmpfs scratch; each sandbox makes its mounts private and mounts its own /tmp and /proc",
			Rules: []specs.LinuxSyscall{allow("mount", "umount2")},
		},
		{
			Name:  "pivot_root",
			Why:   "the jails switch to the sandbox's new root with pivot_root(2) and detach the old one",
			Rules: []specs.LinuxSyscall{allow("pivot_root")},
		},
		{
			Name:  "sethostname",
			Why:   "the jails name the sandbox's UTS namespace (host name \"sandbox\") so it does not show the pod's",
			Rules: []specs.LinuxSyscall{allow("sethostname")},
		},
	}
}

// Build returns the profile as indented JSON: the default profile with every
// addition but those named in without (for the necessity checks). An
// unknown name in without is an error, so a check cannot pass by a typo.
func Build(without ...string) ([]byte, error) {
	skip := map[string]bool{}
	for _, name := range without {
		skip[name] = true
	}
	p := seccomp.DefaultProfile()
	for _, a := range Additions() {
		if skip[a.Name] {
			delete(skip, a.Name)
			continue
		}
		for _, r := range a.Rules {
			p.Syscalls = append(p.Syscalls, &seccomp.Syscall{LinuxSyscall: r, Comment: "pyexec: " + a.Why})
		}
	}
	if len(skip) > 0 {
		names := make([]string, 0, len(skip))
		for n := range skip {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no addition named %v", names)
	}
	out, err := json.MarshalIndent(p, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
