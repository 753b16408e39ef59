package runner

import (
	"fmt"
	"os"
	"os/exec"
)

// Nsjail is the nsjail(1) jail, configured by the repository's nsjail.cfg:
// the production backend. The policy (namespaces, uid maps, mounts,
// rlimits, seccomp, cgroups) lives in that file; the command line adds only
// what the runner varies: the environment and the channel on fd 3.
type Nsjail struct {
	// Path is the nsjail binary.
	Path string
	// ConfigPath is the nsjail.cfg file.
	ConfigPath string
}

// NewNsjail finds nsjail (on PATH, or at path when given) and checks that
// the config file can be read.
func NewNsjail(path, configPath string) (*Nsjail, error) {
	if path == "" {
		path = "nsjail"
	}
	found, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("cannot find %q (build it from github.com/google/nsjail, or use --jail bwrap): %w", path, ErrJailMissing)
	}
	if _, err := os.Stat(configPath); err != nil {
		return nil, fmt.Errorf("cannot read the nsjail policy (--nsjail-config): %w", err)
	}
	return &Nsjail{Path: found, ConfigPath: configPath}, nil
}

// Name implements Jail.
func (n *Nsjail) Name() string { return "nsjail" }

// Command implements Jail. The /tmp size comes from nsjail.cfg for the
// jail; in fork mode each sandbox mounts its own /tmp of spec.TmpBytes.
// --quiet keeps nsjail's warnings and errors (why a jail could not start)
// on its stderr, which the runner reports when the jail dies, and drops
// its per-process information lines.
func (n *Nsjail) Command(spec JailSpec) (string, []string) {
	args := []string{"--config", n.ConfigPath, "--quiet", "--pass_fd", "3"}
	for _, kv := range spec.Env {
		args = append(args, "--env", kv)
	}
	args = append(args, "--")
	args = append(args, spec.Argv...)
	return n.Path, args
}

// ChooseJail picks the backend for name: "nsjail", "bwrap", or "auto"
// (nsjail when nsjailPath is given or nsjail is on PATH, else bwrap). It
// never falls back silently from a backend that was asked for by name.
func ChooseJail(name, nsjailPath, nsjailConfig, bwrapPath, python string) (Jail, error) {
	switch name {
	case "nsjail":
		return NewNsjail(nsjailPath, nsjailConfig)
	case "bwrap":
		return NewBubblewrap(bwrapPath, python)
	case "auto":
		if nsjailPath != "" {
			return NewNsjail(nsjailPath, nsjailConfig)
		}
		if _, err := exec.LookPath("nsjail"); err == nil {
			return NewNsjail("nsjail", nsjailConfig)
		}
		jail, err := NewBubblewrap(bwrapPath, python)
		if err != nil {
			return nil, fmt.Errorf("no jail: nsjail is not on PATH and %w", err)
		}
		return jail, nil
	default:
		return nil, fmt.Errorf("unknown jail %q: use auto, nsjail or bwrap", name)
	}
}
