package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/sandbox-exec/pyexec/python"
)

// Mode says how sandboxes are made.
type Mode string

const (
	// ModeFork forks each sandbox from one jailed zygote that imported the
	// preload modules once; the child isolates itself before it is ready.
	ModeFork Mode = "fork"
	// ModeExec starts a fresh jailed interpreter for each sandbox.
	ModeExec Mode = "exec"
)

// Config says how sandboxes are made. Zero fields take the defaults listed.
type Config struct {
	// Jail wraps every sandbox (exec mode) or the zygote (fork mode).
	// Required.
	Jail Jail
	// Mode is ModeFork or ModeExec. Zero: ModeFork.
	Mode Mode
	// Logger receives zygote deaths and restarts. Zero: no logging.
	Logger zerolog.Logger
	// Python is the interpreter inside the jail. Zero: /usr/bin/python3.
	Python string
	// Preload are the modules imported before the sandbox says ready.
	// Zero: numpy and pandas.
	Preload []string
	// StartTimeout bounds how long a new sandbox may take to say ready.
	// Zero: 30s.
	StartTimeout time.Duration
	// TmpBytes caps each sandbox's one private tmpfs, which holds its /tmp
	// and /dev/shm together. Zero: 64 MiB.
	TmpBytes int64
	// SandboxUID and SandboxGID are the host ids the jail runs as when the
	// server runs as root. Zero: 65534 (nobody/nogroup). The sandbox never
	// runs as host root: New refuses a configuration that would.
	SandboxUID, SandboxGID uint32
	// Prewarm makes each fork-mode sandbox run a fixed script through the
	// execute path before it says ready, paying its copy-on-write faults
	// and first-run costs off the request path (slower to build, faster to
	// answer). Exec mode ignores it.
	Prewarm bool
	// DenyImports are top-level modules a script may not import
	// (defence in depth only; the jail is the boundary). Zero: none.
	DenyImports []string
	// ZygoteMaxForks and ZygoteMaxAge rotate the fork-mode zygote: after
	// that many sandboxes, or that long, a fresh zygote (new address-space
	// layout, new hash seed) takes over and the old one is retired once its
	// sandboxes are gone. Zero: 200 and 10 minutes (see DefaultConfig).
	ZygoteMaxForks int
	ZygoteMaxAge   time.Duration
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

// InputFormat says how Request.Input is encoded.
type InputFormat int

const (
	// InputJSON: Input is strict JSON text (the server has validated it).
	InputJSON InputFormat = iota
	// InputMsgpack: Input is one msgpack value (validated by the server);
	// bin arrives in Python as bytes and integers stay exact.
	InputMsgpack
)

// Request is one script to run.
type Request struct {
	Script string
	// Input is what main(input) receives, encoded as InputFormat; nil
	// means main() is called without an argument.
	Input       []byte
	InputFormat InputFormat
	Limits      Limits
}

// Usage is what the sandbox used, from the kernel's rusage.
type Usage struct {
	// CPU is user + system time of the sandbox and its waited-for children.
	CPU time.Duration
	// MaxRSSKB is its largest resident set, in KiB.
	MaxRSSKB int64
}

// Output is what one execution produced. Stdout and Stderr are filled in
// whether or not the script succeeded.
type Output struct {
	// Result is the JSON text of what main returned (success only).
	Result         []byte
	Stdout, Stderr []byte
	// Exec is the time from sending the script to having the outcome.
	Exec time.Duration
	// Usage is known when the sandbox's end was reported (failures); zero
	// on the fast path of a success.
	Usage Usage
}

// Runner starts sandboxes. It is safe for concurrent use. In fork mode it
// owns the zygote; Close stops it.
type Runner struct {
	cfg        Config
	credential *syscall.Credential
	python     python.Program
	zygotes    *zygoteSupervisor // fork mode only
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
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeFork
	case ModeFork, ModeExec:
	default:
		return nil, fmt.Errorf("runner: unknown mode %q", cfg.Mode)
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
	if cfg.ZygoteMaxForks == 0 {
		cfg.ZygoteMaxForks = 200
	}
	if cfg.ZygoteMaxAge == 0 {
		cfg.ZygoteMaxAge = 10 * time.Minute
	}
	for _, name := range cfg.Preload {
		if strings.ContainsAny(name, ", ") || name == "" {
			return nil, fmt.Errorf("runner: preload module name %q is not valid", name)
		}
	}
	program, err := python.Load()
	if err != nil {
		return nil, fmt.Errorf("runner: cannot load the embedded Python program: %w", err)
	}
	r := &Runner{cfg: cfg, python: program}
	if os.Geteuid() == 0 {
		// As root, start the jail as an unprivileged host uid: bwrap then
		// maps the sandbox's uid to it, never to host root.
		r.credential = &syscall.Credential{Uid: cfg.SandboxUID, Gid: cfg.SandboxGID, Groups: []uint32{}}
	}
	if cfg.Mode == ModeFork {
		r.zygotes = newZygoteSupervisor(r)
	}
	return r, nil
}

// Start starts one sandbox and waits until it says ready. ctx bounds the
// wait (together with Config.StartTimeout); on failure nothing of the
// sandbox is left running.
func (r *Runner) Start(ctx context.Context) (*Sandbox, error) {
	if r.cfg.Mode == ModeExec {
		return r.startExec(ctx)
	}
	for {
		z, err := r.zygotes.get(ctx)
		if err != nil {
			return nil, err
		}
		sb, err := r.spawn(ctx, z, r.cfg.ZygoteMaxForks)
		if errors.Is(err, errZygoteSpent) {
			continue // another build took its last fork: wait for the next zygote
		}
		return sb, err
	}
}

// startExec starts one exec-mode sandbox: a fresh jailed interpreter,
// started for it alone, that imports the preload modules and forks it
// through the same isolation steps as fork mode. The zygote is closed with
// the sandbox.
func (r *Runner) startExec(ctx context.Context) (*Sandbox, error) {
	z, err := r.startZygote(ctx, false)
	if err != nil {
		return nil, err
	}
	sb, err := r.spawn(ctx, z, 0)
	if err != nil {
		z.close()
		return nil, err
	}
	sb.ownsZygote = true
	return sb, nil
}

// Close stops the zygote (fork mode) and every sandbox forked from it.
// Sandboxes of exec mode are closed by their owners.
func (r *Runner) Close() {
	if r.zygotes != nil {
		r.zygotes.close()
	}
}

// JailName is the name of the jail in force, for /health.
func (r *Runner) JailName() string { return r.cfg.Jail.Name() }

// Mode is the mode in force, for /health.
func (r *Runner) Mode() Mode { return r.cfg.Mode }

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
