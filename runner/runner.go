package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
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
	// TmpBytes caps each sandbox's private /tmp and /dev/shm. Zero: 64 MiB.
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

// Output is what one execution produced. Stdout and Stderr are filled in
// whether or not the script succeeded.
type Output struct {
	// Result is the JSON text of what main returned (success only).
	Result         []byte
	Stdout, Stderr []byte
	// Exec is the time from sending the script to having the outcome.
	Exec time.Duration
}

// Runner starts sandboxes. It is safe for concurrent use. In fork mode it
// owns the zygote; Close stops it.
type Runner struct {
	cfg        Config
	credential *syscall.Credential
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
	for _, name := range cfg.Preload {
		if strings.ContainsAny(name, ", ") || name == "" {
			return nil, fmt.Errorf("runner: preload module name %q is not valid", name)
		}
	}
	r := &Runner{cfg: cfg}
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

// sandboxArgv is the interpreter's command line inside the jail: -I
// isolates it from the environment and user site, -B writes no bytecode,
// -u makes stdout and stderr unbuffered so print() and os.write() reach
// the pipes in order.
func (r *Runner) sandboxArgv(zygote bool) []string {
	argv := []string{r.cfg.Python, "-I", "-B", "-u", "-c", python.SandboxSource}
	if zygote {
		argv = append(argv, "zygote")
	}
	argv = append(argv, strings.Join(r.cfg.Preload, ","))
	if zygote {
		prewarm := "no-prewarm"
		if r.cfg.Prewarm {
			prewarm = "prewarm"
		}
		argv = append(argv, strconv.FormatInt(r.cfg.TmpBytes, 10), prewarm)
	}
	return argv
}

// Start starts one sandbox and waits until it says ready. ctx bounds the
// wait (together with Config.StartTimeout); on failure nothing of the
// sandbox is left running.
func (r *Runner) Start(ctx context.Context) (*Sandbox, error) {
	if r.cfg.Mode == ModeExec {
		return r.startExec(ctx)
	}
	z, err := r.zygotes.get(ctx)
	if err != nil {
		return nil, err
	}
	return r.spawn(ctx, z)
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
