package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// reportedPercentiles are the percentiles of the report, in order.
func reportedPercentiles() []float64 { return []float64{50, 90, 99, 99.9} }

// result is the report of one run: one configuration, scenario and load
// point. It says which clients and server produced each figure.
type result struct {
	Config     string             `json:"config"`
	ServerArgs string             `json:"server_args"`
	Scenario   string             `json:"scenario"`
	LoadModel  string             `json:"load_model"` // "closed" or "open"
	Clients    int                `json:"clients"`
	Rate       float64            `json:"rate,omitempty"`
	Seconds    float64            `json:"seconds"`
	Requests   int                `json:"requests"`
	Correct    int                `json:"correct"`
	Errors     int                `json:"errors"` // no answer, or not the expected one
	Throughput float64            `json:"throughput_rps"`
	LatencyMS  map[string]float64 `json:"latency_ms"` // p50, p90, p99, p99.9, max
	ByStatus   map[string]int     `json:"by_status"`
	ByError    map[string]int     `json:"by_error_type"`
	Mismatches []string           `json:"first_mismatches,omitempty"`
	Server     *serverFigures     `json:"server,omitempty"`
	// CPUMSPerReq is the CPU the started server and all its descendants
	// used during the measured part, per answered request (-config only).
	CPUMSPerReq *float64    `json:"cpu_ms_per_req,omitempty"`
	CPU         *cpuFigures `json:"cpu,omitempty"`
	// ServerMSPerReq is the part of CPUMSPerReq the server process's own
	// threads used (cpuFigures.ServerSeconds).
	ServerMSPerReq *float64 `json:"server_cpu_ms_per_req,omitempty"`
	// ForkCeiling is the machine's fork ceiling, measured at the start of
	// this bench run; CeilingPct is ok/s as a percentage of it.
	ForkCeiling *forkCeiling `json:"fork_ceiling,omitempty"`
	CeilingPct  *float64     `json:"ceiling_pct,omitempty"`
	// CPUPerFloor is CPU ms per request as a multiple of the isolation
	// floor (ForkCeiling.Floor): the ceil % column's twin in CPU.
	CPUPerFloor *float64 `json:"cpu_per_floor,omitempty"`

	hist *hdrhistogram.Histogram
}

// serverFigures are what the server's /health said about its pool over the
// run (differences between after and before).
type serverFigures struct {
	Mode             string `json:"mode"`
	Jail             string `json:"jail"`
	SandboxesCreated int64  `json:"sandboxes_created"`
	Executed         int64  `json:"executed"`
	Warm             int    `json:"warm"`
}

// cpuFigures are the CPU the started server and its descendants used
// during the measured part of a run, from /proc/<pid>/stat. See cpu.go.
type cpuFigures struct {
	Seconds        float64 `json:"cpu_seconds"`
	WallSeconds    float64 `json:"wall_seconds"` // between the two readings
	Cores          float64 `json:"cores"`        // cpu_seconds / wall_seconds
	ProcessesStart int     `json:"processes_start"`
	ProcessesEnd   int     `json:"processes_end"`
	Readings       int     `json:"readings"` // of /proc, one per cpuPollInterval
	// Unaccounted counts processes that ended with no reaper in the tree
	// showing their CPU: what they used after their last reading is lost.
	Unaccounted int `json:"unaccounted_exits"`
	// ServerSeconds is the part of Seconds the server process's own
	// threads used (the Go server: HTTP, leases, the runner's reads and
	// spawns), without its jails, zygotes and sandboxes.
	ServerSeconds float64 `json:"server_cpu_seconds"`
}

// latencyHistogram records 1µs to 10 minutes with 3 significant digits.
func latencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// summarize builds a result from samples.
func summarize(samples []sample, elapsed time.Duration) *result {
	r := &result{
		Requests:  len(samples),
		Seconds:   elapsed.Seconds(),
		LatencyMS: map[string]float64{},
		ByStatus:  map[string]int{},
		ByError:   map[string]int{},
		hist:      latencyHistogram(),
	}
	for _, s := range samples {
		us := max(s.latency.Microseconds(), 1)
		_ = r.hist.RecordValue(min(us, r.hist.HighestTrackableValue()))
		status := "no answer"
		if s.status != 0 {
			status = fmt.Sprint(s.status)
		}
		r.ByStatus[status]++
		if s.errorType != "" {
			r.ByError[s.errorType]++
		}
		if s.mismatch != nil {
			r.Errors++
			if len(r.Mismatches) < 5 {
				r.Mismatches = append(r.Mismatches, s.mismatch.Error())
			}
		} else {
			r.Correct++
		}
	}
	if elapsed > 0 {
		r.Throughput = float64(r.Correct) / elapsed.Seconds()
	}
	for _, p := range reportedPercentiles() {
		r.LatencyMS[percentileKey(p)] = float64(r.hist.ValueAtQuantile(p)) / 1000
	}
	r.LatencyMS["max"] = float64(r.hist.Max()) / 1000
	return r
}

func percentileKey(p float64) string { return "p" + strings.TrimSuffix(fmt.Sprintf("%g", p), ".0") }

// answered reports whether the server answered anything at all.
func (r *result) answered() bool { return r.answers() > 0 }

// answers is the number of requests that got an HTTP answer.
func (r *result) answers() int { return r.Requests - r.ByStatus["no answer"] }

// setCeiling records the machine's fork ceiling and ok/s as a share of it.
func (r *result) setCeiling(c *forkCeiling) {
	if c == nil || c.ForksPerSec <= 0 {
		return
	}
	pct := 100 * r.Throughput / c.ForksPerSec
	r.ForkCeiling, r.CeilingPct = c, &pct
	r.setFloorRatio()
}

// setFloorRatio sets CPUPerFloor once both figures are known.
func (r *result) setFloorRatio() {
	if r.CPUMSPerReq == nil || r.ForkCeiling == nil || r.ForkCeiling.Floor == nil || r.ForkCeiling.Floor.CPUMSPerClone <= 0 {
		return
	}
	ratio := *r.CPUMSPerReq / r.ForkCeiling.Floor.CPUMSPerClone
	r.CPUPerFloor = &ratio
}

// setCPU records the run's CPU and the CPU per answered request.
func (r *result) setCPU(f *cpuFigures) {
	r.CPU = f
	if f != nil && r.answers() > 0 {
		ms := f.Seconds * 1000 / float64(r.answers())
		r.CPUMSPerReq = &ms
		server := f.ServerSeconds * 1000 / float64(r.answers())
		r.ServerMSPerReq = &server
		r.setFloorRatio()
	}
}

// optional formats v, or "-" when it was not measured.
func optional(v *float64, width int, format string) string {
	if v == nil {
		return fmt.Sprintf("%*s", width, "-")
	}
	return fmt.Sprintf("%*s", width, fmt.Sprintf(format, *v))
}

func (r *result) loadLabel() string {
	if r.LoadModel == "open" {
		return fmt.Sprintf("open %g/s (≤%d in flight)", r.Rate, r.Clients)
	}
	return fmt.Sprintf("closed c=%d", r.Clients)
}

// writeTable prints the results and, with two configurations or more, the
// ratio of each to the first for the same scenario and load.
func writeTable(w io.Writer, results []*result) {
	ceilings := ceilingsOf(results)
	for _, c := range ceilings {
		fmt.Fprintf(w, "machine: %s\n", c)
	}
	if len(ceilings) == 0 {
		fmt.Fprintln(w, "machine: fork ceiling not measured (-ceiling-d 0)")
	}
	fmt.Fprintf(w, "%-10s %-8s %-24s %8s %8s %7s %6s %9s %9s %9s %9s %9s %10s %7s %7s  %s\n",
		"config", "scenario", "load", "requests", "ok/s", "ceil %", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "cpu ms/req", "× floor", "srv ms", "sandboxes")
	for _, r := range results {
		sandboxes := ""
		if r.Server != nil {
			sandboxes = fmt.Sprintf("%d created (%s/%s)", r.Server.SandboxesCreated, r.Server.Mode, r.Server.Jail)
		}
		fmt.Fprintf(w, "%-10s %-8s %-24s %8d %8.1f %s %6d %9.2f %9.2f %9.2f %9.2f %9.2f %s %s %s  %s\n",
			r.Config, r.Scenario, r.loadLabel(), r.Requests, r.Throughput, optional(r.CeilingPct, 7, "%.1f"), r.Errors,
			r.LatencyMS["p50"], r.LatencyMS["p90"], r.LatencyMS["p99"], r.LatencyMS["p99.9"], r.LatencyMS["max"],
			optional(r.CPUMSPerReq, 10, "%.2f"), optional(r.CPUPerFloor, 7, "%.2f"), optional(r.ServerMSPerReq, 7, "%.2f"), sandboxes)
		if len(r.ByError) > 0 || r.Errors > 0 {
			fmt.Fprintf(w, "%10s statuses %v, error types %v\n", "", r.ByStatus, r.ByError)
		}
		for _, m := range r.Mismatches {
			fmt.Fprintf(w, "%10s mismatch: %s\n", "", m)
		}
	}
	writeRatios(w, results)
	for _, cfg := range configsOf(results) {
		fmt.Fprintf(w, "config %s: server %s\n", cfg.Config, cfg.ServerArgs)
	}
}

// ceilingsOf lists the distinct fork ceilings of results (one per bench run).
func ceilingsOf(results []*result) []*forkCeiling {
	var out []*forkCeiling
	for _, r := range results {
		if r.ForkCeiling != nil && !slices.Contains(out, r.ForkCeiling) {
			out = append(out, r.ForkCeiling)
		}
	}
	return out
}

func configsOf(results []*result) []*result {
	seen := map[string]bool{}
	var out []*result
	for _, r := range results {
		if !seen[r.Config] {
			seen[r.Config] = true
			out = append(out, r)
		}
	}
	return out
}

func writeRatios(w io.Writer, results []*result) {
	configs := configsOf(results)
	if len(configs) < 2 {
		return
	}
	base := configs[0].Config
	key := func(r *result) string { return r.Scenario + "|" + r.loadLabel() }
	baseline := map[string]*result{}
	for _, r := range results {
		if r.Config == base {
			baseline[key(r)] = r
		}
	}
	fmt.Fprintf(w, "\nratios against %s (throughput ×, p50 latency ×):\n", base)
	for _, r := range results {
		b := baseline[key(r)]
		if r.Config == base || b == nil {
			continue
		}
		fmt.Fprintf(w, "  %-10s %-8s %-24s throughput %6.2f×  p50 %6.2f×\n",
			r.Config, r.Scenario, r.loadLabel(), safeRatio(r.Throughput, b.Throughput), safeRatio(r.LatencyMS["p50"], b.LatencyMS["p50"]))
	}
}

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return math.Inf(1)
	}
	return a / b
}

func writeJSON(w io.Writer, results []*result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// plotQuantiles are the x positions of the percentile plot: the usual
// HdrHistogram axis, 1/(1-q) on a log scale.
func plotQuantiles() []float64 { return []float64{0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99} }

// writeSVG draws latency by percentile, one line per result.
func writeSVG(w io.Writer, results []*result) error {
	const width, height, left, right, top, bottom = 940.0, 520.0, 70.0, 260.0, 30.0, 50.0
	plotW, plotH := width-left-right, height-top-bottom
	xOf := func(q float64) float64 { return math.Log10(1 / (1 - q/100.0001)) }
	quantiles := plotQuantiles()
	maxX := xOf(quantiles[len(quantiles)-1])
	maxY := 0.0
	for _, r := range results {
		maxY = max(maxY, float64(r.hist.ValueAtQuantile(99.99))/1000)
	}
	if maxY <= 0 {
		maxY = 1
	}
	maxY = niceCeil(maxY)
	px := func(q float64) float64 { return left + xOf(q)/maxX*plotW }
	py := func(ms float64) float64 { return top + plotH - ms/maxY*plotH }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="18" font-size="14">latency by percentile (ms)</text>`+"\n", left)
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%g</text>`+"\n",
			left, left+plotW, py(v), py(v), left-6, py(v)+4, v)
	}
	for _, q := range quantiles {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#eee"/><text x="%.1f" y="%g" text-anchor="middle">%g%%</text>`+"\n",
			px(q), px(q), top, top+plotH, px(q), top+plotH+16, q)
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">percentile</text>`+"\n", left+plotW/2, height-10)
	sorted := append([]*result(nil), results...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Config < sorted[j].Config })
	// Colour tells runs of one configuration apart, the dash pattern tells
	// configurations apart.
	dashes := []string{"", "8,4", "2,3", "10,3,2,3"}
	configIndex := map[string]int{}
	perConfig := map[string]int{}
	for i, r := range sorted {
		if _, ok := configIndex[r.Config]; !ok {
			configIndex[r.Config] = len(configIndex)
		}
		color := colors[perConfig[r.Config]%len(colors)]
		perConfig[r.Config]++
		dash := dashes[configIndex[r.Config]%len(dashes)]
		var pts []string
		for _, q := range quantiles {
			v := r.hist.ValueAtQuantile(q)
			if q == 0 {
				v = r.hist.Min()
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(q), py(float64(v)/1000)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s" points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		y := top + 14 + float64(i)*16
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n",
			left+plotW+8, left+plotW+28, y-4, y-4, color, dash)
		fmt.Fprintf(&b, `<text x="%g" y="%g" fill="%s">%s %s %s</text>`+"\n",
			left+plotW+32, y, color, escapeXML(r.Config), escapeXML(r.Scenario), escapeXML(r.loadLabel()))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func niceCeil(v float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
