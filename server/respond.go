package server

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"

	"github.com/sandbox-exec/pyexec/runner"
)

// answerBudget holds MaxAnswerBytesInFlight: every answer an encoder
// builds takes its bytes from it before they are allocated, and gives
// them back once fasthttp has written them to the connection, or failed
// to (a client that reads nothing holds its answer until the write
// timeout). An answer that finds no room is not waited for: it is
// replaced at once by a small 503, so that a request whose script has
// run holds its output no longer than it takes to encode.
type answerBudget struct {
	sem *semaphore.Weighted
	// held is the bytes taken, for /metrics (the semaphore does not say).
	held atomic.Int64
}

func newAnswerBudget(size int64) *answerBudget {
	return &answerBudget{sem: semaphore.NewWeighted(size)}
}

func (b *answerBudget) tryTake(n int64) bool {
	if !b.sem.TryAcquire(n) {
		return false
	}
	b.held.Add(n)
	return true
}

func (b *answerBudget) give(n int64) {
	if n > 0 {
		b.held.Add(-n)
		b.sem.Release(n)
	}
}

// answerBody is an answer handed to fasthttp as a body stream: fasthttp
// closes it once the answer is written or cannot be (the connection
// failed, or the request context was reset), and Close gives its bytes
// back to the budget.
type answerBody struct {
	bytes.Reader
	once    sync.Once
	release func()
}

func (a *answerBody) Close() error {
	a.once.Do(a.release)
	return nil
}

// failure is an error answer: the error, what the script printed, and
// the timing and usage of an execution that failed.
type failure struct {
	err            errorBody
	stdout, stderr []byte
	timing         *timingBody
	usage          *usageBody
	// truncated says stdout or stderr were cut to keep the answer within
	// MaxAnswerBytes.
	truncated bool
}

func (f *failure) encode(e *encoder) {
	n := 3
	for _, present := range []bool{f.timing != nil, f.usage != nil, f.truncated} {
		if present {
			n++
		}
	}
	e.mapStart(n)
	e.key("error")
	encodeError(e, &f.err)
	e.key("stdout")
	e.str(f.stdout)
	e.key("stderr")
	e.str(f.stderr)
	if f.truncated {
		e.key("truncated")
		e.boolean(true)
	}
	if f.timing != nil {
		e.key("timing")
		encodeTiming(e, *f.timing)
	}
	if f.usage != nil {
		e.key("usage")
		encodeUsage(e, *f.usage)
	}
	e.mapEnd()
}

func encodeError(e *encoder, b *errorBody) {
	n := 3
	for _, present := range []bool{b.Traceback != "", b.Line != 0, b.Offset != 0, b.RequestID != ""} {
		if present {
			n++
		}
	}
	e.mapStart(n)
	e.key("type")
	e.text(b.Type)
	e.key("message")
	e.text(b.Message)
	e.key("retryable")
	e.boolean(b.Retryable)
	if b.Traceback != "" {
		e.key("traceback")
		e.text(b.Traceback)
	}
	if b.Line != 0 {
		e.key("line")
		e.int(int64(b.Line))
	}
	if b.Offset != 0 {
		e.key("offset")
		e.int(int64(b.Offset))
	}
	if b.RequestID != "" {
		e.key("request_id")
		e.text(b.RequestID)
	}
	e.mapEnd()
}

func encodeTiming(e *encoder, t timingBody) {
	e.mapStart(3)
	e.key("queue_ms")
	e.float(t.QueueMS)
	e.key("exec_ms")
	e.float(t.ExecMS)
	e.key("total_ms")
	e.float(t.TotalMS)
	e.mapEnd()
}

func encodeUsage(e *encoder, u usageBody) {
	e.mapStart(2)
	e.key("cpu_ms")
	e.float(u.CPUMS)
	e.key("max_rss_kb")
	e.int(u.MaxRSSKB)
	e.mapEnd()
}

// encodeFiles writes output files by name: content, size, media type.
func encodeFiles(e *encoder, files []runner.File) {
	e.mapStart(len(files))
	for _, f := range files {
		e.key(f.Name)
		e.mapStart(3)
		e.key("content")
		e.bin(f.Content)
		e.key("size")
		e.int(int64(len(f.Content)))
		e.key("media_type")
		e.text(mediaType(f.Name, f.Content))
		e.mapEnd()
	}
	e.mapEnd()
}

// encodeSuccess writes a successful answer: a single execution's result,
// or a batch's results, with the output, files, timing and usage.
func encodeSuccess(e *encoder, out *runner.Output, timing timingBody, batch bool) {
	n := 5
	if len(out.Files) > 0 {
		n++
	}
	e.mapStart(n)
	if batch {
		e.key("results")
		e.arrayStart(len(out.Items))
		for i := range out.Items {
			e.elem()
			encodeItem(e, &out.Items[i])
		}
		e.arrayEnd()
	} else {
		e.key("result")
		e.result(out.Result)
	}
	e.key("stdout")
	e.str(out.Stdout)
	e.key("stderr")
	e.str(out.Stderr)
	if len(out.Files) > 0 {
		e.key("files")
		encodeFiles(e, out.Files)
	}
	e.key("timing")
	encodeTiming(e, timing)
	e.key("usage")
	encodeUsage(e, usageOf(*out))
	e.mapEnd()
}

// encodeItem writes one input's outcome in a batch.
func encodeItem(e *encoder, item *runner.ItemOutput) {
	e.mapStart(3)
	if item.Err != nil {
		_, body, _ := toErrorBody(item.Err)
		e.key("error")
		encodeError(e, &body)
	} else {
		e.key("result")
		e.result(item.Result)
	}
	e.key("stdout")
	e.str(item.Stdout)
	e.key("stderr")
	e.str(item.Stderr)
	e.mapEnd()
}

// minAnswerBytes is the least MaxAnswerBytes may be: room for any error
// with its longest message and traceback (runner's bounds, 16 KiB and
// 128 KiB, six bytes each once escaped), so that an answer over the cap
// can always say so.
const minAnswerBytes = 1 << 20

// respond encodes an answer (encode writes it) within MaxAnswerBytes and
// the budget of answers in flight, and sets it as the response with
// status. An answer over the cap is replaced by the error answer over
// returns, with its status, whose stdout and stderr are cut (and flagged
// truncated) where the whole would not fit. An answer that finds no room
// in the budget is replaced by a small 503.
func (s *Server) respond(ctx *fasthttp.RequestCtx, status int, encode func(*encoder), over func() (*failure, int)) {
	asMsgpack := isMsgpack(ctx.Request.Header.ContentType())
	measure := encoder{msgpack: asMsgpack, measure: true}
	encode(&measure)
	size := min(measure.n, s.cfg.MaxAnswerBytes)
	if !s.answers.tryTake(int64(size)) {
		s.answerBusy(ctx, asMsgpack)
		return
	}
	e := encoder{msgpack: asMsgpack, b: make([]byte, 0, size)}
	if measure.n <= s.cfg.MaxAnswerBytes {
		encode(&e)
	} else {
		e.over = true // exact for JSON; a msgpack result may yet fit
		if asMsgpack {
			e.over = false
			encode(&e)
		}
	}
	if e.over {
		var f *failure
		f, status = over()
		s.fit(f, asMsgpack)
		e = encoder{msgpack: asMsgpack, b: e.b[:0]}
		f.encode(&e)
		logOf(ctx).errType = f.err.Type
		if e.over {
			// fit leaves room for any error (minAnswerBytes): a bug.
			s.answers.give(int64(size))
			panic(fmt.Sprintf("an error answer of %d bytes does not fit in %d", e.n, size))
		}
	}
	body := e.b
	s.answers.give(int64(size - len(body)))
	held := int64(len(body))
	logOf(ctx).bytesOut = len(body)
	ctx.SetStatusCode(status)
	if asMsgpack {
		ctx.SetContentType(msgpackAnswerType(ctx))
	} else {
		ctx.SetContentType("application/json")
	}
	a := &answerBody{release: func() { s.answers.give(held) }}
	a.Reset(body)
	ctx.SetBodyStream(a, len(body))
}

// answerBusy answers 503 overloaded when the budget of answers in flight
// has no room: a small answer of its own, outside the budget (one per
// connection at most).
func (s *Server) answerBusy(ctx *fasthttp.RequestCtx, asMsgpack bool) {
	f := failure{err: errorBody{Type: TypeOverloaded, Retryable: true,
		Message: "too many answers are being sent to clients that read them slowly; retry after the Retry-After delay"}}
	m := encoder{msgpack: asMsgpack, measure: true}
	f.encode(&m)
	e := encoder{msgpack: asMsgpack, b: make([]byte, 0, m.n)}
	f.encode(&e)
	l := logOf(ctx)
	l.errType, l.bytesOut = TypeOverloaded, len(e.b)
	s.metrics.answersRefused.Inc()
	ctx.Response.Header.Set("Retry-After", "1")
	ctx.SetStatusCode(http.StatusServiceUnavailable)
	if asMsgpack {
		ctx.SetContentType(msgpackAnswerType(ctx))
	} else {
		ctx.SetContentType("application/json")
	}
	ctx.Response.SetBodyRaw(e.b)
}

// fit cuts f's stdout and stderr so that f's answer is within
// MaxAnswerBytes, and flags it when it did.
func (s *Server) fit(f *failure, asMsgpack bool) {
	bare := *f
	bare.stdout, bare.stderr, bare.truncated = nil, nil, true
	m := encoder{msgpack: asMsgpack, measure: true}
	bare.encode(&m)
	// Each stream's own framing: JSON's quotes are measured with the
	// bare answer, a msgpack header grows from 1 byte to at most 5.
	room := s.cfg.MaxAnswerBytes - m.n - 8
	outNeed, errNeed := encodedLen(f.stdout, asMsgpack), encodedLen(f.stderr, asMsgpack)
	if outNeed+errNeed <= room {
		return
	}
	f.truncated = true
	// stderr gets up to half, or more when stdout needs less; stdout what
	// stderr leaves.
	errRoom := min(errNeed, max(room/2, room-outNeed))
	var used int
	f.stderr, used = encodedPrefix(f.stderr, errRoom, asMsgpack)
	f.stdout, _ = encodedPrefix(f.stdout, room-used, asMsgpack)
}

// charLen reads the character at the start of p (a byte that is not
// valid UTF-8 counts as one, written as U+FFFD) and says its length in p
// and in a string's encoding.
func charLen(p []byte, asMsgpack bool) (size, encoded int) {
	c := p[0]
	if c < utf8.RuneSelf {
		switch {
		case asMsgpack || c >= 0x20 && c != '"' && c != '\\':
			return 1, 1
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			return 1, 2
		default:
			return 1, 6
		}
	}
	r, size := utf8.DecodeRune(p)
	switch {
	case r == utf8.RuneError && size == 1:
		return 1, 3
	case !asMsgpack && (r == '\u2028' || r == '\u2029'):
		return size, 6
	}
	return size, size
}

// encodedLen is the length of p's characters once encoded in a string
// (without JSON's quotes or msgpack's header).
func encodedLen(p []byte, asMsgpack bool) int {
	n := 0
	for i := 0; i < len(p); {
		size, encoded := charLen(p[i:], asMsgpack)
		n += encoded
		i += size
	}
	return n
}

// encodedPrefix is the longest prefix of p, ending at a character, whose
// characters take at most room bytes encoded, and that length.
func encodedPrefix(p []byte, room int, asMsgpack bool) ([]byte, int) {
	n := 0
	for i := 0; i < len(p); {
		size, encoded := charLen(p[i:], asMsgpack)
		if n+encoded > room {
			return p[:i], n
		}
		n += encoded
		i += size
	}
	return p, n
}
