// Command bench is the load-benchmark harness of pyexec. It drives a
// running server (-url) or starts the repository's own server once per
// -config, so configurations are compared side by side in one run on one
// machine. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := runBench(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		// --help printed the usage; asking for it is not a failure.
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, "; ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// options are the parsed flags.
type options struct {
	url       string
	token     string
	configs   []serverConfig
	scenarios []string
	clients   []int
	rates     []float64
	load      loadSpec
	jsonOut   bool
	plot      string
	seed      uint64
	// ceilingDur is how long each fork-ceiling loop runs (0: not measured).
	ceilingDur  time.Duration
	ceilingOnly bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configs multiFlag
	fs.StringVar(&o.url, "url", "", "drive this running server (e.g. http://127.0.0.1:8080) instead of starting one")
	fs.StringVar(&o.token, "token", os.Getenv("AUTH_TOKEN"), "bearer token for the server (env AUTH_TOKEN)")
	fs.Var(&configs, "config", `start the repository's server with these flags, as name=flags (repeat to compare), e.g. -config "fork=--mode fork --warm 8"; name@binary=flags starts that binary instead (another commit's build)`)
	scenarios := fs.String("scenario", "hello", "comma-separated scenarios: hello, numpy, pandas, cpu, sleep, mix, syntax_error, exception, timeout, or file:PATH (JSON)")
	clients := fs.String("c", "1", "comma-separated client counts (closed loop), or the in-flight cap with -rate")
	rates := fs.String("rate", "", "comma-separated arrival rates in requests/s: open loop instead of closed")
	fs.DurationVar(&o.load.Warmup, "warmup", 2*time.Second, "load sent before measuring, not counted")
	fs.DurationVar(&o.load.Duration, "d", 10*time.Second, "measured duration of each run")
	fs.IntVar(&o.load.Requests, "n", 0, "stop each run after this many measured requests (0: only -d)")
	fs.BoolVar(&o.jsonOut, "json", false, "print JSON instead of the table")
	fs.StringVar(&o.plot, "plot", "", "write a latency-percentile plot (SVG) to this file")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the scenario mix")
	fs.DurationVar(&o.ceilingDur, "ceiling-d", 5*time.Second, "how long the fork-ceiling measurement forks at the start of the run (0: do not measure it)")
	fs.BoolVar(&o.ceilingOnly, "ceiling-only", false, "measure the machine's fork ceiling and print only that")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.ceilingDur < 0 {
		return o, errors.New("-ceiling-d must not be negative")
	}
	if o.ceilingOnly {
		if o.ceilingDur == 0 {
			return o, errors.New("-ceiling-only needs a positive -ceiling-d")
		}
		return o, nil
	}
	if (o.url == "") == (len(configs) == 0) {
		return o, errors.New("give either -url or at least one -config")
	}
	for _, c := range configs {
		cfg, err := parseConfig(c)
		if err != nil {
			return o, err
		}
		o.configs = append(o.configs, cfg)
	}
	o.scenarios = strings.Split(*scenarios, ",")
	for _, c := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-c: %q is not a positive count", c)
		}
		o.clients = append(o.clients, n)
	}
	if *rates != "" {
		for _, r := range strings.Split(*rates, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
			if err != nil || v <= 0 {
				return o, fmt.Errorf("-rate: %q is not a positive rate", r)
			}
			o.rates = append(o.rates, v)
		}
	}
	if o.load.Duration <= 0 {
		return o, errors.New("-d must be positive")
	}
	return o, nil
}

// loadPoints lists every load point of the run.
func (o *options) loadPoints() []loadSpec {
	var points []loadSpec
	for _, c := range o.clients {
		if len(o.rates) == 0 {
			l := o.load
			l.Clients = c
			points = append(points, l)
			continue
		}
		for _, r := range o.rates {
			l := o.load
			l.Clients, l.Rate = c, r
			points = append(points, l)
		}
	}
	return points
}

func scenarioByName(name string) (*scenario, error) {
	if path, ok := strings.CutPrefix(name, "file:"); ok {
		return loadScenario(path)
	}
	return builtinScenario(strings.TrimSpace(name))
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// The fork ceiling is measured first, before any server runs, so it
	// competes with nothing this harness started.
	var ceiling *forkCeiling
	if o.ceilingDur > 0 {
		fmt.Fprintf(stderr, "measuring the fork ceiling (%v, then %v with %d processes; with the zygote's allocator, then the plain one)\n", o.ceilingDur, o.ceilingDur, runtime.NumCPU())
		if ceiling, err = measureCeiling(ctx, o.ceilingDur); err != nil {
			return fmt.Errorf("%w (-ceiling-d 0 skips it)", err)
		}
		fmt.Fprintf(stderr, "%s\n", ceiling)
	}
	if o.ceilingOnly {
		if o.jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ceiling)
		}
		_, err := fmt.Fprintf(stdout, "%s\n", ceiling)
		return err
	}
	var scenarios []*scenario
	for _, name := range o.scenarios {
		sc, err := scenarioByName(name)
		if err != nil {
			return err
		}
		scenarios = append(scenarios, sc)
	}

	targets := []serverConfig{{Name: "server", Args: nil}}
	var bin string
	adopter := 0 // this process, once it is a child subreaper
	if o.url == "" {
		dir, err := os.MkdirTemp("", "pyexec-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = buildServer(ctx, dir); err != nil {
			return err
		}
		targets = o.configs
		// Descendants of a server whose parent dies (a jail killed at a
		// zygote rotation) are reparented here instead of to init, so the
		// CPU accounting keeps them.
		if err := becomeSubreaper(); err != nil {
			fmt.Fprintf(stderr, "cannot become a child subreaper (%v): CPU of orphaned descendants is lost\n", err)
		} else {
			adopter = os.Getpid()
		}
	}

	var results []*result
	maxClients := 1
	for _, c := range o.clients {
		maxClients = max(maxClients, c)
	}
	// Configurations take turns for each scenario and load point, so slow
	// drifts of a shared machine hit all of them alike.
	servers := map[string]*startedServer{}
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for _, sc := range scenarios {
		for _, load := range o.loadPoints() {
			for _, cfg := range targets {
				url, pid := o.url, 0
				if bin != "" {
					s := servers[cfg.Name]
					if s == nil {
						fmt.Fprintf(stderr, "starting %s: %s\n", cfg.Name, strings.Join(cfg.Args, " "))
						if s, err = startServer(ctx, bin, cfg); err != nil {
							return err
						}
						servers[cfg.Name] = s
					}
					url, pid = s.url, s.cmd.Process.Pid
				}
				// Every started server must be idle with a full pool, so
				// one configuration's refill does not slow another's run.
				for _, other := range servers {
					if err := other.waitSettled(ctx); err != nil {
						return err
					}
				}
				var meter *cpuMeter
				if pid > 0 {
					meter = &cpuMeter{pid: pid, adopter: adopter}
					for _, other := range servers {
						meter.started = append(meter.started, other.cmd.Process.Pid)
					}
				}
				r, err := runOne(ctx, newTarget(url, o.token, maxClients), sc, load, o.seed, meter, stderr)
				if adopter > 0 {
					reapOrphans(adopter, meter.started)
				}
				if err != nil {
					return fmt.Errorf("%s, %s: %w", cfg.Name, sc.Name, err)
				}
				r.setCeiling(ceiling)
				r.Config, r.ServerArgs = cfg.Name, strings.Join(cfg.Args, " ")
				if bin == "" {
					r.ServerArgs = "running at " + url
				}
				fmt.Fprintf(stderr, "%s %s %s: %d requests, %.1f ok/s (%s%% of the fork ceiling), p50 %.2f ms, %s CPU ms/request\n",
					r.Config, r.Scenario, r.loadLabel(), r.Requests, r.Throughput, strings.TrimSpace(optional(r.CeilingPct, 0, "%.1f")),
					r.LatencyMS["p50"], strings.TrimSpace(optional(r.CPUMSPerReq, 0, "%.2f")))
				results = append(results, r)
			}
		}
	}

	if o.jsonOut {
		if err := writeJSON(stdout, results); err != nil {
			return err
		}
	} else {
		writeTable(stdout, results)
	}
	if o.plot != "" {
		f, err := os.Create(o.plot)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := writeSVG(f, results); err != nil {
			return err
		}
	}
	return nil
}

// runOne measures one scenario at one load point against one server. With
// a meter (a server this harness started) it also measures the CPU the
// server and its descendants used during the measured part.
func runOne(ctx context.Context, t *target, sc *scenario, load loadSpec, seed uint64, meter *cpuMeter, stderr io.Writer) (*result, error) {
	before, _ := fetchHealth(ctx, t.url)
	var w window
	if meter != nil {
		w = meter
	}
	samples, elapsed := run(ctx, t, sc, load, seed, w)
	after, _ := fetchHealth(ctx, t.url)
	r := summarize(samples, elapsed)
	if meter != nil {
		f, err := meter.figures()
		if err != nil {
			fmt.Fprintf(stderr, "no CPU figure for this run: %v\n", err)
		}
		r.setCPU(f)
	}
	r.Scenario, r.Clients, r.Rate = sc.Name, load.Clients, load.Rate
	r.LoadModel = "closed"
	if load.openLoop() {
		r.LoadModel = "open"
	}
	r.Server = serverDelta(before, after)
	if !r.answered() {
		return nil, fmt.Errorf("the server answered none of %d requests: refusing to report this run", r.Requests)
	}
	return r, nil
}
