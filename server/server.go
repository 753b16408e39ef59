// Package server is the HTTP front end: routing, decoding and validating
// the request envelope, turning errors into statuses, auth, and /health.
// It runs scripts through an Executor (the pool) and knows nothing of
// processes or jails.
package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// Executor runs one script in a fresh sandbox.
type Executor interface {
	Execute(ctx context.Context, req runner.Request) (runner.Output, pool.Timing, error)
	Ready() bool
	Stats() pool.Stats
}

// Server is the HTTP server. Create it with New, run it with Serve, stop it
// with Shutdown.
type Server struct {
	cfg  Config
	exec Executor
	http *fasthttp.Server
	// ctx is the parent of every execution; cancelled by Shutdown when the
	// grace period is over.
	ctx     context.Context
	cancel  context.CancelFunc
	metrics *serverMetrics
	// hangups cancels the executions of callers that hang up; nil if it
	// could not be made (then nothing is cancelled early).
	hangups *hangupWatcher
	// bodyBudget holds MaxBodyBytesInFlight; readBody takes a request's
	// body bytes from it.
	bodyBudget *semaphore.Weighted
	// bodyBytesHeld is what bodyBudget has given out, for /metrics.
	bodyBytesHeld atomic.Int64
	// answers holds MaxAnswerBytesInFlight; respond takes each answer's
	// bytes from it.
	answers *answerBudget
	// conns keeps MaxConnections, making room for new connections by
	// closing unproven idle ones.
	conns *admission
}

// New returns a server that runs scripts with exec.
func New(cfg Config, exec Executor) *Server {
	s := &Server{cfg: cfg.withDefaults(), exec: exec}
	if s.cfg.Metrics == nil {
		s.cfg.Metrics = NewRegistry()
	}
	s.answers = newAnswerBudget(s.cfg.MaxAnswerBytesInFlight)
	s.conns = newAdmission(s.cfg.MaxConnections, s.cfg.Logger)
	s.metrics = newServerMetrics(s.cfg.Metrics, s.cfg, exec, s.answers, &s.bodyBytesHeld)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	hangups, err := newHangupWatcher()
	if err != nil {
		s.cfg.Logger.Warn().Err(err).Msg("callers that hang up will not have their scripts stopped early")
	}
	s.hangups = hangups
	s.bodyBudget = semaphore.NewWeighted(s.cfg.MaxBodyBytesInFlight)
	s.http = &fasthttp.Server{
		Handler:      s.accessLog(s.recoverPanics(s.route)),
		ErrorHandler: s.transportError,
		Name:         "pyexec",
		ReadTimeout:  s.cfg.ReadTimeout,
		WriteTimeout: s.cfg.WriteTimeout,
		IdleTimeout:  s.cfg.IdleTimeout,
		// Bodies are read by readBody, under the budget of bytes in
		// flight, not allocated whole as soon as headers announce them.
		// Streaming, fasthttp checks no body cap (readBody does) and uses
		// MaxRequestBodySize only as what it reads before calling the
		// handler: 1 byte, so that a Content-Length over the cap is
		// answered 413 as soon as the body starts, not after 8 KiB of it.
		// Its multipart parsing would read a form of any length before the
		// handler: the API takes none.
		StreamRequestBody:            true,
		MaxRequestBodySize:           1,
		DisablePreParseMultipartForm: true,
		// fasthttp serves each connection with a worker of its own, and
		// answers one over Concurrency 503. The cap is admission's
		// (MaxConnections, so that the descriptors connections hold are
		// bounded; the pool, not the connection count, bounds the work).
		// fasthttp's leaves room for the workers of the connections
		// admission closed, which end a moment later: a flood of new
		// connections closes old ones faster than a busy machine runs
		// their workers to the end (twice the cap was seen exceeded, and
		// then fasthttp refused admitted connections). A worker of a closed
		// connection holds no descriptor, only its goroutine.
		Concurrency: s.cfg.MaxConnections + lingeringWorkers,
		ConnState: func(c net.Conn, state fasthttp.ConnState) {
			if state == fasthttp.StateClosed {
				s.conns.closed(c)
			}
		},
		NoDefaultServerHeader: true,
		// fasthttp's own messages (a malformed request, a connection it
		// could not serve) go to the service's log as JSON, and without
		// the request's bytes: they hold the bearer token.
		Logger:                fasthttpLogger{logger: s.cfg.Logger, redact: s.redact},
		ExpectHandler:         s.expectContinue,
		SecureErrorLogMessage: true,
	}
	return s
}

// Serve answers requests on ln until Shutdown. Accept errors that pass
// (out of descriptors) are retried rather than ending Serve; connections
// past MaxConnections make room by closing unproven idle ones
// (admission).
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(&admissionListener{Listener: newRetryListener(ln, s.cfg.Logger), admission: s.conns})
}

// expectContinue answers a request's "Expect: 100-continue" before its
// body is sent: an /execute that would be refused anyway (without the
// token, or with a Content-Length over the cap) is refused now, and the
// client does not upload its body for nothing. fasthttp closes the
// connection after such a refusal.
func (s *Server) expectContinue(ctx *fasthttp.RequestCtx) int {
	if string(ctx.Path()) != "/execute" {
		return fasthttp.StatusContinue
	}
	if !s.authorized(ctx) {
		return http.StatusUnauthorized
	}
	if ctx.Request.Header.ContentLength() > s.cfg.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge
	}
	if _, err := bodyFormat(ctx.Request.Header.ContentType()); err != nil {
		return http.StatusUnsupportedMediaType
	}
	return fasthttp.StatusContinue
}

// fasthttpLogger writes fasthttp's log lines through the server's logger,
// at warn level: fasthttp logs only what went wrong. Its messages quote
// request bytes (a malformed header's value, SecureErrorLogMessage or
// not), so they are redacted first.
type fasthttpLogger struct {
	logger zerolog.Logger
	redact func(string) string
}

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.logger.Warn().Str("component", "fasthttp").Msg(l.redact(fmt.Sprintf(format, args...)))
}

// bearerValue is what follows "Bearer" in text that quotes a header: the
// credential, up to the end of the quoted value.
var bearerValue = regexp.MustCompile(`(?i)(bearer)[\s:]*[^\s"'\\]+`)

// redact removes credentials from text that may quote what a client sent
// (fasthttp's parse errors quote the offending header's value): the
// server's own token wherever it appears, and anything that follows
// "Bearer", in case a client sent a token that is not the server's.
func (s *Server) redact(text string) string {
	if s.cfg.AuthToken != "" {
		text = strings.ReplaceAll(text, s.cfg.AuthToken, "[redacted]")
	}
	return bearerValue.ReplaceAllString(text, "$1 [redacted]")
}

// Shutdown stops accepting connections and waits for requests in flight
// until ctx ends; then it cancels the executions still running.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.hangups.close()
	defer s.cancel()
	if err := s.http.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("cannot shut down http server: %w", err)
	}
	return nil
}

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch path {
	case "/execute":
		if !ctx.IsPost() {
			s.methodNotAllowed(ctx, "POST")
			return
		}
		s.handleExecute(ctx)
	case "/metrics":
		if !ctx.IsGet() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		if !s.authorized(ctx) {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="pyexec"`)
			s.writeError(ctx, &APIError{Type: TypeUnauthorized, Status: http.StatusUnauthorized,
				Message: "missing or wrong bearer token"}, nil)
			return
		}
		s.handleMetrics(ctx)
	case "/health", "/ready", "/live":
		if !ctx.IsGet() && !ctx.IsHead() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		switch path {
		case "/health":
			s.handleHealth(ctx)
		case "/ready":
			s.handleReady(ctx)
		default:
			// Liveness: the process serves HTTP; nothing else is asked.
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"alive"}`)
		}
	default:
		s.writeError(ctx, &APIError{Type: TypeNotFound, Status: http.StatusNotFound,
			Message: "no such endpoint; use POST /execute, GET /health, /ready or /live"}, nil)
	}
}

func (s *Server) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	s.writeError(ctx, &APIError{Type: TypeMethod, Status: http.StatusMethodNotAllowed,
		Message: "use " + allow + " on " + string(ctx.Path())}, nil)
}

// recoverPanics answers 500 instead of dropping the connection when a
// handler panics; fasthttp recovers nothing itself.
func (s *Server) recoverPanics(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if p := recover(); p != nil {
				ctx.Response.Reset()
				s.writeError(ctx, fmt.Errorf("panic: %v", p), nil)
			}
		}()
		next(ctx)
	}
}

// transportError renders fasthttp's own errors (body too large, timeouts,
// malformed HTTP) in the API's error format.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var apiErr *APIError
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		apiErr = s.bodyTooLarge()
	default:
		apiErr = invalidRequest("cannot read the HTTP request: " + s.redact(err.Error()))
	}
	// fasthttp calls this outside the handler chain: log it here.
	start := time.Now()
	l := logOf(ctx)
	l.id = requestID(ctx)
	ctx.Response.Header.Set("X-Request-Id", l.id)
	s.writeError(ctx, apiErr, nil)
	s.logLine(ctx, l, start)
	s.metrics.observe(ctx, l, time.Since(start))
}

// timingBody is the time breakdown of a response, in milliseconds.
type timingBody struct {
	QueueMS float64 `json:"queue_ms" msgpack:"queue_ms"`
	ExecMS  float64 `json:"exec_ms" msgpack:"exec_ms"`
	TotalMS float64 `json:"total_ms" msgpack:"total_ms"`
}

// usageBody is what the sandbox used, from the kernel.
type usageBody struct {
	CPUMS    float64 `json:"cpu_ms" msgpack:"cpu_ms"`
	MaxRSSKB int64   `json:"max_rss_kb" msgpack:"max_rss_kb"`
}

func usageOf(out runner.Output) usageBody {
	return usageBody{CPUMS: millis(out.Usage.CPU), MaxRSSKB: out.Usage.MaxRSSKB}
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (s *Server) handleExecute(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if !s.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="pyexec"`)
		s.writeError(ctx, &APIError{Type: TypeUnauthorized, Status: http.StatusUnauthorized,
			Message: "missing or wrong bearer token"}, nil)
		return
	}
	asMsgpack, err := bodyFormat(ctx.Request.Header.ContentType())
	if err != nil {
		s.writeError(ctx, err, nil)
		return
	}
	// The body's bytes stay counted until the handler returns: the
	// decoded request holds about as much again while it waits and runs.
	raw, releaseBody, err := s.readBody(ctx)
	defer releaseBody()
	if err != nil {
		s.writeError(ctx, err, nil)
		return
	}
	var req executeRequest
	if asMsgpack {
		req, err = decodeMsgpack(raw, &s.cfg)
	} else {
		req, err = decodeJSON(raw, &s.cfg)
	}
	if err == nil {
		err = req.validate(&s.cfg)
	}
	if err != nil {
		s.writeError(ctx, err, nil)
		return
	}

	execReq := runner.Request{Script: req.Script, Entrypoint: req.Entrypoint, Input: req.Input, Inputs: req.Inputs, InputFormat: req.InputFormat,
		Stdin: req.Stdin, Files: req.Files, Timeout: req.timeout(&s.cfg)}
	if asMsgpack {
		// A msgpack answer carries the result as the sandbox encoded it,
		// bytes as bin.
		execReq.ResultFormat = runner.ResultMsgpack
	}
	if req.MemoryMB != nil {
		execReq.MemoryBytes = *req.MemoryMB << 20
	}
	// The execution ends with the server (after the shutdown grace) or
	// when the caller hangs up: its script is killed and its slot freed.
	reqCtx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	stopWatching := s.hangups.watch(ctx.Conn(), cancel)
	// Deferred too, for a panic in Execute (recovered by recoverPanics):
	// the watch's duplicate keeps the client's socket open until stopped.
	defer stopWatching()
	out, poolTiming, err := s.exec.Execute(reqCtx, execReq)
	stopWatching()
	l := logOf(ctx)
	l.queue, l.exec, l.executed = poolTiming.Queue, out.Exec, true
	timing := timingBody{QueueMS: millis(poolTiming.Queue), ExecMS: millis(out.Exec), TotalMS: millis(time.Since(start))}
	if err != nil {
		var scriptErr *runner.ScriptError
		switch {
		case errors.As(err, &scriptErr):
		case errors.Is(context.Cause(reqCtx), errClientGone):
			l.hungUp = true
			err = &APIError{Type: TypeClientGone, Status: statusClientGone, Message: "the client closed the connection; the script was killed"}
		case s.ctx.Err() != nil:
			err = &APIError{Type: TypeShuttingDown, Status: http.StatusServiceUnavailable, Retryable: true,
				Message: "the server stopped before the script finished; send it again"}
		}
		usage := usageOf(out)
		s.writeError(ctx, err, &failure{stdout: out.Stdout, stderr: out.Stderr, timing: &timing, usage: &usage})
		return
	}
	batch := req.Inputs != nil
	s.respond(ctx, http.StatusOK, func(e *encoder) { encodeSuccess(e, &out, timing, batch) }, func() (*failure, int) {
		usage := usageOf(out)
		what := "its result and output files"
		if batch {
			what = "its results (with what each input printed) and output files"
		}
		return &failure{
			err: errorBody{Type: string(runner.KindOutputLimit), Message: fmt.Sprintf(
				"the answer is over the cap of %d bytes (--max-answer-bytes, counted as encoded: a control character is 6 bytes in JSON); %s are left out, and stdout and stderr kept",
				s.cfg.MaxAnswerBytes, what)},
			stdout: out.Stdout, stderr: out.Stderr, timing: &timing, usage: &usage,
		}, http.StatusUnprocessableEntity
	})
}

// marshalJSON encodes v compactly and without HTML escaping: a result of
// eight million "<" stays eight million bytes, not forty-eight. (The
// result itself arrives as strict, compact JSON checked by the runner.)
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Media types of a request body. A body without a Content-Type is JSON,
// as are curl's default for -d (application/x-www-form-urlencoded: the
// body is still parsed as strict JSON, so a real form is invalid_request)
// and any "+json" type; anything else is unsupported_media_type.
var (
	msgpackTypes = [][]byte{[]byte("application/msgpack"), []byte("application/vnd.msgpack"), []byte("application/x-msgpack")}
	jsonTypes    = [][]byte{[]byte(""), []byte("application/json"), []byte("application/x-www-form-urlencoded")}
)

// bodyMediaType is contentType without its parameters, lower-cased.
func bodyMediaType(contentType []byte) []byte {
	ct, _, _ := bytes.Cut(contentType, []byte(";"))
	return bytes.ToLower(bytes.TrimSpace(ct))
}

func isMsgpack(contentType []byte) bool {
	ct := bodyMediaType(contentType)
	for _, t := range msgpackTypes {
		if bytes.Equal(ct, t) {
			return true
		}
	}
	return false
}

// lingeringWorkers is how many workers of connections admission closed
// fasthttp may still be running, beyond the open connections.
const lingeringWorkers = 4096

// msgpackAnswerType is the media type of a msgpack answer: the one the
// request was sent as when that was application/vnd.msgpack (the
// registered name), else application/msgpack.
func msgpackAnswerType(ctx *fasthttp.RequestCtx) string {
	if bytes.Equal(bodyMediaType(ctx.Request.Header.ContentType()), []byte("application/vnd.msgpack")) {
		return "application/vnd.msgpack"
	}
	return "application/msgpack"
}

// bodyFormat says whether a request body of contentType is msgpack (else
// JSON), or refuses the type with 415.
func bodyFormat(contentType []byte) (asMsgpack bool, err error) {
	if isMsgpack(contentType) {
		return true, nil
	}
	ct := bodyMediaType(contentType)
	if bytes.HasPrefix(ct, []byte("application/")) && bytes.HasSuffix(ct, []byte("+json")) {
		return false, nil
	}
	for _, t := range jsonTypes {
		if bytes.Equal(ct, t) {
			return false, nil
		}
	}
	return false, &APIError{Type: TypeUnsupportedMediaType, Status: http.StatusUnsupportedMediaType,
		Message: fmt.Sprintf("Content-Type %q is not supported; send application/json or application/msgpack (also application/vnd.msgpack)",
			clipText(string(contentType), 100))}
}

// clipText bounds a text a client sent before an answer quotes it.
func clipText(text string, n int) string {
	if len(text) <= n {
		return text
	}
	return text[:n] + "…"
}

// writeError answers err with its status and typed body; partial carries
// the output, timing and usage of a failed execution.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, err error, partial *failure) {
	status, body, internal := toErrorBody(err)
	l := logOf(ctx)
	l.errType = body.Type
	f := failure{}
	if partial != nil {
		f = *partial
	}
	// An error's text may quote the request's bytes: the encoder writes
	// it, as what a script printed, as valid UTF-8.
	f.err = body
	if internal {
		f.err.RequestID = l.id
		s.cfg.Logger.Error().Err(err).Str("request_id", l.id).Msg("internal error")
	}
	if status == http.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	s.respond(ctx, status, f.encode, func() (*failure, int) {
		f.err.Message += " (stdout and stderr were cut to keep the answer within --max-answer-bytes)"
		return &f, status
	})
}

func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	if s.cfg.AuthToken == "" {
		return true
	}
	// The scheme is case-insensitive (RFC 9110); the token is not.
	scheme, token, _ := bytes.Cut(ctx.Request.Header.Peek("Authorization"), []byte(" "))
	return bytes.EqualFold(scheme, []byte("Bearer")) &&
		subtle.ConstantTimeCompare(bytes.TrimSpace(token), []byte(s.cfg.AuthToken)) == 1
}

// healthBody keeps the original service's fields and adds the jail, mode,
// pool figures and version.
type healthBody struct {
	Status   string   `json:"status"`
	Service  string   `json:"service"`
	Security string   `json:"security"`
	Features []string `json:"features"`
	Jail     string   `json:"jail"`
	Mode     string   `json:"mode"`
	Version  string   `json:"version"`
	// Policy is the validation policy in force (seed, none, or a file's).
	Policy string `json:"policy"`
	// NotReady lists why /ready would answer 503 (empty when ready).
	NotReady []string `json:"not_ready"`
	// MemoryAccounting says what bounds a sandbox's memory: "rlimit"
	// (address space per process, times processes, plus the scratch
	// tmpfs; see README). Per-sandbox cgroup v2 accounting is not built.
	MemoryAccounting string     `json:"memory_accounting"`
	Pool             poolHealth `json:"pool"`
}

type poolHealth struct {
	Warm                     int    `json:"warm"`
	Idle                     int    `json:"idle"`
	Building                 int    `json:"building"`
	Busy                     int    `json:"busy"`
	MaxBusy                  int    `json:"max_busy"`
	Waiting                  int    `json:"waiting"`
	Created                  int64  `json:"created"`
	CreatedUrgent            int64  `json:"created_urgent"`
	Executed                 int64  `json:"executed"`
	ConsecutiveBuildFailures int64  `json:"consecutive_build_failures"`
	LastBuildError           string `json:"last_build_error,omitempty"`
}

// readiness says whether this replica can take work soon, and why not:
// no sandbox can be served (zygote down, builds failing), or it is
// saturated: every running slot busy and at least as many requests again
// waiting.
func readiness(st pool.Stats, canServe bool) []string {
	var reasons []string
	if !canServe {
		reasons = append(reasons, "no sandbox can be served: none is warm and builds are failing or not started")
	}
	if st.ConsecutiveBuildFailures >= 3 {
		reasons = append(reasons, fmt.Sprintf("%d sandbox builds failed in a row", st.ConsecutiveBuildFailures))
	}
	if st.MaxBusy > 0 && st.Busy >= st.MaxBusy && st.Waiting >= st.MaxBusy {
		reasons = append(reasons, fmt.Sprintf("saturated: %d of %d slots busy and %d requests waiting", st.Busy, st.MaxBusy, st.Waiting))
	}
	return reasons
}

// handleReady answers 200 while the replica can take work soon, else 503
// with the reasons: what a load balancer's readiness probe asks.
func (s *Server) handleReady(ctx *fasthttp.RequestCtx) {
	reasons := readiness(s.exec.Stats(), s.exec.Ready())
	body, _ := marshalJSON(map[string]any{"ready": len(reasons) == 0, "reasons": append([]string{}, reasons...)})
	ctx.SetContentType("application/json")
	if len(reasons) > 0 {
		ctx.SetStatusCode(http.StatusServiceUnavailable)
	}
	ctx.SetBody(body)
}

func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	st := s.exec.Stats()
	body := healthBody{
		Status:  "healthy",
		Service: "Safe Python Execution Service (warm sandbox pool)",
		Security: fmt.Sprintf("%s jail: user, mount, pid, ipc, uts and network namespaces per sandbox, private read-only /dev and capped scratch tmpfs, unprivileged uid, seccomp allow list, rlimits; mode %s",
			s.cfg.Jail, s.cfg.Mode),
		Features: []string{"resource limits", "sandboxed execution", "warm sandbox pool",
			"one sandbox per execution", s.cfg.Jail + " sandboxing", "numpy", "pandas"},
		Jail:             s.cfg.Jail,
		Mode:             s.cfg.Mode,
		Version:          s.cfg.Version,
		MemoryAccounting: cmp.Or(s.cfg.MemoryAccounting, "rlimit"),
		Policy:           s.cfg.Policy,
		NotReady:         append([]string{}, readiness(st, s.exec.Ready())...),
		Pool: poolHealth{
			Warm: st.Warm, Idle: st.Idle, Building: st.Building, Busy: st.Busy, MaxBusy: st.MaxBusy,
			Waiting: st.Waiting, Created: st.Created, CreatedUrgent: st.CreatedUrgent, Executed: st.Executed,
			ConsecutiveBuildFailures: st.ConsecutiveBuildFailures, LastBuildError: st.LastBuildError,
		},
	}
	if s.cfg.PolicyRefuses {
		body.Features = append(body.Features, "dangerous import blocking")
	}
	status := http.StatusOK
	if !s.exec.Ready() {
		body.Status = "unavailable"
		status = http.StatusServiceUnavailable
	}
	encoded, err := marshalJSON(&body)
	if err != nil {
		s.writeError(ctx, fmt.Errorf("cannot encode health: %w", err), nil)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(encoded)
}
