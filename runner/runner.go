package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/sandbox-exec/pyexec/python"
)

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
	// ids hands each zygote its slice of Config.SandboxIDs; nil when
	// sandboxes do not get host ids of their own (hostids.go).
	ids *idSlices
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
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
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
	switch _, mapper := cfg.Jail.(IDMapper); {
	case cfg.SandboxIDs.Count == 0:
	case os.Geteuid() != 0:
		cfg.Logger.Warn().Msg("sandbox ids: not root, so every sandbox runs as the server's own uid (docs/security.md, \"Quotas of the host user\")")
	case !mapper:
		cfg.Logger.Warn().Str("jail", cfg.Jail.Name()).Msg("sandbox ids: this jail maps one id, so every sandbox runs as --sandbox-uid (docs/security.md, \"Quotas of the host user\")")
	default:
		r.ids = newIDSlices(cfg.SandboxIDs)
		// Serving, its successor and the one before: short of slices, a
		// successor starts only when one is free, and requests may wait
		// for it at a rotation.
		slices, held := int(cfg.SandboxIDs.Count/idSliceSize), 3*cfg.Zygotes
		if cfg.Mode == ModeFork && slices < held {
			cfg.Logger.Warn().Str("sandbox_ids", cfg.SandboxIDs.String()).Int("slices", slices).Int("zygotes_at_once", held).
				Msg("sandbox ids: fewer slices of 256 ids than this runtime's zygotes may hold at once; widen --sandbox-ids")
		}
	}
	if cfg.Mode == ModeFork {
		for i := range cfg.Zygotes {
			r.zygotes = append(r.zygotes, newZygoteSupervisor(r, i, cfg.Zygotes))
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
		sb, err := r.spawn(ctx, z, prewarm)
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
	sb, err := r.spawn(ctx, z, false)
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

// ZygoteCounts is how many zygotes a runner holds, by what they do.
type ZygoteCounts struct {
	// Serving make the sandboxes (one per --zygotes once started).
	Serving int
	// Starting are successors being started, ahead of a serving one's
	// rotation; Successors are those started.
	Starting, Successors int
	// Retiring were rotated and live on until their last sandbox ends.
	Retiring int
}

// Zygotes counts the runner's zygotes (metrics); zero in exec mode.
func (r *Runner) Zygotes() ZygoteCounts {
	var c ZygoteCounts
	for _, s := range r.zygotes {
		serving, starting, successor, retiring := s.counts()
		c.Serving += serving
		c.Starting += starting
		c.Successors += successor
		c.Retiring += retiring
	}
	return c
}

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
