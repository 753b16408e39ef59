package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sandbox-exec/pyexec/python"
)

// Config says how sandboxes are made. Zero fields take the defaults listed.
type Config struct {
	// Jail wraps every sandbox. Required.
	Jail Jail
	// Python is the interpreter inside the jail. Zero: /usr/bin/python3.
	Python string
	// Preload are the modules imported before the sandbox says ready.
	// Zero: numpy and pandas.
	Preload []string
	// StartTimeout bounds how long a new sandbox may take to say ready.
	// Zero: 30s.
	StartTimeout time.Duration
	// TmpBytes caps each sandbox's private /tmp and /dev/shm. Zero: 64 MiB.
	TmpBytes int64
	// SandboxUID and SandboxGID are the host ids the jail runs as when the
	// server runs as root. Zero: 65534 (nobody/nogroup). The sandbox never
	// runs as host root: New refuses a configuration that would.
	SandboxUID, SandboxGID uint32
	// DenyImports are top-level modules a script may not import
	// (defence in depth only; the jail is the boundary). Zero: none.
	DenyImports []string
}

// Limits bound one execution. Zero fields mean "no limit of this kind",
// except where the server always fills them in (it does, from its maxima).
type Limits struct {
	Timeout       time.Duration // wall clock, enforced by the runner (kill)
	CPUTime       time.Duration // RLIMIT_CPU
	MemoryBytes   int64         // RLIMIT_AS
	Processes     int64         // RLIMIT_NPROC, within the sandbox's user namespace
	OpenFiles     int64         // RLIMIT_NOFILE
	FileSizeBytes int64         // RLIMIT_FSIZE
	OutputBytes   int           // cap on stdout and on stderr, each
	ResultBytes   int           // cap on the JSON result
}

// Request is one script to run.
type Request struct {
	Script string
	// Input is the JSON text passed to main(input); nil means main().
	Input  []byte
	Limits Limits
}

// Output is what one execution produced. Stdout and Stderr are filled in
// whether or not the script succeeded.
type Output struct {
	// Result is the JSON text of what main returned (success only).
	Result         []byte
	Stdout, Stderr []byte
	// Exec is the time from sending the script to having the outcome.
	Exec time.Duration
}

// Runner starts sandboxes. It is safe for concurrent use.
type Runner struct {
	cfg         Config
	credential  *syscall.Credential
	jailPath    string
	jailArgs    []string
	denyImports []string
}

// sandboxEnv is the whole environment inside the jail. The BLAS and OpenMP
// thread counts are pinned to one so an idle sandbox has no helper threads
// and numpy imports within small address-space limits.
func sandboxEnv() []string {
	return []string{
		"PATH=/usr/bin:/bin",
		"HOME=/tmp",
		"LANG=C.UTF-8",
		"OPENBLAS_NUM_THREADS=1",
		"OMP_NUM_THREADS=1",
		"MKL_NUM_THREADS=1",
		"PYTHONDONTWRITEBYTECODE=1",
	}
}

// New checks cfg and returns a Runner. It does not start anything; call
// Probe to find out whether the jail works on this machine.
func New(cfg Config) (*Runner, error) {
	if cfg.Jail == nil {
		return nil, errors.New("runner: no jail configured")
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.Preload == nil {
		cfg.Preload = []string{"numpy", "pandas"}
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.TmpBytes == 0 {
		cfg.TmpBytes = 64 << 20
	}
	if cfg.SandboxUID == 0 {
		cfg.SandboxUID = 65534
	}
	if cfg.SandboxGID == 0 {
		cfg.SandboxGID = 65534
	}
	for _, name := range cfg.Preload {
		if strings.ContainsAny(name, ", ") || name == "" {
			return nil, fmt.Errorf("runner: preload module name %q is not valid", name)
		}
	}
	r := &Runner{cfg: cfg, denyImports: cfg.DenyImports}
	if os.Geteuid() == 0 {
		// As root, start the jail as an unprivileged host uid: bwrap then
		// maps the sandbox's uid to it, never to host root.
		r.credential = &syscall.Credential{Uid: cfg.SandboxUID, Gid: cfg.SandboxGID, Groups: []uint32{}}
	}
	argv := []string{cfg.Python, "-I", "-B", "-u", "-c", python.SandboxSource, strings.Join(cfg.Preload, ",")}
	r.jailPath, r.jailArgs = cfg.Jail.Command(JailSpec{Argv: argv, Env: sandboxEnv(), TmpBytes: cfg.TmpBytes})
	return r, nil
}

// JailName is the name of the jail in force, for /health.
func (r *Runner) JailName() string { return r.cfg.Jail.Name() }

// Probe starts one sandbox and destroys it, to prove the jail works here.
// Its error says what to fix.
func (r *Runner) Probe(ctx context.Context) error {
	sb, err := r.Start(ctx)
	if err != nil {
		return fmt.Errorf("cannot start a %s sandbox (the jail needs unprivileged user namespaces: "+
			"check that sysctl user.max_user_namespaces > 0 and kernel.unprivileged_userns_clone=1 where it exists, "+
			"and that %s and python3-numpy, python3-pandas, python3-msgpack are installed): %w",
			r.JailName(), r.cfg.Python, err)
	}
	return sb.Close()
}
