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
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

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
		Msg("memory accounting: rlimits only (no per-sandbox cgroup); docs/security.md gives the bound")
	return nil, nil
}

// isLoopback says whether host (an IP literal) is a loopback address.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

	// One jail, runner and pool per runtime; the first is the default.
	names, specs, err := loadRuntimes(o)
	if err != nil {
		return err
	}
	warmSplit, err := parseWarmSplit(o.runtimeWarm, names, o.pool.Warm)
	if err != nil {
		return err
	}
	if err := fitSandboxIDs(&o, logger); err != nil {
		return err
	}
	// Each runtime's runner hands its own part of --sandbox-ids to its
	// zygotes.
	idSplit := o.runner.SandboxIDs.Split(len(names))
	if o.runner.Cgroups, err = sandboxCgroups(o.cgroup, cgroupv2.DefaultMount, logger); err != nil {
		return err
	}
	totalWarm := 0
	for _, name := range names {
		totalWarm += warmSplit[name]
	}
	if o.pool.MaxBusy, err = o.runner.FitHostMemory(o.pool.WithDefaults().MaxBusy, o.pool.MaxBusy > 0, totalWarm, len(names)); err != nil {
		return err
	}
	// One registry: the server's series, the pool's builds, the runner's
	// zygotes and the process's own, all on /metrics.
	reg := server.NewRegistry()
	buildSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pyexec_sandbox_build_seconds",
		Help: "Time each sandbox took to build; its count is the sandboxes built.", Buckets: server.DurationBuckets(o.runner.StartTimeout)})
	buildFailures := prometheus.NewCounter(prometheus.CounterOpts{Name: "pyexec_sandbox_build_failures_total",
		Help: "Sandbox builds that failed."})
	builtByRuntime := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_runtime_sandboxes_built_total",
		Help: "Sandboxes built, by runtime."}, []string{"runtime"})
	runners := map[string]*runner.Runner{}
	router := &runtimeRouter{names: names, pools: map[string]*pool.Pool{}, maxBusy: o.pool.MaxBusy,
		busy: semaphore.NewWeighted(int64(o.pool.MaxBusy)), wait: o.pool.AcquireTimeout}
	defer func() {
		for _, p := range router.pools {
			p.Close()
		}
		for _, r := range runners {
			r.Close()
		}
	}()
	var jailName string
	for i, name := range names {
		r, p, jail, err := startRuntime(ctx, o, name, specs[i], i == 0, warmSplit[name], idSplit[i], logger, buildMetrics{buildSeconds, buildFailures, builtByRuntime.WithLabelValues(name)})
		if r != nil {
			runners[name] = r
		}
		if err != nil {
			return err
		}
		router.pools[name] = p
		jailName = jail
		o.server.MemoryAccounting = r.MemoryAccounting()
		info := specs[i].info
		info.Warm = warmSplit[name]
		o.server.Runtimes = append(o.server.Runtimes, info)
	}
	o.server.Jail = jailName
	reg.MustRegister(buildSeconds, buildFailures, builtByRuntime,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pyexec_zygote_restarts_total",
			Help: "Zygotes that were replaced before their time (they died or failed)."},
			func() float64 {
				var n int64
				for _, r := range runners {
					n += r.ZygoteRestarts()
				}
				return float64(n)
			}))
	zygoteGauge := func(state string, count func(runner.ZygoteCounts) int) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pyexec_zygotes",
			Help:        "Zygotes (fork mode) by state: serving, starting and successor (a successor being started, and started, ahead of a rotation), retiring (rotated, alive until their last sandbox ends).",
			ConstLabels: prometheus.Labels{"state": state}},
			func() float64 {
				n := 0
				for _, r := range runners {
					n += count(r.Zygotes())
				}
				return float64(n)
			})
	}
	reg.MustRegister(
		zygoteGauge("serving", func(c runner.ZygoteCounts) int { return c.Serving }),
		zygoteGauge("starting", func(c runner.ZygoteCounts) int { return c.Starting }),
		zygoteGauge("successor", func(c runner.ZygoteCounts) int { return c.Successors }),
		zygoteGauge("retiring", func(c runner.ZygoteCounts) int { return c.Retiring }))
	o.server.Metrics = reg
	o.server.QueueTimeout = o.pool.AcquireTimeout

	o.server.Logger = logger
	srv := server.New(o.server, router)
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
	logger.Info().Str("addr", ln.Addr().String()).Str("jail", jailName).Strs("runtimes", names).Str("mode", o.mode).
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

// fitSandboxIDs checks, as root, that this server's own user namespace
// maps --sandbox-ids (in a container's it may map only 65536 ids): if it
// does not, the default range is turned off with a warning, and a range
// the operator gave is refused.
func fitSandboxIDs(o *options, logger zerolog.Logger) error {
	ids := o.runner.SandboxIDs
	if ids.Count == 0 || os.Geteuid() != 0 {
		return nil
	}
	mapped, err := ids.MappedHere()
	if err == nil && mapped {
		return nil
	}
	why := "this server's user namespace does not map them"
	if err != nil {
		why = err.Error()
	}
	if o.sandboxIDsSet {
		return fmt.Errorf("refusing to start: --sandbox-ids %v: %s; give a range of /proc/self/uid_map and gid_map, or off", ids, why)
	}
	logger.Warn().Str("sandbox_ids", ids.String()).Str("why", why).
		Msg("sandbox ids: every sandbox runs as --sandbox-uid (give --sandbox-ids a range this namespace maps; docs/security.md, \"Quotas of the host user\")")
	o.runner.SandboxIDs = runner.IDRange{}
	return nil
}
