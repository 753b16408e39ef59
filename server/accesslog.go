package server

import (
	"crypto/rand"
	"encoding/base32"
	"time"

	"github.com/valyala/fasthttp"
)

// requestLog is what one request's access-log line says beyond what the
// response itself shows; handlers fill it in through logOf.
type requestLog struct {
	id      string
	errType string
	queue   time.Duration
	exec    time.Duration
	// hungUp says the caller closed its connection before the answer.
	hungUp bool
	// bytesIn is the request body's length, once readBody has read it
	// (the body is streamed: asking fasthttp for it would read it all).
	bytesIn int
	// bytesOut is the answer's length, set by respond (its body is a
	// stream, which asking fasthttp for it would read); for other answers
	// accessLog takes the body's length.
	bytesOut int
	// executed says the request reached the pool (queue and exec are set).
	executed bool
	// runtime is the runtime the script ran in, once executed.
	runtime string
}

const requestLogKey = "pyexec.requestLog"

// logOf returns the request's log record (never nil inside accessLog).
func logOf(ctx *fasthttp.RequestCtx) *requestLog {
	if l, ok := ctx.UserValue(requestLogKey).(*requestLog); ok {
		return l
	}
	l := &requestLog{}
	ctx.SetUserValue(requestLogKey, l)
	return l
}

// accessLog gives every request an id (the caller's X-Request-Id when it
// is short and printable, else a new random one, unique across restarts
// and replicas), echoes it, and writes one line per request at info level,
// rejected ones included.
func (s *Server) accessLog(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		l := logOf(ctx)
		l.id = requestID(ctx)
		ctx.Response.Header.Set("X-Request-Id", l.id)
		// A request with the token (any, without one) proves its
		// connection: it is never closed to make room for another.
		s.conns.enter(ctx.Conn(), s.authorized(ctx))
		defer s.conns.leave(ctx.Conn())
		next(ctx)
		s.logLine(ctx, l, start)
		s.metrics.observe(ctx, l, time.Since(start))
	}
}

func (s *Server) logLine(ctx *fasthttp.RequestCtx, l *requestLog, start time.Time) {
	ev := s.cfg.Logger.Info().
		Str("request_id", l.id).
		Bytes("method", ctx.Method()).
		Bytes("path", ctx.Path()).
		Int("status", ctx.Response.StatusCode()).
		Str("remote", ctx.RemoteAddr().String()).
		Int("bytes_in", l.bytesIn).
		Int("bytes_out", bytesOut(ctx, l)).
		Float64("queue_ms", millis(l.queue)).
		Float64("exec_ms", millis(l.exec)).
		Float64("total_ms", millis(time.Since(start)))
	if l.errType != "" {
		ev = ev.Str("error", l.errType)
	}
	if l.hungUp {
		ev = ev.Bool("client_gone", true)
	}
	ev.Msg("request")
}

// bytesOut is the length of the answer's body, without reading a body
// stream.
func bytesOut(ctx *fasthttp.RequestCtx, l *requestLog) int {
	if ctx.Response.IsBodyStream() {
		return l.bytesOut
	}
	return len(ctx.Response.Body())
}

// requestID is the caller's X-Request-Id when it is at most 64 printable
// ASCII characters, else a new one: 80 random bits, base32.
func requestID(ctx *fasthttp.RequestCtx) string {
	id := ctx.Request.Header.Peek("X-Request-Id")
	valid := len(id) > 0 && len(id) <= 64
	for _, c := range id {
		if c <= ' ' || c > '~' {
			valid = false
			break
		}
	}
	if valid {
		return string(id)
	}
	var b [10]byte
	_, _ = rand.Read(b[:])
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}
