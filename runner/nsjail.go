package runner

import (
	"fmt"
	"os"
	"os/exec"
)

// Nsjail is the nsjail(1) jail, configured by the repository's nsjail.cfg:
// the production backend. The policy (namespaces, uid maps, mounts,
// rlimits, seccomp, cgroups) lives in that file; the command line adds
// the host paths shown read-only (the list both jails share, see
// ResolveReadOnlyPaths), the environment and the channel on fd 3.
type Nsjail struct {
	// Path is the nsjail binary.
	Path string
	// ConfigPath is the nsjail.cfg file.
	ConfigPath string
	// Runtime, when not empty, shows a runtime's files (RuntimeBinds) in
	// place of the host's (--bindmount_ro SRC:DST).
	Runtime []Bind
	// ReadOnlyPaths are bound read-only at the same place inside the jail
	// (--bindmount_ro) when they exist on the host.
	ReadOnlyPaths []string
}

// NewNsjail finds nsjail (on PATH, or at path when given) and checks that
// the config file can be read. It shows readOnly (nil: the defaults for
// /usr/bin/python3).
func NewNsjail(path, configPath string, readOnly []string) (*Nsjail, error) {
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
	if readOnly == nil {
		readOnly = DefaultReadOnlyPaths("/usr/bin/python3")
	}
	return &Nsjail{Path: found, ConfigPath: configPath, ReadOnlyPaths: readOnly}, nil
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
	// After --config, so these mounts come after the config's root tmpfs.
	for _, m := range n.Runtime {
		args = append(args, "--bindmount_ro", m.Src+":"+m.Dst)
	}
	for _, p := range readOnlyBinds(n.ReadOnlyPaths) {
		args = append(args, "--bindmount_ro", p)
	}
	for _, kv := range spec.Env {
		args = append(args, "--env", kv)
	}
	args = append(args, "--")
	args = append(args, spec.Argv...)
	return n.Path, args
}

// JailOptions choose and configure the jail backend.
type JailOptions struct {
	// Name is "nsjail", "bwrap", or "auto" (nsjail when NsjailPath is
	// given or nsjail is on PATH, else bwrap).
	Name string
	// NsjailPath, NsjailConfig and BwrapPath locate the binaries and the
	// nsjail policy; empty paths mean the binary on PATH.
	NsjailPath, NsjailConfig, BwrapPath string
	// ReadOnlyPaths are the host paths the jail shows read-only, the same
	// list for either backend (see ResolveReadOnlyPaths). Nil: the
	// defaults for Python.
	ReadOnlyPaths []string
	// Python is the interpreter inside the jail, for the default paths.
	Python string
	// Runtime, when not empty, shows a runtime's files (RuntimeBinds)
	// instead of the host's; ReadOnlyPaths then holds only the
	// operator's extra host paths.
	Runtime []Bind
}

// ChooseJail picks the backend o names. It never falls back silently from
// a backend that was asked for by name.
func ChooseJail(o JailOptions) (Jail, error) {
	readOnly := o.ReadOnlyPaths
	if readOnly == nil {
		python := o.Python
		if python == "" {
			python = "/usr/bin/python3"
		}
		readOnly = DefaultReadOnlyPaths(python)
	}
	bwrap := func() (Jail, error) {
		b, err := NewBubblewrap(o.BwrapPath, o.Python)
		if err != nil {
			return nil, err
		}
		b.ReadOnlyPaths, b.Runtime = readOnly, o.Runtime
		return b, nil
	}
	nsjail := func(path string) (Jail, error) {
		n, err := NewNsjail(path, o.NsjailConfig, readOnly)
		if err != nil {
			return nil, err
		}
		n.Runtime = o.Runtime
		return n, nil
	}
	switch o.Name {
	case "nsjail":
		return nsjail(o.NsjailPath)
	case "bwrap":
		return bwrap()
	case "auto":
		if o.NsjailPath != "" {
			return nsjail(o.NsjailPath)
		}
		if _, err := exec.LookPath("nsjail"); err == nil {
			return nsjail("nsjail")
		}
		jail, err := bwrap()
		if err != nil {
			return nil, fmt.Errorf("no jail: nsjail is not on PATH and %w", err)
		}
		return jail, nil
	default:
		return nil, fmt.Errorf("unknown jail %q: use auto, nsjail or bwrap", o.Name)
	}
}
