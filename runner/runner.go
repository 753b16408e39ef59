package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/sandbox-exec/pyexec/internal/cgroupv2"
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
	// Zygotes is how many zygotes serve at once in fork mode: the clone
	// of the big interpreter happens in its zygote, so one zygote per CPU
	// lets sandboxes be made in parallel. Zero: GOMAXPROCS.
	Zygotes int
	// Limits bound every execution; a Request may lower its wall clock and
	// memory. Zero fields take DefaultConfig's.
	Limits Limits
	// Policy is checked in every script before it runs. Zero (no name):
	// SeedPolicy, the original service's.
	Policy Policy
	// Cgroups, where the host delegates cgroup v2 (see cgroupv2.Detect),
	// gives every sandbox a group of its own: Limits.MemoryBytes bounds
	// all its processes and the tmpfs pages they write together, and
	// Limits.Processes its pids. Nil: rlimits alone bound a sandbox.
	Cgroups *cgroupv2.Tree
}

// DefaultConfig returns the defaults: those of the original service where
// it had one (memory 1 GiB, CPU 300 s, wall 30 s). Flags derive theirs
// from it. Prewarm is true here; a zero Config means false.
func DefaultConfig() Config {
	return Config{
		Mode:           ModeFork,
		Python:         "/usr/bin/python3",
		Preload:        []string{"numpy", "pandas"},
		StartTimeout:   30 * time.Second,
		TmpBytes:       64 << 20,
		SandboxUID:     65534,
		SandboxGID:     65534,
		Prewarm:        true,
		ZygoteMaxForks: 200,
		ZygoteMaxAge:   10 * time.Minute,
		Zygotes:        runtime.GOMAXPROCS(0),
		Policy:         SeedPolicy(),
		Limits: Limits{
			Timeout:       30 * time.Second,
			CPUTime:       300 * time.Second,
			MemoryBytes:   1 << 30,
			Processes:     16,
			OpenFiles:     64,
			FileSizeBytes: 16 << 20,
			OutputBytes:   1 << 20,
			ResultBytes:   8 << 20,
			MaxFiles:      32,
			FilesBytes:    8 << 20,
		},
	}
}

// withDefaults fills every zero field of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.Mode, d.Mode)
	setDefault(&c.Python, d.Python)
	if c.Preload == nil {
		c.Preload = d.Preload
	}
	setDefault(&c.StartTimeout, d.StartTimeout)
	setDefault(&c.TmpBytes, d.TmpBytes)
	setDefault(&c.SandboxUID, d.SandboxUID)
	setDefault(&c.SandboxGID, d.SandboxGID)
	setDefault(&c.ZygoteMaxForks, d.ZygoteMaxForks)
	setDefault(&c.ZygoteMaxAge, d.ZygoteMaxAge)
	setDefault(&c.Zygotes, d.Zygotes)
	if c.Policy.Name == "" {
		c.Policy = d.Policy
	}
	if c.Policy.DenyImports == nil {
		c.Policy.DenyImports = []string{}
	}
	if c.Policy.DenyCalls == nil {
		c.Policy.DenyCalls = []string{}
	}
	l, dl := &c.Limits, d.Limits
	setDefault(&l.Timeout, dl.Timeout)
	setDefault(&l.CPUTime, dl.CPUTime)
	setDefault(&l.MemoryBytes, dl.MemoryBytes)
	setDefault(&l.Processes, dl.Processes)
	setDefault(&l.OpenFiles, dl.OpenFiles)
	setDefault(&l.FileSizeBytes, dl.FileSizeBytes)
	setDefault(&l.OutputBytes, dl.OutputBytes)
	setDefault(&l.ResultBytes, dl.ResultBytes)
	setDefault(&l.MaxFiles, dl.MaxFiles)
	setDefault(&l.FilesBytes, dl.FilesBytes)
	return c
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// Limits bound one execution.
type Limits struct {
	Timeout time.Duration // wall clock, enforced by the runner (kill)
	CPUTime time.Duration // RLIMIT_CPU
	// MemoryBytes is what a script may use on top of what its sandbox
	// holds when it starts: each process's RLIMIT_AS is its address space
	// at that moment plus this, and the sandbox as a whole (its processes'
	// anonymous memory and its scratch tmpfs) is held to it by the
	// runner's watch or, where the host delegates one, its cgroup.
	MemoryBytes   int64
	Processes     int64 // RLIMIT_NPROC, within the sandbox's user namespace
	OpenFiles     int64 // RLIMIT_NOFILE
	FileSizeBytes int64 // RLIMIT_FSIZE
	OutputBytes   int   // cap on stdout and on stderr, each
	ResultBytes   int   // cap on the encoded result (JSON text or msgpack bytes)
	MaxFiles      int   // cap on the count of output files (and, at the server, of a request's)
	FilesBytes    int   // cap on the bytes of all output files together (and of a request's)
}

// MinMemoryBytes is the smallest memory limit a request may ask for: room
// for a thread's 8 MiB stack and the script's small objects on top of
// what the sandbox holds, and for the watch's tolerance (README, "What a
// sandbox can hold").
const MinMemoryBytes int64 = 16 << 20

// InputFormat says how Request.Input is encoded.
type InputFormat int

const (
	// InputJSON: Input is strict JSON text (the server has validated it).
	InputJSON InputFormat = iota
	// InputMsgpack: Input is one msgpack value (validated by the server);
	// bin arrives in Python as bytes and integers stay exact.
	InputMsgpack
)

// ResultFormat says how Output.Result (and each ItemOutput.Result) is
// encoded.
type ResultFormat int

const (
	// ResultJSON: strict, compact JSON text; bytes are base64 text.
	ResultJSON ResultFormat = iota
	// ResultMsgpack: one msgpack value, checked by the runner (UTF-8 str,
	// no ext, no key twice); bytes are bin. For callers that answer in
	// msgpack: the values are those of the JSON, bytes apart.
	ResultMsgpack
)

// Entrypoint says how a script is run.
type Entrypoint string

const (
	// EntrypointMain runs the module, then calls main(input) (main() with
	// no input), awaiting it when main is async. The zero value means it.
	EntrypointMain Entrypoint = "main"
	// EntrypointNone runs the script as a notebook cell: its top-level code
	// with the global INPUT bound to the input (None without one); the
	// value of its last statement, when that is an expression, is the
	// result (else None). A top-level await is allowed. No main is needed
	// or called; the module is __main__, so a script's own
	// `if __name__ == "__main__"` guard runs.
	EntrypointNone Entrypoint = "none"
)

// Request is one script to run.
type Request struct {
	Script string
	// Entrypoint says how it runs. Zero: EntrypointMain.
	Entrypoint Entrypoint
	// Input is what main(input) receives, encoded as InputFormat; nil
	// means main() is called without an argument.
	Input []byte
	// Inputs makes the request a batch: the script runs once, main once
	// per input, in order (state is shared within the batch only). Each
	// is encoded as InputFormat; Input must then be nil.
	Inputs      [][]byte
	InputFormat InputFormat
	// Stdin, when not nil, is the text the script reads on its standard
	// input (sys.stdin; every input of a batch reads it from its start).
	// nil: reading stdin raises EOFError saying that none was given.
	Stdin *string
	// ResultFormat is how the result comes back.
	ResultFormat ResultFormat
	// Files are placed in the working directory, /tmp, before the script
	// runs. Their names must pass CheckFileName; the caller checks them
	// against Limits.MaxFiles and FilesBytes.
	Files []File
	// Timeout and MemoryBytes, when positive, lower the configured wall
	// clock and address-space limits for this request (never raise them).
	Timeout     time.Duration
	MemoryBytes int64
}

// limitsFor are the limits of one request: the configured ones, lowered
// where the request asks for less.
func (l Limits) limitsFor(req Request) Limits {
	if req.Timeout > 0 && req.Timeout < l.Timeout {
		l.Timeout = req.Timeout
	}
	if req.MemoryBytes > 0 && req.MemoryBytes < l.MemoryBytes {
		l.MemoryBytes = req.MemoryBytes
	}
	return l
}

// Usage is what the sandbox used, from the kernel's rusage.
type Usage struct {
	// CPU is user + system time of the sandbox and its waited-for children.
	CPU time.Duration
	// MaxRSSKB is its largest resident set, in KiB.
	MaxRSSKB int64
}

// ItemOutput is one input's outcome in a batch: Result (encoded as the
// request's ResultFormat) or Err, and what its Python code printed. An
// input that never ran, because an earlier one ended the sandbox, has an
// Err of KindNotRun.
type ItemOutput struct {
	Result         []byte
	Err            *ScriptError
	Stdout, Stderr []byte
}

// Output is what one execution produced. Stdout and Stderr are filled in
// whether or not the script succeeded.
type Output struct {
	// Result is what main returned, encoded as the request's ResultFormat
	// (success only).
	Result         []byte
	Stdout, Stderr []byte
	// Exec is the time from sending the script to having the outcome.
	Exec time.Duration
	// Items are a batch's outcomes, one per input, in order.
	Items []ItemOutput
	// Files are what the script left in OutputDir, sorted by name
	// (success only).
	Files []File
	// Usage is what the sandbox used, from the kernel: the zygote's wait4
	// when the sandbox ended by itself, else its /proc just before the kill.
	Usage Usage
}

// Runner starts sandboxes. It is safe for concurrent use. In fork mode it
// owns the zygote; Close stops it.
type Runner struct {
	cfg        Config
	credential *syscall.Credential
	python     python.Program
	// zygotes keep Config.Zygotes zygotes serving (fork mode only); next
	// picks the one the next sandbox comes from, in turn.
	zygotes []*zygoteSupervisor
	next    atomic.Uint64
	// zygoteRestarts counts zygotes that died and were replaced.
	zygoteRestarts atomic.Int64
}

// sandboxEnv is the whole environment inside the jail. The BLAS and OpenMP
// thread counts are pinned to one so an idle sandbox has no helper threads
// and numpy imports within small address-space limits.
func sandboxEnv() []string {
	return append([]string{
		"PATH=/usr/bin:/bin",
		"HOME=/tmp",
		"LANG=C.UTF-8",
		"OPENBLAS_NUM_THREADS=1",
		"OMP_NUM_THREADS=1",
		"MKL_NUM_THREADS=1",
		"PYTHONDONTWRITEBYTECODE=1",
		// matplotlib draws with Agg to files and buffers only (no
		// display), through pyexec's backend, whose plt.show() returns the
		// figures as files instead of blocking or warning
		// (python/pyexec/mplbackend.py); it keeps its config and font
		// cache in the sandbox's own /tmp (it refuses to import without a
		// writable one).
		"MPLBACKEND=module://pyexec.mplbackend",
		"MPLCONFIGDIR=/tmp/matplotlib",
	}, AllocatorEnv()...)
}

// AllocatorEnv is how the zygote's interpreter allocates: Python's objects
// in malloc's heap, and that heap in 2 MiB transparent huge pages where the
// kernel offers them on madvise (the jail shows glibc the two THP files it
// reads). The zygote's heap is then a few dozen large folios: even once its
// own writes have split their mappings (as they do while sandboxes share
// them), fork copies and exit tears down their entries in batches, not
// page by page (bench/README.md, "Phases": fork and exit of a numpy+pandas
// interpreter 6.4 → 3.7 ms of CPU). pymalloc's own 1 MiB arenas cannot be
// huge pages. bench measures the fork ceiling with the same settings.
func AllocatorEnv() []string {
	return []string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=1", "PYTHONMALLOC=malloc"}
}

// New checks cfg and returns a Runner. It does not start anything; call
// Probe to find out whether the jail works on this machine.
func New(cfg Config) (*Runner, error) {
	if cfg.Jail == nil {
		return nil, errors.New("runner: no jail configured")
	}
	cfg = cfg.withDefaults()
	if cfg.Mode != ModeFork && cfg.Mode != ModeExec {
		return nil, fmt.Errorf("runner: unknown mode %q", cfg.Mode)
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
		for range cfg.Zygotes {
			r.zygotes = append(r.zygotes, newZygoteSupervisor(r))
		}
	}
	return r, nil
}

// StartOptions vary one sandbox's making.
type StartOptions struct {
	// SkipPrewarm makes a fork-mode sandbox without its warm-up run, even
	// though Config.Prewarm is set: faster to make, slower to answer. The
	// pool asks for it while requests are waiting.
	SkipPrewarm bool
	// failFast gives up at the first failed zygote start (Probe).
	failFast bool
}

// Start starts one sandbox and waits until it says ready. ctx bounds the
// wait (together with Config.StartTimeout); on failure nothing of the
// sandbox is left running.
func (r *Runner) Start(ctx context.Context, opts StartOptions) (*Sandbox, error) {
	if r.cfg.Mode == ModeExec {
		return r.startExec(ctx)
	}
	prewarm := r.cfg.Prewarm && !opts.SkipPrewarm
	for {
		z, err := r.zygotes[r.next.Add(1)%uint64(len(r.zygotes))].get(ctx, opts.failFast)
		if err != nil {
			return nil, err
		}
		sb, err := r.spawn(ctx, z, r.cfg.ZygoteMaxForks, prewarm)
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
	z, err := r.startZygote(ctx)
	if err != nil {
		return nil, err
	}
	sb, err := r.spawn(ctx, z, 0, false)
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
	for _, s := range r.zygotes {
		s.close()
	}
}

// JailName is the name of the jail in force, for /health.
func (r *Runner) JailName() string { return r.cfg.Jail.Name() }

// ZygoteRestarts is how many zygotes died and were replaced (metrics).
func (r *Runner) ZygoteRestarts() int64 { return r.zygoteRestarts.Load() }

// Policy is the validation policy in force, for /health.
func (r *Runner) Policy() Policy { return r.cfg.Policy }

// Mode is the mode in force, for /health.
func (r *Runner) Mode() Mode { return r.cfg.Mode }

// MemoryAccounting says what bounds a sandbox's memory: "cgroup2" (a
// group per sandbox) or "rlimit" (per-process address-space limits and the
// runner's memory watch of each sandbox as a whole).
func (r *Runner) MemoryAccounting() string {
	if r.cfg.Cgroups != nil {
		return "cgroup2"
	}
	return "rlimit"
}

// Probe starts one sandbox and destroys it, to prove the jail works here.
// Its error says what to fix.
func (r *Runner) Probe(ctx context.Context) error {
	sb, err := r.Start(ctx, StartOptions{failFast: true})
	if err != nil {
		return fmt.Errorf("cannot start a %s sandbox: %w; likely causes, most likely first: "+
			"unprivileged user namespaces are off (sysctl user.max_user_namespaces must be > 0, and kernel.unprivileged_userns_clone 1 where it exists); "+
			"a seccomp profile refuses the namespace calls or sethostname (in a container: --security-opt seccomp=unconfined); "+
			"/proc is masked, so the jail cannot mount its own (podman: --security-opt unmask=/proc/*, docker: --security-opt systempaths=unconfined, Kubernetes: procMount: Unmasked); "+
			"%s lacks python3-numpy, python3-pandas, python3-msgpack or python3-seccomp (scripts/install-deps.sh)",
			r.JailName(), err, r.cfg.Python)
	}
	return sb.Close()
}
