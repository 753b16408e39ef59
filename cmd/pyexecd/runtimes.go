package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
	"github.com/sandbox-exec/pyexec/server"
)

// hostRuntime is the runtime name of the host's own Python: its /usr
// paths bound as before runtimes existed (runner.DefaultReadOnlyPaths).
const hostRuntime = "host"

// runtimeSpec is one runtime the server runs: where its root is and what
// its zygotes preload.
type runtimeSpec struct {
	// root is the runtime's tree, links resolved (a rebuild moves the
	// runtime's link, not the tree a running server uses); empty for
	// the host runtime.
	root string
	// preload is the runtime.conf's preload list; nil: --preload.
	preload []string
	info    server.Runtime
}

var runtimeName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)

// loadRuntime finds the runtime name as scripts/build-runtime.sh left it
// under dir: dir/name/root, runtime.conf and versions.
func loadRuntime(dir, name, python string) (runtimeSpec, error) {
	spec := runtimeSpec{info: server.Runtime{Name: name}}
	if name == hostRuntime {
		return spec, hostVersions(python, &spec.info)
	}
	if !runtimeName.MatchString(name) {
		return spec, fmt.Errorf("runtime name %q: lower-case letters, digits, '.' and '-' only", name)
	}
	base, err := filepath.EvalSymlinks(filepath.Join(dir, name))
	if err != nil {
		return spec, fmt.Errorf("runtime %s is not built in %s (build it with: make runtimes, or scripts/build-runtime.sh %s): %w", name, dir, name, err)
	}
	spec.root = filepath.Join(base, "root")
	versions, err := readKeyValues(filepath.Join(base, "versions"), "=")
	if err != nil {
		return spec, fmt.Errorf("runtime %s: %w (rebuild it with scripts/build-runtime.sh %s)", name, err, name)
	}
	spec.info.Python, spec.info.Numpy, spec.info.Pandas = versions["python"][0], first(versions["numpy"]), first(versions["pandas"])
	conf, err := readKeyValues(filepath.Join(base, "runtime.conf"), "=")
	if err != nil {
		return spec, fmt.Errorf("runtime %s: %w", name, err)
	}
	if pre, ok := conf["preload"]; ok {
		spec.preload = []string{}
		for _, line := range pre {
			spec.preload = append(spec.preload, strings.Fields(line)...)
		}
	}
	return spec, nil
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// readKeyValues reads "key SEP value" lines, # comments and blank lines
// skipped; a key may repeat.
func readKeyValues(path, sep string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, sep)
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not key%svalue", path, line, sep)
		}
		out[strings.TrimSpace(k)] = append(out[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return out, nil
}

// hostVersions asks the host's interpreter for its versions (outside the
// jail: it is the operator's own Python, running our fixed code).
func hostVersions(python string, info *server.Runtime) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-I", "-c", `import platform
print(platform.python_version())
for m in ("numpy", "pandas"):
    try:
        print(__import__(m).__version__)
    except ImportError:
        print("")`).Output()
	if err != nil {
		return fmt.Errorf("cannot ask %s for its version: %w", python, err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	for len(lines) < 3 {
		lines = append(lines, "")
	}
	info.Python, info.Numpy, info.Pandas = lines[0], lines[1], lines[2]
	return nil
}

// warmSplit is --runtime-warm: NAME=N pairs.
func parseWarmSplit(s string, names []string, total int) (map[string]int, error) {
	split := map[string]int{}
	for _, item := range splitList(s) {
		k, v, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("--runtime-warm %q: want NAME=N pairs, N a count", item)
		}
		known := false
		for _, name := range names {
			known = known || name == k
		}
		if !known {
			return nil, fmt.Errorf("--runtime-warm names %q, which is not in --runtimes (%s)", k, strings.Join(names, ","))
		}
		split[k] = n
	}
	// The runtimes not named share what the named ones left of --warm,
	// the default runtime taking the remainder, each at least 1.
	left, rest := total, []string{}
	for _, name := range names {
		if n, ok := split[name]; ok {
			left -= n
		} else {
			rest = append(rest, name)
		}
	}
	for i, name := range rest {
		n := max(left, 0) / len(rest)
		if i == 0 {
			n += max(left, 0) % len(rest)
		}
		split[name] = max(n, 1)
	}
	return split, nil
}

// runtimeRouter is the server's Executor over one pool per runtime: a
// request runs in the pool of its runtime (the server checked the name;
// empty is the first, the default). maxBusy bounds the scripts running
// at once across all of them, as --max-busy does for one pool.
type runtimeRouter struct {
	names   []string
	pools   map[string]*pool.Pool
	busy    *semaphore.Weighted
	maxBusy int
	wait    time.Duration
}

func (r *runtimeRouter) Execute(ctx context.Context, req runner.Request) (runner.Output, pool.Timing, error) {
	name := req.Runtime
	if name == "" {
		name = r.names[0]
	}
	p, ok := r.pools[name]
	if !ok {
		return runner.Output{}, pool.Timing{}, fmt.Errorf("no runtime %q", name)
	}
	if len(r.pools) == 1 {
		return p.Execute(ctx, req)
	}
	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, r.wait)
	err := r.busy.Acquire(waitCtx, 1)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return runner.Output{}, pool.Timing{}, fmt.Errorf("gave up waiting for a running slot: %w", ctx.Err())
		}
		return runner.Output{}, pool.Timing{}, fmt.Errorf("waited %v for a running slot: %w", r.wait, pool.ErrOverloaded)
	}
	defer r.busy.Release(1)
	waited := time.Since(start)
	out, timing, err := p.Execute(ctx, req)
	timing.Queue += waited
	return out, timing, err
}

func (r *runtimeRouter) Ready() bool {
	for _, p := range r.pools {
		if !p.Ready() {
			return false
		}
	}
	return true
}

// Stats adds the pools' figures; MaxBusy is the shared cap.
func (r *runtimeRouter) Stats() pool.Stats {
	var s pool.Stats
	for _, name := range r.names {
		st := r.pools[name].Stats()
		s.Warm += st.Warm
		s.Idle += st.Idle
		s.Building += st.Building
		s.Busy += st.Busy
		s.Waiting += st.Waiting
		s.Created += st.Created
		s.Executed += st.Executed
		s.CreatedUrgent += st.CreatedUrgent
		s.ConsecutiveBuildFailures = max(s.ConsecutiveBuildFailures, st.ConsecutiveBuildFailures)
		if s.LastBuildError == "" && st.LastBuildError != "" {
			s.LastBuildError = name + ": " + st.LastBuildError
		}
	}
	s.MaxBusy = r.maxBusy
	return s
}

var errNoRuntimes = errors.New("--runtimes names no runtime")

// loadRuntimes reads the runtimes --runtimes names, in order (the first is
// the default), each once.
func loadRuntimes(o options) ([]string, []runtimeSpec, error) {
	names := splitList(o.runtimes)
	if len(names) == 0 {
		return nil, nil, errNoRuntimes
	}
	specs := make([]runtimeSpec, len(names))
	for i, name := range names {
		if slices.Contains(names[:i], name) {
			return nil, nil, fmt.Errorf("--runtimes names %s twice", name)
		}
		var err error
		if specs[i], err = loadRuntime(o.runtimeDir, name, o.runner.Python); err != nil {
			return nil, nil, fmt.Errorf("refusing to start: %w", err)
		}
	}
	return names, specs, nil
}

// buildMetrics are the series a runtime's pool counts its builds in.
type buildMetrics struct {
	seconds  prometheus.Histogram
	failures prometheus.Counter
	built    prometheus.Counter
}

// startRuntime makes one runtime's jail and runner, proves the jail works
// (the probe), and starts its pool with warm sandboxes. The runner is
// returned also with an error once made, for the caller to close.
func startRuntime(ctx context.Context, o options, name string, spec runtimeSpec, first bool, warm int,
	ids runner.IDRange, logger zerolog.Logger, m buildMetrics) (*runner.Runner, *pool.Pool, string, error) {
	jailOpts := runner.JailOptions{
		Name: o.jail, NsjailPath: o.nsjailPath, NsjailConfig: o.nsjailConfig, BwrapPath: o.bwrapPath,
		Python: o.runner.Python,
	}
	defaults := runner.DefaultReadOnlyPaths(o.runner.Python)
	if spec.root != "" {
		// The runtime's files, not the host's; the operator's --ro-paths
		// are still host paths.
		var err error
		if jailOpts.Runtime, err = runner.RuntimeBinds(spec.root, o.runner.Python); err != nil {
			return nil, nil, "", fmt.Errorf("refusing to start: %w", err)
		}
		defaults = nil
	}
	readOnly, skipped, err := runner.ResolveReadOnlyPaths(defaults, o.roPaths.paths)
	if err != nil {
		return nil, nil, "", fmt.Errorf("refusing to start: %w", err)
	}
	if first {
		for _, p := range skipped {
			logger.Warn().Str("path", p).Msg("--ro-paths names a path that does not exist here; sandboxes will not see it")
		}
	}
	jailOpts.ReadOnlyPaths = append([]string{}, readOnly...)
	jail, err := runner.ChooseJail(jailOpts)
	if err != nil {
		return nil, nil, "", fmt.Errorf("refusing to start without a jail: %w", err)
	}
	cfg := o.runner
	cfg.Jail, cfg.Logger, cfg.SandboxIDs = jail, logger.With().Str("runtime", name).Logger(), ids
	if spec.preload != nil && !o.preloadSet {
		cfg.Preload = spec.preload
	}
	r, err := runner.New(cfg)
	if err != nil {
		return nil, nil, "", err
	}
	probeCtx, cancelProbe := context.WithTimeout(ctx, o.runner.StartTimeout+5*time.Second)
	err = r.Probe(probeCtx)
	cancelProbe()
	if err != nil {
		return r, nil, "", fmt.Errorf("refusing to start: the jail does not work here (runtime %s): %w", name, err)
	}
	pcfg := o.pool
	pcfg.Warm = warm
	pcfg.New = func(ctx context.Context, urgent bool) (pool.Sandbox, error) {
		return r.Start(ctx, runner.StartOptions{SkipPrewarm: urgent})
	}
	pcfg.Logger = logger.With().Str("runtime", name).Logger()
	pcfg.OnBuild = func(took time.Duration, err error) {
		if err != nil {
			m.failures.Inc()
			return
		}
		m.built.Inc()
		m.seconds.Observe(took.Seconds())
	}
	p, err := pool.New(pcfg)
	if err != nil {
		return r, nil, "", err
	}
	return r, p, jail.Name(), nil
}
