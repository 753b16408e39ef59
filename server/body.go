package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/valyala/fasthttp"
)

// readBody reads the body of an /execute request under the server's
// budget of body bytes in flight, and returns it with the function that
// gives its bytes back (to call once the request no longer needs them).
//
// fasthttp streams request bodies here (StreamRequestBody): left to
// itself it allocates the declared Content-Length before the first byte
// arrives, so idle connections announcing 8 MiB each would hold 8 MiB
// each. Streaming, fasthttp has read at most 8 KiB and checked nothing:
// a Content-Length over MaxRequestBodySize still reaches the handler, and
// a chunked body has no length at all, so both caps are checked here.
//
// A request takes its declared length from the budget (a chunked one the
// whole MaxBodyBytes) before any of its body is read, waiting at most
// half its read timeout; a request that cannot get it by then is 503
// overloaded, retryable.
func (s *Server) readBody(ctx *fasthttp.RequestCtx) ([]byte, func(), error) {
	declared := ctx.Request.Header.ContentLength()
	if declared > s.cfg.MaxBodyBytes {
		return nil, func() {}, s.bodyTooLarge()
	}
	if declared == 0 || declared == -2 { // -2: neither length nor chunks, no body
		return nil, func() {}, nil
	}
	weight := int64(declared)
	if declared < 0 { // chunked: its length is known once read
		weight = int64(s.cfg.MaxBodyBytes)
	}
	// fasthttp gives no request deadline; the connection's read deadline
	// is ReadTimeout after the request began, no later than ctx.Time. The
	// wait takes at most half of it, leaving the rest to read the body or,
	// refused, to drain it: a connection closed with its request unread is
	// reset, and the client may never see the 503.
	waitCtx, cancel := context.WithDeadline(s.ctx, ctx.Time().Add(s.cfg.ReadTimeout/2))
	defer cancel()
	if err := s.bodyBudget.Acquire(waitCtx, weight); err != nil {
		return nil, func() {}, &APIError{Type: TypeOverloaded, Status: http.StatusServiceUnavailable, Retryable: true,
			Message: "too many request bodies are being received; retry after the Retry-After delay"}
	}
	body, err := readStream(ctx.RequestBodyStream(), declared, s.cfg.MaxBodyBytes)
	if err != nil {
		s.bodyBudget.Release(weight)
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			return nil, func() {}, s.bodyTooLarge()
		}
		return nil, func() {}, invalidRequest(fmt.Sprintf("cannot read the request body: %v", err))
	}
	if held := int64(len(body)); held < weight {
		// A chunked body took the whole cap: keep only what it is, for
		// the rest of the request's life.
		s.bodyBudget.Release(weight - held)
		weight = held
	}
	logOf(ctx).bytesIn = len(body)
	return body, func() { s.bodyBudget.Release(weight) }, nil
}

// readStream reads a body of declared bytes, or of at most limit when
// declared is negative (chunked).
func readStream(r io.Reader, declared, limit int) ([]byte, error) {
	if declared >= 0 {
		body := make([]byte, declared)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(body) > limit {
		return nil, fasthttp.ErrBodyTooLarge
	}
	return body, nil
}

func (s *Server) bodyTooLarge() *APIError {
	return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
		Message: fmt.Sprintf("request body is over the cap of %d bytes", s.cfg.MaxBodyBytes)}
}
