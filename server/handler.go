package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sandbox-exec/pyexec/runner"
)

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

func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	if s.cfg.AuthToken == "" {
		return true
	}
	// The scheme is case-insensitive (RFC 9110); the token is not.
	scheme, token, _ := bytes.Cut(ctx.Request.Header.Peek("Authorization"), []byte(" "))
	return bytes.EqualFold(scheme, []byte("Bearer")) &&
		subtle.ConstantTimeCompare(bytes.TrimSpace(token), []byte(s.cfg.AuthToken)) == 1
}

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

	execReq := runner.Request{Runtime: req.Runtime, Script: req.Script, Entrypoint: req.Entrypoint, Input: req.Input, Inputs: req.Inputs, InputFormat: req.InputFormat,
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
	l.queue, l.exec, l.executed, l.runtime = poolTiming.Queue, out.Exec, true, req.Runtime
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
