package server

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// NewRegistry returns a metrics registry of the process's own (never
// Prometheus's global one) with the process (CPU, memory, descriptors)
// and Go runtime (goroutines, GC, heap) collectors registered.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return reg
}

// DurationBuckets are histogram bounds in seconds from 1 ms up to longest,
// on the 1-2.5-5 series, with longest itself as the last bound: a
// histogram of something that may last up to longest (a script's wall
// time, a wait for a sandbox) has a bucket for every value it can see.
func DurationBuckets(longest time.Duration) []float64 {
	top := longest.Seconds()
	var bounds []float64
	for decade := 0.001; ; decade *= 10 {
		for _, step := range []float64{1, 2.5, 5} {
			// Rounded so the bounds print as 0.0025, not 0.0025000000000000005.
			b, _ := strconv.ParseFloat(strconv.FormatFloat(decade*step, 'g', 6, 64), 64)
			if b >= top {
				return append(bounds, top)
			}
			bounds = append(bounds, b)
		}
	}
}

// executeOutcomes are the answers of /execute counted from the start
// (at 0), so a rate or an alert on any of them works before it first
// happens: "ok" and every error type /execute can answer. Others (new
// types) are counted too, from their first occurrence.
func executeOutcomes() []string {
	out := []string{"ok", TypeInvalidRequest, TypePayloadTooLarge, TypeUnsupportedMediaType, TypeUnauthorized, TypeMethod, TypeOverloaded,
		TypeInternal, TypeShuttingDown, TypeClientGone}
	for _, k := range []runner.Kind{runner.KindSyntaxError, runner.KindMissingMain, runner.KindForbiddenImport,
		runner.KindForbiddenCall, runner.KindScriptError, runner.KindResultNotSerializable, runner.KindTimeout,
		runner.KindMemoryLimit, runner.KindOutputLimit, runner.KindOutputFilesLimit, runner.KindOutputFilesInvalid,
		runner.KindCrashed, runner.KindProtocolError} {
		out = append(out, string(k))
	}
	return out
}

// serverMetrics are the server's own series, in the Prometheus text format
// on GET /metrics. Labels take values from fixed sets only (paths, error
// types, statuses), so the series stay few.
type serverMetrics struct {
	gatherer    prometheus.Gatherer
	queue, exec prometheus.Histogram
	total       prometheus.Histogram
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	requests    *prometheus.CounterVec
	outcomes    *prometheus.CounterVec
	// byRuntime counts executions per runtime (a fixed set: the
	// configured runtimes).
	byRuntime *prometheus.CounterVec
	// answersRefused counts answers replaced by a 503 for want of room
	// in the budget of answers in flight.
	answersRefused prometheus.Counter
	knownPaths     map[string]bool
}

// newServerMetrics registers the server's series in reg. Durations are
// bucketed up to the longest each can be: a script's wall time up to
// MaxTimeout, a wait up to QueueTimeout, a whole request up to both.
// answers and bodyBytes are the budgets of answers and request bodies in
// flight, shown as gauges.
func newServerMetrics(reg *prometheus.Registry, cfg Config, exec Executor, answers *answerBudget, bodyBytes *atomic.Int64, conns *admission) *serverMetrics {
	histogram := func(name, help string, longest time.Duration) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: DurationBuckets(longest)})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &serverMetrics{
		gatherer: reg,
		queue:    histogram("pyexec_queue_seconds", "Time executions waited for a sandbox.", cfg.QueueTimeout),
		exec:     histogram("pyexec_exec_seconds", "Time scripts ran in their sandbox.", cfg.MaxTimeout),
		total: histogram("pyexec_request_seconds", "Time the service took for each /execute request, from its first byte read to its answer.",
			cfg.QueueTimeout+cfg.MaxTimeout),
		bytesIn:  counter("pyexec_request_bytes_total", "Bytes of request bodies read."),
		bytesOut: counter("pyexec_response_bytes_total", "Bytes of response bodies written."),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_requests_total",
			Help: "HTTP requests answered, by path (or other), status and error type (none for a success)."},
			[]string{"path", "status", "error"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_execute_outcomes_total",
			Help: "Answers of /execute by outcome: ok, or the error type."}, []string{"outcome"}),
		byRuntime: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pyexec_runtime_executions_total",
			Help: "Scripts run, by runtime (the request's \"runtime\", or the default)."}, []string{"runtime"}),
		answersRefused: counter("pyexec_answers_refused_total",
			"Answers replaced by a 503 overloaded for want of room in the budget of answers in flight (--max-answer-bytes-in-flight)."),
		knownPaths: map[string]bool{"/execute": true, "/health": true, "/ready": true, "/live": true, "/metrics": true},
	}
	for _, o := range executeOutcomes() {
		m.outcomes.WithLabelValues(o)
	}
	for _, rt := range cfg.Runtimes {
		m.byRuntime.WithLabelValues(rt.Name)
	}
	gauge := func(name, help string, f func(s pool.Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(exec.Stats())) })
	}
	bytesGauge := func(name, help string, held *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(held.Load()) })
	}
	reg.MustRegister(m.queue, m.exec, m.total, m.bytesIn, m.bytesOut, m.requests, m.outcomes, m.byRuntime, m.answersRefused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pyexec_connections_open",
			Help: "Connections open, of --max-connections."},
			func() float64 { open, _ := conns.counts(); return float64(open) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pyexec_connections_proven",
			Help: "Open connections that made a valid request: never closed to admit new ones."},
			func() float64 { _, proven := conns.counts(); return float64(proven) }),
		bytesGauge("pyexec_body_bytes_in_flight", "Bytes of request bodies held, of the budget --max-body-bytes-in-flight.", bodyBytes),
		bytesGauge("pyexec_answer_bytes_in_flight", "Bytes of answers held until written, of the budget --max-answer-bytes-in-flight.", &answers.held),
		gauge("pyexec_pool_idle", "Sandboxes started and waiting for a request.", func(s pool.Stats) int { return s.Idle }),
		gauge("pyexec_pool_building", "Sandboxes being built.", func(s pool.Stats) int { return s.Building }),
		gauge("pyexec_pool_busy", "Sandboxes running a script (or being reaped).", func(s pool.Stats) int { return s.Busy }),
		gauge("pyexec_pool_waiting", "Requests waiting for a sandbox.", func(s pool.Stats) int { return s.Waiting }),
	)
	return m
}

// observe counts one answered request.
func (m *serverMetrics) observe(ctx *fasthttp.RequestCtx, l *requestLog, took time.Duration) {
	path := string(ctx.Path())
	if !m.knownPaths[path] {
		path = "other"
	}
	errType := l.errType
	if errType == "" {
		errType = "none"
	}
	m.requests.WithLabelValues(path, strconv.Itoa(ctx.Response.StatusCode()), errType).Inc()
	m.bytesIn.Add(float64(l.bytesIn))
	m.bytesOut.Add(float64(bytesOut(ctx, l)))
	if path == "/execute" {
		m.total.Observe(took.Seconds())
		outcome := l.errType
		if outcome == "" {
			outcome = "ok"
		}
		m.outcomes.WithLabelValues(outcome).Inc()
	}
	if l.executed {
		m.queue.Observe(l.queue.Seconds())
		m.exec.Observe(l.exec.Seconds())
		m.byRuntime.WithLabelValues(l.runtime).Inc()
	}
}

// handleMetrics writes every family of the registry, the server's and
// those others registered in it (the pool's builds, the runner's zygotes,
// the process and Go runtime), each with its HELP and TYPE.
func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	families, err := s.metrics.gatherer.Gather()
	if err != nil {
		// Gather returns what it could with the error: answer the error,
		// since a partial scrape would read as series that vanished.
		s.writeError(ctx, fmt.Errorf("cannot gather the metrics: %w", err), nil)
		return
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	ctx.SetContentType(string(format))
	enc := expfmt.NewEncoder(ctx, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			s.cfg.Logger.Error().Err(err).Msg("cannot write the metrics")
			return
		}
	}
}
