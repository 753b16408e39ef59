package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
	"github.com/sandbox-exec/pyexec/server"
)

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
	runtimes        string
	runtimeDir      string
	runtimeWarm     string
	// preloadSet says --preload was given: it then wins over the
	// runtimes' own preload lists.
	preloadSet bool
	// sandboxIDsSet says --sandbox-ids was given: a range this server's
	// user namespace does not map is then an error, not a fallback.
	sandboxIDsSet bool
	pool          pool.Config
	server        server.Config
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
	fs.StringVar(&o.runtimes, "runtimes", hostRuntime, "comma-separated runtimes sandboxes run in, the first the default (a request names one with \"runtime\"): names built by scripts/build-runtime.sh under --runtime-dir, or host (the host's /usr/bin/python3 and its libraries)")
	fs.StringVar(&o.runtimeDir, "runtime-dir", "/var/cache/pyexec/runtimes", "where scripts/build-runtime.sh leaves the runtimes")
	fs.StringVar(&o.runtimeWarm, "runtime-warm", "", "split of the warm sandboxes between runtimes: NAME=N pairs, comma-separated; runtimes not named share what is left of --warm (the default runtime the remainder), at least 1 each")
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
	sandboxIDs := fs.String("sandbox-ids", rd.SandboxIDs.String(), "FIRST:COUNT: host ids no user or group of the host holds, from which each sandbox gets a uid and gid of its own while it lives, so that the kernel's per-user counters (descriptors in flight, pipe buffers) are per sandbox; split between runtimes, 256 per zygote; root and bwrap only; off: every sandbox runs as --sandbox-uid")

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
	fs.IntVar(&o.server.MaxConnections, "max-connections", 0, "connections open at once; at the cap a new one takes the place of the longest idle connection that made no valid request, else of the longest idle one that did, else is answered 503 and closed (0: half of what the descriptor limit leaves after the pool's own descriptors, at most 10000)")
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
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.cgroup != "auto" && o.cgroup != "required" && o.cgroup != "off" {
		return o, fmt.Errorf("--cgroup %q is not supported; use auto, required or off", o.cgroup)
	}
	o.runner.Mode = runner.Mode(o.mode)
	o.runner.SandboxUID, o.runner.SandboxGID = uint32(*uid), uint32(*gid)
	ids, err := runner.ParseIDRange(*sandboxIDs)
	if err != nil {
		return o, err
	}
	o.runner.SandboxIDs = ids
	o.runner.TmpBytes = *tmpMB << 20
	// The server's two per-request maxima are the runner's limits too.
	limits.Timeout, limits.MemoryBytes = o.server.MaxTimeout, o.server.MaxMemoryMB<<20
	// Unless the operator set it, the files' byte cap shrinks to fit a
	// smaller --tmp-mb.
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	o.preloadSet = explicit["preload"] || getenv(envName("preload")) != ""
	o.sandboxIDsSet = explicit["sandbox-ids"] || getenv(envName("sandbox-ids")) != ""
	if !explicit["max-files-bytes"] {
		o.runner.FitFilesBytes()
	}
	for _, validate := range []func() error{o.runner.Validate, o.pool.Validate, o.server.Validate} {
		if err := validate(); err != nil {
			return o, err
		}
	}
	if o.server.MaxConnections == 0 {
		o.server.MaxConnections = server.MaxConnectionsFor(poolDescriptors(o))
	}
	o.server.Limits = o.runner.Limits
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

// poolDescriptors is a generous count of the descriptors the server holds
// besides its connections: 8 for each sandbox it may hold at once (its
// channel, output pipes, pidfd and, while it is made, the other ends),
// busy, warm or being built, 16 for each zygote (counting one retiring
// while its successor serves), and 64 for the rest (the listener, logs,
// the runtime's own). Each runtime has a pool that builds and zygotes of
// its own; busy and warm sandboxes are counted across all of them. The
// pool says what its zero sizes come to.
func poolDescriptors(o options) int {
	p := o.pool.WithDefaults()
	runtimes := max(len(splitList(o.runtimes)), 1)
	return 64 + 8*(p.MaxBusy+p.Warm+runtimes*p.BuildConcurrency) + 16*runtimes*o.runner.Zygotes
}
