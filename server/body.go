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
// The body's bytes are taken from the budget as they arrive, not as they
// are announced: the buffer starts at 64 KiB (or the declared length, if
// less) and doubles, each size taken before it is allocated, up to the
// declared length (a chunked body's cap). So a connection that announces
// 8 MiB and sends one byte holds 64 KiB of the budget, not 8 MiB: slow
// uploads cannot keep the budget from requests that send their bodies.
// Waiting for room takes at most half the read timeout from the start of
// the request; a request that cannot get it by then is 503 overloaded,
// retryable.
func (s *Server) readBody(ctx *fasthttp.RequestCtx) ([]byte, func(), error) {
	declared := ctx.Request.Header.ContentLength()
	if declared > s.cfg.MaxBodyBytes {
		return nil, func() {}, s.bodyTooLarge()
	}
	if declared == 0 || declared == -2 { // -2: neither length nor chunks, no body
		return nil, func() {}, nil
	}
	limit := declared
	if declared < 0 { // chunked: its length is known once read
		limit = s.cfg.MaxBodyBytes
	}
	// fasthttp gives no request deadline; the connection's read deadline
	// is ReadTimeout after the request began, no later than ctx.Time. The
	// waits take at most half of it, leaving the rest to read the body or,
	// refused, to drain it: a connection closed with its request unread is
	// reset, and the client may never see the 503.
	waitCtx, cancel := context.WithDeadline(s.ctx, ctx.Time().Add(s.cfg.ReadTimeout/2))
	defer cancel()
	var held int64
	give := func(n int64) {
		s.bodyBudget.Release(n)
		s.bodyBytesHeld.Add(-n)
		held -= n
	}
	release := func() { give(held) }
	body, err := readStream(ctx.RequestBodyStream(), limit, declared < 0, func(grow int) error {
		if err := s.bodyBudget.Acquire(waitCtx, int64(grow)); err != nil {
			return errBudget
		}
		s.bodyBytesHeld.Add(int64(grow))
		held += int64(grow)
		return nil
	}, func(shrink int) { give(int64(shrink)) })
	if err != nil {
		release()
		switch {
		case errors.Is(err, errBudget):
			return nil, func() {}, &APIError{Type: TypeOverloaded, Status: http.StatusServiceUnavailable, Retryable: true,
				Message: "too many request bodies are being received; retry after the Retry-After delay"}
		case errors.Is(err, fasthttp.ErrBodyTooLarge):
			return nil, func() {}, s.bodyTooLarge()
		}
		return nil, func() {}, invalidRequest(fmt.Sprintf("cannot read the request body: %v", err))
	}
	logOf(ctx).bytesIn = len(body)
	return body, release, nil
}

// errBudget says readStream could not take room for more of the body.
var errBudget = errors.New("no room in the budget of body bytes in flight")

// firstBodyBuffer is the first buffer of a body being read; it doubles
// from there.
const firstBodyBuffer = 64 << 10

// readStream reads a body of exactly limit bytes, or, chunked, of at most
// limit. Before a buffer is allocated its size is taken with grow; when
// the buffer it replaces is dropped, shrink gives that back. At the end
// exactly len(body) is held.
func readStream(r io.Reader, limit int, chunked bool, grow func(int) error, shrink func(int)) ([]byte, error) {
	size := min(limit, firstBodyBuffer)
	if err := grow(size); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) == limit {
				break
			}
			// Both buffers exist during the copy: take the new one's
			// size before dropping the old one's.
			size := min(2*cap(buf), limit)
			if err := grow(size); err != nil {
				return nil, err
			}
			next := make([]byte, len(buf), size)
			copy(next, buf)
			shrink(cap(buf))
			buf = next
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case !chunked && len(buf) < limit:
		return nil, io.ErrUnexpectedEOF
	case chunked && len(buf) == limit:
		// At the cap: one more byte is one too many.
		var one [1]byte
		if n, _ := io.ReadFull(r, one[:]); n > 0 {
			return nil, fasthttp.ErrBodyTooLarge
		}
	}
	if len(buf) < cap(buf) {
		// A chunked body shorter than its buffer keeps only its size.
		exact := make([]byte, len(buf))
		copy(exact, buf)
		shrink(cap(buf) - len(buf))
		buf = exact
	}
	return buf, nil
}

func (s *Server) bodyTooLarge() *APIError {
	return &APIError{Type: TypePayloadTooLarge, Status: http.StatusRequestEntityTooLarge,
		Message: fmt.Sprintf("request body is over the cap of %d bytes", s.cfg.MaxBodyBytes)}
}
