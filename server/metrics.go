package server

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// serverMetrics are the server's own series, in the Prometheus text format
// on GET /metrics. Labels take values from fixed sets only (paths, error
// types, statuses), so the series stay few.
type serverMetrics struct {
	set         *metrics.Set
	queue, exec *metrics.PrometheusHistogram
	total       *metrics.PrometheusHistogram
	bytesIn     *metrics.Counter
	bytesOut    *metrics.Counter
	// answersRefused counts answers replaced by a 503 for want of room
	// in the budget of answers in flight.
	answersRefused *metrics.Counter
	knownPaths     map[string]bool
	requestsName   string
}

func newServerMetrics(set *metrics.Set, exec Executor, answers *answerBudget, bodyBytes *atomic.Int64) *serverMetrics {
	m := &serverMetrics{
		set:            set,
		queue:          set.NewPrometheusHistogram("pyexec_queue_seconds"),
		exec:           set.NewPrometheusHistogram("pyexec_exec_seconds"),
		total:          set.NewPrometheusHistogram("pyexec_request_seconds"),
		bytesIn:        set.NewCounter("pyexec_request_bytes_total"),
		bytesOut:       set.NewCounter("pyexec_response_bytes_total"),
		answersRefused: set.NewCounter("pyexec_answers_refused_total"),
		knownPaths:     map[string]bool{"/execute": true, "/health": true, "/ready": true, "/live": true, "/metrics": true},
		requestsName:   "pyexec_requests_total",
	}
	gauge := func(name string, f func() int) {
		set.NewGauge(name, func() float64 { return float64(f()) })
	}
	gauge("pyexec_pool_idle", func() int { return exec.Stats().Idle })
	gauge("pyexec_pool_building", func() int { return exec.Stats().Building })
	gauge("pyexec_pool_busy", func() int { return exec.Stats().Busy })
	gauge("pyexec_pool_waiting", func() int { return exec.Stats().Waiting })
	set.NewGauge("pyexec_body_bytes_in_flight", func() float64 { return float64(bodyBytes.Load()) })
	set.NewGauge("pyexec_answer_bytes_in_flight", func() float64 { return float64(answers.held.Load()) })

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
	m.set.GetOrCreateCounter(fmt.Sprintf(`%s{path=%q,status="%d",error=%q}`,
		m.requestsName, path, ctx.Response.StatusCode(), errType)).Inc()
	m.bytesIn.Add(l.bytesIn)
	m.bytesOut.Add(bytesOut(ctx, l))
	if path == "/execute" {
		m.total.Update(took.Seconds())
	}
	if l.executed {
		m.queue.Update(l.queue.Seconds())
		m.exec.Update(l.exec.Seconds())
	}
}

// handleMetrics writes every series of the set, the server's and those
// others registered in it (the pool's builds, the runner's zygotes).
func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4")
	s.metrics.set.WritePrometheus(ctx)
}
