// Command pyexecd is the HTTP service that runs untrusted Python scripts in
// a warm pool of jailed interpreters. main only wires signals to run; run
// is what the end-to-end tests start on a loopback port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sandbox-exec/pyexec/internal/cgroupv2"
	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
	"github.com/sandbox-exec/pyexec/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp), errors.Is(err, errVersionShown):
		// --help and --version answered on stderr; nothing went wrong.
	case err != nil:
		fmt.Fprintln(os.Stderr, "pyexecd:", err)
		os.Exit(1)
	}
}

// errVersionShown ends run after --version printed the version.
var errVersionShown = errors.New("version shown")

// envPrefix names the variables that set flags: --max-busy is
// PYEXEC_MAX_BUSY. A flag on the command line wins over its variable.
const envPrefix = "PYEXEC_"

// envName is the variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// options are the parsed flags and environment.
type options struct {
	addr            string
	logLevel        string
	shutdownTimeout time.Duration
	runner          runner.Config
	bwrapPath       string
	nsjailPath      string
	nsjailConfig    string
	roPaths         pathList
	mode            string
	jail            string
	cgroup          string
	pool            pool.Config
	server          server.Config
}

func parseOptions(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("pyexecd", flag.ContinueOnError)
	fs.SetOutput(out)

	port := getenv("PORT")
	if port == "" {
		port = "8080"
	}
	fs.StringVar(&o.addr, "addr", ":"+port, "listen address; PORT sets the port of the default")
	fs.StringVar(&o.logLevel, "log-level", envOr(getenv, "LOG_LEVEL", "info"), "log level: debug, info, warn, error; LOG_LEVEL sets it too")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 35*time.Second, "how long SIGTERM waits for requests in flight")
	fs.StringVar(&o.mode, "mode", string(runner.DefaultConfig().Mode), "how sandboxes are made: fork (forked from one jailed zygote) or exec (a fresh jailed interpreter each)")
	fs.StringVar(&o.jail, "jail", "auto", "jail backend: auto (nsjail if found, else bwrap), nsjail or bwrap")
	fs.StringVar(&o.bwrapPath, "bwrap", "bwrap", "path of the bubblewrap binary")
	fs.StringVar(&o.nsjailPath, "nsjail", "", "path of the nsjail binary (default: nsjail on PATH)")
	fs.StringVar(&o.nsjailConfig, "nsjail-config", "nsjail.cfg", "the nsjail policy file")
	fs.StringVar(&o.cgroup, "cgroup", "auto", "per-sandbox cgroup v2 (memory.max, pids.max, no swap): auto (where the host delegates a writable cgroup v2 subtree), required (refuse to start without one) or off")
	fs.Var(&o.roPaths, "ro-paths", "comma-separated host paths every jail shows read-only, besides the defaults (Python, numpy, pandas, matplotlib); repeatable")
	// Every default below comes from its package's DefaultConfig.
	o.runner, o.pool, o.server = runner.DefaultConfig(), pool.DefaultConfig(), server.DefaultConfig()
	rd, sd := o.runner, o.server
	fs.StringVar(&o.runner.Python, "python", rd.Python, "interpreter run inside the jail")
	preload := fs.String("preload", strings.Join(rd.Preload, ","), "comma-separated modules every sandbox imports before it is ready")
	policy := fs.String("policy", "seed", "validation before any script code runs: seed (the original service's dangerous import and call blocking), none (syntax and main only), or a JSON policy file")
	deny := fs.String("deny-imports", "", "comma-separated top-level modules scripts may not import (defence in depth; the jail is the boundary)")
	fs.BoolVar(&o.runner.Prewarm, "prewarm", rd.Prewarm, "fork mode: each sandbox runs a fixed numpy/pandas script before it is ready, so requests do not pay its first-run and copy-on-write costs (false: faster to build, slower to answer)")
	fs.IntVar(&o.runner.ZygoteMaxForks, "zygote-max-forks", rd.ZygoteMaxForks, "fork mode: a fresh zygote (new address-space layout and hash seed) takes over after this many sandboxes")
	fs.DurationVar(&o.runner.ZygoteMaxAge, "zygote-max-age", rd.ZygoteMaxAge, "fork mode: a fresh zygote takes over after this long")
	fs.IntVar(&o.runner.Zygotes, "zygotes", rd.Zygotes, "fork mode: zygotes serving at once (sandboxes are cloned in parallel, one per zygote)")
	fs.DurationVar(&o.runner.StartTimeout, "start-timeout", rd.StartTimeout, "how long a new sandbox may take to be ready")
	tmpMB := fs.Int64("tmp-mb", rd.TmpBytes>>20, "size of each sandbox's private scratch tmpfs, which holds its /tmp and /dev/shm together, MiB")
	uid := fs.Uint("sandbox-uid", uint(rd.SandboxUID), "host uid the jail runs as when the server runs as root (never 0)")
	gid := fs.Uint("sandbox-gid", uint(rd.SandboxGID), "host gid the jail runs as when the server runs as root (never 0)")

	fs.IntVar(&o.pool.Warm, "warm", o.pool.Warm, "started sandboxes kept waiting for requests")
	fs.IntVar(&o.pool.MaxBusy, "max-busy", 0, "scripts running at once (0: 2 x CPUs)")
	fs.IntVar(&o.pool.MaxWaiting, "max-waiting", 0, "requests that may wait for a sandbox before 503 (0: 64 x max-busy)")
	fs.DurationVar(&o.pool.AcquireTimeout, "acquire-timeout", o.pool.AcquireTimeout, "longest wait for a sandbox before 503 overloaded")
	fs.IntVar(&o.pool.BuildConcurrency, "build-concurrency", 0, "sandboxes built at once in the background (0: CPUs)")

	fs.IntVar(&o.server.MaxScriptBytes, "max-script-bytes", sd.MaxScriptBytes, "cap on the script")
	fs.IntVar(&o.server.MaxBodyBytes, "max-body-bytes", sd.MaxBodyBytes, "cap on the request body (413 above)")
	fs.Int64Var(&o.server.MaxBodyBytesInFlight, "max-body-bytes-in-flight", sd.MaxBodyBytesInFlight, "cap on the request body bytes held at once across requests, from the first byte read until the answer is made; a request that cannot get its share within half of the read timeout is 503 overloaded (at least --max-body-bytes)")
	fs.IntVar(&o.server.MaxAnswerBytes, "max-answer-bytes", sd.MaxAnswerBytes, "cap on an answer as a whole, counted as encoded (result or results, output, files, every batch item); over it the answer is 422 output_limit with stdout and stderr kept, cut to fit (at least 1 MiB)")
	fs.Int64Var(&o.server.MaxAnswerBytesInFlight, "max-answer-bytes-in-flight", sd.MaxAnswerBytesInFlight, "cap on the answer bytes held at once across requests, from their encoding until they are written to the client; an answer that finds no room is 503 overloaded (at least --max-answer-bytes)")
	fs.IntVar(&o.server.MaxConnections, "max-connections", 0, "connections open at once; at the cap a new one takes the place of the longest idle connection that made no valid request, else is answered 503 and closed (0: half of what the descriptor limit leaves after the pool's own descriptors, at most 10000)")
	fs.IntVar(&o.server.MaxBatch, "max-batch", sd.MaxBatch, "cap on the elements of \"inputs\" (a batch)")
	fs.DurationVar(&o.server.MaxTimeout, "max-timeout", sd.MaxTimeout, "wall-clock limit: default and maximum of timeout_ms")
	fs.Int64Var(&o.server.MaxMemoryMB, "max-memory-mb", sd.MaxMemoryMB, "memory a script may use on top of what its sandbox holds when it starts, MiB: default and maximum of memory_mb (at least 16)")
	limits := &o.runner.Limits
	fs.DurationVar(&limits.CPUTime, "cpu-time", rd.Limits.CPUTime, "CPU-time limit of a script")
	fs.Int64Var(&limits.Processes, "max-processes", rd.Limits.Processes, "processes and threads in one sandbox, its supervisor included")
	fs.Int64Var(&limits.OpenFiles, "max-open-files", rd.Limits.OpenFiles, "open descriptors in one sandbox")
	fs.Int64Var(&limits.FileSizeBytes, "max-file-bytes", rd.Limits.FileSizeBytes, "largest file a script may write")
	fs.IntVar(&limits.OutputBytes, "max-output-bytes", rd.Limits.OutputBytes, "cap on stdout and on stderr, each")
	fs.IntVar(&limits.ResultBytes, "max-result-bytes", rd.Limits.ResultBytes, "cap on the result as encoded for the answer (JSON text, or msgpack bytes for a msgpack caller)")
	fs.IntVar(&limits.MaxFiles, "max-files", rd.Limits.MaxFiles, "cap on the count of a request's \"files\", and of the files a script leaves in /tmp/output")
	fs.IntVar(&limits.FilesBytes, "max-files-bytes", rd.Limits.FilesBytes, "cap on the bytes of a request's \"files\" together, and of the files a script leaves in /tmp/output")
	fs.StringVar(&o.server.AuthToken, "auth-token", "", "bearer token required on /execute and /metrics (empty: no auth); AUTH_TOKEN sets it too")
	// AUTH_TOKEN is assigned, not made the flag's default, so --help
	// never prints the secret as a default value.
	o.server.AuthToken = getenv("AUTH_TOKEN")
	// Every flag can come from the environment (PYEXEC_<FLAG>); the command
	// line is applied after, so it wins. --help names each variable.
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + envName(f.Name) + ")" })
	// --version has no variable: one left set in a deployment's
	// environment would make every start print the version and exit.
	showVersion := fs.Bool("version", false, "print the version and exit")
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return
		}
		if value := getenv(envName(f.Name)); value != "" && envErr == nil {
			if err := fs.Set(f.Name, value); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), value, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	// A list named on the command line replaces the variable's, as any
	// other flag's value does, rather than adding to it.
	o.roPaths.replaceOnSet = true
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *showVersion {
		fmt.Fprintln(out, "pyexecd", version)
		return o, errVersionShown
	}
	if o.pool.Warm < 1 {
		return o, fmt.Errorf("--warm must be at least 1 (got %d): every request needs a started sandbox", o.pool.Warm)
	}
	if o.pool.MaxBusy < 0 || o.pool.MaxWaiting < 0 || o.pool.BuildConcurrency < 0 {
		return o, errors.New("--max-busy, --max-waiting and --build-concurrency must not be negative (0 derives them from the CPUs)")
	}
	if o.server.MaxConnections < 0 {
		return o, fmt.Errorf("--max-connections must be at least 0 (got %d)", o.server.MaxConnections)
	}
	if o.server.MaxConnections == 0 {
		o.server.MaxConnections = server.MaxConnectionsFor(poolDescriptors(o))
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.mode != string(runner.ModeFork) && o.mode != string(runner.ModeExec) {
		return o, fmt.Errorf("--mode %q is not supported; use fork or exec", o.mode)
	}
	o.runner.Mode = runner.Mode(o.mode)
	if o.cgroup != "auto" && o.cgroup != "required" && o.cgroup != "off" {
		return o, fmt.Errorf("--cgroup %q is not supported; use auto, required or off", o.cgroup)
	}
	if *uid == 0 || *gid == 0 {
		return o, errors.New("--sandbox-uid and --sandbox-gid must not be 0: sandboxes never run as host root")
	}
	o.runner.SandboxUID, o.runner.SandboxGID = uint32(*uid), uint32(*gid)
	o.runner.TmpBytes = *tmpMB << 20
	if o.runner.ZygoteMaxForks < 1 || o.runner.ZygoteMaxAge <= 0 || o.runner.Zygotes < 1 {
		return o, errors.New("--zygotes and --zygote-max-forks must be at least 1 and --zygote-max-age positive")
	}
	if minMB := runner.MinMemoryBytes >> 20; o.server.MaxMemoryMB < minMB {
		return o, fmt.Errorf("--max-memory-mb must be at least %d (got %d)", minMB, o.server.MaxMemoryMB)
	}
	// The server's two per-request maxima are the runner's limits too.
	limits.Timeout, limits.MemoryBytes = o.server.MaxTimeout, o.server.MaxMemoryMB<<20
	// The request's files must fit where the sandbox writes them: its
	// scratch tmpfs of --tmp-mb and 4096 inodes (a file may need 8
	// directories), each file rounded up to whole pages. Unless the
	// operator set it, the byte cap shrinks to half of what a smaller
	// --tmp-mb leaves, keeping the rest for the script.
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if room := o.runner.TmpBytes - int64(limits.MaxFiles)*4096; !explicit["max-files-bytes"] && int64(limits.FilesBytes) > room {
		limits.FilesBytes = int(max(room/2, 0))
	}
	if limits.MaxFiles < 1 || limits.MaxFiles > maxFilesCap || limits.FilesBytes < 1 ||
		int64(limits.FilesBytes)+int64(limits.MaxFiles)*4096 > o.runner.TmpBytes {
		return o, fmt.Errorf("--max-files must be 1 to %d, and --max-files-bytes at least 1 and, with 4 KiB per file, at most --tmp-mb (%d MiB): a request's files are written to the sandbox's /tmp", maxFilesCap, o.runner.TmpBytes>>20)
	}
	// The sandbox reads one execute frame of at most 64 MiB, and the frame
	// is at most the body (base64 decodes smaller).
	if o.server.MaxBodyBytes > maxBodyCap {
		return o, fmt.Errorf("--max-body-bytes must be at most %d", maxBodyCap)
	}
	if o.server.MaxBodyBytesInFlight < int64(o.server.MaxBodyBytes) {
		return o, fmt.Errorf("--max-body-bytes-in-flight (%d) must be at least --max-body-bytes (%d): a request of the largest body could never be read", o.server.MaxBodyBytesInFlight, o.server.MaxBodyBytes)
	}
	if o.server.MaxAnswerBytes < minAnswerBytes || o.server.MaxAnswerBytesInFlight < int64(o.server.MaxAnswerBytes) {
		return o, fmt.Errorf("--max-answer-bytes (%d) must be at least %d (room for any error with its traceback), and --max-answer-bytes-in-flight (%d) at least --max-answer-bytes", o.server.MaxAnswerBytes, minAnswerBytes, o.server.MaxAnswerBytesInFlight)
	}
	o.server.MaxFiles, o.server.MaxFilesBytes, o.server.MaxFileBytes = limits.MaxFiles, limits.FilesBytes, limits.FileSizeBytes
	p, err := runner.LoadPolicy(*policy)
	if err != nil {
		return o, err
	}
	o.runner.Policy = p
	o.server.Policy, o.server.PolicyRefuses = p.Name, p.Refuses()
	o.runner.Preload = splitList(*preload)
	o.runner.DenyImports = splitList(*deny)
	o.server.Mode, o.server.Version = o.mode, version
	return o, nil
}

// minAnswerBytes is the least --max-answer-bytes: an error with the
// longest message and traceback the runner passes on, escaped, fits.
const minAnswerBytes = 1 << 20

// maxFilesCap keeps a request's files, each in up to 8 directories,
// within the 4096 inodes of a sandbox's scratch tmpfs.
const maxFilesCap = 400

// maxBodyCap keeps the execute frame under the 64 MiB the sandbox reads
// (python/pyexec/protocol.py, MAX_INBOUND_FRAME), with room for the
// envelope.
const maxBodyCap = 63 << 20

// sandboxCgroups sets up a cgroup v2 group per sandbox where the host
// delegates a subtree (mode auto or required), and says why not otherwise.
// Nothing is written on a host that does not: its cgroups are its own.
func sandboxCgroups(mode, mount string, logger zerolog.Logger) (*cgroupv2.Tree, error) {
	if mode == "off" {
		return nil, nil
	}
	dir, err := cgroupv2.Detect(mount)
	if err == nil {
		var tree *cgroupv2.Tree
		if tree, err = cgroupv2.Setup(dir); err == nil {
			logger.Info().Str("cgroup", tree.Dir()).Msg("memory accounting: a cgroup v2 group per sandbox")
			return tree, nil
		}
	}
	if mode == "required" {
		return nil, fmt.Errorf("refusing to start: --cgroup required, but %w", err)
	}
	logger.Info().Str("reason", err.Error()).
		Msg("memory accounting: rlimits only (no per-sandbox cgroup); the README's security section gives the bound")
	return nil, nil
}

// zygoteBytes and warmSandboxBytes are generous figures for what a zygote
// (about 70 MB resident, 94 with matplotlib) and an idle warm sandbox
// (about 6 MB in fork mode, 48 MB in exec mode) hold.
const (
	zygoteBytes      = 128 << 20
	warmSandboxBytes = 64 << 20
)

// fitMemory checks that --max-busy running sandboxes, each at the most it
// can hold (runner.SandboxMemoryBound), fit in the host's memory beside
// the zygotes (one more while one rotates) and the warm sandboxes: an
// explicit --max-busy that does not is refused, the default one lowered
// to what fits, and either way the figures are logged.
func fitMemory(o *options, logger zerolog.Logger) error {
	available, source, err := runner.HostMemory()
	if err != nil {
		logger.Warn().Err(err).Msg("cannot check --max-busy against the host's memory")
		return nil
	}
	busy, explicit := o.pool.MaxBusy, o.pool.MaxBusy > 0
	if !explicit {
		busy = 2 * runtime.GOMAXPROCS(0)
	}
	perSandbox := runner.SandboxMemoryBound(o.runner.Limits, o.runner.Cgroups != nil, runtime.NumCPU())
	fixed := int64(o.runner.Zygotes+1)*zygoteBytes + int64(o.pool.Warm)*warmSandboxBytes
	fitted, err := runner.FitMaxBusy(busy, explicit, perSandbox, fixed, available)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	event, msg := logger.Info(), "memory: --max-busy running sandboxes at their bound fit the host's memory"
	if fitted != busy {
		event, msg = logger.Warn().Int("max_busy_default", busy), "memory: --max-busy lowered from its default so that its running sandboxes fit the host's memory"
	}
	event.Int("max_busy", fitted).Int64("sandbox_bound_mib", perSandbox>>20).Int64("fixed_mib", fixed>>20).
		Int64("available_mib", available>>20).Str("available_from", source).
		Msg(msg)
	o.pool.MaxBusy = fitted
	return nil
}

// isLoopback says whether host (an IP literal) is a loopback address.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func envOr(getenv func(string) string, key, fallback string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return fallback
}

// pathList is a repeatable flag of comma-separated paths.
type pathList struct {
	paths []string
	// replaceOnSet makes the next Set drop what came before (the
	// environment's value, once the command line is parsed).
	replaceOnSet bool
}

func (l *pathList) String() string { return strings.Join(l.paths, ",") }

func (l *pathList) Set(value string) error {
	if l.replaceOnSet {
		l.paths, l.replaceOnSet = nil, false
	}
	l.paths = append(l.paths, splitList(value)...)
	return nil
}

func splitList(s string) []string {
	out := []string{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// run starts the service and blocks until ctx ends, then shuts down in
// order: stop accepting, finish requests in flight, destroy the pool.
// listening, when not nil, is told the bound address.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer, listening func(net.Addr)) error {
	o, err := parseOptions(args, getenv, logOut)
	if err != nil {
		return err
	}
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		return fmt.Errorf("bad log level: %w", err)
	}
	logger := zerolog.New(logOut).Level(level).With().Timestamp().Logger()

	readOnly, skipped, err := runner.ResolveReadOnlyPaths(runner.DefaultReadOnlyPaths(o.runner.Python), o.roPaths.paths)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	for _, p := range skipped {
		logger.Warn().Str("path", p).Msg("--ro-paths names a path that does not exist here; sandboxes will not see it")
	}
	jail, err := runner.ChooseJail(runner.JailOptions{
		Name: o.jail, NsjailPath: o.nsjailPath, NsjailConfig: o.nsjailConfig, BwrapPath: o.bwrapPath,
		ReadOnlyPaths: readOnly, Python: o.runner.Python,
	})
	if err != nil {
		return fmt.Errorf("refusing to start without a jail: %w", err)
	}
	o.runner.Jail = jail
	o.server.Jail = jail.Name()
	o.runner.Logger = logger
	if o.runner.Cgroups, err = sandboxCgroups(o.cgroup, cgroupv2.DefaultMount, logger); err != nil {
		return err
	}
	if err := fitMemory(&o, logger); err != nil {
		return err
	}
	r, err := runner.New(o.runner)
	if err != nil {
		return err
	}
	o.server.MemoryAccounting = r.MemoryAccounting()
	defer r.Close()
	probeCtx, cancelProbe := context.WithTimeout(ctx, o.runner.StartTimeout+5*time.Second)
	err = r.Probe(probeCtx)
	cancelProbe()
	if err != nil {
		return fmt.Errorf("refusing to start: the jail does not work here: %w", err)
	}

	o.pool.New = func(ctx context.Context, urgent bool) (pool.Sandbox, error) {
		return r.Start(ctx, runner.StartOptions{SkipPrewarm: urgent})
	}
	o.pool.Logger = logger
	// One registry: the server's series, the pool's builds, the runner's
	// zygotes and the process's own, all on /metrics.
	reg := server.NewRegistry()
	buildSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pyexec_sandbox_build_seconds",
		Help: "Time each sandbox took to build; its count is the sandboxes built.", Buckets: server.DurationBuckets(o.runner.StartTimeout)})
	buildFailures := prometheus.NewCounter(prometheus.CounterOpts{Name: "pyexec_sandbox_build_failures_total",
		Help: "Sandbox builds that failed."})
	reg.MustRegister(buildSeconds, buildFailures,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_zygote_restarts_total",
			Help: "Zygotes that were replaced before their time (they died or failed)."},
			func() float64 { return float64(r.ZygoteRestarts()) }))
	o.pool.OnBuild = func(took time.Duration, err error) {
		if err != nil {
			buildFailures.Inc()
			return
		}
		buildSeconds.Observe(took.Seconds())
	}
	o.server.Metrics = reg
	o.server.QueueTimeout = o.pool.AcquireTimeout
	p, err := pool.New(o.pool)
	if err != nil {
		return err
	}
	defer p.Close()

	o.server.Logger = logger
	srv := server.New(o.server, p)
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", o.addr, err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); o.server.AuthToken == "" && !isLoopback(host) {
		logger.Warn().Str("addr", ln.Addr().String()).
			Msg("LISTENING BEYOND LOOPBACK WITHOUT A TOKEN: anyone who reaches this address can run code here; set --auth-token (PYEXEC_AUTH_TOKEN)")
	}
	logger.Info().Str("addr", ln.Addr().String()).Str("jail", jail.Name()).Str("mode", o.mode).
		Int("warm", o.pool.Warm).Str("version", version).Msg("serving")

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}
	logger.Info().Msg("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn().Err(err).Msg("requests still in flight at shutdown were cancelled")
	}
	if err := <-serveErr; err != nil {
		return fmt.Errorf("server stopped: %w", err)
	}
	return nil
}

// poolDescriptors is a generous count of the descriptors the server holds
// besides its connections: 8 for each sandbox it may hold at once (its
// channel, output pipes, pidfd and, while it is made, the other ends),
// busy, warm or being built, 16 for each zygote (counting one retiring
// while its successor serves), and 64 for the rest (the listener, logs,
// the runtime's own).
func poolDescriptors(o options) int {
	busy := o.pool.MaxBusy
	if busy == 0 {
		busy = 2 * runtime.NumCPU()
	}
	building := o.pool.BuildConcurrency
	if building == 0 {
		building = runtime.NumCPU()
	}
	return 64 + 8*(busy+o.pool.Warm+building) + 16*o.runner.Zygotes
}
