// Package server is the HTTP front end: routing, decoding and validating
// the request envelope, turning errors into statuses, auth, and /health.
// It runs scripts through an Executor (the pool) and knows nothing of
// processes or jails.
package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"

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
	s.metrics = newServerMetrics(s.cfg.Metrics, s.cfg, exec, s.answers, &s.bodyBytesHeld, s.conns)
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

// lingeringWorkers is how many workers of connections admission closed
// fasthttp may still be running, beyond the open connections.
const lingeringWorkers = 4096
